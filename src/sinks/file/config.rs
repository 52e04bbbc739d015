//! Configuration of the local file sink (`[sinks.file]`).

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Folder for `telemetry-YYYY-MM-DD.lp` (line protocol), `alarms.jsonl` and
    /// `balance.jsonl`. Relative paths are relative to the working directory.
    pub dir: PathBuf,
}
