//! Alarm evaluation per sample: the steady state (value inside its limits,
//! no event) and a transition each sample (raise/clear alternating, the
//! events pushed into a reused Vec), plus the periodic tick over 1,000
//! alarms. Run: `cargo bench --bench alarms`.

use criterion::{Criterion, criterion_group, criterion_main};
use gaswatch::engine::alarms::AlarmStates;
use gaswatch::engine::{AlarmDef, AlarmMgmt, AlarmPolicy};
use gaswatch::model::{AlarmKind, Priority, Timestamp};
use std::hint::black_box;
use std::time::Duration;

fn defs(n: usize) -> Vec<AlarmDef> {
    (0..n)
        .map(|i| AlarmDef {
            id: format!("b/P{i}/H"),
            source: format!("P{i}"),
            kind: AlarmKind::High,
            priority: Priority::Medium,
            limit: 100.0,
            deadband: 2.0,
            mgmt: AlarmMgmt {
                realarm_ns: 60_000_000_000,
                ..AlarmMgmt::default()
            },
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let policy = AlarmPolicy::default();
    let d = defs(1000);
    let mut g = c.benchmark_group("alarms");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut st = AlarmStates::with_policy(d.len(), 0, &policy);
    let mut out = Vec::with_capacity(1024);
    let mut t = 0i64;
    g.bench_function("evaluate_steady_per_sample", |b| {
        b.iter(|| {
            t += 1_000_000;
            st.evaluate(
                black_box(7),
                &d,
                &policy,
                None,
                black_box(50.0),
                Timestamp(t),
                &mut out,
            );
        })
    });
    let mut st = AlarmStates::with_policy(d.len(), 0, &policy);
    let mut v = 0.0;
    g.bench_function("evaluate_transition_per_sample", |b| {
        b.iter(|| {
            t += 1_000_000;
            v = if v > 100.0 { 50.0 } else { 150.0 };
            st.evaluate(
                black_box(7),
                &d,
                &policy,
                None,
                black_box(v),
                Timestamp(t),
                &mut out,
            );
            out.clear();
        })
    });
    let mut st = AlarmStates::with_policy(d.len(), 0, &policy);
    for i in 0..d.len() as u32 {
        st.evaluate(i, &d, &policy, None, 150.0, Timestamp(0), &mut out);
    }
    out.clear();
    let mut health = Vec::new();
    g.bench_function("tick_1000_alarms", |b| {
        b.iter(|| {
            t += 200_000_000;
            st.tick(&d, &policy, None, Timestamp(t), &mut out, &mut health);
            out.clear();
            health.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
