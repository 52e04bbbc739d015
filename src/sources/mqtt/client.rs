//! The MQTT source task: one broker connection, payloads mapped by the pure
//! [`JsonMapper`] or [`SparkplugHost`], values sent to the engine channel.
//!
//! At-least-once delivery (manual acknowledgements):
//! - rumqttc runs with `set_manual_acks(true)` and `clean_session = false`
//!   under a stable client id, so the broker keeps un-acknowledged QoS 1
//!   messages of this session across disconnects and broker restarts.
//! - For each QoS 1/2 message the task sends its `Input::Values`, then an
//!   `Input::Receipt(seq)`. The engine task confirms the receipt only after
//!   the engine output of everything before it is appended to the sink
//!   spools and synced; only then does this task send the PUBACK
//!   (`client.try_ack`). A failed append never confirms: the broker
//!   redelivers the message on the next session. Duplicates carry the same
//!   timestamps (payload time) and overwrite in InfluxDB.
//! - Receipts of an older connection are ignored (their packet ids mean
//!   nothing on the new one; the broker redelivers those messages).
//! - A payload that does not parse or lacks a field is counted in
//!   `gaswatch_mqtt_source_rejected_total{source,topic_filter,reason}`,
//!   logged with its topic and reason, and still acknowledged: it would
//!   fail again on every redelivery and block the session.
//! - Never `publish().await` beside the event loop (rumqtt#1025): rebirth
//!   requests use `try_publish`. Reconnects back off (rumqtt#918).

use super::config::{MqttSourceConfig, PayloadFormat};
use super::json::{JsonMapper, Mapped};
use super::sparkplug::{HostAction, SparkplugHost};
use super::spb;
use crate::config::SecretString;
use crate::engine::EnginePlan;
use crate::model::{Input, Receipt, Timestamp};
use prost::Message;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Tuning of a source task; [`Default`] is what production uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How often quiet Sparkplug nodes are checked.
    pub tick: Duration,
    /// Largest MQTT packet accepted.
    pub max_packet_bytes: usize,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            tick: Duration::from_secs(1),
            max_packet_bytes: 256 * 1024,
        }
    }
}

enum Decoder {
    Json(JsonMapper),
    Sparkplug(SparkplugHost),
}

/// Spawns one task per configured MQTT source. `passwords` are the
/// sources' resolved secrets, in config order.
pub fn spawn(
    plan: Arc<EnginePlan>,
    sources: &[MqttSourceConfig],
    passwords: Vec<Option<SecretString>>,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
) -> Vec<JoinHandle<()>> {
    sources
        .iter()
        .zip(passwords)
        .map(|(cfg, pw)| {
            tokio::spawn(run(
                SourceSettings::default(),
                Arc::clone(&plan),
                cfg.clone(),
                pw,
                tx.clone(),
                cancel.clone(),
            ))
        })
        .collect()
}

/// Runs one source until `cancel`.
pub async fn run(
    settings: SourceSettings,
    plan: Arc<EnginePlan>,
    cfg: MqttSourceConfig,
    password: Option<SecretString>,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
) {
    let mut decoder = match cfg.format {
        PayloadFormat::Json => Decoder::Json(JsonMapper::new(&cfg, &plan)),
        PayloadFormat::SparkplugB => Decoder::Sparkplug(SparkplugHost::new(&cfg, &plan)),
    };
    let filters = match &decoder {
        Decoder::Json(m) => m.filters(),
        Decoder::Sparkplug(h) => vec![h.filter()],
    };
    let client_id = cfg
        .client_id
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("gaswatch-{}-{}", plan.station_id, cfg.id));
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    let keep_alive = if cfg.keep_alive.is_zero() {
        Duration::ZERO
    } else {
        cfg.keep_alive.max(Duration::from_secs(1))
    };
    o.set_keep_alive(keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes);
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
    let (confirm_tx, mut confirm_rx) = mpsc::unbounded_channel::<u64>();
    let confirm: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |seq| {
        let _ = confirm_tx.send(seq);
    });
    // seq -> (connection epoch, the message to acknowledge).
    let mut pending: HashMap<u64, (u64, Publish)> = HashMap::new();
    let mut next_seq = 0u64;
    let mut epoch = 0u64;
    let mut attempt = 0u32;
    let mut connected = false;
    let mut mapped = Mapped::default();
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let broker = format!("{}:{}", cfg.host, cfg.port);
    metrics::gauge!("gaswatch_mqtt_source_connected", "source" => cfg.id.clone()).set(0.0);

    loop {
        let event = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => {
                        let _ = client.try_disconnect();
                        debug!(source = %cfg.id, "MQTT source stopped.");
                        return;
                    }
                    r = &mut poll => break r,
                    Some(seq) = confirm_rx.recv() => {
                        if let Some((e, publish)) = pending.remove(&seq)
                            && e == epoch
                            && let Err(err) = client.try_ack(&publish)
                        {
                            warn!(source = %cfg.id, error = %err, "Cannot queue a PUBACK; the broker will redeliver.");
                        }
                    }
                    _ = tick.tick() => {
                        if let Decoder::Sparkplug(h) = &mut decoder {
                            h.tick(Timestamp::now(), &mut mapped);
                            if !send(&tx, &mut mapped, None).await {
                                return;
                            }
                        }
                    }
                }
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                attempt = 0;
                epoch += 1;
                pending.retain(|_, (e, _)| *e == epoch);
                if !connected {
                    info!(source = %cfg.id, broker = %broker, session_present = ack.session_present, "MQTT source connected.");
                }
                connected = true;
                metrics::gauge!("gaswatch_mqtt_source_connected", "source" => cfg.id.clone())
                    .set(1.0);
                // Subscribing again is harmless and covers a lost session.
                for f in &filters {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        warn!(source = %cfg.id, filter = %f, error = %e, "Cannot subscribe.");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(mut p))) => {
                let topic = p.topic.clone();
                let arrival = Timestamp::now();
                let action = match &mut decoder {
                    Decoder::Json(m) => {
                        m.map(&topic, &p.payload, arrival, &mut mapped);
                        None
                    }
                    Decoder::Sparkplug(h) => h.handle(&topic, &p.payload, arrival, &mut mapped),
                };
                for r in &mapped.rejects {
                    metrics::counter!("gaswatch_mqtt_source_rejected_total",
                        "source" => cfg.id.clone(),
                        "topic_filter" => filter_of(&filters, &topic),
                        "reason" => r.reason.as_str())
                    .increment(1);
                    warn!(source = %cfg.id, topic = %topic, reason = r.reason.as_str(), detail = %r.detail, "MQTT payload rejected.");
                }
                if let Some(HostAction::Rebirth { node }) = action
                    && let Decoder::Sparkplug(h) = &decoder
                {
                    let t = spb::topic(h.group(), spb::MessageType::NCmd, &node, "");
                    let body = spb::rebirth_payload(arrival.nanos().max(0) as u64 / 1_000_000)
                        .encode_to_vec();
                    metrics::counter!("gaswatch_sparkplug_rebirth_requests_total", "source" => cfg.id.clone()).increment(1);
                    info!(source = %cfg.id, node = %node, "Sparkplug rebirth requested.");
                    if let Err(e) = client.try_publish(t, QoS::AtLeastOnce, false, body) {
                        warn!(source = %cfg.id, node = %node, error = %e, "Cannot queue the rebirth request.");
                    }
                }
                let receipt = if p.qos == QoS::AtMostOnce {
                    None
                } else {
                    next_seq += 1;
                    p.payload = Default::default();
                    pending.insert(next_seq, (epoch, p));
                    Some(Receipt::new(next_seq, Arc::clone(&confirm)))
                };
                if !send(&tx, &mut mapped, receipt).await {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    warn!(source = %cfg.id, broker = %broker, error = %e, "MQTT source disconnected; reconnecting.");
                }
                connected = false;
                metrics::gauge!("gaswatch_mqtt_source_connected", "source" => cfg.id.clone())
                    .set(0.0);
                // rumqttc would resend our un-acked rebirth requests; the
                // broker redelivers un-acked messages to us. Start clean.
                eventloop.pending.clear();
                attempt = attempt.saturating_add(1);
                let exp = settings
                    .backoff_min
                    .saturating_mul(1u32 << attempt.min(16).saturating_sub(1))
                    .min(settings.backoff_max);
                let delay = exp.mul_f64(0.5 + fastrand::f64() * 0.5);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Sends the mapped batches then the receipt; false when the engine is gone.
async fn send(tx: &mpsc::Sender<Input>, mapped: &mut Mapped, receipt: Option<Receipt>) -> bool {
    for (ts, values) in mapped.batches.drain(..) {
        if tx.send(Input::Values { ts, values }).await.is_err() {
            return false;
        }
    }
    if let Some(r) = receipt
        && tx.send(Input::Receipt(r)).await.is_err()
    {
        return false;
    }
    true
}

/// The subscription filter that matched a topic (a bounded metric label).
fn filter_of(filters: &[String], topic: &str) -> String {
    filters
        .iter()
        .find(|f| rumqttc::matches(topic, f))
        .cloned()
        .unwrap_or_else(|| "other".to_string())
}
