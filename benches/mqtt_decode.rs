//! MQTT payload decoding: a JSON payload through the `JsonMapper` (parse,
//! pointer lookups, scaling, payload timestamp) and a Sparkplug B NDATA
//! through the host side (protobuf decode, alias resolution, seq check).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaswatch::config::Config;
use gaswatch::engine::EnginePlan;
use gaswatch::model::{Quality, Timestamp};
use gaswatch::sources::mqtt::json::{JsonMapper, Mapped};
use gaswatch::sources::mqtt::sparkplug::SparkplugHost;
use gaswatch::sources::mqtt::spb::{self, proto};
use prost::Message;
use std::fmt::Write;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const POINTS: usize = 10;

fn config(format: &str) -> Config {
    let mut t =
        String::from("[station]\nid = \"cg01\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n");
    if format == "json" {
        t.push_str("[[mqtt_sources]]\nid = \"j\"\nhost = \"h\"\nformat = \"json\"\ntopics = [\"loggers/{station}/{device}/telemetry\"]\ntimestamp = { path = \"/ts\", format = \"rfc3339\" }\n");
        for i in 0..POINTS {
            let _ = write!(
                t,
                "[[mqtt_sources.points]]\nname = \"P{i}\"\ndevice = \"logger7\"\npath = \"/data/{i}/value\"\nscale = 1000.0\nexpected_interval = \"10s\"\n"
            );
        }
    } else {
        t.push_str("[[mqtt_sources]]\nid = \"s\"\nhost = \"h\"\nformat = \"sparkplug_b\"\ngroup_id = \"G\"\n");
        for i in 0..POINTS {
            let _ = write!(
                t,
                "[[mqtt_sources.points]]\nname = \"P{i}\"\nnode = \"n1\"\nmetric = \"M{i}\"\nexpected_interval = \"10s\"\n"
            );
        }
    }
    Config::from_str_named(&t, Path::new("bench.toml")).expect("bench config")
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("mqtt_decode");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));

    let cfg = config("json");
    let plan = EnginePlan::compile(&cfg);
    let mut mapper = JsonMapper::new(&cfg.mqtt_sources[0], &plan);
    let mut json = String::from("{\"ts\":\"2024-05-01T08:00:00.123+08:00\",\"data\":[");
    for i in 0..POINTS {
        let _ = write!(
            json,
            "{}{{\"value\":{}.{},\"unit\":\"MPa\"}}",
            if i > 0 { "," } else { "" },
            i,
            1234 + i
        );
    }
    json.push_str("]}");
    let mut out = Mapped::default();
    g.bench_function("json_10_fields", |b| {
        b.iter(|| {
            mapper.map(
                "loggers/cg01/logger7/telemetry",
                black_box(json.as_bytes()),
                Timestamp(0),
                &mut out,
            );
            assert_eq!(out.batches[0].1.len(), POINTS);
        })
    });

    let cfg = config("spb");
    let plan = EnginePlan::compile(&cfg);
    let mut host = SparkplugHost::new(&cfg.mqtt_sources[0], &plan);
    let mut birth = vec![spb::bdseq_metric(0, 0)];
    for i in 0..POINTS {
        birth.push(spb::double_metric(
            Some(&format!("M{i}")),
            i as u64 + 1,
            1.0,
            Quality::Good,
            1,
        ));
    }
    let birth = proto::Payload {
        seq: Some(0),
        metrics: birth,
        ..Default::default()
    }
    .encode_to_vec();
    host.handle("spBv1.0/G/NBIRTH/n1", &birth, Timestamp(0), &mut out);
    let payloads: Vec<Vec<u8>> = (0..256u64)
        .map(|s| {
            let metrics = (0..POINTS)
                .map(|i| {
                    spb::double_metric(
                        None,
                        i as u64 + 1,
                        s as f64 + i as f64,
                        Quality::Good,
                        1_700_000_000_000 + s,
                    )
                })
                .collect();
            proto::Payload {
                timestamp: Some(1_700_000_000_000),
                seq: Some((s + 1) % 256),
                metrics,
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let mut k = 0usize;
    g.bench_function("sparkplug_ndata_10_metrics", |b| {
        b.iter(|| {
            host.handle(
                "spBv1.0/G/NDATA/n1",
                black_box(&payloads[k % 256]),
                Timestamp(0),
                &mut out,
            );
            k += 1;
            assert_eq!(out.batches[0].1.len(), POINTS);
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
