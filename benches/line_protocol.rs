//! Line-protocol encoding throughput into a reused buffer: `encode_sample`
//! (escapes every name) and the router's path with per-tag prefixes.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaswatch::engine::TagInfo;
use gaswatch::model::{DeviceId, Quality, Reason, Sample, TagId, Timestamp};
use gaswatch::sinks::influxdb::{SamplePrefixes, encode_sample};
use std::hint::black_box;
use std::time::Duration;

fn encode(c: &mut Criterion) {
    let tags: Vec<TagInfo> = (0..100)
        .map(|i| TagInfo {
            name: format!("PT_OUT{i}"),
            unit: "kPa".into(),
            device: DeviceId(0),
            stale_after_ns: 0,
        })
        .collect();
    let samples: Vec<Sample> = (0..1000)
        .map(|i| Sample {
            tag: TagId(i % 100),
            value: 4000.0 + f64::from(i) * 0.123_456,
            quality: Quality::Good,
            reason: Reason::None,
            ts: Timestamp(1_700_000_000_000_000_000 + i64::from(i) * 1_000_000_000),
        })
        .collect();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut g = c.benchmark_group("line_protocol");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(samples.len() as u64));
    g.bench_function("encode_sample_x1000", |b| {
        b.iter(|| {
            buf.clear();
            for s in &samples {
                encode_sample(&mut buf, "cg01", &tags[s.tag.0 as usize], "rtu-inlet-1", s);
            }
            black_box(buf.len())
        })
    });
    // As the router does it: each tag's measurement and tags escaped once.
    let mut prefixes = SamplePrefixes::default();
    for t in &tags {
        prefixes.push("cg01", t, "rtu-inlet-1");
    }
    g.bench_function("encode_sample_prefixed_x1000", |b| {
        b.iter(|| {
            buf.clear();
            for s in &samples {
                prefixes.encode(&mut buf, s);
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
