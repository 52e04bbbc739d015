use super::*;

#[allow(clippy::too_many_arguments)]
fn ev(
    station: &str,
    id: &str,
    kind: &str,
    prio: &str,
    action: &str,
    state: &str,
    seq: u64,
    ts: i64,
) -> Vec<u8> {
    serde_json::json!({
        "v": 1, "station": station, "alarm_id": id, "source": "x", "kind": kind,
        "priority": prio, "action": action, "state": state, "annunciation": "shown",
        "level": 0, "escalation": "station_operator", "ts_ns": ts, "seq": seq, "message": "m"
    })
    .to_string()
    .into_bytes()
}

#[test]
fn dedupes_sorts_by_priority_then_age_and_tracks_stations() {
    let mut c = Console::new("gw");
    let status = br#"{"v":1,"station":"s1","state":"online","ts":"x"}"#;
    assert!(matches!(
        c.apply("gw/s1/status", status, 0),
        Applied::Status { online: true, .. }
    ));
    let a = ev("s1", "s1/P/H", "H", "medium", "raise", "unacked", 1, 10);
    let b = ev("s1", "s1/P/HH", "HH", "high", "raise", "unacked", 2, 20);
    let d = ev("s2", "s2/D/DOOR", "DOOR", "low", "raise", "unacked", 1, 5);
    assert!(matches!(
        c.apply("gw/s1/alarms/events", &a, 1),
        Applied::Event(_)
    ));
    assert!(matches!(
        c.apply("gw/s1/alarms/events", &b, 1),
        Applied::Event(_)
    ));
    assert_eq!(c.apply("gw/s1/alarms/events", &a, 1), Applied::Duplicate);
    c.apply("gw/s2/alarms/active/s2/D/DOOR", &d, 1);
    let ids: Vec<String> = c
        .rows(false)
        .into_iter()
        .map(|r| r.alarm.alarm_id.clone())
        .collect();
    assert_eq!(ids, ["s1/P/HH", "s1/P/H", "s2/D/DOOR"]);
    assert_eq!(c.stations["s1"].alarms, 2);
    assert!(c.station_online("s1", 50, 90));
    assert!(
        !c.station_online("s1", 100, 90),
        "no heartbeat for 3 periods"
    );
    assert!(!c.station_online("s2", 1, 90), "never said online");
    // Ack then return to normal: gone; the clear of the retained state too.
    c.apply(
        "gw/s1/alarms/events",
        &ev("s1", "s1/P/H", "H", "medium", "ack", "acked", 3, 30),
        2,
    );
    assert_eq!(c.alarms["s1/P/H"].state, "acked");
    c.apply(
        "gw/s1/alarms/events",
        &ev("s1", "s1/P/H", "H", "medium", "clear", "normal", 4, 40),
        2,
    );
    assert!(!c.alarms.contains_key("s1/P/H"));
    c.apply("gw/s2/alarms/active/s2/D/DOOR", b"", 3);
    assert_eq!(c.alarms.len(), 1);
    assert_eq!(c.duplicates, 1);
}

#[test]
fn flood_children_collapse_under_their_parent() {
    let mut c = Console::new("gw");
    c.apply(
        "gw/s1/alarms/events",
        &ev(
            "s1",
            "s1/system/FLOOD",
            "FLOOD",
            "high",
            "raise",
            "unacked",
            11,
            11,
        ),
        0,
    );
    for i in 0..5u64 {
        let mut v: serde_json::Value = serde_json::from_slice(&ev(
            "s1",
            &format!("s1/P{i}/H"),
            "H",
            "medium",
            "raise",
            "unacked",
            12 + i,
            12,
        ))
        .unwrap();
        v["flood_parent"] = 11.into();
        c.apply("gw/s1/alarms/events", v.to_string().as_bytes(), 0);
    }
    let rows = c.rows(false);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].alarm.kind.as_str(), rows[0].children),
        ("FLOOD", 5)
    );
    // After an ack the FLOOD's seq moves on; the group stays.
    c.apply(
        "gw/s1/alarms/events",
        &ev(
            "s1",
            "s1/system/FLOOD",
            "FLOOD",
            "high",
            "ack",
            "acked",
            20,
            20,
        ),
        0,
    );
    assert_eq!(c.rows(false)[0].children, 5);
    assert_eq!(c.rows(true).len(), 6);
}

#[test]
fn bad_payloads_are_ignored_not_fatal() {
    let mut c = Console::new("gw");
    assert!(matches!(
        c.apply("gw/s1/alarms/events", b"{", 0),
        Applied::Ignored(_)
    ));
    assert!(matches!(
        c.apply("other/s1/status", b"{}", 0),
        Applied::Ignored(_)
    ));
    assert_eq!(c.ignored, 2);
}

#[test]
fn station_counts_follow_every_change() {
    let mut c = Console::new("gw");
    let mut seq = 0;
    // Raise, ack, clear (rtn -> normal), retained delete, re-raise, in a
    // deterministic shuffle over 3 stations x 4 alarms.
    for step in 0..200u64 {
        let st = format!("s{}", step % 3);
        let id = format!("{st}/P{}/H", (step * 7) % 4);
        seq += 1;
        let (action, state) = match (step * 5) % 4 {
            0 => ("raise", "unacked"),
            1 => ("ack", "acked"),
            2 => ("clear", "normal"),
            _ => ("clear", "rtn_unacked"),
        };
        let e = ev(&st, &id, "H", "high", action, state, seq, seq as i64);
        if step % 11 == 0 {
            c.apply(&format!("gw/{st}/alarms/active/{id}"), b"", 0);
        } else if step % 2 == 0 {
            c.apply(&format!("gw/{st}/alarms/events"), &e, 0);
        } else {
            c.apply(&format!("gw/{st}/alarms/active/{id}"), &e, 0);
        }
        for (name, v) in &c.stations {
            let want = c.alarms.values().filter(|a| &a.station == name).count();
            assert_eq!(v.alarms, want, "step {step}, station {name}");
        }
    }
    assert!(!c.alarms.is_empty());
}
