//! The `gaswatch` command line: run | demo | check | probe.
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
    },
    /// Validate a configuration file and print every problem (exit code 2 on problems).
    Check {
        /// Station configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Simulated city-gate station and the daemon together, with a live view; no servers needed.
    Demo(gaswatch::demo::DemoArgs),
    /// Read a register range once and list every plausible decoding (types x byte orders x base 0/1).
    Probe(gaswatch::sources::modbus::probe::ProbeArgs),
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
        Command::Run { config } => {
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
            runtime_main(async move {
                let cancel = CancellationToken::new();
                gaswatch::topology::signals::spawn_shutdown_handler(cancel.clone());
                let reloads = gaswatch::topology::signals::spawn_reload_on_sighup(config);
                gaswatch::topology::run_reloadable(c, Default::default(), reloads, cancel).await
            })
        }
        Command::Probe(args) => {
            runtime_main(async move { gaswatch::sources::modbus::probe::run(args).await })
        }
        Command::Demo(args) => {
            runtime_main(async move { gaswatch::demo::run(args, cli.log_format).await })
        }
    }
}

fn runtime_main<F, E>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
