//! `gaswatch report`: hourly and daily balance (输差) reports from the file
//! sink's `balance.jsonl`.
//!
//! Native 1 h and gas-day windows are used when present. When a file holds
//! only shorter windows, they are summed into hours (and hours into gas
//! days); a summed row is only as good as its worst window, and its
//! uncertainty adds the windows' absolute uncertainties in quadrature
//! (meter errors treated as independent between windows, which understates
//! a steady meter bias: the report says "summed").
//!
//! Each balance group (`group` in the JSON; "station" when absent, as in
//! files written before groups existed) is reported on its own: rows are
//! ordered by group (first appearance in the file), then by time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

const H: i64 = 3_600_000_000_000;
const DAY: i64 = 24 * H;

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: cannot read: {error}")]
    Read { path: String, error: std::io::Error },
}

#[derive(Debug, Deserialize)]
struct Line {
    #[serde(default)]
    group: Option<String>,
    start_ns: i64,
    end_ns: i64,
    inlet_sm3: Option<f64>,
    outlet_sm3: Option<f64>,
    #[serde(default)]
    linepack_change_sm3: Option<f64>,
    imbalance_sm3: Option<f64>,
    #[serde(default)]
    uncertainty_percent: Option<f64>,
    quality: String,
}

/// One report row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// The balance group.
    pub group: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub inlet_sm3: f64,
    pub outlet_sm3: f64,
    pub linepack_change_sm3: f64,
    pub imbalance_sm3: f64,
    pub imbalance_percent: f64,
    /// Expanded (k = 2) uncertainty of the percentage.
    pub uncertainty_percent: f64,
    pub quality: String,
    /// Windows summed into this row (1 for a native window).
    pub windows: u32,
}

/// Hourly and daily rows, plus lines that could not be read.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Report {
    pub hourly: Vec<Row>,
    pub daily: Vec<Row>,
    /// `line N: problem` for every line left out.
    pub skipped: Vec<String>,
}

fn quality_rank(q: &str) -> u8 {
    match q {
        "good" => 0,
        "uncertain" => 1,
        _ => 2,
    }
}

fn row(l: &Line) -> Option<Row> {
    let inlet = l.inlet_sm3?;
    let outlet = l.outlet_sm3?;
    let imb = l.imbalance_sm3?;
    let pct = if inlet > 0.0 {
        imb / inlet * 100.0
    } else {
        f64::NAN
    };
    Some(Row {
        group: l.group.clone().unwrap_or_else(|| "station".into()),
        start_ns: l.start_ns,
        end_ns: l.end_ns,
        inlet_sm3: inlet,
        outlet_sm3: outlet,
        linepack_change_sm3: l.linepack_change_sm3.unwrap_or(f64::NAN),
        imbalance_sm3: imb,
        imbalance_percent: pct,
        uncertainty_percent: l.uncertainty_percent.unwrap_or(f64::NAN),
        quality: l.quality.clone(),
        windows: 1,
    })
}

/// Sums rows into buckets of `len` starting at `offset`.
fn sum_into(group: &str, rows: &[Row], len: i64, offset: i64) -> Vec<Row> {
    let mut buckets: BTreeMap<i64, (Row, f64)> = BTreeMap::new();
    for r in rows {
        let start = (r.start_ns - offset).div_euclid(len) * len + offset;
        let u_abs = r.uncertainty_percent / 100.0 * r.inlet_sm3;
        let e = buckets.entry(start).or_insert_with(|| {
            (
                Row {
                    group: group.to_string(),
                    start_ns: start,
                    end_ns: start + len,
                    inlet_sm3: 0.0,
                    outlet_sm3: 0.0,
                    linepack_change_sm3: 0.0,
                    imbalance_sm3: 0.0,
                    imbalance_percent: f64::NAN,
                    uncertainty_percent: f64::NAN,
                    quality: "good".into(),
                    windows: 0,
                },
                0.0,
            )
        });
        e.0.inlet_sm3 += r.inlet_sm3;
        e.0.outlet_sm3 += r.outlet_sm3;
        e.0.linepack_change_sm3 += r.linepack_change_sm3;
        e.0.imbalance_sm3 += r.imbalance_sm3;
        e.0.windows += r.windows;
        e.1 += u_abs * u_abs;
        if quality_rank(&r.quality) > quality_rank(&e.0.quality) {
            e.0.quality = r.quality.clone();
        }
    }
    buckets
        .into_values()
        .map(|(mut r, var)| {
            if r.inlet_sm3 > 0.0 {
                r.imbalance_percent = r.imbalance_sm3 / r.inlet_sm3 * 100.0;
                r.uncertainty_percent = var.sqrt() / r.inlet_sm3 * 100.0;
            }
            r
        })
        .collect()
}

/// Builds the report from `balance.jsonl` text. `gas_day_offset_ns` is the
/// gas-day start after UTC midnight (contract hour minus UTC offset).
pub fn from_jsonl(text: &str, gas_day_offset_ns: i64) -> Report {
    let mut rep = Report::default();
    // Per group in order of first appearance, rows by window length.
    let mut groups: Vec<(String, BTreeMap<i64, Vec<Row>>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Line>(line) {
            Ok(l) => match row(&l) {
                Some(r) if l.end_ns > l.start_ns => {
                    let g = match groups.iter().position(|(g, _)| *g == r.group) {
                        Some(g) => g,
                        None => {
                            groups.push((r.group.clone(), BTreeMap::new()));
                            groups.len() - 1
                        }
                    };
                    groups[g]
                        .1
                        .entry(l.end_ns - l.start_ns)
                        .or_default()
                        .push(r)
                }
                _ => rep
                    .skipped
                    .push(format!("line {}: no volumes (null)", i + 1)),
            },
            Err(e) => rep.skipped.push(format!("line {}: {e}", i + 1)),
        }
    }
    for (group, by_len) in &groups {
        let hourly = match by_len.get(&H) {
            Some(h) => h.clone(),
            None => {
                let short: Vec<Row> = by_len
                    .range(..H)
                    .flat_map(|(_, v)| v.iter().cloned())
                    .collect();
                sum_into(group, &short, H, 0)
            }
        };
        let daily = match by_len.get(&DAY) {
            Some(d) => d.clone(),
            None => sum_into(group, &hourly, DAY, gas_day_offset_ns),
        };
        rep.hourly.extend(hourly);
        rep.daily.extend(daily);
    }
    rep
}

/// Reads `path` (a `balance.jsonl`) and builds the report.
pub fn from_file(path: &Path, gas_day_offset_ns: i64) -> Result<Report, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|error| ReportError::Read {
        path: path.display().to_string(),
        error,
    })?;
    Ok(from_jsonl(&text, gas_day_offset_ns))
}

fn fmt_rows(f: &mut std::fmt::Formatter<'_>, title: &str, rows: &[Row]) -> std::fmt::Result {
    writeln!(f, "{title}")?;
    writeln!(
        f,
        "{:<24} {:>12} {:>12} {:>10} {:>10} {:>8} {:>8} {:>9} {:>4}",
        "start (UTC)",
        "inlet Sm3",
        "outlet Sm3",
        "pack Sm3",
        "imb Sm3",
        "输差 %",
        "U95 %",
        "quality",
        "n"
    )?;
    for r in rows {
        writeln!(
            f,
            "{:<24} {:>12.1} {:>12.1} {:>10.1} {:>10.1} {:>8.3} {:>8.3} {:>9} {:>4}",
            crate::model::Timestamp(r.start_ns).to_rfc3339(),
            r.inlet_sm3,
            r.outlet_sm3,
            r.linepack_change_sm3,
            r.imbalance_sm3,
            r.imbalance_percent,
            r.uncertainty_percent,
            r.quality,
            r.windows
        )?;
    }
    Ok(())
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut groups: Vec<&str> = Vec::new();
        for r in self.hourly.iter().chain(&self.daily) {
            if !groups.contains(&r.group.as_str()) {
                groups.push(&r.group);
            }
        }
        // A station without groups prints as it always did.
        let plain = groups.len() <= 1 && groups.iter().all(|g| *g == "station");
        if plain {
            fmt_rows(f, "Hourly balance", &self.hourly)?;
            writeln!(f)?;
            fmt_rows(f, "Daily balance (gas day)", &self.daily)?;
        }
        for (i, g) in groups.iter().enumerate().filter(|_| !plain) {
            if i > 0 {
                writeln!(f)?;
            }
            let of = |rows: &[Row]| -> Vec<Row> {
                rows.iter().filter(|r| r.group == *g).cloned().collect()
            };
            fmt_rows(f, &format!("Hourly balance, group {g}"), &of(&self.hourly))?;
            writeln!(f)?;
            fmt_rows(
                f,
                &format!("Daily balance (gas day), group {g}"),
                &of(&self.daily),
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped {s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(start_s: i64, len_s: i64, inlet: f64, imb: f64, u: f64) -> String {
        format!(
            r#"{{"v":1,"station":"s","start_ns":{},"end_ns":{},"inlet_sm3":{inlet},"outlet_sm3":{},"linepack_change_sm3":0.0,"imbalance_sm3":{imb},"imbalance_percent":null,"uncertainty_percent":{u},"coverage":1.0,"quality":"good"}}"#,
            start_s * 1_000_000_000,
            (start_s + len_s) * 1_000_000_000,
            inlet - imb
        )
    }

    #[test]
    fn short_windows_sum_into_hours_and_days_with_quadrature_uncertainty() {
        let mut text = String::new();
        for k in 0..24 {
            text.push_str(&line(k * 1800, 1800, 1000.0, 10.0, 2.0));
            text.push('\n');
        }
        text.push_str("not json\n");
        let r = from_jsonl(&text, 0);
        assert_eq!(r.hourly.len(), 12);
        let h = &r.hourly[0];
        assert_eq!((h.inlet_sm3, h.imbalance_sm3, h.windows), (2000.0, 20.0, 2));
        assert!((h.imbalance_percent - 1.0).abs() < 1e-12);
        // Two windows of U = 20 Sm3 each: sqrt(2) * 20 / 2000 = 1.414 %.
        assert!((h.uncertainty_percent - 2f64.sqrt()).abs() < 1e-9);
        assert_eq!(r.daily.len(), 1);
        assert_eq!(r.daily[0].windows, 24);
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].starts_with("line 25:"));
    }

    /// Each balance group is summed on its own; lines without `group`
    /// (files from before groups) are the station group.
    #[test]
    fn groups_are_reported_apart() {
        let tagged = |g: &str, l: String| {
            l.replacen(
                r#""station":"s","#,
                &format!(r#""station":"s","group":"{g}","#),
                1,
            )
        };
        let mut text = String::new();
        for k in 0..12 {
            text.push_str(&tagged("lineA", line(k * 300, 300, 100.0, 2.0, 1.0)));
            text.push('\n');
            text.push_str(&tagged("lineB", line(k * 300, 300, 50.0, 0.0, 1.0)));
            text.push('\n');
            text.push_str(&line(k * 300, 300, 150.0, 2.0, 1.0));
            text.push('\n');
        }
        let r = from_jsonl(&text, 0);
        let groups: Vec<&str> = r.hourly.iter().map(|h| h.group.as_str()).collect();
        assert_eq!(groups, ["lineA", "lineB", "station"]);
        let a = &r.hourly[0];
        assert_eq!(
            (a.inlet_sm3, a.imbalance_sm3, a.windows),
            (1200.0, 24.0, 12)
        );
        assert!((a.imbalance_percent - 2.0).abs() < 1e-12);
        assert_eq!(r.hourly[1].imbalance_sm3, 0.0);
        assert_eq!(r.daily.len(), 3);
        let shown = r.to_string();
        assert!(shown.contains("Hourly balance, group lineA"), "{shown}");
        assert!(
            shown.contains("Daily balance (gas day), group station"),
            "{shown}"
        );
        // Without groups: the report as it always was.
        let plain = from_jsonl(&line(0, 3600, 100.0, 1.0, 1.0), 0).to_string();
        assert!(plain.starts_with("Hourly balance\n"), "{plain}");
        assert!(!plain.contains("group"), "{plain}");
    }

    #[test]
    fn native_hour_windows_are_used_as_they_are() {
        let text = [
            line(0, 300, 100.0, 1.0, 1.0),
            line(0, 3600, 1200.0, 3.0, 0.5),
        ]
        .join("\n");
        let r = from_jsonl(&text, 0);
        assert_eq!(r.hourly.len(), 1);
        assert_eq!(r.hourly[0].inlet_sm3, 1200.0);
    }
}
