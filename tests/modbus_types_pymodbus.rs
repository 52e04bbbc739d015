//! Every type and byte order against pymodbus, an implementation nobody here
//! wrote: pymodbus's own payload builder (BinaryPayloadBuilder) encodes each
//! value into its register map, pymodbus serves it, and the real poller and
//! engine must decode exactly that value. Covered: u16/i16 (ABCD, BADC),
//! u32/i32/f32 and u64/i64/f64 in all four orders (the 64-bit orders are the
//! permutations ABCDEFGH, GHEFCDAB, BADCFEHG, HGFEDCBA), ASCII strings (ABCD,
//! BADC), bits inside a register, coils and discrete inputs; holding and
//! input registers. The same matrix runs over Modbus/TCP, RTU over TCP
//! (pymodbus's RTU framer) and RTU on a serial port (a pseudo-terminal pair
//! relayed by the script).

mod support;

use gaswatch::model::Quality;
use serde_json::{Value, json};
use std::time::Duration;
use support::modbus::{Running, eventually, plan_of};
use support::pymodbus::{Encoded, PymodbusServer, Transport, Unit};

const DEADLINE: Duration = Duration::from_secs(30);

/// What a point must decode to.
#[derive(Debug, Clone)]
enum Expect {
    Number(f64),
    Text(&'static str),
}

/// One point of the matrix.
struct Case {
    name: String,
    table: &'static str,
    address: u16,
    /// Config `type`.
    ty: &'static str,
    order: &'static str,
    /// Extra config keys (`bit`, `length`).
    extra: String,
    expect: Expect,
}

const ORDERS_16: [&str; 2] = ["ABCD", "BADC"];
const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];
const STATUS_WORD: u16 = 0b1010_0000_0000_0101;
const COILS: [bool; 9] = [true, false, true, true, false, false, true, false, true];
const INPUTS: [bool; 5] = [false, true, true, false, true];

/// Values whose bytes all differ, so any order mistake changes the number;
/// 64-bit integers stay below 2^53 so f64 holds them exactly.
fn values() -> Vec<(&'static str, Value, f64)> {
    let f32v = -1234.5678f32;
    let f64v = -98_765.432_101_234_5_f64;
    vec![
        ("u16", json!(0xA1B2u16), f64::from(0xA1B2u16)),
        ("i16", json!(-12345i16), -12345.0),
        ("u32", json!(0xA1B2_C3D4u32), f64::from(0xA1B2_C3D4u32)),
        ("i32", json!(-0x1A2B_3C4Di32), f64::from(-0x1A2B_3C4Di32)),
        ("f32", json!(f64::from(f32v)), f64::from(f32v)),
        (
            "u64",
            json!(0x001B_2C3D_4E5F_6071u64),
            0x001B_2C3D_4E5F_6071u64 as f64,
        ),
        (
            "i64",
            json!(-0x001B_2C3D_4E5F_6071i64),
            -0x001B_2C3D_4E5F_6071i64 as f64,
        ),
        ("f64", json!(f64v), f64v),
    ]
}

/// The matrix: cases, and the pymodbus map of unit 1.
fn matrix() -> (Vec<Case>, Unit) {
    let mut cases = Vec::new();
    let mut unit = Unit::default();
    // Alternate holding and input tables so both FC03 and FC04 are read.
    let mut next = [0u16, 0u16];
    let mut k = 0usize;
    let mut place = |words: u16| {
        let t = k % 2;
        k += 1;
        let at = next[t];
        next[t] += words;
        (["holding", "input"][t], at)
    };
    for (ty, json_value, expected) in values() {
        let words = match ty {
            "u16" | "i16" => 1,
            "u32" | "i32" | "f32" => 2,
            _ => 4,
        };
        let orders: &[&str] = if words == 1 { &ORDERS_16 } else { &ORDERS };
        for order in orders {
            let (table, address) = place(words);
            cases.push(Case {
                name: format!("{}_{order}", ty.to_uppercase()),
                table,
                address,
                ty,
                order,
                extra: String::new(),
                expect: Expect::Number(expected),
            });
            unit.encode.push(Encoded {
                table,
                address,
                ty,
                order,
                value: json_value.clone(),
                length: None,
            });
        }
    }
    for (order, text) in [("ABCD", "GASWATCH RTU-7"), ("BADC", "FC-7 Daniel")] {
        let length = 8;
        let (table, address) = place(length);
        cases.push(Case {
            name: format!("TEXT_{order}"),
            table,
            address,
            ty: "string",
            order,
            extra: format!("length = {length}\n"),
            expect: Expect::Text(text),
        });
        unit.encode.push(Encoded {
            table,
            address,
            ty: "string",
            order,
            value: json!(text),
            length: Some(length),
        });
    }
    // Bits inside one status register (pymodbus encodes the word).
    let (table, address) = place(1);
    unit.encode.push(Encoded {
        table,
        address,
        ty: "u16",
        order: "ABCD",
        value: json!(STATUS_WORD),
        length: None,
    });
    for bit in [0u8, 1, 2, 13, 14, 15] {
        cases.push(Case {
            name: format!("STATUS_B{bit}"),
            table,
            address,
            ty: "bit",
            order: "ABCD",
            extra: format!("bit = {bit}\n"),
            expect: Expect::Number(f64::from((STATUS_WORD >> bit) & 1)),
        });
    }
    unit.coil = Some((0, COILS.to_vec()));
    for (i, v) in COILS.iter().enumerate() {
        cases.push(Case {
            name: format!("COIL_{i}"),
            table: "coil",
            address: i as u16,
            ty: "bit",
            order: "ABCD",
            extra: String::new(),
            expect: Expect::Number(f64::from(u8::from(*v))),
        });
    }
    unit.discrete_input = Some((10, INPUTS.to_vec()));
    for (i, v) in INPUTS.iter().enumerate() {
        cases.push(Case {
            name: format!("DI_{i}"),
            table: "discrete_input",
            address: 10 + i as u16,
            ty: "bit",
            order: "ABCD",
            extra: String::new(),
            expect: Expect::Number(f64::from(u8::from(*v))),
        });
    }
    (cases, unit)
}

/// The daemon's config for the matrix; `link` holds the transport keys.
fn config(cases: &[Case], link: &str) -> String {
    let mut text = format!(
        "[station]\nid = \"types\"\nkind = \"city_gate\"\n\n[[devices]]\nid = \"pym\"\n{link}\nunit_id = 1\npoll_interval = \"100ms\"\ntimeout = \"1s\"\n"
    );
    for c in cases {
        text.push_str(&format!(
            "\n[[devices.points]]\nname = \"{}\"\nregister = \"{}\"\naddress = {}\ntype = \"{}\"\norder = \"{}\"\n{}",
            c.name, c.table, c.address, c.ty, c.order, c.extra
        ));
    }
    text.push_str("\n[sinks.file]\ndir = \"unused\"\n");
    text
}

/// Runs the poller against the server until every point decoded twice,
/// then checks every value.
async fn check_matrix(cases: &[Case], link: &str) {
    let run = Running::start(plan_of(&config(cases, link)));
    eventually(DEADLINE, "every point decoded at least twice", || {
        cases.iter().all(|c| match c.expect {
            Expect::Number(_) => run.good_count(&c.name) >= 2,
            Expect::Text(_) => run.text(&c.name).is_some_and(|(_, q)| q == Quality::Good),
        })
    })
    .await;
    let mut wrong = Vec::new();
    for c in cases {
        match c.expect {
            Expect::Number(want) => {
                for s in run.samples_of(&c.name) {
                    if s.quality != Quality::Good || s.value.to_bits() != want.to_bits() {
                        wrong.push(format!(
                            "{} ({} {} at {} {}): got {} {:?}, want {want}",
                            c.name, c.ty, c.order, c.table, c.address, s.value, s.quality
                        ));
                    }
                }
            }
            Expect::Text(want) => {
                let got = run.text(&c.name);
                if got.as_ref().map(|(t, _)| t.as_str()) != Some(want) {
                    wrong.push(format!("{}: got {got:?}, want {want:?}", c.name));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "decoded wrongly:\n{}", wrong.join("\n"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_decodes_exactly_what_pymodbus_encoded_over_tcp() {
    let (cases, unit) = matrix();
    let port = support::free_port();
    let _server = PymodbusServer::start_with(port, &vec![(1, unit)], Transport::Tcp);
    check_matrix(&cases, &format!("host = \"127.0.0.1\"\nport = {port}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_decodes_exactly_what_pymodbus_encoded_over_rtu_over_tcp() {
    let (cases, unit) = matrix();
    let port = support::free_port();
    let _server = PymodbusServer::start_with(port, &vec![(1, unit)], Transport::RtuOverTcp);
    check_matrix(
        &cases,
        &format!("transport = \"rtu_over_tcp\"\nhost = \"127.0.0.1\"\nport = {port}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_decodes_exactly_what_pymodbus_encoded_over_a_serial_port() {
    let (cases, unit) = matrix();
    let server = PymodbusServer::start_with(0, &vec![(1, unit)], Transport::Rtu);
    let path = server
        .serial_path
        .clone()
        .expect("the script names the serial port");
    check_matrix(
        &cases,
        &format!(
            // Pseudo-terminals refuse parity (tcsetattr EINVAL); a UART takes "even".
            "transport = \"rtu\"\nserial = {{ path = \"{path}\", baud = 19200, parity = \"none\" }}"
        ),
    )
    .await;
}
