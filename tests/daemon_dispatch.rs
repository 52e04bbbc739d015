//! The dispatch link through the WHOLE daemon: the real `gaswatch` binary
//! polls the simulator over Modbus/TCP and publishes to a real mosquitto,
//! which the tests stop, restart, and flood with commands, while the daemon
//! itself is stopped, restarted and killed with SIGKILL.
//!
//! - Broker outage (#6): alarms raised and cleared while the broker is down
//!   reach a persistent subscriber after it is back: every journaled event,
//!   in sequence order, none lost, nothing extra.
//! - Broker restart in an alarm storm (#5): two dozen points chattering
//!   across their limits (flood, chattering) while the broker restarts;
//!   after de-duplication by (alarm id, seq) the events received equal the
//!   journal's (`gaswatch alarms history`, read across rotated segments),
//!   and the retained active-alarm state equals the standing alarms. A
//!   daemon restart after retention deleted the oldest segments restores
//!   every alarm (none raised again) and keeps the sequence increasing.
//! - Reloads (#10): SIGHUP with a changed MQTT sink (the publisher is
//!   restarted) while alarms are raised and cleared: every journaled event
//!   reaches the subscriber, none lost.
//! - Commands (#5): a command published while the daemon is down is applied
//!   when it is back; a stream of commands cut by `kill -9` is journaled
//!   exactly once each, in order, and every one is answered.

mod support;

use gaswatch_sim::{PointOverride, SimHandle, SimOptions, Station};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::daemon::{Daemon, history};
use support::mosquitto::{Mosquitto, Subscriber};

/// Long enough for a reconnect after the longest backoff (30 s).
const DELIVERY: Duration = Duration::from_secs(90);

/// Every message a persistent subscriber received, kept in order.
struct Audit {
    sub: Subscriber,
    seen: Vec<(String, Value)>,
}

impl Audit {
    async fn connect(port: u16, id: &str, filters: &[&str]) -> Audit {
        Audit {
            sub: Subscriber::connect(port, id, filters, true).await,
            seen: Vec::new(),
        }
    }

    /// Takes everything received so far.
    fn take(&mut self) {
        while let Some(m) = self.sub.try_next() {
            self.push(m);
        }
    }

    fn push(&mut self, m: support::mosquitto::Received) {
        let v = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
        self.seen.push((m.topic, v));
    }

    /// Waits until a message at index >= `from` satisfies `pred`; returns its index.
    async fn wait(
        &mut self,
        what: &str,
        from: usize,
        deadline: Duration,
        pred: impl Fn(&str, &Value) -> bool,
    ) -> usize {
        let end = tokio::time::Instant::now() + deadline;
        let mut i = from;
        loop {
            while i < self.seen.len() {
                if pred(&self.seen[i].0, &self.seen[i].1) {
                    return i;
                }
                i += 1;
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.sub.next(left).await {
                Some(m) => self.push(m),
                None => panic!(
                    "timed out waiting for {what}; last messages: {:?}",
                    &self.seen[self.seen.len().saturating_sub(10)..]
                ),
            }
        }
    }

    /// Waits until `cond` holds over everything received.
    async fn wait_all(
        &mut self,
        what: &str,
        deadline: Duration,
        mut cond: impl FnMut(&[(String, Value)]) -> bool,
    ) {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            self.take();
            if cond(&self.seen) {
                return;
            }
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.sub.next(left.min(Duration::from_millis(500))).await {
                Some(m) => self.push(m),
                None if left.is_zero() => panic!("timed out waiting for {what}"),
                None => {}
            }
        }
    }
}

/// One journaled alarm event: (alarm id, seq) -> (action, state).
type Events = BTreeMap<(String, u64), (String, String)>;

fn journal_events(entries: &[Value]) -> Events {
    entries
        .iter()
        .filter(|e| e["type"] == "event")
        .map(|e| {
            (
                (
                    e["alarm_id"].as_str().unwrap_or_default().to_string(),
                    e["seq"].as_u64().unwrap_or_default(),
                ),
                (
                    e["action"].as_str().unwrap_or_default().to_string(),
                    e["state"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// Alarm events received on `topic`, de-duplicated by (alarm id, seq):
/// the events and the seqs in order of first delivery, plus the duplicates.
fn received_events(seen: &[(String, Value)], topic: &str) -> (Events, Vec<u64>, usize) {
    let mut events = Events::new();
    let mut order = Vec::new();
    let mut dups = 0;
    for (t, v) in seen {
        if t != topic {
            continue;
        }
        let key = (
            v["alarm_id"].as_str().unwrap_or_default().to_string(),
            v["seq"].as_u64().unwrap_or_default(),
        );
        let val = (
            v["action"].as_str().unwrap_or_default().to_string(),
            v["state"].as_str().unwrap_or_default().to_string(),
        );
        match events.get(&key) {
            Some(prev) => {
                assert_eq!(prev, &val, "a duplicate of {key:?} differs");
                dups += 1;
            }
            None => {
                order.push(key.1);
                events.insert(key, val);
            }
        }
    }
    (events, order, dups)
}

/// The standing alarms of a journal (last event's state not `normal`):
/// alarm id -> (seq, state). This is what the retained topics must hold.
fn standing(entries: &[Value]) -> BTreeMap<String, (u64, String)> {
    let mut last: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for e in entries.iter().filter(|e| e["type"] == "event") {
        let id = e["alarm_id"].as_str().unwrap_or_default().to_string();
        let seq = e["seq"].as_u64().unwrap_or_default();
        let state = e["state"].as_str().unwrap_or_default().to_string();
        if last.get(&id).is_none_or(|(s, _)| *s < seq) {
            last.insert(id, (seq, state));
        }
    }
    last.retain(|_, (_, state)| state != "normal");
    last
}

/// [`standing`] from the journal files themselves, snapshots included: what
/// a restart restores even after retention deleted the segments holding the
/// events (`alarms history` shows events and commands only).
fn standing_restored(journal: &Path) -> BTreeMap<String, (u64, String)> {
    use gaswatch::journal::Entry;
    let mut last: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for e in journal_entries(journal) {
        match e {
            Entry::Snapshot { alarms, .. } => {
                last = alarms
                    .into_iter()
                    .map(|(id, a)| (id, (a.last_seq, a.state)))
                    .collect();
            }
            Entry::Event {
                alarm_id,
                seq,
                state,
                ..
            } => {
                last.insert(alarm_id, (seq, state));
            }
            Entry::Command { .. } => {}
        }
    }
    last.retain(|_, (_, state)| state != "normal");
    last
}

/// The retained active-alarm picture a console connecting now receives.
async fn retained_active(port: u16, prefix: &str, id: &str) -> BTreeMap<String, (u64, String)> {
    let filter = format!("{prefix}/alarms/active/#");
    let mut late = Subscriber::connect(port, id, &[&filter], false).await;
    let mut out = BTreeMap::new();
    for m in late.drain_until_barrier().await {
        let Some(alarm) = m.topic.strip_prefix(&format!("{prefix}/alarms/active/")) else {
            continue;
        };
        assert!(m.retain, "{} arrived live, not retained", m.topic);
        let v: Value = serde_json::from_slice(&m.payload).expect("retained JSON");
        assert_eq!(
            v["alarm_id"], alarm,
            "topic and payload name the same alarm"
        );
        out.insert(
            alarm.to_string(),
            (
                v["seq"].as_u64().unwrap_or_default(),
                v["state"].as_str().unwrap_or_default().to_string(),
            ),
        );
    }
    out
}

fn hold(sim: &SimHandle, point: &str, value: f64) {
    let known = sim.with_station(|s| {
        s.set_override(
            point,
            Some(PointOverride {
                hold: Some(value),
                scale: 1.0,
                add: 0.0,
            }),
        )
    });
    assert!(known, "the simulator has no point {point}");
}

fn journal_entries(path: &Path) -> Vec<gaswatch::journal::Entry> {
    match gaswatch::journal::read_entries(path) {
        Ok((e, _)) => e,
        Err(_) => Vec::new(),
    }
}

/// The last event of `alarm` in the journal: (action, state).
fn last_event(path: &Path, alarm: &str) -> Option<(String, String)> {
    journal_entries(path)
        .into_iter()
        .rev()
        .find_map(|e| match e {
            gaswatch::journal::Entry::Event {
                alarm_id,
                action,
                state,
                ..
            } if alarm_id == alarm => Some((action, state)),
            _ => None,
        })
}

fn journal_commands(path: &Path) -> Vec<(String, bool)> {
    journal_entries(path)
        .into_iter()
        .filter_map(|e| match e {
            gaswatch::journal::Entry::Command { request_id, ok, .. } => Some((request_id, ok)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------- city gate

/// The example city gate on the simulator, with only the MQTT dispatch sink.
struct CityGate {
    _sims: Vec<SimHandle>,
    sim: SimHandle,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl CityGate {
    async fn start(mqtt_port: u16, extra: &str) -> CityGate {
        let text = support::station::CITY_GATE;
        let station = Station::from_config_str(text, &SimOptions::default()).expect("station");
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut sims: Vec<SimHandle> = gaswatch_sim::serve_all(station, |_| any)
            .await
            .expect("simulator")
            .into_values()
            .collect();
        assert_eq!(sims.len(), 1, "the example station has one endpoint");
        let sim = sims.remove(0);
        let dir = tempfile::tempdir().expect("tempdir");
        let base = text
            .replace(
                "port = 5020",
                &format!("port = {}", sim.local_addr().port()),
            )
            .replace("poll_interval = \"1s\"", "poll_interval = \"200ms\"");
        let base = base.split("[sinks.file]").next().expect("text");
        let d = dir.path().display();
        let config = dir.path().join("cg01.toml");
        std::fs::write(
            &config,
            format!(
                "{base}\n{extra}\n[sinks.mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\n[spool]\ndir = \"{d}/spool\"\n"
            ),
        )
        .expect("config");
        CityGate {
            _sims: sims,
            sim,
            dir,
            config,
        }
    }

    fn journal(&self) -> PathBuf {
        gaswatch::journal::default_path(&self.dir.path().join("spool"))
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }
}

const CG_EVENTS: &str = "gaswatch/cg01/alarms/events";
/// Config lines that turn communication-loss alarms off.
const QUIET: &str = "[alarms]\ncomm_loss = false\n";
const CG_STATUS: &str = "gaswatch/cg01/status";
const CG_REPLIES: &str = "gaswatch/cg01/replies";
const CG_COMMANDS: &str = "gaswatch/cg01/commands";

fn online(t: &str, v: &Value) -> bool {
    t.ends_with("/status") && v["state"] == "online"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_through_the_whole_daemon_loses_no_alarm_event() {
    let mut broker = Mosquitto::start();
    // No communication-loss alarms: on a loaded machine a late poll would
    // add events at random moments; the test drives every alarm itself.
    let cg = CityGate::start(broker.port(), QUIET).await;
    let mut audit = Audit::connect(broker.port(), "audit-outage", &[CG_EVENTS, CG_STATUS]).await;
    let mut daemon = Daemon::start(&cg.config, &cg.log());
    audit.wait("online", 0, DELIVERY, online).await;

    // Live first: PT_OUT1 above HH (1750) raises H and HH.
    const HH: &str = "cg01/PT_OUT1/HH";
    hold(&cg.sim, "PT_OUT1", 1800.0);
    audit
        .wait("the live HH raise", 0, DELIVERY, |t, v| {
            t == CG_EVENTS && v["alarm_id"] == HH && v["action"] == "raise"
        })
        .await;

    // Outage: the daemon keeps polling, raising and clearing; it journals
    // and spools what no broker can take.
    broker.stop();
    let during_from = audit.seen.len();
    let journal = cg.journal();
    for (value, alarm, action) in [
        (1500.0, HH, "clear"),
        (1800.0, HH, "raise"),
        (1500.0, HH, "clear"),
        (1250.0, "cg01/PT_OUT1/L", "raise"),
        (1500.0, "cg01/PT_OUT1/L", "clear"),
        (1150.0, "cg01/PT_OUT1/LL", "raise"),
    ] {
        hold(&cg.sim, "PT_OUT1", value);
        let seen = support::wait_until_async(DELIVERY, || {
            let last = last_event(&journal, alarm);
            async move { last.is_some_and(|(a, _)| a == action) }
        })
        .await;
        assert!(
            seen,
            "{alarm} {action} not journaled; log:\n{}",
            daemon.log()
        );
    }
    let outage_events = journal_events(&history(&cg.config));
    broker.start_again();

    // Everything journaled arrives, de-duplicated by (alarm id, seq).
    audit
        .wait_all("every journaled event", DELIVERY, |seen| {
            let (got, _, _) = received_events(seen, CG_EVENTS);
            outage_events.keys().all(|k| got.contains_key(k))
        })
        .await;
    let exit = daemon.terminate();
    assert!(exit.success(), "exit {exit}; log:\n{}", daemon.log());
    let journaled = journal_events(&history(&cg.config));
    audit
        .wait_all("the events journaled up to the stop", DELIVERY, |seen| {
            let (got, _, _) = received_events(seen, CG_EVENTS);
            journaled.keys().all(|k| got.contains_key(k))
        })
        .await;
    let (got, order, dups) = received_events(&audit.seen, CG_EVENTS);
    assert_eq!(got, journaled, "received events (de-duplicated) = journal");
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "first deliveries in seq order: {order:?}"
    );
    let during = received_events(&audit.seen[during_from..], CG_EVENTS)
        .0
        .len();
    assert!(
        during >= 10,
        "the outage produced events for the test: {during}"
    );
    eprintln!(
        "broker outage: {} events journaled, {during} delivered after the outage, {dups} duplicates",
        journaled.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_reloads_while_alarms_flow_lose_no_event() {
    let broker = Mosquitto::start();
    let cg = CityGate::start(broker.port(), QUIET).await;
    let base = std::fs::read_to_string(&cg.config).expect("config");
    let mut audit = Audit::connect(broker.port(), "audit-reload", &[CG_EVENTS, CG_STATUS]).await;
    let daemon = Daemon::start(&cg.config, &cg.log());
    audit.wait("online", 0, DELIVERY, online).await;
    const HH: &str = "cg01/PT_OUT1/HH";
    let journal = cg.journal();
    let reloads = |log: &str| log.matches("Configuration reloaded").count();
    let mut high = true;
    for round in 1..=3u32 {
        // A changed [sinks.mqtt]: the publisher stops and a new one starts.
        std::fs::write(
            &cg.config,
            base.replace(
                "[sinks.mqtt]\n",
                &format!("[sinks.mqtt]\nheartbeat = \"{}s\"\n", 20 + round),
            ),
        )
        .expect("config");
        daemon.signal("-HUP");
        // Alarms change while the sink restarts.
        for _ in 0..2 {
            let (value, action) = if high {
                (1800.0, "raise")
            } else {
                (1500.0, "clear")
            };
            hold(&cg.sim, "PT_OUT1", value);
            let seen = support::wait_until_async(DELIVERY, || {
                let last = last_event(&journal, HH);
                async move { last.is_some_and(|(a, _)| a == action) }
            })
            .await;
            assert!(seen, "{HH} {action} not journaled; log:\n{}", daemon.log());
            high = !high;
        }
        assert!(
            support::wait_until(DELIVERY, || reloads(&daemon.log()) >= round as usize),
            "reload {round} not applied; log:\n{}",
            daemon.log()
        );
    }
    let mut daemon = daemon;
    let exit = daemon.terminate();
    assert!(exit.success(), "exit {exit}; log:\n{}", daemon.log());
    let journaled = journal_events(&history(&cg.config));
    audit
        .wait_all("every journaled event", DELIVERY, |seen| {
            let (got, _, _) = received_events(seen, CG_EVENTS);
            journaled.keys().all(|k| got.contains_key(k))
        })
        .await;
    let (got, _, dups) = received_events(&audit.seen, CG_EVENTS);
    assert_eq!(got, journaled, "received events (de-duplicated) = journal");
    assert!(
        journaled.len() >= 6,
        "the reloads saw alarm traffic: {} events",
        journaled.len()
    );
    eprintln!(
        "sink reloads: {} events journaled and delivered, {dups} duplicates",
        journaled.len()
    );

    // The alarm-system report over the same journal: every shown raise is
    // an annunciation, the HH and H of PT_OUT1 lead the bad actors, and
    // nothing was acknowledged (no dispatcher in this test).
    let entries = history(&cg.config);
    let shown_raises = entries
        .iter()
        .filter(|e| e["type"] == "event" && e["action"] == "raise" && e["annunciation"] == "shown")
        .count() as u64;
    let report = support::daemon::alarm_report(&cg.config, "1h");
    assert_eq!(report["annunciations"], shown_raises, "{report}");
    assert!(shown_raises >= 3, "{report}");
    let top = report["top10"][0]["alarm_id"].as_str().unwrap_or_default();
    assert!(top.starts_with("cg01/PT_OUT1/"), "{report}");
    assert_eq!(report["ack"]["acknowledged"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_survive_daemon_downtime_and_kill9_applied_once_each() {
    let broker = Mosquitto::start();
    // The outlet runs near 1500 kPa: an H limit at 1400 raises at once.
    let cg = CityGate::start(broker.port(), "").await;
    let text = std::fs::read_to_string(&cg.config).expect("config");
    let text = text.replacen("h = 1700.0\nl = 1300.0", "h = 1400.0\nl = 1300.0", 1);
    std::fs::write(&cg.config, text).expect("config");
    let mut audit = Audit::connect(
        broker.port(),
        "audit-cmd",
        &[CG_EVENTS, CG_STATUS, CG_REPLIES],
    )
    .await;
    let mut daemon = Daemon::start(&cg.config, &cg.log());
    const H: &str = "cg01/PT_OUT1/H";
    audit
        .wait("the H raise", 0, DELIVERY, |t, v| {
            t == CG_EVENTS && v["alarm_id"] == H && v["action"] == "raise"
        })
        .await;
    let cmd = |id: &str, action: &str| {
        let mut v = serde_json::json!({"v":1,"request_id":id,"alarm_id":H,"operator":"wang","action":action});
        if action == "shelve" {
            v["duration_s"] = 600.into();
        }
        v.to_string()
    };
    let reply =
        |id: &'static str| move |t: &str, v: &Value| t == CG_REPLIES && v["request_id"] == id;

    // 1. Published while the daemon is down: the broker keeps it for the
    //    station's persistent session; applied once the daemon is back.
    //    (Killed only once the raise is journaled: the journal follows the
    //    spool, so a kill right after the raise was published could leave
    //    it unjournaled, and the restarted daemon would raise it again only
    //    after its first poll, possibly after the ack arrived.)
    let journal = cg.journal();
    let raised = support::wait_until_async(DELIVERY, || {
        let last = last_event(&journal, H);
        async move { last.is_some_and(|(a, _)| a == "raise") }
    })
    .await;
    assert!(raised, "the raise is journaled");
    daemon.kill9();
    let from = audit.seen.len();
    audit.sub.publish(CG_COMMANDS, cmd("down-1", "ack")).await;
    let mut daemon = Daemon::start(&cg.config, &cg.log());
    let i = audit
        .wait("reply down-1", from, DELIVERY, reply("down-1"))
        .await;
    assert_eq!(audit.seen[i].1["ok"], true, "{}", audit.seen[i].1);

    // 2. A stream of commands cut by kill -9: each is journaled exactly
    //    once, in order, and answered; none is applied twice (a shelve and
    //    an unshelve alternate, so a repeat would be refused).
    let ids: Vec<String> = (0..40).map(|k| format!("s{k:02}")).collect();
    let from = audit.seen.len();
    for (k, id) in ids.iter().enumerate() {
        let action = if k % 2 == 0 { "shelve" } else { "unshelve" };
        audit.sub.publish(CG_COMMANDS, cmd(id, action)).await;
    }
    audit
        .wait("a first reply of the stream", from, DELIVERY, |t, v| {
            t == CG_REPLIES && v["request_id"].as_str().is_some_and(|r| r.starts_with('s'))
        })
        .await;
    daemon.kill9();
    let at_kill = journal_commands(&journal).len();
    let mut daemon = Daemon::start(&cg.config, &cg.log());
    let done = support::wait_until_async(DELIVERY, || {
        let n = journal_commands(&journal)
            .iter()
            .filter(|(r, _)| r.starts_with('s'))
            .count();
        async move { n >= 40 }
    })
    .await;
    assert!(done, "not every command journaled; log:\n{}", daemon.log());
    audit
        .wait_all("a reply to every command", DELIVERY, |seen| {
            let answered: BTreeSet<&str> = seen
                .iter()
                .filter(|(t, _)| t == CG_REPLIES)
                .filter_map(|(_, v)| v["request_id"].as_str())
                .collect();
            ids.iter().all(|id| answered.contains(id.as_str()))
        })
        .await;
    let exit = daemon.terminate();
    assert!(exit.success(), "exit {exit}; log:\n{}", daemon.log());
    let journaled = journal_commands(&journal);
    let stream: Vec<(String, bool)> = journaled
        .iter()
        .filter(|(r, _)| r.starts_with('s'))
        .cloned()
        .collect();
    assert_eq!(
        stream,
        ids.iter().map(|id| (id.clone(), true)).collect::<Vec<_>>(),
        "each command journaled once, in order, applied"
    );
    assert_eq!(
        journaled.iter().filter(|(r, _)| r == "down-1").count(),
        1,
        "the command sent while down is journaled once"
    );
    let replies: Vec<&Value> = audit
        .seen
        .iter()
        .filter(|(t, _)| t == CG_REPLIES)
        .map(|(_, v)| v)
        .collect();
    assert!(
        replies.iter().all(|v| v["ok"] == true),
        "no command refused: {replies:?}"
    );
    let again = daemon.log().matches("Command delivered again").count();
    eprintln!(
        "commands: kill -9 after {at_kill} of 41 were journaled; {again} delivered again and not re-applied; {} replies for 41 commands",
        replies.len()
    );
}

// ---------------------------------------------------------------- storm

const STORM_POINTS: usize = 24;
const ST_EVENTS: &str = "gaswatch/st01/alarms/events";
const ST_STATUS: &str = "gaswatch/st01/status";
const ST_COMMANDS: &str = "gaswatch/st01/commands";

fn point(i: usize) -> String {
    format!("P{:02}", i + 1)
}

/// A station of `STORM_POINTS` pressure points, each with H (100) and HH
/// (200) limits, polled every 100 ms; journal segments of 4 KiB.
fn storm_toml(sim_port: u16, mqtt_port: u16, dir: &Path, journal_max_bytes: u64) -> String {
    let mut t = format!(
        "[station]\nid = \"st01\"\nname = \"Storm\"\nkind = \"city_gate\"\n\n\
         [[devices]]\nid = \"plc\"\nhost = \"127.0.0.1\"\nport = {sim_port}\nunit_id = 1\n\
         poll_interval = \"100ms\"\ntimeout = \"500ms\"\n"
    );
    for i in 0..STORM_POINTS {
        t.push_str(&format!(
            "\n[[devices.points]]\nname = \"{}\"\nregister = \"holding\"\naddress = {}\n\
             type = \"f32\"\norder = \"ABCD\"\nunit = \"kPa\"\n",
            point(i),
            2 * i
        ));
    }
    for i in 0..STORM_POINTS {
        t.push_str(&format!(
            "\n[[limits]]\npoint = \"{}\"\nhh = 200.0\nh = 100.0\ndeadband = 1.0\n",
            point(i)
        ));
    }
    t.push_str(&format!(
        "\n{QUIET}\n[alarms.journal_rotation]\nsegment_bytes = 4096\nsegment_age = \"1h\"\n\
         max_bytes = {journal_max_bytes}\n\n\
         [sinks.mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\n\
         [spool]\ndir = \"{}/spool\"\n",
        dir.display()
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_in_an_alarm_storm_delivers_the_journal_exactly_and_restores_across_rotation()
 {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let station = Station::from_config_str(
        &storm_toml(5020, broker.port(), dir.path(), 1 << 30),
        &SimOptions::default(),
    )
    .expect("station");
    let sim = gaswatch_sim::serve(station, ([127, 0, 0, 1], 0).into())
        .await
        .expect("simulator");
    let config = dir.path().join("st01.toml");
    let mqtt_port = broker.port();
    let write_config = |max_bytes: u64| {
        std::fs::write(
            &config,
            storm_toml(sim.local_addr().port(), mqtt_port, dir.path(), max_bytes),
        )
        .expect("config")
    };
    write_config(1 << 30);
    let journal = gaswatch::journal::default_path(&dir.path().join("spool"));
    let log = dir.path().join("daemon.log");
    for i in 0..STORM_POINTS {
        hold(&sim, &point(i), 0.0);
    }
    let mut audit = Audit::connect(broker.port(), "audit-storm", &[ST_EVENTS, ST_STATUS]).await;
    let mut daemon = Daemon::start(&config, &log);
    audit.wait("online", 0, DELIVERY, online).await;

    // The storm: every point steps 0 -> 150 -> 250 -> 0 ..., shifted by
    // point, one step every 300 ms (the daemon polls every 100 ms): H and HH
    // raise and clear over and over, a flood, chattering everywhere. The
    // broker goes down in the middle of it and comes back.
    let levels = [0.0, 150.0, 250.0];
    let round = |r: usize| {
        for i in 0..STORM_POINTS {
            hold(&sim, &point(i), levels[(r + i) % 3]);
        }
    };
    let pace = Duration::from_millis(300);
    for r in 0..15 {
        round(r);
        tokio::time::sleep(pace).await;
    }
    // Stop it just after a poll saw new values, while their events flow.
    round(15);
    tokio::time::sleep(Duration::from_millis(120)).await;
    broker.stop();
    tokio::time::sleep(pace).await;
    for r in 16..30 {
        round(r);
        tokio::time::sleep(pace).await;
    }
    broker.start_again();
    for r in 30..45 {
        round(r);
        tokio::time::sleep(pace).await;
    }
    // Final picture: P01-P08 at 250 (H and HH active), P09-P16 at 150 (H
    // active), P17-P24 at 0 (both returned to normal, still unacknowledged).
    let final_level = |i: usize| levels[2 - i / 8];
    for i in 0..STORM_POINTS {
        hold(&sim, &point(i), final_level(i));
    }
    let settled = support::wait_until_async(DELIVERY, || {
        let ok = (0..STORM_POINTS).all(|i| {
            let want = |limit: f64| {
                if final_level(i) > limit {
                    "raise"
                } else {
                    "clear"
                }
            };
            ["H", "HH"]
                .into_iter()
                .zip([100.0, 200.0])
                .all(|(k, limit)| {
                    last_event(&journal, &format!("st01/{}/{k}", point(i)))
                        .is_some_and(|(a, _)| a == want(limit))
                })
        });
        async move { ok }
    })
    .await;
    assert!(
        settled,
        "the final values were not journaled; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // A dispatcher acknowledges: P17-P24 return to normal (their retained
    // state is deleted), P01-P08 HH become acked (retained, updated).
    let mut acks = Vec::new();
    for i in 0..STORM_POINTS {
        let kinds: &[&str] = match i / 8 {
            0 => &["HH"],
            2 => &["H", "HH"],
            _ => &[],
        };
        for k in kinds {
            let id = format!("ack-{}-{k}", point(i));
            let body = serde_json::json!({"v":1,"request_id":id,"alarm_id":format!("st01/{}/{k}", point(i)),"operator":"wang","action":"ack"});
            audit.sub.publish(ST_COMMANDS, body.to_string()).await;
            acks.push(id);
        }
    }
    let acked = support::wait_until_async(DELIVERY, || {
        let done: BTreeSet<String> = journal_commands(&journal)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let ok = acks.iter().all(|a| done.contains(a));
        async move { ok }
    })
    .await;
    assert!(acked, "acks not journaled; log:\n{}", daemon.log());

    // Delivery: after de-duplication, exactly the journal's events, compared
    // at a quiet moment: everything journaled received, then the
    // subscriber's own barrier (nothing left in flight), then the journal
    // unchanged since.
    let mut entries = history(&config);
    for attempt in 0.. {
        let journaled = journal_events(&entries);
        audit
            .wait_all("every journaled event", DELIVERY, |seen| {
                let (got, _, _) = received_events(seen, ST_EVENTS);
                journaled.keys().all(|k| got.contains_key(k))
            })
            .await;
        audit.take();
        for m in audit.sub.drain_until_barrier().await {
            audit.push(m);
        }
        let again = history(&config);
        let stable = journal_events(&again) == journaled;
        entries = again;
        if stable {
            break;
        }
        assert!(attempt < 5, "the journal keeps growing after the storm");
    }
    let journaled = journal_events(&entries);
    let (got, order, dups) = received_events(&audit.seen, ST_EVENTS);
    let missing: Vec<_> = journaled
        .iter()
        .filter(|(k, _)| !got.contains_key(*k))
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, _)| !journaled.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "journaled but not received: {missing:?}\nreceived but not journaled: {extra:?}"
    );
    assert_eq!(got, journaled, "received events (de-duplicated) = journal");
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "first deliveries in seq order"
    );
    let raw: Vec<&Value> = entries.iter().filter(|e| e["type"] == "event").collect();
    assert!(
        raw.iter().any(|e| e["chattering"] == true),
        "the storm chattered"
    );
    assert!(
        raw.iter()
            .any(|e| e["kind"] == "FLOOD" && e["action"] == "raise"),
        "the storm flooded"
    );
    let archives = gaswatch::journal::list_archives(&journal).expect("segments");
    assert!(
        archives.len() >= 3,
        "the journal rotated (history read {} segments)",
        archives.len() + 1
    );
    eprintln!(
        "alarm storm: {} events in {} journal segments, {dups} duplicate deliveries",
        journaled.len(),
        archives.len() + 1
    );

    // Retained state = the standing alarms.
    let want = standing(&entries);
    assert_eq!(
        standing_restored(&journal),
        want,
        "snapshots agree with the events"
    );
    assert!(
        want.len() >= 24,
        "the final picture has standing alarms: {want:?}"
    );
    assert!(
        !want.contains_key("st01/P24/H"),
        "acknowledged after return to normal: not standing"
    );
    assert_eq!(
        retained_active(broker.port(), "gaswatch/st01", "console-1").await,
        want,
        "retained active alarms = standing alarms"
    );

    // Restart with a retention that deletes the oldest segments: the state
    // comes from the snapshots. No active alarm is raised again, and the
    // sequence keeps increasing.
    let exit = daemon.terminate();
    assert!(exit.success(), "exit {exit}; log:\n{}", daemon.log());
    let before = history(&config);
    let max_seq = journal_events(&before)
        .keys()
        .map(|k| k.1)
        .max()
        .expect("events");
    write_config(8192);
    let from = audit.seen.len();
    let mut daemon = Daemon::start(&config, &log);
    audit.wait("online again", from, DELIVERY, online).await;
    // (The MQTT sink may connect before the journal is opened.)
    let oldest = gaswatch::journal::archive_path(&journal, 1);
    assert!(
        support::wait_until_async(DELIVERY, || {
            let gone = !oldest.exists();
            async move { gone }
        })
        .await,
        "retention deleted the oldest segment"
    );
    let kept = gaswatch::journal::list_archives(&journal).expect("segments");
    assert!(kept.len() < archives.len(), "{kept:?}");
    // A marker: P24 above H again.
    hold(&sim, "P24", 150.0);
    let i = audit
        .wait("the P24 raise", from, DELIVERY, |t, v| {
            t == ST_EVENTS && v["alarm_id"] == "st01/P24/H" && v["action"] == "raise"
        })
        .await;
    assert!(
        audit.seen[i].1["seq"].as_u64().expect("seq") > max_seq,
        "seq continues after the restart"
    );
    let after = history(&config);
    let active_before: BTreeSet<String> = standing(&before)
        .into_iter()
        .filter(|(_, (_, s))| s == "unacked" || s == "acked")
        .map(|(id, _)| id)
        .collect();
    let raised_again: Vec<&Value> = after
        .iter()
        .filter(|e| e["type"] == "event" && e["seq"].as_u64().unwrap_or(0) > max_seq)
        .filter(|e| {
            e["action"] == "raise"
                && active_before.contains(e["alarm_id"].as_str().unwrap_or_default())
        })
        .collect();
    assert!(
        raised_again.is_empty(),
        "restored alarms raised again: {raised_again:?}"
    );
    assert_eq!(
        retained_active(broker.port(), "gaswatch/st01", "console-2").await,
        standing_restored(&journal),
        "retained active alarms = standing alarms after the restart (from the snapshot)"
    );
    let exit = daemon.terminate();
    assert!(exit.success(), "exit {exit}");
    sim.stop().await;
}
