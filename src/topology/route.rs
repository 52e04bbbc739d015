//! Routing of engine output to the sinks: encodes each sample, alarm,
//! leak alert and balance result once per sink format and appends it to that sink's spool
//! (or the local files). Runs on the engine task, between `Engine::process`
//! and the next input; it allocates only its reused buffers.

use crate::buffer::{RecordClass, SharedSpool, SpoolError, SyncJob, TimeSpan};
use crate::engine::EnginePlan;
use crate::model::Output;
use crate::sinks::file::writer::FileSink;
use crate::sinks::{influxdb, mqtt};
use std::sync::Arc;

/// Where output goes; each part is optional.
pub struct Router {
    pub plan: Arc<EnginePlan>,
    pub influx: Option<Arc<SharedSpool>>,
    pub mqtt: Option<(Arc<SharedSpool>, mqtt::payload::Topics)>,
    pub file: Option<FileSink>,
    /// Tag `source=<origin>` on every InfluxDB line (`gaswatch replay`
    /// writes `source=replay`); the daemon writes none.
    origin: Option<String>,
    /// Every tag's measurement and tags, escaped once (with the origin).
    prefixes: influxdb::SamplePrefixes,
    lines: Vec<u8>,
    scratch: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("file sink: {0}")]
    File(String),
}

/// Some sinks could not take (part of) a batch; the others got it.
#[derive(Debug, thiserror::Error)]
#[error("sink {}: {error}", sinks.join(", "))]
pub struct RouteFailure {
    /// Names of the sinks that failed (`influxdb`, `mqtt`, `file`).
    pub sinks: Vec<String>,
    /// The first error.
    pub error: RouteError,
}

#[derive(Default)]
struct Failed(Option<RouteFailure>);

impl Failed {
    fn note(&mut self, sink: &str, error: RouteError) {
        match &mut self.0 {
            None => {
                self.0 = Some(RouteFailure {
                    sinks: vec![sink.to_string()],
                    error,
                })
            }
            Some(f) => {
                if !f.sinks.iter().any(|s| s == sink) {
                    f.sinks.push(sink.to_string());
                }
            }
        }
    }

    /// Keeps the first error of a spool append.
    fn spool(&mut self, sp: &SharedSpool, r: Result<u64, SpoolError>) {
        if let Err(e) = r {
            self.note(sp.name(), RouteError::Spool(e));
        }
    }

    /// Keeps the first error of a file-sink write.
    fn file(&mut self, r: Result<(), crate::sinks::file::writer::FileSinkError>) {
        if let Err(e) = r {
            self.note("file", RouteError::File(e.to_string()));
        }
    }
}

impl Router {
    pub fn new(
        plan: Arc<EnginePlan>,
        influx: Option<Arc<SharedSpool>>,
        mqtt: Option<(Arc<SharedSpool>, mqtt::payload::Topics)>,
        file: Option<FileSink>,
    ) -> Self {
        Router {
            prefixes: influxdb::SamplePrefixes::new(&plan),
            plan,
            influx,
            mqtt,
            file,
            origin: None,
            lines: Vec::with_capacity(64 * 1024),
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Tags every InfluxDB line with `source=<origin>` (see
    /// [`influxdb::line::encode_alarm_from`] for alarm lines).
    pub fn with_origin(mut self, origin: Option<String>) -> Self {
        self.prefixes = influxdb::SamplePrefixes::with_origin(&self.plan, origin.as_deref());
        self.origin = origin;
        self
    }

    /// Appends everything in `out` to the spools and files. A sink that
    /// fails does not keep the others from getting the output: every append
    /// is tried; the failing sinks and the first error are returned.
    pub fn route(&mut self, out: &Output) -> Result<(), RouteFailure> {
        let mut failed = Failed::default();
        let plan = &*self.plan;
        let station = plan.station_id.as_str();
        let origin = self.origin.as_deref();
        if !out.samples.is_empty() && (self.influx.is_some() || self.file.is_some()) {
            self.lines.clear();
            let (mut first_ns, mut last_ns) = (i64::MAX, i64::MIN);
            for s in &out.samples {
                first_ns = first_ns.min(s.ts.0);
                last_ns = last_ns.max(s.ts.0);
                self.prefixes.encode(&mut self.lines, s);
            }
            if let Some(sp) = &self.influx {
                let span = TimeSpan { first_ns, last_ns };
                failed.spool(
                    sp,
                    sp.lock()
                        .append_spanning(RecordClass::Telemetry, &self.lines, Some(span)),
                );
            }
            if let Some(f) = &mut self.file {
                failed.file(f.write_telemetry(&self.lines));
            }
        }
        for e in &out.alarms {
            let def = &plan.alarms[e.alarm as usize];
            let unit = plan
                .tag(&def.source)
                .map(|t| &*plan.tag_info(t).unit)
                .unwrap_or("%");
            if let Some(sp) = &self.influx {
                self.scratch.clear();
                influxdb::line::encode_alarm_from(
                    &mut self.scratch,
                    station,
                    &def.id,
                    &def.source,
                    e,
                    origin,
                );
                failed.spool(sp, sp.lock().append(RecordClass::Alarm, &self.scratch));
            }
            let level = plan.alarm_policy.level_name(e.detail.level);
            if let Some((sp, topics)) = &self.mqtt {
                let mut spool = sp.lock();
                for rec in mqtt::payload::alarm_records_with(topics, station, def, e, unit, level) {
                    failed.spool(sp, spool.append(RecordClass::Alarm, &rec));
                }
            }
            if let Some(f) = &mut self.file {
                let json = mqtt::payload::encode_alarm_with(station, def, e, unit, level);
                failed.file(f.write_alarm(&json));
            }
        }
        // Leak alerts: the details of a LEAK raise, never dropped (alarm
        // class), in InfluxDB's `leak` measurement (also the file sink's
        // line protocol) and on the `leaks` topic.
        for a in &out.leaks {
            if self.influx.is_some() || self.file.is_some() {
                self.scratch.clear();
                influxdb::line::encode_leak_from(&mut self.scratch, station, a, origin);
                if let Some(sp) = &self.influx {
                    failed.spool(sp, sp.lock().append(RecordClass::Alarm, &self.scratch));
                }
                if let Some(f) = &mut self.file {
                    failed.file(f.write_telemetry(&self.scratch));
                }
            }
            if let Some((sp, topics)) = &self.mqtt {
                let rec = mqtt::payload::leak_record(topics, station, a);
                failed.spool(sp, sp.lock().append(RecordClass::Alarm, &rec));
            }
        }
        for b in &out.balances {
            if let Some(sp) = &self.influx {
                self.scratch.clear();
                influxdb::line::encode_balance_from(&mut self.scratch, station, b, origin);
                failed.spool(sp, sp.lock().append(RecordClass::Balance, &self.scratch));
            }
            if let Some((sp, topics)) = &self.mqtt {
                let rec = mqtt::payload::balance_record(topics, station, b);
                failed.spool(sp, sp.lock().append(RecordClass::Balance, &rec));
            }
            if let Some(f) = &mut self.file {
                let json = mqtt::payload::encode_balance(station, b);
                failed.file(f.write_balance(&json));
            }
        }
        // Archive records: history the flow computer kept, never dropped
        // (balance class), one line each at its hour end.
        if !out.archives.is_empty() && (self.influx.is_some() || self.file.is_some()) {
            self.scratch.clear();
            for a in &out.archives {
                let device = plan.device(a.device);
                let meter = device.archive.as_ref().map_or("", |p| p.meter.as_str());
                influxdb::line::encode_archive(
                    &mut self.scratch,
                    station,
                    &device.id,
                    meter,
                    a,
                    origin,
                );
            }
            if let Some(sp) = &self.influx {
                failed.spool(sp, sp.lock().append(RecordClass::Balance, &self.scratch));
            }
            if let Some(f) = &mut self.file {
                failed.file(f.write_telemetry(&self.scratch));
            }
        }
        for r in &out.replies {
            if let Some((sp, topics)) = &self.mqtt {
                let rec = mqtt::payload::reply_record(topics, station, r);
                failed.spool(sp, sp.lock().append(RecordClass::Alarm, &rec));
            }
        }
        if !out.alarms.is_empty() || !out.replies.is_empty() || !out.leaks.is_empty() {
            // Alarms and replies reach the OS now: the journal, written
            // next, must never be ahead of them after a process crash.
            if let Some(sp) = &self.influx
                && let Err(e) = sp.lock().write_out()
            {
                failed.note(sp.name(), RouteError::Spool(e));
            }
            if let Some((sp, _)) = &self.mqtt
                && let Err(e) = sp.lock().write_out()
            {
                failed.note(sp.name(), RouteError::Spool(e));
            }
        }
        for h in &out.health {
            metrics::gauge!("gaswatch_alarms_per_10min").set(f64::from(h.alarms_per_10min));
            metrics::gauge!("gaswatch_alarm_flood").set(f64::from(u8::from(h.flood)));
            metrics::gauge!("gaswatch_alarms_chattering").set(f64::from(h.chattering));
            metrics::gauge!("gaswatch_alarms_standing").set(f64::from(h.standing));
            metrics::gauge!("gaswatch_alarms_unacked").set(f64::from(h.unacked));
            metrics::gauge!("gaswatch_alarms_shelved").set(f64::from(h.shelved));
            metrics::gauge!("gaswatch_alarm_max_unacked_seconds").set(h.max_unacked_s);
            if let Some(sp) = &self.influx {
                self.scratch.clear();
                encode_health_line_from(&mut self.scratch, station, h, origin);
                failed.spool(sp, sp.lock().append(RecordClass::Balance, &self.scratch));
            }
            if let Some((sp, topics)) = &self.mqtt {
                let json = mqtt::payload::encode_health(station, h);
                let rec = mqtt::payload::encode_record(&topics.health(), &json, true);
                failed.spool(sp, sp.lock().append(RecordClass::Balance, &rec));
            }
        }
        if let Some(sp) = &self.influx {
            sp.notify();
        }
        if let Some((sp, _)) = &self.mqtt {
            sp.notify();
        }
        failed.0.map_or(Ok(()), Err)
    }

    /// Makes everything routed so far durable (spool fsync, file flush).
    pub fn flush(&mut self) -> Result<(), RouteError> {
        self.begin_flush()?.run()
    }

    /// Hands everything routed so far to the kernel (spool buffers, file
    /// sink buffers) and returns the fsyncs still owed; each spool is locked
    /// only for the hand-over, never during an fsync.
    pub fn begin_flush(&mut self) -> Result<FlushJob, RouteError> {
        let mut job = FlushJob::default();
        if let Some(sp) = &self.influx {
            let part = sp.lock().begin_sync()?;
            job.spools.merge(part);
        }
        if let Some((sp, _)) = &self.mqtt {
            let part = sp.lock().begin_sync()?;
            job.spools.merge(part);
        }
        if let Some(f) = &mut self.file {
            f.begin_flush(&mut job.files)
                .map_err(|e| RouteError::File(e.to_string()))?;
        }
        Ok(job)
    }

    /// A [`FlushJob`] failed: the next [`Router::begin_flush`] syncs every
    /// open spool segment and sink file again, even with nothing new.
    pub fn sync_failed(&mut self) {
        if let Some(sp) = &self.influx {
            sp.lock().sync_failed();
        }
        if let Some((sp, _)) = &self.mqtt {
            sp.lock().sync_failed();
        }
        if let Some(f) = &mut self.file {
            f.sync_failed();
        }
    }
}

/// The fsyncs a [`Router::begin_flush`] still owes: the spools' segments
/// and directories, and the file sink's files (duplicate handles, so it
/// runs on a blocking thread while the engine task goes on).
#[derive(Debug, Default)]
pub struct FlushJob {
    spools: SyncJob,
    files: Vec<(std::fs::File, std::path::PathBuf)>,
}

impl FlushJob {
    /// Nothing to sync: nothing was routed since the last flush.
    pub fn is_empty(&self) -> bool {
        self.spools.is_empty() && self.files.is_empty()
    }

    /// The fsyncs, spools first; everything routed before the
    /// [`Router::begin_flush`] that made this is durable once it returns `Ok`.
    pub fn run(self) -> Result<(), RouteError> {
        self.spools.run()?;
        for (file, path) in &self.files {
            file.sync_data()
                .map_err(|e| RouteError::File(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// `alarm_health,station=<id> alarms_per_10min=<n>i,flood=<b>,chattering=<n>i,standing=<n>i,unacked=<n>i,shelved=<n>i,max_unacked_s=<f>,activations_total=<n>i <ts>`
/// (station ids are validated identifiers, so no escaping is needed).
pub fn encode_health_line(buf: &mut Vec<u8>, station: &str, h: &crate::model::AlarmHealth) {
    encode_health_line_from(buf, station, h, None);
}

/// [`encode_health_line`] with `source=<origin>` before the station tag
/// (origins are fixed identifiers such as `replay`).
pub fn encode_health_line_from(
    buf: &mut Vec<u8>,
    station: &str,
    h: &crate::model::AlarmHealth,
    origin: Option<&str>,
) {
    use std::io::Write;
    if let Some(o) = origin {
        let _ = write!(buf, "alarm_health,source={o},station={station} ");
    } else {
        let _ = write!(buf, "alarm_health,station={station} ");
    }
    let max = if h.max_unacked_s.is_finite() {
        h.max_unacked_s
    } else {
        0.0
    };
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        buf,
        "alarms_per_10min={}i,flood={},chattering={}i,standing={}i,unacked={}i,shelved={}i,max_unacked_s={max},activations_total={}i {}",
        h.alarms_per_10min,
        h.flood,
        h.chattering,
        h.standing,
        h.unacked,
        h.shelved,
        h.activations_total,
        h.ts.nanos()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{Spool, SpoolConfig};
    use crate::config::Config;
    use crate::model::{LeakAlert, Timestamp};
    use std::path::Path;

    /// A leak alert reaches InfluxDB's `leak` measurement and the `leaks`
    /// topic, both in the never-dropped alarm class.
    #[test]
    fn leak_alerts_go_to_influx_and_the_dispatch_topic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = include_str!("../../config/city-gate.toml");
        let c = Config::from_str_named(text, Path::new("city-gate.toml")).expect("config");
        let plan = Arc::new(EnginePlan::compile(&c));
        let spool = |name: &str| {
            let s = Spool::open(&dir.path().join(name), &SpoolConfig::default()).expect("spool");
            SharedSpool::new(name, s)
        };
        let (influx, mqtt_spool) = (spool("influxdb"), spool("mqtt"));
        let topics = mqtt::payload::Topics::new("gaswatch", &plan.station_id);
        let mut router = Router::new(
            Arc::clone(&plan),
            Some(Arc::clone(&influx)),
            Some((Arc::clone(&mqtt_spool), topics)),
            None,
        );
        let mut out = Output::default();
        out.leaks.push(LeakAlert {
            group: crate::model::GroupId::STATION,
            window_s: 60,
            start: Timestamp(1_700_000_000_000_000_000),
            detected: Timestamp(1_700_000_180_000_000_000),
            rate_sm3_per_h: 1500.0,
            rate_uncertainty_sm3_per_h: 60.0,
            rate_percent: 5.0,
            confidence: 1.0,
        });
        router.route(&out).expect("routed");
        let read = |sp: &SharedSpool| {
            let mut recs = Vec::new();
            sp.lock()
                .read(RecordClass::Alarm, 0, 10, 1 << 20, &mut recs)
                .expect("read");
            recs
        };
        let lines = read(&influx);
        assert_eq!(lines.len(), 1);
        let line = String::from_utf8_lossy(&lines[0].payload);
        assert!(
            line.starts_with("leak,station=cg01,window_s=60 start_ns=1700000000000000000i,"),
            "{line}"
        );
        let recs = read(&mqtt_spool);
        assert_eq!(recs.len(), 1);
        let rec = mqtt::payload::decode_record(&recs[0].payload).expect("record");
        assert_eq!(rec.topic, "gaswatch/cg01/leaks");
        assert!(String::from_utf8_lossy(&rec.payload).contains("\"rate_sm3_per_h\":1500.0"));
    }
}
