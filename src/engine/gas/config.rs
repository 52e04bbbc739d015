//! The `[gas]` config section: base conditions, atmospheric pressure and
//! how Z is computed. Pure: [`GasConfig::build`] compiles it into a
//! [`GasModel`], and [`GasConfig::problems`] reports every bad key.

use super::{BaseConditions, GasError, GasModel, Sgerg};
use aga8::composition::Composition;
use serde::Deserialize;
use std::collections::BTreeMap;

/// How the compression factor Z is computed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ZMethod {
    /// A fixed Z (`z`, `z_base`); Z = 1 unless set (ideal gas).
    #[default]
    Fixed,
    /// AGA 8 DETAIL = ISO 12213-2 = GB/T 17747.2, from `[gas.composition]`.
    Aga8Detail,
    /// GERG-2008 = ISO 20765-2, from `[gas.composition]`.
    Gerg2008,
    /// SGERG-88 = ISO 12213-3 = GB/T 17747.3, from `[gas.sgerg]`.
    Sgerg88,
}

/// SGERG-88 inputs (reference state of ISO 12213-3: Hs at 25 degC
/// combustion, 0 degC / 101.325 kPa metering).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SgergInputs {
    /// Superior heating value, MJ/m³ (20-48).
    pub hs_mj_per_m3: f64,
    /// Relative density to air (0.55-0.9).
    pub relative_density: f64,
    /// CO2 mole fraction (0-0.3).
    #[serde(default)]
    pub co2: f64,
    /// H2 mole fraction (0-0.1).
    #[serde(default)]
    pub h2: f64,
}

/// The `[gas]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GasConfig {
    /// How Z is computed: "fixed" (default), "aga8_detail", "gerg2008", "sgerg88".
    #[serde(default)]
    pub method: ZMethod,
    /// Base (reference) pressure, kPa absolute. Default 101.325 (GB/T 19205).
    #[serde(default = "default_p_base")]
    pub base_pressure_kpa: f64,
    /// Base (reference) temperature, degC. Default 20 (GB/T 19205).
    #[serde(default = "default_t_base")]
    pub base_temperature_c: f64,
    /// Atmospheric pressure added to gauge readings, kPa. Default 101.325;
    /// set the site's mean value (it falls about 1.2 kPa per 100 m).
    #[serde(default = "default_p_base")]
    pub atmospheric_pressure_kpa: f64,
    /// Fixed Z at line conditions (method "fixed"). Default 1.
    pub z: Option<f64>,
    /// Fixed Z at base conditions (method "fixed"). Default 1.
    pub z_base: Option<f64>,
    /// Mole fractions by component (aga8 names: methane, nitrogen,
    /// carbon_dioxide, ethane, propane, isobutane, n_butane, isopentane,
    /// n_pentane, hexane, heptane, octane, nonane, decane, hydrogen, oxygen,
    /// carbon_monoxide, water, hydrogen_sulfide, helium, argon); they must
    /// sum to 1 within 0.0001.
    #[serde(default)]
    pub composition: BTreeMap<String, f64>,
    /// SGERG-88 inputs (method "sgerg88").
    pub sgerg: Option<SgergInputs>,
    /// Live composition from a gas chromatograph (methods "aga8_detail" and
    /// "gerg2008"); `composition` stays the fallback.
    pub gc: Option<GcConfig>,
}

impl Default for GasConfig {
    fn default() -> Self {
        GasConfig {
            method: ZMethod::Fixed,
            base_pressure_kpa: default_p_base(),
            base_temperature_c: default_t_base(),
            atmospheric_pressure_kpa: default_p_base(),
            z: None,
            z_base: None,
            composition: BTreeMap::new(),
            sgerg: None,
            gc: None,
        }
    }
}

fn default_p_base() -> f64 {
    101.325
}
fn default_t_base() -> f64 {
    20.0
}

/// The mole fraction of component `name` (aga8 names) in a composition, if
/// known: the simulator's table, so both read `[gas]` the same way.
pub use gaswatch_sim::gas::component_slot;

/// How a gas chromatograph states each component.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GcUnit {
    /// Mole percent (0-100), as most GCs report.
    #[default]
    MolPercent,
    /// Mole fraction (0-1).
    MoleFraction,
}

impl GcUnit {
    /// Multiplier to a mole fraction.
    pub fn to_fraction(self) -> f64 {
        match self {
            GcUnit::MolPercent => 0.01,
            GcUnit::MoleFraction => 1.0,
        }
    }
}

/// `[gas.gc]`: live composition from a gas chromatograph's points. An
/// analysis (all component points GOOD, read together) replaces the
/// composition of the one AGA 8 / GERG-2008 calculator; while any of them
/// is BAD or STALE, or an analysis does not add up, the engine falls back
/// to `[gas.composition]` and raises `<station>/gas/GC_FALLBACK`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Point holding each component's share of the latest analysis, by
    /// aga8 component name, e.g. `{ methane = "GC_C1", ethane = "GC_C2" }`;
    /// components not listed are 0 in a live analysis.
    pub components: BTreeMap<String, String>,
    /// "mol_percent" (default) or "mole_fraction".
    #[serde(default)]
    pub unit: GcUnit,
    /// An analysis whose components add up to within this of 100 % is
    /// normalised and used; one further off is rejected (fallback). Default 2.
    #[serde(default = "default_gc_tolerance")]
    pub sum_tolerance_percent: f64,
}

fn default_gc_tolerance() -> f64 {
    2.0
}

/// Builds an aga8 composition from component names; errors name the key.
pub fn composition(map: &BTreeMap<String, f64>) -> Result<Composition, (String, String)> {
    let mut c = Composition::default();
    for (name, &x) in map {
        let key = format!("composition.{name}");
        if !(0.0..=1.0).contains(&x) {
            return Err((key, format!("expected a mole fraction 0..=1, got {x}")));
        }
        let Some(slot) = component_slot(&mut c, name) else {
            return Err((
                key,
                "unknown component (see the [gas] docs for names)".into(),
            ));
        };
        *slot = x;
    }
    let sum: f64 = map.values().sum();
    if (sum - 1.0).abs() > 1e-4 {
        return Err((
            "composition".into(),
            format!("mole fractions must sum to 1 (within 0.0001), they sum to {sum:.6}"),
        ));
    }
    Ok(c)
}

impl GasConfig {
    pub fn base(&self) -> BaseConditions {
        BaseConditions {
            pressure_kpa: self.base_pressure_kpa,
            temperature_k: self.base_temperature_c + 273.15,
        }
    }

    /// Compiles the section; the error names the key (relative to `[gas]`).
    pub fn build(&self) -> Result<GasModel, (String, String)> {
        let base = self.base();
        let atm = self.atmospheric_pressure_kpa;
        let gas_err = |key: &str, e: GasError| (key.to_string(), e.to_string());
        match self.method {
            ZMethod::Fixed => Ok(GasModel::fixed(
                self.z.unwrap_or(1.0),
                self.z_base.unwrap_or(1.0),
                base,
                atm,
            )),
            ZMethod::Aga8Detail => {
                let c = composition(&self.composition)?;
                GasModel::detail(&c, base, atm).map_err(|e| gas_err("composition", e))
            }
            ZMethod::Gerg2008 => {
                let c = composition(&self.composition)?;
                GasModel::gerg2008(&c, base, atm).map_err(|e| gas_err("composition", e))
            }
            ZMethod::Sgerg88 => {
                let Some(s) = self.sgerg else {
                    return Err((
                        "sgerg".into(),
                        "method \"sgerg88\" needs [gas.sgerg] with hs_mj_per_m3 and relative_density".into(),
                    ));
                };
                let s = Sgerg::new(s.hs_mj_per_m3, s.relative_density, s.co2, s.h2)
                    .map_err(|e| gas_err("sgerg", e))?;
                GasModel::sgerg(s, base, atm).map_err(|e| gas_err("sgerg", e))
            }
        }
    }

    /// Every problem with the section, as (key relative to `[gas]`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if !(self.base_pressure_kpa > 50.0 && self.base_pressure_kpa < 200.0) {
            p.push((
                "base_pressure_kpa".into(),
                format!(
                    "expected an absolute pressure 50-200 kPa, got {}",
                    self.base_pressure_kpa
                ),
            ));
        }
        if !(-40.0..=60.0).contains(&self.base_temperature_c) {
            p.push((
                "base_temperature_c".into(),
                format!("expected -40..=60 degC, got {}", self.base_temperature_c),
            ));
        }
        if !(self.atmospheric_pressure_kpa > 50.0 && self.atmospheric_pressure_kpa < 120.0) {
            p.push((
                "atmospheric_pressure_kpa".into(),
                format!("expected 50-120 kPa, got {}", self.atmospheric_pressure_kpa),
            ));
        }
        for (k, v) in [("z", self.z), ("z_base", self.z_base)] {
            if let Some(v) = v
                && !(0.3..=1.5).contains(&v)
            {
                p.push((
                    k.into(),
                    format!("expected a compression factor 0.3-1.5, got {v}"),
                ));
            }
        }
        if let Some(gc) = &self.gc {
            if !matches!(self.method, ZMethod::Aga8Detail | ZMethod::Gerg2008) {
                p.push((
                    "gc".into(),
                    "a live composition needs method \"aga8_detail\" or \"gerg2008\"".into(),
                ));
            }
            if gc.components.is_empty() {
                p.push((
                    "gc.components".into(),
                    "expected at least one component mapped to a point".into(),
                ));
            }
            let mut probe = Composition::default();
            for name in gc.components.keys() {
                if component_slot(&mut probe, name).is_none() {
                    p.push((
                        format!("gc.components.{name}"),
                        "unknown component (see the [gas] docs for names)".into(),
                    ));
                }
            }
            let tol = gc.sum_tolerance_percent;
            if !(tol.is_finite() && tol > 0.0 && tol <= 10.0) {
                p.push((
                    "gc.sum_tolerance_percent".into(),
                    format!("expected 0-10 %, got {tol}"),
                ));
            }
        }
        if p.is_empty()
            && let Err(e) = self.build()
        {
            p.push(e);
        }
        p
    }
}
