//! The engine's inner steps one by one, and the MQTT dispatch path, so a
//! regression in the station-batch number (`benches/engine.rs`) can be
//! located. Run: `cargo bench --bench hot_path`.
//!
//! (Alarm evaluation has its own bench: `benches/alarms.rs`.)
//! - `balance_on_flow`: one flow sample integrated into the open window
//!   (trapezoid, window lookup) for a station of 10 meters;
//! - `mqtt_alarm_encode`: one alarm event to its two spool records (JSON +
//!   record framing): what the router does per alarm;
//! - `mqtt_record_decode`: one spool record back to topic + payload, what the
//!   publisher does per record before sending.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaswatch::config::MeterRole;
use gaswatch::engine::balance::Balance;
use gaswatch::model::{AlarmAction, AlarmEvent, AlarmKind, BalanceResult, Priority, Timestamp};
use gaswatch::sinks::mqtt::payload::{Topics, alarm_records, decode_record};
use std::hint::black_box;
use std::time::Duration;

const N: u64 = 1000;

fn alarms(c: &mut Criterion) {
    let mut g = c.benchmark_group("hot_path");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(N));

    // Balance: 10 meters, 1 s samples, 5 min windows; windows close as time
    // advances, as in the daemon.
    let meters: Vec<(MeterRole, i64)> = (0..10)
        .map(|m| {
            let role = if m == 0 {
                MeterRole::Inlet
            } else {
                MeterRole::Outlet
            };
            (role, 1_500_000_000)
        })
        .collect();
    let mut bal = Balance::new(300_000_000_000, 0.9, &meters);
    let mut closed: Vec<BalanceResult> = Vec::with_capacity(64);
    let mut t = 1_700_000_000_000_000_000i64;
    g.bench_function("balance_on_flow_x1000", |b| {
        b.iter(|| {
            for i in 0..N {
                let m = (i % 10) as usize;
                if m == 0 {
                    t += 1_000_000_000;
                }
                bal.on_flow(m, Timestamp(t), black_box(5000.0 + i as f64), true);
            }
            closed.clear();
            bal.close_due(Timestamp(t), &mut closed);
            black_box(closed.len())
        })
    });

    let topics = Topics::new("gaswatch", "cg01");
    let config = gaswatch::config::Config::from_str_named(
        include_str!("../config/city-gate.toml"),
        std::path::Path::new("config/city-gate.toml"),
    )
    .expect("example config");
    let plan = gaswatch::engine::EnginePlan::compile(&config);
    let def = &plan.alarms[0];
    let ev = AlarmEvent {
        alarm: 0,
        kind: AlarmKind::High,
        action: AlarmAction::Raise,
        priority: Priority::High,
        value: 1760.2,
        limit: 1750.0,
        ts: Timestamp(1_795_821_743_123_000_000),
        seq: 17,
        detail: Default::default(),
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("mqtt_alarm_encode", |b| {
        b.iter(|| black_box(alarm_records(&topics, "cg01", def, black_box(&ev), "kPa")))
    });
    let records = alarm_records(&topics, "cg01", def, &ev, "kPa");
    g.bench_function("mqtt_record_decode", |b| {
        b.iter(|| black_box(decode_record(black_box(&records[0]))))
    });
    g.finish();
}

criterion_group!(benches, alarms);
criterion_main!(benches);
