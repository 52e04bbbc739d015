//! The engine's inner steps one by one, and the MQTT dispatch path, so a
//! regression in the station-batch number (`benches/engine.rs`) can be
//! located. Run: `cargo bench --bench hot_path`.
//!
//! - `alarm_evaluate`: one HH/H/L/LL check of a good value (no transition,
//!   the steady state);
//! - `alarm_evaluate_toggle`: a value crossing the limit on every call (a
//!   raise or clear event pushed each time, into a reused vector);
//! - `balance_on_flow`: one flow sample integrated into the open window
//!   (trapezoid, window lookup) for a station of 10 meters;
//! - `mqtt_alarm_encode`: one alarm event to its two spool records (JSON +
//!   record framing): what the router does per alarm;
//! - `mqtt_record_decode`: one spool record back to topic + payload, what the
//!   publisher does per record before sending.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaswatch::config::MeterRole;
use gaswatch::engine::AlarmDef;
use gaswatch::engine::alarms::AlarmStates;
use gaswatch::engine::balance::Balance;
use gaswatch::model::{AlarmAction, AlarmEvent, AlarmKind, BalanceResult, Priority, Timestamp};
use gaswatch::sinks::mqtt::payload::{Topics, alarm_records, decode_record};
use std::hint::black_box;
use std::time::Duration;

const N: u64 = 1000;

fn def(kind: AlarmKind, limit: f64) -> AlarmDef {
    AlarmDef {
        id: format!("cg01/PT_OUT1/{}", kind.code()),
        source: "PT_OUT1".into(),
        kind,
        priority: Priority::High,
        limit,
        deadband: 1.0,
    }
}

fn alarms(c: &mut Criterion) {
    let mut g = c.benchmark_group("hot_path");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(N));

    let defs = [
        def(AlarmKind::HighHigh, 1800.0),
        def(AlarmKind::High, 1750.0),
        def(AlarmKind::Low, 1200.0),
        def(AlarmKind::LowLow, 1100.0),
    ];
    let mut states = AlarmStates::new(defs.len(), 0);
    let mut out: Vec<AlarmEvent> = Vec::with_capacity(2 * N as usize);
    g.bench_function("alarm_evaluate_x1000", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..N {
                let a = (i % 4) as usize;
                let v = 1500.0 + (i % 7) as f64;
                states.evaluate(
                    a as u32,
                    &defs[a],
                    black_box(v),
                    Timestamp(i as i64),
                    &mut out,
                );
            }
            black_box(out.len())
        })
    });
    let mut toggle = AlarmStates::new(1, 0);
    g.bench_function("alarm_evaluate_toggle_x1000", |b| {
        b.iter(|| {
            out.clear();
            for i in 0..N {
                let v = if i % 2 == 0 { 1760.0 } else { 1700.0 };
                toggle.evaluate(0, &defs[1], black_box(v), Timestamp(i as i64), &mut out);
            }
            black_box(out.len())
        })
    });

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
    let ev = AlarmEvent {
        alarm: 0,
        kind: AlarmKind::High,
        action: AlarmAction::Raise,
        priority: Priority::High,
        value: 1760.2,
        limit: 1750.0,
        ts: Timestamp(1_795_821_743_123_000_000),
        seq: 17,
    };
    g.throughput(Throughput::Elements(1));
    g.bench_function("mqtt_alarm_encode", |b| {
        b.iter(|| {
            black_box(alarm_records(
                &topics,
                "cg01",
                &defs[1],
                black_box(&ev),
                "kPa",
            ))
        })
    });
    let records = alarm_records(&topics, "cg01", &defs[1], &ev, "kPa");
    g.bench_function("mqtt_record_decode", |b| {
        b.iter(|| black_box(decode_record(black_box(&records[0]))))
    });
    g.finish();
}

criterion_group!(benches, alarms);
criterion_main!(benches);
