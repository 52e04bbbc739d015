//! Wiring only: builds the plan, opens spools and sinks, spawns the sources,
//! the sink tasks and the engine task, and shuts them down in order
//! (sources stop -> the engine drains the channel and flushes the spools ->
//! sinks make a last delivery attempt and stop).
//!
//! Reload (SIGHUP, see `signals.rs`): a new, already validated config is
//! applied at a quiet point of the engine task: the old sources stop, what
//! they sent is processed by the old engine and made durable, then the new
//! plan starts with the alarm states carried over by id
//! ([`Engine::carry_alarms_from`]). Sinks restart only when `[sinks]` or
//! `[spool]` changed; their spools are on disk, so nothing queued is lost.
//! If the new sinks cannot start, the old ones are restarted and the old
//! config is kept.

pub mod live;
pub mod route;
pub mod signals;

use crate::buffer::{RecordClass, SharedSpool, Spool, SpoolError};
use crate::config::Config;
use crate::engine::{Engine, EnginePlan};
use crate::model::{Input, Output, Quality, Receipt, Timestamp};
use crate::sinks::file::writer::FileSink;
use crate::sinks::sparkplug::EdgeState;
use crate::sinks::{influxdb, mqtt};
use crate::sources::modbus;
use crate::sources::mqtt as mqtt_source;
use crate::sources::replay::capture::Recorder;
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
    /// `commands`: where the MQTT sink hands dispatchers' commands (the engine's input channel).
    fn start(
        config: &Config,
        prep: SinkPrep,
        commands: &mpsc::Sender<Input>,
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
                let plan = Arc::new(EnginePlan::compile(config));
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

    /// Last delivery attempt, then stop; the spools keep what is left.
    async fn stop(self) {
        self.cancel.cancel();
        for (sink, t) in self.tasks {
            if tokio::time::timeout(SINK_STOP_GRACE, t).await.is_err() {
                warn!(
                    sink,
                    grace_s = SINK_STOP_GRACE.as_secs(),
                    "A sink did not stop within its grace period; its spool keeps the rest."
                );
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
    let health = Arc::new(Health::default());
    let http_cancel = CancellationToken::new();
    tokio::spawn(crate::telemetry::prom::upkeep(
        Duration::from_secs(5),
        http_cancel.clone(),
    ));
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

    let (tx, mut rx) = mpsc::channel::<Input>(CHANNEL_CAPACITY);
    let prep = prepare_sinks(&config)?;
    let (mut sinks, file) = Sinks::start(&config, prep, &tx)?;
    health.set_sinks(sinks.entries());

    let mut plan = Arc::new(EnginePlan::compile(&config));
    health.config_loaded(&plan, Timestamp::now());
    let mut sources_cancel = cancel.child_token();
    let mut source_tasks = spawn_sources(&plan, &config, &tx, &sources_cancel)?;
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
    let (journal, recovered) = crate::journal::Journal::open(&journal_path)
        .map_err(|e| StartError::Sink(e.to_string()))?;
    if recovered.skipped > 0 {
        warn!(path = %journal_path.display(), skipped = recovered.skipped, "Alarm journal: unreadable or torn lines skipped.");
    }
    engine.restore_alarms(recovered.seq, &recovered.for_plan(&plan));
    info!(path = %journal_path.display(), seq = recovered.seq, alarms = recovered.alarms.len(), "Alarm journal opened.");
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
    };
    let mut config = config;
    // MQTT receipts seen in the current batch (see `Input::Receipt`).
    let mut receipts: Vec<Receipt> = Vec::new();
    // The spool fsyncs of the last flush, while they run.
    let mut syncing: Option<tokio::task::JoinHandle<Result<(), SpoolError>>> = None;
    health.set_running(true);

    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            // Before inputs: a steady stream of inputs must never postpone
            // the flush, which bounds what a crash can lose.
            // The fsyncs run on a blocking thread (group commit): inputs
            // keep flowing meanwhile; the next flush waits for this one.
            _ = flush.tick(), if syncing.is_none() => {
                match router.begin_flush() {
                    Ok(job) if job.is_empty() => {}
                    Ok(job) => syncing = Some(tokio::task::spawn_blocking(move || job.run())),
                    Err(e) => error!(error = %e, "Cannot flush the spool to disk."),
                }
                recorder.flush();
                if let Err(e) = emitter.journal.sync() {
                    error!(error = %e, "Cannot sync the alarm journal.");
                }
                emitter.spool_gauges(&sinks);
            }
            done = sync_done(&mut syncing) => {
                syncing = None;
                if let Err(e) = done {
                    error!(error = %e, "Cannot flush the spool to disk.");
                }
            }
            input = rx.recv() => {
                let Some(input) = input else { break };
                recorder.input(&input);
                tracker.observe(&input);
                take(&mut engine, input, &mut out, &mut receipts);
                // Take what else is waiting so a burst is routed as one batch.
                for _ in 0..256 {
                    match rx.try_recv() {
                        Ok(input) => {
                            recorder.input(&input);
                            tracker.observe(&input);
                            take(&mut engine, input, &mut out, &mut receipts);
                        }
                        Err(_) => break,
                    }
                }
                let stored = emitter.emit(&mut out, &mut router, &engine);
                if !receipts.is_empty() {
                    // Durable before acknowledged: the running fsyncs may
                    // cover a directory entry this batch's records need.
                    if let Err(e) = finish_sync(&mut syncing).await {
                        error!(error = %e, "Cannot flush the spool to disk; MQTT messages stay unacknowledged.");
                        receipts.clear();
                    }
                }
                confirm(stored, &mut receipts, &mut router);
            }
            _ = tick.tick() => {
                let now = Timestamp::now();
                recorder.tick(now);
                engine.tick(now, &mut out);
                emitter.emit(&mut out, &mut router, &engine);
                health.update_devices(&tracker);
                point_gauges.update(&engine);
            }
            Some(new) = reloads.recv() => {
                if new == config {
                    info!("Configuration unchanged; nothing to reload.");
                    continue;
                }
                // 1. Stop the old sources; what they sent goes through the old
                //    engine and into the spools before anything changes.
                sources_cancel.cancel();
                for t in source_tasks.drain(..) {
                    let _ = t.await;
                }
                while let Ok(input) = rx.try_recv() {
                    recorder.input(&input);
                    tracker.observe(&input);
                    take(&mut engine, input, &mut out, &mut receipts);
                }
                emitter.emit(&mut out, &mut router, &engine);
                // The old MQTT sessions are closed: the broker redelivers
                // their unacknowledged messages to the new ones.
                receipts.clear();
                if let Err(e) = finish_sync(&mut syncing).await {
                    error!(error = %e, "Cannot flush the spool to disk before the reload.");
                }
                if let Err(e) = router.flush() {
                    error!(error = %e, "Cannot flush the spool to disk before the reload.");
                }
                // 2. Sinks: restart only when they changed.
                // The Sparkplug NBIRTH lists the points: any change needs a new birth.
                let sinks_changed = new.sinks != config.sinks
                    || new.spool != config.spool
                    || new.sinks.sparkplug.is_some();
                let mut applied = true;
                let mut file_sink = router.file.take();
                if sinks_changed {
                    match prepare_sinks(&new) {
                        Err(e) => {
                            error!(error = %e, "Reload rejected: the new sinks cannot start; keeping the running configuration.");
                            applied = false;
                        }
                        Ok(prep) => {
                            drop(file_sink.take());
                            let old = std::mem::replace(&mut sinks, Sinks { cancel: CancellationToken::new(), tasks: Vec::new(), influx: None, mqtt: None, file: false, edge: None });
                            old.stop().await;
                            match Sinks::start(&new, prep, &tx) {
                                Ok((s, f)) => {
                                    sinks = s;
                                    file_sink = f;
                                }
                                Err(e) => {
                                    error!(error = %e, "Reload rejected: the new sinks cannot start; restarting the old ones.");
                                    applied = false;
                                    let (s, f) = Sinks::start(&config, prepare_sinks(&config)?, &tx)?;
                                    sinks = s;
                                    file_sink = f;
                                }
                            }
                            health.set_sinks(sinks.entries());
                            emitter.edge = sinks.edge.clone();
                        }
                    }
                }
                // 3. The new plan, with alarm states carried over by id.
                let mut carried = 0;
                if applied {
                    if new.http != config.http {
                        warn!("[http] changes take effect at the next restart.");
                    }
                    let new_plan = Arc::new(EnginePlan::compile(&new));
                    let mut new_engine = Engine::new(Arc::clone(&new_plan), engine.alarm_seq());
                    carried = new_engine.carry_alarms_from(&engine);
                    // A capture replays with one plan and a fresh engine.
                    recorder.stop("a configuration reload changed the engine plan");
                    engine = new_engine;
                    plan = new_plan;
                    tracker = DeviceTracker::new(&plan);
                    point_gauges.clear();
                    point_gauges = DevicePointGauges::new(&plan);
                    health.config_loaded(&plan, Timestamp::now());
                    if let Some(live) = &emitter.live && let Ok(mut l) = live.lock() {
                        *l = LiveState::new(&plan);
                    }
                    config = new;
                }
                router = Router::new(Arc::clone(&plan), sinks.influx.clone(), sinks.mqtt.clone(), file_sink);
                sources_cancel = cancel.child_token();
                source_tasks = match spawn_sources(&plan, &config, &tx, &sources_cancel) {
                    Ok(t) => t,
                    Err(e) => {
                        error!(error = %e, "MQTT sources cannot start after the reload; only Modbus runs.");
                        modbus::poller::spawn(Arc::clone(&plan), tx.clone(), sources_cancel.clone())
                    }
                };
                if applied {
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
                } else {
                    metrics::counter!("gaswatch_config_reloads_total", "result" => "rejected").increment(1);
                }
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
        recorder.input(&input);
        take(&mut engine, input, &mut out, &mut receipts);
    }
    recorder.flush();
    emitter.emit(&mut out, &mut router, &engine);
    // The sources are stopped: these PUBACKs cannot go out; the broker
    // redelivers those messages next time (duplicates overwrite).
    receipts.clear();
    if let Err(e) = finish_sync(&mut syncing).await {
        error!(error = %e, "Cannot flush the spool to disk at shutdown.");
    }
    if let Err(e) = router.flush() {
        error!(error = %e, "Cannot flush the spool to disk at shutdown.");
    }
    if let Err(e) = emitter.journal.sync() {
        error!(error = %e, "Cannot sync the alarm journal at shutdown.");
    }
    drop(router);
    sinks.stop().await;
    http_cancel.cancel();
    if let Some(t) = http_task {
        let _ = t.await;
    }
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
    /// The alarm journal, written before the sinks (write-ahead).
    journal: crate::journal::Journal,
}

impl Emitter {
    /// Returns whether the output is stored (MQTT receipts are confirmed only then).
    fn emit(&mut self, out: &mut Output, router: &mut Router, engine: &Engine) -> bool {
        if out.is_empty() {
            return true;
        }
        if let Err(e) = self.journal.append(&router.plan, out) {
            metrics::counter!("gaswatch_journal_errors_total").increment(1);
            error!(error = %e, alarms = out.alarms.len(), "Cannot write the alarm journal; alarms still go to the sinks.");
        }
        let stored = match router.route(out) {
            Ok(()) => {
                self.health.set_route_ok(true);
                true
            }
            Err(e) => {
                self.health.set_route_ok(false);
                metrics::counter!("gaswatch_route_errors_total").increment(1);
                let lost = (out.samples.len() + out.alarms.len() + out.balances.len()) as u64;
                metrics::counter!("gaswatch_points_dropped_total", "reason" => "store_failed")
                    .increment(lost);
                error!(error = %e, samples = out.samples.len(), alarms = out.alarms.len(), "Cannot store engine output; these results are lost.");
                false
            }
        };
        if let Some(edge) = &self.edge {
            edge.offer(out);
        }
        record_output(out, engine);
        if let Some(live) = &self.live
            && let Ok(mut l) = live.lock()
        {
            l.update(out);
        }
        out.clear();
        stored
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
/// the balance (输差) of each closed window.
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
    if !out.alarms.is_empty() {
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
    }
    for b in &out.balances {
        metrics::counter!("gaswatch_balance_windows_total", "quality" => b.quality.as_str())
            .increment(1);
        if b.imbalance_percent.is_finite() && b.quality != Quality::Bad {
            metrics::gauge!("gaswatch_balance_imbalance_percent", "station" => plan.station_id.clone())
                .set(b.imbalance_percent);
            metrics::gauge!("gaswatch_balance_imbalance_sm3", "station" => plan.station_id.clone())
                .set(b.imbalance_sm3);
        }
    }
}

/// Starts the MQTT sources (secrets resolved first) and the Modbus pollers.
fn spawn_sources(
    plan: &Arc<EnginePlan>,
    config: &Config,
    tx: &mpsc::Sender<Input>,
    cancel: &CancellationToken,
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
    tasks.extend(modbus::poller::spawn(
        Arc::clone(plan),
        tx.clone(),
        cancel.clone(),
    ));
    Ok(tasks)
}

/// Feeds one input to the engine, keeping receipts for the engine task.
fn take(engine: &mut Engine, input: Input, out: &mut Output, receipts: &mut Vec<Receipt>) {
    match input {
        Input::Receipt(r) => receipts.push(r),
        input => engine.process(&input, out),
    }
}

/// Waits for the running spool fsyncs (forever when none run, so the
/// `select!` branch never fires then). A panicked job is reported as an I/O
/// error: its records may not be durable.
async fn sync_done(
    syncing: &mut Option<tokio::task::JoinHandle<Result<(), SpoolError>>>,
) -> Result<(), SpoolError> {
    match syncing.as_mut() {
        None => std::future::pending().await,
        Some(job) => {
            let res = job.await.unwrap_or_else(|e| {
                Err(SpoolError::Io {
                    path: "spool".into(),
                    source: std::io::Error::other(format!("fsync task failed: {e}")),
                })
            });
            *syncing = None;
            res
        }
    }
}

/// Waits for the running spool fsyncs, if any.
async fn finish_sync(
    syncing: &mut Option<tokio::task::JoinHandle<Result<(), SpoolError>>>,
) -> Result<(), SpoolError> {
    if syncing.is_none() {
        return Ok(());
    }
    sync_done(syncing).await
}

/// Confirms the batch's receipts once its output is stored and synced:
/// durable before acknowledged.
fn confirm(stored: bool, receipts: &mut Vec<Receipt>, router: &mut Router) {
    if receipts.is_empty() {
        return;
    }
    match router.flush() {
        Ok(()) if stored => receipts.drain(..).for_each(Receipt::confirm),
        Ok(()) => receipts.clear(),
        Err(e) => {
            error!(error = %e, "Cannot flush the spool to disk; MQTT messages stay unacknowledged.");
            receipts.clear();
        }
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
