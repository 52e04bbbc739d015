//! Unit tests of the poller's pure parts: result classification, backoff,
//! the poll grid, and the read-only invariant. The network behaviour is
//! covered by `tests/modbus_poller.rs` against a real pymodbus server.

use super::RegisterKind;
use super::poller::{
    Backoff, Outcome, PollGrid, SplitRanges, advance, classify, endpoints, next_group_tick,
    part_words, read_request,
};
use crate::model::ReadError;
use std::io;
use std::time::Duration;
use tokio::time::Instant;
use tokio_modbus::{ExceptionCode, FunctionCode, ProtocolError, Request, Response};

fn elapsed() -> tokio::time::error::Elapsed {
    // The only public way to obtain an `Elapsed` is to let a timeout pass.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>()).await
    })
    .expect_err("pending never completes")
}

#[test]
fn bits_use_function_codes_01_and_02_and_arrive_as_one_word_per_bit() {
    assert_eq!(
        read_request(RegisterKind::Coil, 0, 10).function_code(),
        FunctionCode::ReadCoils
    );
    assert_eq!(
        read_request(RegisterKind::DiscreteInput, 0, 10).function_code(),
        FunctionCode::ReadDiscreteInputs
    );
    // 3 bits asked; the answer carries a whole byte (5 padding bits).
    let bits = vec![true, false, true, false, false, false, false, false];
    assert_eq!(
        classify(Ok(Ok(Ok(Response::ReadCoils(bits.clone())))), 3),
        Outcome::Registers(vec![1, 0, 1])
    );
    assert_eq!(
        classify(Ok(Ok(Ok(Response::ReadDiscreteInputs(bits)))), 12),
        Outcome::Failed {
            error: ReadError::Malformed,
            reconnect: false
        }
    );
}

#[test]
fn a_split_halves_until_the_bad_point_is_alone() {
    let mut s = SplitRanges::halves(5);
    assert_eq!(s.0, vec![(0, 2), (2, 5)]);
    s.halve(1);
    assert_eq!(s.0, vec![(0, 2), (2, 3), (3, 5)]);
    s.halve(1); // a single point is never split further
    assert_eq!(s.0, vec![(0, 2), (2, 3), (3, 5)]);
}

#[test]
fn parts_cover_only_their_points_registers() {
    let text = "[station]\nid = \"s\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n\
        [[devices]]\nid = \"a\"\nhost = \"h\"\n\
        [[devices.points]]\nname = \"A\"\nregister = \"holding\"\naddress = 10\ntype = \"u16\"\n\
        [[devices.points]]\nname = \"B\"\nregister = \"holding\"\naddress = 14\ntype = \"f32\"\n\
        [[devices.points]]\nname = \"C\"\nregister = \"holding\"\naddress = 20\ntype = \"u16\"\n";
    let config = crate::config::Config::from_str_named(text, std::path::Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = crate::engine::EnginePlan::compile(&config);
    let block = &plan.devices[0].blocks[0];
    assert_eq!((block.start, block.count), (10, 11));
    assert_eq!(part_words(block, 0, 1), (0, 1));
    assert_eq!(part_words(block, 1, 3), (4, 7));
    assert_eq!(part_words(block, 0, 3), (0, 11));
}

#[test]
fn only_function_codes_03_and_04_are_built() {
    assert_eq!(
        read_request(RegisterKind::Holding, 7, 3).function_code(),
        FunctionCode::ReadHoldingRegisters
    );
    assert_eq!(
        read_request(RegisterKind::Input, 7, 3).function_code(),
        FunctionCode::ReadInputRegisters
    );
    assert!(matches!(
        read_request(RegisterKind::Holding, 7, 3),
        Request::ReadHoldingRegisters(7, 3)
    ));
    // tests/architecture.rs scans all of src/ for Modbus write calls.
}

#[test]
fn classification_separates_transport_from_data_quality() {
    let ok = classify(Ok(Ok(Ok(Response::ReadHoldingRegisters(vec![1, 2])))), 2);
    assert_eq!(ok, Outcome::Registers(vec![1, 2]));
    let ok_input = classify(Ok(Ok(Ok(Response::ReadInputRegisters(vec![9])))), 1);
    assert_eq!(ok_input, Outcome::Registers(vec![9]));

    let short = classify(Ok(Ok(Ok(Response::ReadHoldingRegisters(vec![1])))), 2);
    assert_eq!(
        short,
        Outcome::Failed {
            error: ReadError::Malformed,
            reconnect: false
        }
    );

    let exc = classify(Ok(Ok(Err(ExceptionCode::IllegalDataAddress))), 2);
    assert_eq!(
        exc,
        Outcome::Failed {
            error: ReadError::Exception(2),
            reconnect: false
        }
    );
    let exc_b = classify(Ok(Ok(Err(ExceptionCode::GatewayTargetDevice))), 2);
    assert_eq!(
        exc_b,
        Outcome::Failed {
            error: ReadError::Exception(0x0B),
            reconnect: false
        }
    );

    let timeout = classify(Err(elapsed()), 2);
    assert_eq!(
        timeout,
        Outcome::Failed {
            error: ReadError::Timeout,
            reconnect: true
        }
    );

    let reset = classify(
        Ok(Err(io::Error::from(io::ErrorKind::ConnectionReset).into())),
        2,
    );
    assert_eq!(
        reset,
        Outcome::Failed {
            error: ReadError::Transport,
            reconnect: true
        }
    );

    let garbage = classify(
        Ok(Err(io::Error::new(io::ErrorKind::InvalidData, "bad").into())),
        2,
    );
    assert_eq!(
        garbage,
        Outcome::Failed {
            error: ReadError::Malformed,
            reconnect: true
        }
    );

    let desync = classify(
        Ok(Err(ProtocolError::HeaderMismatch {
            message: "tid".into(),
            result: Ok(Response::ReadHoldingRegisters(vec![1, 2])),
        }
        .into())),
        2,
    );
    assert_eq!(
        desync,
        Outcome::Failed {
            error: ReadError::Transport,
            reconnect: true
        }
    );
}

#[test]
fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
    let mut b = Backoff::new();
    let mut nominal = 250.0_f64;
    for _ in 0..12 {
        let d = b.next_delay().as_secs_f64() * 1000.0;
        assert!(
            d >= nominal * 0.8 - 1.0 && d <= nominal * 1.2 + 1.0,
            "{d} vs {nominal}"
        );
        nominal = (nominal * 2.0).min(30_000.0);
    }
    b.reset();
    let d = b.next_delay();
    assert!(d >= Duration::from_millis(199) && d <= Duration::from_millis(301));
}

#[test]
fn poll_grid_skips_missed_ticks_instead_of_bunching() {
    let t0 = Instant::now();
    let i = Duration::from_millis(100);
    // On time: next tick, nothing skipped.
    assert_eq!(advance(t0, i, t0 + Duration::from_millis(30)), (t0 + i, 0));
    // Cycle took 250 ms: ticks at 100 and 200 are skipped, next is 300.
    assert_eq!(
        advance(t0, i, t0 + Duration::from_millis(250)),
        (t0 + 3 * i, 2)
    );
    // Exactly on a tick boundary: that tick is past, take the next.
    assert_eq!(advance(t0, i, t0 + i), (t0 + 2 * i, 1));
}

#[test]
fn sample_toml_validates_and_plans_one_link_per_gateway_bus_and_converter() {
    let text = format!(
        "[station]\nid = \"s1\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n{}",
        include_str!("sample.toml")
    );
    let config = crate::config::Config::from_str_named(&text, std::path::Path::new("sample.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.devices.len(), 4);
    assert_eq!(config.devices[0].timeout, Duration::from_millis(500));
    let plan = crate::engine::EnginePlan::compile(&config);
    let links: Vec<String> = endpoints(&plan)
        .iter()
        .map(|(l, d)| format!("{l} {}", d.len()))
        .collect();
    assert_eq!(
        links,
        vec!["192.0.2.10:502 2", "/dev/ttyUSB0 1", "192.0.2.40:4001 1"],
        "fc-in and rtu-2 share one gateway connection"
    );
}

#[test]
fn devices_are_grouped_by_endpoint_in_config_order() {
    use crate::model::DeviceId;
    let mut text =
        String::from("[station]\nid = \"s1\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n");
    for (id, host, port, unit) in [
        ("a", "10.0.0.1", 502, 1),
        ("b", "10.0.0.2", 502, 1),
        ("c", "10.0.0.1", 502, 2),
    ] {
        text.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nhost = \"{host}\"\nport = {port}\nunit_id = {unit}\n\
             [[devices.points]]\nname = \"P_{id}\"\nregister = \"holding\"\naddress = 0\ntype = \"u16\"\n"
        ));
    }
    let config = crate::config::Config::from_str_named(&text, std::path::Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = crate::engine::EnginePlan::compile(&config);
    let groups = endpoints(&plan);
    let tcp = |host: &str| super::Link::Tcp {
        host: host.to_string(),
        port: 502,
    };
    assert_eq!(
        groups,
        vec![
            (tcp("10.0.0.1"), vec![DeviceId(0), DeviceId(2)]),
            (tcp("10.0.0.2"), vec![DeviceId(1)]),
        ]
    );
}

/// A station with the given `[[devices]]` bodies (one point each).
fn station_with(devices: &[&str]) -> String {
    let mut text =
        String::from("[station]\nid = \"s1\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n");
    for (i, d) in devices.iter().enumerate() {
        text.push_str(&format!(
            "[[devices]]\nid = \"d{i}\"\n{d}\n\
             [[devices.points]]\nname = \"P{i}\"\nregister = \"holding\"\naddress = 0\ntype = \"u16\"\n"
        ));
    }
    text
}

fn config_error(devices: &[&str]) -> String {
    let text = station_with(devices);
    match crate::config::Config::from_str_named(&text, std::path::Path::new("rtu.toml")) {
        Ok(_) => panic!("expected an error for\n{text}"),
        Err(e) => e.to_string(),
    }
}

const SERIAL: &str = "transport = \"rtu\"\nunit_id = 7\nserial = { path = \"/dev/ttyUSB0\", baud = 9600, parity = \"even\" }";

#[test]
fn rtu_devices_share_a_bus_and_rtu_over_tcp_devices_a_connection() {
    use super::{Link, Parity, SerialConfig};
    let text = station_with(&[
        SERIAL,
        "transport = \"rtu\"\nunit_id = 8\nserial = { path = \"/dev/ttyUSB0\", baud = 9600, parity = \"even\" }",
        "transport = \"rtu_over_tcp\"\nhost = \"10.0.0.5\"\nport = 4001\nunit_id = 3",
        "host = \"10.0.0.5\"\nport = 502",
    ]);
    let config = crate::config::Config::from_str_named(&text, std::path::Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = crate::engine::EnginePlan::compile(&config);
    let groups = endpoints(&plan);
    let line = SerialConfig {
        path: "/dev/ttyUSB0".into(),
        baud: 9600,
        parity: Parity::Even,
        data_bits: 8,
        stop_bits: 1,
    };
    use crate::model::DeviceId;
    assert_eq!(
        groups,
        vec![
            (Link::Serial(line.clone()), vec![DeviceId(0), DeviceId(1)]),
            (
                Link::RtuOverTcp {
                    host: "10.0.0.5".into(),
                    port: 4001
                },
                vec![DeviceId(2)]
            ),
            (
                Link::Tcp {
                    host: "10.0.0.5".into(),
                    port: 502
                },
                vec![DeviceId(3)]
            ),
        ]
    );
    assert_eq!(groups[0].0.to_string(), "/dev/ttyUSB0");
    assert_eq!(groups[1].0.to_string(), "10.0.0.5:4001");
    // 8E1 = 11 bits a character: 3.5 characters at 9600 baud.
    assert_eq!(line.frame_gap(), Duration::from_nanos(4_010_416));
    let fast = SerialConfig {
        baud: 115_200,
        ..line
    };
    assert_eq!(fast.frame_gap(), Duration::from_micros(1750));
}

#[test]
fn serial_and_transport_settings_are_validated_with_their_keys() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["transport = \"rtu\""],
            "devices[0].serial",
            "[devices.serial]",
        ),
        (
            &[
                "transport = \"rtu\"\nhost = \"10.0.0.1\"\nserial = { path = \"/dev/ttyS0\", baud = 9600, parity = \"none\" }",
            ],
            "devices[0].host",
            "applies only to transport",
        ),
        (
            &[
                "host = \"10.0.0.1\"\nserial = { path = \"/dev/ttyS0\", baud = 9600, parity = \"none\" }",
            ],
            "devices[0].serial",
            "applies only to transport = \"rtu\"",
        ),
        (
            &["transport = \"rtu_over_tcp\""],
            "devices[0].host",
            "expected a host name",
        ),
        (
            &["transport = \"rtu\"\nserial = { path = \"\", baud = 9600, parity = \"none\" }"],
            "devices[0].serial.path",
            "serial device path",
        ),
        (
            &[
                "transport = \"rtu\"\nserial = { path = \"/dev/ttyS0\", baud = 0, parity = \"none\" }",
            ],
            "devices[0].serial.baud",
            "300-1000000",
        ),
        (
            &[
                "transport = \"rtu\"\nserial = { path = \"/dev/ttyS0\", baud = 9600, parity = \"odd\", data_bits = 7 }",
            ],
            "devices[0].serial.data_bits",
            "Modbus ASCII",
        ),
        (
            &[
                "transport = \"rtu\"\nserial = { path = \"/dev/ttyS0\", baud = 9600, parity = \"odd\", stop_bits = 3 }",
            ],
            "devices[0].serial.stop_bits",
            "1 or 2",
        ),
        (
            &[
                "transport = \"rtu\"\nunit_id = 0\nserial = { path = \"/dev/ttyS0\", baud = 9600, parity = \"odd\" }",
            ],
            "devices[0].unit_id",
            "broadcast",
        ),
        (
            &[
                "transport = \"rtu\"\nport = 4001\nserial = { path = \"/dev/ttyS0\", baud = 9600, parity = \"odd\" }",
            ],
            "devices[0].port",
            "applies only to",
        ),
        // 125 registers at 1200 baud take about 2.4 s on the line.
        (
            &[
                "transport = \"rtu\"\ntimeout = \"1s\"\nserial = { path = \"/dev/ttyS0\", baud = 1200, parity = \"odd\" }",
            ],
            "devices[0].serial.baud",
            "raise timeout or lower max_registers_per_read",
        ),
        (
            &[
                SERIAL,
                "transport = \"rtu\"\nunit_id = 9\nserial = { path = \"/dev/ttyUSB0\", baud = 19200, parity = \"even\" }",
            ],
            "devices[1].serial",
            "same line settings",
        ),
        (
            &[
                "host = \"10.0.0.5\"\nport = 4001",
                "transport = \"rtu_over_tcp\"\nhost = \"10.0.0.5\"\nport = 4001",
            ],
            "devices[1].transport",
            "one port speaks one framing",
        ),
    ];
    for (devices, key, words) in cases {
        let e = config_error(devices);
        assert!(
            e.contains(&format!("rtu.toml: {key}: ")) && e.contains(words),
            "want {key} / {words:?}, got: {e}"
        );
    }
    // Shape errors come from the parser, with the line.
    for (device, words) in [
        (
            "transport = \"rtu\"\nserial = { path = \"/dev/ttyS0\", baud = 9600 }",
            "parity",
        ),
        (
            "transport = \"rtu\"\nserial = { path = \"/dev/ttyS0\", baud = 9600, parity = \"mark\" }",
            "mark",
        ),
        (
            "transport = \"rtu\"\nserial = { path = \"/dev/ttyS0\", baud = 9600, parity = \"none\", flow = 1 }",
            "flow",
        ),
        ("transport = \"serial\"", "serial"),
    ] {
        let e = config_error(&[device]);
        assert!(e.contains("rtu.toml:") && e.contains(words), "{e}");
    }
}

#[test]
fn a_poll_group_stays_on_its_grid_when_its_tick_is_skipped() {
    // Every 4 ticks at phase 1: ticks 1, 5, 9, ...
    assert_eq!(next_group_tick(1, 4, 1), 5);
    assert_eq!(next_group_tick(4, 4, 1), 5);
    assert_eq!(next_group_tick(5, 4, 1), 9);
    // Tick 5 was skipped (overrun) and 6 runs it late: next is 9, not 10.
    assert_eq!(next_group_tick(6, 4, 1), 9);
    // Every tick.
    assert_eq!(next_group_tick(7, 1, 0), 8);
    assert_eq!(next_group_tick(0, 0, 0), 1, "every = 0 is taken as 1");
}

fn plan_of(text: &str) -> crate::engine::EnginePlan {
    let config = crate::config::Config::from_str_named(text, std::path::Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    crate::engine::EnginePlan::compile(&config)
}

fn tcp(host: &str, port: u16) -> super::Link {
    super::Link::Tcp {
        host: host.to_string(),
        port,
    }
}

#[test]
fn a_links_phase_depends_on_the_link_alone_and_links_spread_over_the_interval() {
    let second = Duration::from_secs(1);
    // Pinned: a phase that moved with a rebuild or a Rust release would
    // move every link of a running site at its next restart.
    assert_eq!(
        tcp("192.0.2.10", 502).poll_phase(second),
        tcp("192.0.2.10", 502).poll_phase(second)
    );
    let pinned = tcp("192.0.2.10", 502).poll_phase(second).as_nanos();
    assert_eq!(pinned, 751_987_586, "the stable hash changed");
    // The same fraction of every interval.
    let two = tcp("192.0.2.10", 502).poll_phase(2 * second).as_nanos();
    assert!(two.abs_diff(2 * pinned) <= 1, "{two} vs 2 x {pinned}");
    // Framing is part of the key.
    let rtu = super::Link::RtuOverTcp {
        host: "192.0.2.10".into(),
        port: 502,
    };
    assert_ne!(
        rtu.poll_phase(second),
        tcp("192.0.2.10", 502).poll_phase(second)
    );
    // 50 gateways: every phase inside the interval, no two alike, every
    // tenth of the second used and none crowded.
    let phases: Vec<Duration> = (1..=50)
        .map(|i| tcp(&format!("10.0.0.{i}"), 502).poll_phase(second))
        .collect();
    assert!(phases.iter().all(|p| *p < second));
    let distinct: std::collections::BTreeSet<_> = phases.iter().collect();
    assert_eq!(distinct.len(), 50);
    let mut bins = [0u32; 10];
    for p in &phases {
        bins[(p.as_millis() / 100) as usize] += 1;
    }
    assert!(
        bins.iter().all(|&n| (1..=10).contains(&n)),
        "links per 100 ms: {bins:?}"
    );
    // Neighbouring ports (loadbench's gateways) spread too.
    let ports: Vec<u128> = (5020..5030)
        .map(|p| tcp("127.0.0.1", p).poll_phase(second).as_millis() / 100)
        .collect();
    let used: std::collections::BTreeSet<_> = ports.iter().collect();
    assert!(used.len() >= 5, "ten ports in tenths {ports:?}");
}

/// Three links, one with two units and one at a slower interval.
fn three_links(modbus: &str, extra: &str) -> String {
    let mut devices = vec![
        "host = \"10.0.0.1\"\nunit_id = 1",
        "host = \"10.0.0.1\"\nunit_id = 2",
        "host = \"10.0.0.2\"",
        "host = \"10.0.0.3\"\npoll_interval = \"5s\"",
    ];
    if !extra.is_empty() {
        devices.push(extra);
    }
    station_with(&devices).replacen("[[devices]]", &format!("{modbus}\n[[devices]]"), 1)
}

#[test]
fn the_first_link_polls_at_start_and_the_others_within_their_interval() {
    let plan = plan_of(&three_links("", ""));
    let t0 = Instant::now();
    let grid = PollGrid::new(&plan, t0);
    let first: Vec<Instant> = plan.devices.iter().map(|d| grid.first_due(d, t0)).collect();
    assert_eq!(first.iter().min(), Some(&t0), "{first:?}");
    for (d, f) in plan.devices.iter().zip(&first) {
        assert!(*f < t0 + d.poll_interval, "{}: {:?}", d.id, *f - t0);
        assert!(d.poll_phase < d.poll_interval);
    }
    assert_eq!(first[0], first[1], "units of one link share its phase");
    assert_ne!(first[0], first[2], "two links, two phases");
    // Later, the first tick at or after `from`, on the same grid.
    for (d, f) in plan.devices.iter().zip(&first) {
        let from = t0 + Duration::from_millis(12_345);
        let due = grid.first_due(d, from);
        assert!(due >= from && due < from + d.poll_interval);
        let steps = (due - *f).as_nanos() / d.poll_interval.as_nanos();
        assert_eq!(*f + d.poll_interval * steps as u32, due, "{}", d.id);
    }
}

#[test]
fn pollers_restarted_on_the_grid_neither_double_nor_skip_a_tick() {
    let old = plan_of(&three_links("", ""));
    // The reload adds a link and changes a timeout: the old links keep
    // their phases.
    let new = plan_of(&three_links("", "host = \"10.0.0.9\"").replace(
        "[[devices]]\nid = \"d2\"\n",
        "[[devices]]\nid = \"d2\"\ntimeout = \"300ms\"\n",
    ));
    assert_eq!(new.devices[2].timeout, Duration::from_millis(300));
    let t0 = Instant::now();
    let grid = PollGrid::new(&old, t0);
    for stop_ms in [0u64, 1, 999, 1000, 2_500, 7_777] {
        let stop = t0 + Duration::from_millis(stop_ms);
        for (i, d) in old.devices.iter().enumerate() {
            // The old poller's ticks (on time: no overruns) up to the stop.
            let mut due = grid.first_due(d, t0);
            let mut ticks = Vec::new();
            for _ in 0..20 {
                ticks.push(due);
                due = advance(due, d.poll_interval, due).0;
            }
            let polled = ticks.iter().filter(|t| **t < stop).count();
            let resumed = grid.first_due(&new.devices[i], stop);
            assert_eq!(
                resumed, ticks[polled],
                "{} stopped at {stop_ms} ms: resumes on the next tick of its grid",
                d.id
            );
        }
    }
    // The new link has a phase of its own, inside its interval.
    let added = &new.devices[4];
    let due = grid.first_due(added, t0 + Duration::from_secs(3));
    assert!(due >= t0 + Duration::from_secs(3) && due < t0 + Duration::from_secs(4));
}

#[test]
fn stagger_false_aligns_every_device_on_the_grid_at_start() {
    let t0 = Instant::now();
    let off = plan_of(&three_links("[modbus]\nstagger = false", ""));
    let grid = PollGrid::new(&off, t0);
    for d in &off.devices {
        assert_eq!(d.poll_phase, Duration::ZERO);
        assert_eq!(grid.first_due(d, t0), t0, "{}", d.id);
    }
    // Per device: an unstaggered device in a staggered station, and the
    // other way round.
    let mixed = plan_of(&three_links("", "host = \"10.0.0.4\"\nstagger = false"));
    assert_eq!(mixed.devices[4].poll_phase, Duration::ZERO);
    assert!(mixed.devices[2].poll_phase > Duration::ZERO);
    let grid = PollGrid::new(&mixed, t0);
    assert_eq!(grid.first_due(&mixed.devices[4], t0), t0);
    let only = plan_of(&three_links(
        "[modbus]\nstagger = false",
        "host = \"10.0.0.4\"\nstagger = true",
    ));
    assert_eq!(only.devices[2].poll_phase, Duration::ZERO);
    assert_eq!(
        only.devices[4].poll_phase,
        tcp("10.0.0.4", 502).poll_phase(Duration::from_secs(1))
    );
}

#[test]
fn a_bad_stagger_names_the_file_line_and_key() {
    let bad = |text: &str| match crate::config::Config::from_str_named(
        text,
        std::path::Path::new("st.toml"),
    ) {
        Ok(_) => panic!("expected an error for\n{text}"),
        Err(e) => e.to_string(),
    };
    let e = bad(&three_links("[modbus]\nstagger = \"no\"", ""));
    assert!(e.starts_with("st.toml:7: stagger: "), "{e}");
    assert!(e.contains("expected a boolean"), "{e}");
    let e = bad(&three_links("[modbus]\nstager = false", ""));
    assert!(e.starts_with("st.toml:7: stager: "), "{e}");
    assert!(
        e.contains("unknown field `stager`") && e.contains("`stagger`"),
        "{e}"
    );
    let e = bad(&three_links("", "host = \"10.0.0.4\"\nstagger = 0"));
    assert!(
        e.contains(": stagger: ") && e.contains("expected a boolean"),
        "{e}"
    );
}

#[test]
fn a_restarted_poller_takes_over_the_ticks_its_predecessor_left() {
    let plan = plan_of(&three_links("", ""));
    let t0 = Instant::now();
    let grid = PollGrid::new(&plan, t0);
    let d = &plan.devices[1];
    let second = Duration::from_secs(1);
    let unfinished = grid.first_due(d, t0) + 2 * second;
    let from = unfinished + Duration::from_millis(150);
    let mut left = std::collections::HashMap::new();
    left.insert(d.id.clone(), unfinished);
    // On its grid: the unfinished tick, although it is before `from`.
    assert_eq!(grid.resume_at(d, from, &left), unfinished);
    // Not in the book: the first tick at or after `from`.
    assert_eq!(
        grid.resume_at(&plan.devices[0], from, &left),
        grid.first_due(&plan.devices[0], from)
    );
    // The reload changed the device's interval: its old tick means nothing.
    let slower = plan_of(&three_links("", "").replacen(
        "unit_id = 2",
        "unit_id = 2\npoll_interval = \"3s\"",
        1,
    ));
    assert_eq!(slower.devices[1].poll_interval, 3 * second);
    assert_eq!(
        grid.resume_at(&slower.devices[1], from, &left),
        grid.first_due(&slower.devices[1], from)
    );
    // The book empties when taken.
    grid.leave(&d.id, unfinished);
    assert_eq!(grid.take_left().len(), 1);
    assert!(grid.take_left().is_empty());
}
