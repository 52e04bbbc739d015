//! Engineer-facing commands that are not the daemon: `gaswatch gas` (check
//! a flow computer's Z and conversion factor in the field) and `gaswatch
//! report` (hourly and daily balance reports). Wiring of arguments to pure
//! functions; printing happens in `main.rs`.

pub mod gas;
pub mod report;
pub mod scorecard;
