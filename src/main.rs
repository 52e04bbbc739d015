//! The `gaswatch` command line: run | demo | check | probe | replay | dispatch |
//! alarms history | gas | report | leak-scorecard.
//! Exit codes: 0 success, 1 runtime failure, 2 configuration error.

use clap::{Parser, Subcommand};
use gaswatch::config::Config;
use gaswatch::telemetry::{LogFormat, init_logging};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "gaswatch",
    version = gaswatch_version(),
    about = "SCADA telemetry ingester for gas stations"
)]
struct Cli {
    /// Log format: text (default) or json.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: poll the station, compute balance and alarms, write to the sinks.
    Run {
        /// Station configuration file.
        #[arg(short, long, env = "GASWATCH_CONFIG")]
        config: PathBuf,
        /// Record every engine input and tick to this capture file, for an
        /// exact `gaswatch replay` later (see docs/engineers-guide.md).
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Replay line protocol, wide CSV or a capture through the engine; print
    /// events, a summary and optionally a detection scorecard.
    Replay(gaswatch::cli::replay::ReplayArgs),
    /// Validate a configuration file and print every problem (exit code 2 on problems).
    Check {
        /// Station configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Simulated city-gate station and the daemon together, with a live view; no servers needed.
    Demo(gaswatch::demo::DemoArgs),
    /// Z, base-volume conversion factor and line pack for a gas at P and T.
    Gas(gaswatch::cli::gas::GasArgs),
    /// Leak-detection scorecard on simulated data (pure engine, no sockets);
    /// prints the Markdown table committed in docs/leak-detection.md.
    LeakScorecard {
        /// Seeds per case.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Simulated days of normal operation for false alarms (0: skip).
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// Leak sizes to score, % of throughput (for quicker partial runs).
        #[arg(long, value_delimiter = ',', default_values_t = [5.0, 2.0, 1.0, 0.5])]
        leaks: Vec<f64>,
        /// Which rows: "both" (default), "steady" or "transients".
        #[arg(long, default_value = "both", value_parser = ["both", "steady", "transients"])]
        rows: String,
        /// Seeds of the normal-operation (false alarm) runs.
        #[arg(long, default_value_t = 3)]
        normal_seeds: u64,
        /// `balance.edge` of the reported 输差 windows, e.g. "30s" (default:
        /// the config default, sharp edges).
        #[arg(long, value_parser = humantime::parse_duration)]
        balance_edge: Option<std::time::Duration>,
    },
    /// Hourly and daily balance (输差) reports from the file sink's balance.jsonl.
    Report {
        /// The balance.jsonl file (in the file sink's directory).
        #[arg(long, default_value = "data/balance.jsonl")]
        file: PathBuf,
        /// Local hour at which the gas day starts.
        #[arg(long, default_value_t = 8)]
        contract_hour: i64,
        /// Local time offset from UTC, hours.
        #[arg(long, default_value_t = 8)]
        utc_offset_hours: i64,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Read a register range once and list every plausible decoding (types x byte orders x base 0/1).
    Probe(gaswatch::sources::modbus::probe::ProbeArgs),
    /// The dispatcher's console: all stations and standing alarms from the broker; ack and shelve.
    Dispatch(gaswatch::dispatch::DispatchArgs),
    /// Alarm journal tools.
    Alarms {
        #[command(subcommand)]
        command: AlarmsCommand,
    },
}

#[derive(Subcommand)]
enum AlarmsCommand {
    /// Print the alarm journal: transitions, acks, shelves, escalations, commands.
    History {
        /// Station configuration file (gives the journal path).
        #[arg(short, long, env = "GASWATCH_CONFIG")]
        config: PathBuf,
        /// Only entries newer than this: a duration ("2h") or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only this alarm id (or a prefix ending in '/').
        #[arg(long)]
        alarm: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Alarm-system performance over a period (ISA-18.2 / EEMUA 191
    /// measures): rates, floods, bad actors, chattering, stale and shelved
    /// alarms, time to acknowledge.
    Report {
        /// Station configuration file (gives the journal path).
        #[arg(short, long, env = "GASWATCH_CONFIG")]
        config: PathBuf,
        /// Start of the period: a duration back from --until ("7d") or an
        /// RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        /// End of the period: an RFC 3339 time (default: now).
        #[arg(long)]
        until: Option<String>,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                let plan = gaswatch::engine::EnginePlan::compile(&c);
                let reads: usize = plan.devices.iter().map(|d| d.blocks.len()).sum();
                println!(
                    "{}: OK: station {} ({}), {} devices, {} points in {} reads per cycle, {} alarms, {} meters",
                    config.display(),
                    c.station.id,
                    c.station.kind.as_str(),
                    plan.devices.len(),
                    plan.tags.len(),
                    reads,
                    plan.alarms.len(),
                    plan.meters.len()
                );
                if !c.balance.groups.is_empty() {
                    let ids: Vec<&str> = plan.groups.iter().map(|g| g.id.as_str()).collect();
                    println!("  balance groups: {}", ids.join(", "));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!(
                    "{}: {} problem(s) found",
                    config.display(),
                    e.problems.len()
                );
                ExitCode::from(2)
            }
        },
        Command::Replay(args) => match gaswatch::cli::replay::run(&args) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gaswatch replay: {e:#}");
                if e.downcast_ref::<gaswatch::config::ConfigError>().is_some() {
                    ExitCode::from(2)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
        Command::Run { config, record } => {
            // The Prometheus recorder calibrates its clock first (quanta:
            // a busy loop of at least 0.5 ms, up to 200 ms when the TSC
            // reads are noisy): on its own thread while the config is
            // parsed. The daemon's own `install()` waits for it, so the
            // recorder is still in place before any source or sink starts.
            std::thread::spawn(|| {
                gaswatch::telemetry::prom::install();
            });
            let c = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = init_logging(cli.log_format, None) {
                eprintln!("cannot set up logging: {e}");
                return ExitCode::FAILURE;
            }
            // One thread runs the whole daemon (pollers, engine, sinks,
            // HTTP); blocking work (fsync, file writes of the spools) goes to
            // tokio's blocking pool as before. The daemon is I/O bound: at
            // EMQ Neuron's workload (500 devices x 30 points every second) it
            // uses ~3 % of one core, and one thread sustains 1.2 M points/s
            // (BENCHMARKS.md). With a worker pool the engine woke on one
            // thread per input and its state lived in per-thread malloc
            // arenas: 31 MB peak RSS at that workload against 25 MB on one
            // thread, with the same CPU and alarm latency.
            runtime_main(RuntimeKind::OneThread, async move {
                let cancel = CancellationToken::new();
                gaswatch::topology::signals::spawn_shutdown_handler(cancel.clone());
                let opts = gaswatch::topology::RunOptions {
                    record,
                    ..Default::default()
                };
                let reloads = gaswatch::topology::signals::spawn_reload_on_sighup(config);
                gaswatch::topology::run_reloadable(c, opts, reloads, cancel).await
            })
        }
        Command::Gas(args) => {
            let from_config = match &args.config {
                Some(path) => match Config::load(path) {
                    Ok(c) => Some(c.gas),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                None => None,
            };
            match gaswatch::cli::gas::run(&args, from_config) {
                Ok(r) if args.json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    println!("{r}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gaswatch gas: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::LeakScorecard {
            seeds,
            days,
            leaks,
            rows,
            normal_seeds,
            balance_edge,
        } => {
            let plan = gaswatch::cli::leak_scorecard::Plan {
                seeds,
                normal_days: days,
                leaks,
                steady: rows != "transients",
                transients: rows != "steady",
                normal_seeds,
                balance_edge,
                ..Default::default()
            };
            match gaswatch::cli::leak_scorecard::run(&plan) {
                Ok(md) => {
                    print!("{md}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gaswatch leak-scorecard: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Report {
            file,
            contract_hour,
            utc_offset_hours,
            json,
        } => {
            let offset = (contract_hour - utc_offset_hours).rem_euclid(24) * 3_600_000_000_000;
            match gaswatch::cli::report::from_file(&file, offset) {
                Ok(r) if json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    print!("{r}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gaswatch report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Probe(args) => runtime_main(RuntimeKind::Workers, async move {
            gaswatch::sources::modbus::probe::run(args).await
        }),
        Command::Demo(args) => runtime_main(RuntimeKind::Workers, async move {
            gaswatch::demo::run(args, cli.log_format).await
        }),
        Command::Dispatch(args) => {
            if args.json
                && let Err(e) = init_logging(cli.log_format, None)
            {
                eprintln!("cannot set up logging: {e}");
            }
            runtime_main(RuntimeKind::Workers, async move {
                gaswatch::dispatch::run(args).await
            })
        }
        Command::Alarms {
            command:
                AlarmsCommand::History {
                    config,
                    since,
                    alarm,
                    json,
                },
        } => history(&config, since.as_deref(), alarm.as_deref(), json),
        Command::Alarms {
            command:
                AlarmsCommand::Report {
                    config,
                    since,
                    until,
                    json,
                },
        } => alarm_report(&config, &since, until.as_deref(), json),
    }
}

/// ns since the epoch of an RFC 3339 time.
fn rfc3339_ns(s: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(s).ok().map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    })
}

/// The journal path of the config at `config`, or the config error.
fn journal_of(config: &std::path::Path) -> Result<std::path::PathBuf, ExitCode> {
    match Config::load(config) {
        Ok(c) => Ok(c
            .alarms
            .journal
            .clone()
            .unwrap_or_else(|| gaswatch::journal::default_path(&c.spool.dir))),
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(2))
        }
    }
}

fn alarm_report(
    config: &std::path::Path,
    since: &str,
    until: Option<&str>,
    json: bool,
) -> ExitCode {
    let path = match journal_of(config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let to_ns = match until {
        None => gaswatch::model::Timestamp::now().nanos(),
        Some(u) => match rfc3339_ns(u) {
            Some(t) => t,
            None => {
                eprintln!("--until: expected an RFC 3339 time, got {u:?}");
                return ExitCode::from(2);
            }
        },
    };
    let from_ns = match humantime::parse_duration(since) {
        Ok(d) => to_ns.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        Err(_) => match rfc3339_ns(since) {
            Some(t) => t,
            None => {
                eprintln!(
                    "--since: expected a duration (\"7d\") or an RFC 3339 time, got {since:?}"
                );
                return ExitCode::from(2);
            }
        },
    };
    if from_ns >= to_ns {
        eprintln!("--since must be before --until");
        return ExitCode::from(2);
    }
    let (entries, skipped) = match gaswatch::journal::read_entries(&path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if skipped > 0 {
        eprintln!("{}: {skipped} unreadable lines skipped", path.display());
    }
    let r = gaswatch::cli::alarm_report::report(&entries, from_ns, to_ns);
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(t) => println!("{t}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", gaswatch::cli::alarm_report::render(&r));
    }
    ExitCode::SUCCESS
}

fn history(
    config: &std::path::Path,
    since: Option<&str>,
    alarm: Option<&str>,
    json: bool,
) -> ExitCode {
    let path = match journal_of(config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let since_ns = match since {
        None => None,
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) => Some(
                gaswatch::model::Timestamp::now().nanos()
                    - i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            ),
            Err(_) => match rfc3339_ns(s) {
                Some(t) => Some(t),
                None => {
                    eprintln!(
                        "--since: expected a duration (\"2h\") or an RFC 3339 time, got {s:?}"
                    );
                    return ExitCode::from(2);
                }
            },
        },
    };
    let (entries, skipped) = match gaswatch::journal::read_entries(&path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for e in gaswatch::journal::query(&entries, since_ns, alarm) {
        if json {
            println!("{}", serde_json::to_string(e).unwrap_or_default());
        } else {
            println!("{}", gaswatch::journal::format_entry(e));
        }
    }
    if skipped > 0 {
        eprintln!(
            "{}: {skipped} unreadable or torn line(s) skipped",
            path.display()
        );
    }
    ExitCode::SUCCESS
}

/// Which tokio runtime a command runs on.
#[derive(Clone, Copy)]
enum RuntimeKind {
    /// Everything on the calling thread (the daemon: I/O bound).
    OneThread,
    /// A worker per core (the demo runs the simulator beside the daemon).
    Workers,
}

fn runtime_main<F, E>(kind: RuntimeKind, fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut builder = match kind {
        RuntimeKind::OneThread => tokio::runtime::Builder::new_current_thread(),
        RuntimeKind::Workers => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gaswatch: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--version`: version, git commit, enabled features (fixed at build time).
fn gaswatch_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(gaswatch::telemetry::build::version_line)
}
