//! `/health` as an operator reads it, from the real binary against the
//! simulated city gate and a real InfluxDB 1.6.7:
//!
//! - per device: when the Modbus endpoint goes away every device behind it
//!   shows `connected: false` with the kind of its last error, while the
//!   daemon stays ready (readiness is about config and sinks, not the
//!   field); when the endpoint is back they show connected again;
//! - per sink and readiness: when the InfluxDB sink's spool cannot store a
//!   batch (its telemetry folder replaced by a file), that sink alone is
//!   `failing`, `/health` answers 503 (`not_ready`), the loss is logged
//!   naming the sink and counted in `gaswatch_points_dropped_total{reason=
//!   "store_failed"}`, and the file sink keeps getting every sample; with
//!   the folder back the daemon is ready again.

mod support;

use gaswatch_sim::{SimOptions, Station};
use support::daemon::{DEADLINE, STATION, file_points, setup, spawn_daemon, start_sim, terminate};
use support::influxdb::InfluxServer;

/// (HTTP status, body) of `/health`.
async fn health(port: u16) -> Option<(u16, serde_json::Value)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, serde_json::from_str(&r.text().await.ok()?).ok()?))
}

fn sink_state(h: &serde_json::Value, name: &str) -> String {
    h["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .and_then(|s| s["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn devices(h: &serde_json::Value) -> Vec<serde_json::Value> {
    h["devices"].as_array().cloned().unwrap_or_default()
}

/// Waits until `/health` satisfies `cond`; the last body on failure.
async fn wait_health(port: u16, what: &str, cond: impl Fn(u16, &serde_json::Value) -> bool) {
    let last = std::sync::Mutex::new(None);
    let ok = support::wait_until_async(DEADLINE, || async {
        let Some((code, h)) = health(port).await else {
            return false;
        };
        let ok = cond(code, &h);
        *last.lock().expect("lock") = Some((code, h));
        ok
    })
    .await;
    assert!(ok, "{what}: last /health {:?}", last.lock().expect("lock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_device_and_sink_state_and_readiness() {
    gaswatch::sinks::tls::ensure_crypto_provider();
    let influx = InfluxServer::start_new().await;
    influx.create_database("gaswatch").await;
    let sim = start_sim(0.1).await;
    let sim_addr = sim.local_addr();
    let http_port = support::free_port();
    // Fast polls and the smallest spool cap (1 MiB: 128 KiB segments), so
    // the spool starts a new segment every few seconds.
    let s = setup(&sim, &influx.url(), 20, |t| {
        t["spool"]
            .as_table_mut()
            .expect("spool")
            .insert("max_bytes".into(), (1024 * 1024).into());
        let mut http = toml::Table::new();
        http.insert("listen".into(), format!("127.0.0.1:{http_port}").into());
        t.insert("http".into(), http.into());
    });
    let mut daemon = spawn_daemon(&s);

    wait_health(http_port, "ready with every device connected", |code, h| {
        code == 200
            && h["ready"] == true
            && devices(h).len() == 3
            && devices(h)
                .iter()
                .all(|d| d["connected"] == true && d["last_error"].is_null())
            && sink_state(h, "influxdb") == "reachable"
            && sink_state(h, "file") == "reachable"
    })
    .await;

    // The endpoint goes away: every device disconnected with its error
    // kind, the daemon still ready.
    sim.stop().await;
    wait_health(http_port, "devices shown disconnected", |code, h| {
        code == 200
            && h["ready"] == true
            && devices(h).iter().all(|d| {
                d["connected"] == false
                    && d["endpoint"] == format!("127.0.0.1:{}", sim_addr.port())
                    && ["transport", "timeout", "paused", "no_response"]
                        .contains(&d["last_error"].as_str().unwrap_or(""))
                    && d["last_good_read"].is_string()
            })
    })
    .await;
    let station = Station::from_config_str(STATION, &SimOptions::default()).expect("station");
    let sim = gaswatch_sim::serve(station, sim_addr)
        .await
        .expect("serve again");
    wait_health(http_port, "devices connected again", |code, h| {
        code == 200
            && devices(h)
                .iter()
                .all(|d| d["connected"] == true && d["last_error"].is_null())
    })
    .await;

    // The InfluxDB spool cannot store: that sink failing, not ready (503).
    let tele = s.spool().join("influxdb").join("telemetry");
    let away = s.spool().join("influxdb").join("telemetry.away");
    std::fs::rename(&tele, &away).expect("move the telemetry folder away");
    std::fs::write(&tele, b"not a folder").expect("file in its place");
    wait_health(http_port, "the InfluxDB sink failing", |code, h| {
        code == 503
            && h["ready"] == false
            && h["status"] == "not_ready"
            && sink_state(h, "influxdb") == "failing"
            && sink_state(h, "file") == "reachable"
    })
    .await;
    // The file sink still gets every sample.
    let before = file_points(&s.files()).len();
    assert!(
        support::wait_until(DEADLINE, || file_points(&s.files()).len()
            >= before + 9 * 20),
        "the file sink stopped with the InfluxDB spool; log:\n{}",
        s.log_text()
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gaswatch_points_dropped_total{reason=\"store_failed\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "no store_failed drops counted:\n{metrics}");
    assert!(
        s.log_text()
            .lines()
            .any(|l| l.contains("Cannot store engine output")
                && l.contains("influxdb")
                && !l.contains("\"file\"")),
        "the failure is not logged naming the sink; log:\n{}",
        s.log_text()
    );

    // The folder back: ready again.
    std::fs::remove_file(&tele).expect("remove the file");
    std::fs::rename(&away, &tele).expect("folder back");
    wait_health(http_port, "ready again", |code, h| {
        code == 200 && h["ready"] == true && sink_state(h, "influxdb") == "reachable"
    })
    .await;
    // One ERROR for the episode (not one per batch), one INFO at its end.
    let log = s.log_text();
    assert_eq!(
        log.matches("Cannot store engine output").count(),
        1,
        "log:\n{log}"
    );
    assert!(log.contains("Engine output is stored in every sink again."));
    terminate(&mut daemon, &s).await;
    sim.stop().await;
}
