//! Simulator -> daemon on loopback, no external servers: a station that
//! goes away mid-run (simulator stopped) turns its points non-good, and when
//! it comes back on the same port the points resume without restarting the
//! daemon. Also checks what the file sink wrote.

mod support;

use gaswatch::config::Config;
use gaswatch::model::Quality;
use gaswatch::topology::{self, RunOptions, live::LiveState};
use gaswatch_sim::{SimOptions, Station};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const STATION: &str = include_str!("../config/city-gate.toml");

async fn start_sim(
    bind: impl Fn(&gaswatch_sim::Endpoint) -> SocketAddr,
) -> BTreeMap<gaswatch_sim::Endpoint, gaswatch_sim::SimHandle> {
    let station = Station::from_config_str(STATION, &SimOptions::default()).expect("station");
    gaswatch_sim::serve_all(station, bind).await.expect("serve")
}

fn config_for(
    handles: &BTreeMap<gaswatch_sim::Endpoint, gaswatch_sim::SimHandle>,
    dir: &Path,
) -> Config {
    let mut c = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    for d in &mut c.devices {
        let h = handles
            .iter()
            .find(|(ep, _)| ep.host == d.host && ep.port == d.port)
            .map(|(_, h)| h)
            .expect("endpoint");
        d.port = h.local_addr().port();
        d.poll_interval = Duration::from_millis(200);
        d.timeout = Duration::from_millis(200);
    }
    c.sinks.file = Some(gaswatch::sinks::file::config::FileSinkConfig {
        dir: dir.to_path_buf(),
    });
    c.spool.dir = dir.join("spool");
    c
}

fn all_good(live: &Mutex<LiveState>) -> bool {
    live.lock()
        .map(|s| s.values.iter().all(|v| v.1 == Quality::Good))
        .unwrap_or(false)
}

fn none_good(live: &Mutex<LiveState>) -> bool {
    live.lock()
        .map(|s| s.values.iter().all(|v| v.1 != Quality::Good))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_resume_after_the_station_restarts_without_restarting_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let handles = start_sim(|_| any).await;
    let addrs: BTreeMap<_, _> = handles
        .iter()
        .map(|(ep, h)| (ep.clone(), h.local_addr()))
        .collect();
    let config = config_for(&handles, dir.path());
    let plan = gaswatch::engine::EnginePlan::compile(&config);
    let live = Arc::new(Mutex::new(LiveState::new(&plan)));
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(
        config,
        RunOptions {
            live: Some(live.clone()),
            ..Default::default()
        },
        cancel.clone(),
    ));

    assert!(
        support::wait_until_async(Duration::from_secs(10), || async { all_good(&live) }).await,
        "points never became good"
    );

    for (_, h) in handles {
        h.stop().await;
    }
    assert!(
        support::wait_until_async(Duration::from_secs(10), || async { none_good(&live) }).await,
        "points stayed good after the station went away"
    );
    let before = live.lock().expect("lock").samples;

    let handles = start_sim(|ep| addrs[ep]).await;
    assert!(
        support::wait_until_async(Duration::from_secs(30), || async { all_good(&live) }).await,
        "points did not resume after the station came back"
    );
    assert!(live.lock().expect("lock").samples > before);

    cancel.cancel();
    daemon.await.expect("join").expect("daemon result");
    for (_, h) in handles {
        h.stop().await;
    }

    // The file sink holds line protocol with every point, including the
    // non-good samples from the outage, each with its quality.
    let mut text = String::new();
    for e in std::fs::read_dir(dir.path()).expect("dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "lp") {
            text.push_str(&std::fs::read_to_string(&p).expect("read"));
        }
    }
    for tag in &plan.tags {
        assert!(
            text.contains(&format!("point={}", tag.name)),
            "no line for {}",
            tag.name
        );
    }
    assert!(text.contains("quality=\"good\""));
    assert!(
        text.contains("quality=\"stale\"") || text.contains("quality=\"bad\""),
        "the outage is visible in the data"
    );
}
