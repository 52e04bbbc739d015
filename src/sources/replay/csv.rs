//! Reads wide CSV into [`Input::Values`]: one row per time, one column per
//! point.
//!
//! Layout: a header row whose first column is `time` and whose other columns
//! are point names exactly as in the station config. `time` is RFC 3339
//! (`2026-01-05T08:00:00Z`, `2026-01-05T08:00:00.250+08:00`) or integer epoch
//! milliseconds. A cell is a number (a GOOD sample) or empty (no sample at
//! that time). A column whose name is not a configured point is reported
//! once (line 1) and ignored; a bad cell is reported with its line and
//! column and only that cell is dropped; a bad `time` drops the row.

use super::{EventReader, ReplayError, ReplayEvent, RowError};
use crate::engine::EnginePlan;
use crate::model::{Input, Quality, TagId, Timestamp};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// Parses `time`: integer epoch milliseconds or RFC 3339 with `Z`, a
/// `+hh:mm`/`-hh:mm` offset, or no zone (taken as UTC).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let s = s.trim();
    if !s.is_empty()
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        let ms: i64 = s
            .parse()
            .map_err(|_| format!("time `{s}`: epoch milliseconds out of range"))?;
        return ms
            .checked_mul(1_000_000)
            .map(Timestamp)
            .ok_or_else(|| format!("time `{s}`: epoch milliseconds out of range"));
    }
    let bad = || format!("time `{s}` is neither RFC 3339 nor epoch milliseconds");
    // A numeric offset after the time of day: `...T08:00:00+08:00`.
    let (local, offset_s) = match s.len().checked_sub(6).map(|i| (i, s.as_bytes()[i])) {
        Some((i, sign @ (b'+' | b'-'))) if s.as_bytes()[i + 3] == b':' && i > 10 => {
            let h: i64 = s[i + 1..i + 3].parse().map_err(|_| bad())?;
            let m: i64 = s[i + 4..].parse().map_err(|_| bad())?;
            let off = (h * 3600 + m * 60) * if sign == b'+' { 1 } else { -1 };
            (&s[..i], off)
        }
        _ => (s, 0),
    };
    let t = humantime::parse_rfc3339_weak(local.trim_end_matches('Z')).map_err(|_| bad())?;
    Ok(Timestamp(
        Timestamp::from_system_time(t).0 - offset_s * 1_000_000_000,
    ))
}

/// Streams a wide CSV file, one `Input::Values` per row with any value.
pub struct CsvReader<R> {
    r: ::csv::Reader<R>,
    path: PathBuf,
    /// Tag of each column after `time` (None: not a configured point).
    columns: Vec<Option<TagId>>,
    record: ::csv::StringRecord,
    header_errors: Vec<RowError>,
}

impl<R: Read> CsvReader<R> {
    pub fn new(r: R, path: PathBuf, plan: Arc<EnginePlan>) -> Result<Self, ReplayError> {
        let mut r = ::csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(::csv::Trim::All)
            .from_reader(r);
        let format = |message: String| ReplayError::Format {
            path: path.clone(),
            message,
        };
        let headers = r
            .headers()
            .map_err(|e| format(format!("line 1: cannot read the header: {e}")))?
            .clone();
        if headers.get(0).map(|h| h.trim_start_matches('\u{feff}')) != Some("time") {
            return Err(format(
                "line 1: the first column must be `time` (RFC 3339 or epoch ms), then one column per point"
                    .into(),
            ));
        }
        let mut header_errors = Vec::new();
        let columns = headers
            .iter()
            .skip(1)
            .map(|name| {
                let tag = plan.tag(name);
                if tag.is_none() {
                    header_errors.push(RowError {
                        file: path.clone(),
                        line: 1,
                        message: format!(
                            "column `{name}` is not a point of station `{}`; the column is ignored",
                            plan.station_id
                        ),
                    });
                }
                tag
            })
            .collect();
        Ok(CsvReader {
            r,
            path,
            columns,
            record: ::csv::StringRecord::new(),
            header_errors,
        })
    }
}

impl<R: Read> EventReader for CsvReader<R> {
    fn next_event(&mut self, bad: &mut Vec<RowError>) -> Result<Option<ReplayEvent>, ReplayError> {
        bad.append(&mut self.header_errors);
        loop {
            let more = match self.r.read_record(&mut self.record) {
                Ok(more) => more,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    if e.is_io_error() {
                        return Err(ReplayError::Format {
                            path: self.path.clone(),
                            message: format!("line {line}: {e}"),
                        });
                    }
                    bad.push(RowError {
                        file: self.path.clone(),
                        line,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            if !more {
                return Ok(None);
            }
            let line = self.record.position().map_or(0, |p| p.line());
            let row_error = |message: String| RowError {
                file: self.path.clone(),
                line,
                message,
            };
            let ts = match parse_time(self.record.get(0).unwrap_or("")) {
                Ok(ts) => ts,
                Err(m) => {
                    bad.push(row_error(m));
                    continue;
                }
            };
            if self.record.len() > self.columns.len() + 1 {
                bad.push(row_error(format!(
                    "{} cells but the header has {} columns; the extra cells are ignored",
                    self.record.len(),
                    self.columns.len() + 1
                )));
            }
            let mut values = Vec::with_capacity(self.columns.len());
            for (i, cell) in self.record.iter().skip(1).enumerate() {
                let Some(Some(tag)) = self.columns.get(i) else {
                    continue;
                };
                if cell.is_empty() {
                    continue;
                }
                match cell.parse::<f64>() {
                    Ok(v) => values.push((*tag, v, Quality::Good)),
                    Err(_) => bad.push(row_error(format!(
                        "column {} (`{}`): `{cell}` is not a number; the cell is dropped",
                        i + 2,
                        self.r
                            .headers()
                            .ok()
                            .and_then(|h| h.get(i + 1))
                            .unwrap_or("?")
                    ))),
                }
            }
            if values.is_empty() {
                continue;
            }
            return Ok(Some(ReplayEvent::Input(Input::Values { ts, values })));
        }
    }

    fn position(&self) -> u64 {
        self.r.position().byte()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;
    use crate::model::Timestamp;

    #[test]
    fn times() {
        assert_eq!(parse_time("1000"), Ok(Timestamp::from_secs(1)));
        assert_eq!(
            parse_time("1970-01-01T00:00:01Z"),
            Ok(Timestamp::from_secs(1))
        );
        assert_eq!(
            parse_time("1970-01-01T08:00:01.5+08:00"),
            Ok(Timestamp::from_millis(1500))
        );
        assert_eq!(
            parse_time("1970-01-01T00:00:01-01:00"),
            Ok(Timestamp::from_secs(3601))
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("").is_err());
    }
}
