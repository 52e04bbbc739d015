//! Hand-computed conversion and line-pack cases; AGA 8 reference values.

use super::*;

fn gulf_coast() -> Composition {
    // The AGA 8 Part 1 (2017) / NIST example mixture, as in the aga8 docs.
    Composition {
        methane: 0.778_24,
        nitrogen: 0.02,
        carbon_dioxide: 0.06,
        ethane: 0.08,
        propane: 0.03,
        isobutane: 0.001_5,
        n_butane: 0.003,
        isopentane: 0.000_5,
        n_pentane: 0.001_65,
        hexane: 0.002_15,
        heptane: 0.000_88,
        octane: 0.000_24,
        nonane: 0.000_15,
        decane: 0.000_09,
        hydrogen: 0.004,
        oxygen: 0.005,
        carbon_monoxide: 0.002,
        water: 0.000_1,
        hydrogen_sulfide: 0.002_5,
        helium: 0.007,
        argon: 0.001,
    }
}

#[test]
fn aga7_conversion_by_hand_with_gauge_pressure() {
    // 1500 kPa g + 101.325 atm, 10 degC, Z 0.9, Z_b 1, base 20 degC / 101.325:
    // 1601.325/101.325 * 293.15/283.15 * 1/0.9 = 18.179992287429073
    let mut g = GasModel::fixed(0.9, 1.0, BaseConditions::default(), 101.325);
    let p = g.absolute_kpa(1500.0, true);
    assert_eq!(p, 1601.325);
    let f = g.conversion_factor(p, 283.15).expect("valid");
    assert!((f - 18.179_992_287_429_073).abs() < 1e-12, "{f}");
    // Line pack of 50 m3 is the same factor times the volume.
    let lp = g.linepack_sm3(50.0, p, 283.15).expect("valid");
    assert!((lp - 908.999_614_371_453_6).abs() < 1e-9, "{lp}");
    // At base conditions with Z = Z_b the factor is exactly 1.
    let mut ideal = GasModel::ideal(BaseConditions::default(), 101.325);
    assert_eq!(ideal.conversion_factor(101.325, 293.15).ok(), Some(1.0));
}

#[test]
fn bad_pressure_or_temperature_is_an_error_not_a_panic() {
    let mut g = GasModel::ideal(BaseConditions::default(), 101.325);
    assert!(g.conversion_factor(0.0, 290.0).is_err());
    assert!(g.conversion_factor(f64::NAN, 290.0).is_err());
    assert!(g.conversion_factor(100.0, -1.0).is_err());
}

#[test]
fn aga8_detail_and_gerg_match_the_published_example() {
    // AGA 8 Part 1 (2017) example: 50 MPa, 400 K. DETAIL Z = 1.17380136...,
    // GERG-2008 Z = 1.1746...
    let base = BaseConditions::default();
    let mut d = GasModel::detail(&gulf_coast(), base, 101.325).expect("valid");
    let z = d.z(50_000.0, 400.0).expect("converges");
    assert!((z - 1.173_801_364).abs() < 1e-7, "DETAIL {z}");
    let mut g = GasModel::gerg2008(&gulf_coast(), base, 101.325).expect("valid");
    let z = g.z(50_000.0, 400.0).expect("converges");
    assert!((z - 1.1746).abs() < 1e-3, "GERG {z}");
    // Reused calculator: the same state gives the same Z again.
    assert_eq!(g.z(50_000.0, 400.0).ok(), Some(z));
}

#[test]
fn sgerg_agrees_with_detail_within_their_uncertainty_for_a_pipeline_gas() {
    // Pipeline gas: 96 % methane. Hs and d of it at SGERG reference state.
    let mut comp = Composition {
        methane: 0.96,
        ethane: 0.02,
        propane: 0.005,
        nitrogen: 0.01,
        carbon_dioxide: 0.005,
        ..Default::default()
    };
    comp.methane += 1.0 - 0.96 - 0.02 - 0.005 - 0.01 - 0.005;
    let base = BaseConditions::default();
    let mut d = GasModel::detail(&comp, base, 101.325).expect("valid");
    // Hs (25 degC combustion, 0 degC metering) and relative density of this
    // mixture from ISO 6976:1995 component values (molar Hs at 25 degC,
    // summation factors at 0 degC): Z_n 0.99746, Hs 40.175 MJ/m3, d 0.57854.
    let s = Sgerg::new(40.175, 0.57854, 0.005, 0.0).expect("valid");
    let mut s = GasModel::sgerg(s, base, 101.325).expect("valid");
    for (p, t) in [(1_600.0, 283.15), (4_000.0, 278.15), (10_000.0, 300.0)] {
        let zd = d.z(p, t).expect("detail");
        let zs = s.z(p, t).expect("sgerg");
        assert!(
            (zd - zs).abs() / zd < 0.002,
            "p {p} t {t}: DETAIL {zd} SGERG {zs}"
        );
    }
}

#[test]
fn config_builds_each_method_and_names_bad_keys() {
    let mut c = GasConfig::default();
    assert_eq!(c.build().map(|m| m.method_name()).ok(), Some("fixed"));
    c.method = ZMethod::Aga8Detail;
    c.composition.insert("methane".into(), 0.9);
    let e = c.problems();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, "composition");
    c.composition.insert("ethane".into(), 0.1);
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    c.composition.insert("unobtainium".into(), 0.0);
    assert_eq!(c.problems()[0].0, "composition.unobtainium");
    c.method = ZMethod::Sgerg88;
    assert_eq!(c.problems()[0].0, "sgerg");
}

#[test]
fn a_new_composition_reuses_the_calculator_and_matches_a_fresh_one() {
    let base = BaseConditions::default();
    let lean = Composition {
        methane: 0.96,
        ethane: 0.02,
        nitrogen: 0.01,
        carbon_dioxide: 0.01,
        ..Composition::default()
    };
    for detail in [true, false] {
        let build = |c: &Composition| {
            if detail {
                GasModel::detail(c, base, 101.325)
            } else {
                GasModel::gerg2008(c, base, 101.325)
            }
            .expect("valid")
        };
        let mut m = build(&gulf_coast());
        let z_rich = m.z(5_000.0, 280.0).expect("converges");
        m.set_composition(&lean).expect("valid composition");
        let mut fresh = build(&lean);
        let z = m.z(5_000.0, 280.0).expect("converges");
        assert_eq!(z, fresh.z(5_000.0, 280.0).expect("converges"));
        assert_eq!(m.z_base(), fresh.z_base());
        assert!(z > z_rich, "lean gas is closer to ideal: {z} vs {z_rich}");
    }
    // No composition behind a fixed Z.
    let mut fixed = GasModel::ideal(base, 101.325);
    assert!(fixed.set_composition(&lean).is_err());
}
