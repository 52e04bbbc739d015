//! Balance-and-leak update for a station with 10 meters (5 inlet, 5 outlet,
//! line-condition flows corrected with AGA 8 DETAIL) and 2 line-pack
//! elements; windows 5 min and 1 h; leak test on. One iteration is one
//! 1-second scan (all 14 points) plus `tick`, so every 300th closes a
//! window and runs the leak test. Run: `cargo bench --bench balance`.

use criterion::{Criterion, criterion_group, criterion_main};
use gaswatch::config::Config;
use gaswatch::engine::{Engine, EnginePlan};
use gaswatch::model::{Input, Output, Quality, TagId, Timestamp};
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn station() -> Config {
    let mut s = String::from(
        "[station]\nid = \"bench\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"x\"\n\
         [[devices]]\nid = \"d\"\nhost = \"127.0.0.1\"\nunit_id = 1\n",
    );
    let names: Vec<String> = (0..10)
        .map(|m| format!("FT{m}"))
        .chain(["PT1", "TT1", "PT2", "TT2"].map(String::from))
        .collect();
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            s,
            "[[devices.points]]\nname = \"{n}\"\nregister = \"holding\"\naddress = {}\ntype = \"f32\"\n",
            i * 2
        );
    }
    for m in 0..10 {
        let role = if m < 5 { "inlet" } else { "outlet" };
        let (p, t) = if m < 5 {
            ("PT1", "TT1")
        } else {
            ("PT2", "TT2")
        };
        let _ = write!(
            s,
            "[[meters]]\nname = \"M{m}\"\nrole = \"{role}\"\nflow = \"FT{m}\"\nkind = \"line_flow\"\npressure = \"{p}\"\ntemperature = \"{t}\"\n"
        );
    }
    for (i, (p, t)) in [("PT1", "TT1"), ("PT2", "TT2")].iter().enumerate() {
        let _ = write!(
            s,
            "[[linepack]]\nname = \"e{i}\"\nvolume_m3 = 500.0\npressure = \"{p}\"\ntemperature = \"{t}\"\nrupture_kpa_per_min = 200.0\n"
        );
    }
    s.push_str(
        "[balance]\nwindow = \"5m\"\nlonger_windows = [\"1h\"]\n\
         [gas]\nmethod = \"aga8_detail\"\n[gas.composition]\nmethane = 0.96\nethane = 0.02\nnitrogen = 0.01\ncarbon_dioxide = 0.01\n",
    );
    Config::from_str_named(&s, Path::new("bench")).expect("bench config")
}

fn bench_balance(c: &mut Criterion) {
    let plan = Arc::new(EnginePlan::compile(&station()));
    let mut engine = Engine::new(Arc::clone(&plan), 0);
    let mut out = Output::default();
    let mut values: Vec<(TagId, f64, Quality)> =
        (0..14).map(|i| (TagId(i), 0.0, Quality::Good)).collect();
    let mut t: i64 = 0;
    let mut scan =
        move |engine: &mut Engine, out: &mut Output, values: &mut Vec<(TagId, f64, Quality)>| {
            t += 1_000_000_000;
            let w = (t / 1_000_000_000) as f64;
            for (i, v) in values.iter_mut().enumerate() {
                v.1 = match i {
                    0..=9 => 200.0 + (w * 0.01 + i as f64).sin(),
                    10 => 3_500.0 + (w * 0.001).sin() * 20.0,
                    12 => 1_500.0 + (w * 0.001).cos() * 10.0,
                    _ => 12.0,
                };
            }
            out.clear();
            let input = Input::Values {
                ts: Timestamp(t),
                values: std::mem::take(values),
            };
            engine.process(&input, out);
            engine.tick(Timestamp(t), out);
            if let Input::Values { values: v, .. } = input {
                *values = v;
            }
        };
    let mut g = c.benchmark_group("balance");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("scan_10_meters_2_linepack_aga8", |b| {
        b.iter(|| {
            scan(&mut engine, &mut out, &mut values);
            black_box(out.balances.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_balance);
criterion_main!(benches);
