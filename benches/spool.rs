//! Spool append throughput: 100-byte records with a `sync` (fsync) every
//! 1,000 appends; the same with the fsync on another thread (group commit,
//! as the engine task runs it); the CPU part alone; sequential reads.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaswatch::buffer::{RecordClass, Spool, SpoolConfig};
use std::time::Duration;

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(dir.path(), &SpoolConfig::default()).expect("open");
    let payload = [b'x'; 100];
    let mut g = c.benchmark_group("spool");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1000));
    g.bench_function("append_100B_x1000_then_sync", |b| {
        b.iter(|| {
            let mut last = 0;
            for _ in 0..1000 {
                last = spool
                    .append(RecordClass::Telemetry, &payload)
                    .expect("append");
            }
            spool.sync().expect("sync");
            // Steady state: the sink keeps up, so segments get deleted.
            spool.ack(RecordClass::Telemetry, last).expect("ack");
        })
    });
    // As the engine task does it: the fsyncs of batch n run on another
    // thread (`begin_sync` + `SyncJob::run`) while batch n+1 is appended;
    // each batch is durable before the one after the next starts.
    let dir4 = tempfile::tempdir().expect("tempdir");
    let mut grouped = Spool::open(dir4.path(), &SpoolConfig::default()).expect("open");
    let mut pending: Option<std::thread::JoinHandle<()>> = None;
    g.bench_function("append_100B_x1000_group_commit", |b| {
        b.iter(|| {
            let mut last = 0;
            for _ in 0..1000 {
                last = grouped
                    .append(RecordClass::Telemetry, &payload)
                    .expect("append");
            }
            if let Some(p) = pending.take() {
                p.join().expect("fsync thread");
            }
            let job = grouped.begin_sync().expect("begin_sync");
            pending = Some(std::thread::spawn(move || job.run().expect("fsync")));
            grouped.ack(RecordClass::Telemetry, last).expect("ack");
        })
    });
    if let Some(p) = pending.take() {
        p.join().expect("fsync thread");
    }
    // The CPU part alone: the same appends, no fsync (the difference to the
    // bench above is the disk's fsync latency).
    let dir3 = tempfile::tempdir().expect("tempdir");
    let mut nosync = Spool::open(dir3.path(), &SpoolConfig::default()).expect("open");
    g.bench_function("append_100B_x1000_no_sync", |b| {
        b.iter(|| {
            let mut last = 0;
            for _ in 0..1000 {
                last = nosync
                    .append(RecordClass::Telemetry, &payload)
                    .expect("append");
            }
            nosync.ack(RecordClass::Telemetry, last).expect("ack");
        })
    });
    // Sequential reads as the sink does them (cached reader position).
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut full = Spool::open(dir2.path(), &SpoolConfig::default()).expect("open");
    for _ in 0..200_000 {
        full.append(RecordClass::Telemetry, &payload)
            .expect("append");
    }
    full.sync().expect("sync");
    g.bench_function("read_100B_x1000_sequential", |b| {
        let mut out = Vec::with_capacity(1000);
        let mut after = 0;
        b.iter(|| {
            out.clear();
            full.read(RecordClass::Telemetry, after, 1000, usize::MAX, &mut out)
                .expect("read");
            after = out.last().map_or(0, |r| r.id);
        })
    });
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
