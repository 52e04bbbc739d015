//! A real InfluxDB 1.6.7 (`influxd`) for integration tests: config, meta,
//! data and WAL in a temp dir, HTTP and RPC on 127.0.0.1 free ports, every
//! other listener off. `stop()` / `start()` restart it on the same ports and
//! data (for outage tests); it is killed on drop.
//!
//! Options: HTTPS (`[http] https-enabled` with a certificate and key, e.g.
//! from `support::pki`) and authentication (`auth-enabled`, with an admin
//! user created through the first `/query`, which 1.x allows while no user
//! exists). The harness's own queries then go over HTTPS trusting the given
//! CA and carry the admin's credentials.

use super::{find_program, free_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// HTTPS for the HTTP API: PEM files.
#[derive(Debug, Clone)]
pub struct InfluxTls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The CA the harness trusts for its own queries.
    pub ca: PathBuf,
}

/// Server options beyond the defaults (plain HTTP, no authentication).
#[derive(Debug, Clone, Default)]
pub struct InfluxOptions {
    pub tls: Option<InfluxTls>,
    /// `auth-enabled = true` and this (user, password) created as admin.
    pub admin: Option<(String, String)>,
}

pub struct InfluxServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub http_port: u16,
    child: Option<Child>,
    client: reqwest::Client,
    tls: bool,
    admin: Option<(String, String)>,
}

impl InfluxServer {
    /// Starts influxd (plain HTTP, no auth) and waits for `/ping` to answer 204.
    pub async fn start_new() -> InfluxServer {
        InfluxServer::start_with(InfluxOptions::default()).await
    }

    /// Starts influxd with `opts` and waits for `/ping`; with `admin`, the
    /// admin user is created before this returns.
    pub async fn start_with(opts: InfluxOptions) -> InfluxServer {
        let bin = find_program("influxd")
            .expect("influxd not found: install InfluxDB 1.x (`apt-get install influxdb`) to run these tests");
        let dir = tempfile::tempdir().expect("tempdir");
        let http_port = free_port();
        let rpc_port = free_port();
        let root = dir.path();
        let conf = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth}
  log-enabled = false
  pprof-enabled = false
{https}
[logging]
  level = "warn"

[ifql]
  enabled = false
"#,
            root = root.display(),
            auth = opts.admin.is_some(),
            https = match &opts.tls {
                Some(t) => format!(
                    "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
                    t.certificate.display(),
                    t.private_key.display()
                ),
                None => String::new(),
            },
        );
        std::fs::write(root.join("influxdb.conf"), conf).expect("write influxdb.conf");
        let mut s = InfluxServer {
            dir,
            bin,
            http_port,
            child: None,
            client: {
                // reqwest is built without a default TLS provider (DEPENDENCIES.md).
                gaswatch::sinks::tls::ensure_crypto_provider();
                let mut b = reqwest::Client::builder();
                if let Some(t) = &opts.tls {
                    let pem = std::fs::read(&t.ca).expect("read CA file");
                    b = b.tls_certs_merge([reqwest::Certificate::from_pem(&pem).expect("CA PEM")]);
                }
                b.build().expect("HTTP client")
            },
            tls: opts.tls.is_some(),
            admin: None,
        };
        s.start().await;
        if let Some((user, pass)) = opts.admin {
            // Allowed without credentials while no user exists.
            let v = s
                .post_query(
                    None,
                    &format!("CREATE USER \"{user}\" WITH PASSWORD '{pass}' WITH ALL PRIVILEGES"),
                )
                .await;
            assert!(
                v["results"][0].get("error").is_none(),
                "CREATE USER failed: {v}"
            );
            s.admin = Some((user, pass));
        }
        s
    }

    /// `http://` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// (Re)starts influxd on the same ports and data dir; waits for `/ping`.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "influxd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("influxd.log"))
            .expect("open influxd.log");
        let child = Command::new(&self.bin)
            .arg("run")
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn influxd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("influxd exited with {status}; log:\n{}", self.log());
            }
            let ping = self.client.get(format!("{}/ping", self.url())).send().await;
            if ping.is_ok_and(|r| r.status().as_u16() == 204) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "influxd did not answer /ping within 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills influxd (its WAL is fsynced per write, so data survives).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }

    pub async fn create_database(&self, db: &str) {
        let v = self
            .post_query(None, &format!("CREATE DATABASE \"{db}\""))
            .await;
        assert!(
            v["results"][0].get("error").is_none(),
            "CREATE DATABASE failed: {v}"
        );
    }

    /// Runs an InfluxQL query against `db` (timestamps as ns epoch).
    pub async fn query(&self, db: &str, influxql: &str) -> serde_json::Value {
        let mut url = reqwest::Url::parse(&format!("{}/query", self.url())).expect("url");
        url.query_pairs_mut()
            .append_pair("db", db)
            .append_pair("epoch", "ns")
            .append_pair("q", influxql);
        let resp = self
            .authed(self.client.get(url))
            .send()
            .await
            .expect("query");
        let body = resp.bytes().await.expect("query body");
        serde_json::from_slice(&body).expect("query JSON")
    }

    pub async fn post_query(&self, db: Option<&str>, q: &str) -> serde_json::Value {
        let mut url = reqwest::Url::parse(&format!("{}/query", self.url())).expect("url");
        url.query_pairs_mut().append_pair("q", q);
        if let Some(db) = db {
            url.query_pairs_mut().append_pair("db", db);
        }
        let resp = self
            .authed(self.client.post(url))
            .send()
            .await
            .expect("query");
        let body = resp.bytes().await.expect("query body");
        serde_json::from_slice(&body).expect("query JSON")
    }
}

/// Telemetry as stored: (point, ts ns) -> (value if any, quality).
pub type Points = std::collections::BTreeMap<(String, i64), (Option<f64>, String)>;

impl InfluxServer {
    /// Every `telemetry` point in `db`, and the number of rows InfluxDB
    /// returned (more rows than points would mean duplicates).
    pub async fn telemetry_points(&self, db: &str) -> (Points, usize) {
        let v = self
            .query(db, "SELECT point, value, quality FROM telemetry")
            .await;
        let rows = v["results"][0]["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut stored = Points::new();
        let mut complete = 0;
        for r in &rows {
            let ts = r[0].as_i64().expect("time");
            let point = r[1].as_str().expect("point").to_string();
            let value = r[2].as_f64();
            // InfluxDB stores each field separately: a query running while
            // a point is written can see its value but not yet its quality
            // (seen under load). Such a torn row is left out; the next query
            // sees it whole. Every sample written has a quality.
            let Some(quality) = r[3].as_str() else {
                continue;
            };
            complete += 1;
            stored.insert((point, ts), (value, quality.to_string()));
        }
        (stored, complete)
    }

    /// Rows of `measurement` in `db` (the largest `count(*)` of its fields).
    pub async fn count(&self, db: &str, measurement: &str) -> u64 {
        let v = self
            .query(db, &format!("SELECT count(*) FROM {measurement}"))
            .await;
        v["results"][0]["series"][0]["values"][0]
            .as_array()
            .and_then(|r| r.iter().skip(1).filter_map(|c| c.as_u64()).max())
            .unwrap_or(0)
    }
}

impl Drop for InfluxServer {
    fn drop(&mut self) {
        self.stop();
    }
}
