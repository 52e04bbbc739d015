//! `gaswatch demo`: the simulator and the daemon in one process on loopback,
//! on embedded defaults (the example city-gate station, a short balance
//! window, files under `data/demo`), with a live terminal view. A leak is
//! injected after a short while so a new user sees the imbalance (leak)
//! alarm within two minutes. `--influx` / `--mqtt` send to real servers too.

use crate::config::{Config, SinksConfig};
use crate::model::{AlarmAction, Quality};
use crate::sinks::file::config::FileSinkConfig;
use crate::sinks::influxdb::config::InfluxConfig;
use crate::sinks::mqtt::config::MqttConfig;
use crate::telemetry::{LogFormat, init_logging};
use crate::topology::{self, RunOptions, live::LiveState};
use gaswatch_sim::{Leak, SimOptions, Station};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The station the demo simulates and polls.
pub const DEMO_STATION: &str = include_str!("../config/city-gate.toml");

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo's files (line protocol, alarms, balance, spool, log).
    #[arg(long, default_value = "data/demo")]
    pub data: PathBuf,
    /// Also write to a real InfluxDB (v1 API), e.g. http://127.0.0.1:8086.
    #[arg(long)]
    pub influx: Option<String>,
    /// InfluxDB database for --influx.
    #[arg(long, default_value = "gaswatch")]
    pub influx_db: String,
    /// Also publish alarms to a real MQTT broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Size of the injected leak, percent of throughput (0 = no leak).
    #[arg(long, default_value_t = 5.0)]
    pub leak_percent: f64,
    /// When the leak starts, after start-up.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub leak_after: Duration,
    /// Balance window length.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Simulator random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Plain status lines instead of the full-screen view (automatic when not a terminal).
    #[arg(long)]
    pub plain: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo station config: {0}")]
    Config(String),
    #[error("simulator: {0}")]
    Sim(#[from] gaswatch_sim::SimError),
    #[error("{0}")]
    Start(#[from] topology::StartError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Url(String),
}

/// What the demo saw, printed at the end and used by tests.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    pub samples: u64,
    pub balances: usize,
    pub alarms_raised: Vec<String>,
    /// Seconds from start to the first imbalance alarm.
    pub leak_alarm_after_s: Option<f64>,
}

/// Runs the demo with logging set up for it.
pub async fn run(args: DemoArgs, log_format: LogFormat) -> Result<(), DemoError> {
    std::fs::create_dir_all(&args.data).map_err(|source| DemoError::Io {
        path: args.data.clone(),
        source,
    })?;
    let log = args.data.join("gaswatch.log");
    let fancy = !args.plain && std::io::stdout().is_terminal();
    let _ = init_logging(log_format, fancy.then_some(log.as_path()));
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        c2.cancel();
    });
    let summary = run_with(args, fancy, cancel).await?;
    println!(
        "demo finished: {} samples, {} balance windows, alarms raised: {}{}",
        summary.samples,
        summary.balances,
        if summary.alarms_raised.is_empty() {
            "none".to_string()
        } else {
            summary.alarms_raised.join(", ")
        },
        summary
            .leak_alarm_after_s
            .map(|s| format!("; leak (imbalance) alarm {s:.0} s after start"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Builds the demo config: the embedded station, pointed at the simulator.
pub fn demo_config(
    args: &DemoArgs,
    endpoints: &BTreeMap<(String, u16), u16>,
) -> Result<Config, DemoError> {
    let mut c = Config::from_str_named(DEMO_STATION, Path::new("config/city-gate.toml"))
        .map_err(|e| DemoError::Config(e.to_string()))?;
    for d in &mut c.devices {
        if let Some(&port) = endpoints.get(&(d.host.clone(), d.port)) {
            d.host = "127.0.0.1".into();
            d.port = port;
        }
    }
    c.balance.window = args.window;
    c.spool.dir = args.data.join("spool");
    c.sinks = SinksConfig {
        file: Some(FileSinkConfig {
            dir: args.data.clone(),
        }),
        influxdb: args
            .influx
            .as_ref()
            .map(|url| InfluxConfig::v1(url, &args.influx_db)),
        mqtt: match &args.mqtt {
            Some(url) => {
                let (host, port) = parse_mqtt_url(url)?;
                Some(MqttConfig {
                    tls: None,
                    host,
                    port,
                    client_id: None,
                    username: None,
                    password: None,
                    topic_prefix: "gaswatch".into(),
                    keep_alive: Duration::from_secs(30),
                    heartbeat: Duration::from_secs(30),
                    accept_commands: true,
                })
            }
            None => None,
        },
        ..SinksConfig::default()
    };
    let problems = c.validate();
    if !problems.is_empty() {
        return Err(DemoError::Config(format!("{problems:?}")));
    }
    Ok(c)
}

fn parse_mqtt_url(url: &str) -> Result<(String, u16), DemoError> {
    let rest = url.strip_prefix("mqtt://").unwrap_or(url);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.trim_end_matches('/').parse::<u16>().map_err(|_| {
                DemoError::Url(format!(
                    "--mqtt {url}: expected mqtt://HOST:PORT with a numeric port"
                ))
            })?,
        ),
        None => (rest.trim_end_matches('/').to_string(), 1883),
    };
    if host.is_empty() {
        return Err(DemoError::Url(format!(
            "--mqtt {url}: expected mqtt://HOST:PORT"
        )));
    }
    Ok((host, port))
}

/// Runs simulator + daemon until `cancel` or `args.duration`; returns what it saw.
pub async fn run_with(
    args: DemoArgs,
    fancy: bool,
    cancel: CancellationToken,
) -> Result<DemoSummary, DemoError> {
    let leak = (args.leak_percent > 0.0).then_some(Leak {
        start_after: args.leak_after,
        percent: args.leak_percent,
        end_after: None,
    });
    let opts = SimOptions {
        seed: args.seed,
        leak,
        ..SimOptions::default()
    };
    let station = Station::from_config_str(DEMO_STATION, &opts)?;
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let handles = gaswatch_sim::serve_all(station, |_| any).await?;
    let endpoints: BTreeMap<(String, u16), u16> = handles
        .iter()
        .map(|(ep, h)| ((ep.host.clone(), ep.port), h.local_addr().port()))
        .collect();
    let config = demo_config(&args, &endpoints)?;
    let plan = crate::engine::EnginePlan::compile(&config);
    let live = Arc::new(Mutex::new(LiveState::new(&plan)));
    let daemon_cancel = cancel.child_token();
    let daemon = tokio::spawn(topology::run(
        config,
        RunOptions {
            live: Some(Arc::clone(&live)),
            ..Default::default()
        },
        daemon_cancel.clone(),
    ));

    let started = Instant::now();
    let mut summary = DemoSummary::default();
    let mut seen_events = 0usize;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = every.tick() => {}
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) || daemon.is_finished() {
            break;
        }
        let Ok(state) = live.lock().map(|s| s.clone()) else {
            break;
        };
        update_summary(&mut summary, &state, &plan, started, &mut seen_events);
        let screen = render(&plan, &state, started.elapsed(), &args);
        let mut out = std::io::stdout().lock();
        if fancy {
            let _ = write!(out, "\x1b[2J\x1b[H{screen}");
        } else if started.elapsed().as_secs().is_multiple_of(10) {
            let _ = writeln!(out, "{}", status_line(&plan, &state, started.elapsed()));
        }
        let _ = out.flush();
    }
    daemon_cancel.cancel();
    let result = daemon.await;
    for (_, h) in handles {
        h.stop().await;
    }
    if let Ok(state) = live.lock().map(|s| s.clone()) {
        update_summary(&mut summary, &state, &plan, started, &mut seen_events);
    }
    match result {
        Ok(Ok(())) => Ok(summary),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(DemoError::Config(format!("daemon task failed: {e}"))),
    }
}

fn update_summary(
    s: &mut DemoSummary,
    st: &LiveState,
    plan: &crate::engine::EnginePlan,
    started: Instant,
    seen: &mut usize,
) {
    s.samples = st.samples;
    s.balances = s.balances.max(st.balances.len());
    // `events` is bounded; count by sequence numbers to see each once.
    let last_seen = *seen;
    for e in st.events.iter().filter(|e| e.seq as usize > last_seen) {
        *seen = e.seq as usize;
        if e.action == AlarmAction::Raise {
            let id = plan.alarms[e.alarm as usize].id.clone();
            if matches!(
                e.kind,
                crate::model::AlarmKind::Imbalance | crate::model::AlarmKind::Leak
            ) && s.leak_alarm_after_s.is_none()
            {
                s.leak_alarm_after_s = Some(started.elapsed().as_secs_f64());
            }
            s.alarms_raised.push(id);
        }
    }
}

fn status_line(plan: &crate::engine::EnginePlan, st: &LiveState, t: Duration) -> String {
    let last = st.balances.back();
    format!(
        "t={:>4}s samples={} active_alarms={} last_window_imbalance={}",
        t.as_secs(),
        st.samples,
        st.active
            .values()
            .map(|a| plan.alarms[a.alarm as usize].id.as_str())
            .collect::<Vec<_>>()
            .join(","),
        last.map(|b| format!("{:+.2}% ({})", b.imbalance_percent, b.quality.as_str()))
            .unwrap_or_else(|| "-".into())
    )
}

fn render(
    plan: &crate::engine::EnginePlan,
    st: &LiveState,
    t: Duration,
    args: &DemoArgs,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "gaswatch demo — station {} — {:>4} s — {} samples — Ctrl-C to stop",
        plan.station_id,
        t.as_secs(),
        st.samples
    );
    if args.leak_percent > 0.0 {
        let _ = writeln!(
            s,
            "simulated leak of {:.1} % {}",
            args.leak_percent,
            if t >= args.leak_after {
                "ACTIVE".to_string()
            } else {
                format!("starts at {} s", args.leak_after.as_secs())
            }
        );
    }
    let _ = writeln!(
        s,
        "\n{:<10} {:<10} {:>14} {:<8} {:<9}",
        "device", "point", "value", "unit", "quality"
    );
    for (i, tag) in plan.tags.iter().enumerate() {
        let (v, q, _) = st.values[i];
        let value = if v.is_finite() {
            format!("{v:>14.2}")
        } else {
            format!("{:>14}", "-")
        };
        let q = match q {
            Quality::Good => "good".to_string(),
            other => format!("\x1b[33m{}\x1b[0m", other.as_str()),
        };
        let _ = writeln!(
            s,
            "{:<10} {:<10} {value} {:<8} {q}",
            plan.device(tag.device).id,
            tag.name,
            tag.unit
        );
    }
    let _ = writeln!(
        s,
        "\nbalance (输差) per {} s window:",
        args.window.as_secs()
    );
    for b in st.balances.iter().rev().take(5) {
        let _ = writeln!(
            s,
            "  {}  in {:>9.1} Sm3  out {:>9.1} Sm3  imbalance {:>+8.1} Sm3 {:>+7.2} %  coverage {:>5.1} %  {}",
            b.end.to_rfc3339(),
            b.inlet_sm3,
            b.outlet_sm3,
            b.imbalance_sm3,
            b.imbalance_percent,
            b.coverage * 100.0,
            b.quality.as_str()
        );
    }
    let _ = writeln!(s, "\nactive alarms:");
    if st.active.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for a in st.active.values() {
        let def = &plan.alarms[a.alarm as usize];
        let _ = writeln!(
            s,
            "  \x1b[31m{:<8}\x1b[0m {:<28} value {:.2} limit {:.2} since {}",
            a.priority.as_str(),
            def.id,
            a.value,
            a.limit,
            a.ts.to_rfc3339()
        );
    }
    let _ = writeln!(s, "\nrecent events:");
    for e in st.events.iter().rev().take(6) {
        let def = &plan.alarms[e.alarm as usize];
        let _ = writeln!(
            s,
            "  #{:<4} {} {:<5} {}",
            e.seq,
            e.ts.to_rfc3339(),
            e.action.as_str(),
            def.id
        );
    }
    let _ = writeln!(s, "\nfiles: {}", args.data.display());
    s
}
