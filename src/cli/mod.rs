//! Command-line tools built on the library (not the daemon): `gaswatch
//! replay` and its detection scorecard. Kept in the library so tests and
//! benches drive exactly what the command runs.

pub mod replay;
pub mod scorecard;
