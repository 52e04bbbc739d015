//! Station physics profiles beyond the city gate, selected by the station
//! config's `[station] kind`:
//!
//! - `cng_mother` ([`CngModel`]): pipeline gas is compressed into tube
//!   trailers at the filling posts (one per outlet meter). Each post fills a
//!   trailer from its residual pressure (2-5 MPa) to 20 MPa; the
//!   compressor's flow falls as the pressure rises (2400 Sm3/h at 0 to 60 %
//!   of that at 20 MPa); a full trailer is swapped for an empty one (20-40
//!   min with the post idle). The compressor runs while any post fills, so
//!   it cycles with the swaps. The discharge header reads the highest
//!   filling trailer's pressure plus 150 kPa of line loss and holds its last
//!   value while the compressor is stopped. The inlet carries the sum of the
//!   post flows (plus a leak), from a network at about 1.2 MPa that sags
//!   with the flow.
//! - `lng` and `lcng` ([`LngModel`]): an LNG tank (60 m3) feeds a pump and
//!   an ambient-air vaporiser. Send-out follows a fuelling day (about 450
//!   Sm3/h at night to 1350 in the afternoon); the level falls by send-out /
//!   600 (Sm3 of gas per m3 of LNG) and a trailer refills the tank (30 m3/h,
//!   45 m3) an hour or two after it reaches 25 %. The vaporiser outlet is
//!   colder than ambient by 5 K plus 15 K at full load (1500 Sm3/h); ambient
//!   swings 10 +- 6 degC over the day. The CNG header (buffer of 4 m3) is
//!   kept between 18 and 21.5 MPa by the pump cycling. Tank pressure sits
//!   at 550-750 kPa g, lower under load and while unloading.
//! - anything else: the city-gate model of `physics.rs`.
//!
//! L-CNG stations have no pipeline meters, so their points are bound by the
//! ISA 5.1 letters of their names (first letter = measured variable):
//! `LT*` tank level, `PT*TANK*` tank pressure, other `PT*` the dispenser
//! header, `TT*VAP*` vaporiser outlet, other `TT*` ambient, `FT*` send-out.
//!
//! Pure and deterministic: state changes only in `advance`, random choices
//! (residual pressures, swap and delivery times, starting points) come from
//! an RNG seeded by the station seed, separate from the meter-noise RNG, so
//! the city-gate model's values do not change with this module. The state
//! is integrated in sub-steps of at most 5 s, so the same seed and the same
//! steps give the same values.

/// Base pressure, kPa absolute.
const P_BASE_KPA: f64 = 101.325;
/// Base temperature, K.
const T_BASE_K: f64 = 293.15;
/// Longest integration sub-step, s.
const SUB_STEP_S: f64 = 5.0;

/// Which model a station runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    CityGate,
    CngMother,
    Lng,
}

impl ProfileKind {
    /// The model for a `[station] kind`.
    pub fn from_station_kind(kind: &str) -> ProfileKind {
        match kind {
            "cng_mother" => ProfileKind::CngMother,
            "lng" | "lcng" => ProfileKind::Lng,
            _ => ProfileKind::CityGate,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::CityGate => "city_gate",
            ProfileKind::CngMother => "cng_mother",
            ProfileKind::Lng => "lng",
        }
    }
}

/// A signal of the L-CNG model a point can serve (bound by tag letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LngSignal {
    TankLevel,
    TankPressure,
    HeaderPressure,
    VaporiserOutlet,
    Ambient,
    SendOut,
}

impl LngSignal {
    /// The signal a point named `name` measures, by its ISA letters.
    pub fn for_point(name: &str) -> Option<LngSignal> {
        let n = name.to_ascii_uppercase();
        if n.starts_with("LT") {
            Some(LngSignal::TankLevel)
        } else if n.starts_with("PT") && n.contains("TANK") {
            Some(LngSignal::TankPressure)
        } else if n.starts_with("PT") {
            Some(LngSignal::HeaderPressure)
        } else if n.starts_with("TT") && n.contains("VAP") {
            Some(LngSignal::VaporiserOutlet)
        } else if n.starts_with("TT") {
            Some(LngSignal::Ambient)
        } else if n.starts_with("FT") {
            Some(LngSignal::SendOut)
        } else {
            None
        }
    }

    /// How the meter noise applies: pressures and flows in % of reading,
    /// temperatures and levels in absolute units.
    pub(crate) fn is_relative(self) -> bool {
        matches!(
            self,
            LngSignal::TankPressure | LngSignal::HeaderPressure | LngSignal::SendOut
        )
    }
}

/// One filling post of the CNG mother station.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Post {
    /// A trailer is connected and being filled.
    pub filling: bool,
    /// Pressure of the trailer at the post, kPa g (0 while swapping).
    pub trailer_kpa: f64,
    /// Flow into the trailer, Sm3/h (0 while swapping).
    pub flow_sm3_per_h: f64,
    /// While swapping: seconds until the next trailer is connected.
    pub swap_left_s: f64,
    /// Trailers filled so far at this post.
    pub trailers_filled: u32,
}

/// Ground truth of the CNG mother station model.
#[derive(Debug, Clone, PartialEq)]
pub struct CngModel {
    pub posts: Vec<Post>,
    /// Discharge header pressure, kPa g.
    pub discharge_kpa: f64,
    /// Whether the compressor runs (some post is filling).
    pub compressor_running: bool,
    /// Compressor starts so far.
    pub compressor_starts: u32,
    /// Network (inlet) pressure, kPa g.
    pub inlet_kpa: f64,
    /// Inlet (ambient) temperature, degC.
    pub inlet_c: f64,
    rng: fastrand::Rng,
}

/// Trailer water volume, m3.
const TRAILER_M3: f64 = 18.0;
/// Fill target, kPa g.
const FILL_TARGET_KPA: f64 = 20_000.0;
/// Compressor flow per post at 0 kPa, Sm3/h.
const POST_MAX_SM3_PER_H: f64 = 2_400.0;
/// Gas temperature after the compressor's after-cooler, degC.
pub const DISCHARGE_C: f64 = 25.0;
/// Line loss from the compressor to the trailer, kPa.
const HEADER_LOSS_KPA: f64 = 150.0;

impl CngModel {
    pub(crate) fn new(posts: usize, seed: u64) -> CngModel {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x00C0_FFEE_C0DE_0001);
        let posts = (0..posts)
            .map(|_| {
                let residual = 2_000.0 + 3_000.0 * rng.f64();
                // Start somewhere in a fill (or in a swap), by the seed.
                if rng.f64() < 0.8 {
                    Post {
                        filling: true,
                        trailer_kpa: residual + rng.f64() * (FILL_TARGET_KPA - residual),
                        flow_sm3_per_h: 0.0,
                        swap_left_s: 0.0,
                        trailers_filled: 0,
                    }
                } else {
                    Post {
                        filling: false,
                        trailer_kpa: 0.0,
                        flow_sm3_per_h: 0.0,
                        swap_left_s: rng.f64() * 2_400.0,
                        trailers_filled: 0,
                    }
                }
            })
            .collect();
        let mut m = CngModel {
            posts,
            discharge_kpa: FILL_TARGET_KPA,
            compressor_running: false,
            compressor_starts: 0,
            inlet_kpa: 1_200.0,
            inlet_c: 12.0,
            rng,
        };
        m.settle(0.0);
        m.compressor_starts = 0;
        m
    }

    fn post_flow(p_kpa: f64) -> f64 {
        POST_MAX_SM3_PER_H * (1.0 - 0.4 * (p_kpa / FILL_TARGET_KPA).clamp(0.0, 1.0))
    }

    /// Flows, header and inlet from the posts' state at time `t_s`.
    fn settle(&mut self, t_s: f64) {
        let mut header: Option<f64> = None;
        for p in &mut self.posts {
            p.flow_sm3_per_h = if p.filling {
                Self::post_flow(p.trailer_kpa)
            } else {
                0.0
            };
            if p.filling {
                header = Some(header.map_or(p.trailer_kpa, |h: f64| h.max(p.trailer_kpa)));
            }
        }
        if let Some(h) = header {
            self.discharge_kpa = h + HEADER_LOSS_KPA;
        }
        let running = header.is_some();
        if running && !self.compressor_running {
            self.compressor_starts += 1;
        }
        self.compressor_running = running;
        let total: f64 = self.posts.iter().map(|p| p.flow_sm3_per_h).sum();
        let capacity = POST_MAX_SM3_PER_H * self.posts.len().max(1) as f64;
        let h = t_s / 3600.0;
        self.inlet_kpa = 1_200.0 - 80.0 * total / capacity
            + 30.0 * (std::f64::consts::TAU * t_s / (6.0 * 3600.0)).sin();
        self.inlet_c = 12.0 + 5.0 * (std::f64::consts::TAU * (h - 9.0) / 24.0).sin();
    }

    /// Integrates from `t0_s` to `t1_s`.
    pub(crate) fn advance(&mut self, t0_s: f64, t1_s: f64) {
        let mut t = t0_s;
        while t < t1_s {
            let dt = (t1_s - t).min(SUB_STEP_S);
            let k = P_BASE_KPA * (DISCHARGE_C + 273.15) / (T_BASE_K * TRAILER_M3);
            for i in 0..self.posts.len() {
                let p = self.posts[i];
                if p.filling {
                    let q = Self::post_flow(p.trailer_kpa) / 3600.0;
                    let next = p.trailer_kpa + q * k * dt;
                    if next >= FILL_TARGET_KPA {
                        // Full: disconnect and fetch the next trailer.
                        let post = &mut self.posts[i];
                        post.filling = false;
                        post.trailer_kpa = 0.0;
                        post.trailers_filled += 1;
                        post.swap_left_s = 1_200.0 + 1_200.0 * self.rng.f64();
                    } else {
                        self.posts[i].trailer_kpa = next;
                    }
                } else {
                    let left = p.swap_left_s - dt;
                    if left <= 0.0 {
                        let post = &mut self.posts[i];
                        post.filling = true;
                        post.swap_left_s = 0.0;
                        post.trailer_kpa = 2_000.0 + 3_000.0 * self.rng.f64();
                    } else {
                        self.posts[i].swap_left_s = left;
                    }
                }
            }
            t += dt;
            self.settle(t);
        }
    }

    /// Total flow into the trailers, Sm3/h.
    pub fn total_flow_sm3_per_h(&self) -> f64 {
        self.posts.iter().map(|p| p.flow_sm3_per_h).sum()
    }
}

/// Ground truth of the L-CNG model.
#[derive(Debug, Clone, PartialEq)]
pub struct LngModel {
    /// Tank level, % of its volume.
    pub level_percent: f64,
    /// Tank pressure, kPa g.
    pub tank_kpa: f64,
    /// Gas sent out through the vaporiser, Sm3/h.
    pub send_out_sm3_per_h: f64,
    /// Ambient temperature, degC.
    pub ambient_c: f64,
    /// Vaporiser outlet temperature, degC.
    pub vaporiser_out_c: f64,
    /// Dispenser header pressure, kPa g.
    pub header_kpa: f64,
    /// Whether the LNG pump runs (header below its band or refilling it).
    pub pump_running: bool,
    /// A trailer is unloading into the tank.
    pub unloading: bool,
    /// Seconds until an ordered trailer arrives (when one is ordered).
    pub trailer_due_s: Option<f64>,
    /// LNG still to unload from the current trailer, m3.
    pub unload_left_m3: f64,
    /// Trailers unloaded so far.
    pub deliveries: u32,
    phases: [f64; 2],
    rng: fastrand::Rng,
}

const TANK_M3: f64 = 60.0;
/// Sm3 of gas per m3 of LNG.
const GAS_PER_LNG: f64 = 600.0;
const SEND_OUT_SM3_PER_H: f64 = 900.0;
const VAPORISER_SM3_PER_H: f64 = 1_500.0;
const REORDER_PERCENT: f64 = 25.0;
const UNLOAD_M3_PER_H: f64 = 30.0;
const TRAILER_LNG_M3: f64 = 45.0;
const UNLOAD_STOP_PERCENT: f64 = 88.0;
const BUFFER_M3: f64 = 4.0;
const PUMP_SM3_PER_H: f64 = 2_500.0;
const HEADER_LOW_KPA: f64 = 18_000.0;
const HEADER_HIGH_KPA: f64 = 21_500.0;

impl LngModel {
    pub(crate) fn new(seed: u64) -> LngModel {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x00C0_FFEE_C0DE_0002);
        let phases = [
            rng.f64() * std::f64::consts::TAU,
            rng.f64() * std::f64::consts::TAU,
        ];
        let mut m = LngModel {
            level_percent: 55.0 + 30.0 * rng.f64(),
            tank_kpa: 650.0,
            send_out_sm3_per_h: 0.0,
            ambient_c: 10.0,
            vaporiser_out_c: 0.0,
            header_kpa: HEADER_LOW_KPA + rng.f64() * (HEADER_HIGH_KPA - HEADER_LOW_KPA),
            pump_running: false,
            unloading: false,
            trailer_due_s: None,
            unload_left_m3: 0.0,
            deliveries: 0,
            phases,
            rng,
        };
        m.settle(0.0);
        m
    }

    /// Send-out at `t_s`: a fuelling day plus small fluctuations.
    fn send_out_at(&self, t_s: f64) -> f64 {
        use std::f64::consts::TAU;
        let h = t_s / 3600.0;
        let day = 1.0 + 0.5 * (TAU * (h - 8.0) / 24.0).sin();
        let wiggle = 1.0
            + 0.06 * (TAU * t_s / 300.0 + self.phases[0]).sin()
            + 0.03 * (TAU * t_s / 47.0 + self.phases[1]).sin();
        SEND_OUT_SM3_PER_H * day * wiggle
    }

    /// Values that follow from time and state (no integration).
    fn settle(&mut self, t_s: f64) {
        use std::f64::consts::TAU;
        let h = t_s / 3600.0;
        self.send_out_sm3_per_h = self.send_out_at(t_s);
        self.ambient_c = 10.0 + 6.0 * (TAU * (h - 9.0) / 24.0).sin();
        let load = (self.send_out_sm3_per_h / VAPORISER_SM3_PER_H).clamp(0.0, 1.0);
        self.vaporiser_out_c = Self::vaporiser_out(self.ambient_c, load);
        self.tank_kpa = 550.0 + 200.0 * (1.0 - load) - if self.unloading { 80.0 } else { 0.0 };
    }

    /// Vaporiser outlet for an ambient temperature and a load (0..1).
    pub fn vaporiser_out(ambient_c: f64, load: f64) -> f64 {
        ambient_c - (5.0 + 15.0 * load)
    }

    /// Integrates from `t0_s` to `t1_s`.
    pub(crate) fn advance(&mut self, t0_s: f64, t1_s: f64) {
        let mut t = t0_s;
        while t < t1_s {
            let dt = (t1_s - t).min(SUB_STEP_S);
            let send = self.send_out_at(t);
            let mut liquid_m3 = self.level_percent / 100.0 * TANK_M3;
            liquid_m3 -= send / GAS_PER_LNG * dt / 3600.0;
            if self.unloading {
                let d = (UNLOAD_M3_PER_H * dt / 3600.0).min(self.unload_left_m3);
                liquid_m3 += d;
                self.unload_left_m3 -= d;
                if self.unload_left_m3 <= 0.0 || liquid_m3 / TANK_M3 * 100.0 >= UNLOAD_STOP_PERCENT
                {
                    self.unloading = false;
                    self.unload_left_m3 = 0.0;
                    self.deliveries += 1;
                }
            } else if let Some(due) = self.trailer_due_s {
                let left = due - dt;
                if left <= 0.0 {
                    self.trailer_due_s = None;
                    self.unloading = true;
                    self.unload_left_m3 = TRAILER_LNG_M3;
                } else {
                    self.trailer_due_s = Some(left);
                }
            } else if liquid_m3 / TANK_M3 * 100.0 <= REORDER_PERCENT {
                self.trailer_due_s = Some(3_600.0 + 3_600.0 * self.rng.f64());
            }
            self.level_percent = (liquid_m3 / TANK_M3 * 100.0).clamp(0.0, 100.0);
            // CNG header buffer: the pump refills it between its limits.
            let k = P_BASE_KPA * (DISCHARGE_C + 273.15) / (T_BASE_K * BUFFER_M3);
            if self.header_kpa <= HEADER_LOW_KPA {
                self.pump_running = true;
            } else if self.header_kpa >= HEADER_HIGH_KPA {
                self.pump_running = false;
            }
            let pump = if self.pump_running {
                PUMP_SM3_PER_H
            } else {
                0.0
            };
            self.header_kpa += (pump - send) / 3600.0 * k * dt;
            t += dt;
            self.settle(t);
        }
    }

    /// The value of `signal` now (before meter noise).
    pub fn signal(&self, signal: LngSignal) -> f64 {
        match signal {
            LngSignal::TankLevel => self.level_percent,
            LngSignal::TankPressure => self.tank_kpa,
            LngSignal::HeaderPressure => self.header_kpa,
            LngSignal::VaporiserOutlet => self.vaporiser_out_c,
            LngSignal::Ambient => self.ambient_c,
            LngSignal::SendOut => self.send_out_sm3_per_h,
        }
    }
}

/// The model a station runs beside its meters.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    CityGate,
    Cng(CngModel),
    Lng(LngModel),
}

impl Profile {
    pub(crate) fn new(kind: ProfileKind, outlet_meters: usize, seed: u64) -> Profile {
        match kind {
            ProfileKind::CityGate => Profile::CityGate,
            ProfileKind::CngMother => Profile::Cng(CngModel::new(outlet_meters.max(1), seed)),
            ProfileKind::Lng => Profile::Lng(LngModel::new(seed)),
        }
    }

    pub fn kind(&self) -> ProfileKind {
        match self {
            Profile::CityGate => ProfileKind::CityGate,
            Profile::Cng(_) => ProfileKind::CngMother,
            Profile::Lng(_) => ProfileKind::Lng,
        }
    }

    /// The model's state as JSON, for the ground truth (`null` for the city gate).
    pub fn truth_json(&self) -> serde_json::Value {
        match self {
            Profile::CityGate => serde_json::Value::Null,
            Profile::Cng(m) => serde_json::json!({
                "profile": "cng_mother",
                "compressor_running": m.compressor_running,
                "discharge_kpa": m.discharge_kpa,
                "inlet_kpa": m.inlet_kpa,
                "posts": m.posts.iter().map(|p| serde_json::json!({
                    "filling": p.filling,
                    "trailer_kpa": p.trailer_kpa,
                    "flow_sm3_per_h": p.flow_sm3_per_h,
                    "trailers_filled": p.trailers_filled,
                })).collect::<Vec<_>>(),
            }),
            Profile::Lng(m) => serde_json::json!({
                "profile": "lng",
                "level_percent": m.level_percent,
                "tank_kpa": m.tank_kpa,
                "send_out_sm3_per_h": m.send_out_sm3_per_h,
                "ambient_c": m.ambient_c,
                "vaporiser_out_c": m.vaporiser_out_c,
                "header_kpa": m.header_kpa,
                "pump_running": m.pump_running,
                "unloading": m.unloading,
                "deliveries": m.deliveries,
            }),
        }
    }
}
