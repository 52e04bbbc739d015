//! The MQTT dispatch publisher: sends the records of this sink's spool to
//! the broker and acknowledges them in the spool only after their PUBACK.
//!
//! Shape: ONE task owns the rumqttc [`EventLoop`] and the correlation state.
//! It keeps a single `poll()` future alive and, in the same `select!`, hands
//! records to the event loop with [`AsyncClient::try_publish`] (never
//! `publish().await` next to the poll loop, rumqtt#1025). Never dropping a
//! half-finished `poll()` matters: a request taken off the channel but not yet
//! written would be lost while rumqttc counts it in flight.
//!
//! Invariants:
//! - A record leaves the spool only after the broker's PUBACK for the packet
//!   that carried it. rumqttc reports only packet ids, so records are
//!   correlated by order: every `try_publish` pushes an entry on a FIFO,
//!   every `Outgoing::Publish(pkid)` pops one and maps `pkid -> (class, id)`,
//!   `Incoming::PubAck(pkid)` settles it (rumqtt#349). The spool is acked up
//!   to the highest contiguous settled id per class.
//! - Delivery is at least once: after any connection error every un-acked
//!   record is sent again from the spool (the read cursor goes back to the ack
//!   watermark). rumqttc's own replay of un-acked packets (`EventLoop::pending`)
//!   is cleared so the correlation FIFO stays exact. Consumers de-duplicate
//!   on `(alarm_id, seq)`.
//! - `clean_session = false` with a stable client id; with `true` rumqttc
//!   drops un-acked QoS 1 packets on reconnect (see DEPENDENCIES.md).
//! - Reconnects back off (capped exponential with jitter): rumqttc reconnects
//!   on the next `poll()` without any delay (rumqtt#918).
//! - Alarm records go before balance records; each class in id order.
//! - Commands are acknowledged to the broker only once applied and
//!   journaled (manual acks): each valid QoS 1 command goes to the engine as
//!   `Input::Command` followed by an `Input::Receipt`; the engine task
//!   confirms the receipt after the journal entry and the reply are synced
//!   to disk, and only then is the PUBACK sent (`client.try_ack`). A crash
//!   before that leaves the command with the broker, which delivers it again
//!   to the persistent session; the engine task recognises a command it
//!   already journaled by its `request_id` and does not apply it twice.
//!   Receipts of an older connection are dropped (their packet ids mean
//!   nothing on the new one; the broker redelivers those commands).
//!   A payload that does not parse is answered `bad_command` and
//!   acknowledged at once (it would fail again on every redelivery).

use super::config::MqttConfig;
use super::payload::{Topics, decode_command, decode_record, encode_status};
use crate::buffer::{Record, RecordClass, SharedSpool};
use crate::config::SecretString;
use crate::model::Timestamp;
use crate::model::{AlarmCommand, Input, Receipt};
use crate::telemetry::alarm_trace;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// The classes this sink carries, in delivery priority.
const CLASSES: [RecordClass; 2] = [RecordClass::Alarm, RecordClass::Balance];

/// Longest delay between a PUBACK and its acknowledgement in the spool
/// (see [`Publisher::ack_spool`]).
const ACK_COALESCE: Duration = Duration::from_millis(50);

/// Tuning of the publisher; [`Default`] is what production uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherSettings {
    /// Most QoS 1 publishes awaiting PUBACK (records plus status messages).
    /// Also rumqttc's `inflight`, so packet ids never collide.
    pub inflight: u16,
    /// Largest MQTT packet sent or accepted (rumqttc's default is 10 KiB).
    pub max_packet_bytes: usize,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// On shutdown, how long to wait for outstanding PUBACKs.
    pub shutdown_grace: Duration,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        PublisherSettings {
            inflight: 100,
            max_packet_bytes: 256 * 1024,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Runs the publisher with [`PublisherSettings::default`] until `cancel`.
///
/// `station` is the station id (topics and default client id
/// `gaswatch-<station>`); `password` is `cfg.password` resolved by the caller.
/// On cancel it publishes the retained `offline` status, waits up to the
/// grace period for outstanding PUBACKs and disconnects; records not yet
/// acknowledged stay in the spool for the next run.
pub async fn run(
    cfg: MqttConfig,
    station: String,
    password: Option<SecretString>,
    spool: Arc<SharedSpool>,
    cancel: CancellationToken,
) {
    run_with(
        PublisherSettings::default(),
        cfg,
        station,
        password,
        spool,
        cancel,
    )
    .await;
}

/// The client options: persistent session, stable id, credentials, keep-alive,
/// the retained QoS 1 `offline` last will, raised packet size and in-flight window.
pub fn mqtt_options(
    settings: &PublisherSettings,
    cfg: &MqttConfig,
    station: &str,
    password: Option<&SecretString>,
) -> MqttOptions {
    let client_id = cfg
        .client_id
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("gaswatch-{station}"));
    let topics = Topics::new(&cfg.topic_prefix, station);
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    // rumqttc panics on keep-alives under one second (other than zero).
    let keep_alive = if cfg.keep_alive.is_zero() {
        Duration::ZERO
    } else {
        cfg.keep_alive.max(Duration::from_secs(1))
    };
    o.set_keep_alive(keep_alive)
        .set_clean_session(false)
        // Commands are acknowledged once journaled, not on arrival.
        .set_manual_acks(true)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
        .set_inflight(settings.inflight.max(1))
        .set_last_will(LastWill::new(
            topics.status(),
            encode_status(station, false, None),
            QoS::AtLeastOnce,
            true,
        ));
    match (&cfg.username, password) {
        (None, None) => {}
        (user, pass) => {
            o.set_credentials(
                user.clone().unwrap_or_default(),
                pass.map(|p| p.expose().to_string()).unwrap_or_default(),
            );
        }
    }
    o
}

/// [`run`] with explicit settings (tests use short backoffs).
pub async fn run_with(
    settings: PublisherSettings,
    cfg: MqttConfig,
    station: String,
    password: Option<SecretString>,
    spool: Arc<SharedSpool>,
    cancel: CancellationToken,
) {
    run_with_commands(settings, cfg, station, password, spool, cancel, None).await;
}

/// [`run_with`], also subscribing to `<prefix>/<station>/commands` (when
/// `commands` is given and `cfg.accept_commands`) and handing each valid
/// command to the engine as [`Input::Command`] followed by an
/// [`Input::Receipt`]; the command's PUBACK goes out when the receipt is
/// confirmed. A payload that does not parse is answered at once on
/// `replies` with `ok:false`, acknowledged and counted.
pub async fn run_with_commands(
    settings: PublisherSettings,
    cfg: MqttConfig,
    station: String,
    password: Option<SecretString>,
    spool: Arc<SharedSpool>,
    cancel: CancellationToken,
    commands: Option<mpsc::Sender<Input>>,
) {
    let commands = commands.filter(|_| cfg.accept_commands);
    let mut heartbeat = tokio::time::interval(if cfg.heartbeat.is_zero() {
        Duration::from_secs(3600 * 24 * 365)
    } else {
        cfg.heartbeat
    });
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut options = mqtt_options(&settings, &cfg, &station, password.as_ref());
    if let Some(tls) = &cfg.tls {
        match crate::sinks::tls::mqtt_client_config(tls) {
            Ok(c) => {
                options.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Rustls(c),
                ));
            }
            Err(error) => {
                tracing::error!(sink = spool.name(), broker = %format!("{}:{}", cfg.host, cfg.port), %error, "Cannot set up TLS; MQTT sink not running, data stays spooled.");
                return;
            }
        }
    }
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(settings.inflight) + 8);
    // rumqttc leaves Nagle on: a PUBLISH written while an earlier one is
    // unacknowledged would wait for the broker's ACK (one round trip per
    // alarm record in a burst, tens of ms on a busy host).
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    // Receipts confirmed by the engine task come back here as sequence numbers.
    let (confirm_tx, mut confirmed) = mpsc::unbounded_channel::<u64>();
    let confirm: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |seq| {
        let _ = confirm_tx.send(seq);
    });
    // Commands wait here for room in the engine channel, so the event loop
    // never waits on the engine (one forwarder keeps them in order).
    let forward = commands.map(|tx| {
        let (fwd_tx, mut fwd_rx) = mpsc::unbounded_channel::<(AlarmCommand, Option<Receipt>)>();
        tokio::spawn(async move {
            while let Some((cmd, receipt)) = fwd_rx.recv().await {
                if tx.send(Input::Command(cmd)).await.is_err() {
                    break;
                }
                if let Some(r) = receipt
                    && tx.send(Input::Receipt(r)).await.is_err()
                {
                    break;
                }
            }
        });
        fwd_tx
    });
    let mut p = Publisher {
        topics: Topics::new(&cfg.topic_prefix, &station),
        broker: format!("{}:{}", cfg.host, cfg.port),
        station,
        settings,
        client,
        spool,
        tracker: Tracker::default(),
        connected: false,
        ever_connected: false,
        down_logged: false,
        attempt: 0,
        shutdown: Shutdown::Running,
        buf: Vec::new(),
        commands: forward,
        confirm,
        unacked_commands: HashMap::new(),
        next_receipt: 0,
        epoch: 0,
        traced: VecDeque::new(),
        published: CLASSES
            .map(|c| metrics::counter!("gaswatch_mqtt_published_total", "class" => c.as_str())),
        acked: metrics::counter!("gaswatch_mqtt_acked_total"),
        pending_ack: [None; 2],
        ack_due: None,
    };
    metrics::gauge!("gaswatch_mqtt_connected").set(0.0);
    loop {
        let step = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                let deadline = p.shutdown.deadline();
                let ack_due = p.ack_due;
                tokio::select! {
                    biased;
                    // First, but only at its deadline: a steady stream of
                    // events never postpones the spool's acknowledgements.
                    _ = tokio::time::sleep_until(ack_due.unwrap_or_else(Instant::now)), if ack_due.is_some() => {
                        p.write_acks();
                    }
                    r = &mut poll => break Step::Polled(r),
                    _ = cancel.cancelled(), if matches!(p.shutdown, Shutdown::Running) => {
                        if !p.begin_shutdown() {
                            break Step::Exit;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        if !p.shutdown_deadline_passed() {
                            break Step::Exit;
                        }
                    }
                    _ = p.spool.notified(), if p.can_publish() => p.fill(),
                    Some(seq) = confirmed.recv() => p.on_confirmed(seq),
                    _ = heartbeat.tick(), if p.can_publish() && !cfg.heartbeat.is_zero() => {
                        p.publish_status(true);
                    }
                }
            }
        };
        match step {
            Step::Exit => break,
            Step::Polled(Ok(event)) => {
                if !p.handle_event(event) {
                    break;
                }
            }
            Step::Polled(Err(e)) => {
                p.write_acks();
                p.on_connection_error(&e, &mut eventloop);
                if !matches!(p.shutdown, Shutdown::Running) {
                    break;
                }
                let delay = backoff(p.attempt, p.settings.backoff_min, p.settings.backoff_max);
                p.attempt = p.attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => break,
                }
            }
        }
    }
    p.write_acks();
    metrics::gauge!("gaswatch_mqtt_connected").set(0.0);
    debug!(station = %p.station, "MQTT publisher stopped.");
}

enum Step {
    Polled(Result<Event, ConnectionError>),
    Exit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shutdown {
    Running,
    /// `offline` published; waiting for outstanding PUBACKs until the deadline.
    Draining(Instant),
    /// DISCONNECT requested; waiting for it to be written until the deadline.
    Disconnecting(Instant),
}

impl Shutdown {
    fn deadline(self) -> Option<Instant> {
        match self {
            Shutdown::Running => None,
            Shutdown::Draining(d) | Shutdown::Disconnecting(d) => Some(d),
        }
    }
}

struct Publisher {
    topics: Topics,
    broker: String,
    station: String,
    settings: PublisherSettings,
    client: AsyncClient,
    spool: Arc<SharedSpool>,
    tracker: Tracker,
    connected: bool,
    ever_connected: bool,
    /// The current outage has been logged (log state changes once).
    down_logged: bool,
    /// Failed connection attempts since the last ConnAck (backoff exponent).
    attempt: u32,
    shutdown: Shutdown,
    buf: Vec<Record>,
    /// To the forwarder task (`None`: commands not accepted).
    commands: Option<mpsc::UnboundedSender<(AlarmCommand, Option<Receipt>)>>,
    /// Given to each receipt: reports its confirmation to this task.
    confirm: Arc<dyn Fn(u64) + Send + Sync>,
    /// Receipt seq -> (connection epoch, the command's PUBLISH to acknowledge).
    unacked_commands: HashMap<u64, (u64, Publish)>,
    next_receipt: u64,
    /// Counts ConnAcks: packet ids are only valid within one connection.
    epoch: u64,
    /// Alarm events handed to the client and not yet written, as
    /// (class, record id, event seq); only with the alarm trace on.
    traced: VecDeque<(usize, u64, u64)>,
    /// `gaswatch_mqtt_published_total` per class (alarm, balance) and
    /// `gaswatch_mqtt_acked_total`, looked up once, not per packet.
    published: [metrics::Counter; 2],
    acked: metrics::Counter,
    /// Per class, the watermark acknowledged by the broker and not yet
    /// written to the spool, and when to write it.
    pending_ack: [Option<u64>; 2],
    ack_due: Option<Instant>,
}

impl Publisher {
    fn can_publish(&self) -> bool {
        self.connected && matches!(self.shutdown, Shutdown::Running)
    }

    /// Handles one event; returns false when the publisher should stop.
    fn handle_event(&mut self, event: Event) -> bool {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                self.connected = true;
                self.down_logged = false;
                self.attempt = 0;
                metrics::gauge!("gaswatch_mqtt_connected").set(1.0);
                crate::telemetry::health::set_sink_reachable(self.spool.name(), true);
                if self.ever_connected {
                    metrics::counter!("gaswatch_mqtt_reconnects_total").increment(1);
                }
                self.ever_connected = true;
                info!(broker = %self.broker, station = %self.station, session_present = ack.session_present, "MQTT connected.");
                self.tracker.reset();
                self.traced.clear();
                // Commands of the last connection not yet acknowledged: the
                // broker delivers them again on this one.
                self.epoch += 1;
                self.unacked_commands.clear();
                if self.commands.is_some()
                    && let Err(error) = self
                        .client
                        .try_subscribe(self.topics.commands(), QoS::AtLeastOnce)
                {
                    warn!(%error, "Cannot subscribe to the command topic.");
                }
                self.publish_status(true);
                self.fill();
            }
            Event::Incoming(Packet::Publish(msg)) => {
                if self.commands.is_some() && msg.topic == self.topics.commands() {
                    self.on_command(msg);
                } else {
                    // Nothing else is subscribed (a session from a run that
                    // accepted commands may still deliver them): acknowledge
                    // so the broker does not hold them for ever.
                    self.ack(&msg);
                }
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let record = self.tracker.to_correlate.front().copied().flatten();
                if let Some(record) = record
                    && let Some(i) = self.traced.iter().position(|t| (t.0, t.1) == record)
                    && let Some((_, _, seq)) = self.traced.remove(i)
                {
                    let at = alarm_trace::now_ns();
                    alarm_trace::mark(alarm_trace::Stage::Written, seq, at);
                }
                if let Some(class) = self.tracker.on_outgoing(pkid) {
                    self.published[usize::from(class == RecordClass::Balance)].increment(1);
                }
                // QoS 0 records settle when written.
                if pkid == 0 {
                    self.after_settle();
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some((class, watermark)) = self.tracker.on_puback(ack.pkid) {
                    self.acked.increment(1);
                    if let Some(upto) = watermark {
                        self.ack_spool(class, upto);
                    }
                }
                self.after_settle();
            }
            Event::Outgoing(Outgoing::Disconnect) => {
                if matches!(self.shutdown, Shutdown::Disconnecting(_)) {
                    info!(broker = %self.broker, station = %self.station, "MQTT disconnected.");
                    return false;
                }
            }
            _ => {}
        }
        true
    }

    /// After a record settled: move the shutdown on or refill the window.
    fn after_settle(&mut self) {
        if let Some(upto) = self.tracker.take_rejected_watermark() {
            for (class, upto) in upto {
                self.ack_spool(class, upto);
            }
        }
        match self.shutdown {
            Shutdown::Running => self.fill(),
            Shutdown::Draining(_) if self.tracker.in_flight() == 0 => self.disconnect(),
            _ => {}
        }
    }

    /// Records that `class` is delivered up to `upto`; the spool learns it
    /// at most [`ACK_COALESCE`] later ([`Publisher::write_acks`]). A spool
    /// ack writes and renames a file under the spool's lock: once per PUBACK
    /// in a burst, that held up the next PUBLISHes and the engine's appends
    /// (tens of ms per burst of 50 alarms). A crash in between only sends
    /// those records again (delivery is at least once).
    fn ack_spool(&mut self, class: RecordClass, upto: u64) {
        let c = usize::from(class == RecordClass::Balance);
        self.pending_ack[c] = Some(self.pending_ack[c].map_or(upto, |p| p.max(upto)));
        if self.ack_due.is_none() {
            self.ack_due = Some(Instant::now() + ACK_COALESCE);
        }
    }

    /// Writes the pending acknowledgements to the spool.
    fn write_acks(&mut self) {
        self.ack_due = None;
        for (c, class) in CLASSES.into_iter().enumerate() {
            let Some(upto) = self.pending_ack[c].take() else {
                continue;
            };
            if let Err(error) = self.spool.lock().ack(class, upto) {
                // Not data loss: the records will be sent again after a restart.
                warn!(spool = self.spool.name(), class = class.as_str(), %error, "Spool ack failed.");
            }
        }
    }

    /// A command arrived: parse it and hand it to the engine with a receipt
    /// (acknowledged when the receipt is confirmed), or answer the refusal
    /// directly and acknowledge it (nothing reached the engine, nothing to journal).
    fn on_command(&mut self, mut msg: Publish) {
        let Some(fwd) = &self.commands else { return };
        let now = Timestamp::now();
        let refusal = match decode_command(&msg.payload, now) {
            Ok(cmd) => {
                let receipt = if msg.qos == QoS::AtMostOnce {
                    None
                } else {
                    self.next_receipt += 1;
                    Some(Receipt::new(self.next_receipt, Arc::clone(&self.confirm)))
                };
                if fwd.send((cmd, receipt)).is_err() {
                    // The engine is gone (shutting down): no PUBACK, the
                    // broker keeps the command for the next run.
                    debug!(station = %self.station, "MQTT command not passed on: the engine stopped.");
                    return;
                }
                metrics::counter!("gaswatch_mqtt_commands_total", "result" => "accepted")
                    .increment(1);
                if msg.qos != QoS::AtMostOnce {
                    msg.payload = Default::default();
                    self.unacked_commands
                        .insert(self.next_receipt, (self.epoch, msg));
                }
                return;
            }
            Err(e) => e.to_string(),
        };
        metrics::counter!("gaswatch_mqtt_commands_total", "result" => "refused").increment(1);
        warn!(station = %self.station, reason = %refusal, "MQTT command refused.");
        let reply = serde_json::json!({
            "v": 1, "station": self.station, "ok": false, "error": "bad_command",
            "detail": refusal, "ts": now.to_rfc3339(), "ts_ns": now.nanos(),
            "request_id": serde_json::from_slice::<serde_json::Value>(&msg.payload).ok()
                .and_then(|v| v.get("request_id").cloned()),
        });
        match self.client.try_publish(
            self.topics.replies(),
            QoS::AtLeastOnce,
            false,
            reply.to_string(),
        ) {
            Ok(()) => self.tracker.sent_untracked(),
            Err(error) => debug!(%error, "MQTT reply not queued."),
        }
        self.ack(&msg);
    }

    /// The engine task confirmed a command's receipt: it is applied and
    /// journaled, so the broker may forget it now.
    fn on_confirmed(&mut self, seq: u64) {
        if let Some((epoch, msg)) = self.unacked_commands.remove(&seq)
            && epoch == self.epoch
        {
            self.ack(&msg);
        }
    }

    /// Queues the PUBACK of an incoming QoS 1 message (nothing for QoS 0).
    fn ack(&self, msg: &Publish) {
        if let Err(error) = self.client.try_ack(msg) {
            // Not lost: the broker delivers it again on the next connection.
            warn!(station = %self.station, %error, "Cannot queue a PUBACK; the broker will deliver the message again.");
        }
    }

    fn publish_status(&mut self, online: bool) {
        let payload = encode_status(&self.station, online, Some(Timestamp::now()));
        match self
            .client
            .try_publish(self.topics.status(), QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => self.tracker.sent_untracked(),
            Err(error) => debug!(%error, "MQTT status publish not queued."),
        }
    }

    /// Hands records to the event loop until the in-flight window is full:
    /// alarms first, then balance results, each after its read cursor.
    fn fill(&mut self) {
        if !self.can_publish() {
            return;
        }
        let window = usize::from(self.settings.inflight);
        for (c, class) in CLASSES.into_iter().enumerate() {
            loop {
                let room = window.saturating_sub(self.tracker.in_flight());
                if room == 0 {
                    return;
                }
                self.buf.clear();
                let read = self.spool.lock().read(
                    class,
                    self.tracker.cursor[c],
                    room,
                    1 << 20,
                    &mut self.buf,
                );
                if let Err(error) = read {
                    warn!(spool = self.spool.name(), class = class.as_str(), %error, "Spool read failed.");
                    return;
                }
                if self.buf.is_empty() {
                    break;
                }
                let records = std::mem::take(&mut self.buf);
                for rec in &records {
                    match self.check(rec) {
                        Ok(p) => {
                            let qos = if p.qos == 0 {
                                QoS::AtMostOnce
                            } else {
                                QoS::AtLeastOnce
                            };
                            let traced = (alarm_trace::enabled()
                                && p.topic.ends_with("/alarms/events"))
                            .then(|| alarm_trace::seq_of(&p.payload))
                            .flatten();
                            if let Err(error) =
                                self.client.try_publish(p.topic, qos, p.retain, p.payload)
                            {
                                // Request channel full: try again on the next wake-up.
                                debug!(%error, "MQTT publish not queued.");
                                self.buf = records;
                                return;
                            }
                            self.tracker.sent(c, rec.id);
                            if let Some(seq) = traced {
                                let at = alarm_trace::now_ns();
                                alarm_trace::mark(alarm_trace::Stage::Handed, seq, at);
                                self.traced.push_back((c, rec.id, seq));
                            }
                        }
                        Err(reason) => {
                            // Never sendable: quarantine it so it does not block the queue.
                            error!(spool = self.spool.name(), class = class.as_str(), id = rec.id, %reason, "MQTT record rejected and dropped.");
                            metrics::counter!("gaswatch_mqtt_rejected_total", "class" => class.as_str()).increment(1);
                            self.tracker.reject(c, rec.id);
                        }
                    }
                }
                self.buf = records;
                if let Some(upto) = self.tracker.take_rejected_watermark() {
                    for (class, upto) in upto {
                        self.ack_spool(class, upto);
                    }
                }
            }
        }
    }

    /// Decodes a record and checks it can be sent at all.
    fn check(&self, rec: &Record) -> Result<super::payload::PublishRecord, String> {
        let p = decode_record(&rec.payload).map_err(|e| e.to_string())?;
        if !rumqttc::valid_topic(&p.topic) || p.topic.is_empty() {
            return Err(format!("invalid topic {:?}", p.topic));
        }
        // Fixed header (<= 5) + topic length (2) + packet id (2).
        let size = p.topic.len() + p.payload.len() + 9;
        if size > self.settings.max_packet_bytes {
            return Err(format!(
                "packet of {size} bytes exceeds max_packet_bytes {}",
                self.settings.max_packet_bytes
            ));
        }
        Ok(p)
    }

    /// On cancel. Returns false when there is nothing to drain (not connected).
    fn begin_shutdown(&mut self) -> bool {
        if !self.connected {
            return false;
        }
        self.publish_status(false);
        self.shutdown = Shutdown::Draining(Instant::now() + self.settings.shutdown_grace);
        true
    }

    /// Returns false when the publisher should stop now.
    fn shutdown_deadline_passed(&mut self) -> bool {
        match self.shutdown {
            Shutdown::Draining(_) => {
                warn!(sink = "mqtt", broker = %self.broker, station = %self.station, in_flight = self.tracker.in_flight(), "MQTT shutdown: PUBACKs still outstanding; they stay spooled.");
                self.disconnect();
                true
            }
            _ => false,
        }
    }

    fn disconnect(&mut self) {
        self.shutdown = Shutdown::Disconnecting(Instant::now() + Duration::from_secs(1));
        if self.client.try_disconnect().is_err() {
            self.shutdown = Shutdown::Disconnecting(Instant::now());
        }
    }

    fn on_connection_error(&mut self, error: &ConnectionError, eventloop: &mut EventLoop) {
        let was_connected = self.connected;
        self.connected = false;
        metrics::gauge!("gaswatch_mqtt_connected").set(0.0);
        crate::telemetry::health::set_sink_reachable(self.spool.name(), false);
        // Events rumqttc read before the error are still buffered (real
        // PUBACKs among them): settle them before forgetting the packet ids.
        let buffered: Vec<Event> = eventloop.state.events.drain(..).collect();
        for event in buffered {
            self.handle_event(event);
        }
        // We re-send from the spool ourselves; rumqttc's replay queue and a
        // parked colliding publish would break the order-based correlation.
        eventloop.pending.clear();
        eventloop.state.collision = None;
        self.tracker.reset();
        self.traced.clear();
        if was_connected {
            warn!(broker = %self.broker, station = %self.station, %error, "MQTT connection lost; reconnecting with backoff.");
            self.down_logged = true;
        } else if !self.down_logged {
            warn!(broker = %self.broker, station = %self.station, %error, "MQTT broker unreachable; retrying with backoff.");
            self.down_logged = true;
        } else {
            debug!(broker = %self.broker, %error, "MQTT connect attempt failed.");
        }
    }
}

/// Capped exponential backoff with jitter: `min * 2^attempt`, at most `max`,
/// then a uniform pick in `[d/2, d]`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let d = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    d / 2 + d.mul_f64(fastrand::f64() / 2.0)
}

/// Correlates records with packet ids and computes the ack watermarks.
/// Pure state, no I/O.
#[derive(Debug, Default)]
struct Tracker {
    /// Per class, the id of the last record handed to rumqttc.
    cursor: [u64; 2],
    /// Per class, every id <= this is acknowledged in the spool.
    acked: [u64; 2],
    /// Per class, records handed out and not yet in the watermark, in id
    /// order, with whether each is settled.
    outstanding: [VecDeque<(u64, bool)>; 2],
    /// Handed to `try_publish`, `Outgoing::Publish` not seen yet, in order.
    /// `None` for status messages.
    to_correlate: VecDeque<Option<(usize, u64)>>,
    by_pkid: HashMap<u16, Option<(usize, u64)>>,
    /// Watermarks advanced by rejections, to ack in the spool.
    rejected_advanced: [Option<u64>; 2],
}

impl Tracker {
    fn in_flight(&self) -> usize {
        self.to_correlate.len() + self.by_pkid.len()
    }

    /// Forgets everything in flight; the next read starts after the watermark.
    fn reset(&mut self) {
        self.cursor = self.acked;
        for q in &mut self.outstanding {
            q.clear();
        }
        self.to_correlate.clear();
        self.by_pkid.clear();
    }

    fn sent(&mut self, c: usize, id: u64) {
        self.cursor[c] = id;
        self.outstanding[c].push_back((id, false));
        self.to_correlate.push_back(Some((c, id)));
    }

    fn sent_untracked(&mut self) {
        self.to_correlate.push_back(None);
    }

    fn reject(&mut self, c: usize, id: u64) {
        self.cursor[c] = id;
        self.outstanding[c].push_back((id, true));
        if let Some(upto) = self.advance(c) {
            self.rejected_advanced[c] = Some(upto);
        }
    }

    fn take_rejected_watermark(&mut self) -> Option<Vec<(RecordClass, u64)>> {
        let v: Vec<(RecordClass, u64)> = (0..2)
            .filter_map(|c| self.rejected_advanced[c].take().map(|u| (CLASSES[c], u)))
            .collect();
        (!v.is_empty()).then_some(v)
    }

    /// `Outgoing::Publish(pkid)`: the oldest queued publish got this id.
    /// Returns the record's class, if it was a record.
    fn on_outgoing(&mut self, pkid: u16) -> Option<RecordClass> {
        let entry = self.to_correlate.pop_front()?;
        if pkid == 0 {
            // QoS 0: no acknowledgement will come.
            if let Some((c, id)) = entry {
                self.settle(c, id);
                if let Some(upto) = self.advance(c) {
                    self.rejected_advanced[c] = Some(upto);
                }
            }
        } else {
            self.by_pkid.insert(pkid, entry);
        }
        entry.map(|(c, _)| CLASSES[c])
    }

    /// `Incoming::PubAck(pkid)`. Returns the record's class and the new
    /// watermark when it advanced; `None` for status messages and unknown ids.
    fn on_puback(&mut self, pkid: u16) -> Option<(RecordClass, Option<u64>)> {
        let (c, id) = self.by_pkid.remove(&pkid)??;
        self.settle(c, id);
        Some((CLASSES[c], self.advance(c)))
    }

    fn settle(&mut self, c: usize, id: u64) {
        if let Some(e) = self.outstanding[c].iter_mut().find(|e| e.0 == id) {
            e.1 = true;
        }
    }

    fn advance(&mut self, c: usize) -> Option<u64> {
        let before = self.acked[c];
        while let Some(&(id, true)) = self.outstanding[c].front() {
            self.acked[c] = id;
            self.outstanding[c].pop_front();
        }
        (self.acked[c] != before).then_some(self.acked[c])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_advances_only_over_contiguous_acks() {
        let mut t = Tracker::default();
        t.sent_untracked(); // status
        t.sent(0, 1);
        t.sent(0, 2);
        t.sent(1, 1);
        assert_eq!(t.in_flight(), 4);
        assert_eq!(t.on_outgoing(5), None);
        assert_eq!(t.on_outgoing(6), Some(RecordClass::Alarm));
        assert_eq!(t.on_outgoing(7), Some(RecordClass::Alarm));
        assert_eq!(t.on_outgoing(8), Some(RecordClass::Balance));
        assert_eq!(t.on_puback(5), None);
        assert_eq!(t.on_puback(7), Some((RecordClass::Alarm, None)));
        assert_eq!(t.on_puback(6), Some((RecordClass::Alarm, Some(2))));
        assert_eq!(t.on_puback(8), Some((RecordClass::Balance, Some(1))));
        assert_eq!(t.on_puback(8), None);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn reset_rewinds_the_cursor_to_the_watermark() {
        let mut t = Tracker::default();
        for id in 1..=3 {
            t.sent(0, id);
        }
        for pkid in 1..=3 {
            t.on_outgoing(pkid);
        }
        assert_eq!(t.on_puback(1), Some((RecordClass::Alarm, Some(1))));
        assert_eq!(t.on_puback(3), Some((RecordClass::Alarm, None)));
        t.reset();
        assert_eq!(t.cursor, [1, 0]);
        assert_eq!(t.in_flight(), 0);
        // A late PUBACK for a forgotten packet id does not ack anything.
        assert_eq!(t.on_puback(2), None);
    }

    #[test]
    fn rejected_records_do_not_block_the_watermark() {
        let mut t = Tracker::default();
        t.reject(0, 1);
        assert_eq!(
            t.take_rejected_watermark(),
            Some(vec![(RecordClass::Alarm, 1)])
        );
        t.sent(0, 2);
        t.reject(0, 3);
        assert_eq!(t.take_rejected_watermark(), None);
        t.on_outgoing(9);
        assert_eq!(t.on_puback(9), Some((RecordClass::Alarm, Some(3))));
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let min = Duration::from_millis(250);
        let max = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff(attempt, min, max);
            let cap = min.saturating_mul(1u32 << attempt.min(20)).min(max);
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d:?}");
        }
    }
}
