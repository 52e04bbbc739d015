//! Running the real Modbus poller and the engine in a test: compile a station
//! config into a plan, start the poller tasks, feed every input through an
//! [`Engine`] and keep what came out (samples, inputs with the tokio time
//! they arrived). Also one process-wide Prometheus recorder so a test can
//! read the poller's metrics (labels carry per-test device ids, so tests
//! running in parallel in one binary do not see each other's numbers).

use gaswatch::config::Config;
use gaswatch::engine::{Engine, EnginePlan};
use gaswatch::model::{Input, Output, Quality, Sample};
use gaswatch::sources::modbus;
use gaswatch::sources::modbus::poller::PollGrid;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The test binary's Prometheus recorder (installed on first use).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        handle
    })
}

/// Sum of the series of metric `name` whose labels include all of `labels`
/// (0 when there is none).
pub fn metric_value(name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Parses and validates `text` (panics with the config errors) and compiles it.
pub fn plan_of(text: &str) -> Arc<EnginePlan> {
    let config = Config::from_str_named(text, Path::new("modbus_test.toml"))
        .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
    Arc::new(EnginePlan::compile(&config))
}

/// Poller -> engine, everything recorded. Cancelled on drop.
pub struct Running {
    pub plan: Arc<EnginePlan>,
    pub cancel: CancellationToken,
    pub handles: Vec<JoinHandle<()>>,
    pub samples: Arc<Mutex<Vec<Sample>>>,
    /// Every input, with the (tokio) time the engine side received it.
    pub inputs: Arc<Mutex<Vec<(tokio::time::Instant, Input)>>>,
    /// The engine, for its current text values and qualities.
    pub engine: Arc<Mutex<Engine>>,
    /// For pollers started again by [`Running::restart_on`].
    tx: mpsc::Sender<Input>,
}

impl Running {
    /// Pollers on a fresh grid starting now (as the daemon starts them).
    pub fn start(plan: Arc<EnginePlan>) -> Running {
        let now = tokio::time::Instant::now();
        let grid = PollGrid::new(&plan, now);
        Running::start_on(plan, grid, now)
    }

    /// Pollers on `grid`, first polls at or after `from`.
    pub fn start_on(plan: Arc<EnginePlan>, grid: PollGrid, from: tokio::time::Instant) -> Running {
        // The recorder must exist before the poller registers its metrics.
        metrics();
        let (tx, mut rx) = mpsc::channel::<Input>(4096);
        let cancel = CancellationToken::new();
        let handles =
            modbus::poller::spawn_on(Arc::clone(&plan), tx.clone(), cancel.clone(), grid, from);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let inputs = Arc::new(Mutex::new(Vec::new()));
        let engine = Arc::new(Mutex::new(Engine::new(Arc::clone(&plan), 0)));
        let (s, i, e) = (
            Arc::clone(&samples),
            Arc::clone(&inputs),
            Arc::clone(&engine),
        );
        tokio::spawn(async move {
            let mut out = Output::default();
            while let Some(input) = rx.recv().await {
                let now = tokio::time::Instant::now();
                out.clear();
                e.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .process(&input, &mut out);
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&out.samples);
                i.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((now, input));
            }
        });
        Running {
            plan,
            cancel,
            handles,
            samples,
            inputs,
            engine,
            tx,
        }
    }

    /// What a config reload does to the pollers: stops them (noting the
    /// moment, as the daemon does) and starts pollers for `plan` on the same
    /// `grid` from that moment. The engine keeps its plan: `plan` must have
    /// the same devices and blocks. Returns the moment of the stop.
    pub async fn restart_on(
        &mut self,
        plan: Arc<EnginePlan>,
        grid: PollGrid,
    ) -> tokio::time::Instant {
        let stopped = tokio::time::Instant::now();
        self.cancel.cancel();
        for h in std::mem::take(&mut self.handles) {
            h.await.expect("poller task panicked");
        }
        self.cancel = CancellationToken::new();
        self.handles = modbus::poller::spawn_on(
            Arc::clone(&plan),
            self.tx.clone(),
            self.cancel.clone(),
            grid,
            stopped,
        );
        self.plan = plan;
        stopped
    }

    pub fn samples_of(&self, name: &str) -> Vec<Sample> {
        let tag = self.plan.tag(name).expect("known point");
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.tag == tag)
            .copied()
            .collect()
    }

    pub fn good_count(&self, name: &str) -> usize {
        self.samples_of(name)
            .iter()
            .filter(|s| s.quality == Quality::Good)
            .count()
    }

    /// Latest text of a string point and its quality.
    pub fn text(&self, name: &str) -> Option<(String, Quality)> {
        let tag = self.plan.tag(name).expect("known point");
        let e = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        e.text(tag).map(|(t, _, q)| (t.to_string(), q))
    }

    /// The inputs alone, in arrival order.
    pub fn inputs(&self) -> Vec<Input> {
        self.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, i)| i.clone())
            .collect()
    }

    /// Cancels the poller and checks every task ended promptly, without a panic.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        for h in std::mem::take(&mut self.handles) {
            let joined = tokio::time::timeout(Duration::from_secs(5), h).await;
            let result = joined.expect("poller task did not stop within 5 s of cancellation");
            result.expect("poller task panicked");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Waits (at most `deadline`) until `cond` holds; panics naming `what`.
pub async fn eventually(deadline: Duration, what: &str, cond: impl Fn() -> bool) {
    assert!(
        super::wait_until_async(deadline, || {
            let ok = cond();
            async move { ok }
        })
        .await,
        "timed out waiting for: {what}"
    );
}
