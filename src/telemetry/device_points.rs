//! Per-device gauges of point quality: `gaswatch_device_points{device,
//! quality}` is how many points of the device are GOOD, UNCERTAIN, BAD or
//! STALE right now, from the engine's current state (a point never read is
//! STALE). An operator alerts on `quality="bad"` or `"stale"` above 0 per
//! device without summing sample counters.
//!
//! Gauge handles are registered once per plan and the counts buffer is
//! reused, so an update allocates nothing; the daemon updates them on its
//! engine tick.

use crate::engine::{Engine, EnginePlan};
use metrics::Gauge;

/// Label values of `quality`, in the order of [`Engine::quality_by_device`].
const QUALITIES: [&str; 4] = ["good", "uncertain", "bad", "stale"];

/// The gauges of one plan's devices.
pub struct DevicePointGauges {
    gauges: Vec<[Gauge; 4]>,
    counts: Vec<[u32; 4]>,
}

impl DevicePointGauges {
    /// Registers the gauges of every device of `plan` (with the recorder
    /// installed now).
    pub fn new(plan: &EnginePlan) -> Self {
        let gauges = plan
            .devices
            .iter()
            .map(|d| {
                QUALITIES.map(|q| {
                    metrics::gauge!("gaswatch_device_points", "device" => d.id.clone(), "quality" => q)
                })
            })
            .collect();
        DevicePointGauges {
            gauges,
            counts: Vec::with_capacity(plan.devices.len()),
        }
    }

    /// Sets every gauge from the engine's current point qualities.
    pub fn update(&mut self, engine: &Engine) {
        engine.quality_by_device(&mut self.counts);
        for (g, c) in self.gauges.iter().zip(&self.counts) {
            for (gauge, n) in g.iter().zip(c) {
                gauge.set(f64::from(*n));
            }
        }
    }

    /// Zeroes every gauge (before a reload replaces the plan: a device that
    /// is gone must not keep reporting points).
    pub fn clear(&self) {
        for g in self.gauges.iter().flatten() {
            g.set(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{BlockId, DeviceId, Input, Output, ReadError, Timestamp};
    use std::sync::Arc;

    fn value(text: &str, device: &str, quality: &str) -> Option<f64> {
        let want = format!("gaswatch_device_points{{device=\"{device}\",quality=\"{quality}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(want.as_str()))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn counts_follow_reads_failures_and_pauses_per_device() {
        let text = "[station]\nid = \"s\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n\
            [[devices]]\nid = \"a\"\nhost = \"h\"\n\
            [[devices.points]]\nname = \"A1\"\nregister = \"holding\"\naddress = 0\ntype = \"u16\"\n\
            [[devices.points]]\nname = \"A2\"\nregister = \"holding\"\naddress = 1\ntype = \"u16\"\n\
            [[devices.points]]\nname = \"A3\"\nregister = \"input\"\naddress = 0\ntype = \"u16\"\n\
            [[devices]]\nid = \"b\"\nhost = \"h\"\nunit_id = 2\n\
            [[devices.points]]\nname = \"B1\"\nregister = \"holding\"\naddress = 0\ntype = \"u16\"\n";
        let config = Config::from_str_named(text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let plan = Arc::new(EnginePlan::compile(&config));
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let mut engine = Engine::new(Arc::clone(&plan), 0);
            let mut gauges = DevicePointGauges::new(&plan);
            let mut out = Output::default();
            gauges.update(&engine);
            let r = handle.render();
            assert_eq!(value(&r, "a", "stale"), Some(3.0), "never read: STALE\n{r}");
            assert_eq!(value(&r, "b", "stale"), Some(1.0));

            let ts = Timestamp(1_000_000_000);
            let (dev_a, dev_b) = (DeviceId(0), DeviceId(1));
            // Device a: the holding block reads, the input block fails.
            let holding = plan.devices[0]
                .blocks
                .iter()
                .position(|b| b.register == crate::sources::modbus::RegisterKind::Holding)
                .expect("holding block");
            let input = 1 - holding;
            for i in [
                Input::Registers {
                    device: dev_a,
                    block: BlockId(holding as u32),
                    ts,
                    regs: vec![1, 2],
                },
                Input::ReadFailed {
                    device: dev_a,
                    block: BlockId(input as u32),
                    ts,
                    error: ReadError::Exception(2),
                },
                Input::Registers {
                    device: dev_b,
                    block: BlockId(0),
                    ts,
                    regs: vec![7],
                },
            ] {
                engine.process(&i, &mut out);
            }
            gauges.update(&engine);
            let r = handle.render();
            assert_eq!(value(&r, "a", "good"), Some(2.0), "{r}");
            assert_eq!(value(&r, "a", "bad"), Some(1.0));
            assert_eq!(value(&r, "a", "stale"), Some(0.0));
            assert_eq!(value(&r, "b", "good"), Some(1.0));

            // Device b paused: its point STALE, device a unchanged.
            engine.process(&Input::DevicePaused { device: dev_b, ts }, &mut out);
            gauges.update(&engine);
            let r = handle.render();
            assert_eq!(value(&r, "b", "stale"), Some(1.0), "{r}");
            assert_eq!(value(&r, "b", "good"), Some(0.0));
            assert_eq!(value(&r, "a", "bad"), Some(1.0));

            gauges.clear();
            let r = handle.render();
            assert_eq!(value(&r, "a", "good"), Some(0.0));
        });
    }
}
