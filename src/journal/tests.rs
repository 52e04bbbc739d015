use super::*;

fn event(seq: u64, id: &str, action: &str, state: &str) -> Entry {
    Entry::Event {
        seq,
        ts_ns: seq as i64 * 1_000_000_000,
        alarm_id: id.into(),
        kind: "H".into(),
        priority: "high".into(),
        action: action.into(),
        state: state.into(),
        annunciation: "shown".into(),
        shelved_until_ns: None,
        level: 0,
        realarms: 0,
        repeats: 1,
        chattering: false,
        flood_parent: None,
        value: Some(1.0),
    }
}

#[test]
fn recovers_last_state_and_seq_and_skips_torn_and_bad_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.jsonl");
    let mut text = Vec::new();
    for e in [
        event(7, "s/A/H", "raise", "unacked"),
        event(8, "s/B/H", "raise", "unacked"),
        event(9, "s/A/H", "ack", "acked"),
    ] {
        push_line(&mut text, &e);
    }
    text.extend_from_slice(b"not json\n{\"type\":\"event\",\"seq\":10");
    std::fs::write(&path, &text).expect("write");
    let (mut j, rec) = Journal::open(&path).expect("open");
    assert_eq!((rec.seq, rec.skipped, rec.entries), (9, 2, 3));
    assert_eq!(rec.alarms["s/A/H"].state, AlarmState::Acked);
    assert_eq!(rec.alarms["s/A/H"].raised_at, Timestamp(7_000_000_000));
    assert_eq!(rec.alarms["s/B/H"].state, AlarmState::Unacked);
    // The next append starts on its own line after the torn one.
    let mut line = Vec::new();
    push_line(&mut line, &event(10, "s/B/H", "clear", "rtn_unacked"));
    j.file.write_all(&line).expect("append");
    j.sync().expect("sync");
    drop(j);
    let (_, rec) = Journal::open(&path).expect("reopen");
    assert_eq!((rec.seq, rec.skipped, rec.entries), (10, 2, 4));
    assert_eq!(rec.alarms["s/B/H"].state, AlarmState::RtnUnacked);
}
