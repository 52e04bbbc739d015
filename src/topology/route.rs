//! Routing of engine output to the sinks: encodes each sample, alarm and
//! balance result once per sink format and appends it to that sink's spool
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
            lines: Vec::with_capacity(64 * 1024),
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Appends everything in `out` to the spools and files.
    pub fn route(&mut self, out: &Output) -> Result<(), RouteError> {
        let plan = &*self.plan;
        let station = plan.station_id.as_str();
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
                sp.lock()
                    .append_spanning(RecordClass::Telemetry, &self.lines, Some(span))?;
            }
            if let Some(f) = &mut self.file {
                f.write_telemetry(&self.lines)
                    .map_err(|e| RouteError::File(e.to_string()))?;
            }
        }
        for e in &out.alarms {
            let def = &plan.alarms[e.alarm as usize];
            let unit = plan
                .tag(&def.source)
                .map(|t| plan.tag_info(t).unit.as_str())
                .unwrap_or("%");
            if let Some(sp) = &self.influx {
                self.scratch.clear();
                influxdb::line::encode_alarm(&mut self.scratch, station, &def.id, &def.source, e);
                sp.lock().append(RecordClass::Alarm, &self.scratch)?;
            }
            let level = plan.alarm_policy.level_name(e.detail.level);
            if let Some((sp, topics)) = &self.mqtt {
                let mut spool = sp.lock();
                for rec in mqtt::payload::alarm_records_with(topics, station, def, e, unit, level) {
                    spool.append(RecordClass::Alarm, &rec)?;
                }
            }
            if let Some(f) = &mut self.file {
                let json = mqtt::payload::encode_alarm_with(station, def, e, unit, level);
                f.write_alarm(&json)
                    .map_err(|e| RouteError::File(e.to_string()))?;
            }
        }
        for b in &out.balances {
            if let Some(sp) = &self.influx {
                self.scratch.clear();
                influxdb::line::encode_balance(&mut self.scratch, station, b);
                sp.lock().append(RecordClass::Balance, &self.scratch)?;
            }
            if let Some((sp, topics)) = &self.mqtt {
                let rec = mqtt::payload::balance_record(topics, station, b);
                sp.lock().append(RecordClass::Balance, &rec)?;
            }
            if let Some(f) = &mut self.file {
                let json = mqtt::payload::encode_balance(station, b);
                f.write_balance(&json)
                    .map_err(|e| RouteError::File(e.to_string()))?;
            }
        }
        for r in &out.replies {
            if let Some((sp, topics)) = &self.mqtt {
                let rec = mqtt::payload::reply_record(topics, station, r);
                sp.lock().append(RecordClass::Alarm, &rec)?;
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
                encode_health_line(&mut self.scratch, station, h);
                sp.lock().append(RecordClass::Balance, &self.scratch)?;
            }
            if let Some((sp, topics)) = &self.mqtt {
                let json = mqtt::payload::encode_health(station, h);
                let rec = mqtt::payload::encode_record(&topics.health(), &json, true);
                sp.lock().append(RecordClass::Balance, &rec)?;
            }
        }
        if let Some(sp) = &self.influx {
            sp.notify();
        }
        if let Some((sp, _)) = &self.mqtt {
            sp.notify();
        }
        Ok(())
    }

    /// Makes everything routed so far durable (spool fsync, file flush).
    pub fn flush(&mut self) -> Result<(), RouteError> {
        self.begin_flush()?.run()?;
        Ok(())
    }

    /// Hands everything routed so far to the kernel (spool buffers, file
    /// sink) and returns the spool fsyncs still owed; each spool is locked
    /// only for the hand-over, never during an fsync.
    pub fn begin_flush(&mut self) -> Result<SyncJob, RouteError> {
        let mut job = SyncJob::default();
        if let Some(sp) = &self.influx {
            let part = sp.lock().begin_sync()?;
            job.merge(part);
        }
        if let Some((sp, _)) = &self.mqtt {
            let part = sp.lock().begin_sync()?;
            job.merge(part);
        }
        if let Some(f) = &mut self.file {
            f.flush().map_err(|e| RouteError::File(e.to_string()))?;
        }
        Ok(job)
    }
}

/// `alarm_health,station=<id> alarms_per_10min=<n>i,flood=<b>,chattering=<n>i,standing=<n>i,unacked=<n>i,shelved=<n>i,max_unacked_s=<f>,activations_total=<n>i <ts>`
/// (station ids are validated identifiers, so no escaping is needed).
pub fn encode_health_line(buf: &mut Vec<u8>, station: &str, h: &crate::model::AlarmHealth) {
    use std::io::Write;
    let max = if h.max_unacked_s.is_finite() {
        h.max_unacked_s
    } else {
        0.0
    };
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        buf,
        "alarm_health,station={station} alarms_per_10min={}i,flood={},chattering={}i,standing={}i,unacked={}i,shelved={}i,max_unacked_s={max},activations_total={}i {}",
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
