//! Register decoding: raw Modbus words to engineering values. Pure and
//! allocation-free; the hot path of the engine.
//!
//! Bytes within a register are big-endian on the wire (tokio-modbus already
//! gives us `u16`s). A multi-word value is assembled from its words with the
//! point's [`WordOrder`]: whether the least significant word comes first
//! (CDAB, DCBA) and whether the two bytes of each word are swapped (BADC,
//! DCBA). The same two switches give the 64-bit permutations. For 16-bit
//! values only the byte swap applies.
//!
//! Bits: coils and discrete inputs arrive from the poller as one word per bit
//! (0 or 1); a bit inside a register is `(word >> bit) & 1`.
//!
//! Checks, in order: the words cover the point (else `Malformed`); the raw
//! value lies in `raw_min..=raw_max` (else `OutOfRange`); raw * scale + offset
//! is finite (else `NotFinite`); the engineering value lies in `min..=max`
//! (else `OutOfRange`). An out-of-range value is returned with its reason so
//! it can be shown for diagnosis, but it is never good.
//!
//! 64-bit integers are converted to `f64`, which is exact up to 2^53; larger
//! totaliser counts lose their lowest bits (documented in the README).

use super::plan::PointDecoder;
use crate::model::Reason;
use crate::sources::modbus::{DataType, WordOrder};

#[inline]
fn swap32(v: u32) -> u32 {
    ((v & 0x00FF_00FF) << 8) | ((v >> 8) & 0x00FF_00FF)
}

#[inline]
fn swap64(v: u64) -> u64 {
    ((v & 0x00FF_00FF_00FF_00FF) << 8) | ((v >> 8) & 0x00FF_00FF_00FF_00FF)
}

/// The 16 bits of a one-word value.
#[inline]
pub fn bits16(w: u16, order: WordOrder) -> u16 {
    if order.bytes_swapped() {
        w.swap_bytes()
    } else {
        w
    }
}

/// The 32 bits of a two-word value (`a` came first on the wire).
#[inline]
pub fn bits32(a: u16, b: u16, order: WordOrder) -> u32 {
    let (hi, lo) = if order.words_reversed() {
        (b, a)
    } else {
        (a, b)
    };
    let v = (u32::from(hi) << 16) | u32::from(lo);
    if order.bytes_swapped() { swap32(v) } else { v }
}

/// The 64 bits of a four-word value (`w[0]` came first on the wire).
#[inline]
pub fn bits64(w: [u16; 4], order: WordOrder) -> u64 {
    let w = if order.words_reversed() {
        [w[3], w[2], w[1], w[0]]
    } else {
        w
    };
    let v = (u64::from(w[0]) << 48)
        | (u64::from(w[1]) << 32)
        | (u64::from(w[2]) << 16)
        | u64::from(w[3]);
    if order.bytes_swapped() { swap64(v) } else { v }
}

/// The raw number held by the words of one point (`words[0]` is the
/// point's first word), before scale and offset. `None` when the words do
/// not cover the point, or for strings (not numbers).
#[inline]
pub fn raw_value(words: &[u16], data_type: DataType, order: WordOrder, bit: u8) -> Option<f64> {
    Some(match data_type {
        DataType::Bit => f64::from((*words.first()? >> (bit & 15)) & 1),
        DataType::U16 => f64::from(bits16(*words.first()?, order)),
        DataType::I16 => f64::from(bits16(*words.first()?, order) as i16),
        DataType::U32 | DataType::I32 | DataType::F32 => {
            let [a, b] = *words.get(..2)? else {
                return None;
            };
            let v = bits32(a, b, order);
            match data_type {
                DataType::U32 => f64::from(v),
                DataType::I32 => f64::from(v as i32),
                _ => f64::from(f32::from_bits(v)),
            }
        }
        DataType::U64 | DataType::I64 | DataType::F64 => {
            let [a, b, c, d] = *words.get(..4)? else {
                return None;
            };
            let v = bits64([a, b, c, d], order);
            match data_type {
                DataType::U64 => v as f64,
                DataType::I64 => (v as i64) as f64,
                _ => f64::from_bits(v),
            }
        }
        DataType::String => return None,
    })
}

/// Decodes one point from the words of its block: the engineering value, or
/// the reason it is not good (see the module docs for the order of checks).
#[inline]
pub fn decode_point(regs: &[u16], d: &PointDecoder) -> (f64, Reason) {
    match regs.get(usize::from(d.offset)..) {
        Some(words) => decode_at(words, d),
        None => (f64::NAN, Reason::Malformed),
    }
}

/// As [`decode_point`], with `words` starting at the point's first word.
#[inline]
pub fn decode_at(words: &[u16], d: &PointDecoder) -> (f64, Reason) {
    let Some(raw) = raw_value(words, d.data_type, d.order, d.bit) else {
        return (f64::NAN, Reason::Malformed);
    };
    // NaN compares false both ways, so a NaN raw falls through to NotFinite.
    if raw < d.raw_min || raw > d.raw_max {
        return (raw * d.scale + d.add, Reason::OutOfRange);
    }
    let v = raw * d.scale + d.add;
    if !v.is_finite() {
        return (f64::NAN, Reason::NotFinite);
    }
    if v < d.min || v > d.max {
        return (v, Reason::OutOfRange);
    }
    (v, Reason::None)
}

/// Decodes `words` as ASCII text into `out` (cleared first; never grows past
/// two characters per word). Trailing NUL and space padding is removed; a NUL
/// ends the text. Returns false (and leaves `out` empty) when a byte is not
/// printable ASCII, which is how garbage or a wrong address shows.
pub fn decode_ascii(words: &[u16], order: WordOrder, out: &mut String) -> bool {
    out.clear();
    'words: for &w in words {
        let [hi, lo] = bits16(w, order).to_be_bytes();
        for b in [hi, lo] {
            match b {
                0 => break 'words,
                0x20..=0x7E => out.push(char::from(b)),
                _ => {
                    out.clear();
                    return false;
                }
            }
        }
    }
    let kept = out.trim_end_matches(' ').len();
    out.truncate(kept);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use DataType::*;
    use WordOrder::*;

    fn raw(words: &[u16], t: DataType, o: WordOrder) -> Option<f64> {
        raw_value(words, t, o, 0)
    }

    #[test]
    fn decodes_every_type_and_order_from_hand_computed_registers() {
        assert_eq!(raw(&[0xFFFF], U16, ABCD), Some(65535.0));
        assert_eq!(raw(&[0xFFFF], I16, ABCD), Some(-1.0));
        assert_eq!(raw(&[0x8000], I16, ABCD), Some(-32768.0));
        assert_eq!(raw(&[0x0080], I16, BADC), Some(-32768.0));
        assert_eq!(raw(&[0x0001, 0x0002], U32, ABCD), Some(65538.0));
        assert_eq!(raw(&[0x0002, 0x0001], U32, CDAB), Some(65538.0));
        assert_eq!(raw(&[0xFFFF, 0xFFFE], I32, ABCD), Some(-2.0));
        assert_eq!(raw(&[0x3F80, 0x0000], F32, ABCD), Some(1.0));
        assert_eq!(raw(&[0x0000, 0x3F80], F32, CDAB), Some(1.0));
        // 1234.5f32 = 0x449A5000: ABCD, CDAB, BADC, DCBA.
        assert_eq!(raw(&[0x449A, 0x5000], F32, ABCD), Some(1234.5));
        assert_eq!(raw(&[0x5000, 0x449A], F32, CDAB), Some(1234.5));
        assert_eq!(raw(&[0x9A44, 0x0050], F32, BADC), Some(1234.5));
        assert_eq!(raw(&[0x0050, 0x9A44], F32, DCBA), Some(1234.5));
        // 1.0f64 = 0x3FF0_0000_0000_0000
        assert_eq!(raw(&[0x3FF0, 0, 0, 0], F64, ABCD), Some(1.0));
        assert_eq!(raw(&[0, 0, 0, 0x3FF0], F64, CDAB), Some(1.0));
        assert_eq!(raw(&[0xF03F, 0, 0, 0], F64, BADC), Some(1.0));
        assert_eq!(raw(&[0, 0, 0, 0xF03F], F64, DCBA), Some(1.0));
        assert_eq!(raw(&[0, 0, 1, 2], U64, ABCD), Some(65538.0));
        assert_eq!(raw(&[0xFFFF; 4], I64, ABCD), Some(-1.0));
        assert_eq!(raw_value(&[0b100], Bit, ABCD, 2), Some(1.0));
        assert_eq!(raw_value(&[0b100], Bit, ABCD, 1), Some(0.0));
    }

    #[test]
    fn short_response_is_malformed_not_a_panic() {
        assert_eq!(raw(&[0x3F80], F32, ABCD), None);
        assert_eq!(raw(&[1, 2, 3], F64, ABCD), None);
        assert_eq!(raw(&[], U16, ABCD), None);
        let d = dec(F32, 1.0, f64::NEG_INFINITY, f64::INFINITY);
        let d = PointDecoder { offset: 9, ..d };
        assert_eq!(decode_point(&[1, 2], &d).1, Reason::Malformed);
    }

    fn dec(t: DataType, scale: f64, min: f64, max: f64) -> PointDecoder {
        PointDecoder {
            tag: crate::model::TagId(0),
            offset: 0,
            data_type: t,
            order: WordOrder::ABCD,
            bit: 0,
            len: t.registers(),
            scale,
            add: 0.0,
            min,
            max,
            raw_min: f64::NEG_INFINITY,
            raw_max: f64::INFINITY,
        }
    }

    #[test]
    fn scale_range_and_nan() {
        let d = dec(U16, 0.1, 0.0, 100.0);
        assert_eq!(decode_point(&[500], &d), (50.0, Reason::None));
        assert_eq!(decode_point(&[5000], &d), (500.0, Reason::OutOfRange));
        let f = dec(F32, 1.0, f64::NEG_INFINITY, f64::INFINITY);
        let (v, r) = decode_point(&[0x7FC0, 0x0000], &f);
        assert!(v.is_nan());
        assert_eq!(r, Reason::NotFinite);
    }

    #[test]
    fn raw_range_catches_a_broken_loop_before_scaling() {
        // 4-20 mA card: 0..=27648 counts; 65535 = wire break.
        let d = PointDecoder {
            raw_min: 0.0,
            raw_max: 27648.0,
            ..dec(U16, 0.001, f64::NEG_INFINITY, f64::INFINITY)
        };
        assert_eq!(decode_point(&[13824], &d), (13.824, Reason::None));
        assert_eq!(decode_point(&[65535], &d).1, Reason::OutOfRange);
    }

    #[test]
    fn ascii_strings_trim_padding_and_reject_garbage() {
        let mut s = std::string::String::with_capacity(8);
        // "FC-01" padded with a space and NULs.
        assert!(decode_ascii(
            &[0x4643, 0x2D30, 0x3120, 0x0000],
            ABCD,
            &mut s
        ));
        assert_eq!(s, "FC-01");
        assert!(decode_ascii(&[0x4346, 0x302D], BADC, &mut s));
        assert_eq!(s, "FC-0");
        assert!(!decode_ascii(&[0x41FF], ABCD, &mut s));
        assert_eq!(s, "");
    }
}
