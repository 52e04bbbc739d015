//! Wiring only: builds the plan, opens spools and sinks, spawns the sources,
//! the sink tasks and the engine task, and shuts them down in order
//! (sources stop -> the engine drains the channel and flushes the spools ->
//! sinks make a last delivery attempt and stop).

pub mod live;
pub mod route;

use crate::buffer::{SharedSpool, Spool};
use crate::config::Config;
use crate::engine::{Engine, EnginePlan};
use crate::model::{Input, Output, Timestamp};
use crate::sinks::file::writer::FileSink;
use crate::sinks::{influxdb, mqtt};
use crate::sources::modbus;
use live::LiveState;
use route::Router;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often the engine's clock advances (staleness, balance windows).
const TICK: Duration = Duration::from_millis(200);
/// Inputs buffered between sources and the engine.
const CHANNEL_CAPACITY: usize = 4096;

/// Options the CLI sets on top of the config.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Live picture for terminal views.
    pub live: Option<Arc<Mutex<LiveState>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: {message}")]
    Secret { key: &'static str, message: String },
    #[error(transparent)]
    Spool(#[from] crate::buffer::SpoolError),
    #[error("file sink: {0}")]
    File(String),
    #[error("{0}")]
    Sink(String),
}

/// Runs the daemon until `cancel` fires, then drains and returns.
pub async fn run(
    config: Config,
    opts: RunOptions,
    cancel: CancellationToken,
) -> Result<(), StartError> {
    let plan = Arc::new(EnginePlan::compile(&config));
    let sinks_cancel = CancellationToken::new();
    let sources_cancel = cancel.child_token();
    let mut sink_tasks = Vec::new();

    let influx = match &config.sinks.influxdb {
        Some(cfg) => {
            let dir = config.spool.dir.join("influxdb");
            let writer = influxdb::writer::WriterConfig::resolve(cfg, &dir)
                .map_err(|e| StartError::Sink(e.to_string()))?;
            let spool = SharedSpool::new("influxdb", Spool::open(&dir, &config.spool)?);
            sink_tasks.push(tokio::spawn(influxdb::writer::run(
                writer,
                Arc::clone(&spool),
                sinks_cancel.clone(),
            )));
            Some(spool)
        }
        None => None,
    };
    let (tx, mut rx) = mpsc::channel::<Input>(CHANNEL_CAPACITY);
    let mqtt_spool = match &config.sinks.mqtt {
        Some(cfg) => {
            let password = resolve(cfg.password.as_ref(), "sinks.mqtt.password")?;
            let spool = Spool::open(&config.spool.dir.join("mqtt"), &config.spool)?;
            let spool = SharedSpool::new("mqtt", spool);
            let station = config.station.id.clone();
            sink_tasks.push(tokio::spawn(mqtt::publisher::run_with_commands(
                Default::default(),
                cfg.clone(),
                station,
                password,
                Arc::clone(&spool),
                sinks_cancel.clone(),
                Some(tx.clone()),
            )));
            Some((
                spool,
                mqtt::payload::Topics::new(&cfg.topic_prefix, &config.station.id),
            ))
        }
        None => None,
    };
    let file = match &config.sinks.file {
        Some(cfg) => Some(FileSink::open(cfg).map_err(|e| StartError::File(e.to_string()))?),
        None => None,
    };

    let source_tasks = modbus::poller::spawn(Arc::clone(&plan), tx, sources_cancel.clone());
    info!(
        station = %plan.station_id,
        devices = plan.devices.len(),
        points = plan.tags.len(),
        alarms = plan.alarms.len(),
        "gaswatch started."
    );

    // The journal restores alarm states and the sequence number.
    let journal_path = config
        .alarms
        .journal
        .clone()
        .unwrap_or_else(|| crate::journal::default_path(&config.spool.dir));
    let (mut journal, recovered) = crate::journal::Journal::open(&journal_path)
        .map_err(|e| StartError::Sink(e.to_string()))?;
    if recovered.skipped > 0 {
        warn!(path = %journal_path.display(), skipped = recovered.skipped, "Alarm journal: unreadable or torn lines skipped.");
    }
    let mut engine = Engine::new(Arc::clone(&plan), 0);
    engine.restore_alarms(recovered.seq, &recovered.for_plan(&plan));
    info!(path = %journal_path.display(), seq = recovered.seq, alarms = recovered.alarms.len(), "Alarm journal opened.");
    let mut router = Router::new(Arc::clone(&plan), influx, mqtt_spool, file);
    let mut out = Output::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flush = tokio::time::interval(config.spool.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let live = opts.live;

    let mut emit = |out: &mut Output, router: &mut Router| {
        if out.is_empty() {
            return;
        }
        // Write-ahead: the journal first, then the sinks.
        if let Err(e) = journal.append(&router.plan, out) {
            metrics::counter!("gaswatch_journal_errors_total").increment(1);
            error!(error = %e, alarms = out.alarms.len(), "Cannot write the alarm journal; alarms still go to the sinks.");
        }
        if let Err(e) = router.route(out) {
            metrics::counter!("gaswatch_route_errors_total").increment(1);
            error!(error = %e, samples = out.samples.len(), alarms = out.alarms.len(), "Cannot store engine output; these results are lost.");
        }
        if let Some(live) = &live
            && let Ok(mut l) = live.lock()
        {
            l.update(out);
        }
        out.clear();
    };

    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            input = rx.recv() => {
                let Some(input) = input else { break };
                engine.process(&input, &mut out);
                // Take what else is waiting so a burst is routed as one batch.
                for _ in 0..256 {
                    match rx.try_recv() {
                        Ok(input) => engine.process(&input, &mut out),
                        Err(_) => break,
                    }
                }
                emit(&mut out, &mut router);
            }
            _ = tick.tick() => {
                engine.tick(Timestamp::now(), &mut out);
                emit(&mut out, &mut router);
            }
            _ = flush.tick() => {
                if let Err(e) = router.flush() {
                    error!(error = %e, "Cannot flush the spool to disk.");
                }
                if let Err(e) = journal_sync(&journal_path) {
                    error!(error = %e, "Cannot sync the alarm journal.");
                }
            }
        }
    }

    // Shutdown: stop polling, take what is in the channel, make it durable.
    sources_cancel.cancel();
    for t in source_tasks {
        let _ = t.await;
    }
    while let Ok(input) = rx.try_recv() {
        engine.process(&input, &mut out);
    }
    emit(&mut out, &mut router);
    if let Err(e) = router.flush() {
        error!(error = %e, "Cannot flush the spool to disk at shutdown.");
    }
    sinks_cancel.cancel();
    for t in sink_tasks {
        if tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .is_err()
        {
            warn!("A sink did not stop within 10 s; its spool keeps the rest.");
        }
    }
    info!("gaswatch stopped.");
    Ok(())
}

fn resolve(
    s: Option<&crate::config::Secret>,
    key: &'static str,
) -> Result<Option<crate::config::SecretString>, StartError> {
    match s {
        None => Ok(None),
        Some(s) => s
            .resolve()
            .map(Some)
            .map_err(|message| StartError::Secret { key, message }),
    }
}

/// Syncs the journal's directory entry and data (the handle is owned by the
/// emit closure; opening the file again for `sync_data` is cheap and safe).
fn journal_sync(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .sync_data()
}
