//! The engine: pure, synchronous, deterministic. Inputs in, samples, alarm
//! events and balance results out. No I/O, no clock reads (`now` is passed
//! in), no logging, no allocation per register in steady state.

pub mod plan;

pub use plan::{BlockPlan, DevicePlan, EnginePlan, PointDecoder, TagInfo};
