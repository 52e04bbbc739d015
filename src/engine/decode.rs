//! Register decoding: raw Modbus registers to engineering values.
//!
//! Bytes within a register are big-endian on the wire (tokio-modbus already
//! gives us `u16`s); 32-bit values come in ABCD (high word first) or CDAB
//! (low word first) order. Engineering value = raw * scale + offset.

use super::plan::PointDecoder;
use crate::model::Reason;
use crate::sources::modbus::{DataType, WordOrder};

/// The raw number a point's registers hold, before scale and offset.
/// `None` when the registers do not cover the point (a malformed response).
#[inline]
pub fn raw_value(regs: &[u16], offset: u16, data_type: DataType, order: WordOrder) -> Option<f64> {
    let o = usize::from(offset);
    match data_type {
        DataType::U16 => regs.get(o).map(|&r| f64::from(r)),
        DataType::I16 => regs.get(o).map(|&r| f64::from(r as i16)),
        DataType::U32 | DataType::I32 | DataType::F32 => {
            let (a, b) = (*regs.get(o)?, *regs.get(o + 1)?);
            let bits = match order {
                WordOrder::ABCD => (u32::from(a) << 16) | u32::from(b),
                WordOrder::CDAB => (u32::from(b) << 16) | u32::from(a),
            };
            Some(match data_type {
                DataType::U32 => f64::from(bits),
                DataType::I32 => f64::from(bits as i32),
                _ => f64::from(f32::from_bits(bits)),
            })
        }
    }
}

/// Decodes one point: the engineering value, or the reason it is not good.
/// An out-of-range value is returned with `Reason::OutOfRange` so it can be
/// shown for diagnosis but never treated as good.
#[inline]
pub fn decode_point(regs: &[u16], d: &PointDecoder) -> (f64, Reason) {
    let Some(raw) = raw_value(regs, d.offset, d.data_type, d.order) else {
        return (f64::NAN, Reason::Malformed);
    };
    let v = raw * d.scale + d.add;
    if !v.is_finite() {
        return (f64::NAN, Reason::NotFinite);
    }
    if v < d.min || v > d.max {
        return (v, Reason::OutOfRange);
    }
    (v, Reason::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_type_and_order_from_hand_computed_registers() {
        use DataType::*;
        use WordOrder::*;
        assert_eq!(raw_value(&[0xFFFF], 0, U16, ABCD), Some(65535.0));
        assert_eq!(raw_value(&[0xFFFF], 0, I16, ABCD), Some(-1.0));
        assert_eq!(raw_value(&[0x8000], 0, I16, ABCD), Some(-32768.0));
        assert_eq!(raw_value(&[0x0001, 0x0002], 0, U32, ABCD), Some(65538.0));
        assert_eq!(raw_value(&[0x0002, 0x0001], 0, U32, CDAB), Some(65538.0));
        assert_eq!(raw_value(&[0xFFFF, 0xFFFE], 0, I32, ABCD), Some(-2.0));
        assert_eq!(raw_value(&[0x3F80, 0x0000], 0, F32, ABCD), Some(1.0));
        assert_eq!(raw_value(&[0x0000, 0x3F80], 0, F32, CDAB), Some(1.0));
        // 1234.5f32 = 0x449A5000
        assert_eq!(raw_value(&[0, 0x449A, 0x5000], 1, F32, ABCD), Some(1234.5));
        assert_eq!(raw_value(&[0x5000, 0x449A], 0, F32, CDAB), Some(1234.5));
    }

    #[test]
    fn short_response_is_malformed_not_a_panic() {
        assert_eq!(
            raw_value(&[0x3F80], 0, DataType::F32, WordOrder::ABCD),
            None
        );
        assert_eq!(raw_value(&[], 0, DataType::U16, WordOrder::ABCD), None);
    }

    fn dec(t: DataType, scale: f64, min: f64, max: f64) -> PointDecoder {
        PointDecoder {
            tag: crate::model::TagId(0),
            offset: 0,
            data_type: t,
            order: WordOrder::ABCD,
            scale,
            add: 0.0,
            min,
            max,
        }
    }

    #[test]
    fn scale_range_and_nan() {
        let d = dec(DataType::U16, 0.1, 0.0, 100.0);
        assert_eq!(decode_point(&[500], &d), (50.0, Reason::None));
        assert_eq!(decode_point(&[5000], &d), (500.0, Reason::OutOfRange));
        let f = dec(DataType::F32, 1.0, f64::NEG_INFINITY, f64::INFINITY);
        let (v, r) = decode_point(&[0x7FC0, 0x0000], &f);
        assert!(v.is_nan());
        assert_eq!(r, Reason::NotFinite);
    }
}
