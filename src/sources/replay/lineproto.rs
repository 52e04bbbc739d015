//! Reads InfluxDB line protocol into [`Input::Values`].
//!
//! Accepted: `telemetry` lines as the file sink and the InfluxDB sink write
//! them (`telemetry,device=..,point=..,station=..,unit=.. value=1.5,quality="good" <ns>`)
//! and the same lines from an InfluxDB export (`influx_inspect export`:
//! `#` comments, `CREATE DATABASE` and `# CONTEXT-...` lines are skipped).
//! Timestamps must be present and in nanoseconds (the default precision of
//! both); a line without one is a row error, because replay never invents
//! time. Other measurements (`alarm`, `balance`) are skipped and counted: they
//! are engine output, and the replay recomputes them.
//!
//! Consecutive lines with the same timestamp become one `Input::Values`, the
//! way one Modbus response becomes one input.

use super::{EventReader, ReplayError, ReplayEvent, RowError, parse_quality};
use crate::engine::EnginePlan;
use crate::model::{Input, Quality, TagId, Timestamp};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

/// One usable `telemetry` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<'a> {
    pub point: &'a str,
    pub station: Option<&'a str>,
    pub value: f64,
    pub quality: Quality,
    pub ts: i64,
}

/// What one line is.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// Blank, comment, DDL or another measurement.
    Skip,
    Point(Point<'a>),
}

/// Splits at the first unescaped `sep` outside double quotes.
fn split_unescaped(s: &str, sep: u8, quotes: bool) -> (&str, Option<&str>) {
    let b = s.as_bytes();
    let mut i = 0;
    let mut in_q = false;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' if quotes => in_q = !in_q,
            c if c == sep && !in_q => return (&s[..i], Some(&s[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    (s, None)
}

/// Removes line-protocol backslash escapes (borrowing when there are none).
fn unescape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Parses one line. Names with escapes are not supported for `point` and
/// `station` (the config forbids those characters in names).
pub fn parse_line(line: &str) -> Result<Line<'_>, String> {
    let line = line.trim_end_matches(['\n', '\r']);
    let t = line.trim_start();
    if t.is_empty() || t.starts_with('#') || t.starts_with("CREATE ") {
        return Ok(Line::Skip);
    }
    let (series, rest) = split_unescaped(line, b' ', false);
    let rest = rest.ok_or("no fields (expected `measurement,tags fields timestamp`)")?;
    let (measurement, mut tags) = split_unescaped(series, b',', false);
    if unescape(measurement) != "telemetry" {
        return Ok(Line::Skip);
    }
    let mut point = None;
    let mut station = None;
    while let Some(t) = tags {
        let (kv, next) = split_unescaped(t, b',', false);
        tags = next;
        let (k, v) = split_unescaped(kv, b'=', false);
        let v = v.ok_or_else(|| format!("tag `{k}` has no `=`"))?;
        match k {
            "point" => point = Some(v),
            "station" => station = Some(v),
            _ => {}
        }
    }
    let point = point.ok_or("telemetry line without a `point` tag")?;
    let (fields, ts) = split_unescaped(rest, b' ', true);
    let ts = ts
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or("no timestamp (replay needs the data's own time, in nanoseconds)")?;
    let ts: i64 = ts
        .parse()
        .map_err(|_| format!("timestamp `{ts}` is not an integer number of nanoseconds"))?;
    let mut value = f64::NAN;
    let mut quality = Quality::Good;
    let mut rest = Some(fields);
    while let Some(f) = rest {
        let (kv, next) = split_unescaped(f, b',', true);
        rest = next;
        let (k, v) = split_unescaped(kv, b'=', true);
        let v = v.ok_or_else(|| format!("field `{k}` has no `=`"))?;
        match k {
            "value" => {
                let num = v.strip_suffix(['i', 'u']).unwrap_or(v);
                value = num
                    .parse()
                    .map_err(|_| format!("field `value`: `{v}` is not a number"))?;
            }
            "quality" => {
                let q = v.trim_matches('"');
                quality = parse_quality(q).ok_or_else(|| {
                    format!("field `quality`: `{q}` is not good, uncertain, bad or stale")
                })?;
            }
            _ => {}
        }
    }
    Ok(Line::Point(Point {
        point,
        station,
        value,
        quality,
        ts,
    }))
}

/// Values of one timestamp (ns) being gathered into one input.
type Group = (i64, Vec<(TagId, f64, Quality)>);

/// Streams a line-protocol file as grouped `Input::Values`.
pub struct LineProtocolReader<R> {
    r: R,
    path: PathBuf,
    plan: Arc<EnginePlan>,
    buf: String,
    line_no: u64,
    pos: u64,
    skipped: u64,
    /// The group being built: its time and values.
    pending: Option<Group>,
    done: bool,
}

impl<R: BufRead> LineProtocolReader<R> {
    pub fn new(r: R, path: PathBuf, plan: Arc<EnginePlan>) -> Self {
        LineProtocolReader {
            r,
            path,
            plan,
            buf: String::with_capacity(256),
            line_no: 0,
            pos: 0,
            skipped: 0,
            pending: None,
            done: false,
        }
    }

    fn bad(&self, message: String) -> RowError {
        RowError {
            file: self.path.clone(),
            line: self.line_no,
            message,
        }
    }
}

fn emit(group: Group) -> ReplayEvent {
    ReplayEvent::Input(Input::Values {
        ts: Timestamp(group.0),
        values: group.1,
    })
}

impl<R: BufRead> EventReader for LineProtocolReader<R> {
    fn next_event(&mut self, bad: &mut Vec<RowError>) -> Result<Option<ReplayEvent>, ReplayError> {
        loop {
            if self.done {
                return Ok(self.pending.take().map(emit));
            }
            self.buf.clear();
            let n = match self.r.read_line(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    // Not UTF-8: skip to the next newline and report the line.
                    self.line_no += 1;
                    let mut junk = Vec::new();
                    let n =
                        self.r
                            .read_until(b'\n', &mut junk)
                            .map_err(|source| ReplayError::Io {
                                path: self.path.clone(),
                                source,
                            })?;
                    self.pos += n as u64;
                    bad.push(self.bad("not valid UTF-8".into()));
                    continue;
                }
                Err(source) => {
                    return Err(ReplayError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            if n == 0 {
                self.done = true;
                continue;
            }
            self.pos += n as u64;
            self.line_no += 1;
            let p = match parse_line(&self.buf) {
                Ok(Line::Skip) => {
                    self.skipped += 1;
                    continue;
                }
                Ok(Line::Point(p)) => p,
                Err(m) => {
                    bad.push(self.bad(m));
                    continue;
                }
            };
            if let Some(st) = p.station
                && st != self.plan.station_id
            {
                let m = format!(
                    "station `{st}` is not the configured station `{}`",
                    self.plan.station_id
                );
                bad.push(self.bad(m));
                continue;
            }
            let Some(tag) = self.plan.tag(p.point) else {
                let m = format!("point `{}` is not in the station config", p.point);
                bad.push(self.bad(m));
                continue;
            };
            let (ts, value, quality) = (p.ts, p.value, p.quality);
            match &mut self.pending {
                Some((t, values)) if *t == ts => values.push((tag, value, quality)),
                _ => {
                    let prev = self.pending.replace((ts, vec![(tag, value, quality)]));
                    if let Some(g) = prev {
                        return Ok(Some(emit(g)));
                    }
                }
            }
        }
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_sink_lines() {
        let l = "telemetry,device=fc-in,point=PT_IN1,station=cg01,unit=kPa value=3500.25,quality=\"good\" 1700000000000000000";
        let Line::Point(p) = parse_line(l).expect("ok") else {
            panic!("skipped")
        };
        assert_eq!(p.point, "PT_IN1");
        assert_eq!(p.station, Some("cg01"));
        assert_eq!(p.value, 3500.25);
        assert_eq!(p.quality, Quality::Good);
        assert_eq!(p.ts, 1_700_000_000_000_000_000);
    }

    #[test]
    fn stale_without_value_and_quoted_commas() {
        let l = "telemetry,point=PT_IN1 quality=\"stale\",reason=\"a, b\" 5";
        let Line::Point(p) = parse_line(l).expect("ok") else {
            panic!("skipped")
        };
        assert!(p.value.is_nan());
        assert_eq!(p.quality, Quality::Stale);
        assert_eq!(p.ts, 5);
    }

    #[test]
    fn skips_and_errors() {
        assert_eq!(parse_line("# DML"), Ok(Line::Skip));
        assert_eq!(parse_line("CREATE DATABASE x"), Ok(Line::Skip));
        assert_eq!(parse_line("alarm,id=x value=1 5"), Ok(Line::Skip));
        assert!(parse_line("telemetry,point=A value=1").is_err());
        assert!(parse_line("telemetry,point=A value=x 5").is_err());
        assert!(parse_line("telemetry value=1 5").is_err());
        assert!(parse_line("telemetry,point=A value=1,quality=\"meh\" 5").is_err());
    }
}
