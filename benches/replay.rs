//! Replay speed: one day of one station's 1-second data (86,400 rows x 9
//! points) through `gaswatch replay`'s reader + engine, as wide CSV and as
//! line protocol. A month is 30x the day; the target is a month in under a
//! minute (see BENCHMARKS.md).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaswatch::cli::replay::{Replayer, replay_files};
use gaswatch::config::Config;
use gaswatch::engine::EnginePlan;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const STATION: &str = include_str!("../config/city-gate.toml");
const ROWS: i64 = 86_400;
const T0_MS: i64 = 1_767_225_600_000;
const POINTS: [(&str, &str, f64); 9] = [
    ("fc-in", "FT_IN1", 10_000.0),
    ("fc-in", "PT_IN1", 3_500.0),
    ("fc-in", "TT_IN1", 12.0),
    ("plc-out", "FT_OUT1", 6_000.0),
    ("plc-out", "PT_OUT1", 1_500.0),
    ("plc-out", "TT_OUT1", 5.0),
    ("rtu-out2", "FT_OUT2", 4_000.0),
    ("rtu-out2", "PT_OUT2", 1_500.0),
    ("rtu-out2", "TT_OUT2", 5.0),
];

fn files(dir: &Path) -> (PathBuf, PathBuf) {
    let csv = dir.join("day.csv");
    let lp = dir.join("day.lp");
    let mut c = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
    let mut l = std::io::BufWriter::new(std::fs::File::create(&lp).expect("lp"));
    write!(c, "time").expect("w");
    for (_, p, _) in POINTS {
        write!(c, ",{p}").expect("w");
    }
    writeln!(c).expect("w");
    for s in 0..ROWS {
        let t = T0_MS + s * 1000;
        write!(c, "{t}").expect("w");
        let wobble = (s % 60) as f64 * 0.01;
        for (d, p, v) in POINTS {
            write!(c, ",{}", v + wobble).expect("w");
            writeln!(
                l,
                "telemetry,device={d},point={p},station=cg01,unit=x value={},quality=\"good\" {}",
                v + wobble,
                t * 1_000_000
            )
            .expect("w");
        }
        writeln!(c).expect("w");
    }
    (csv, lp)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tmp");
    let (csv, lp) = files(dir.path());
    let config = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    let plan = Arc::new(EnginePlan::compile(&config));
    let mut g = c.benchmark_group("replay_day_1s_9_points");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(ROWS as u64));
    for (name, file) in [("csv", &csv), ("line_protocol", &lp)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut r = Replayer::new(Arc::clone(&plan), Duration::from_secs(1), None, None)
                    .expect("replayer");
                replay_files(
                    &mut r,
                    &plan,
                    std::slice::from_ref(file),
                    gaswatch::cli::replay::ReadOptions {
                        strict: true,
                        ..Default::default()
                    },
                    &indicatif::ProgressBar::hidden(),
                    &mut |_| {},
                )
                .expect("replay");
                assert_eq!(r.summary.inputs as i64, ROWS);
                r.summary.samples
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
