//! Wiring only: builds the plan, opens spools and sinks, spawns the sources,
//! the sink tasks and the engine task, and shuts them down in order
//! (sources stop -> the engine drains the channel and flushes the spools ->
//! sinks make a last delivery attempt and stop).
//!
//! Reload (SIGHUP, see `signals.rs`): a new, already validated config is
//! applied in two steps. First, when `[sinks]`, `[spool]`, a secret or a TLS
//! file changed (secrets and TLS files are re-read on every SIGHUP, so a
//! rotated password file is picked up with the config text unchanged), the
//! sinks restart while the old sources keep polling into the channel: a
//! sink that needs its grace period to stop costs no poll cycle. Their
//! spools are on disk, so nothing queued is lost; if the new sinks cannot
//! start, the old ones are restarted and the old config is kept. Then, at a
//! quiet point of the engine task, the old sources stop, what they sent is
//! processed by the old engine and made durable, and the new plan starts
//! with the engine state carried over by name ([`Engine::carry_state_from`]:
//! alarm states, last values, open balance windows). The pollers restart on
//! the daemon's poll grid ([`modbus::poller::PollGrid`]): every device keeps
//! its ticks and stagger phase, and resumes at the tick its old poller left
//! unfinished, so a reload neither polls an interval twice nor skips one.
//! `[spool] dir` cannot change by reload (the backlog is in the running
//! folder); `[http]` changes wait for a restart.

pub mod durable;
pub mod live;
pub mod route;
pub mod signals;

use crate::buffer::{RecordClass, SharedSpool, Spool};
use crate::config::Config;
use crate::engine::{Engine, EnginePlan};
use crate::model::{Input, Output, Quality, Receipt, Timestamp};
use crate::sinks::file::writer::FileSink;
use crate::sinks::sparkplug::EdgeState;
use crate::sinks::{influxdb, mqtt};
use crate::sources::modbus;
use crate::sources::mqtt as mqtt_source;
use crate::sources::replay::capture::Recorder;
use crate::telemetry::alarm_trace;
use crate::telemetry::device_points::DevicePointGauges;
use crate::telemetry::health::{DeviceTracker, Health};
use live::LiveState;
use route::Router;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How often the engine's clock advances (staleness, balance windows).
const TICK: Duration = Duration::from_millis(200);
/// Inputs buffered between sources and the engine.
const CHANNEL_CAPACITY: usize = 4096;
/// Longest wait for one sink's final delivery at shutdown or sink restart.
const SINK_STOP_GRACE: Duration = Duration::from_secs(10);

/// Options the CLI sets on top of the config.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Live picture for terminal views.
    pub live: Option<Arc<Mutex<LiveState>>>,
    /// Record every engine input and tick to this capture file
    /// (`gaswatch run --record`), for an exact `gaswatch replay`.
    pub record: Option<std::path::PathBuf>,
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
    #[error(transparent)]
    Record(#[from] crate::sources::replay::ReplayError),
    #[error(transparent)]
    Http(#[from] crate::telemetry::http::HttpError),
}

/// Runs the daemon until `cancel` fires, then drains and returns.
pub async fn run(
    config: Config,
    opts: RunOptions,
    cancel: CancellationToken,
) -> Result<(), StartError> {
    // The sender lives as long as this call: no reload ever arrives.
    let (_never, reloads) = mpsc::channel(1);
    run_reloadable(config, opts, reloads, cancel).await
}

/// Everything about the sinks that can fail before a spool is touched:
/// secrets, URLs, TLS files.
struct SinkPrep {
    influx: Option<influxdb::writer::WriterConfig>,
    mqtt_password: Option<crate::config::SecretString>,
    sparkplug_password: Option<crate::config::SecretString>,
}

fn prepare_sinks(config: &Config) -> Result<SinkPrep, StartError> {
    crate::sinks::tls::ensure_crypto_provider();
    let influx = match &config.sinks.influxdb {
        Some(cfg) => Some(
            influxdb::writer::WriterConfig::resolve(cfg, &config.spool.dir.join("influxdb"))
                .map_err(|e| StartError::Sink(e.to_string()))?,
        ),
        None => None,
    };
    let mqtt_password = match &config.sinks.mqtt {
        Some(cfg) => {
            if let Some(tls) = &cfg.tls {
                crate::sinks::tls::mqtt_client_config(tls)
                    .map_err(|e| StartError::Sink(e.to_string()))?;
            }
            resolve(cfg.password.as_ref(), "sinks.mqtt.password")?
        }
        None => None,
    };
    let sparkplug_password = match &config.sinks.sparkplug {
        Some(cfg) => resolve(cfg.password.as_ref(), "sinks.sparkplug.password")?,
        None => None,
    };
    Ok(SinkPrep {
        influx,
        mqtt_password,
        sparkplug_password,
    })
}

/// The running sink tasks and the spools the engine task appends to.
struct Sinks {
    cancel: CancellationToken,
    /// Each sink task with the sink's name, for logs.
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    influx: Option<Arc<SharedSpool>>,
    mqtt: Option<(Arc<SharedSpool>, mqtt::payload::Topics)>,
    file: bool,
    /// The Sparkplug B edge node's picture of the station (no spool: it
    /// publishes state, and a new NBIRTH carries everything).
    edge: Option<Arc<EdgeState>>,
}

impl Sinks {
    /// `commands`: where the MQTT sink hands dispatchers' commands (the
    /// engine's input channel); `plan`: compiled from `config` (the
    /// Sparkplug edge node announces its points).
    fn start(
        config: &Config,
        prep: SinkPrep,
        commands: &mpsc::Sender<Input>,
        plan: &Arc<EnginePlan>,
    ) -> Result<(Sinks, Option<FileSink>), StartError> {
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();
        let influx = match (&config.sinks.influxdb, prep.influx) {
            (Some(_), Some(writer)) => {
                let dir = config.spool.dir.join("influxdb");
                let spool = SharedSpool::new("influxdb", Spool::open(&dir, &config.spool)?);
                tasks.push((
                    "influxdb",
                    tokio::spawn(influxdb::writer::run(
                        writer,
                        Arc::clone(&spool),
                        cancel.clone(),
                    )),
                ));
                Some(spool)
            }
            _ => None,
        };
        let mqtt = match &config.sinks.mqtt {
            Some(cfg) => {
                let spool = Spool::open(&config.spool.dir.join("mqtt"), &config.spool)?;
                let spool = SharedSpool::new("mqtt", spool);
                tasks.push((
                    "mqtt",
                    tokio::spawn(mqtt::publisher::run_with_commands(
                        Default::default(),
                        cfg.clone(),
                        config.station.id.clone(),
                        prep.mqtt_password,
                        Arc::clone(&spool),
                        cancel.clone(),
                        Some(commands.clone()),
                    )),
                ));
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
        let edge = match &config.sinks.sparkplug {
            Some(cfg) => {
                let plan = Arc::clone(plan);
                let state = EdgeState::new(&plan);
                tasks.push((
                    "sparkplug",
                    tokio::spawn(crate::sinks::sparkplug::run(
                        cfg.clone(),
                        plan,
                        Arc::clone(&state),
                        prep.sparkplug_password,
                        cancel.clone(),
                    )),
                ));
                Some(state)
            }
            None => None,
        };
        let sinks = Sinks {
            cancel,
            tasks,
            influx,
            mqtt,
            file: file.is_some(),
            edge,
        };
        Ok((sinks, file))
    }

    /// No sink (the placeholder while sinks restart).
    fn none() -> Sinks {
        Sinks {
            cancel: CancellationToken::new(),
            tasks: Vec::new(),
            influx: None,
            mqtt: None,
            file: false,
            edge: None,
        }
    }

    /// Names and spools for `/health` and the spool gauges.
    fn entries(&self) -> Vec<(String, Option<Arc<SharedSpool>>)> {
        let mut v = Vec::new();
        if let Some(s) = &self.influx {
            v.push((s.name().to_string(), Some(Arc::clone(s))));
        }
        if let Some((s, _)) = &self.mqtt {
            v.push((s.name().to_string(), Some(Arc::clone(s))));
        }
        if self.file {
            v.push(("file".to_string(), None));
        }
        v
    }

    /// Last delivery attempt, then stop; the spools keep what is left. A
    /// task still running after the grace period is aborted, so it never
    /// shares its spool with the sink that replaces it (a record it sent
    /// but did not acknowledge is sent again; InfluxDB overwrites it, MQTT
    /// delivery is at least once).
    async fn stop(self) {
        self.cancel.cancel();
        for (sink, mut t) in self.tasks {
            if tokio::time::timeout(SINK_STOP_GRACE, &mut t).await.is_err() {
                warn!(
                    sink,
                    grace_s = SINK_STOP_GRACE.as_secs(),
                    "A sink did not stop within its grace period; stopped, its spool keeps the rest."
                );
                t.abort();
                let _ = t.await;
            }
        }
    }
}

/// Runs the daemon until `cancel` fires, applying each config received on
/// `reloads` (already validated by the sender).
pub async fn run_reloadable(
    config: Config,
    opts: RunOptions,
    mut reloads: mpsc::Receiver<Config>,
    cancel: CancellationToken,
) -> Result<(), StartError> {
    // Metrics first, so nothing counted by a source or sink is lost.
    crate::telemetry::prom::install();
    // What this call starts stops when it returns, early errors included.
    let started = cancel.child_token();
    let _stop_on_return = started.clone().drop_guard();
    let health = Arc::new(Health::default());
    let http_cancel = started.child_token();
    tokio::spawn(crate::telemetry::prom::upkeep(
        Duration::from_secs(5),
        http_cancel.clone(),
    ));
    let (tx, mut rx) = mpsc::channel::<Input>(CHANNEL_CAPACITY);
    // The first poll needs only the plan: the pollers start now, and what
    // they read waits in the channel while the rest starts (HTTP, spools,
    // sinks, journal, router). The engine task takes nothing before all of
    // that is up, so no input is processed without its sinks.
    let mut plan = Arc::new(EnginePlan::compile(&config));
    let mut sources_cancel = started.child_token();
    // One poll grid for the daemon's life: a reload restarts the pollers on
    // it, so every device keeps its ticks (and its stagger phase).
    let start = tokio::time::Instant::now();
    let grid = modbus::poller::PollGrid::new(&plan, start);
    let mut source_tasks =
        spawn_sources(&plan, &config, &tx, &sources_cancel, grid.clone(), start)?;
    // Nothing reads the device points any more (the plan has them): keep
    // the config without its expanded map points (15,000 `PointConfig`s at
    // 500 devices x 30 points), freed before the rest allocates, only to
    // compare a reloaded config with.
    let mut config = config;
    drop(config.fold_point_maps());
    let mut http_task = None;
    if let Some(h) = &config.http {
        let addr = h
            .listen
            .parse()
            .map_err(|_| StartError::Sink(format!("http.listen: bad address {:?}", h.listen)))?;
        let (_, task) =
            crate::telemetry::http::serve(addr, Arc::clone(&health), http_cancel.clone()).await?;
        http_task = Some(task);
    }

    // What the sinks and sources read beyond the config text, as loaded.
    let mut sink_fp = sink_material(&config);
    let mut source_fp = source_material(&config);
    let prep = prepare_sinks(&config)?;
    let (mut sinks, file) = Sinks::start(&config, prep, &tx, &plan)?;
    health.set_sinks(sinks.entries());
    health.config_loaded(&plan, Timestamp::now());
    info!(
        station = %plan.station_id,
        devices = plan.devices.len(),
        points = plan.tags.len(),
        alarms = plan.alarms.len(),
        "gaswatch started."
    );

    let mut recorder = Recorder::open(opts.record.as_deref(), &plan)?;
    let mut engine = Engine::new(Arc::clone(&plan), 0);
    // The alarm journal restores alarm states and the sequence number.
    let journal_path = config
        .alarms
        .journal
        .clone()
        .unwrap_or_else(|| crate::journal::default_path(&config.spool.dir));
    let (journal, recovered) = crate::journal::Journal::open_with(
        &journal_path,
        crate::journal::Rotation::from_config(&config.alarms.journal_rotation),
        Timestamp::now(),
    )
    .map_err(|e| StartError::Sink(e.to_string()))?;
    if recovered.skipped > 0 {
        warn!(path = %journal_path.display(), skipped = recovered.skipped, "Alarm journal: unreadable or torn lines skipped.");
    }
    engine.restore_alarms(recovered.seq, &recovered.for_plan(&plan));
    info!(path = %journal_path.display(), seq = recovered.seq, alarms = recovered.alarms.len(), segments = recovered.segments, "Alarm journal opened.");
    let mut router = Router::new(
        Arc::clone(&plan),
        sinks.influx.clone(),
        sinks.mqtt.clone(),
        file,
    );
    let mut tracker = DeviceTracker::new(&plan);
    let mut point_gauges = DevicePointGauges::new(&plan);
    let mut out = Output::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flush = tokio::time::interval(config.spool.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut emitter = Emitter {
        edge: sinks.edge.clone(),
        live: opts.live,
        health: Arc::clone(&health),
        backlog_since: Vec::new(),
        journal,
        store_failures: 0,
        alarms_changed: true,
    };
    // MQTT receipts seen in the current batch (see `Input::Receipt`).
    let mut receipts: Vec<Receipt> = Vec::new();
    // The running disk sync (group commit) and the receipts it holds back.
    let mut disk = durable::DiskSync::default();
    health.set_running(true);

    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            // Before inputs: a steady stream of inputs must never postpone
            // the flush, which bounds what a crash can lose. Group commit
            // (see `durable.rs`): everything is handed to the kernel here,
            // the fsyncs run on a blocking thread while inputs keep flowing;
            // when a sync still runs, the next starts as soon as it ends.
            _ = flush.tick() => {
                let now = Timestamp::now();
                if emitter.journal.rotation_due(now) {
                    // A rotation syncs the journal inline (rare: once per
                    // segment): the spools go to disk first, so the journal
                    // is never ahead of them.
                    disk.finish(&mut router, &mut emitter.journal).await;
                    if let Err(e) = router.flush() {
                        error!(error = %e, "Cannot flush the spool to disk.");
                    }
                }
                match emitter.journal.maintain(now) {
                    Ok(true) => info!(path = %emitter.journal.path().display(), segments = emitter.journal.archives().len() + 1, "Alarm journal: new segment started."),
                    Ok(false) => {}
                    Err(e) => error!(error = %e, "Alarm journal rotation or retention failed; appending to the current segment."),
                }
                let capture = recorder.begin_flush();
                disk.request(&mut router, &mut emitter.journal, capture);
                emitter.spool_gauges(&sinks);
            }
            done = disk.done() => {
                disk.finished(done, &mut router, &mut emitter.journal);
            }
            input = rx.recv() => {
                let Some(input) = input else { break };
                if !redelivered(&input, &mut emitter.journal) {
                    recorder.input(&input);
                    tracker.observe(&input);
                    take(&mut engine, input, &mut out, &mut receipts);
                }
                // Take what else is waiting so a burst is routed as one
                // batch, but route an alarm event as soon as there is one
                // (not after up to 256 more inputs of the burst).
                for _ in 0..256 {
                    if !out.alarms.is_empty() {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(input) => {
                            if redelivered(&input, &mut emitter.journal) {
                                continue;
                            }
                            recorder.input(&input);
                            tracker.observe(&input);
                            take(&mut engine, input, &mut out, &mut receipts);
                        }
                        Err(_) => break,
                    }
                }
                let alarms = !out.alarms.is_empty();
                let stored = emitter.emit(&mut out, &mut router, &engine);
                if !receipts.is_empty() {
                    // Durable before acknowledged: confirmed after the next
                    // sync (one that starts after this output was stored).
                    // Output not stored: the broker delivers it again.
                    if stored {
                        disk.wait_for(&mut receipts);
                        disk.request(&mut router, &mut emitter.journal, None);
                    } else {
                        receipts.clear();
                    }
                }
                if alarms {
                    // Let the MQTT publisher, woken by the route, run now,
                    // not after the next batch: the daemon runs on one thread
                    // (and on a worker pool, as in tests, the woken task
                    // waits in this worker's LIFO slot, which no other worker
                    // can steal: tokio#4941).
                    tokio::task::yield_now().await;
                }
            }
            _ = tick.tick() => {
                let now = Timestamp::now();
                recorder.tick(now);
                engine.tick(now, &mut out);
                emitter.emit(&mut out, &mut router, &engine);
                tracker.tick(now);
                health.update_devices(&tracker);
                point_gauges.update(&engine);
                if std::mem::take(&mut emitter.alarms_changed) {
                    alarm_gauges(&engine);
                }
            }
            Some(mut new) = reloads.recv() => {
                let new_sink_fp = sink_material(&new);
                let new_source_fp = source_material(&new);
                let secrets_changed = new_sink_fp != sink_fp;
                // The running config is kept folded (see above).
                let map_points = new.fold_point_maps();
                let same = new == config;
                new.unfold_point_maps(map_points);
                if same && !secrets_changed && new_source_fp == source_fp {
                    info!("Configuration unchanged (secrets and TLS files too); nothing to reload.");
                    continue;
                }
                if new.spool.dir != config.spool.dir {
                    // The backlog is in the old folder: a new one would strand it.
                    error!(running = %config.spool.dir.display(), new = %new.spool.dir.display(),
                        "Reload rejected: [spool] dir cannot change while running (the spooled data is in the running folder); keeping the running configuration.");
                    metrics::counter!("gaswatch_config_reloads_total", "result" => "rejected").increment(1);
                    continue;
                }
                // 1. Sinks first, when they changed, while the old sources keep
                //    polling: their inputs wait in the channel, so a sink that
                //    takes its grace period to stop costs no poll cycle.
                // The Sparkplug NBIRTH lists the points: any change needs a new birth.
                let new_plan = Arc::new(EnginePlan::compile(&new));
                let sinks_changed = new.sinks != config.sinks
                    || new.spool != config.spool
                    || new.sinks.sparkplug.is_some()
                    || secrets_changed;
                if sinks_changed {
                    let prep = match prepare_sinks(&new) {
                        Ok(prep) => prep,
                        Err(e) => {
                            error!(error = %e, "Reload rejected: the new sinks cannot start; keeping the running configuration.");
                            metrics::counter!("gaswatch_config_reloads_total", "result" => "rejected").increment(1);
                            continue;
                        }
                    };
                    // The running fsyncs first: their handles are the old spools' files.
                    disk.finish(&mut router, &mut emitter.journal).await;
                    if let Err(e) = router.flush() {
                        error!(error = %e, "Cannot flush the spool to disk before the reload.");
                    }
                    // The router lets go of the old spools and files before
                    // the new ones open on the same folders.
                    let old_plan = Arc::clone(&router.plan);
                    drop((router.influx.take(), router.mqtt.take(), router.file.take()));
                    // The old engine's last output has no place in a new birth.
                    emitter.edge = None;
                    std::mem::replace(&mut sinks, Sinks::none()).stop().await;
                    let started = Sinks::start(&new, prep, &tx, &new_plan);
                    let ok = started.is_ok();
                    let (s, f) = match started {
                        Ok(v) => v,
                        Err(e) => {
                            error!(error = %e, "Reload rejected: the new sinks cannot start; restarting the old ones.");
                            Sinks::start(&config, prepare_sinks(&config)?, &tx, &plan)?
                        }
                    };
                    sinks = s;
                    router = Router::new(old_plan, sinks.influx.clone(), sinks.mqtt.clone(), f);
                    health.set_sinks(sinks.entries());
                    if !ok {
                        emitter.edge = sinks.edge.clone();
                        metrics::counter!("gaswatch_config_reloads_total", "result" => "rejected").increment(1);
                        continue;
                    }
                    sink_fp = new_sink_fp;
                }
                // 2. Sources and engine switch at a quiet point: the old
                //    sources stop, what they sent goes through the old engine
                //    and into the spools, then the new plan starts.
                // Grid ticks from here on are the new pollers'.
                let stopped = tokio::time::Instant::now();
                sources_cancel.cancel();
                for t in source_tasks.drain(..) {
                    let _ = t.await;
                }
                while let Ok(input) = rx.try_recv() {
                    if redelivered(&input, &mut emitter.journal) {
                        continue;
                    }
                    recorder.input(&input);
                    tracker.observe(&input);
                    take(&mut engine, input, &mut out, &mut receipts);
                }
                emitter.emit(&mut out, &mut router, &engine);
                // Stored and synced: the receipts are confirmed (archive
                // marks move; the old MQTT sessions are closed, so the
                // broker redelivers their messages to the new ones anyway).
                disk.wait_for(&mut receipts);
                disk.flush_inline(&mut router, &mut emitter.journal, "before the reload").await;
                if new.http != config.http {
                    warn!("[http] changes take effect at the next restart.");
                }
                if new.spool.flush_interval != config.spool.flush_interval {
                    flush = tokio::time::interval(new.spool.flush_interval);
                    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                }
                // 3. The new plan, with alarm states carried over by id.
                let mut new_engine = Engine::new(Arc::clone(&new_plan), engine.alarm_seq());
                let carried = new_engine.carry_state_from(&engine);
                // A capture replays with one plan and a fresh engine.
                recorder.stop("a configuration reload changed the engine plan");
                engine = new_engine;
                plan = new_plan;
                tracker = DeviceTracker::new(&plan);
                point_gauges.clear();
                point_gauges = DevicePointGauges::new(&plan);
                emitter.alarms_changed = true;
                health.config_loaded(&plan, Timestamp::now());
                if let Some(live) = &emitter.live && let Ok(mut l) = live.lock() {
                    *l = LiveState::new(&plan);
                }
                emitter.edge = sinks.edge.clone();
                config = new;
                drop(config.fold_point_maps());
                source_fp = new_source_fp;
                router = Router::new(Arc::clone(&plan), sinks.influx.clone(), sinks.mqtt.clone(), router.file.take());
                sources_cancel = started.child_token();
                source_tasks = match spawn_sources(&plan, &config, &tx, &sources_cancel, grid.clone(), stopped) {
                    Ok(t) => t,
                    Err(e) => {
                        error!(error = %e, "MQTT sources cannot start after the reload; only Modbus runs.");
                        modbus::poller::spawn_on(Arc::clone(&plan), tx.clone(), sources_cancel.clone(), grid.clone(), stopped)
                    }
                };
                metrics::counter!("gaswatch_config_reloads_total", "result" => "applied").increment(1);
                info!(
                    station = %plan.station_id,
                    devices = plan.devices.len(),
                    points = plan.tags.len(),
                    alarms = plan.alarms.len(),
                    active_alarms_carried = carried,
                    sinks_restarted = sinks_changed,
                    "Configuration reloaded."
                );
            }
        }
    }

    // Shutdown: stop polling, take what is in the channel, make it durable.
    health.set_running(false);
    sources_cancel.cancel();
    for t in source_tasks {
        let _ = t.await;
    }
    while let Ok(input) = rx.try_recv() {
        if redelivered(&input, &mut emitter.journal) {
            continue;
        }
        recorder.input(&input);
        take(&mut engine, input, &mut out, &mut receipts);
    }
    recorder.flush();
    emitter.emit(&mut out, &mut router, &engine);
    // Everything taken is flushed, then its receipts are confirmed: an
    // archive mark moves to the last record stored (a graceful stop reads
    // nothing twice). MQTT PUBACKs cannot go out any more; the broker
    // redelivers those messages next time (duplicates overwrite).
    disk.wait_for(&mut receipts);
    disk.flush_inline(&mut router, &mut emitter.journal, "at shutdown")
        .await;
    drop(router);
    sinks.stop().await;
    http_cancel.cancel();
    if let Some(t) = http_task {
        let _ = t.await;
    }
    alarm_trace::flush();
    info!("gaswatch stopped.");
    Ok(())
}

/// Routes engine output and records what it says in metrics and views.
struct Emitter {
    /// The Sparkplug B edge node's state, when that sink runs.
    edge: Option<Arc<EdgeState>>,
    live: Option<Arc<Mutex<LiveState>>>,
    health: Arc<Health>,
    /// Per sink: since when its spool has not been empty.
    backlog_since: Vec<(String, Option<std::time::Instant>)>,
    /// The alarm journal, written right after the sink spools (see `emit`).
    journal: crate::journal::Journal,
    /// Batches in a row some sink could not store (0: all fine).
    store_failures: u64,
    /// Alarm states changed since the alarm gauges were last set.
    alarms_changed: bool,
}

impl Emitter {
    /// Routes `out` to the sinks, then appends its alarm events and command
    /// replies to the journal. In that order: the router hands alarms to the
    /// OS before returning, so a crash can leave the journal one batch
    /// behind the spools (a restart then raises those alarms again: a
    /// duplicate) but never ahead of them (an alarm journaled as raised that
    /// no sink ever received, and that the restored state would never raise
    /// again). Returns whether the output is stored in the spools and the
    /// journal (MQTT receipts are confirmed only then).
    fn emit(&mut self, out: &mut Output, router: &mut Router, engine: &Engine) -> bool {
        if out.is_empty() {
            return true;
        }
        let routed = router.route(out);
        if alarm_trace::enabled() {
            let at = alarm_trace::now_ns();
            for e in &out.alarms {
                alarm_trace::mark(alarm_trace::Stage::Routed, e.seq, at);
            }
        }
        let stored = match routed {
            Ok(()) => {
                self.health.set_failing(&[]);
                if self.store_failures > 0 {
                    info!(
                        failed_batches = self.store_failures,
                        "Engine output is stored in every sink again."
                    );
                    self.store_failures = 0;
                }
                true
            }
            Err(f) => {
                self.health.set_failing(&f.sinks);
                metrics::counter!("gaswatch_route_errors_total").increment(1);
                let lost = (out.samples.len()
                    + out.alarms.len()
                    + out.balances.len()
                    + out.archives.len()) as u64;
                metrics::counter!("gaswatch_points_dropped_total", "reason" => "store_failed")
                    .increment(lost);
                // Once per episode (a batch can come every few ms); the
                // counter has every one.
                if self.store_failures == 0 {
                    error!(sinks = ?f.sinks, error = %f.error, samples = out.samples.len(), alarms = out.alarms.len(),
                        "Cannot store engine output in these sinks; the others got it. What they cannot take is lost for them (counted as points dropped, reason store_failed).");
                }
                self.store_failures += 1;
                false
            }
        };
        let journaled = match self.journal.append(&router.plan, out) {
            Ok(()) => true,
            Err(e) => {
                metrics::counter!("gaswatch_journal_errors_total").increment(1);
                error!(error = %e, alarms = out.alarms.len(), "Cannot write the alarm journal; these alarms are in the sinks, but a restart will not restore their state.");
                false
            }
        };
        if let Some(edge) = &self.edge {
            edge.offer(out);
        }
        self.alarms_changed |= !out.alarms.is_empty();
        record_output(out, engine);
        if let Some(live) = &self.live
            && let Ok(mut l) = live.lock()
        {
            l.update(out);
        }
        out.clear();
        stored && journaled
    }

    /// Spool depth, size and backlog age per sink and class.
    fn spool_gauges(&mut self, sinks: &Sinks) {
        for (name, spool) in sinks.entries() {
            let Some(spool) = spool else { continue };
            let mut total = 0;
            {
                let g = spool.lock();
                for c in RecordClass::ALL {
                    let st = g.stats(c);
                    total += st.records;
                    metrics::gauge!("gaswatch_spool_records", "sink" => name.clone(), "class" => c.as_str())
                        .set(st.records as f64);
                    metrics::gauge!("gaswatch_spool_bytes", "sink" => name.clone(), "class" => c.as_str())
                        .set(st.bytes as f64);
                }
            }
            let since = match self.backlog_since.iter_mut().find(|(n, _)| *n == name) {
                Some((_, s)) => s,
                None => {
                    self.backlog_since.push((name.clone(), None));
                    &mut self.backlog_since.last_mut().expect("just pushed").1
                }
            };
            if total == 0 {
                *since = None;
            } else if since.is_none() {
                *since = Some(std::time::Instant::now());
            }
            let age = since.map_or(0.0, |s| s.elapsed().as_secs_f64());
            metrics::gauge!("gaswatch_spool_backlog_seconds", "sink" => name).set(age);
        }
    }
}

/// Per-batch metrics of engine output: samples by quality, non-good
/// samples by reason, alarm transitions and active alarms by priority, and
/// the balance (输差) of each closed window, per window length.
fn record_output(out: &Output, engine: &Engine) {
    let mut by_quality = [0u64; 4];
    for s in &out.samples {
        let i = match s.quality {
            Quality::Good => 0,
            Quality::Uncertain => 1,
            Quality::Bad => 2,
            Quality::Stale => 3,
        };
        by_quality[i] += 1;
        if s.quality != Quality::Good {
            metrics::counter!("gaswatch_samples_not_good_total", "reason" => s.reason.as_str())
                .increment(1);
        }
    }
    for (q, n) in [
        Quality::Good,
        Quality::Uncertain,
        Quality::Bad,
        Quality::Stale,
    ]
    .iter()
    .zip(by_quality)
    {
        if n > 0 {
            metrics::counter!("gaswatch_samples_total", "quality" => q.as_str()).increment(n);
        }
    }
    let plan = engine.plan();
    for a in &out.alarms {
        metrics::counter!("gaswatch_alarm_events_total", "action" => a.action.as_str(), "priority" => a.priority.as_str())
            .increment(1);
    }
    for b in &out.balances {
        // Each window length (5m, 1h, gas day) is its own series: one gauge
        // for all would show whichever window closed last.
        let len = b.end.0.saturating_sub(b.start.0);
        let window = plan
            .windows
            .iter()
            .find(|w| w.window_ns == len)
            .map_or("other", |w| w.label.as_str())
            .to_string();
        // And each balance group (issue #10: 输差 per group); the label set
        // is bounded by the configured groups.
        let group = b.group.as_str().to_string();
        metrics::counter!("gaswatch_balance_windows_total", "group" => group.clone(), "window" => window.clone(), "quality" => b.quality.as_str())
            .increment(1);
        if b.imbalance_percent.is_finite() && b.quality != Quality::Bad {
            metrics::gauge!("gaswatch_balance_imbalance_percent", "station" => plan.station_id.clone(), "group" => group.clone(), "window" => window.clone())
                .set(b.imbalance_percent);
            metrics::gauge!("gaswatch_balance_imbalance_sm3", "station" => plan.station_id.clone(), "group" => group, "window" => window)
                .set(b.imbalance_sm3);
        }
    }
}

/// Active alarms by priority and alarms by ISA-18.2 state: a scan of every
/// alarm, so it runs on the engine tick after a batch with alarm events,
/// not on the batch's own path to the sinks.
fn alarm_gauges(engine: &Engine) {
    let plan = engine.plan();
    {
        let mut active: std::collections::BTreeMap<&'static str, u32> = Default::default();
        for (i, d) in plan.alarms.iter().enumerate() {
            let n = active.entry(d.priority.as_str()).or_default();
            if engine.alarm_active(i as u32) {
                *n += 1;
            }
        }
        for (p, n) in active {
            metrics::gauge!("gaswatch_alarms_active", "priority" => p).set(f64::from(n));
        }
        // Alarms by ISA-18.2 state (every state listed, zeros included).
        use crate::model::AlarmState;
        let states = [
            AlarmState::Normal,
            AlarmState::Unacked,
            AlarmState::Acked,
            AlarmState::RtnUnacked,
            AlarmState::Latched,
        ];
        let mut by_state = [0u32; 5];
        for i in 0..plan.alarms.len() {
            let st = engine.alarm_state(i as u32);
            if let Some(k) = states.iter().position(|s| *s == st) {
                by_state[k] += 1;
            }
        }
        for (st, n) in states.iter().zip(by_state) {
            metrics::gauge!("gaswatch_alarms", "state" => st.as_str()).set(f64::from(n));
        }
    }
}

/// Starts the MQTT sources (secrets resolved first) and the Modbus pollers
/// (on `grid`, first polls at or after `from`).
fn spawn_sources(
    plan: &Arc<EnginePlan>,
    config: &Config,
    tx: &mpsc::Sender<Input>,
    cancel: &CancellationToken,
    grid: modbus::poller::PollGrid,
    from: tokio::time::Instant,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut passwords = Vec::new();
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
        passwords.push(pw);
    }
    let mut tasks = mqtt_source::spawn(
        Arc::clone(plan),
        &config.mqtt_sources,
        passwords,
        tx.clone(),
        cancel.clone(),
    );
    tasks.extend(modbus::poller::spawn_on(
        Arc::clone(plan),
        tx.clone(),
        cancel.clone(),
        grid,
        from,
    ));
    Ok(tasks)
}

/// Feeds one input to the engine, keeping receipts for the engine task.
fn take(engine: &mut Engine, input: Input, out: &mut Output, receipts: &mut Vec<Receipt>) {
    match input {
        Input::Receipt(r) => receipts.push(r),
        input if alarm_trace::enabled() => {
            let (taken, first) = (alarm_trace::now_ns(), out.alarms.len());
            engine.process(&input, out);
            for e in &out.alarms[first..] {
                alarm_trace::mark(alarm_trace::Stage::Taken, e.seq, taken);
            }
        }
        input => engine.process(&input, out),
    }
}

/// A dispatcher's command the journal already holds (the broker delivered
/// it again after a reconnect or a crash before its PUBACK): it is not
/// applied twice. Its receipt, which follows, still confirms it.
fn redelivered(input: &Input, journal: &mut crate::journal::Journal) -> bool {
    let Input::Command(c) = input else {
        return false;
    };
    if journal.first_delivery(&c.request_id) {
        return false;
    }
    metrics::counter!("gaswatch_mqtt_commands_total", "result" => "duplicate").increment(1);
    info!(request_id = %c.request_id, alarm = %c.alarm_id, operator = %c.operator, "Command delivered again; already applied and journaled, not applied twice.");
    true
}

/// A digest of what the sinks read from outside the config text: secrets
/// (environment or file) and TLS files. A SIGHUP with an unchanged config
/// still restarts the sinks when it changed (a rotated password file, a
/// renewed certificate at the same path). Never logged.
fn sink_material(config: &Config) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let secret = |h: &mut std::collections::hash_map::DefaultHasher,
                  s: Option<&crate::config::Secret>| {
        s.is_some().hash(h);
        if let Some(s) = s {
            s.hash_current(h);
        }
    };
    let file = |h: &mut std::collections::hash_map::DefaultHasher,
                p: Option<&std::path::PathBuf>| {
        p.map(|p| std::fs::read(p).ok()).hash(h);
    };
    if let Some(i) = &config.sinks.influxdb {
        secret(&mut h, i.password.as_ref());
        secret(&mut h, i.token.as_ref());
        file(&mut h, i.tls_ca_file.as_ref());
    }
    if let Some(m) = &config.sinks.mqtt {
        secret(&mut h, m.password.as_ref());
        if let Some(t) = &m.tls {
            file(&mut h, t.ca_file.as_ref());
            file(&mut h, t.client_cert_file.as_ref());
            file(&mut h, t.client_key_file.as_ref());
        }
    }
    if let Some(sp) = &config.sinks.sparkplug {
        secret(&mut h, sp.password.as_ref());
    }
    h.finish()
}

/// The same for the sources: MQTT source passwords.
fn source_material(config: &Config) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for src in &config.mqtt_sources {
        src.password.is_some().hash(&mut h);
        if let Some(s) = &src.password {
            s.hash_current(&mut h);
        }
    }
    h.finish()
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
