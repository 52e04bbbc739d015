//! Decode plan throughput: registers decoded per second on one core, for a
//! device of full 125-register blocks mixing every type and byte order.
//! Target: at least 50 million registers per second.
//! Run: `cargo bench --bench decode`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaswatch::config::Config;
use gaswatch::engine::EnginePlan;
use gaswatch::engine::decode::decode_point;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

/// One device, `blocks` full blocks of 125 registers: f32/u32/i32 in all four
/// orders, u16/i16 scaled, f64/u64 (the mix of a flow computer map).
fn plan(blocks: u16) -> EnginePlan {
    let mut s = String::from(
        "[station]\nid = \"bench\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"x\"\n\
         [[devices]]\nid = \"d\"\nhost = \"127.0.0.1\"\nmax_gap = 0\n",
    );
    let kinds: [(&str, u16, &str); 10] = [
        ("f32", 2, "ABCD"),
        ("f32", 2, "CDAB"),
        ("f32", 2, "BADC"),
        ("f32", 2, "DCBA"),
        ("u32", 2, "CDAB"),
        ("i32", 2, "ABCD"),
        ("u16", 1, "ABCD"),
        ("i16", 1, "BADC"),
        ("f64", 4, "ABCD"),
        ("u64", 4, "DCBA"),
    ];
    let mut n = 0;
    for b in 0..blocks {
        let base = b * 200;
        let mut addr = 0u16;
        let mut k = 0;
        loop {
            let (ty, w, order) = kinds[k % kinds.len()];
            if addr + w > 125 {
                break;
            }
            let _ = write!(
                s,
                "[[devices.points]]\nname = \"P{n}\"\nregister = \"holding\"\naddress = {}\ntype = \"{ty}\"\norder = \"{order}\"\nscale = 0.1\n",
                base + addr
            );
            addr += w;
            k += 1;
            n += 1;
        }
    }
    let config = Config::from_str_named(&s, Path::new("bench")).expect("bench config");
    EnginePlan::compile(&config)
}

fn bench_decode(c: &mut Criterion) {
    let plan = plan(8);
    let device = &plan.devices[0];
    let regs: Vec<Vec<u16>> = device
        .blocks
        .iter()
        .map(|b| {
            (0..b.words)
                .map(|i| 0x4000 ^ i.wrapping_mul(0x9E37))
                .collect()
        })
        .collect();
    let words: u64 = device.blocks.iter().map(|b| u64::from(b.words)).sum();
    let mut g = c.benchmark_group("decode");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(words));
    g.bench_function("mixed_types_all_orders_registers", |b| {
        b.iter(|| {
            let mut acc = 0.0;
            for (blk, r) in device.blocks.iter().zip(&regs) {
                for d in &blk.points {
                    let (v, _reason) = decode_point(black_box(r), d);
                    acc += v;
                }
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
