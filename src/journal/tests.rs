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

fn small(segment_bytes: u64) -> Rotation {
    Rotation {
        segment_bytes,
        segment_age_ns: i64::MAX,
        retention_ns: i64::MAX,
        max_bytes: u64::MAX,
    }
}

fn append_events(j: &mut Journal, events: impl IntoIterator<Item = Entry>) {
    j.entries.clear();
    j.entries.extend(events);
    j.write_entries().expect("append");
}

fn state_of(rec: &Recovered) -> (u64, BTreeMap<String, SavedAlarm>) {
    (rec.seq, rec.alarms.clone())
}

#[test]
fn rotation_by_size_starts_each_segment_with_a_snapshot_and_reads_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alarms").join("journal.jsonl");
    let (mut j, rec) = Journal::open_with(&path, small(600), Timestamp(0)).expect("open");
    assert_eq!((rec.seq, rec.segments), (0, 1));
    let mut want = Vec::new();
    for seq in 1..=40u64 {
        let id = format!("s/P{}/H", seq % 3);
        let (action, state) = if seq % 2 == 1 {
            ("raise", "unacked")
        } else {
            ("clear", "rtn_unacked")
        };
        let e = event(seq, &id, action, state);
        want.push(e.clone());
        append_events(&mut j, [e]);
        j.maintain(Timestamp(seq as i64)).expect("maintain");
    }
    j.sync().expect("sync");
    let archives = j.archives().to_vec();
    assert!(archives.len() >= 5, "{archives:?}");
    assert_eq!(
        archives.iter().map(|a| a.number).collect::<Vec<_>>(),
        (1..=archives.len() as u64).collect::<Vec<_>>()
    );
    // Every segment after the first begins with a snapshot.
    for a in archives
        .iter()
        .skip(1)
        .map(|a| a.path.clone())
        .chain([path.clone()])
    {
        let (entries, _) = read_entries_of(&a);
        assert!(
            matches!(entries.first(), Some(Entry::Snapshot { .. })),
            "{} starts with {:?}",
            a.display(),
            entries.first()
        );
    }
    // History across segments: every event once, in order, no snapshots.
    let (all, skipped) = read_entries(&path).expect("read");
    assert_eq!(skipped, 0);
    let events: Vec<Entry> = query(&all, None, None).into_iter().cloned().collect();
    assert_eq!(events, want);
    let tracked = (j.tracked.seq, j.tracked.alarms.clone());
    drop(j);
    let (_, rec) = Journal::open_with(&path, small(600), Timestamp(41)).expect("reopen");
    assert_eq!(state_of(&rec), tracked);
    assert_eq!(rec.seq, 40);
    assert_eq!(rec.segments, archives.len() + 1);
}

fn read_entries_of(p: &Path) -> (Vec<Entry>, usize) {
    let mut f = File::open(p).expect("open segment");
    segments::read_from(&mut f).expect("read segment")
}

#[test]
fn restart_after_retention_deleted_old_segments_restores_the_same_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.jsonl");
    let (mut j, _) = Journal::open_with(&path, small(4096), Timestamp(0)).expect("open");
    // A: raised early, acked, then never touched again (its state lives
    // only in old segments and the snapshots). B: many transitions.
    append_events(&mut j, [event(1, "s/A/HH", "raise", "unacked")]);
    append_events(&mut j, [event(2, "s/A/HH", "ack", "acked")]);
    j.maintain(Timestamp(10)).expect("maintain");
    for seq in 3..=400u64 {
        let (action, state) = if seq % 2 == 1 {
            ("raise", "unacked")
        } else {
            ("clear", "rtn_unacked")
        };
        append_events(&mut j, [event(seq, "s/B/H", action, state)]);
        j.maintain(Timestamp(seq as i64)).expect("maintain");
    }
    j.sync().expect("sync");
    let full = (j.tracked.seq, j.tracked.alarms.clone());
    let before = j.archives().len();
    assert!(before >= 8, "{before} archives");
    // A retention that keeps only about two segments' worth.
    j.rotation.max_bytes = 3 * 4096;
    j.maintain(Timestamp(500)).expect("retention");
    let after = j.archives().to_vec();
    assert!(after.len() < before && after.len() <= 3, "{after:?}");
    assert!(
        !archive_path(&path, 1).exists(),
        "the oldest segment is deleted"
    );
    drop(j);
    let (_, rec) = Journal::open_with(&path, small(4096), Timestamp(501)).expect("reopen");
    assert_eq!(state_of(&rec), full);
    assert_eq!(rec.alarms["s/A/HH"].state, AlarmState::Acked);
    assert_eq!(rec.alarms["s/A/HH"].raised_at, Timestamp(1_000_000_000));
    assert_eq!(rec.seq, 400);
}

#[test]
fn retention_by_age_deletes_segments_whose_last_entry_is_too_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.jsonl");
    let hour = 3_600_000_000_000i64;
    let rot = Rotation {
        segment_bytes: u64::MAX,
        segment_age_ns: hour,
        retention_ns: 5 * hour,
        max_bytes: u64::MAX,
    };
    let (mut j, _) = Journal::open_with(&path, rot, Timestamp(0)).expect("open");
    for h in 1..=10i64 {
        append_events(&mut j, [event(h as u64, "s/A/H", "raise", "unacked")]);
        // One rotation per hour (age), retention applied each time.
        assert!(j.maintain(Timestamp(h * hour)).expect("maintain"));
    }
    let kept: Vec<u64> = j.archives().iter().map(|a| a.number).collect();
    assert_eq!(
        kept,
        [5, 6, 7, 8, 9, 10],
        "closed at hours 5..=10 are within 5 h of hour 10"
    );
    // Quiet: an age-due segment holding only its snapshot is not rotated.
    assert!(!j.maintain(Timestamp(12 * hour)).expect("maintain"));
    let kept: Vec<u64> = j.archives().iter().map(|a| a.number).collect();
    assert_eq!(
        kept,
        [7, 8, 9, 10],
        "closed at hours 7..=10 are within 5 h of hour 12"
    );
}

#[test]
fn an_unfinished_rotation_is_completed_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.jsonl");
    let (mut j, _) = Journal::open_with(&path, small(u64::MAX), Timestamp(0)).expect("open");
    append_events(
        &mut j,
        [
            event(1, "s/A/H", "raise", "unacked"),
            event(2, "s/A/H", "ack", "acked"),
        ],
    );
    j.sync().expect("sync");
    drop(j);
    // Crash after the current segment was renamed, before the new one was
    // renamed into place: a temp file and no current segment.
    std::fs::rename(&path, archive_path(&path, 1)).expect("rename");
    std::fs::write(segments::tmp_path(&path), b"{\"type\":\"snap").expect("tmp");
    let (j, rec) = Journal::open_with(&path, small(u64::MAX), Timestamp(9)).expect("reopen");
    assert!(!segments::tmp_path(&path).exists());
    assert_eq!(rec.alarms["s/A/H"].state, AlarmState::Acked);
    assert_eq!(rec.seq, 2);
    drop(j);
    let (entries, _) = read_entries_of(&path);
    assert!(matches!(
        entries.as_slice(),
        [Entry::Snapshot { seq: 2, .. }]
    ));
    // Deleting the closed segment changes nothing now.
    std::fs::remove_file(archive_path(&path, 1)).expect("rm");
    let (_, again) = Journal::open_with(&path, small(u64::MAX), Timestamp(10)).expect("reopen");
    assert_eq!(state_of(&again), state_of(&rec));
}

#[test]
fn command_request_ids_are_remembered_across_segments_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.jsonl");
    let (mut j, _) = Journal::open_with(&path, small(u64::MAX), Timestamp(0)).expect("open");
    assert!(j.first_delivery("r1"));
    assert!(!j.first_delivery("r1"), "the same delivery again");
    append_events(
        &mut j,
        [Entry::Command {
            ts_ns: 5,
            request_id: "r1".into(),
            alarm_id: "s/A/H".into(),
            operator: "wang".into(),
            action: "ack".into(),
            ok: false,
            error: Some("unknown_alarm".into()),
            detail: String::new(),
            seq: None,
        }],
    );
    j.rotate(Timestamp(6)).expect("rotate");
    j.sync().expect("sync");
    drop(j);
    let (mut j, _) = Journal::open_with(&path, small(u64::MAX), Timestamp(7)).expect("reopen");
    assert!(!j.first_delivery("r1"), "journaled before the restart");
    assert!(j.first_delivery("r2"));
}

#[test]
fn archive_names_are_numbered_beside_the_current_segment() {
    let p = Path::new("/var/lib/gw/alarms/journal.jsonl");
    assert_eq!(
        archive_path(p, 12),
        Path::new("/var/lib/gw/alarms/journal.000012.jsonl")
    );
    assert_eq!(
        segments::tmp_path(p),
        Path::new("/var/lib/gw/alarms/journal.jsonl.tmp")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let active = dir.path().join("journal.jsonl");
    for name in [
        "journal.000002.jsonl",
        "journal.000010.jsonl",
        "journal.jsonl.tmp",
        "journal.x1.jsonl",
        "other.000001.jsonl",
        "journal.jsonl",
    ] {
        std::fs::write(dir.path().join(name), b"").expect("write");
    }
    let found: Vec<u64> = list_archives(&active)
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(found, [2, 10]);
}

mod model {
    //! The journal against a model: whatever the rotations and retention
    //! deletions, a restart restores what applying every event gives.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Event { alarm: u8, raise: bool },
        Command,
        Maintain { advance_s: u16 },
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..6, any::<bool>()).prop_map(|(alarm, raise)| Op::Event { alarm, raise }),
            1 => Just(Op::Command),
            3 => (0u16..4000).prop_map(|advance_s| Op::Maintain { advance_s }),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn restart_restores_the_model_state(ops in proptest::collection::vec(op(), 1..120)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("journal.jsonl");
            let rot = Rotation {
                segment_bytes: 1500,
                segment_age_ns: 3_600_000_000_000,
                retention_ns: 7_200_000_000_000,
                max_bytes: 6000,
            };
            let mut now = 0i64;
            let (mut j, _) = Journal::open_with(&path, rot, Timestamp(now)).expect("open");
            let mut model = Tracked::default();
            let mut seq = 0u64;
            let mut req = 0u32;
            for op in ops {
                match op {
                    Op::Event { alarm, raise } => {
                        seq += 1;
                        let (action, state) = if raise { ("raise", "unacked") } else { ("clear", "normal") };
                        let mut e = event(seq, &format!("s/P{alarm}/H"), action, state);
                        if let Entry::Event { ts_ns, .. } = &mut e {
                            *ts_ns = now;
                        }
                        model.apply(&e);
                        append_events(&mut j, [e]);
                    }
                    Op::Command => {
                        req += 1;
                        let id = format!("r{req}");
                        prop_assert!(j.first_delivery(&id));
                        append_events(&mut j, [Entry::Command {
                            ts_ns: now, request_id: id, alarm_id: "s/P0/H".into(),
                            operator: "op".into(), action: "ack".into(), ok: false,
                            error: Some("wrong_state".into()), detail: String::new(), seq: None,
                        }]);
                    }
                    Op::Maintain { advance_s } => {
                        now += i64::from(advance_s) * 1_000_000_000;
                        j.maintain(Timestamp(now)).expect("maintain");
                    }
                    Op::Restart => {
                        j.sync().expect("sync");
                        drop(j);
                        let (nj, rec) = Journal::open_with(&path, rot, Timestamp(now)).expect("reopen");
                        prop_assert_eq!(rec.seq, model.seq);
                        prop_assert_eq!(&rec.alarms, &model.alarms);
                        j = nj;
                    }
                }
            }
            j.sync().expect("sync");
            drop(j);
            let (_, rec) = Journal::open_with(&path, rot, Timestamp(now)).expect("reopen");
            prop_assert_eq!(rec.seq, model.seq);
            prop_assert_eq!(&rec.alarms, &model.alarms);
        }
    }
}

#[test]
fn begin_sync_hands_over_once_and_again_after_a_failed_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.jsonl");
    let (mut j, _) = Journal::open(&path).expect("open");
    assert!(j.begin_sync().expect("begin").is_none(), "nothing appended");
    j.entries = vec![event(1, "s/A/H", "raise", "unacked")];
    j.write_entries().expect("append");
    let job = j
        .begin_sync()
        .expect("begin")
        .expect("appended: a sync is owed");
    assert!(
        j.begin_sync().expect("begin").is_none(),
        "the running job covers it"
    );
    job.run().expect("fsync on the duplicate handle");
    // A failed run re-arms the journal: the next sync runs with no new entry.
    j.sync_failed();
    j.begin_sync()
        .expect("begin")
        .expect("owed again")
        .run()
        .expect("fsync");
    drop(j);
    let (_, rec) = Journal::open(&path).expect("reopen");
    assert_eq!((rec.seq, rec.entries), (1, 1));
}

#[test]
fn rotation_due_agrees_with_maintain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.jsonl");
    let (mut j, _) = Journal::open_with(&path, small(1), Timestamp(0)).expect("open");
    assert!(!j.rotation_due(Timestamp(0)), "empty segment: never cut");
    j.entries = vec![event(1, "s/A/H", "raise", "unacked")];
    j.write_entries().expect("append");
    assert!(j.rotation_due(Timestamp(0)));
    assert!(j.maintain(Timestamp(0)).expect("maintain"));
    assert!(
        !j.rotation_due(Timestamp(0)),
        "fresh segment holds only its snapshot"
    );
}
