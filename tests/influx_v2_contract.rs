//! The v2 write path against a local HTTP/1.1 server written here (no real
//! InfluxDB 2.x on these machines): path, query, `Authorization: Token`,
//! gzip body, retry after 500, bisect + quarantine after 400, and a 401
//! keeping data spooled.

mod support;

use gaswatch::buffer::{RecordClass, SharedSpool, Spool, SpoolConfig};
use gaswatch::config::Secret;
use gaswatch::sinks::influxdb::{InfluxApi, InfluxConfig, WriterConfig, run};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cr3t-t0ken==";

#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    /// Body after gunzip (when Content-Encoding: gzip).
    body: String,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = Arc<dyn Fn(&Req, usize) -> u16 + Send + Sync>;

/// Serves HTTP/1.1 (keep-alive, Content-Length bodies) on 127.0.0.1:0; every
/// request is logged and answered with `handler(request, index)`.
async fn serve(handler: Handler) -> (String, Arc<Mutex<Vec<Req>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (handler, log) = (handler.clone(), log2.clone());
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd);
                loop {
                    let mut line = String::new();
                    if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let target = parts.next().unwrap_or("").to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if rd.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut raw = vec![0u8; len];
                    if rd.read_exact(&mut raw).await.is_err() {
                        return;
                    }
                    let gz = headers
                        .iter()
                        .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v == "gzip");
                    let body = if gz {
                        let mut s = String::new();
                        flate2::read::GzDecoder::new(&raw[..])
                            .read_to_string(&mut s)
                            .map(|_| s)
                            .unwrap_or_else(|e| format!("<bad gzip: {e}>"))
                    } else {
                        String::from_utf8_lossy(&raw).into_owned()
                    };
                    let req = Req {
                        method,
                        target,
                        headers,
                        body,
                    };
                    let n = {
                        let mut l = log.lock().expect("log");
                        l.push(req.clone());
                        l.len() - 1
                    };
                    let status = handler(&req, n);
                    let text = match status {
                        400 => {
                            "{\"code\":\"invalid\",\"message\":\"unable to parse 'bad line': missing fields\"}"
                        }
                        401 => "{\"code\":\"unauthorized\",\"message\":\"unauthorized access\"}",
                        500 => "{\"code\":\"internal error\",\"message\":\"boom\"}",
                        _ => "",
                    };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n{text}",
                        text.len()
                    );
                    if wr.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), log)
}

fn writer_config(url: &str, dir: &Path) -> WriterConfig {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let cfg = InfluxConfig {
        tls_ca_file: None,
        url: url.to_string(),
        api: InfluxApi::V2,
        database: None,
        retention_policy: None,
        username: None,
        password: None,
        org: Some("gas co".into()),
        bucket: Some("scada/raw".into()),
        token: Some(Secret {
            env: None,
            file: Some(token_file),
        }),
        batch_size: 100,
        flush_interval: Duration::from_millis(20),
        gzip: true,
        timeout: Duration::from_secs(5),
        backfill_lines_per_s: 0,
    };
    let mut w = WriterConfig::resolve(&cfg, dir).expect("resolve");
    w.backoff_initial = Duration::from_millis(20);
    w.backoff_max = Duration::from_millis(100);
    w.config_error_retry = Duration::from_millis(100);
    w
}

fn spool_with(dir: &Path, lines: &[String]) -> Arc<SharedSpool> {
    let mut s = Spool::open(&dir.join("spool"), &SpoolConfig::default()).expect("spool");
    for l in lines {
        s.append(RecordClass::Telemetry, format!("{l}\n").as_bytes())
            .expect("append");
    }
    s.append(RecordClass::Alarm, b"alarm,station=s action=\"raise\" 5\n")
        .expect("append");
    SharedSpool::new("influxdb", s)
}

fn depth(spool: &SharedSpool) -> u64 {
    let s = spool.lock();
    RecordClass::ALL.iter().map(|&c| s.stats(c).records).sum()
}

fn good_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("telemetry,point=p{i} value={i}.5 {}", 1_000 + i))
        .collect()
}

#[tokio::test]
async fn v2_request_shape_and_retry_after_500() {
    let (url, log) = serve(Arc::new(|_, n| if n == 0 { 500 } else { 204 })).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = good_lines(10);
    let spool = spool_with(dir.path(), &lines);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        writer_config(&url, dir.path()),
        spool.clone(),
        cancel.clone(),
    ));
    assert!(
        support::wait_until_async(Duration::from_secs(10), || async { depth(&spool) == 0 }).await
    );
    cancel.cancel();
    task.await.expect("task");

    let reqs = log.lock().expect("log").clone();
    assert_eq!(reqs.len(), 2, "one 500, one retry: {reqs:#?}");
    // Alarms first, then telemetry, each line once.
    let mut expected = String::from("alarm,station=s action=\"raise\" 5\n");
    for l in &lines {
        expected.push_str(l);
        expected.push('\n');
    }
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.target,
            "/api/v2/write?org=gas+co&bucket=scada%2Fraw&precision=ns"
        );
        assert_eq!(
            r.header("authorization"),
            Some(format!("Token {TOKEN}").as_str())
        );
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.body, expected);
    }
}

#[tokio::test]
async fn v2_bad_line_is_bisected_and_quarantined() {
    let (url, log) = serve(Arc::new(|r, _| {
        if r.body.contains("bad line") {
            400
        } else {
            204
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lines = good_lines(20);
    lines.insert(13, "bad line".to_string());
    let spool = spool_with(dir.path(), &lines);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        writer_config(&url, dir.path()),
        spool.clone(),
        cancel.clone(),
    ));
    assert!(
        support::wait_until_async(Duration::from_secs(10), || async { depth(&spool) == 0 }).await
    );
    cancel.cancel();
    task.await.expect("task");

    let reqs = log.lock().expect("log").clone();
    // Every good line was accepted exactly once; the bad one never was.
    let accepted: Vec<&str> = reqs
        .iter()
        .filter(|r| !r.body.contains("bad line"))
        .flat_map(|r| r.body.lines())
        .collect();
    let mut want: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| *l != "bad line")
        .collect();
    want.insert(0, "alarm,station=s action=\"raise\" 5");
    let mut got = accepted.clone();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    // Bisection needs about log2(22) rejected requests, not one per line.
    assert!(reqs.len() <= 12, "{} requests", reqs.len());
    let q = std::fs::read_to_string(dir.path().join("influxdb-quarantine.lp")).expect("quarantine");
    let ql: Vec<&str> = q.lines().collect();
    assert_eq!(ql.len(), 2, "{q}");
    assert!(
        ql[0].starts_with("# ") && ql[0].contains("unable to parse 'bad line': missing fields"),
        "{}",
        ql[0]
    );
    assert_eq!(ql[1], "bad line");
}

#[tokio::test]
async fn v2_unauthorized_keeps_data_spooled() {
    let allow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let allow2 = allow.clone();
    let (url, log) = serve(Arc::new(move |_, _| {
        if allow2.load(std::sync::atomic::Ordering::SeqCst) {
            204
        } else {
            401
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_with(dir.path(), &good_lines(5));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        writer_config(&url, dir.path()),
        spool.clone(),
        cancel.clone(),
    ));
    // Several refused attempts, nothing acknowledged, nothing quarantined.
    assert!(
        support::wait_until_async(Duration::from_secs(10), || async {
            log.lock().map(|l| l.len() >= 3).unwrap_or(false)
        })
        .await
    );
    assert_eq!(depth(&spool), 6);
    assert!(!dir.path().join("influxdb-quarantine.lp").exists());
    // The operator fixes the token: delivery resumes.
    allow.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        support::wait_until_async(Duration::from_secs(10), || async { depth(&spool) == 0 }).await
    );
    cancel.cancel();
    task.await.expect("task");
}

#[tokio::test]
async fn shutdown_delivers_what_is_spooled_within_grace() {
    let (url, log) = serve(Arc::new(|_, _| 204)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_with(dir.path(), &good_lines(5));
    let mut cfg = writer_config(&url, dir.path());
    // The batch would wait a minute to fill; shutdown must not wait for that.
    cfg.flush_interval = Duration::from_secs(60);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(cfg, spool.clone(), cancel.clone()));
    // Let the writer pick the records up into its (unsent) batch.
    assert!(
        support::wait_until_async(Duration::from_secs(5), || async {
            spool.lock().stats(RecordClass::Telemetry).records == 5
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        log.lock().expect("log").is_empty(),
        "sent before the flush interval"
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("writer stops within the grace")
        .expect("task");
    assert_eq!(depth(&spool), 0);
    assert_eq!(log.lock().expect("log").len(), 1);
}

/// `gaswatch replay --influx-from-config`: the station config's v2 sink
/// (org, bucket, token from an env variable) receives the replayed results,
/// tagged `source=replay`, with the token in the header and never on the
/// command line or in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_writes_to_the_configured_v2_sink_with_its_token() {
    let (url, log) = serve(Arc::new(|_, _| 204)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let station = include_str!("../config/city-gate.toml");
    let base = station.split("[sinks.file]").next().expect("text");
    let config = dir.path().join("station.toml");
    std::fs::write(
        &config,
        format!(
            "{base}\n[sinks.influxdb]\nurl = \"{url}\"\napi = \"v2\"\norg = \"gas co\"\nbucket = \"scada/raw\"\ntoken = {{ env = \"GW_TEST_INFLUX_TOKEN\" }}\n"
        ),
    )
    .expect("config");
    let csv = dir.path().join("data.csv");
    std::fs::write(
        &csv,
        "time,PT_IN1,PT_OUT1\n2026-01-01T00:00:00Z,4000,1500\n2026-01-01T00:00:01Z,4001,1501\n",
    )
    .expect("csv");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .args(["replay", "--no-progress", "--influx-from-config", "-c"])
        .arg(&config)
        .arg(&csv)
        .env("GW_TEST_INFLUX_TOKEN", TOKEN)
        .output()
        .expect("run gaswatch replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("gas co/scada/raw"), "{stdout}");
    assert!(
        !stdout.contains(TOKEN) && !stderr.contains(TOKEN),
        "token printed"
    );
    let reqs = log.lock().expect("log").clone();
    assert!(!reqs.is_empty(), "nothing written");
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert!(
            r.target.starts_with("/api/v2/write?") && r.target.contains("bucket=scada%2Fraw"),
            "{}",
            r.target
        );
        assert_eq!(
            r.header("Authorization"),
            Some(format!("Token {TOKEN}").as_str())
        );
    }
    let body: String = reqs.iter().map(|r| r.body.clone()).collect();
    let telemetry: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("telemetry,"))
        .collect();
    assert_eq!(telemetry.len(), 4, "{body}");
    assert!(
        telemetry.iter().all(|l| l.contains(",source=replay,")),
        "{body}"
    );

    // Without the section: a clear error naming the config.
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, base).expect("bare");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .args(["replay", "--no-progress", "--influx-from-config", "-c"])
        .arg(&bare)
        .arg(&csv)
        .output()
        .expect("run gaswatch replay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("bare.toml") && stderr.contains("[sinks.influxdb]"),
        "{stderr}"
    );
}
