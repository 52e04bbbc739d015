//! Station physics profiles chosen by `[station] kind`: the CNG mother
//! station (compressor cycles, trailers filled to 20 MPa and swapped) and
//! the L-CNG station (tank level falling with send-out and refilled by
//! trailers, vaporiser outlet following ambient and load, header pressure
//! kept in its band by the pump). Each test runs the example config offline
//! and checks the qualitative behaviour; runs are deterministic by seed.

use gaswatch_sim::{Profile, ProfileKind, SimOptions, Station};
use std::time::Duration;

const CNG: &str = include_str!("../../config/cng-mother.toml");
const LNG: &str = include_str!("../../config/lng.toml");
const CITY_GATE: &str = include_str!("../../config/city-gate.toml");

fn station(text: &str, seed: u64) -> Station {
    Station::from_config_str(
        text,
        &SimOptions {
            seed,
            noise_percent: 0.0,
            ..SimOptions::default()
        },
    )
    .expect("example config builds")
}

fn v(s: &Station, point: &str) -> f64 {
    s.true_value(point).expect("point exists")
}

#[test]
fn profiles_follow_the_station_kind() {
    assert_eq!(station(CNG, 1).profile().kind(), ProfileKind::CngMother);
    assert_eq!(station(LNG, 1).profile().kind(), ProfileKind::Lng);
    assert_eq!(
        station(CITY_GATE, 1).profile().kind(),
        ProfileKind::CityGate
    );
}

#[test]
fn cng_mother_fills_trailers_to_20_mpa_swaps_them_and_cycles_the_compressor() {
    let mut s = station(CNG, 7);
    let step = Duration::from_secs(10);
    let mut last_trailer = [None::<f64>; 2];
    let mut max_disch: f64 = 0.0;
    let mut idle_post_seen = false;
    for _ in 0..(12 * 360) {
        s.step(step);
        let Profile::Cng(m) = s.profile() else {
            panic!("CNG profile")
        };
        let m = m.clone();
        let disch = v(&s, "PT_DISCH");
        if m.compressor_running {
            // The header follows the trailers being filled: 20-25 MPa class.
            assert!(
                (2_000.0..=20_200.0).contains(&disch),
                "discharge {disch} kPa while filling"
            );
            max_disch = max_disch.max(disch);
        }
        for (k, (post, flow_point)) in m.posts.iter().zip(["FT_POST1", "FT_POST2"]).enumerate() {
            let flow = v(&s, flow_point);
            if post.filling {
                // Trailer pressure ramps up while it fills; the compressor
                // delivers less as the pressure rises.
                if let Some(prev) = last_trailer[k] {
                    assert!(
                        post.trailer_kpa > prev,
                        "post {k}: {prev} -> {}",
                        post.trailer_kpa
                    );
                }
                last_trailer[k] = Some(post.trailer_kpa);
                assert!((1_400.0..=2_400.0).contains(&flow), "{flow_point} {flow}");
            } else {
                last_trailer[k] = None;
                idle_post_seen = true;
                assert_eq!(flow, 0.0, "{flow_point} flows while the trailer is swapped");
            }
        }
        // The inlet carries what the posts take (no leak, no noise).
        let inlet = v(&s, "FT_IN");
        let posts = v(&s, "FT_POST1") + v(&s, "FT_POST2");
        assert!((inlet - posts).abs() < 0.01, "inlet {inlet} posts {posts}");
        let p_in = v(&s, "PT_IN");
        assert!((900.0..1_500.0).contains(&p_in), "inlet pressure {p_in}");
    }
    let Profile::Cng(m) = s.profile() else {
        panic!("CNG profile")
    };
    assert!(
        (20_000.0..25_000.0).contains(&max_disch),
        "trailers are filled to 20 MPa: max discharge {max_disch}"
    );
    for (k, p) in m.posts.iter().enumerate() {
        assert!(
            p.trailers_filled >= 3,
            "post {k} filled {} trailers in 12 h",
            p.trailers_filled
        );
    }
    assert!(idle_post_seen, "no trailer swap in 12 h");
    assert!(m.compressor_starts >= 1 || m.posts.iter().all(|p| p.trailers_filled > 0));
}

#[test]
fn lng_tank_level_falls_with_send_out_and_trailers_refill_it() {
    let mut s = station(LNG, 3);
    let step = Duration::from_secs(30);
    let (mut falls, mut rises) = (0, 0);
    let mut prev_level = v(&s, "LT_TANK");
    let mut deliveries_seen = 0;
    let (mut pump_starts, mut pump_was) = (0, false);
    for _ in 0..(72 * 120) {
        s.step(step);
        let Profile::Lng(m) = s.profile() else {
            panic!("LNG profile")
        };
        let m = m.clone();
        let level = v(&s, "LT_TANK");
        // u16 at 0.1 %: one count of rounding either way. A delivery may
        // end within the step.
        if m.unloading || m.deliveries > deliveries_seen {
            if level > prev_level + 0.05 {
                rises += 1;
            }
        } else {
            assert!(
                level <= prev_level + 0.1,
                "level rose without a delivery: {prev_level} -> {level}"
            );
            if level < prev_level {
                falls += 1;
            }
        }
        prev_level = level;
        deliveries_seen = m.deliveries;
        assert!(
            (10.0..95.0).contains(&level),
            "level {level} % left the alarm band"
        );
        // Vaporiser outlet: colder than ambient by 5 K + 15 K x load.
        let load = (m.send_out_sm3_per_h / 1_500.0).clamp(0.0, 1.0);
        let expect = gaswatch_sim::LngModel::vaporiser_out(m.ambient_c, load);
        let vap = v(&s, "TT_VAP_OUT");
        assert!(
            (vap - expect).abs() <= 0.051,
            "vaporiser {vap} expected {expect}"
        );
        assert!(vap < m.ambient_c - 5.0 + 0.06);
        // Header kept in its band by the pump; tank pressure below relief.
        let header = v(&s, "PT_HEADER");
        assert!((17_800.0..21_700.0).contains(&header), "header {header}");
        let tank = v(&s, "PT_TANK");
        assert!((400.0..800.0).contains(&tank), "tank {tank}");
        if m.pump_running && !pump_was {
            pump_starts += 1;
        }
        pump_was = m.pump_running;
    }
    assert!(falls > 1_000, "the level fell only {falls} times");
    assert!(
        deliveries_seen >= 1 && rises > 10,
        "no trailer refilled the tank"
    );
    assert!(
        pump_starts >= 10,
        "the header pump started {pump_starts} times"
    );
}

#[test]
fn lng_vaporiser_outlet_follows_ambient_and_is_colder_under_load() {
    let mut s = station(LNG, 3);
    let mut samples = Vec::new();
    for _ in 0..(24 * 12) {
        s.step(Duration::from_secs(300));
        let Profile::Lng(m) = s.profile() else {
            panic!("LNG profile")
        };
        samples.push((v(&s, "TT_VAP_OUT"), m.ambient_c, m.send_out_sm3_per_h));
    }
    let by = |f: fn(&(f64, f64, f64)) -> f64| {
        let mut v = samples.clone();
        v.sort_by(|a, b| f(a).total_cmp(&f(b)));
        (v[0], v[v.len() - 1])
    };
    // Ambient swings over the day and the outlet swings with it...
    let (cold, warm) = by(|x| x.1);
    assert!(warm.1 - cold.1 > 10.0, "ambient {cold:?} .. {warm:?}");
    let (lo, hi) = by(|x| x.0);
    assert!(hi.0 - lo.0 > 3.0, "outlet {lo:?} .. {hi:?}");
    // ...and sits further below ambient at high load than at low load.
    let (light, heavy) = by(|x| x.2);
    let below = |x: (f64, f64, f64)| x.1 - x.0;
    assert!(
        below(heavy) > below(light) + 5.0,
        "light load {light:?}, heavy load {heavy:?}"
    );
}

#[test]
fn profiles_are_deterministic_by_seed() {
    for text in [CNG, LNG] {
        let run = |seed| {
            let mut s = Station::from_config_str(
                text,
                &SimOptions {
                    seed,
                    ..SimOptions::default()
                },
            )
            .expect("station");
            let mut out = Vec::new();
            for _ in 0..500 {
                s.step(Duration::from_secs(37));
                out.push(s.values());
            }
            out
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
