//! Spool tests: recovery (torn tail, flipped byte), ack + restart, the size
//! cap, and a property test against an in-memory model.

use super::*;
use std::fs;
use std::path::{Path, PathBuf};

fn cfg(max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        max_bytes,
        ..SpoolConfig::default()
    }
}

fn read_all(s: &mut Spool, class: RecordClass) -> Vec<Record> {
    let mut out = Vec::new();
    s.read(class, 0, usize::MAX, usize::MAX, &mut out)
        .expect("read");
    out
}

fn payloads(rs: &[Record]) -> Vec<Vec<u8>> {
    rs.iter().map(|r| r.payload.clone()).collect()
}

fn segments(dir: &Path, class: RecordClass) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join(class.as_str()))
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_read_ack_and_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("open");
    for i in 0..10u8 {
        assert_eq!(
            s.append(RecordClass::Telemetry, &[i; 5]).expect("append"),
            u64::from(i) + 1
        );
    }
    assert_eq!(s.append(RecordClass::Alarm, b"a").expect("append"), 1);
    let mut out = Vec::new();
    s.read(RecordClass::Telemetry, 0, 3, usize::MAX, &mut out)
        .expect("read");
    assert_eq!(out.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Sequential read continues (cached cursor), a backwards read re-reads.
    s.read(RecordClass::Telemetry, 3, 2, usize::MAX, &mut out)
        .expect("read");
    assert_eq!(
        out.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    out.clear();
    s.read(RecordClass::Telemetry, 1, 2, usize::MAX, &mut out)
        .expect("read");
    assert_eq!(out.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 3]);
    // Byte limit: at least one record, then stop before exceeding.
    out.clear();
    s.read(RecordClass::Telemetry, 0, 100, 12, &mut out)
        .expect("read");
    assert_eq!(out.len(), 2);
    s.ack(RecordClass::Telemetry, 4).expect("ack");
    assert_eq!(s.stats(RecordClass::Telemetry).records, 6);
    assert_eq!(
        read_all(&mut s, RecordClass::Telemetry)
            .first()
            .map(|r| r.id),
        Some(5)
    );
    assert_eq!(s.stats(RecordClass::Alarm).records, 1);
}

#[test]
fn ack_and_restart_resume_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("open");
        for i in 0..100u32 {
            s.append(RecordClass::Telemetry, format!("t{i}").as_bytes())
                .expect("append");
            s.append(RecordClass::Balance, format!("b{i}").as_bytes())
                .expect("append");
        }
        s.sync().expect("sync");
        s.ack(RecordClass::Telemetry, 60).expect("ack");
        s.ack(RecordClass::Balance, 100).expect("ack");
    }
    let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("reopen");
    let t = read_all(&mut s, RecordClass::Telemetry);
    assert_eq!(
        t.iter().map(|r| r.id).collect::<Vec<_>>(),
        (61..=100).collect::<Vec<_>>()
    );
    assert_eq!(t[0].payload, b"t60");
    assert!(read_all(&mut s, RecordClass::Balance).is_empty());
    assert_eq!(s.stats(RecordClass::Telemetry).records, 40);
    // Ids keep increasing across restarts, even for a fully acked class.
    assert_eq!(s.append(RecordClass::Telemetry, b"x").expect("append"), 101);
    assert_eq!(s.append(RecordClass::Balance, b"y").expect("append"), 101);
}

#[test]
fn fully_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 64 KiB cap -> 8 KiB segments.
    let mut s = Spool::open(dir.path(), &cfg(64 << 10)).expect("open");
    for _ in 0..100 {
        s.append(RecordClass::Alarm, &[7u8; 200]).expect("append");
    }
    let before = segments(dir.path(), RecordClass::Alarm).len();
    assert!(before >= 3, "{before} segments");
    s.ack(RecordClass::Alarm, 100).expect("ack");
    // Only the open segment is left.
    assert_eq!(segments(dir.path(), RecordClass::Alarm).len(), 1);
    assert_eq!(s.stats(RecordClass::Alarm).records, 0);
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("open");
        for i in 0..5u8 {
            s.append(RecordClass::Alarm, &[i; 10]).expect("append");
        }
        s.sync().expect("sync");
    }
    let seg = segments(dir.path(), RecordClass::Alarm)
        .pop()
        .expect("segment");
    let full = fs::metadata(&seg).expect("meta").len();
    // Half of a sixth record: a header and part of the payload.
    let mut bytes = fs::read(&seg).expect("read");
    bytes.extend_from_slice(&[26, 0, 0, 0, 1, 2, 3, 4, 6, 0, 0, 0, 0, 0, 0, 0, 9, 9]);
    fs::write(&seg, &bytes).expect("write");
    let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("reopen");
    assert_eq!(
        fs::metadata(&seg).expect("meta").len(),
        full,
        "torn tail truncated"
    );
    assert_eq!(read_all(&mut s, RecordClass::Alarm).len(), 5);
    assert_eq!(s.append(RecordClass::Alarm, b"next").expect("append"), 6);
    assert_eq!(s.corrupt_records(RecordClass::Alarm), 0);
    let all = read_all(&mut s, RecordClass::Alarm);
    assert_eq!(all.last().map(|r| r.payload.as_slice()), Some(&b"next"[..]));
}

#[test]
fn flipped_byte_skips_only_that_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("open");
        for i in 0..5u8 {
            s.append(RecordClass::Telemetry, &[i; 10]).expect("append");
        }
        s.sync().expect("sync");
    }
    let seg = segments(dir.path(), RecordClass::Telemetry)
        .pop()
        .expect("segment");
    let mut bytes = fs::read(&seg).expect("read");
    // Record 3 (index 2) starts at 2 * (HEADER + 10); flip a payload byte.
    bytes[2 * (HEADER_BYTES + 10) + HEADER_BYTES + 4] ^= 0x40;
    fs::write(&seg, &bytes).expect("write");
    let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("reopen");
    assert_eq!(s.corrupt_records(RecordClass::Telemetry), 1);
    let got = read_all(&mut s, RecordClass::Telemetry);
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![1, 2, 4, 5]
    );
    assert_eq!(payloads(&got)[2], vec![3u8; 10]);
    assert_eq!(s.append(RecordClass::Telemetry, b"x").expect("append"), 6);
}

#[test]
fn cap_drops_oldest_telemetry_never_alarms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = 64 << 10; // 8 KiB segments
    let mut s = Spool::open(dir.path(), &cfg(cap)).expect("open");
    for _ in 0..100 {
        s.append(RecordClass::Alarm, &[1u8; 168]).expect("append"); // 200 B framed
    }
    // Telemetry record i covers the second [i s, i s + 999 ms].
    let sec = 1_000_000_000i64;
    for i in 1..=1000i64 {
        let span = TimeSpan {
            first_ns: i * sec,
            last_ns: i * sec + 999_000_000,
        };
        s.append_spanning(RecordClass::Telemetry, &[2u8; 168], Some(span))
            .expect("append");
    }
    let t = s.stats(RecordClass::Telemetry);
    assert!(t.dropped > 0);
    // The dropped time range is exactly that of the dropped records.
    let dropped = i64::try_from(t.dropped).expect("small");
    assert_eq!(
        s.dropped_span(RecordClass::Telemetry),
        Some(TimeSpan {
            first_ns: sec,
            last_ns: dropped * sec + 999_000_000
        })
    );
    assert_eq!(s.stats(RecordClass::Alarm).records, 100);
    let total = s.stats(RecordClass::Alarm).bytes + t.bytes;
    assert!(total <= cap, "{total} > {cap}");
    let tel = read_all(&mut s, RecordClass::Telemetry);
    assert_eq!(tel.len() as u64 + t.dropped, 1000);
    // The newest telemetry survives, the oldest went.
    assert_eq!(tel.last().map(|r| r.id), Some(1000));
    assert_eq!(tel.first().map(|r| r.id), Some(t.dropped + 1));
    // Alarms alone beyond the cap: never dropped, the spool grows.
    for _ in 0..400 {
        s.append(RecordClass::Alarm, &[1u8; 168]).expect("append");
    }
    assert_eq!(s.stats(RecordClass::Alarm).records, 500);
    assert_eq!(read_all(&mut s, RecordClass::Alarm).len(), 500);
    assert_eq!(s.stats(RecordClass::Telemetry).records, 0);
    drop(s);
    let mut s = Spool::open(dir.path(), &cfg(cap)).expect("reopen");
    assert_eq!(read_all(&mut s, RecordClass::Alarm).len(), 500);
}

#[test]
fn unreadable_watermark_redelivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("open");
        for _ in 0..3 {
            s.append(RecordClass::Balance, b"b").expect("append");
        }
        s.sync().expect("sync");
        s.ack(RecordClass::Balance, 2).expect("ack");
    }
    fs::write(dir.path().join("balance/acked"), b"garbage").expect("write");
    let mut s = Spool::open(dir.path(), &cfg(1 << 20)).expect("reopen");
    assert_eq!(read_all(&mut s, RecordClass::Balance).len(), 3);
}

mod model {
    //! Property: under any sequence of append / ack / sync / crash-after-sync
    //! / reopen, the spool delivers exactly the model's unacknowledged
    //! records, in order, with the model's ids.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize, Vec<u8>),
        /// Acknowledge this fraction (0..=100 %) of the unacknowledged records.
        Ack(usize, u8),
        Sync,
        /// Sync, drop the spool (a crash right after a sync) and reopen.
        CrashReopen,
        Read(usize, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..3usize, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(c, p)| Op::Append(c, p)),
            2 => (0..3usize, 0..=100u8).prop_map(|(c, f)| Op::Ack(c, f)),
            1 => Just(Op::Sync),
            1 => Just(Op::CrashReopen),
            2 => (0..3usize, 0..=100u8).prop_map(|(c, f)| Op::Read(c, f)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn spool_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
            let dir = tempfile::tempdir().expect("tempdir");
            // 64 KiB cap -> 8 KiB segments, so rolling and deletion happen;
            // 120 ops of < 320 framed bytes never reach the cap.
            let mut spool = Spool::open(dir.path(), &cfg(64 << 10)).expect("open");
            let mut unacked: [Vec<(u64, Vec<u8>)>; 3] = Default::default();
            let mut next: [u64; 3] = [1; 3];
            for op in ops {
                match op {
                    Op::Append(c, p) => {
                        let class = RecordClass::ALL[c];
                        let id = spool.append(class, &p).expect("append");
                        prop_assert_eq!(id, next[c]);
                        next[c] += 1;
                        unacked[c].push((id, p));
                    }
                    Op::Ack(c, f) => {
                        let n = unacked[c].len() * usize::from(f) / 100;
                        if n > 0 {
                            let upto = unacked[c][n - 1].0;
                            spool.ack(RecordClass::ALL[c], upto).expect("ack");
                            unacked[c].drain(..n);
                        }
                    }
                    Op::Sync => spool.sync().expect("sync"),
                    Op::CrashReopen => {
                        spool.sync().expect("sync");
                        drop(spool);
                        spool = Spool::open(dir.path(), &cfg(64 << 10)).expect("reopen");
                    }
                    Op::Read(c, f) => {
                        // Read from somewhere inside the unacked range.
                        let class = RecordClass::ALL[c];
                        let skip = unacked[c].len() * usize::from(f) / 100;
                        let after = if skip == 0 { 0 } else { unacked[c][skip - 1].0 };
                        let mut out = Vec::new();
                        spool.read(class, after, 7, usize::MAX, &mut out).expect("read");
                        let want: Vec<(u64, Vec<u8>)> = unacked[c][skip..].iter().take(7).cloned().collect();
                        let got: Vec<(u64, Vec<u8>)> = out.into_iter().map(|r| (r.id, r.payload)).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                for (c, class) in RecordClass::ALL.into_iter().enumerate() {
                    prop_assert_eq!(spool.stats(class).dropped, 0);
                    prop_assert_eq!(spool.stats(class).records, unacked[c].len() as u64);
                }
            }
            for (c, class) in RecordClass::ALL.into_iter().enumerate() {
                let got: Vec<(u64, Vec<u8>)> = read_all(&mut spool, class).into_iter().map(|r| (r.id, r.payload)).collect();
                prop_assert_eq!(&got, &unacked[c]);
            }
        }
    }
}

/// Group commit: the fsyncs of `begin_sync` run on another thread while the
/// spool keeps taking appends, across a segment roll and a deleted segment;
/// everything is there after a restart, in order.
#[test]
fn sync_job_runs_off_the_spool_while_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 4 KiB segments: the appends below roll several of them.
    let mut s = Spool::open(dir.path(), &cfg(32 << 10)).expect("open");
    let payload = |i: u32| format!("record {i:05}").into_bytes();
    let mut next = 0u32;
    let mut jobs = Vec::new();
    for round in 0..5 {
        for _ in 0..200 {
            s.append(RecordClass::Alarm, &payload(next))
                .expect("append");
            next += 1;
        }
        let job = s.begin_sync().expect("begin_sync");
        assert!(!job.is_empty(), "round {round}: appends owe an fsync");
        jobs.push(std::thread::spawn(move || job.run()));
    }
    assert!(
        s.begin_sync().expect("begin_sync").is_empty(),
        "nothing appended since the last begin_sync"
    );
    // A job that failed re-arms the spool: the next one syncs again with
    // nothing new appended.
    s.sync_failed();
    assert!(
        !s.begin_sync().expect("begin_sync").is_empty(),
        "after a failed sync the open segment is synced again"
    );
    for j in jobs {
        j.join().expect("thread").expect("fsync");
    }
    drop(s);
    let mut s = Spool::open(dir.path(), &cfg(32 << 10)).expect("reopen");
    let got = payloads(&read_all(&mut s, RecordClass::Alarm));
    let want: Vec<Vec<u8>> = (0..next).map(payload).collect();
    assert_eq!(got, want);
}
