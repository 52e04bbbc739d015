//! Live gas composition from gas-chromatograph points (`[gas.gc]`).
//!
//! An analysis is the set of component points as one input left them. When
//! every component point is GOOD and they add up to within the tolerance of
//! 100 %, the analysis (normalised) replaces the composition of the one
//! AGA 8 DETAIL / GERG-2008 calculator (`GasModel::set_composition`: the
//! same calculator, no allocation), unless it is the one already in use.
//! When any component is BAD or STALE, or an analysis does not add up, the
//! configured `[gas.composition]` is put back and the source says why
//! (the engine raises `<station>/gas/GC_FALLBACK`); the next good analysis
//! clears it. Before the first analysis the configured composition is used
//! without a flag (a GC that never answers shows as its device's comm loss).

use super::gas::GasModel;
use super::gas::config::component_slot;
use super::plan::GcPlan;
use crate::model::Quality;
use aga8::composition::Composition;

/// Which composition Z is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GasSource {
    /// `[gas.composition]`: no GC analysis yet.
    Configured,
    /// The latest good GC analysis.
    Live,
    /// `[gas.composition]` again, because the GC's data is not usable.
    Fallback(&'static str),
}

/// Run-time state of the live composition.
#[derive(Clone)]
pub struct GcState {
    /// A component point changed since the last look.
    pub dirty: bool,
    source: GasSource,
    /// The configured composition (the fallback).
    configured: Option<Composition>,
    /// Mole fractions of the analysis in use, per component (reused).
    applied: Vec<f64>,
    next: Vec<f64>,
    /// Analyses applied, and fallbacks entered.
    pub updates: u64,
    pub fallbacks: u64,
}

impl std::fmt::Debug for GcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcState")
            .field("source", &self.source)
            .field("applied", &self.applied)
            .field("updates", &self.updates)
            .field("fallbacks", &self.fallbacks)
            .finish()
    }
}

impl GcState {
    pub fn new(plan: &GcPlan, configured: Option<Composition>) -> GcState {
        GcState {
            dirty: false,
            source: GasSource::Configured,
            configured,
            applied: vec![f64::NAN; plan.components.len()],
            next: vec![0.0; plan.components.len()],
            updates: 0,
            fallbacks: 0,
        }
    }

    pub fn source(&self) -> GasSource {
        self.source
    }

    /// Looks at the component points (`value(tag)` gives value and quality)
    /// and switches the gas model's composition if needed. Returns
    /// `Some(true)` when the fallback starts, `Some(false)` when it ends.
    pub fn update(
        &mut self,
        plan: &GcPlan,
        value: impl Fn(usize) -> (f64, Quality),
        gas: &mut GasModel,
    ) -> Option<bool> {
        self.dirty = false;
        let mut sum = 0.0;
        let mut usable = true;
        for (i, (_, tag)) in plan.components.iter().enumerate() {
            let (v, q) = value(tag.0 as usize);
            let x = v * plan.to_fraction;
            if q != Quality::Good || !x.is_finite() || x < 0.0 {
                usable = false;
                break;
            }
            self.next[i] = x;
            sum += x;
        }
        let reason = if !usable {
            Some("a GC component is not good (bad or stale)")
        } else if (sum - 1.0).abs() > plan.sum_tolerance || sum <= 0.0 {
            Some("the GC analysis does not add up to 100 %")
        } else {
            None
        };
        let was_fallback = matches!(self.source, GasSource::Fallback(_));
        let Some(reason) = reason else {
            if self.source == GasSource::Live && self.next == self.applied {
                return None;
            }
            let mut comp = Composition::default();
            for (i, (name, _)) in plan.components.iter().enumerate() {
                if let Some(slot) = component_slot(&mut comp, name) {
                    *slot = self.next[i] / sum;
                }
            }
            if gas.set_composition(&comp).is_ok() {
                self.applied.copy_from_slice(&self.next);
                self.source = GasSource::Live;
                self.updates += 1;
                return was_fallback.then_some(false);
            }
            return self.fall_back("the GC analysis is not a valid composition", gas);
        };
        self.fall_back(reason, gas)
    }

    fn fall_back(&mut self, reason: &'static str, gas: &mut GasModel) -> Option<bool> {
        let was_fallback = matches!(self.source, GasSource::Fallback(_));
        if self.source == GasSource::Configured {
            // Nothing live to leave; but say why the GC is not used.
            self.source = GasSource::Fallback(reason);
            self.fallbacks += 1;
            return Some(true);
        }
        if !was_fallback {
            if let Some(c) = &self.configured {
                // The configured composition built the model at start: valid.
                let _ = gas.set_composition(c);
            }
            self.applied.fill(f64::NAN);
            self.fallbacks += 1;
        }
        self.source = GasSource::Fallback(reason);
        (!was_fallback).then_some(true)
    }
}
