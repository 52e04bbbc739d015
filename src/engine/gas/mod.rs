//! Gas properties for volume correction: compression factor Z, the AGA 7
//! base-volume conversion factor and line pack.
//!
//! `V_b = V_f * (P_f / P_b) * (T_b / T_f) * (Z_b / Z_f)` with absolute
//! pressures; line pack `LP = V_geom * (P / P_b) * (T_b / T) * (Z_b / Z)`.
//!
//! Z comes from AGA 8 DETAIL or GERG-2008 (the `aga8` crate), SGERG-88
//! ([`sgerg`], implemented here) or a fixed value. One [`GasModel`] is built
//! per gas quality and reused: the `aga8` calculators are built once (their
//! construction is the expensive part) and evaluating Z allocates nothing.
//! Every volume is stated at the model's base conditions; volumes of
//! different bases are never added.

pub mod config;
pub mod sgerg;

pub use config::{GasConfig, GcConfig, GcUnit, ZMethod};
pub use sgerg::Sgerg;

use aga8::composition::Composition;
use aga8::detail::Detail;
use aga8::gerg2008::Gerg2008;

/// Why a gas property could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GasError {
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0} did not converge")]
    NoConvergence(&'static str),
    #[error("composition: {0}")]
    Composition(String),
    #[error("pressure {0} kPa absolute is not positive")]
    NonPositivePressure(f64),
    #[error("temperature {0} K is not positive")]
    NonPositiveTemperature(f64),
}

/// Reference (base) conditions of every base volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaseConditions {
    /// Absolute base pressure, kPa (China: 101.325).
    pub pressure_kpa: f64,
    /// Base temperature, K (China: 293.15 = 20 degC).
    pub temperature_k: f64,
}

impl Default for BaseConditions {
    fn default() -> Self {
        BaseConditions {
            pressure_kpa: 101.325,
            temperature_k: 293.15,
        }
    }
}

#[derive(Clone, Copy)]
enum ZModel {
    Fixed { z: f64 },
    // Boxed: the calculators are a few kB each and built once.
    Detail,
    Gerg,
    Sgerg(Sgerg),
}

/// Z, conversion and line pack for one gas quality at fixed base conditions.
#[derive(Clone)]
pub struct GasModel {
    model: ZModel,
    detail: Option<Box<Detail>>,
    gerg: Option<Box<Gerg2008>>,
    base: BaseConditions,
    z_base: f64,
    /// Atmospheric pressure added to gauge readings, kPa.
    pub atmospheric_kpa: f64,
}

impl std::fmt::Debug for GasModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GasModel")
            .field("method", &self.method_name())
            .field("base", &self.base)
            .field("z_base", &self.z_base)
            .field("atmospheric_kpa", &self.atmospheric_kpa)
            .finish()
    }
}

impl GasModel {
    /// An ideal gas (Z = 1 everywhere) at the given base conditions.
    pub fn ideal(base: BaseConditions, atmospheric_kpa: f64) -> GasModel {
        GasModel::fixed(1.0, 1.0, base, atmospheric_kpa)
    }

    /// A fixed line Z and base Z.
    pub fn fixed(z: f64, z_base: f64, base: BaseConditions, atmospheric_kpa: f64) -> GasModel {
        GasModel {
            model: ZModel::Fixed { z },
            detail: None,
            gerg: None,
            base,
            z_base,
            atmospheric_kpa,
        }
    }

    /// AGA 8 DETAIL (ISO 12213-2) for a composition in mole fractions.
    pub fn detail(
        comp: &Composition,
        base: BaseConditions,
        atmospheric_kpa: f64,
    ) -> Result<GasModel, GasError> {
        let mut d = Box::new(Detail::new());
        d.set_composition(comp)
            .map_err(|e| GasError::Composition(format!("{e:?}")))?;
        let mut m = GasModel {
            model: ZModel::Detail,
            detail: Some(d),
            gerg: None,
            base,
            z_base: 1.0,
            atmospheric_kpa,
        };
        m.z_base = m.z(base.pressure_kpa, base.temperature_k)?;
        Ok(m)
    }

    /// GERG-2008 (ISO 20765-2) for a composition in mole fractions.
    pub fn gerg2008(
        comp: &Composition,
        base: BaseConditions,
        atmospheric_kpa: f64,
    ) -> Result<GasModel, GasError> {
        let mut g = Box::new(Gerg2008::new());
        g.set_composition(comp)
            .map_err(|e| GasError::Composition(format!("{e:?}")))?;
        let mut m = GasModel {
            model: ZModel::Gerg,
            detail: None,
            gerg: Some(g),
            base,
            z_base: 1.0,
            atmospheric_kpa,
        };
        m.z_base = m.z(base.pressure_kpa, base.temperature_k)?;
        Ok(m)
    }

    /// SGERG-88 (ISO 12213-3). Z at base conditions is computed by SGERG-88
    /// too, so base temperatures outside -23..65 degC are rejected.
    pub fn sgerg(
        s: Sgerg,
        base: BaseConditions,
        atmospheric_kpa: f64,
    ) -> Result<GasModel, GasError> {
        let mut m = GasModel {
            model: ZModel::Sgerg(s),
            detail: None,
            gerg: None,
            base,
            z_base: 1.0,
            atmospheric_kpa,
        };
        m.z_base = m.z(base.pressure_kpa, base.temperature_k)?;
        Ok(m)
    }

    /// Replaces the composition of the AGA 8 DETAIL or GERG-2008 calculator
    /// (the same one, reused; no allocation) and recomputes Z at base
    /// conditions. Fixed and SGERG-88 models have no composition.
    pub fn set_composition(&mut self, comp: &Composition) -> Result<(), GasError> {
        let set = match self.model {
            ZModel::Detail => self
                .detail
                .as_mut()
                .map(|d| d.set_composition(comp).map_err(|e| format!("{e:?}"))),
            ZModel::Gerg => self
                .gerg
                .as_mut()
                .map(|g| g.set_composition(comp).map_err(|e| format!("{e:?}"))),
            ZModel::Fixed { .. } | ZModel::Sgerg(_) => None,
        };
        match set {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(GasError::Composition(e)),
            None => {
                return Err(GasError::Composition(format!(
                    "method {} has no composition",
                    self.method_name()
                )));
            }
        }
        self.z_base = self.z(self.base.pressure_kpa, self.base.temperature_k)?;
        Ok(())
    }

    /// Short name of the Z method.
    pub fn method_name(&self) -> &'static str {
        match self.model {
            ZModel::Fixed { .. } => "fixed",
            ZModel::Detail => "aga8_detail",
            ZModel::Gerg => "gerg2008",
            ZModel::Sgerg(_) => "sgerg88",
        }
    }

    pub fn base(&self) -> BaseConditions {
        self.base
    }

    /// Z at base conditions.
    pub fn z_base(&self) -> f64 {
        self.z_base
    }

    /// Absolute pressure from a reading that is gauge (`gauge = true`) or absolute.
    pub fn absolute_kpa(&self, reading_kpa: f64, gauge: bool) -> f64 {
        if gauge {
            reading_kpa + self.atmospheric_kpa
        } else {
            reading_kpa
        }
    }

    /// Compression factor at absolute pressure (kPa) and temperature (K).
    pub fn z(&mut self, p_kpa: f64, t_k: f64) -> Result<f64, GasError> {
        if !(p_kpa > 0.0 && p_kpa.is_finite()) {
            return Err(GasError::NonPositivePressure(p_kpa));
        }
        if !(t_k > 0.0 && t_k.is_finite()) {
            return Err(GasError::NonPositiveTemperature(t_k));
        }
        match self.model {
            ZModel::Fixed { z } => Ok(z),
            ZModel::Sgerg(s) => s.z(p_kpa, t_k),
            ZModel::Detail => {
                let Some(d) = self.detail.as_mut() else {
                    return Err(GasError::NoConvergence("AGA 8 DETAIL (no calculator)"));
                };
                d.p = p_kpa;
                d.t = t_k;
                d.density()
                    .map_err(|_| GasError::NoConvergence("AGA 8 DETAIL density"))?;
                Ok(d.z)
            }
            ZModel::Gerg => {
                let Some(g) = self.gerg.as_mut() else {
                    return Err(GasError::NoConvergence("GERG-2008 (no calculator)"));
                };
                g.p = p_kpa;
                g.t = t_k;
                g.density(0)
                    .map_err(|_| GasError::NoConvergence("GERG-2008 density"))?;
                Ok(g.z)
            }
        }
    }

    /// AGA 7 conversion factor `V_b / V_f` at absolute pressure and temperature.
    pub fn conversion_factor(&mut self, p_kpa: f64, t_k: f64) -> Result<f64, GasError> {
        let z = self.z(p_kpa, t_k)?;
        Ok(p_kpa / self.base.pressure_kpa * self.base.temperature_k / t_k * self.z_base / z)
    }

    /// Gas held at base conditions (Sm³) by a geometric volume at P and T.
    pub fn linepack_sm3(&mut self, volume_m3: f64, p_kpa: f64, t_k: f64) -> Result<f64, GasError> {
        Ok(volume_m3 * self.conversion_factor(p_kpa, t_k)?)
    }
}

#[cfg(test)]
mod tests;
