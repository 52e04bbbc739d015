//! Engineering value -> Modbus registers.
//!
//! Responsibility: the simulator's register encoding, written independently of
//! the daemon's decoder so that each checks the other.
//!
//! Rules:
//! - raw = (engineering - offset) / scale;
//! - integer types: raw is rounded half away from zero and saturated to the
//!   type's range (NaN encodes as 0);
//! - `f32`: raw is converted to `f32` (nearest) and sent as its IEEE-754 bits;
//! - multi-register values: the value's big-endian bytes `A B C D ...` are
//!   permuted by a fixed byte-index table per order (`ABCD` as is, `CDAB`
//!   words reversed, `BADC` bytes swapped in each word, `DCBA` all bytes
//!   reversed; the 64-bit tables extend the same patterns to 8 bytes), then
//!   paired into registers. 16-bit values honour only the byte swap. Bytes
//!   inside a register are always big-endian on the wire; that is the
//!   server's job, not this module's.
//!
//! [`Encoded::engineering`] is the value a correct decoder recovers from the
//! registers (raw * scale + offset), i.e. what was actually served.

use serde::Deserialize;

/// Wire type of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// One register, unsigned.
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Two registers, IEEE-754 single precision.
    F32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, two's complement.
    I64,
    /// Four registers, IEEE-754 double precision.
    F64,
}

impl DataType {
    /// Number of 16-bit registers the type occupies.
    pub fn words(self) -> u16 {
        match self {
            Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::U64 | Self::I64 | Self::F64 => 4,
        }
    }
}

/// Order of the two registers of a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum WordOrder {
    /// High word first (big-endian). Default.
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Low word first (word swap).
    #[serde(rename = "CDAB")]
    Cdab,
    /// Bytes swapped inside each word.
    #[serde(rename = "BADC")]
    Badc,
    /// Little-endian.
    #[serde(rename = "DCBA")]
    Dcba,
}

impl WordOrder {
    /// Index into the big-endian bytes of each wire byte position.
    fn table(self, len: usize) -> &'static [usize] {
        match (self, len) {
            (Self::Abcd, 2) => &[0, 1],
            (Self::Cdab, 2) => &[0, 1],
            (Self::Badc | Self::Dcba, 2) => &[1, 0],
            (Self::Abcd, 4) => &[0, 1, 2, 3],
            (Self::Cdab, 4) => &[2, 3, 0, 1],
            (Self::Badc, 4) => &[1, 0, 3, 2],
            (Self::Dcba, 4) => &[3, 2, 1, 0],
            (Self::Abcd, _) => &[0, 1, 2, 3, 4, 5, 6, 7],
            (Self::Cdab, _) => &[6, 7, 4, 5, 2, 3, 0, 1],
            (Self::Badc, _) => &[1, 0, 3, 2, 5, 4, 7, 6],
            (Self::Dcba, _) => &[7, 6, 5, 4, 3, 2, 1, 0],
        }
    }
}

/// Registers for one point plus the engineering value they represent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Encoded {
    words: [u16; 4],
    len: u8,
    /// Engineering value a correct decoder recovers from `words()`.
    pub engineering: f64,
}

impl Encoded {
    /// The registers in wire order (1 or 2 of them).
    pub fn words(&self) -> &[u16] {
        &self.words[..usize::from(self.len)]
    }
}

fn round_sat(raw: f64, min: f64, max: f64) -> f64 {
    if raw.is_nan() {
        return 0.0;
    }
    raw.round().clamp(min, max)
}

/// Permutes big-endian bytes `be` by the order's table and pairs them into
/// registers.
fn permute(be: &[u8], order: WordOrder) -> [u16; 4] {
    let table = order.table(be.len());
    let mut out = [0u16; 4];
    for (i, w) in out.iter_mut().take(be.len() / 2).enumerate() {
        *w = u16::from_be_bytes([be[table[2 * i]], be[table[2 * i + 1]]]);
    }
    out
}

fn split(v: u32, order: WordOrder) -> [u16; 4] {
    permute(&v.to_be_bytes(), order)
}

/// Encodes an engineering value for a point of type `ty`.
///
/// `scale` must be non-zero (the config guarantees it).
pub fn encode(
    engineering: f64,
    ty: DataType,
    order: WordOrder,
    scale: f64,
    offset: f64,
) -> Encoded {
    let raw = (engineering - offset) / scale;
    let back = |r: f64| r * scale + offset;
    match ty {
        DataType::U16 => {
            let r = round_sat(raw, 0.0, f64::from(u16::MAX));
            Encoded {
                words: permute(&(r as u16).to_be_bytes(), order),
                len: 1,
                engineering: back(r),
            }
        }
        DataType::I16 => {
            let r = round_sat(raw, f64::from(i16::MIN), f64::from(i16::MAX));
            Encoded {
                words: permute(&(r as i16).to_be_bytes(), order),
                len: 1,
                engineering: back(r),
            }
        }
        DataType::U32 => {
            let r = round_sat(raw, 0.0, f64::from(u32::MAX));
            Encoded {
                words: split(r as u32, order),
                len: 2,
                engineering: back(r),
            }
        }
        DataType::I32 => {
            let r = round_sat(raw, f64::from(i32::MIN), f64::from(i32::MAX));
            Encoded {
                words: split((r as i32) as u32, order),
                len: 2,
                engineering: back(r),
            }
        }
        DataType::F32 => {
            let f = raw as f32;
            Encoded {
                words: split(f.to_bits(), order),
                len: 2,
                engineering: back(f64::from(f)),
            }
        }
        DataType::U64 => {
            // `as` saturates (NaN -> 0); the served value is what f64 can hold.
            let r = raw.round().max(0.0) as u64;
            Encoded {
                words: permute(&r.to_be_bytes(), order),
                len: 4,
                engineering: back(r as f64),
            }
        }
        DataType::I64 => {
            let r = raw.round() as i64;
            Encoded {
                words: permute(&r.to_be_bytes(), order),
                len: 4,
                engineering: back(r as f64),
            }
        }
        DataType::F64 => Encoded {
            words: permute(&raw.to_be_bytes(), order),
            len: 4,
            engineering: back(raw),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;
    use WordOrder::*;

    fn w(v: f64, ty: DataType, o: WordOrder, scale: f64, offset: f64) -> Vec<u16> {
        encode(v, ty, o, scale, offset).words().to_vec()
    }

    #[test]
    fn f32_both_orders() {
        assert_eq!(w(1.0, F32, Abcd, 1.0, 0.0), [0x3F80, 0x0000]);
        assert_eq!(w(1.0, F32, Cdab, 1.0, 0.0), [0x0000, 0x3F80]);
        // -2.5 = 0xC0200000
        assert_eq!(w(-2.5, F32, Abcd, 1.0, 0.0), [0xC020, 0x0000]);
        // 1500.25 = 0x44BB8800
        assert_eq!(w(1500.25, F32, Abcd, 1.0, 0.0), [0x44BB, 0x8800]);
        assert_eq!(w(1500.25, F32, Cdab, 1.0, 0.0), [0x8800, 0x44BB]);
        // 0.1 = 0x3DCCCCCD: the served value is the f32 nearest 0.1.
        let e = encode(0.1, F32, Abcd, 1.0, 0.0);
        assert_eq!(e.words(), [0x3DCC, 0xCCCD]);
        assert_eq!(e.engineering, f64::from(0.1f32));
    }

    #[test]
    fn f32_with_scale_and_offset() {
        // (101.0 - 1.0) / 0.5 = 200.0 = 0x43480000
        assert_eq!(w(101.0, F32, Abcd, 0.5, 1.0), [0x4348, 0x0000]);
    }

    #[test]
    fn u16_scaled_rounding_and_saturation() {
        // 1500.04 kPa at 0.1 -> 15000.4 -> 15000 = 0x3A98
        let e = encode(1500.04, U16, Abcd, 0.1, 0.0);
        assert_eq!(e.words(), [0x3A98]);
        assert!((e.engineering - 1500.0).abs() < 1e-9);
        // Half away from zero: 2.5 -> 3
        assert_eq!(w(2.5, U16, Abcd, 1.0, 0.0), [3]);
        assert_eq!(w(-5.0, U16, Abcd, 1.0, 0.0), [0]);
        assert_eq!(w(70000.0, U16, Abcd, 1.0, 0.0), [0xFFFF]);
        assert_eq!(w(f64::NAN, U16, Abcd, 1.0, 0.0), [0]);
        // Offset: (20 - (-40)) / 1 = 60
        assert_eq!(w(20.0, U16, Abcd, 1.0, -40.0), [60]);
    }

    #[test]
    fn i16_negative_and_saturation() {
        // -12.34 degC at 0.01 -> -1234 = 0xFB2E
        assert_eq!(w(-12.34, I16, Abcd, 0.01, 0.0), [0xFB2E]);
        assert_eq!(w(2.0, I16, Abcd, 0.01, 0.0), [200]);
        assert_eq!(w(-1.0, I16, Abcd, 1.0, 0.0), [0xFFFF]);
        assert_eq!(w(40000.0, I16, Abcd, 1.0, 0.0), [0x7FFF]);
        assert_eq!(w(-40000.0, I16, Abcd, 1.0, 0.0), [0x8000]);
    }

    #[test]
    fn u32_both_orders() {
        // 18000.0 Sm3/h at 0.1 -> 180000 = 0x0002_BF20
        assert_eq!(w(18000.0, U32, Abcd, 0.1, 0.0), [0x0002, 0xBF20]);
        assert_eq!(w(18000.0, U32, Cdab, 0.1, 0.0), [0xBF20, 0x0002]);
        assert_eq!(w(-1.0, U32, Abcd, 1.0, 0.0), [0, 0]);
        assert_eq!(w(1e12, U32, Abcd, 1.0, 0.0), [0xFFFF, 0xFFFF]);
    }

    #[test]
    fn i32_both_orders() {
        // -2 = 0xFFFF_FFFE
        assert_eq!(w(-2.0, I32, Abcd, 1.0, 0.0), [0xFFFF, 0xFFFE]);
        assert_eq!(w(-2.0, I32, Cdab, 1.0, 0.0), [0xFFFE, 0xFFFF]);
        // 305419896 = 0x1234_5678
        assert_eq!(w(305_419_896.0, I32, Abcd, 1.0, 0.0), [0x1234, 0x5678]);
        assert_eq!(w(305_419_896.0, I32, Cdab, 1.0, 0.0), [0x5678, 0x1234]);
        assert_eq!(w(-1e12, I32, Abcd, 1.0, 0.0), [0x8000, 0x0000]);
    }

    #[test]
    fn all_four_orders_and_64_bit() {
        // 1234.5f32 = 0x449A5000
        assert_eq!(w(1234.5, F32, Badc, 1.0, 0.0), [0x9A44, 0x0050]);
        assert_eq!(w(1234.5, F32, Dcba, 1.0, 0.0), [0x0050, 0x9A44]);
        assert_eq!(w(1.0, F64, Abcd, 1.0, 0.0), [0x3FF0, 0, 0, 0]);
        assert_eq!(w(1.0, F64, Cdab, 1.0, 0.0), [0, 0, 0, 0x3FF0]);
        assert_eq!(w(1.0, F64, Badc, 1.0, 0.0), [0xF03F, 0, 0, 0]);
        assert_eq!(w(1.0, F64, Dcba, 1.0, 0.0), [0, 0, 0, 0xF03F]);
        assert_eq!(w(65538.0, U64, Abcd, 1.0, 0.0), [0, 0, 1, 2]);
        assert_eq!(w(-1.0, I64, Abcd, 1.0, 0.0), [0xFFFF; 4]);
        assert_eq!(w(1.0, U16, Badc, 1.0, 0.0), [0x0100]);
    }

    #[test]
    fn word_counts() {
        assert_eq!(U16.words(), 1);
        assert_eq!(I16.words(), 1);
        assert_eq!(U32.words(), 2);
        assert_eq!(I32.words(), 2);
        assert_eq!(F32.words(), 2);
    }
}
