//! `gaswatch dispatch`: the dispatcher's console. Connects to the broker,
//! subscribes to every station under the prefix, keeps a pure
//! [`model::Console`] and renders it in a terminal ([`tui`]) or prints
//! events as JSON lines (`--json`). Commands (ack, shelve, unshelve, reset)
//! are published on `<prefix>/<station>/commands`; the station answers on
//! `replies`.

pub mod model;
pub mod tui;

use crate::model::Timestamp;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use tokio::sync::mpsc;

/// Command-line options of `gaswatch dispatch`.
#[derive(Debug, Clone, clap::Args)]
pub struct DispatchArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Topic prefix (the stations' `[sinks.mqtt] topic_prefix`).
    #[arg(long, default_value = "gaswatch")]
    pub prefix: String,
    /// Broker user name (the dispatcher's account).
    #[arg(long, env = "GASWATCH_DISPATCH_USER")]
    pub username: Option<String>,
    /// Broker password.
    #[arg(long, env = "GASWATCH_DISPATCH_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Operator name put in commands and the journal.
    #[arg(long, env = "USER", default_value = "dispatcher")]
    pub operator: String,
    /// Print events as JSON lines instead of the terminal UI.
    #[arg(long)]
    pub json: bool,
    /// Station heartbeat period; a station silent for 3 periods shows offline.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// A message from the broker, or a command to send.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Connects and spawns the event-loop task; returns the client and a
/// channel of received messages.
pub fn connect(args: &DispatchArgs) -> (AsyncClient, mpsc::Receiver<Message>) {
    let id = format!("gaswatch-dispatch-{}-{}", args.operator, std::process::id());
    let mut o = MqttOptions::new(id, args.host.clone(), args.port);
    o.set_keep_alive(Duration::from_secs(15))
        .set_clean_session(true)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    if let Some(u) = &args.username {
        o.set_credentials(u.clone(), args.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let (tx, rx) = mpsc::channel(4096);
    let prefix = args.prefix.clone();
    let sub = client.clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(250);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    delay = Duration::from_millis(250);
                    for t in [
                        "+/status",
                        "+/alarms/events",
                        "+/alarms/active/#",
                        "+/replies",
                    ] {
                        let _ = sub.try_subscribe(format!("{prefix}/{t}"), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let m = Message {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                    };
                    if tx.send(m).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Broker connection failed; retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    });
    (client, rx)
}

/// The JSON of a command (see docs/dispatch-protocol.md).
pub fn command_json(
    alarm_id: &str,
    operator: &str,
    action: &str,
    duration_s: Option<u64>,
) -> String {
    let now = Timestamp::now();
    let mut v = serde_json::json!({
        "v": 1,
        "request_id": format!("{}-{}", operator, now.nanos()),
        "alarm_id": alarm_id,
        "operator": operator,
        "action": action,
        "sent_ns": now.nanos(),
    });
    if let Some(d) = duration_s {
        v["duration_s"] = d.into();
    }
    v.to_string()
}

/// Runs the console until quit (or, in `--json` mode, until interrupted).
pub async fn run(args: DispatchArgs) -> Result<(), DispatchError> {
    let (client, mut rx) = connect(&args);
    if args.json {
        let mut console = model::Console::new(&args.prefix);
        while let Some(m) = rx.recv().await {
            let now = Timestamp::now().nanos();
            match console.apply(&m.topic, &m.payload, now) {
                model::Applied::Duplicate | model::Applied::Ignored(_) => {}
                _ => {
                    if !m.payload.is_empty() {
                        let payload: serde_json::Value =
                            serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null);
                        println!(
                            "{}",
                            serde_json::json!({"topic": m.topic, "payload": payload})
                        );
                    }
                }
            }
        }
        return Ok(());
    }
    tui::run(args, client, rx).await
}
