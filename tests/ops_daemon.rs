//! The real `gaswatch` binary as an operator runs it: simulator station on
//! loopback, a password-protected mosquitto as the dispatch sink, the file
//! sink, JSON logs and the HTTP endpoint. Checks `/health` and `/metrics`
//! contents, that the endpoint is read-only, that SIGHUP applies a valid
//! config (alarm state carried) and rejects an invalid one (old config
//! kept, reasons logged), that SIGTERM drains and exits 0 while data flows,
//! that every log line is JSON, and that the secret appears in no log line
//! and no `/health` body. Also: SIGINT drains like SIGTERM, and a reload
//! that moves `[spool] dir` is rejected.

mod support;

use gaswatch_sim::{SimOptions, Station};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::mosquitto::{Mosquitto, MosquittoOptions};

const STATION: &str = include_str!("../config/city-gate.toml");
const SECRET: &str = "s3cret-Pa55-do-not-log";

fn config_text(sim_port: u16, http_port: u16, mqtt_port: u16, dir: &Path, extra: &str) -> String {
    let base = STATION
        .replace("port = 5020", &format!("port = {sim_port}"))
        .replace("poll_interval = \"1s\"", "poll_interval = \"200ms\"");
    // Drop the example's sinks and spool; ours follow.
    let base = base.split("[sinks.file]").next().expect("text").to_string();
    format!(
        "{base}\n{extra}\n[sinks.file]\ndir = \"{d}/out\"\n\n[sinks.mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nusername = \"station\"\npassword = {{ file = \"{d}/mqtt.pass\" }}\n\n[spool]\ndir = \"{d}/spool\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
        d = dir.display()
    )
}

async fn get(url: &str) -> Option<(u16, String)> {
    // Process-wide and idempotent: every test that GETs needs it, whichever
    // runs first (a test run alone panicked in reqwest without it).
    gaswatch::sinks::tls::ensure_crypto_provider();
    let r = reqwest::get(url).await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.ok()?))
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// Waits (40 s at most) for the signalled daemon to exit; asserts it
/// drained: exit 0 and "gaswatch stopped." logged. Returns the log.
async fn drained(child: &mut std::process::Child, log_path: &Path) -> String {
    let end = std::time::Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(log_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{text}"
    );
    assert!(text.contains("gaswatch stopped."), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_health_and_metrics_reloads_on_sighup_and_drains_on_sigterm() {
    gaswatch::sinks::tls::ensure_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let station = Station::from_config_str(STATION, &SimOptions::default()).expect("station");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let sims = gaswatch_sim::serve_all(station, |_| any)
        .await
        .expect("sim");
    assert_eq!(sims.len(), 1, "the example station has one endpoint");
    let sim_port = sims.values().next().expect("sim").local_addr().port();
    let broker = Mosquitto::start_with(MosquittoOptions {
        users: vec![("station".into(), SECRET.into())],
        ..Default::default()
    });
    // Readable by others on purpose: the daemon must warn about it.
    std::fs::write(d.join("mqtt.pass"), format!("{SECRET}\n")).expect("secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("mqtt.pass"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let http_port = support::free_port();
    let cfg = d.join("station.toml");
    std::fs::write(&cfg, config_text(sim_port, http_port, broker.port(), d, "")).expect("cfg");
    let log_path = d.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .args(["--log-format", "json", "run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn gaswatch");
    let pid = child.id();
    let base = format!("http://127.0.0.1:{http_port}");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Ready: every device connected with a good read, every sink reachable.
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let ok = support::wait_until_async(Duration::from_secs(60), || {
        let url = format!("{base}/health");
        let h = std::sync::Arc::clone(&last);
        async move {
            match get(&url).await {
                Some((200, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
                    *h.lock().expect("lock") = body;
                    let devices_ok = v["devices"].as_array().is_some_and(|ds| {
                        ds.iter()
                            .all(|d| d["connected"] == true && d["last_good_read"].is_string())
                    });
                    let sinks_ok = v["sinks"].as_array().is_some_and(|ss| {
                        ss.len() == 2 && ss.iter().all(|s| s["state"] == "reachable")
                    });
                    devices_ok && sinks_ok
                }
                _ => false,
            }
        }
    })
    .await;
    let health = last.lock().expect("lock").clone();
    assert!(ok, "not ready: {health}\nlog:\n{}", log());
    let v: serde_json::Value = serde_json::from_str(&health).expect("json");
    assert_eq!(v["ready"], true);
    assert_eq!(v["station"], "cg01");
    assert_eq!(v["config_generation"], 1);
    let names: Vec<_> = v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        names.contains(&"fc-in".to_string()) && names.contains(&"plc-out".to_string()),
        "{names:?}"
    );
    assert!(v["sinks"].to_string().contains("\"spool_records\""));

    // /metrics: the families an operator dashboards.
    let (code, metrics) = get(&format!("{base}/metrics")).await.expect("metrics");
    assert_eq!(code, 200);
    for family in [
        "gaswatch_build_info{",
        "gaswatch_modbus_requests_total{",
        "gaswatch_modbus_response_seconds_bucket{",
        "gaswatch_samples_total{quality=\"good\"}",
        "gaswatch_sink_reachable{sink=\"mqtt\"} 1",
        "gaswatch_mqtt_connected 1",
    ] {
        assert!(metrics.contains(family), "missing {family} in:\n{metrics}");
    }
    assert!(metrics.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    // Per-device point quality: every point of fc-in GOOD, none BAD or STALE.
    let ok = support::wait_until_async(Duration::from_secs(30), || async {
        get(&format!("{base}/metrics")).await.is_some_and(|(_, m)| {
            let gauge = |q: &str| {
                let key = format!("gaswatch_device_points{{device=\"fc-in\",quality=\"{q}\"}} ");
                m.lines()
                    .find_map(|l| l.strip_prefix(key.as_str()))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            };
            gauge("good").is_some_and(|n| n > 0.0)
                && gauge("bad") == Some(0.0)
                && gauge("stale") == Some(0.0)
        })
    })
    .await;
    assert!(
        ok,
        "gaswatch_device_points of fc-in never showed all points good"
    );
    let ok = support::wait_until_async(Duration::from_secs(30), || async {
        get(&format!("{base}/metrics")).await.is_some_and(|(_, m)| {
            m.contains("gaswatch_spool_records{") && m.contains("gaswatch_spool_backlog_seconds{")
        })
    })
    .await;
    assert!(ok, "no spool gauges");

    // Read-only: no other method.
    let r = reqwest::Client::new()
        .post(format!("{base}/health"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 405);

    // SIGHUP with an invalid config: rejected with the key named, old config kept.
    std::fs::write(
        &cfg,
        config_text(sim_port, http_port, broker.port(), d, "")
            .replace("[station]", "[station]\nbogus_key = 1"),
    )
    .expect("cfg");
    kill(pid, "-HUP");
    assert!(
        support::wait_until(Duration::from_secs(30), || log()
            .contains("Reload rejected")),
        "no rejection logged:\n{}",
        log()
    );
    assert!(
        log().contains("bogus_key"),
        "the bad key is not named:\n{}",
        log()
    );
    let (_, h) = get(&format!("{base}/health")).await.expect("health");
    assert!(h.contains("\"config_generation\":1"), "{h}");

    // SIGHUP with a valid config adding an always-active low alarm.
    let extra = "[[limits]]\npoint = \"TT_IN1\"\nl = 1000000.0\n";
    std::fs::write(
        &cfg,
        config_text(sim_port, http_port, broker.port(), d, extra),
    )
    .expect("cfg");
    kill(pid, "-HUP");
    let alarms = d.join("out/alarms.jsonl");
    assert!(
        support::wait_until(Duration::from_secs(30), || std::fs::read_to_string(&alarms)
            .unwrap_or_default()
            .contains("TT_IN1")),
        "new alarm not raised after reload:\n{}",
        log()
    );
    let (_, h) = get(&format!("{base}/health")).await.expect("health");
    assert!(h.contains("\"config_generation\":2"), "{h}");
    // The same config again: alarm state is kept, the alarm is not raised twice.
    kill(pid, "-HUP");
    std::fs::write(
        &cfg,
        config_text(
            sim_port,
            http_port,
            broker.port(),
            d,
            &format!("{extra}h = 2000000.0\n"),
        ),
    )
    .expect("cfg");
    kill(pid, "-HUP");
    assert!(
        support::wait_until(Duration::from_secs(30), || log()
            .matches("Configuration reloaded")
            .count()
            >= 2),
        "second reload not applied:\n{}",
        log()
    );

    // SIGTERM while points flow: drains and exits 0.
    kill(pid, "-TERM");
    let text = drained(&mut child, &log_path).await;
    let raises = std::fs::read_to_string(&alarms)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("TT_IN1") && l.contains("raise"))
        .count();
    assert_eq!(raises, 1, "the carried alarm was raised again");

    // Logs: JSON lines, the readable secret file warned about, no secret anywhere.
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        text.contains("readable by group or others"),
        "no warning on the 0644 secret file"
    );
    assert!(!text.contains(SECRET), "secret in the logs");
    assert!(
        !health.contains(SECRET) && !h.contains(SECRET),
        "secret in /health"
    );
    assert!(!metrics.contains(SECRET), "secret in /metrics");
    drop(sims);
}

#[test]
fn version_names_the_commit_and_features() {
    let out = Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .arg("--version")
        .output()
        .expect("run gaswatch --version");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("gaswatch {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains("features: ") && text.contains("tls: rustls+ring"),
        "{text}"
    );
}

/// SIGINT (Ctrl-C at a console) drains like SIGTERM; a reload that moves
/// `[spool] dir` is rejected (the backlog is in the running folder), the
/// running config is kept and the new folder is never created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_and_a_spool_dir_change_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let station = Station::from_config_str(STATION, &SimOptions::default()).expect("station");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let sims = gaswatch_sim::serve_all(station, |_| any)
        .await
        .expect("sim");
    let sim_port = sims.values().next().expect("sim").local_addr().port();
    let http_port = support::free_port();
    let text = |spool: &str| {
        let base = STATION
            .replace("port = 5020", &format!("port = {sim_port}"))
            .replace("poll_interval = \"1s\"", "poll_interval = \"200ms\"");
        let base = base.split("[sinks.file]").next().expect("text").to_string();
        format!(
            "{base}\n[sinks.file]\ndir = \"{d}/out\"\n\n[spool]\ndir = \"{d}/{spool}\"\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
            d = d.display()
        )
    };
    let cfg = d.join("station.toml");
    std::fs::write(&cfg, text("spool")).expect("cfg");
    let log_path = d.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn gaswatch");
    let pid = child.id();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let telemetry = || -> String {
        std::fs::read_dir(d.join("out"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("telemetry-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    };
    assert!(
        support::wait_until(Duration::from_secs(60), || telemetry().lines().count()
            > 100),
        "no telemetry:\n{}",
        log()
    );

    std::fs::write(&cfg, text("elsewhere")).expect("cfg");
    kill(pid, "-HUP");
    assert!(
        support::wait_until(Duration::from_secs(30), || log()
            .contains("Reload rejected: [spool] dir cannot change")),
        "no rejection logged:\n{}",
        log()
    );
    let (_, h) = get(&format!("http://127.0.0.1:{http_port}/health"))
        .await
        .expect("health");
    assert!(h.contains("\"config_generation\":1"), "{h}");
    assert!(
        !d.join("elsewhere").exists(),
        "the new spool folder was created"
    );
    assert!(d.join("spool").exists());

    // Points still flow on the running config, then Ctrl-C drains.
    let before = telemetry().lines().count();
    assert!(
        support::wait_until(Duration::from_secs(30), || telemetry().lines().count()
            > before),
        "polling stopped after the rejected reload:\n{}",
        log()
    );
    kill(pid, "-INT");
    drained(&mut child, &log_path).await;
    // Text logs to a file (or journald) carry no colour escape codes.
    assert!(
        !log().contains('\u{1b}'),
        "escape codes in a log that is not a terminal:\n{}",
        log()
    );
    // Drained: every file ends on a whole line.
    let t = telemetry();
    assert!(t.ends_with('\n'), "torn last line after the drain");
    drop(sims);
}
