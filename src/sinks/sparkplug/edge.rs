//! The Sparkplug B edge node task.
//!
//! Sparkplug carries state, not a log: the host rebuilds the station from the
//! NBIRTH and follows NDATA. So this sink needs no spool: the engine task
//! records the latest value and quality of every point and the active state
//! of every alarm in [`EdgeState`] (a mutex, updated after each output), and
//! this task publishes what changed.
//!
//! Invariants:
//! - Every session starts with an NBIRTH (seq 0) holding `bdSeq`, the
//!   `Node Control/Rebirth` metric, every point (Double, alias = tag index +
//!   1, a `Quality` property; `is_null` when there is no value) and every
//!   alarm (`Alarms/<source>/<kind>`, Boolean). The last will is the NDEATH
//!   with the same `bdSeq`; `bdSeq` increases with every connection.
//! - NDATA only by exception: a point is sent when its value or quality
//!   changed, an alarm when it was raised or cleared; `seq` counts 0..=255
//!   across NBIRTH and NDATA. Changes made while offline are in the next
//!   NBIRTH; nothing is queued without bound.
//! - An NCMD `Node Control/Rebirth = true` gives a new NBIRTH (seq 0).
//! - Shutdown publishes the NDEATH itself (a clean DISCONNECT suppresses the will).

use super::config::SparkplugConfig;
use crate::config::SecretString;
use crate::engine::EnginePlan;
use crate::model::{AlarmAction, Output, Quality, Timestamp};
use crate::sources::mqtt::spb::{self, MessageType, proto};
use prost::Message;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, Clone, Copy, PartialEq)]
struct PointState {
    value: f64,
    quality: Quality,
    ts: Timestamp,
    dirty: bool,
}

#[derive(Debug, Default)]
struct Inner {
    points: Vec<PointState>,
    alarms: Vec<(bool, Timestamp, bool)>,
    any_dirty: bool,
}

/// The latest station picture for the edge node, shared with the engine task.
#[derive(Debug)]
pub struct EdgeState {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl EdgeState {
    pub fn new(plan: &EnginePlan) -> Arc<EdgeState> {
        Arc::new(EdgeState {
            inner: Mutex::new(Inner {
                points: vec![
                    PointState {
                        value: f64::NAN,
                        quality: Quality::Stale,
                        ts: Timestamp(0),
                        dirty: false,
                    };
                    plan.tags.len()
                ],
                alarms: vec![(false, Timestamp(0), false); plan.alarms.len()],
                any_dirty: false,
            }),
            notify: Notify::new(),
        })
    }

    /// Records one engine output (called by the engine task after routing).
    pub fn offer(&self, out: &Output) {
        let Ok(mut g) = self.inner.lock() else { return };
        let mut changed = false;
        for s in &out.samples {
            if let Some(p) = g.points.get_mut(s.tag.0 as usize) {
                let same_value = p.value == s.value || (p.value.is_nan() && s.value.is_nan());
                if !(same_value && p.quality == s.quality) {
                    p.dirty = true;
                    changed = true;
                }
                p.value = s.value;
                p.quality = s.quality;
                p.ts = s.ts;
            }
        }
        for a in &out.alarms {
            if let Some(st) = g.alarms.get_mut(a.alarm as usize) {
                *st = (a.action == AlarmAction::Raise, a.ts, true);
                changed = true;
            }
        }
        if changed {
            g.any_dirty = true;
            drop(g);
            self.notify.notify_one();
        }
    }
}

fn ms(ts: Timestamp) -> u64 {
    (ts.nanos().max(0) / 1_000_000) as u64
}

/// Alarm metric name: `Alarms/<source>/<kind>`.
pub fn alarm_metric_name(plan: &EnginePlan, i: usize) -> String {
    let d = &plan.alarms[i];
    format!("Alarms/{}/{}", d.source, d.kind.code())
}

fn alarm_alias(plan: &EnginePlan, i: usize) -> u64 {
    plan.tags.len() as u64 + 1 + i as u64
}

/// Builds the NBIRTH (and clears every dirty flag: the birth carries all).
fn birth(plan: &EnginePlan, state: &EdgeState, bd_seq: u64, now: Timestamp) -> proto::Payload {
    let now_ms = ms(now);
    let mut metrics = vec![
        spb::bdseq_metric(bd_seq, now_ms),
        spb::bool_metric(Some(spb::REBIRTH_METRIC), None, false, now_ms),
    ];
    if let Ok(mut g) = state.inner.lock() {
        for (i, p) in g.points.iter_mut().enumerate() {
            p.dirty = false;
            let mut m = spb::double_metric(
                Some(&plan.tags[i].name),
                i as u64 + 1,
                p.value,
                p.quality,
                ms(p.ts).max(1),
            );
            if let Some(props) = m.properties.as_mut() {
                props.keys.push("engUnit".to_string());
                props.values.push(proto::payload::PropertyValue {
                    r#type: Some(spb::datatype::STRING),
                    is_null: None,
                    value: Some(proto::payload::property_value::Value::StringValue(
                        plan.tags[i].unit.to_string(),
                    )),
                });
            }
            metrics.push(m);
        }
        for (i, a) in g.alarms.iter_mut().enumerate() {
            a.2 = false;
            metrics.push(spb::bool_metric(
                Some(&alarm_metric_name(plan, i)),
                Some(alarm_alias(plan, i)),
                a.0,
                ms(a.1).max(now_ms),
            ));
        }
        g.any_dirty = false;
    }
    proto::Payload {
        timestamp: Some(now_ms),
        metrics,
        seq: Some(0),
        ..Default::default()
    }
}

/// Builds an NDATA of the changed metrics (None when nothing changed).
fn data(plan: &EnginePlan, state: &EdgeState, seq: u8, now: Timestamp) -> Option<proto::Payload> {
    let mut g = state.inner.lock().ok()?;
    if !g.any_dirty {
        return None;
    }
    g.any_dirty = false;
    let mut metrics = Vec::new();
    for (i, p) in g.points.iter_mut().enumerate() {
        if std::mem::replace(&mut p.dirty, false) {
            metrics.push(spb::double_metric(
                None,
                i as u64 + 1,
                p.value,
                p.quality,
                ms(p.ts),
            ));
        }
    }
    for (i, a) in g.alarms.iter_mut().enumerate() {
        if std::mem::replace(&mut a.2, false) {
            metrics.push(spb::bool_metric(
                None,
                Some(alarm_alias(plan, i)),
                a.0,
                ms(a.1),
            ));
        }
    }
    (!metrics.is_empty()).then(|| proto::Payload {
        timestamp: Some(ms(now)),
        metrics,
        seq: Some(u64::from(seq)),
        ..Default::default()
    })
}

fn death(bd_seq: u64, now: Timestamp) -> Vec<u8> {
    proto::Payload {
        timestamp: Some(ms(now)),
        metrics: vec![spb::bdseq_metric(bd_seq, ms(now))],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Runs the edge node until `cancel`.
pub async fn run(
    cfg: SparkplugConfig,
    plan: Arc<EnginePlan>,
    state: Arc<EdgeState>,
    password: Option<SecretString>,
    cancel: CancellationToken,
) {
    let node = cfg
        .edge_node_id
        .clone()
        .unwrap_or_else(|| plan.station_id.clone());
    let group = cfg.group_id.clone();
    let t_birth = spb::topic(&group, MessageType::NBirth, &node, "");
    let t_death = spb::topic(&group, MessageType::NDeath, &node, "");
    let t_data = spb::topic(&group, MessageType::NData, &node, "");
    let t_cmd = spb::topic(&group, MessageType::NCmd, &node, "");
    let client_id = cfg
        .client_id
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("gaswatch-{}-spb", plan.station_id));
    let mut bd_seq: u64 = 0;
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(1)))
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_last_will(LastWill::new(
            &t_death,
            death(bd_seq, Timestamp::now()),
            QoS::AtLeastOnce,
            false,
        ));
    if cfg.username.is_some() || password.is_some() {
        o.set_credentials(
            cfg.username.clone().unwrap_or_default(),
            password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        );
    }
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let mut connected = false;
    let mut need_birth = false;
    let mut seq: u8 = 0;
    let mut attempt = 0u32;
    loop {
        let event = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                if connected && need_birth {
                    let p = birth(&plan, &state, bd_seq, Timestamp::now());
                    if client
                        .try_publish(&t_birth, QoS::AtMostOnce, false, p.encode_to_vec())
                        .is_ok()
                    {
                        need_birth = false;
                        seq = 0;
                        metrics::counter!("gaswatch_sparkplug_births_total").increment(1);
                        info!(group = %group, node = %node, bd_seq, "Sparkplug NBIRTH published.");
                    }
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break None,
                    r = &mut poll => break Some(r),
                    () = state.notify.notified(), if connected && !need_birth => {
                        if let Some(p) = data(&plan, &state, seq.wrapping_add(1), Timestamp::now()) {
                            // QoS 0 per Sparkplug; a full request queue keeps
                            // the change for the next birth.
                            if client.try_publish(&t_data, QoS::AtMostOnce, false, p.encode_to_vec()).is_ok() {
                                seq = seq.wrapping_add(1);
                            } else {
                                need_birth = true;
                            }
                        }
                    }
                }
            }
        };
        let Some(event) = event else {
            if connected {
                let _ = client.try_publish(
                    &t_death,
                    QoS::AtLeastOnce,
                    false,
                    death(bd_seq, Timestamp::now()),
                );
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        match eventloop.poll().await {
                            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
            }
            debug!(node = %node, "Sparkplug edge node stopped.");
            return;
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                attempt = 0;
                connected = true;
                need_birth = true;
                metrics::gauge!("gaswatch_sparkplug_connected").set(1.0);
                if let Err(e) = client.try_subscribe(&t_cmd, QoS::AtLeastOnce) {
                    warn!(node = %node, error = %e, "Cannot subscribe to NCMD.");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == t_cmd => {
                match proto::Payload::decode(p.payload.as_ref()) {
                    Ok(cmd) => {
                        let rebirth = cmd.metrics.iter().any(|m| {
                            m.name.as_deref() == Some(spb::REBIRTH_METRIC)
                                && m.value
                                    == Some(proto::payload::metric::Value::BooleanValue(true))
                        });
                        if rebirth {
                            info!(node = %node, "Sparkplug rebirth requested by a host.");
                            need_birth = true;
                        }
                    }
                    Err(e) => {
                        warn!(topic = %p.topic, error = %e, "Sparkplug NCMD rejected: not a Sparkplug B payload.")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    warn!(node = %node, error = %e, "Sparkplug edge node disconnected; reconnecting.");
                }
                connected = false;
                metrics::gauge!("gaswatch_sparkplug_connected").set(0.0);
                // A new session needs a new bdSeq in both the will and the birth.
                bd_seq = (bd_seq + 1) % 256;
                eventloop.mqtt_options.set_last_will(LastWill::new(
                    &t_death,
                    death(bd_seq, Timestamp::now()),
                    QoS::AtLeastOnce,
                    false,
                ));
                eventloop.pending.clear();
                attempt = attempt.saturating_add(1);
                let delay = Duration::from_millis(250)
                    .saturating_mul(1u32 << attempt.min(8).saturating_sub(1))
                    .min(Duration::from_secs(30));
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay.mul_f64(0.5 + fastrand::f64() * 0.5)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_then_data_by_exception() {
        let c = crate::config::Config::from_str_named(
            "[station]\nid = \"cg01\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n\
             [[mqtt_sources]]\nid = \"s\"\nhost = \"h\"\nformat = \"json\"\ntopics = [\"a/{device}\"]\n\
             [[mqtt_sources.points]]\nname = \"P1\"\ndevice = \"d\"\nexpected_interval = \"1s\"\n\
             [[mqtt_sources.points]]\nname = \"P2\"\ndevice = \"d\"\nexpected_interval = \"1s\"\n\
             [[limits]]\npoint = \"P1\"\nh = 10.0\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let plan = EnginePlan::compile(&c);
        let st = EdgeState::new(&plan);
        let b = birth(&plan, &st, 4, Timestamp::from_secs(1));
        // bdSeq and rebirth, the two points, and every alarm of the plan
        // (the H limit, plus the station's flood and comm-loss alarms).
        assert_eq!(b.metrics.len(), 2 + 2 + plan.alarms.len());
        assert!(
            b.metrics
                .iter()
                .any(|m| m.name.as_deref() == Some("Alarms/P1/H"))
        );
        assert!(data(&plan, &st, 1, Timestamp(0)).is_none());
        let mut out = Output::default();
        out.samples.push(crate::model::Sample {
            tag: crate::model::TagId(1),
            value: 3.0,
            quality: Quality::Good,
            reason: crate::model::Reason::None,
            ts: Timestamp::from_secs(2),
        });
        st.offer(&out);
        st.offer(&out);
        let d = data(&plan, &st, 1, Timestamp(0)).unwrap();
        assert_eq!(d.metrics.len(), 1);
        assert_eq!(d.metrics[0].alias, Some(2));
        assert_eq!(d.seq, Some(1));
        st.offer(&out);
        assert!(
            data(&plan, &st, 2, Timestamp(0)).is_none(),
            "unchanged: not sent"
        );
    }
}
