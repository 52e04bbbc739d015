//! The dispatcher console's model with tens of stations and hundreds of
//! standing alarms (issue #5: "without lag"): one event applied to a console
//! holding 300 alarms of 30 stations, the sorted row list a redraw builds,
//! and a late console taking in the whole retained picture (30 statuses and
//! 300 active alarms). Run: `cargo bench --bench dispatch_console`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gaswatch::dispatch::model::{Applied, Console};
use std::hint::black_box;
use std::time::Duration;

const PRIORITIES: [&str; 4] = ["critical", "high", "medium", "low"];

fn alarm(station: usize, j: usize, action: &str, state: &str, seq: u64) -> (String, Vec<u8>) {
    let st = format!("s{station:02}");
    let id = format!("{st}/PT_{j:03}/HH");
    let g = station * 10 + j;
    let payload = serde_json::json!({
        "v": 1, "station": st, "alarm_id": id, "source": format!("PT_{j:03}"), "kind": "HH",
        "priority": PRIORITIES[g % 4], "action": action, "value": 1760.0, "limit": 1750.0,
        "ts_ns": 1_795_821_743_000_000_000i64 - g as i64 * 13_000_000_000, "seq": seq,
        "message": "PT above HH limit 1750 kPa", "state": state, "annunciation": "shown",
        "level": 0, "escalation": "station_operator",
    })
    .to_string()
    .into_bytes();
    (id, payload)
}

/// The retained picture of 30 stations with 10 standing alarms each.
fn retained() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for s in 0..30 {
        let st = format!("s{s:02}");
        v.push((
            format!("gaswatch/{st}/status"),
            format!(r#"{{"v":1,"station":"{st}","state":"online","ts":"x"}}"#).into_bytes(),
        ));
        for j in 0..10 {
            let (id, p) = alarm(s, j, "raise", "unacked", 1);
            v.push((format!("gaswatch/{st}/alarms/active/{id}"), p));
        }
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch_console");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let picture = retained();
    g.bench_function("late_console_takes_30_stations_300_alarms", |b| {
        b.iter(|| {
            let mut c = Console::new("gaswatch");
            for (t, p) in &picture {
                c.apply(t, p, 0);
            }
            black_box(c.alarms.len())
        })
    });
    let mut console = Console::new("gaswatch");
    for (t, p) in &picture {
        console.apply(t, p, 0);
    }
    assert_eq!(console.alarms.len(), 300);
    // Events on a full console: each alarm in turn acknowledged, then raised
    // again, with ever-increasing seq (a new event, never a duplicate); the
    // payload is built outside the measurement.
    let mut k = 0usize;
    g.bench_function("event_into_console_of_300_alarms", |b| {
        b.iter_batched(
            || {
                k += 1;
                let (s, j) = ((k / 10) % 30, k % 10);
                let (action, state) = if (k / 300).is_multiple_of(2) {
                    ("ack", "acked")
                } else {
                    ("raise", "unacked")
                };
                let (_, p) = alarm(s, j, action, state, 1 + k as u64);
                (format!("gaswatch/s{s:02}/alarms/events"), p)
            },
            |(t, p)| {
                let applied = console.apply(&t, &p, 0);
                assert!(matches!(applied, Applied::Event(_)));
                black_box(applied)
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(console.alarms.len(), 300);
    g.bench_function("sorted_rows_of_300_alarms", |b| {
        b.iter(|| black_box(console.rows(false).len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
