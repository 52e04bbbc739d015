//! Decoding against encoders nobody on the decoder side wrote: a test-local
//! byte-permutation encoder (from `to_be_bytes` and explicit index tables)
//! and the simulator's `gaswatch_sim::encode`, for every type and order.
//! Then the engine's handling of split blocks and string points, through a
//! real config.

use gaswatch::config::Config;
use gaswatch::engine::decode::{decode_at, raw_value};
use gaswatch::engine::{Engine, EnginePlan};
use gaswatch::model::{BlockId, DeviceId, Input, Output, Quality, ReadError, Reason, Timestamp};
use gaswatch::sources::modbus::{DataType, WordOrder};
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// Wire byte position -> index into the value's big-endian bytes. Written
/// from the layout names: A is the most significant byte.
fn table(order: WordOrder, len: usize) -> Vec<usize> {
    let names: &[&str] = match (order, len) {
        (WordOrder::ABCD | WordOrder::CDAB, 2) => &["A", "B"],
        (WordOrder::BADC | WordOrder::DCBA, 2) => &["B", "A"],
        (WordOrder::ABCD, 4) => &["A", "B", "C", "D"],
        (WordOrder::CDAB, 4) => &["C", "D", "A", "B"],
        (WordOrder::BADC, 4) => &["B", "A", "D", "C"],
        (WordOrder::DCBA, 4) => &["D", "C", "B", "A"],
        (WordOrder::ABCD, _) => &["A", "B", "C", "D", "E", "F", "G", "H"],
        (WordOrder::CDAB, _) => &["G", "H", "E", "F", "C", "D", "A", "B"],
        (WordOrder::BADC, _) => &["B", "A", "D", "C", "F", "E", "H", "G"],
        (WordOrder::DCBA, _) => &["H", "G", "F", "E", "D", "C", "B", "A"],
    };
    names
        .iter()
        .map(|n| usize::from(n.as_bytes()[0] - b'A'))
        .collect()
}

fn to_words(be: &[u8], order: WordOrder) -> Vec<u16> {
    let t = table(order, be.len());
    t.chunks(2)
        .map(|p| u16::from_be_bytes([be[p[0]], be[p[1]]]))
        .collect()
}

fn order() -> impl Strategy<Value = WordOrder> {
    prop::sample::select(WordOrder::ALL.to_vec())
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

proptest! {
    #[test]
    fn u16_i16_every_order(v in any::<u16>(), o in order()) {
        let o = if o.bytes_swapped() { WordOrder::BADC } else { WordOrder::ABCD };
        let w = to_words(&v.to_be_bytes(), o);
        prop_assert_eq!(raw_value(&w, DataType::U16, o, 0), Some(f64::from(v)));
        prop_assert_eq!(raw_value(&w, DataType::I16, o, 0), Some(f64::from(v as i16)));
    }

    #[test]
    fn thirty_two_bit_every_order(v in any::<u32>(), o in order()) {
        let w = to_words(&v.to_be_bytes(), o);
        prop_assert_eq!(raw_value(&w, DataType::U32, o, 0), Some(f64::from(v)));
        prop_assert_eq!(raw_value(&w, DataType::I32, o, 0), Some(f64::from(v as i32)));
        let f = raw_value(&w, DataType::F32, o, 0).unwrap_or(0.0);
        prop_assert!(same(f, f64::from(f32::from_bits(v))));
    }

    #[test]
    fn sixty_four_bit_every_order(v in any::<u64>(), o in order()) {
        let w = to_words(&v.to_be_bytes(), o);
        prop_assert_eq!(raw_value(&w, DataType::U64, o, 0), Some(v as f64));
        prop_assert_eq!(raw_value(&w, DataType::I64, o, 0), Some((v as i64) as f64));
        let f = raw_value(&w, DataType::F64, o, 0).unwrap_or(0.0);
        prop_assert!(same(f, f64::from_bits(v)));
    }

    #[test]
    fn bit_inside_a_register(v in any::<u16>(), bit in 0u8..16) {
        prop_assert_eq!(raw_value(&[v], DataType::Bit, WordOrder::ABCD, bit), Some(f64::from((v >> bit) & 1)));
    }

    /// The simulator's encoder (scale, offset, rounding, saturation) against
    /// the daemon's decoder: what the simulator says it served is decoded.
    #[test]
    fn simulator_encoder_round_trips(
        eng in -1.0e6f64..1.0e6,
        ti in 0usize..8,
        oi in 0usize..4,
        scale in prop::sample::select(vec![1.0, 0.1, 0.01, 2.5, -0.5]),
        offset in prop::sample::select(vec![0.0, -40.0, 101.325]),
    ) {
        use gaswatch_sim::{DataType as S, WordOrder as SO};
        let (st, dt) = [
            (S::U16, DataType::U16), (S::I16, DataType::I16), (S::U32, DataType::U32),
            (S::I32, DataType::I32), (S::F32, DataType::F32), (S::U64, DataType::U64),
            (S::I64, DataType::I64), (S::F64, DataType::F64),
        ][ti];
        let (so, o) = [(SO::Abcd, WordOrder::ABCD), (SO::Cdab, WordOrder::CDAB), (SO::Badc, WordOrder::BADC), (SO::Dcba, WordOrder::DCBA)][oi];
        let e = gaswatch_sim::encode(eng, st, so, scale, offset);
        let d = decoder(dt, o, scale, offset);
        let (v, reason) = decode_at(e.words(), &d);
        prop_assert_eq!(reason, Reason::None);
        prop_assert!(same(v, e.engineering), "{:?} {:?}: decoded {} served {}", dt, o, v, e.engineering);
    }
}

fn decoder(t: DataType, o: WordOrder, scale: f64, add: f64) -> gaswatch::engine::PointDecoder {
    gaswatch::engine::PointDecoder {
        tag: gaswatch::model::TagId(0),
        offset: 0,
        data_type: t,
        order: o,
        bit: 0,
        len: t.registers(),
        scale,
        add,
        min: f64::NEG_INFINITY,
        max: f64::INFINITY,
        raw_min: f64::NEG_INFINITY,
        raw_max: f64::INFINITY,
    }
}

// ------------------------------------------------------------- the engine

fn engine(points: &str, device_extra: &str) -> Engine {
    let text = format!(
        "[station]\nid = \"t\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"x\"\n\
         [[devices]]\nid = \"d\"\nhost = \"127.0.0.1\"\n{device_extra}\n{points}"
    );
    let config = Config::from_str_named(&text, Path::new("decode_test.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    Engine::new(Arc::new(EnginePlan::compile(&config)), 0)
}

fn pt(name: &str, address: u16, ty: &str, extra: &str) -> String {
    format!(
        "[[devices.points]]\nname = \"{name}\"\nregister = \"holding\"\naddress = {address}\ntype = \"{ty}\"\n{extra}\n"
    )
}

#[test]
fn a_failed_part_marks_only_its_points_and_the_good_parts_decode() {
    let points = [
        pt("A", 0, "u16", ""),
        pt("B", 1, "u16", ""),
        pt("C", 2, "u16", ""),
        pt("D", 4, "f32", ""),
    ]
    .concat();
    let mut e = engine(&points, "");
    let plan = Arc::clone(e.plan());
    assert_eq!(plan.devices[0].blocks.len(), 1, "one merged block");
    let (dev, blk, ts) = (DeviceId(0), BlockId(0), Timestamp::from_secs(10));
    let mut out = Output::default();
    e.process(
        &Input::RegistersPart {
            device: dev,
            block: blk,
            first: 0,
            ts,
            regs: vec![7, 8],
        },
        &mut out,
    );
    e.process(
        &Input::ReadFailedPart {
            device: dev,
            block: blk,
            first: 2,
            words: 1,
            ts,
            error: ReadError::Exception(2),
        },
        &mut out,
    );
    // 1.0f32 at word offset 4.
    e.process(
        &Input::RegistersPart {
            device: dev,
            block: blk,
            first: 4,
            ts,
            regs: vec![0x3F80, 0],
        },
        &mut out,
    );
    let got: Vec<_> = out
        .samples
        .iter()
        .map(|s| {
            (
                plan.tag_info(s.tag).name.as_str(),
                s.quality,
                s.reason,
                if s.value.is_nan() { 0.0 } else { s.value },
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("A", Quality::Good, Reason::None, 7.0),
            ("B", Quality::Good, Reason::None, 8.0),
            ("C", Quality::Bad, Reason::Exception(2), 0.0),
            ("D", Quality::Good, Reason::None, 1.0),
        ]
    );
    assert!(
        out.samples.iter().all(|s| s.ts == ts),
        "values carry the response time"
    );
}

#[test]
fn strings_go_to_the_text_table_never_into_numeric_samples() {
    let points = [
        pt("MODEL", 0, "string", "length = 3"),
        pt("P", 3, "u16", ""),
    ]
    .concat();
    let mut e = engine(&points, "");
    let plan = Arc::clone(e.plan());
    let mut out = Output::default();
    let ts = Timestamp::from_secs(5);
    e.process(
        &Input::Registers {
            device: DeviceId(0),
            block: BlockId(0),
            ts,
            regs: vec![0x4643, 0x3130, 0x3720, 42],
        },
        &mut out,
    );
    assert_eq!(out.samples.len(), 1);
    assert_eq!(out.samples[0].value, 42.0);
    let model = plan.tag("MODEL").expect("tag");
    assert_eq!(e.text(model), Some(("FC107", ts, Quality::Good)));
    assert_eq!(e.text(plan.tag("P").expect("tag")), None);
}

#[test]
fn enron_base_one_and_raw_range_through_the_plan() {
    let points = [
        pt("VOL", 7001, "f32", ""),
        pt("FLOW", 7002, "f32", "order = \"CDAB\""),
        pt("LOOP", 3001, "u16", "raw_max = 27648\nscale = 0.001"),
    ]
    .concat();
    let mut e = engine(&points, "enron = true\naddress_base = 1");
    let plan = Arc::clone(e.plan());
    let blocks = &plan.devices[0].blocks;
    let enron = blocks
        .iter()
        .position(|b| b.start == 7000)
        .expect("enron block at wire 7000");
    assert_eq!((blocks[enron].count, blocks[enron].words), (2, 4));
    let loop_b = blocks
        .iter()
        .position(|b| b.start == 3000)
        .expect("u16 block at wire 3000");
    let mut out = Output::default();
    let ts = Timestamp::from_secs(1);
    let inp = |b: usize, regs: Vec<u16>| Input::Registers {
        device: DeviceId(0),
        block: BlockId(b as u32),
        ts,
        regs,
    };
    e.process(&inp(enron, vec![0x449A, 0x5000, 0x5000, 0x449A]), &mut out);
    e.process(&inp(loop_b, vec![65535]), &mut out);
    let by = |n: &str| {
        let t = plan.tag(n).expect("tag");
        *out.samples.iter().find(|s| s.tag == t).expect("sample")
    };
    assert_eq!(
        (by("VOL").value, by("VOL").quality),
        (1234.5, Quality::Good)
    );
    assert_eq!(
        (by("FLOW").value, by("FLOW").quality),
        (1234.5, Quality::Good)
    );
    assert_eq!(
        (by("LOOP").quality, by("LOOP").reason),
        (Quality::Bad, Reason::OutOfRange)
    );
}

#[test]
fn new_point_options_are_validated_with_their_keys() {
    let bad = |points: &str, dev: &str| {
        let text = format!(
            "[station]\nid = \"t\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"x\"\n\
             [[devices]]\nid = \"d\"\nhost = \"127.0.0.1\"\n{dev}\n{points}"
        );
        match Config::from_str_named(&text, Path::new("bad.toml")) {
            Ok(_) => panic!("expected an error for\n{text}"),
            Err(e) => e.to_string(),
        }
    };
    let e = bad(&pt("S", 0, "string", ""), "");
    assert!(e.contains("devices[0].points[0].length"), "{e}");
    let e = bad(&pt("B", 0, "bit", ""), "");
    assert!(e.contains("devices[0].points[0].bit"), "{e}");
    let e = bad(&pt("X", 0, "f64", ""), "enron = true");
    assert!(
        e.contains("devices[0].points[0].type") && e.contains("Enron"),
        "{e}"
    );
    let e = bad(&pt("Z", 0, "u16", ""), "address_base = 1");
    assert!(e.contains("devices[0].points[0].address"), "{e}");
    let e = bad(&pt("R", 0, "u16", "raw_min = 5\nraw_max = 1"), "");
    assert!(e.contains("devices[0].points[0].raw_min"), "{e}");
    let e = bad(
        "[[devices.points]]\nname = \"C\"\nregister = \"coil\"\naddress = 0\ntype = \"u16\"\n",
        "",
    );
    assert!(e.contains("devices[0].points[0].type"), "{e}");
}
