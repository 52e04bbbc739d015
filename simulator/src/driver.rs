//! Served mode of a scenario: a task that applies a [`Runner`] to a served
//! station as its simulated time passes, puts each device's Modbus fault on
//! the wire, and writes the ground truth (incident edges, true values every
//! `truth_every`, and every hourly archive record as it closes).
//!
//! Used by the `gaswatch-sim` binary and by tests that run a scenario
//! against the daemon over real sockets.
//!
//! Time: scenario time 0 is when the driver starts (the station may have
//! run before, e.g. while a daemon connected). The driver looks at the
//! station every `tick` of wall time (100 ms by default). Truth times are `epoch + sim_time / speed` (the wall clock
//! the daemon stamps samples with), where `epoch` is the wall time of sim
//! time 0; archive records carry the device clock instead (see
//! [`crate::SimOptions::clock_start_s`]). A fault starts or ends at the first
//! tick at or after its simulated time, so at `speed` S the wire sees it up
//! to `tick * S` simulated seconds late: keep scenario events longer than
//! that.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

use crate::scenario::{Runner, ScenarioError, write_archive, write_edge, write_values};
use crate::server::SimControl;

/// Truth output of a driver (a file, or any writer in tests).
pub type TruthWriter = Box<dyn Write + Send>;

/// How often the driver looks at the station by default.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);

/// A running scenario driver.
#[derive(Debug)]
pub struct ScenarioDriver {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ScenarioError>>>,
}

impl ScenarioDriver {
    /// Starts driving `runner` on the station behind `control` (which runs
    /// at the station's own speed), checking every `tick`.
    pub fn start(
        control: SimControl,
        mut runner: Runner,
        mut truth: Option<TruthWriter>,
        tick: Duration,
    ) -> ScenarioDriver {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let (sim0, speed) = control.with_station(|s| (s.sim_time().as_secs_f64(), s.speed));
            let epoch_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64)
                - (sim0 / speed * 1e9) as i64;
            let every = runner
                .scenario()
                .truth_every
                .unwrap_or(Duration::from_secs(60))
                .as_secs_f64();
            let mut next_values = sim0;
            let mut written: BTreeMap<String, u32> = BTreeMap::new();
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {}
                }
                let (edges, faults, sim_s) = control.with_station(|s| {
                    let t = s.sim_time().as_secs_f64();
                    let (e, f) = runner.apply(s, t - sim0);
                    (e, f, t)
                });
                for (device, fault) in &faults {
                    control.set_device_fault(device, *fault);
                }
                for e in &edges {
                    info!(id = %e.id, kind = e.kind.as_str(), start = e.start, sim_s, "Scenario event.");
                }
                let Some(t) = truth.as_mut() else { continue };
                let t_ns = epoch_ns + (sim_s / speed * 1e9) as i64;
                for e in &edges {
                    write_edge(t.as_mut(), e, t_ns)?;
                }
                control.with_station(|s| -> Result<(), ScenarioError> {
                    if sim_s >= next_values {
                        write_values(t.as_mut(), s, t_ns)?;
                        next_values = sim_s + every;
                    }
                    write_archive(t.as_mut(), s, &mut written)?;
                    Ok(())
                })?;
                t.flush()?;
            }
            if let Some(t) = truth.as_mut() {
                t.flush()?;
            }
            Ok(())
        });
        ScenarioDriver {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the driver and returns how it ended (a truth write error).
    pub async fn stop(mut self) -> Result<(), ScenarioError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for ScenarioDriver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
