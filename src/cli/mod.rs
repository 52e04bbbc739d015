//! Command-line tools built on the library (not the daemon): `gaswatch
//! replay` and its detection scorecard; `gaswatch gas` (check a flow
//! computer's Z and conversion factor in the field), `gaswatch report`
//! (hourly and daily balance reports) and `gaswatch leak-scorecard`. Kept in
//! the library so tests and benches drive exactly what the command runs.

pub mod alarm_report;
pub mod gas;
pub mod leak_scorecard;
pub mod replay;
pub mod replay_influx;
pub mod report;
pub mod scorecard;
