//! `gaswatch gas`: Z, the AGA 7 conversion factor and line pack for a gas,
//! a pressure and a temperature, as text or JSON.

use crate::engine::gas::config::SgergInputs;
use crate::engine::gas::{GasConfig, ZMethod};
use serde::Serialize;
use std::collections::BTreeMap;

/// Why the gas command cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum GasCliError {
    #[error("--composition: expected name=fraction pairs separated by commas, got {0:?}")]
    Composition(String),
    #[error("[gas] {0}: {1}")]
    Gas(String, String),
    #[error("{0}")]
    Config(String),
}

/// Arguments of `gaswatch gas`.
#[derive(Debug, Clone, clap::Args)]
pub struct GasArgs {
    /// Take `[gas]` (method, composition, base conditions) from this station config.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Z method: fixed, aga8_detail, gerg2008, sgerg88 (default: from --config, else
    /// sgerg88 with --hs, aga8_detail with --composition, else fixed).
    #[arg(long)]
    pub method: Option<String>,
    /// Composition as mole fractions, e.g. "methane=0.96,ethane=0.02,nitrogen=0.02".
    #[arg(long)]
    pub composition: Option<String>,
    /// SGERG-88: superior heating value, MJ/m3 (25 degC combustion, 0 degC metering).
    #[arg(long)]
    pub hs: Option<f64>,
    /// SGERG-88: relative density.
    #[arg(long)]
    pub d: Option<f64>,
    /// SGERG-88: CO2 mole fraction.
    #[arg(long, default_value_t = 0.0)]
    pub co2: f64,
    /// SGERG-88: H2 mole fraction.
    #[arg(long, default_value_t = 0.0)]
    pub h2: f64,
    /// Fixed Z (method fixed).
    #[arg(long)]
    pub z: Option<f64>,
    /// Line pressure, kPa (gauge unless --absolute).
    #[arg(long)]
    pub pressure_kpa: f64,
    /// The pressure is absolute.
    #[arg(long)]
    pub absolute: bool,
    /// Line temperature, degC (negative values: `--temperature-c=-5`).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature_c: f64,
    /// Geometric volume for the line pack, m3.
    #[arg(long, default_value_t = 1.0)]
    pub volume_m3: f64,
    /// Base temperature, degC (default 20, or from --config).
    #[arg(long)]
    pub base_temperature_c: Option<f64>,
    /// Base pressure, kPa absolute (default 101.325, or from --config).
    #[arg(long)]
    pub base_pressure_kpa: Option<f64>,
    /// Atmospheric pressure, kPa (default 101.325, or from --config).
    #[arg(long)]
    pub atmospheric_kpa: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GasReport {
    pub method: &'static str,
    pub pressure_kpa_abs: f64,
    pub temperature_k: f64,
    pub base_pressure_kpa: f64,
    pub base_temperature_c: f64,
    pub z: f64,
    pub z_base: f64,
    /// V_b / V_f.
    pub conversion_factor: f64,
    pub volume_m3: f64,
    pub linepack_sm3: f64,
}

fn parse_composition(s: &str) -> Result<BTreeMap<String, f64>, GasCliError> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| GasCliError::Composition(part.to_string()))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| GasCliError::Composition(part.to_string()))?;
        m.insert(k.trim().to_string(), v);
    }
    Ok(m)
}

/// Computes the report from the arguments (and the config's `[gas]`).
pub fn run(args: &GasArgs, from_config: Option<GasConfig>) -> Result<GasReport, GasCliError> {
    let mut g = from_config.unwrap_or_default();
    if let Some(c) = &args.composition {
        g.composition = parse_composition(c)?;
        g.method = ZMethod::Aga8Detail;
    }
    if let Some(hs) = args.hs {
        g.sgerg = Some(SgergInputs {
            hs_mj_per_m3: hs,
            relative_density: args.d.unwrap_or(f64::NAN),
            co2: args.co2,
            h2: args.h2,
        });
        g.method = ZMethod::Sgerg88;
    }
    if let Some(z) = args.z {
        g.z = Some(z);
        g.method = ZMethod::Fixed;
    }
    if let Some(m) = &args.method {
        g.method = match m.as_str() {
            "fixed" => ZMethod::Fixed,
            "aga8_detail" => ZMethod::Aga8Detail,
            "gerg2008" => ZMethod::Gerg2008,
            "sgerg88" => ZMethod::Sgerg88,
            other => {
                return Err(GasCliError::Config(format!(
                    "--method: expected fixed, aga8_detail, gerg2008 or sgerg88, got {other:?}"
                )));
            }
        };
    }
    if let Some(t) = args.base_temperature_c {
        g.base_temperature_c = t;
    }
    if let Some(p) = args.base_pressure_kpa {
        g.base_pressure_kpa = p;
    }
    if let Some(p) = args.atmospheric_kpa {
        g.atmospheric_pressure_kpa = p;
    }
    if let Some((k, m)) = g.problems().into_iter().next() {
        return Err(GasCliError::Gas(k, m));
    }
    let mut model = g.build().map_err(|(k, m)| GasCliError::Gas(k, m))?;
    let p = model.absolute_kpa(args.pressure_kpa, !args.absolute);
    let t = args.temperature_c + 273.15;
    let err = |e: crate::engine::gas::GasError| GasCliError::Config(e.to_string());
    let z = model.z(p, t).map_err(err)?;
    let f = model.conversion_factor(p, t).map_err(err)?;
    Ok(GasReport {
        method: model.method_name(),
        pressure_kpa_abs: p,
        temperature_k: t,
        base_pressure_kpa: g.base_pressure_kpa,
        base_temperature_c: g.base_temperature_c,
        z,
        z_base: model.z_base(),
        conversion_factor: f,
        volume_m3: args.volume_m3,
        linepack_sm3: f * args.volume_m3,
    })
}

impl std::fmt::Display for GasReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "method             {}", self.method)?;
        writeln!(
            f,
            "line               {:.3} kPa abs, {:.2} K ({:.2} degC)",
            self.pressure_kpa_abs,
            self.temperature_k,
            self.temperature_k - 273.15
        )?;
        writeln!(
            f,
            "base               {:.3} kPa abs, {:.2} degC",
            self.base_pressure_kpa, self.base_temperature_c
        )?;
        writeln!(f, "Z                  {:.6}", self.z)?;
        writeln!(f, "Z base             {:.6}", self.z_base)?;
        writeln!(f, "conversion Vb/Vf   {:.6}", self.conversion_factor)?;
        write!(
            f,
            "line pack          {:.3} Sm3 in {} m3",
            self.linepack_sm3, self.volume_m3
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: GasArgs,
    }

    fn args(s: &[&str]) -> GasArgs {
        T::parse_from(std::iter::once("gas").chain(s.iter().copied())).a
    }

    #[test]
    fn sgerg_inputs_give_the_iso_value_and_ideal_gas_is_exact() {
        let r = run(
            &args(&[
                "--hs",
                "40.66",
                "--d",
                "0.581",
                "--co2",
                "0.006",
                "--pressure-kpa",
                "6000",
                "--absolute",
                "--temperature-c",
                "-3.15",
            ]),
            None,
        )
        .expect("valid");
        assert_eq!(r.method, "sgerg88");
        assert!((r.z - 0.84084).abs() < 1e-5, "{r:?}");
        let r = run(
            &args(&[
                "--pressure-kpa",
                "1500",
                "--temperature-c",
                "20",
                "--volume-m3",
                "50",
            ]),
            None,
        )
        .expect("valid");
        assert!((r.conversion_factor - 1601.325 / 101.325).abs() < 1e-12);
        assert!((r.linepack_sm3 - 50.0 * 1601.325 / 101.325).abs() < 1e-9);
        let json = serde_json::to_string(&r).expect("json");
        assert!(json.contains("\"method\":\"fixed\""));
    }

    #[test]
    fn bad_inputs_name_the_key() {
        let e = run(
            &args(&[
                "--composition",
                "methane=0.5",
                "--pressure-kpa",
                "1",
                "--temperature-c",
                "1",
            ]),
            None,
        )
        .expect_err("sum is 0.5");
        assert!(e.to_string().contains("composition"), "{e}");
        let e = run(
            &args(&[
                "--composition",
                "methane",
                "--pressure-kpa",
                "1",
                "--temperature-c",
                "1",
            ]),
            None,
        )
        .expect_err("no =");
        assert!(e.to_string().contains("--composition"), "{e}");
    }
}
