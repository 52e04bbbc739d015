//! InfluxDB over HTTPS with a password, against a real influxd 1.6.7 that
//! serves HTTPS with a certificate from a test CA generated in the test
//! (`support::pki`) and has authentication on. The real daemon binary polls
//! the simulated city gate and writes to it:
//!
//! 1. trusting the wrong CA: every write is refused in the TLS handshake,
//!    the error is logged naming the sink and the certificate problem,
//!    `/health` shows the sink `spooling` (still ready) and the spool grows;
//!    nothing reaches InfluxDB;
//! 2. SIGHUP with the right CA but a wrong password (read from a file): the
//!    server answers 401, logged as a configuration error naming the sink,
//!    data stays spooled;
//! 3. the operator fixes the password file (same path, config text
//!    unchanged) and sends SIGHUP: the secret is re-read, the sink restarts
//!    and the whole backlog arrives;
//!
//! then SIGTERM. InfluxDB (queried over HTTPS) holds exactly the points of
//! the file sink, once each, with the same values; the spool is empty; no
//! password appears in the logs or in `/health`.

mod support;

use gaswatch::buffer::{RecordClass, Spool, SpoolConfig};
use std::path::Path;
use support::daemon::{
    DEADLINE, assert_same_values, file_points, gaps, setup, signal, spawn_daemon, start_sim,
    terminate,
};
use support::influxdb::{InfluxOptions, InfluxServer, InfluxTls};
use support::pki::make_pki;

const ADMIN_PASSWORD: &str = "adm1n-Pa55-do-not-log";
const WRITER_PASSWORD: &str = "wr1ter-Pa55-do-not-log";
const WRONG_PASSWORD: &str = "wr0ng-Pa55-do-not-log";

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, format!("{secret}\n")).expect("secret file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

async fn health(port: u16) -> Option<serde_json::Value> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    serde_json::from_str(&body).ok()
}

fn influx_sink(h: &serde_json::Value) -> serde_json::Value {
    h["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "influxdb"))
        .cloned()
        .unwrap_or_default()
}

fn spooled_telemetry(h: &serde_json::Value) -> u64 {
    influx_sink(h)["spool_records"]["telemetry"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_writes_over_https_with_a_password_and_spools_while_tls_or_auth_fail() {
    gaswatch::sinks::tls::ensure_crypto_provider();
    let pki = tempfile::tempdir().expect("tempdir");
    let p = pki.path();
    make_pki(p);
    let influx = InfluxServer::start_with(InfluxOptions {
        tls: Some(InfluxTls {
            certificate: p.join("server.pem"),
            private_key: p.join("server.key"),
            ca: p.join("ca.pem"),
        }),
        admin: Some(("admin".into(), ADMIN_PASSWORD.into())),
    })
    .await;
    assert!(influx.url().starts_with("https://"));
    influx.create_database("gaswatch").await;
    for q in [
        format!("CREATE USER \"gaswatch\" WITH PASSWORD '{WRITER_PASSWORD}'"),
        "GRANT WRITE ON \"gaswatch\" TO \"gaswatch\"".to_string(),
    ] {
        let v = influx.post_query(None, &q).await;
        assert!(v["results"][0].get("error").is_none(), "{q}: {v}");
    }

    let sim = start_sim(0.1).await;
    let http_port = support::free_port();
    let pass = p.join("influx.pass");
    write_secret(&pass, WRONG_PASSWORD);
    let mut s = setup(&sim, &influx.url(), 200, |t| {
        let i = t["sinks"]["influxdb"].as_table_mut().expect("influxdb");
        i.insert("username".into(), "gaswatch".into());
        let mut secret = toml::Table::new();
        secret.insert("file".into(), pass.display().to_string().into());
        i.insert("password".into(), secret.into());
        i.insert(
            "tls_ca_file".into(),
            p.join("other-ca.pem").display().to_string().into(),
        );
        let mut http = toml::Table::new();
        http.insert("listen".into(), format!("127.0.0.1:{http_port}").into());
        t.insert("http".into(), http.into());
    });
    let mut daemon = spawn_daemon(&s);
    let pid = daemon.id();
    // Every /health body seen, to check for secrets at the end.
    let bodies = std::sync::Mutex::new(Vec::<String>::new());
    let seen = |h: &serde_json::Value| bodies.lock().expect("lock").push(h.to_string());

    // 1. Wrong CA: refused at the handshake, logged naming the sink; spooling.
    let logged = support::wait_until(DEADLINE, || {
        s.log_text().lines().any(|l| {
            l.contains("InfluxDB write failed")
                && l.contains("\"sink\":\"influxdb\"")
                && l.to_lowercase().contains("certificate")
        })
    });
    assert!(
        logged,
        "no TLS error naming the sink and the certificate; log:\n{}",
        s.log_text()
    );
    let grew = support::wait_until_async(DEADLINE, || async {
        health(http_port).await.is_some_and(|h| {
            seen(&h);
            influx_sink(&h)["state"] == "spooling"
                && h["ready"] == true
                && spooled_telemetry(&h) >= 20
        })
    })
    .await;
    assert!(
        grew,
        "the spool did not grow while TLS failed: {:?}",
        bodies.lock().expect("lock").last()
    );
    assert_eq!(influx.count("gaswatch", "telemetry").await, 0);

    // 2. Right CA, wrong password: 401, a configuration error naming the sink.
    let mut t = s.table.clone();
    t["sinks"]["influxdb"]
        .as_table_mut()
        .expect("influxdb")
        .insert(
            "tls_ca_file".into(),
            p.join("ca.pem").display().to_string().into(),
        );
    s.write(t);
    let before = spooled_telemetry(&health(http_port).await.expect("health"));
    signal(pid, "-HUP");
    let logged = support::wait_until(DEADLINE, || {
        s.log_text().lines().any(|l| {
            l.contains("InfluxDB refused the write")
                && l.contains("\"sink\":\"influxdb\"")
                && l.contains("\"status\":401")
        })
    });
    assert!(logged, "no 401 naming the sink; log:\n{}", s.log_text());
    let grew = support::wait_until_async(DEADLINE, || async {
        health(http_port).await.is_some_and(|h| {
            seen(&h);
            influx_sink(&h)["state"] == "spooling" && spooled_telemetry(&h) >= before + 20
        })
    })
    .await;
    assert!(grew, "the spool did not keep growing while auth failed");
    assert_eq!(influx.count("gaswatch", "telemetry").await, 0);

    // 3. The password file fixed in place; the config text is unchanged.
    write_secret(&pass, WRITER_PASSWORD);
    signal(pid, "-HUP");
    let delivered = support::wait_until_async(DEADLINE, || async {
        let Some(h) = health(http_port).await else {
            return false;
        };
        seen(&h);
        influx_sink(&h)["state"] == "reachable"
            && spooled_telemetry(&h) == 0
            && influx.count("gaswatch", "telemetry").await > 0
    })
    .await;
    assert!(
        delivered,
        "the backlog was not delivered after fixing the password; log:\n{}",
        s.log_text()
    );
    let reloads = s.log_text().matches("Configuration reloaded").count();
    assert_eq!(reloads, 2, "two applied reloads; log:\n{}", s.log_text());

    terminate(&mut daemon, &s).await;
    sim.stop().await;
    if std::env::var_os("GASWATCH_TEST_SHOW_LOG").is_some() {
        println!("{}", s.log_text());
    }

    // Everything read is in InfluxDB exactly once, with its value.
    let written = file_points(&s.files());
    let (stored, rows) = influx.telemetry_points("gaswatch").await;
    assert!(written.len() > 100, "{} points written", written.len());
    assert_eq!(rows, stored.len(), "duplicate rows in InfluxDB");
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "InfluxDB holds exactly what the file sink holds"
    );
    assert_same_values(&stored, &written);
    // Polling went on while the old InfluxDB writer spent its grace period
    // failing to drain (TLS, then 401) at each reload: no point misses a
    // poll cycle (200 ms; a gap needs 2.5 periods, so scheduling jitter on
    // a busy machine is no failure, a stopped poller is).
    let missed = gaps(&written, 500_000_000, i64::MIN, i64::MAX);
    assert!(missed.is_empty(), "poll cycles missed: {missed:?}");
    // The spool is empty after the drain.
    let spool = Spool::open(&s.spool().join("influxdb"), &SpoolConfig::default()).expect("spool");
    for c in RecordClass::ALL {
        assert_eq!(
            spool.stats(c).records,
            0,
            "{} left in the spool",
            c.as_str()
        );
    }
    // Every log line about the TLS failure names the sink (no bare library
    // line such as rustls' own "failed to verify TLS certificate").
    let log = s.log_text();
    for line in log
        .lines()
        .filter(|l| l.to_lowercase().contains("certificate"))
    {
        assert!(line.contains("\"sink\":\"influxdb\""), "{line}");
    }
    // No secret in the logs or in any /health body.
    let bodies = bodies.lock().expect("lock");
    assert!(!bodies.is_empty());
    for secret in [WRITER_PASSWORD, WRONG_PASSWORD, ADMIN_PASSWORD] {
        assert!(!log.contains(secret), "a password is in the log");
        assert!(
            !bodies.iter().any(|b| b.contains(secret)),
            "a password is in /health"
        );
    }
}
