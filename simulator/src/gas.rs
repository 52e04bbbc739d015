//! The gas the simulated pipework holds: its compression factor Z, so the
//! simulated line pack is a real gas's, with the same `[gas]` section the
//! daemon reads (the engine then computes the same pack from the served
//! pressure and temperature, and any disagreement is a bug in one of them).
//!
//! `LP = V (P / P_b) (T_b / T) (Z_b / Z)` with absolute pressures. Z comes
//! from AGA 8 DETAIL or GERG-2008 (the `aga8` crate, one calculator built
//! once per station and reused) for a `[gas.composition]`, or a fixed `z`
//! and `z_base` (default 1: ideal gas, the daemon's default too). SGERG-88
//! is the daemon's own code and is not duplicated here: a station with
//! `method = "sgerg88"` is rejected with the key named.

use std::collections::BTreeMap;

use aga8::composition::Composition;
use aga8::detail::Detail;
use aga8::gerg2008::Gerg2008;
use serde::Deserialize;

use crate::config::ConfigError;

/// The `[gas]` section as written (unknown keys ignored, as everywhere in
/// the simulator's config reading).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct GasSection {
    /// "fixed" (default), "aga8_detail", "gerg2008" ("sgerg88": rejected).
    pub method: Option<String>,
    /// Base pressure, kPa absolute (default 101.325).
    pub base_pressure_kpa: Option<f64>,
    /// Base temperature, degC (default 20).
    pub base_temperature_c: Option<f64>,
    /// Added to gauge pressures, kPa (default 101.325).
    pub atmospheric_pressure_kpa: Option<f64>,
    /// Fixed Z at line conditions (method "fixed"; default 1).
    pub z: Option<f64>,
    /// Fixed Z at base conditions (method "fixed"; default 1).
    pub z_base: Option<f64>,
    /// Mole fractions by aga8 component name.
    #[serde(default)]
    pub composition: BTreeMap<String, f64>,
}

// Boxed: the calculators are tens of kB each and built once.
#[derive(Clone)]
enum Model {
    Fixed(f64),
    Detail(Box<Detail>),
    Gerg(Box<Gerg2008>),
}

/// Z and line pack of the station's gas at fixed base conditions.
#[derive(Clone)]
pub struct Gas {
    model: Model,
    /// Base pressure (kPa abs) and temperature (K).
    pub base_pressure_kpa: f64,
    pub base_temperature_k: f64,
    /// Added to gauge pressures, kPa.
    pub atmospheric_kpa: f64,
    z_base: f64,
}

impl std::fmt::Debug for Gas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = match self.model {
            Model::Fixed(_) => "fixed",
            Model::Detail(_) => "aga8_detail",
            Model::Gerg(_) => "gerg2008",
        };
        f.debug_struct("Gas")
            .field("method", &method)
            .field("z_base", &self.z_base)
            .finish()
    }
}

impl Default for Gas {
    /// Ideal gas at 20 degC / 101.325 kPa (the daemon's defaults).
    fn default() -> Self {
        Gas {
            model: Model::Fixed(1.0),
            base_pressure_kpa: 101.325,
            base_temperature_k: 293.15,
            atmospheric_kpa: 101.325,
            z_base: 1.0,
        }
    }
}

fn invalid(key: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("gas.{key}"),
        expected: expected.into(),
    }
}

/// The mole fraction of component `name` (aga8 names) in `c`, if known.
/// The one table of component names: the daemon's `[gas]` and gas
/// chromatograph settings use it too.
pub fn component_slot<'a>(c: &'a mut Composition, name: &str) -> Option<&'a mut f64> {
    Some(match name {
        "methane" => &mut c.methane,
        "nitrogen" => &mut c.nitrogen,
        "carbon_dioxide" => &mut c.carbon_dioxide,
        "ethane" => &mut c.ethane,
        "propane" => &mut c.propane,
        "isobutane" => &mut c.isobutane,
        "n_butane" => &mut c.n_butane,
        "isopentane" => &mut c.isopentane,
        "n_pentane" => &mut c.n_pentane,
        "hexane" => &mut c.hexane,
        "heptane" => &mut c.heptane,
        "octane" => &mut c.octane,
        "nonane" => &mut c.nonane,
        "decane" => &mut c.decane,
        "hydrogen" => &mut c.hydrogen,
        "oxygen" => &mut c.oxygen,
        "carbon_monoxide" => &mut c.carbon_monoxide,
        "water" => &mut c.water,
        "hydrogen_sulfide" => &mut c.hydrogen_sulfide,
        "helium" => &mut c.helium,
        "argon" => &mut c.argon,
        _ => return None,
    })
}

fn composition(map: &BTreeMap<String, f64>) -> Result<Composition, ConfigError> {
    let mut c = Composition::default();
    for (name, &x) in map {
        let Some(slot) = component_slot(&mut c, name) else {
            return Err(invalid(
                &format!("composition.{name}"),
                "an aga8 component name (methane, ethane, nitrogen, ...)",
            ));
        };
        if !(0.0..=1.0).contains(&x) {
            return Err(invalid(
                &format!("composition.{name}"),
                "a mole fraction 0..=1",
            ));
        }
        *slot = x;
    }
    let sum: f64 = map.values().sum();
    if (sum - 1.0).abs() > 1e-4 {
        return Err(invalid(
            "composition",
            format!("mole fractions summing to 1 (they sum to {sum:.6})"),
        ));
    }
    Ok(c)
}

impl Gas {
    /// Builds the gas from the `[gas]` section (None: ideal gas).
    pub fn from_section(s: Option<&GasSection>) -> Result<Gas, ConfigError> {
        let Some(s) = s else {
            return Ok(Gas::default());
        };
        let base_pressure_kpa = s.base_pressure_kpa.unwrap_or(101.325);
        let base_temperature_k = s.base_temperature_c.unwrap_or(20.0) + 273.15;
        let atmospheric_kpa = s.atmospheric_pressure_kpa.unwrap_or(101.325);
        for (key, v) in [
            ("base_pressure_kpa", base_pressure_kpa),
            ("base_temperature_c", base_temperature_k),
            ("atmospheric_pressure_kpa", atmospheric_kpa),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(key, "a positive number"));
            }
        }
        let model = match s.method.as_deref().unwrap_or("fixed") {
            "fixed" => {
                let z = s.z.unwrap_or(1.0);
                if !(z.is_finite() && z > 0.0) {
                    return Err(invalid("z", "a positive number"));
                }
                Model::Fixed(z)
            }
            "aga8_detail" => {
                let mut d = Box::new(Detail::new());
                d.set_composition(&composition(&s.composition)?)
                    .map_err(|e| invalid("composition", format!("a valid composition ({e:?})")))?;
                Model::Detail(d)
            }
            "gerg2008" => {
                let mut g = Box::new(Gerg2008::new());
                g.set_composition(&composition(&s.composition)?)
                    .map_err(|e| invalid("composition", format!("a valid composition ({e:?})")))?;
                Model::Gerg(g)
            }
            other => {
                return Err(invalid(
                    "method",
                    format!(
                        "\"fixed\", \"aga8_detail\" or \"gerg2008\" for the simulator (got {other:?})"
                    ),
                ));
            }
        };
        let mut gas = Gas {
            model,
            base_pressure_kpa,
            base_temperature_k,
            atmospheric_kpa,
            z_base: 1.0,
        };
        gas.z_base = match s.method.as_deref().unwrap_or("fixed") {
            "fixed" => s.z_base.unwrap_or(1.0),
            _ => gas.z(base_pressure_kpa, base_temperature_k),
        };
        if !(gas.z_base.is_finite() && gas.z_base > 0.0) {
            return Err(invalid("z_base", "a positive Z at base conditions"));
        }
        Ok(gas)
    }

    /// Z at absolute pressure (kPa) and temperature (K); 1 if the equation
    /// does not converge (never in the simulator's range).
    pub fn z(&mut self, p_kpa: f64, t_k: f64) -> f64 {
        match &mut self.model {
            Model::Fixed(z) => *z,
            Model::Detail(d) => {
                d.p = p_kpa;
                d.t = t_k;
                match d.density() {
                    Ok(()) => d.z,
                    Err(_) => 1.0,
                }
            }
            Model::Gerg(g) => {
                g.p = p_kpa;
                g.t = t_k;
                match g.density(0) {
                    Ok(()) => g.z,
                    Err(_) => 1.0,
                }
            }
        }
    }

    /// Line volume per base volume at a gauge pressure (kPa) and a
    /// temperature (degC): AGA 7 inverted,
    /// `V_f / V_b = (P_b / P_f) (T_f / T_b) (Z_f / Z_b)`.
    pub fn line_per_base(&mut self, p_gauge_kpa: f64, t_c: f64) -> f64 {
        let p = p_gauge_kpa + self.atmospheric_kpa;
        let t = t_c + 273.15;
        (self.base_pressure_kpa / p) * (t / self.base_temperature_k) * self.z(p, t) / self.z_base
    }

    /// Gas held at base conditions (Sm³) by `volume_m3` at a gauge pressure
    /// (kPa) and a temperature (degC).
    pub fn linepack_sm3(&mut self, volume_m3: f64, p_gauge_kpa: f64, t_c: f64) -> f64 {
        let p = p_gauge_kpa + self.atmospheric_kpa;
        let t = t_c + 273.15;
        volume_m3 * (p / self.base_pressure_kpa) * (self.base_temperature_k / t) * self.z_base
            / self.z(p, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> GasSection {
        toml::from_str(text).expect("section parses")
    }

    #[test]
    fn ideal_by_default_and_real_gas_packs_more() {
        let mut ideal = Gas::from_section(None).expect("default");
        let lp = ideal.linepack_sm3(100.0, 1500.0, 20.0);
        assert!((lp - 100.0 * 1601.325 / 101.325).abs() < 1e-9, "{lp}");
        let mut real = Gas::from_section(Some(&section(
            "method = \"aga8_detail\"\n[composition]\nmethane = 0.96\nethane = 0.02\nnitrogen = 0.01\ncarbon_dioxide = 0.01\n",
        )))
        .expect("valid composition");
        let z = real.z(1601.325, 293.15);
        // Lean natural gas at 1.6 MPa and 20 degC: Z about 0.965.
        assert!((0.95..0.98).contains(&z), "{z}");
        let lp_real = real.linepack_sm3(100.0, 1500.0, 20.0);
        assert!(lp_real > lp * 1.02, "{lp_real} vs {lp}");
    }

    #[test]
    fn rejects_sgerg_and_bad_composition_naming_the_key() {
        let e = Gas::from_section(Some(&section("method = \"sgerg88\""))).expect_err("rejected");
        assert!(e.to_string().contains("gas.method"), "{e}");
        let e = Gas::from_section(Some(&section(
            "method = \"gerg2008\"\n[composition]\nmethane = 0.5\n",
        )))
        .expect_err("rejected");
        assert!(e.to_string().contains("gas.composition"), "{e}");
    }
}
