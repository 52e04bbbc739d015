//! `gaswatch-sim` binary: serve a simulated station until Ctrl-C.
//!
//! Responsibility: command line, logging setup and lifetime only; everything
//! else is the library. With `--bind`, every unit of the config is served on
//! that one address (RTU over TCP with `--rtu`); without it, each `host:port`
//! of the config gets its own listener at that address (as the daemon would
//! reach it), framed as its `transport` says. Serial (`transport = "rtu"`)
//! devices are not served by the binary; tests serve them on a pty.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use gaswatch_sim::{Framing, Leak, SimOptions, Station, serve_station, serve_with};
use tracing::info;

/// Simulated city-gate station serving Modbus/TCP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Station config (the same TOML file the daemon reads).
    #[arg(long, short = 'c')]
    config: std::path::PathBuf,
    /// Serve all units on this one address instead of the config's host:port.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// With --bind: speak RTU frames (unit, PDU, CRC) over TCP instead of
    /// Modbus/TCP, like a serial-to-Ethernet converter in transparent mode.
    #[arg(long, requires = "bind")]
    rtu: bool,
    /// Publish every [[mqtt_sources]] of the config to this broker instead
    /// of the source's own host:port.
    #[arg(long)]
    mqtt_broker: Option<SocketAddr>,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Meter noise, % of reading (one standard deviation).
    #[arg(long, default_value_t = 0.1)]
    noise_percent: f64,
    /// Leak rate in % of outlet throughput (no leak when absent).
    #[arg(long)]
    leak_percent: Option<f64>,
    /// When the leak starts, e.g. "60s", "5m", "1h30m", or seconds.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    leak_after: Duration,
    /// When the leak ends (never when absent).
    #[arg(long, value_parser = parse_duration)]
    leak_end: Option<Duration>,
    /// Simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Scenario timeline (TOML, see simulator/scenarios/); its seed and
    /// speed replace --seed and --speed.
    #[arg(long)]
    scenario: Option<std::path::PathBuf>,
    /// Write the ground truth (true events and values) as JSON lines here.
    #[arg(long)]
    truth: Option<std::path::PathBuf>,
    /// Offline: do not serve; generate the scenario's `duration` of data as
    /// wide CSV here (for `gaswatch replay`), as fast as possible.
    #[arg(long, requires = "scenario")]
    csv: Option<std::path::PathBuf>,
    /// How often to log a summary line; 0 disables it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    log_every: Duration,
}

/// Parses "1500ms", "60s", "5m", "2h", "1d", combinations like "1h30m", or a
/// bare number of seconds ("2.5").
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{text}`: {e}"));
    }
    let mut total = 0.0f64;
    let mut rest = t;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{text}`: a number needs a unit (ms, s, m, h, d)"))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}`: expected a number before the unit"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let factor = match unit.trim() {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            other => return Err(format!("`{text}`: unknown unit `{other}` (ms, s, m, h, d)")),
        };
        total += value * factor;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("`{text}`: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let station_cfg = gaswatch_sim::StationConfig::from_toml_str(&text)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let scenario = match &args.scenario {
        Some(p) => {
            let s =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(gaswatch_sim::scenario::Scenario::from_toml_str(
                &s,
                &p.display().to_string(),
                &station_cfg,
            )?)
        }
        None => None,
    };
    let opts = SimOptions {
        seed: scenario.as_ref().map_or(args.seed, |s| s.seed),
        speed: scenario.as_ref().map_or(args.speed, |s| s.speed),
        noise_percent: scenario
            .as_ref()
            .and_then(|s| s.noise_percent)
            .unwrap_or(args.noise_percent),
        leak: args.leak_percent.map(|percent| Leak {
            start_after: args.leak_after,
            percent,
            end_after: args.leak_end,
        }),
        // The devices' clock (archive hour ends): the scenario's start when
        // it has one, else now, so served archives line up with live data.
        clock_start_s: match scenario.as_ref().and_then(|s| s.start.as_deref()) {
            Some(start) => gaswatch_sim::scenario::parse_start(start)
                .map_err(anyhow::Error::msg)?
                .div_euclid(1_000_000_000),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        },
        ..SimOptions::default()
    };
    let mut station = Station::from_config_str(&text, &opts)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let mut truth: Option<Box<dyn std::io::Write + Send>> = match &args.truth {
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))),
        None => None,
    };
    let mut runner = scenario.map(|s| gaswatch_sim::scenario::Runner::new(s, &station_cfg));
    if let (Some(csv_path), Some(r)) = (&args.csv, runner.as_mut()) {
        let sc = r.scenario().clone();
        let start = gaswatch_sim::scenario::parse_start(
            sc.start.as_deref().unwrap_or("2026-01-01T00:00:00Z"),
        )
        .map_err(anyhow::Error::msg)?;
        let mut csv = std::io::BufWriter::new(
            std::fs::File::create(csv_path)
                .with_context(|| format!("creating {}", csv_path.display()))?,
        );
        let mut sink = std::io::sink();
        let rows = gaswatch_sim::scenario::generate_offline(
            &mut station,
            r,
            &station_cfg,
            gaswatch_sim::scenario::Span {
                start_ns: start,
                duration: sc.duration.unwrap_or(Duration::from_secs(3600)),
                step: sc.step.unwrap_or(Duration::from_secs(1)),
            },
            &mut csv,
            truth
                .as_mut()
                .map_or(&mut sink as &mut dyn std::io::Write, |t| t.as_mut()),
        )?;
        std::io::Write::flush(&mut csv)?;
        if let Some(t) = truth.as_mut() {
            t.flush()?;
        }
        info!(rows, path = %csv_path.display(), "Scenario generated.");
        return Ok(());
    }
    info!(
        station = station.station_id(),
        seed = args.seed,
        speed = args.speed,
        "Station loaded."
    );

    let mut pty_slaves = Vec::new();
    // A station whose points all come over MQTT serves no Modbus listener.
    let mqtt_only = station.endpoints().is_empty() && !station.mqtt_sources().is_empty();
    let (control, handles) = if mqtt_only {
        (gaswatch_sim::SimControl::standalone(station), Vec::new())
    } else {
        let handles = match args.bind {
            Some(addr) => {
                let framing = if args.rtu { Framing::Rtu } else { Framing::Tcp };
                vec![serve_with(station, addr, framing).await?]
            }
            None => {
                let mut addrs = Vec::new();
                // Each serial bus on a pseudo-terminal: the simulator holds
                // the master side, the daemon opens the slave's path.
                let mut ptys = std::collections::BTreeMap::new();
                for ep in station.endpoints() {
                    if ep.is_serial() {
                        let (master, slave) = tokio_serial::SerialStream::pair()
                            .with_context(|| format!("opening a pseudo-terminal for {ep}"))?;
                        let path = tokio_serial::SerialPort::name(&slave)
                            .with_context(|| format!("the pseudo-terminal for {ep} has no path"))?;
                        info!(bus = %ep.host, pty = %path, "Serial bus served on a pseudo-terminal: set this device's serial path to it in the daemon's config (8N1: ptys refuse parity).");
                        println!("serial {} -> {path}", ep.host);
                        ptys.insert(ep.clone(), master);
                        // The slave stays open for the run: a pty master
                        // whose slaves all closed reports a hang-up.
                        pty_slaves.push(slave);
                        continue;
                    }
                    let addr = tokio::net::lookup_host((ep.host.as_str(), ep.port))
                        .await
                        .with_context(|| format!("resolving {ep}"))?
                        .next()
                        .with_context(|| format!("{ep} resolves to no address"))?;
                    addrs.push((ep, addr));
                }
                let fallback: SocketAddr = ([127, 0, 0, 1], 0).into();
                serve_station(
                    station,
                    |ep| {
                        addrs
                            .iter()
                            .find(|(e, _)| e == ep)
                            .map_or(fallback, |(_, a)| *a)
                    },
                    |ep| ptys.remove(ep),
                )
                .await?
                .into_values()
                .collect()
            }
        };
        for h in &handles {
            info!(addr = %h.local_addr(), "Serving Modbus.");
        }
        let Some(control) = gaswatch_sim::SimControl::of(&handles) else {
            anyhow::bail!("the config has no devices and no MQTT sources to serve");
        };
        (control, handles)
    };
    // Publish the config's [[mqtt_sources]] (to --mqtt-broker when given).
    let mqtt = gaswatch_sim::mqtt::serve_mqtt(control.clone(), |src| match &args.mqtt_broker {
        Some(b) => (b.ip().to_string(), b.port()),
        None => (src.host.clone(), src.port),
    })?;
    let driver = runner.map(|r| {
        gaswatch_sim::driver::ScenarioDriver::start(
            control.clone(),
            r,
            truth.take(),
            gaswatch_sim::driver::DEFAULT_TICK,
        )
    });
    let mut ticker = (!args.log_every.is_zero()).then(|| tokio::time::interval(args.log_every));
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.context("waiting for Ctrl-C")?;
                break;
            }
            _ = async {
                match ticker.as_mut() {
                    Some(t) => { t.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                let s = control.snapshot();
                let p = s.physics;
                info!(
                    sim_time_s = s.sim_time.as_secs(),
                    demand_sm3_per_h = format!("{:.0}", p.demand_sm3_per_h),
                    inlet_sm3_per_h = format!("{:.0}", p.inlet_flow_sm3_per_h),
                    leak_sm3_per_h = format!("{:.0}", p.leak_sm3_per_h),
                    outlet_pressure_kpa = format!("{:.1}", p.outlet_pressure_kpa),
                    linepack_sm3 = format!("{:.1}", p.linepack_sm3),
                    "Station state."
                );
            }
        }
    }
    if let Some(d) = driver {
        d.stop().await.context("writing the ground truth")?;
    }
    mqtt.stop().await;
    info!("Stopping.");
    for h in handles {
        h.stop().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("s").is_err());
    }
}
