//! SGERG-88 (ISO 12213-3, GB/T 17747.3): compression factor from the
//! superior heating value, relative density and the CO2 and H2 fractions.
//!
//! The mixture is modelled as an equivalent hydrocarbon plus N2, CO2, H2
//! and CO (CO = 0.0964 x H2). [`Sgerg::new`] solves the characterisation
//! once (step 1 of the standard: the equivalent hydrocarbon's molar heating
//! value and the N2 fraction); [`Sgerg::z`] then evaluates the virial
//! coefficients B(T) and C(T) and solves `Z = 1 + B rho + C rho^2` for the
//! given pressure. No allocation, no panics: out-of-range inputs are errors.
//!
//! Reference state of the inputs (as in the standard): Hs in MJ/m3 with
//! combustion at 25 degC and metering at 0 degC, 101.325 kPa; relative
//! density at 0 degC, 101.325 kPa. Valid range: 0-12 MPa, -23..65 degC.

use super::GasError;

// Second virial coefficient terms: [a0, a1, a2] of a0 + a1 T + a2 T^2 (m3/kmol).
const B11H0: [f64; 3] = [-4.254_68e-1, 2.865_00e-3, -4.620_73e-6];
const B11H1: [f64; 3] = [8.771_18e-4, -5.562_81e-6, 8.815_10e-9];
const B11H2: [f64; 3] = [-8.247_47e-7, 4.314_36e-9, -6.083_19e-12];
const B14: [f64; 3] = [-5.212_80e-2, 2.715_70e-4, -2.500_00e-7];
const B15: [f64; 3] = [-6.872_90e-2, -2.393_81e-6, 5.181_95e-7];
const B22: [f64; 3] = [-1.446_00e-1, 7.409_10e-4, -9.119_50e-7];
const B23: [f64; 3] = [-3.396_93e-1, 1.611_76e-3, -2.044_29e-6];
const B24: [f64; 3] = [1.200_00e-2, 0.0, 0.0];
const B33: [f64; 3] = [-8.683_40e-1, 4.037_60e-3, -5.165_70e-6];
const B44: [f64; 3] = [-1.105_96e-3, 8.133_85e-5, -9.872_20e-8];
const B55: [f64; 3] = [-1.308_20e-1, 6.025_40e-4, -6.443_00e-7];
// Third virial coefficient terms (m6/kmol2).
const C111H0: [f64; 3] = [-3.024_88e-1, 1.958_61e-3, -3.163_02e-6];
const C111H1: [f64; 3] = [6.464_22e-4, -4.228_76e-6, 6.881_57e-9];
const C111H2: [f64; 3] = [-3.328_05e-7, 2.231_60e-9, -3.677_13e-12];
const C222: [f64; 3] = [7.849_80e-3, -3.989_50e-5, 6.118_70e-8];
const C223: [f64; 3] = [5.520_66e-3, -1.686_09e-5, 1.571_69e-8];
const C233: [f64; 3] = [3.587_83e-3, 8.066_74e-6, -3.257_98e-8];
const C333: [f64; 3] = [2.051_30e-3, 3.488_80e-5, -8.370_30e-8];
const C444: [f64; 3] = [1.047_11e-3, -3.648_87e-6, 4.670_95e-9];
const C115: [f64; 3] = [7.367_48e-3, -2.765_78e-5, 3.430_51e-8];

/// Gas constant, bar m3 / (kmol K).
const R_BAR: f64 = 0.083_145_1;
/// Ideal molar volume at 0 degC, 101.325 kPa (m3/kmol).
const VM_N: f64 = 22.414_097;
/// Density of dry air at 0 degC, 101.325 kPa (kg/m3).
const RHO_AIR: f64 = 1.292_923;
const T0: f64 = 273.15;
const M_N2: f64 = 28.0135;
const M_CO2: f64 = 44.010;
const M_H2: f64 = 2.0159;
const M_CO: f64 = 28.010;
/// Molar superior heating values (MJ/kmol).
const H_H2: f64 = 285.83;
const H_CO: f64 = 282.98;

fn poly(c: [f64; 3], t: f64) -> f64 {
    c[0] + c[1] * t + c[2] * t * t
}

/// A characterised SGERG-88 gas: build once per gas quality, reuse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgerg {
    /// Inputs, kept for display.
    pub hs_mj_per_m3: f64,
    pub relative_density: f64,
    pub x_co2: f64,
    pub x_h2: f64,
    x_ch: f64,
    x_n2: f64,
    x_co: f64,
    h_ch: f64,
}

impl Sgerg {
    /// Characterises the gas (step 1 of ISO 12213-3). Errors when an input is
    /// outside the standard's range or the inputs contradict each other.
    pub fn new(
        hs_mj_per_m3: f64,
        relative_density: f64,
        x_co2: f64,
        x_h2: f64,
    ) -> Result<Self, GasError> {
        let bad = |what: &str, v: f64, range: &str| {
            Err(GasError::OutOfRange(format!(
                "SGERG-88 {what} = {v}, expected {range}"
            )))
        };
        if !(20.0..=48.0).contains(&hs_mj_per_m3) {
            return bad("hs_mj_per_m3", hs_mj_per_m3, "20..=48");
        }
        if !(0.55..=0.9).contains(&relative_density) {
            return bad("relative_density", relative_density, "0.55..=0.9");
        }
        if !(0.0..=0.3).contains(&x_co2) {
            return bad("co2 fraction", x_co2, "0..=0.3");
        }
        if !(0.0..=0.1).contains(&x_h2) {
            return bad("h2 fraction", x_h2, "0..=0.1");
        }
        let rho_n = relative_density * RHO_AIR;
        let x_co = 0.0964 * x_h2;
        let mut s = Sgerg {
            hs_mj_per_m3,
            relative_density,
            x_co2,
            x_h2,
            x_ch: 0.0,
            x_n2: 0.0,
            x_co,
            h_ch: 1000.0,
        };
        // Returns (density at normal conditions, x_ch, x_n2) for a trial h_ch.
        let trial = |h_ch: f64, rho_m_n: f64| {
            let m_ch = -2.709_328 + 0.021_062_199 * h_ch;
            let x_ch = (hs_mj_per_m3 - (x_h2 * H_H2 + x_co * H_CO) * rho_m_n) / h_ch / rho_m_n;
            let x_n2 = 1.0 - x_ch - x_co2 - x_h2 - x_co;
            let m = x_ch * m_ch + x_n2 * M_N2 + x_co2 * M_CO2 + x_h2 * M_H2 + x_co * M_CO;
            (m * rho_m_n, x_ch, x_n2)
        };
        let mut rho_m_n = 1.0 / (VM_N - 0.065);
        let mut converged = false;
        for _v in 0..20 {
            let mut inner = false;
            for _u in 0..20 {
                let (rho_u, x_ch, x_n2) = trial(s.h_ch, rho_m_n);
                s.x_ch = x_ch;
                s.x_n2 = x_n2;
                if (rho_n - rho_u).abs() <= 1e-6 {
                    inner = true;
                    break;
                }
                let (rho_d, _, _) = trial(s.h_ch + 1.0, rho_m_n);
                if rho_d == rho_u {
                    break;
                }
                s.h_ch += (rho_n - rho_u) / (rho_d - rho_u);
            }
            if !inner {
                break;
            }
            let b = s.b(T0)?;
            rho_m_n = 1.0 / (VM_N + b);
            let hs_v = (s.x_ch * s.h_ch + x_co * H_CO + x_h2 * H_H2) * rho_m_n;
            if (hs_mj_per_m3 - hs_v).abs() < 1e-4 {
                converged = true;
                break;
            }
        }
        if !converged {
            return Err(GasError::NoConvergence("SGERG-88 characterisation"));
        }
        if !(-0.01..=0.5).contains(&s.x_n2) || s.x_n2 + x_co2 > 0.5 {
            return Err(GasError::OutOfRange(format!(
                "SGERG-88 inputs imply an N2 fraction of {:.4} (N2 + CO2 = {:.4}); expected N2 in -0.01..=0.5 and N2 + CO2 <= 0.5",
                s.x_n2,
                s.x_n2 + x_co2
            )));
        }
        if relative_density <= 0.55 + 0.4 * s.x_n2 + 0.97 * x_co2 - 0.45 * x_h2 {
            return Err(GasError::OutOfRange(
                "SGERG-88 inputs are inconsistent (relative density too low for the heating value, CO2 and H2)".into(),
            ));
        }
        Ok(s)
    }

    /// Implied nitrogen mole fraction.
    pub fn x_n2(&self) -> f64 {
        self.x_n2
    }

    fn b(&self, t: f64) -> Result<f64, GasError> {
        let h = self.h_ch;
        let b11 = poly(B11H0, t) + poly(B11H1, t) * h + poly(B11H2, t) * h * h;
        let b22 = poly(B22, t);
        let b33 = poly(B33, t);
        if b11 * b33 < 0.0 {
            return Err(GasError::OutOfRange("SGERG-88: no solution for B13".into()));
        }
        let b12 = (0.72 + 1.875e-5 * (320.0 - t).powi(2)) * (b11 + b22) / 2.0;
        let b13 = -0.865 * (b11 * b33).sqrt();
        let (x1, x2, x3, x4, x5) = (self.x_ch, self.x_n2, self.x_co2, self.x_h2, self.x_co);
        Ok(b11 * x1 * x1
            + 2.0 * x1 * (b12 * x2 + b13 * x3 + poly(B14, t) * x4 + poly(B15, t) * x5)
            + b22 * x2 * x2
            + 2.0 * x2 * (poly(B23, t) * x3 + poly(B24, t) * x4)
            + b33 * x3 * x3
            + poly(B44, t) * x4 * x4
            + poly(B55, t) * x5 * x5)
    }

    fn c(&self, t: f64) -> f64 {
        let h = self.h_ch;
        let c111 = poly(C111H0, t) + poly(C111H1, t) * h + poly(C111H2, t) * h * h;
        let c222 = poly(C222, t);
        let c333 = poly(C333, t);
        let c444 = poly(C444, t);
        let y = 0.92 + 0.0013 * (t - 270.0);
        let c112 = y * (c111 * c111 * c222).cbrt();
        let c113 = 0.92 * (c111 * c111 * c333).cbrt();
        let c114 = 1.20 * (c111 * c111 * c444).cbrt();
        let c122 = y * (c111 * c222 * c222).cbrt();
        let c123 = 1.10 * (c111 * c222 * c333).cbrt();
        let c133 = 0.92 * (c111 * c333 * c333).cbrt();
        let (x1, x2, x3, x4, x5) = (self.x_ch, self.x_n2, self.x_co2, self.x_h2, self.x_co);
        x1.powi(3) * c111
            + 3.0 * x1 * x1 * (x2 * c112 + x3 * c113 + x4 * c114 + x5 * poly(C115, t))
            + 3.0 * x1 * x2 * x2 * c122
            + 6.0 * x1 * x2 * x3 * c123
            + 3.0 * x1 * x3 * x3 * c133
            + x2.powi(3) * c222
            + 3.0 * x2 * x2 * x3 * poly(C223, t)
            + 3.0 * x2 * x3 * x3 * poly(C233, t)
            + x3.powi(3) * c333
            + x4.powi(3) * c444
    }

    /// Compression factor at absolute pressure `p_kpa` and temperature `t_k`.
    pub fn z(&self, p_kpa: f64, t_k: f64) -> Result<f64, GasError> {
        let p_bar = p_kpa / 100.0;
        if !((0.0..=120.0).contains(&p_bar) && (-23.0..=65.0).contains(&(t_k - T0))) {
            return Err(GasError::OutOfRange(format!(
                "SGERG-88 valid for 0..=12000 kPa and -23..=65 degC, got {p_kpa} kPa, {:.2} degC",
                t_k - T0
            )));
        }
        if p_bar == 0.0 {
            return Ok(1.0);
        }
        let b = self.b(t_k)?;
        let c = self.c(t_k);
        let rt = R_BAR * t_k;
        let mut rho = 1.0 / (rt / p_bar + b);
        for _ in 0..50 {
            let z = 1.0 + b * rho + c * rho * rho;
            rho = p_bar / (rt * z);
            let z = 1.0 + b * rho + c * rho * rho;
            if (p_bar - rho * rt * z).abs() < 1e-8 {
                return Ok(z);
            }
        }
        Err(GasError::NoConvergence("SGERG-88 density"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ISO 12213-3:2006 Annex C (also AGA 8 and GB/T 17747.3): the six
    /// example gases (Hs MJ/m3, d, x_CO2, x_H2) and their Z at 60 and 120 bar
    /// for -3.15, 6.85, 16.85, 36.85, 56.85 degC, to five decimals.
    const CASES: [([f64; 4], [[f64; 5]; 2]); 6] = [
        (
            [40.66, 0.581, 0.006, 0.0],
            [
                [0.84084, 0.86202, 0.88007, 0.90881, 0.92996],
                [0.72146, 0.75969, 0.79257, 0.84492, 0.88322],
            ],
        ),
        (
            [40.62, 0.609, 0.005, 0.0],
            [
                [0.83397, 0.85615, 0.87500, 0.90491, 0.92690],
                [0.71140, 0.75079, 0.78472, 0.83877, 0.87832],
            ],
        ),
        (
            [43.53, 0.650, 0.015, 0.0],
            [
                [0.79415, 0.82210, 0.84553, 0.88223, 0.90893],
                [0.64322, 0.69062, 0.73196, 0.79778, 0.84554],
            ],
        ),
        (
            [34.16, 0.599, 0.016, 0.095],
            [
                [0.88569, 0.90150, 0.91507, 0.93684, 0.95302],
                [0.80843, 0.83613, 0.85999, 0.89827, 0.92662],
            ],
        ),
        (
            [36.64, 0.686, 0.076, 0.0],
            [
                [0.82664, 0.85017, 0.87003, 0.90124, 0.92394],
                [0.69557, 0.73828, 0.77463, 0.83166, 0.87269],
            ],
        ),
        (
            [36.58, 0.644, 0.011, 0.0],
            [
                [0.85406, 0.87388, 0.89071, 0.91736, 0.93690],
                [0.74939, 0.78473, 0.81490, 0.86266, 0.89749],
            ],
        ),
    ];

    #[test]
    fn matches_the_iso_12213_3_example_values() {
        let temps_c = [-3.15, 6.85, 16.85, 36.85, 56.85];
        let mut worst = 0.0f64;
        for (gas, rows) in CASES {
            let s = Sgerg::new(gas[0], gas[1], gas[2], gas[3]).expect("valid gas");
            for (pi, p_kpa) in [6000.0, 12000.0].into_iter().enumerate() {
                for (ti, tc) in temps_c.iter().enumerate() {
                    let z = s.z(p_kpa, tc + T0).expect("in range");
                    let want = rows[pi][ti];
                    worst = worst.max((z - want).abs());
                    assert!(
                        (z - want).abs() <= 0.6e-5,
                        "gas {gas:?} p {p_kpa} t {tc}: got {z:.6}, want {want}"
                    );
                }
            }
        }
        assert!(worst <= 0.6e-5);
    }

    #[test]
    fn rejects_out_of_range_and_inconsistent_inputs() {
        assert!(Sgerg::new(50.0, 0.6, 0.0, 0.0).is_err());
        assert!(Sgerg::new(40.0, 0.6, 0.4, 0.0).is_err());
        let s = Sgerg::new(40.66, 0.581, 0.006, 0.0).expect("valid");
        assert!(s.z(13_000.0, 280.0).is_err());
        assert!(s.z(5_000.0, 350.0).is_err());
        assert_eq!(s.z(0.0, 280.0).ok(), Some(1.0));
    }
}
