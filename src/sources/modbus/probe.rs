//! `gaswatch probe`: the commissioning aid for byte-order confusion, the most
//! common support question in this field. Reads a register range once (FC03
//! or FC04 only, read-only like the poller) and lists every plausible
//! decoding (types x byte orders x register numbering base 0/1), ranked by how
//! well it fits the range the operator expects (e.g. "a pressure of 0..10000
//! kPa"). The ranking is a pure function ([`candidates`]) so it is tested
//! without a device. Every transport the poller has: Modbus/TCP, RTU over
//! TCP (`--transport rtu_over_tcp`) and RTU on a serial port (`--serial
//! PATH --baud N --parity P`).

use crate::engine::decode::raw_value;
use crate::sources::modbus::serial::BusPort;
use crate::sources::modbus::{DataType, Parity, RegisterKind, SerialConfig, WordOrder};
use std::fmt::Write as _;
use std::time::Duration;
use tokio_modbus::client::{Client, Context, rtu, tcp};
use tokio_modbus::{Request, Response, Slave};

/// Errors of the probe command.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("--expect {0:?}: expected MIN..MAX with MIN < MAX, e.g. 0..10000")]
    Expect(String),
    #[error("--count {0}: expected 1..=124 registers")]
    Count(u16),
    #[error("{endpoint}: connect failed: {source}")]
    Connect {
        /// `host:port` or the serial port's path.
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint} unit {unit}: no answer within {timeout:?}")]
    Timeout {
        endpoint: String,
        unit: u8,
        timeout: Duration,
    },
    #[error("{endpoint} unit {unit}: {message}")]
    Read {
        endpoint: String,
        unit: u8,
        message: String,
    },
    #[error(
        "--{0}: expected --host HOST (tcp, rtu_over_tcp) or --serial PATH (rtu), not both or neither"
    )]
    Endpoint(&'static str),
    #[error("--stop-bits {0}: expected 1 or 2")]
    StopBits(u8),
}

/// How the probe reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeTransport {
    /// Modbus/TCP (MBAP framing).
    Tcp,
    /// RTU frames over a TCP socket (serial-to-Ethernet converters in
    /// transparent mode).
    RtuOverTcp,
}

/// Parity of `--serial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeParity {
    None,
    Even,
    Odd,
}

/// Arguments of `gaswatch probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Device or gateway host (Modbus/TCP or RTU over TCP).
    #[arg(long)]
    pub host: Option<String>,
    /// TCP port.
    #[arg(long, default_value_t = 502)]
    pub port: u16,
    /// Framing on the TCP connection: tcp or rtu-over-tcp.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: ProbeTransport,
    /// Serial port of an RTU bus, e.g. /dev/ttyUSB0 (instead of --host).
    /// Opened exclusively: stop the daemon's poller on that bus first.
    #[arg(long, conflicts_with = "host")]
    pub serial: Option<String>,
    /// Line speed of --serial.
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// Parity of --serial (Modbus default even; many devices use none).
    #[arg(long, value_enum, default_value = "even")]
    pub parity: ProbeParity,
    /// Stop bits of --serial: 1 or 2.
    #[arg(long, default_value_t = 1)]
    pub stop_bits: u8,
    /// Unit (slave) id.
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Register address as the manual writes it (tried as base 0 and base 1).
    #[arg(long)]
    pub address: u16,
    /// Registers to consider from the address (4 covers 64-bit values).
    #[arg(long, default_value_t = 4)]
    pub count: u16,
    /// Expected engineering range, MIN..MAX (e.g. 0..10000); ranks the candidates.
    #[arg(long)]
    pub expect: Option<String>,
    /// Register table: holding (FC03) or input (FC04).
    #[arg(long, default_value = "holding", value_parser = ["holding", "input"])]
    pub register: String,
    /// Time allowed for connecting and for the read.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Most candidates printed.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

/// One way to read the registers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Numbering base the address was taken in (wire = address - base).
    pub base: u8,
    pub wire_address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    pub value: f64,
    /// Lower is better; 0 = centre of the expected range.
    pub score: f64,
    pub in_range: bool,
}

/// Parses "MIN..MAX".
pub fn parse_expect(s: &str) -> Result<(f64, f64), ProbeError> {
    let err = || ProbeError::Expect(s.to_string());
    let (lo, hi) = s.split_once("..").ok_or_else(err)?;
    let lo: f64 = lo.trim().parse().map_err(|_| err())?;
    let hi: f64 = hi.trim().parse().map_err(|_| err())?;
    if lo.is_finite() && hi.is_finite() && lo < hi {
        Ok((lo, hi))
    } else {
        Err(err())
    }
}

const TYPES: [DataType; 8] = [
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::F32,
    DataType::U64,
    DataType::I64,
    DataType::F64,
];

/// Every decoding of `words` (read from wire address `read_start`) for the
/// manual address `address` in base 0 and base 1, ranked best first. Without
/// an expected range, values of ordinary magnitude rank above tiny or huge
/// ones (a wrong float order usually gives 1e-30 or 1e+30).
pub fn candidates(
    words: &[u16],
    read_start: u16,
    address: u16,
    expect: Option<(f64, f64)>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for base in [0u8, 1] {
        let Some(wire) = address.checked_sub(u16::from(base)) else {
            continue;
        };
        let Some(rel) = wire.checked_sub(read_start) else {
            continue;
        };
        let Some(at) = words.get(usize::from(rel)..) else {
            continue;
        };
        for t in TYPES {
            let orders: &[WordOrder] = if t.is_multi_word() {
                &WordOrder::ALL
            } else {
                &[WordOrder::ABCD, WordOrder::BADC]
            };
            for &order in orders {
                let Some(value) = raw_value(at, t, order, 0) else {
                    continue;
                };
                if !value.is_finite() {
                    continue;
                }
                let (score, in_range) = match expect {
                    Some((lo, hi)) => {
                        let mid = (lo + hi) / 2.0;
                        let half = (hi - lo) / 2.0;
                        let d = (value - mid).abs() / half;
                        (d, d <= 1.0)
                    }
                    None => {
                        let m = value.abs();
                        let s = if m == 0.0 {
                            3.0
                        } else {
                            (m.log10() - 2.0).abs() / 4.0
                        };
                        (s, true)
                    }
                };
                out.push(Candidate {
                    base,
                    wire_address: wire,
                    data_type: t,
                    order,
                    value,
                    score,
                    in_range,
                });
            }
        }
    }
    // Stable: ties keep base 0 before 1 and narrow types before wide ones.
    out.sort_by(|a, b| a.score.total_cmp(&b.score));
    out
}

/// Renders the ranked table.
pub fn render(words: &[u16], read_start: u16, list: &[Candidate], top: usize) -> String {
    let mut s = String::new();
    let _ = write!(s, "registers from wire address {read_start}:");
    for w in words {
        let _ = write!(s, " {w:04X}");
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:>4}  {:>4}  {:>5}  {:<4}  {:<5}  {:>24}  fit",
        "rank", "base", "wire", "type", "order", "value"
    );
    for (i, c) in list.iter().take(top).enumerate() {
        let t = format!("{:?}", c.data_type).to_lowercase();
        let _ = writeln!(
            s,
            "{:>4}  {:>4}  {:>5}  {:<4}  {:<5}  {:>24}  {}",
            i + 1,
            c.base,
            c.wire_address,
            t,
            c.order.as_str(),
            format!("{:.6}", c.value),
            if c.in_range { "in range" } else { "-" }
        );
    }
    s
}

/// The endpoint's name for messages, and the connection being made.
fn connect(
    args: &ProbeArgs,
) -> (
    String,
    impl std::future::Future<Output = Result<Context, ProbeError>> + use<>,
) {
    let args = args.clone();
    let endpoint = match (&args.host, &args.serial) {
        (_, Some(path)) => path.clone(),
        (Some(host), None) => format!("{host}:{}", args.port),
        (None, None) => String::new(),
    };
    let name = endpoint.clone();
    let connecting = async move {
        let slave = Slave(args.unit);
        let connect_err = |source: std::io::Error| ProbeError::Connect {
            endpoint: name.clone(),
            source,
        };
        match (&args.host, &args.serial) {
            (None, Some(path)) => {
                if !(1..=2).contains(&args.stop_bits) {
                    return Err(ProbeError::StopBits(args.stop_bits));
                }
                let line = SerialConfig {
                    path: path.clone(),
                    baud: args.baud,
                    parity: match args.parity {
                        ProbeParity::None => Parity::None,
                        ProbeParity::Even => Parity::Even,
                        ProbeParity::Odd => Parity::Odd,
                    },
                    data_bits: 8,
                    stop_bits: args.stop_bits,
                };
                let port = BusPort::open(&line).map_err(connect_err)?;
                Ok(rtu::attach_slave(port, slave))
            }
            (Some(host), None) => {
                let addr = tokio::net::lookup_host((host.as_str(), args.port))
                    .await
                    .map_err(connect_err)?
                    .next()
                    .ok_or_else(|| {
                        connect_err(std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no address",
                        ))
                    })?;
                match args.transport {
                    ProbeTransport::Tcp => {
                        tcp::connect_slave(addr, slave).await.map_err(connect_err)
                    }
                    ProbeTransport::RtuOverTcp => {
                        let stream = tokio::net::TcpStream::connect(addr)
                            .await
                            .map_err(connect_err)?;
                        let _ = stream.set_nodelay(true);
                        Ok(rtu::attach_slave(stream, slave))
                    }
                }
            }
            _ => Err(ProbeError::Endpoint("host")),
        }
    };
    (endpoint, connecting)
}

/// Runs the probe: one read, then the ranked table on stdout.
pub async fn run(args: ProbeArgs) -> Result<(), ProbeError> {
    let expect = args.expect.as_deref().map(parse_expect).transpose()?;
    if !(1..=124).contains(&args.count) {
        return Err(ProbeError::Count(args.count));
    }
    // Read one register before the address too, so base 1 can be tried.
    let read_start = args.address.saturating_sub(1);
    let count = args.count + (args.address - read_start);
    let kind = if args.register == "input" {
        RegisterKind::Input
    } else {
        RegisterKind::Holding
    };
    let (unit, timeout) = (args.unit, args.timeout);
    let (endpoint, connecting) = connect(&args);
    let timeout_err = || ProbeError::Timeout {
        endpoint: endpoint.clone(),
        unit,
        timeout,
    };
    let mut ctx = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| timeout_err())??;
    let read_err = |message: String| ProbeError::Read {
        endpoint: endpoint.clone(),
        unit,
        message,
    };
    // Devices refuse a read that touches an unmapped register (exception
    // 02), so fall back to narrower reads: without the base-1 register, then
    // fewer registers.
    let mut attempts = vec![(read_start, count), (args.address, args.count)];
    attempts.extend(
        [4u16, 2, 1]
            .iter()
            .filter(|&&n| n < args.count)
            .map(|&n| (args.address, n)),
    );
    attempts.dedup();
    let mut last = String::new();
    let mut got = None;
    for (start, n) in attempts {
        let request = match kind {
            RegisterKind::Input => Request::ReadInputRegisters(start, n),
            _ => Request::ReadHoldingRegisters(start, n),
        };
        match tokio::time::timeout(timeout, ctx.call(request))
            .await
            .map_err(|_| timeout_err())?
        {
            Ok(Ok(Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w)))
                if w.len() == usize::from(n) =>
            {
                got = Some((start, w));
                break;
            }
            Ok(Ok(other)) => return Err(read_err(format!("unexpected answer {other:?}"))),
            Ok(Err(code)) if u8::from(code) == 2 => {
                last =
                    format!("exception 02 (illegal address) reading {n} from wire address {start}");
            }
            Ok(Err(code)) => {
                return Err(read_err(format!(
                    "exception {:02X} ({code:?})",
                    u8::from(code)
                )));
            }
            Err(e) => return Err(read_err(e.to_string())),
        }
    }
    let Some((read_start, words)) = got else {
        return Err(read_err(format!(
            "{last}: the address is not mapped in either numbering; check the register table (--register) and the manual"
        )));
    };
    let list = candidates(&words, read_start, args.address, expect);
    print!("{}", render(&words, read_start, &list, args.top));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdab_float_ranks_first_when_the_range_is_known() {
        // 1234.5f32 = 0x449A5000 sent CDAB, at wire 10; read from 9.
        let words = [0x1111, 0x5000, 0x449A, 0, 0];
        let list = candidates(&words, 9, 10, Some((0.0, 2000.0)));
        let best = list[0];
        assert_eq!(
            (best.base, best.data_type, best.order, best.value),
            (0, DataType::F32, WordOrder::CDAB, 1234.5)
        );
        // The same address in base 1 means wire 9.
        assert!(list.iter().any(|c| c.base == 1 && c.wire_address == 9));
    }

    #[test]
    fn expect_parses_and_rejects_nonsense() {
        assert_eq!(parse_expect("0..10000").ok(), Some((0.0, 10000.0)));
        assert_eq!(parse_expect("-40 .. 60").ok(), Some((-40.0, 60.0)));
        assert!(parse_expect("5..1").is_err());
        assert!(parse_expect("abc").is_err());
    }
}
