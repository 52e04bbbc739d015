//! The daemon watching itself: logging setup (human-readable text by
//! default, JSON lines on request; stderr, or a file when a terminal view
//! owns the screen), the Prometheus recorder (`prom`), the `/health` state
//! (`health`), per-device point-quality gauges (`device_points`), the
//! read-only HTTP endpoint (`http`), build facts (`build`) and the opt-in
//! alarm stage trace for latency benchmarks (`alarm_trace`).

pub mod alarm_trace;
pub mod build;
pub mod config;
pub mod device_points;
pub mod health;
pub mod http;
pub mod prom;

use std::path::Path;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default level
/// (`info`). With `file`, logs are appended there instead of stderr.
pub fn init_logging(format: LogFormat, file: Option<&Path>) -> std::io::Result<()> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Libraries that log, at ERROR and without naming the sink, a failure
    // the sink itself logs with its name (a TLS certificate the InfluxDB
    // writer reports as "invalid peer certificate: ..."). Named in RUST_LOG,
    // they log as asked.
    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    for (target, directive) in [("rustls_platform_verifier", "rustls_platform_verifier=off")] {
        if !asked.contains(target)
            && let Ok(d) = directive.parse()
        {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (format, file) {
        // Colours only on a terminal: journald and log files would keep
        // the escape codes.
        (LogFormat::Text, None) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (format, Some(path)) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            let w = std::sync::Mutex::new(f);
            match format {
                LogFormat::Text => builder.with_ansi(false).with_writer(w).try_init(),
                LogFormat::Json => builder.json().with_writer(w).try_init(),
            }
        }
    };
    // A second init (tests) is harmless.
    let _ = result;
    Ok(())
}
