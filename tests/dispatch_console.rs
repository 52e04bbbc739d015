//! The dispatcher's console driven for real: `gaswatch dispatch` runs in a
//! detached tmux session with a fixed 220x60 terminal against a real
//! mosquitto holding the retained state of 30 stations with 300 standing
//! alarms (published the way stations publish it, docs/dispatch-protocol.md).
//! The test reads the screen (`tmux capture-pane -p`): every station online
//! with its alarm count, the alarms sorted by priority then age (compared
//! row by row with the expected order), the selected row marked. It presses
//! `a`: the station side receives the ack command for the selected alarm,
//! answers as a station does (event, retained state, reply), and the screen
//! shows the alarm acknowledged and the reply.
//!
//! Needs tmux: skipped when it is missing, unless `CI` is set (then it fails).

mod support;

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use support::mosquitto::{Mosquitto, Subscriber};

const STATIONS: usize = 30;
const PER_STATION: usize = 10;
const PREFIX: &str = "gaswatch";

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    bin: PathBuf,
    socket: String,
    conf: tempfile::NamedTempFile,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg(self.conf.path())
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-t", "gw"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.cmd(&["send-keys", "-t", "gw", keys]);
        assert!(out.status.success(), "tmux send-keys: {out:?}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// tmux, or `None` to skip (only when `CI` is unset).
fn tmux() -> Option<PathBuf> {
    match support::find_program("tmux") {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("tmux not found (CI is set): install it with `apt-get install tmux`")
        }
        None => {
            eprintln!("SKIPPED: tmux not found; install it with `apt-get install tmux`");
            None
        }
    }
}

struct Alarm {
    station: String,
    id: String,
    priority: &'static str,
    ts_ns: i64,
    seq: u64,
}

fn rank(p: &str) -> u8 {
    match p {
        "critical" => 3,
        "high" => 2,
        "medium" => 1,
        _ => 0,
    }
}

fn alarm_json(a: &Alarm, action: &str, state: &str, seq: u64) -> String {
    let point = a.id.split('/').nth(1).unwrap_or_default();
    json!({
        "v": 1, "station": a.station, "alarm_id": a.id, "source": point, "kind": "HH",
        "priority": a.priority, "action": action, "value": 1760.0, "limit": 1750.0,
        "ts": gaswatch::model::Timestamp(a.ts_ns).to_rfc3339(), "ts_ns": a.ts_ns,
        "seq": seq, "message": format!("{point} above HH limit 1750 kPa"),
        "state": state, "annunciation": "shown", "level": 0, "escalation": "station_operator",
    })
    .to_string()
}

/// The rows of the alarm table on screen, top to bottom: (selected, priority, age s, alarm id).
fn rows(screen: &str, ids: &std::collections::HashSet<&str>) -> Vec<(bool, String, u64, String)> {
    let mut out = Vec::new();
    for line in screen.lines() {
        let tokens: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|t| !t.is_empty())
            .collect();
        let Some(id) = tokens.iter().find(|t| ids.contains(**t)) else {
            continue;
        };
        let Some(priority) = tokens
            .iter()
            .find(|t| matches!(**t, "critical" | "high" | "medium" | "low"))
        else {
            continue;
        };
        let Some(age) = tokens.iter().find_map(|t| {
            let (m, s) = t.strip_suffix('s')?.split_once('m')?;
            Some(m.parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?)
        }) else {
            continue;
        };
        out.push((
            tokens.contains(&">>"),
            priority.to_string(),
            age,
            id.to_string(),
        ));
    }
    out
}

/// Polls the screen until `cond` holds (60 s); returns the last screen.
async fn wait_screen(t: &Tmux, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let ok = support::wait_until_async(Duration::from_secs(60), || {
        last = t.screen();
        let ok = cond(&last);
        async move { ok }
    })
    .await;
    assert!(ok, "the console never showed {what}; screen:\n{last}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_tmux_shows_30_stations_and_300_alarms_sorted_and_acks_the_selected_one() {
    let Some(bin) = tmux() else { return };
    let broker = Mosquitto::start();

    // The stations' side: retained status and active alarms, as published
    // by 30 gaswatch daemons; it also receives the dispatcher's commands.
    let commands = format!("{PREFIX}/+/commands");
    let mut stations = Subscriber::connect(broker.port(), "stations", &[&commands], false).await;
    let now = gaswatch::model::Timestamp::now().nanos();
    let mut alarms = Vec::new();
    for k in 0..STATIONS {
        let station = format!("s{:02}", k + 1);
        for j in 0..PER_STATION {
            let g = k * PER_STATION + j;
            let priority = match g % 20 {
                0 => "critical",
                1..=3 => "high",
                4..=9 => "medium",
                _ => "low",
            };
            alarms.push(Alarm {
                station: station.clone(),
                id: format!("{station}/PT_{j:03}/HH"),
                priority,
                // Distinct ages from 1 min to about 66 min.
                ts_ns: now - (60 + 13 * g as i64) * 1_000_000_000,
                seq: j as u64 + 1,
            });
        }
    }
    for k in 0..STATIONS {
        let station = format!("s{:02}", k + 1);
        let status = json!({"v":1,"station":station,"state":"online","ts":gaswatch::model::Timestamp(now).to_rfc3339()});
        stations
            .publish_retained(&format!("{PREFIX}/{station}/status"), status.to_string())
            .await;
    }
    for a in &alarms {
        stations
            .publish_retained(
                &format!("{PREFIX}/{}/alarms/active/{}", a.station, a.id),
                alarm_json(a, "raise", "unacked", a.seq),
            )
            .await;
    }
    // Everything above is stored once the broker has passed our marker.
    stations.drain_until_barrier().await;

    // The console, in a detached 220x60 terminal.
    let conf = tempfile::NamedTempFile::new().expect("tmux conf");
    std::fs::write(conf.path(), "set -g remain-on-exit on\n").expect("tmux conf");
    let t = Tmux {
        bin,
        socket: format!("gaswatch-test-{}", std::process::id()),
        conf,
    };
    let port = broker.port().to_string();
    let out = t.cmd(&[
        "new-session",
        "-d",
        "-s",
        "gw",
        "-x",
        "220",
        "-y",
        "60",
        env!("CARGO_BIN_EXE_gaswatch"),
        "dispatch",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--operator",
        "tester",
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");

    let total = STATIONS * PER_STATION;
    let screen = wait_screen(&t, "all stations and alarms", |s| {
        s.contains(&format!("Stations: {STATIONS} ({STATIONS} online)"))
            && s.contains(&format!("Standing alarms: {total} "))
    })
    .await;
    for k in 0..STATIONS {
        let entry = format!("s{:02}:online({PER_STATION})", k + 1);
        assert!(screen.contains(&entry), "{entry} not on screen:\n{screen}");
    }

    // Sorted: priority first (critical first), then age (oldest first).
    let mut expected: Vec<&Alarm> = alarms.iter().collect();
    expected.sort_by(|x, y| {
        rank(y.priority)
            .cmp(&rank(x.priority))
            .then(x.ts_ns.cmp(&y.ts_ns))
            .then(x.id.cmp(&y.id))
    });
    let ids: std::collections::HashSet<&str> = alarms.iter().map(|a| a.id.as_str()).collect();
    let shown = rows(&screen, &ids);
    assert!(
        shown.len() >= 30,
        "rows on screen: {}\n{screen}",
        shown.len()
    );
    let shown_ids: Vec<&str> = shown.iter().map(|r| r.3.as_str()).collect();
    let want_ids: Vec<&str> = expected
        .iter()
        .take(shown.len())
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(shown_ids, want_ids, "row order on screen:\n{screen}");
    for w in shown.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            rank(&a.1) > rank(&b.1) || (a.1 == b.1 && a.2 >= b.2),
            "not sorted by priority then age: {a:?} before {b:?}"
        );
    }
    assert!(shown[0].0, "the first row is selected:\n{screen}");
    assert_eq!(shown.iter().filter(|r| r.0).count(), 1);

    // Ack the selected alarm.
    let top = expected[0];
    t.keys("a");
    let cmd = loop {
        let m = stations
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no command within 30 s; screen:\n{}", t.screen()));
        if m.topic.ends_with("/commands") {
            break m;
        }
    };
    assert_eq!(cmd.topic, format!("{PREFIX}/{}/commands", top.station));
    let c: Value = serde_json::from_slice(&cmd.payload).expect("command JSON");
    assert_eq!(
        (
            c["v"].as_u64(),
            c["action"].as_str(),
            c["operator"].as_str()
        ),
        (Some(1), Some("ack"), Some("tester")),
        "{c}"
    );
    assert_eq!(c["alarm_id"], top.id.as_str());
    let request_id = c["request_id"].as_str().expect("request_id").to_string();

    // The station applies it and answers as gaswatch does.
    let seq = 100;
    stations
        .publish(
            &format!("{PREFIX}/{}/alarms/events", top.station),
            alarm_json(top, "ack", "acked", seq),
        )
        .await;
    stations
        .publish_retained(
            &format!("{PREFIX}/{}/alarms/active/{}", top.station, top.id),
            alarm_json(top, "ack", "acked", seq),
        )
        .await;
    let reply = json!({"v":1,"station":top.station,"request_id":request_id,"alarm_id":top.id,
        "operator":"tester","action":"ack","ok":true,"detail":"","seq":seq,
        "ts":gaswatch::model::Timestamp::now().to_rfc3339(),"ts_ns":gaswatch::model::Timestamp::now().nanos()});
    stations
        .publish(
            &format!("{PREFIX}/{}/replies", top.station),
            reply.to_string(),
        )
        .await;
    let screen = wait_screen(&t, "the acknowledged alarm and the reply", |s| {
        let acked = s
            .lines()
            .any(|l| l.contains(top.id.as_str()) && l.contains("acked") && !l.contains("unacked"));
        acked && s.contains(&format!("{} ack ok by tester", top.id))
    })
    .await;
    // Still the top row (critical, oldest), still selected, still 300 standing.
    let shown = rows(&screen, &ids);
    assert_eq!(shown[0].3, top.id);
    assert!(shown[0].0);
    assert!(screen.contains(&format!("Standing alarms: {total} ")));

    t.keys("q");
}
