//! Engine hot path: decode + quality + alarms + balance for a whole station
//! batch. Run: `cargo bench --bench engine`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaswatch::config::Config;
use gaswatch::engine::{Engine, EnginePlan};
use gaswatch::model::{BlockId, DeviceId, Input, Output, Timestamp};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

/// A station with `devices` devices of `points` f32 points each (CDAB on odd
/// devices), one meter per device and a limit on every fifth point.
fn station(devices: usize, points: usize) -> Config {
    let mut s = String::from(
        "[station]\nid = \"bench\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"x\"\n",
    );
    for d in 0..devices {
        let _ = write!(
            s,
            "[[devices]]\nid = \"d{d}\"\nhost = \"127.0.0.1\"\nunit_id = {}\n",
            d % 250 + 1
        );
        for p in 0..points {
            let order = if d % 2 == 1 { "CDAB" } else { "ABCD" };
            let _ = write!(
                s,
                "[[devices.points]]\nname = \"P{d}_{p}\"\nregister = \"holding\"\naddress = {}\ntype = \"f32\"\norder = \"{order}\"\n",
                p * 2
            );
        }
    }
    for d in 0..devices {
        let role = if d == 0 { "inlet" } else { "outlet" };
        let _ = write!(
            s,
            "[[meters]]\nname = \"M{d}\"\nrole = \"{role}\"\nflow = \"P{d}_0\"\n"
        );
        for p in (1..points).step_by(5) {
            let _ = write!(s, "[[limits]]\npoint = \"P{d}_{p}\"\nh = 1e9\nl = -1e9\n");
        }
    }
    Config::from_str_named(&s, Path::new("bench")).expect("bench config")
}

fn bench_engine(c: &mut Criterion) {
    let (devices, points) = (10, 30);
    let plan = Arc::new(EnginePlan::compile(&station(devices, points)));
    let mut engine = Engine::new(Arc::clone(&plan), 0);
    let mut inputs: Vec<Input> = (0..devices)
        .flat_map(|d| {
            let plan = Arc::clone(&plan);
            plan.devices[d]
                .blocks
                .iter()
                .enumerate()
                .map(|(b, blk)| Input::Registers {
                    device: DeviceId(d as u32),
                    block: BlockId(b as u32),
                    ts: Timestamp(0),
                    regs: (0..blk.count)
                        .map(|i| if i % 2 == 0 { 0x4479 } else { 0 })
                        .collect(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = Output::default();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements((devices * points) as u64));
    group.measurement_time(std::time::Duration::from_secs(3));
    let mut t = 0i64;
    group.bench_function("station_batch_300_points", |b| {
        b.iter(|| {
            t += 1_000_000_000;
            out.clear();
            for input in inputs.iter_mut() {
                if let Input::Registers { ts, .. } = input {
                    *ts = Timestamp(t);
                }
                engine.process(black_box(input), &mut out);
            }
            engine.tick(Timestamp(t), &mut out);
            black_box(out.samples.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
