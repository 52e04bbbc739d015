//! `gaswatch replay`: runs files (line protocol, wide CSV, daemon captures)
//! through the same [`Engine`] the daemon runs and reports what it produced.
//!
//! Invariants:
//! - The engine's time comes from the data only. Captures carry the daemon's
//!   own `tick(now)` calls and are replayed call for call, so the outputs are
//!   the daemon's outputs byte for byte. For line protocol and CSV the
//!   [`Replayer`] derives ticks from the data time: before an input at time
//!   `t` it ticks at every multiple of `tick` in `(last tick, t]`, so balance
//!   windows close exactly at their ends and staleness is judged as the
//!   daemon would. The same files therefore always give the same results.
//! - A malformed row is reported (file and line) and skipped; only
//!   `--strict` stops at the first one.
//! - Events (every alarm transition and every closed balance window) go out
//!   as JSON lines with a `type` field; the payload is the dispatch JSON v1.
//! - With `--influx-url`/`--influx-db` every result also goes to InfluxDB
//!   through the daemon's own sink code, tagged `source=replay`
//!   (`replay_influx.rs`).

use crate::engine::{Engine, EnginePlan};
use crate::model::{AlarmAction, AlarmKind, Output, Priority, Timestamp};
use crate::sinks::file::writer::FileSink;
use crate::sinks::mqtt::payload;
use crate::sources::replay::{self, EventReader, Format, ReplayEvent, RowError};
use crate::topology::route::Router;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors that stop a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayCliError {
    #[error(transparent)]
    Source(#[from] replay::ReplayError),
    #[error("{0} (--strict stops at the first bad row)")]
    Strict(RowError),
    #[error("{path}: {source}")]
    Output {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Sink(String),
    #[error(transparent)]
    Influx(#[from] super::replay_influx::InfluxOutError),
    #[error("--influx-from-config: {config} has no [sinks.influxdb] section")]
    NoInfluxSink { config: String },
    #[error("{path}:{line}: {message}")]
    Truth {
        path: String,
        line: usize,
        message: String,
    },
}

/// The command's options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Station configuration file (the one the data belongs to).
    #[arg(short, long, env = "GASWATCH_CONFIG")]
    pub config: PathBuf,
    /// Files to replay, in order: line protocol (.lp, InfluxDB export), wide
    /// CSV (.csv) or a daemon capture (.gwcap); detected from the name and
    /// the first bytes unless --format is given.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Force the input format: lp, csv or capture.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<Format>,
    /// Write the events (alarm transitions, balance windows, leak alerts)
    /// as JSON lines here; `-` for stdout.
    #[arg(long, short = 'e')]
    pub events: Option<PathBuf>,
    /// Also write the full daemon outputs (telemetry line protocol, alarm and
    /// balance JSON lines) into this folder, as the file sink does.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Data seconds per wall second (e.g. 60); as fast as possible when absent.
    #[arg(long)]
    pub speed: Option<f64>,
    /// Engine tick step for line protocol and CSV (captures carry their own).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub tick: Duration,
    /// Stop at the first malformed row instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Ground truth JSON lines (written by `gaswatch-sim --truth`): print a
    /// detection scorecard.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// How long after a true event ends an alarm still counts as detecting it.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write the results (telemetry, alarms, balance windows, archive
    /// records) to this InfluxDB (v1 write API), e.g. http://127.0.0.1:8086,
    /// each line tagged `source=replay` (see --influx-origin).
    #[arg(long, requires = "influx_db", conflicts_with = "influx_from_config")]
    pub influx_url: Option<String>,
    /// The InfluxDB database for --influx-url.
    #[arg(long, requires = "influx_url")]
    pub influx_db: Option<String>,
    /// Also write the results to the InfluxDB of the station config's
    /// `[sinks.influxdb]` (v1 or v2, its credentials from env or files, its
    /// TLS CA), each line tagged `source=replay` (see --influx-origin).
    #[arg(long)]
    pub influx_from_config: bool,
    /// Value of the `source` tag on every line written to InfluxDB.
    #[arg(long, default_value = "replay")]
    pub influx_origin: String,
    /// Spool folder for the InfluxDB output (default: a temporary folder,
    /// removed when everything was delivered).
    #[arg(long)]
    pub influx_spool: Option<PathBuf>,
    /// Stop with an error when InfluxDB accepts nothing for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub influx_stall: Duration,
}

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "lp" | "line-protocol" | "influx" => Ok(Format::LineProtocol),
        "csv" => Ok(Format::Csv),
        "capture" | "gwcap" => Ok(Format::Capture),
        other => Err(format!("`{other}`: expected lp, csv or capture")),
    }
}

/// One imbalance (输差) or leak (CUSUM) alarm raised during the replay: a
/// detected leak.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakDetection {
    /// The balance group.
    pub group: crate::model::GroupId,
    /// The alarm that raised it (`<station>/balance/IMBALANCE`,
    /// `<station>/balance-1h/IMBALANCE`, `<station>/balance/LEAK`, ...).
    pub alarm_id: String,
    pub raised: Timestamp,
    pub cleared: Option<Timestamp>,
    /// 输差率 of the window that raised it, % (for a leak alarm: the
    /// estimated leak rate in % of inlet).
    pub imbalance_percent: f64,
    /// Estimated leak rate, Sm³/h: the raising window's imbalance per hour
    /// (for a leak alarm: the CUSUM change-point estimate).
    pub rate_sm3_per_h: f64,
}

/// One closed balance window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowLine {
    pub group: crate::model::GroupId,
    pub start: Timestamp,
    pub end: Timestamp,
    pub imbalance_percent: f64,
    pub imbalance_sm3: f64,
    pub quality: crate::model::Quality,
}

/// Alarm raise/clear transitions, as scored by the scorecard.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmLine {
    pub id: String,
    pub source: String,
    pub kind: AlarmKind,
    pub priority: Priority,
    pub action: AlarmAction,
    pub ts: Timestamp,
    pub value: f64,
}

/// What a replay produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub inputs: u64,
    pub ticks: u64,
    pub samples: u64,
    pub bad_rows: u64,
    pub skipped_rows: u64,
    /// What the readers want the user to know (a capture recorded under
    /// other tuning).
    pub notes: Vec<String>,
    pub first_ts: Option<Timestamp>,
    pub last_ts: Option<Timestamp>,
    /// Raised alarms by priority.
    pub raised_by_priority: BTreeMap<Priority, u64>,
    pub alarms: Vec<AlarmLine>,
    pub leaks: Vec<LeakDetection>,
    pub windows: Vec<WindowLine>,
}

/// The replay core: an engine, optional outputs, and the tick derivation.
pub struct Replayer {
    engine: Engine,
    out: Output,
    router: Option<Router>,
    /// `--influx-url`: the router also appends to this output's spool.
    influx: Option<super::replay_influx::InfluxOut>,
    /// What the InfluxDB output delivered, after [`Replayer::finish`].
    pub influx_report: Option<super::replay_influx::InfluxReport>,
    events: Option<Box<dyn Write>>,
    /// Tick step for data without explicit ticks (None: captures).
    tick_ns: i64,
    last_tick: Option<i64>,
    pub summary: Summary,
}

/// Gaps longer than this many tick steps are crossed with one tick.
const MAX_TICKS_PER_GAP: i64 = 100_000;

impl Replayer {
    /// `events`: where JSON-line events go; `out_dir`: a file sink folder.
    pub fn new(
        plan: Arc<EnginePlan>,
        tick: Duration,
        events: Option<Box<dyn Write>>,
        out_dir: Option<PathBuf>,
    ) -> Result<Replayer, ReplayCliError> {
        let router = match out_dir {
            Some(dir) => {
                let cfg = crate::sinks::file::FileSinkConfig { dir };
                let f = FileSink::open(&cfg).map_err(|e| ReplayCliError::Sink(e.to_string()))?;
                Some(Router::new(Arc::clone(&plan), None, None, Some(f)))
            }
            None => None,
        };
        Ok(Replayer {
            engine: Engine::new(plan, 0),
            out: Output::default(),
            router,
            influx: None,
            influx_report: None,
            events,
            tick_ns: i64::try_from(tick.as_nanos()).unwrap_or(i64::MAX).max(1),
            last_tick: None,
            summary: Summary::default(),
        })
    }

    /// Also sends every result to InfluxDB through `influx` (lines tagged
    /// `source=<origin>`), beside any `out_dir` files.
    pub fn with_influx(mut self, influx: super::replay_influx::InfluxOut) -> Self {
        let plan = Arc::clone(self.engine.plan());
        let spool = Some(influx.spool());
        let origin = Some(influx.origin().to_string());
        self.router = Some(match self.router.take() {
            Some(mut r) => {
                r.influx = spool;
                r.with_origin(origin)
            }
            None => Router::new(plan, spool, None, None).with_origin(origin),
        });
        self.influx = Some(influx);
        self
    }

    /// Feeds one event. `explicit_ticks`: the source carries its own ticks
    /// (captures); otherwise ticks are derived from the data time.
    pub fn feed(&mut self, ev: &ReplayEvent, explicit_ticks: bool) -> Result<(), ReplayCliError> {
        let ts = ev.ts();
        self.summary.first_ts.get_or_insert(ts);
        self.summary.last_ts = Some(self.summary.last_ts.map_or(ts, |l| l.max(ts)));
        match ev {
            ReplayEvent::Tick(now) => {
                self.summary.ticks += 1;
                self.engine.tick(*now, &mut self.out);
            }
            ReplayEvent::Input(input) => {
                if !explicit_ticks {
                    self.derive_ticks(ts.nanos());
                }
                self.summary.inputs += 1;
                self.engine.process(input, &mut self.out);
            }
        }
        self.emit()
    }

    fn derive_ticks(&mut self, t: i64) {
        let step = self.tick_ns;
        let last = *self.last_tick.get_or_insert(t.div_euclid(step) * step);
        if t <= last {
            return;
        }
        let first = (last.div_euclid(step) + 1) * step;
        if (t - first) / step > MAX_TICKS_PER_GAP {
            self.summary.ticks += 1;
            self.engine.tick(Timestamp(t), &mut self.out);
        } else {
            let mut g = first;
            while g <= t {
                self.summary.ticks += 1;
                self.engine.tick(Timestamp(g), &mut self.out);
                g += step;
            }
        }
        self.last_tick = Some(t.div_euclid(step) * step);
    }

    /// Closes the replay: flushes the outputs and, with an InfluxDB
    /// output, waits until InfluxDB has everything.
    pub fn finish(&mut self) -> Result<(), ReplayCliError> {
        if let Some(router) = &mut self.router {
            router
                .flush()
                .map_err(|e| ReplayCliError::Sink(e.to_string()))?;
        }
        if let Some(influx) = self.influx.take() {
            self.influx_report = Some(influx.finish()?);
        }
        if let Some(w) = &mut self.events {
            w.flush().map_err(|source| ReplayCliError::Output {
                path: "events".into(),
                source,
            })?;
        }
        Ok(())
    }

    fn emit(&mut self) -> Result<(), ReplayCliError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let plan = Arc::clone(self.engine.plan());
        let s = &mut self.summary;
        s.samples += self.out.samples.len() as u64;
        for b in &self.out.balances {
            s.windows.push(WindowLine {
                group: b.group,
                start: b.start,
                end: b.end,
                imbalance_percent: b.imbalance_percent,
                imbalance_sm3: b.imbalance_sm3,
                quality: b.quality,
            });
            if let Some(w) = &mut self.events {
                let p = payload::encode_balance(&plan.station_id, b);
                write_typed(w.as_mut(), "balance", &p)?;
            }
        }
        for e in &self.out.alarms {
            let def = &plan.alarms[e.alarm as usize];
            s.alarms.push(AlarmLine {
                id: def.id.clone(),
                source: def.source.clone(),
                kind: e.kind,
                priority: e.priority,
                action: e.action,
                ts: e.ts,
                value: e.value,
            });
            if e.action == AlarmAction::Raise {
                *s.raised_by_priority.entry(e.priority).or_default() += 1;
            }
            if matches!(e.kind, AlarmKind::Imbalance | AlarmKind::Leak) {
                let (group, window) = plan
                    .balance_alarm(e.alarm)
                    .map_or((crate::model::GroupId::STATION, None), |(g, w)| {
                        (plan.groups[g].id, w)
                    });
                match e.action {
                    AlarmAction::Raise if e.kind == AlarmKind::Leak => {
                        // The alert comes in the same output as its raise;
                        // the raise is stamped when the engine decided (the
                        // window's end plus its edge), the alert with the
                        // window's end, so match by group, not by time.
                        let alert = self.out.leaks.iter().find(|l| l.group == group);
                        s.leaks.push(LeakDetection {
                            group,
                            alarm_id: def.id.clone(),
                            raised: e.ts,
                            cleared: None,
                            imbalance_percent: e.value,
                            rate_sm3_per_h: alert.map_or(f64::NAN, |l| l.rate_sm3_per_h),
                        });
                    }
                    AlarmAction::Raise => {
                        // The window of this alarm (one per window length).
                        let window_ns = window
                            .and_then(|w| plan.windows.get(w))
                            .map_or(plan.balance_window_ns, |w| w.window_ns);
                        let w = self.out.balances.iter().find(|b| {
                            b.group == group
                                && b.end == e.ts
                                && b.end.nanos() - b.start.nanos() == window_ns
                        });
                        let hours = window_ns as f64 / 3.6e12;
                        s.leaks.push(LeakDetection {
                            group,
                            alarm_id: def.id.clone(),
                            raised: e.ts,
                            cleared: None,
                            imbalance_percent: e.value,
                            rate_sm3_per_h: w.map_or(f64::NAN, |b| b.imbalance_sm3 / hours),
                        });
                    }
                    AlarmAction::Clear => {
                        if let Some(l) = s
                            .leaks
                            .iter_mut()
                            .rev()
                            .find(|l| l.cleared.is_none() && l.alarm_id == def.id)
                        {
                            l.cleared = Some(e.ts);
                        }
                    }
                    // Acks, shelving, re-alarms and escalations change how a
                    // leak alarm is handled, not when it was detected.
                    _ => {}
                }
            }
            if let Some(w) = &mut self.events {
                let unit = plan
                    .tag(&def.source)
                    .map(|t| &*plan.tag_info(t).unit)
                    .unwrap_or("%");
                let p = payload::encode_alarm(&plan.station_id, def, e, unit);
                write_typed(w.as_mut(), "alarm", &p)?;
            }
        }
        // Leak alerts (with their balance group), after the LEAK events
        // they detail, as the daemon sends them.
        if let Some(w) = &mut self.events {
            for a in &self.out.leaks {
                let p = payload::encode_leak(&plan.station_id, a);
                write_typed(w.as_mut(), "leak", &p)?;
            }
        }
        if let Some(router) = &mut self.router {
            router
                .route(&self.out)
                .map_err(|e| ReplayCliError::Sink(e.to_string()))?;
        }
        self.out.clear();
        if let Some(influx) = &self.influx {
            influx.pace()?;
        }
        Ok(())
    }
}

/// Writes `{"type":"<kind>",` + the rest of a JSON object payload.
fn write_typed(w: &mut dyn Write, kind: &str, json: &[u8]) -> Result<(), ReplayCliError> {
    let rest = json.strip_prefix(b"{").unwrap_or(json);
    let r = (|| {
        write!(w, "{{\"type\":\"{kind}\",")?;
        w.write_all(rest)?;
        w.write_all(b"\n")
    })();
    r.map_err(|source| ReplayCliError::Output {
        path: "events".into(),
        source,
    })
}

/// How [`replay_files`] reads and paces.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadOptions {
    /// Force a format (detected per file when None).
    pub format: Option<Format>,
    /// Stop at the first bad row.
    pub strict: bool,
    /// Data seconds per wall second (as fast as possible when None).
    pub speed: Option<f64>,
}

/// Replays `files` in order through one engine. Bad rows go to `on_bad`
/// (or stop the replay with `opts.strict`).
pub fn replay_files(
    replayer: &mut Replayer,
    plan: &Arc<EnginePlan>,
    files: &[PathBuf],
    opts: ReadOptions,
    progress: &indicatif::ProgressBar,
    on_bad: &mut dyn FnMut(&RowError),
) -> Result<(), ReplayCliError> {
    let ReadOptions {
        format,
        strict,
        speed,
    } = opts;
    let mut bad = Vec::new();
    let mut done_bytes = 0u64;
    let pace = speed.filter(|s| s.is_finite() && *s > 0.0);
    let mut pace_start: Option<(Instant, i64)> = None;
    for path in files {
        let (fmt, mut reader): (Format, Box<dyn EventReader>) = replay::open(path, format, plan)?;
        let explicit = fmt == Format::Capture;
        replayer
            .summary
            .notes
            .extend(reader.notes().iter().cloned());
        let mut n = 0u64;
        loop {
            let ev = reader.next_event(&mut bad)?;
            for b in bad.drain(..) {
                replayer.summary.bad_rows += 1;
                if strict {
                    return Err(ReplayCliError::Strict(b));
                }
                on_bad(&b);
            }
            let Some(ev) = ev else { break };
            if let Some(speed) = pace {
                let t = ev.ts().nanos();
                let (w0, t0) = *pace_start.get_or_insert((Instant::now(), t));
                let due =
                    Duration::from_secs_f64((t.saturating_sub(t0)).max(0) as f64 / 1e9 / speed);
                let elapsed = w0.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
            replayer.feed(&ev, explicit)?;
            n += 1;
            if n.is_multiple_of(4096) {
                progress.set_position(done_bytes + reader.position());
            }
        }
        replayer.summary.skipped_rows += reader.skipped();
        done_bytes += reader.position();
        progress.set_position(done_bytes);
    }
    replayer.finish()
}

/// Prints the summary: alarms by priority, leaks detected, 输差 per window.
pub fn print_summary(w: &mut dyn Write, s: &Summary) -> std::io::Result<()> {
    let t = |ts: Option<Timestamp>| ts.map_or("-".to_string(), |t| t.to_rfc3339());
    writeln!(w, "replay summary")?;
    writeln!(w, "  data time      {} .. {}", t(s.first_ts), t(s.last_ts))?;
    writeln!(
        w,
        "  inputs {}  ticks {}  samples {}  bad rows {}  skipped rows {}",
        s.inputs, s.ticks, s.samples, s.bad_rows, s.skipped_rows
    )?;
    for n in &s.notes {
        writeln!(w, "  note: {n}")?;
    }
    let by: Vec<String> = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
    ]
    .iter()
    .map(|p| {
        format!(
            "{} {}",
            p.as_str(),
            s.raised_by_priority.get(p).copied().unwrap_or(0)
        )
    })
    .collect();
    writeln!(w, "  alarms raised  {}", by.join(", "))?;
    writeln!(w, "  leaks detected {}", s.leaks.len())?;
    for l in &s.leaks {
        writeln!(
            w,
            "    {}  raised {}  cleared {}  输差 {:.2} %  est. rate {:.0} Sm3/h",
            l.alarm_id,
            l.raised.to_rfc3339(),
            t(l.cleared),
            l.imbalance_percent,
            l.rate_sm3_per_h
        )?;
    }
    let judged = s
        .windows
        .iter()
        .filter(|w| w.imbalance_percent.is_finite())
        .count();
    writeln!(
        w,
        "  balance windows {} ({} with a 输差)",
        s.windows.len(),
        judged
    )?;
    // Per balance group, in order of first appearance; a station without
    // groups has only "station" and prints as before (no group column).
    let mut groups: Vec<crate::model::GroupId> = Vec::new();
    for x in &s.windows {
        if !groups.contains(&x.group) {
            groups.push(x.group);
        }
    }
    let several = groups.len() > 1 || groups.iter().any(|g| !g.is_station());
    for g in &groups {
        let judged: Vec<f64> = s
            .windows
            .iter()
            .filter(|w| w.group == *g)
            .map(|w| w.imbalance_percent)
            .filter(|v| v.is_finite())
            .collect();
        if judged.is_empty() {
            continue;
        }
        let mean = judged.iter().sum::<f64>() / judged.len() as f64;
        let min = judged.iter().copied().fold(f64::INFINITY, f64::min);
        let max = judged.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let label = if several {
            format!(" group {g}")
        } else {
            String::new()
        };
        writeln!(
            w,
            "    输差 %{label}  mean {mean:.3}  min {min:.3}  max {max:.3}"
        )?;
    }
    const SHOW: usize = 48;
    for x in s.windows.iter().take(SHOW) {
        let label = if several {
            format!("{:<12} ", x.group.as_str())
        } else {
            String::new()
        };
        writeln!(
            w,
            "    {label}{} .. {}  输差 {:>8.3} %  {:>10.1} Sm3  {}",
            x.start.to_rfc3339(),
            x.end.to_rfc3339(),
            x.imbalance_percent,
            x.imbalance_sm3,
            x.quality.as_str()
        )?;
    }
    if s.windows.len() > SHOW {
        writeln!(
            w,
            "    ... {} more windows in the events output",
            s.windows.len() - SHOW
        )?;
    }
    Ok(())
}

/// The `gaswatch replay` command. Returns the summary (already printed).
pub fn run(args: &ReplayArgs) -> Result<Summary, anyhow::Error> {
    use std::io::IsTerminal;
    let config = crate::config::Config::load(&args.config)?;
    let plan = Arc::new(EnginePlan::compile(&config));
    let to_stdout = args.events.as_deref() == Some(std::path::Path::new("-"));
    let events: Option<Box<dyn Write>> = match &args.events {
        None => None,
        Some(_) if to_stdout => Some(Box::new(std::io::BufWriter::new(std::io::stdout()))),
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|source| ReplayCliError::Output {
                path: p.display().to_string(),
                source,
            })?,
        ))),
    };
    let total: u64 = args
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let progress = if args.no_progress || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            pb.set_style(style);
        }
        pb
    };
    let mut replayer = Replayer::new(Arc::clone(&plan), args.tick, events, args.out_dir.clone())?;
    let influx = match (&args.influx_url, &args.influx_db) {
        (Some(url), Some(db)) => Some(super::replay_influx::InfluxOutOptions::v1(
            url,
            db,
            &args.influx_origin,
        )),
        _ if args.influx_from_config => {
            let Some(influx) = config.sinks.influxdb.clone() else {
                return Err(ReplayCliError::NoInfluxSink {
                    config: args.config.display().to_string(),
                }
                .into());
            };
            Some(super::replay_influx::InfluxOutOptions {
                influx,
                origin: args.influx_origin.clone(),
                spool_dir: None,
                stall: args.influx_stall,
            })
        }
        _ => None,
    };
    if let Some(mut opts) = influx {
        crate::sinks::tls::ensure_crypto_provider();
        opts.spool_dir = args.influx_spool.clone();
        opts.stall = args.influx_stall;
        replayer = replayer.with_influx(super::replay_influx::InfluxOut::start(opts)?);
    }
    let mut shown = 0u32;
    let mut on_bad = |b: &RowError| {
        shown += 1;
        if shown <= 20 {
            progress.suspend(|| eprintln!("bad row: {b}"));
        } else if shown == 21 {
            progress.suspend(|| eprintln!("(more bad rows: counted in the summary)"));
        }
    };
    replay_files(
        &mut replayer,
        &plan,
        &args.files,
        ReadOptions {
            format: args.format,
            strict: args.strict,
            speed: args.speed,
        },
        &progress,
        &mut on_bad,
    )?;
    progress.finish_and_clear();
    let summary = replayer.summary.clone();
    // With events on stdout the human summary goes to stderr.
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    print_summary(out.as_mut(), &summary)?;
    if let Some(r) = &replayer.influx_report {
        writeln!(
            out,
            "  influxdb       {} records to {} ({}, source={})",
            r.records, r.url, r.database, args.influx_origin
        )?;
        if let Some(q) = &r.quarantine {
            writeln!(
                out,
                "  influxdb       some lines were refused; they are in {}",
                q.display()
            )?;
        }
    }
    if let Some(truth) = &args.compare {
        let truth = super::scorecard::load_truth(truth)?;
        let card = super::scorecard::score(&truth, &summary.alarms, args.grace);
        super::scorecard::print(out.as_mut(), &card)?;
    }
    Ok(summary)
}
