//! `gaswatch probe`: the commissioning aid for byte-order confusion, the most
//! common support question in this field. Reads a register range once (FC03
//! or FC04 only, read-only like the poller) and lists every plausible
//! decoding (types x byte orders x register numbering base 0/1), ranked by how
//! well it fits the range the operator expects (e.g. "a pressure of 0..10000
//! kPa"). The ranking is a pure function ([`candidates`]) so it is tested
//! without a device.

use crate::engine::decode::raw_value;
use crate::sources::modbus::{DataType, RegisterKind, WordOrder};
use std::fmt::Write as _;
use std::time::Duration;
use tokio_modbus::client::{Client, tcp};
use tokio_modbus::{Request, Response, Slave};

/// Errors of the probe command.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("--expect {0:?}: expected MIN..MAX with MIN < MAX, e.g. 0..10000")]
    Expect(String),
    #[error("--count {0}: expected 1..=124 registers")]
    Count(u16),
    #[error("{host}:{port}: connect failed: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("{host}:{port} unit {unit}: no answer within {timeout:?}")]
    Timeout {
        host: String,
        port: u16,
        unit: u8,
        timeout: Duration,
    },
    #[error("{host}:{port} unit {unit}: {message}")]
    Read {
        host: String,
        port: u16,
        unit: u8,
        message: String,
    },
}

/// Arguments of `gaswatch probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Device or gateway host.
    #[arg(long)]
    pub host: String,
    /// TCP port.
    #[arg(long, default_value_t = 502)]
    pub port: u16,
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
    let (host, port, unit, timeout) = (args.host.clone(), args.port, args.unit, args.timeout);
    let addr = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| ProbeError::Timeout {
            host: host.clone(),
            port,
            unit,
            timeout,
        })?
        .map_err(|source| ProbeError::Connect {
            host: host.clone(),
            port,
            source,
        })?
        .next()
        .ok_or_else(|| ProbeError::Connect {
            host: host.clone(),
            port,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        })?;
    let timeout_err = || ProbeError::Timeout {
        host: host.clone(),
        port,
        unit,
        timeout,
    };
    let mut ctx = tokio::time::timeout(timeout, tcp::connect_slave(addr, Slave(unit)))
        .await
        .map_err(|_| timeout_err())?
        .map_err(|source| ProbeError::Connect {
            host: host.clone(),
            port,
            source,
        })?;
    let read_err = |message: String| ProbeError::Read {
        host: host.clone(),
        port,
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
