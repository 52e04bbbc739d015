//! Wiring only: builds the plan, opens spools and sinks, spawns the sources,
//! the sink tasks and the engine task, and shuts them down in order
//! (sources stop -> the engine drains the channel and flushes the spools ->
//! sinks make a last delivery attempt and stop).

pub mod live;
pub mod route;

use crate::buffer::{SharedSpool, Spool};
use crate::config::Config;
use crate::engine::{Engine, EnginePlan};
use crate::model::{Input, Output, Receipt, Timestamp};
use crate::sinks::file::writer::FileSink;
use crate::sinks::{influxdb, mqtt};
use crate::sources::modbus;
use crate::sources::mqtt as mqtt_source;
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
    let mqtt_spool = match &config.sinks.mqtt {
        Some(cfg) => {
            let password = resolve(cfg.password.as_ref(), "sinks.mqtt.password")?;
            let spool = Spool::open(&config.spool.dir.join("mqtt"), &config.spool)?;
            let spool = SharedSpool::new("mqtt", spool);
            let station = config.station.id.clone();
            sink_tasks.push(tokio::spawn(mqtt::publisher::run(
                cfg.clone(),
                station,
                password,
                Arc::clone(&spool),
                sinks_cancel.clone(),
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

    // Sparkplug B edge node: fed the latest state after each output.
    let edge = match &config.sinks.sparkplug {
        Some(cfg) => {
            let password = resolve(cfg.password.as_ref(), "sinks.sparkplug.password")?;
            let state = crate::sinks::sparkplug::EdgeState::new(&plan);
            sink_tasks.push(tokio::spawn(crate::sinks::sparkplug::run(
                cfg.clone(),
                Arc::clone(&plan),
                Arc::clone(&state),
                password,
                sinks_cancel.clone(),
            )));
            Some(state)
        }
        None => None,
    };

    let (tx, mut rx) = mpsc::channel::<Input>(CHANNEL_CAPACITY);
    let mut mqtt_passwords = Vec::new();
    for src in &config.mqtt_sources {
        let pw = src
            .password
            .as_ref()
            .map(|s| s.resolve())
            .transpose()
            .map_err(|message| StartError::Secret {
                key: "mqtt_sources.password",
                message: format!("source {}: {message}", src.id),
            })?;
        mqtt_passwords.push(pw);
    }
    let mut source_tasks = mqtt_source::spawn(
        Arc::clone(&plan),
        &config.mqtt_sources,
        mqtt_passwords,
        tx.clone(),
        sources_cancel.clone(),
    );
    source_tasks.extend(modbus::poller::spawn(
        Arc::clone(&plan),
        tx,
        sources_cancel.clone(),
    ));
    info!(
        station = %plan.station_id,
        devices = plan.devices.len(),
        points = plan.tags.len(),
        alarms = plan.alarms.len(),
        "gaswatch started."
    );

    let mut engine = Engine::new(Arc::clone(&plan), 0);
    let mut router = Router::new(Arc::clone(&plan), influx, mqtt_spool, file);
    let mut out = Output::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flush = tokio::time::interval(config.spool.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let live = opts.live;

    // Returns whether the output is stored (MQTT receipts are confirmed only then).
    let emit = |out: &mut Output, router: &mut Router| -> bool {
        if out.is_empty() {
            return true;
        }
        let stored = match router.route(out) {
            Ok(()) => true,
            Err(e) => {
                metrics::counter!("gaswatch_route_errors_total").increment(1);
                error!(error = %e, samples = out.samples.len(), alarms = out.alarms.len(), "Cannot store engine output; these results are lost.");
                false
            }
        };
        if let Some(edge) = &edge {
            edge.offer(out);
        }
        if let Some(live) = &live
            && let Ok(mut l) = live.lock()
        {
            l.update(out);
        }
        out.clear();
        stored
    };
    // MQTT receipts seen in the current batch (see `Input::Receipt`).
    let mut receipts: Vec<Receipt> = Vec::new();
    let confirm = |stored: bool, receipts: &mut Vec<Receipt>, router: &mut Router| {
        if receipts.is_empty() {
            return;
        }
        // Durable before acknowledged: sync the spools, then PUBACK.
        match router.flush() {
            Ok(()) if stored => receipts.drain(..).for_each(Receipt::confirm),
            Ok(()) => receipts.clear(),
            Err(e) => {
                error!(error = %e, "Cannot flush the spool to disk; MQTT messages stay unacknowledged.");
                receipts.clear();
            }
        }
    };

    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            input = rx.recv() => {
                let Some(input) = input else { break };
                take(&mut engine, input, &mut out, &mut receipts);
                // Take what else is waiting so a burst is routed as one batch.
                for _ in 0..256 {
                    match rx.try_recv() {
                        Ok(input) => take(&mut engine, input, &mut out, &mut receipts),
                        Err(_) => break,
                    }
                }
                let stored = emit(&mut out, &mut router);
                confirm(stored, &mut receipts, &mut router);
            }
            _ = tick.tick() => {
                engine.tick(Timestamp::now(), &mut out);
                emit(&mut out, &mut router);
            }
            _ = flush.tick() => {
                if let Err(e) = router.flush() {
                    error!(error = %e, "Cannot flush the spool to disk.");
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
        take(&mut engine, input, &mut out, &mut receipts);
    }
    let stored = emit(&mut out, &mut router);
    // The sources are stopped: these PUBACKs cannot go out; the broker
    // redelivers those messages next time (duplicates overwrite).
    receipts.clear();
    let _ = stored;
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

/// Feeds one input to the engine, keeping receipts for the engine task.
fn take(engine: &mut Engine, input: Input, out: &mut Output, receipts: &mut Vec<Receipt>) {
    match input {
        Input::Receipt(r) => receipts.push(r),
        input => engine.process(&input, out),
    }
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
