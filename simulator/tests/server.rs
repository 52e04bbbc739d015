//! Server tests against tokio-modbus's client: routing by unit id on one
//! connection, exceptions, faults, function-code counting, stop and restart.

use std::net::SocketAddr;
use std::time::Duration;

use gaswatch_sim::{Fault, Leak, SimError, SimHandle, SimOptions, Station, serve, serve_all};
use tokio_modbus::prelude::*;

const CITY_GATE: &str = include_str!("../../config/city-gate.toml");
const ANY: &str = "127.0.0.1:0";

fn station() -> Station {
    Station::from_config_str(CITY_GATE, &SimOptions::default()).expect("example config builds")
}

async fn start() -> SimHandle {
    serve(station(), ANY.parse().expect("valid address"))
        .await
        .expect("serve binds")
}

async fn connect(addr: SocketAddr, unit: u8) -> client::Context {
    tokio::time::timeout(
        Duration::from_secs(5),
        tcp::connect_slave(addr, Slave(unit)),
    )
    .await
    .expect("connect in time")
    .expect("connects")
}

/// Independent decode for the test: ABCD or CDAB f32.
fn f32_of(words: &[u16], cdab: bool) -> f64 {
    let (hi, lo) = if cdab {
        (words[1], words[0])
    } else {
        (words[0], words[1])
    };
    f64::from(f32::from_bits((u32::from(hi) << 16) | u32::from(lo)))
}

fn last_served(h: &SimHandle, point: &str) -> f64 {
    h.served()
        .iter()
        .rev()
        .find(|s| s.point == point)
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("{point} was served"))
}

#[tokio::test]
async fn two_units_on_one_connection_serve_the_config() {
    let h = start().await;
    let mut ctx = connect(h.local_addr(), 1).await;

    let w = ctx
        .read_holding_registers(0, 6)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(w.len(), 6);
    let (ft, pt, tt) = (
        f32_of(&w[0..2], false),
        f32_of(&w[2..4], false),
        f32_of(&w[4..6], false),
    );
    assert_eq!(ft, last_served(&h, "FT_IN1"));
    assert_eq!(pt, last_served(&h, "PT_IN1"));
    assert_eq!(tt, last_served(&h, "TT_IN1"));
    assert!((3300.0..3700.0).contains(&pt), "{pt}");

    ctx.set_slave(Slave(2));
    let w = ctx
        .read_input_registers(100, 6)
        .await
        .expect("transport")
        .expect("no exception");
    let (ft, pt) = (f32_of(&w[0..2], true), f32_of(&w[2..4], true));
    assert_eq!(ft, last_served(&h, "FT_OUT1"));
    assert_eq!(pt, last_served(&h, "PT_OUT1"));
    assert!((1400.0..1600.0).contains(&pt), "{pt}");
    assert!((10_000.0..30_000.0).contains(&ft), "{ft}");

    ctx.set_slave(Slave(3));
    let w = ctx
        .read_holding_registers(10, 4)
        .await
        .expect("transport")
        .expect("no exception");
    let flow = f64::from((u32::from(w[0]) << 16) | u32::from(w[1])) * 0.1;
    let pressure = f64::from(w[2]) * 0.1;
    let temperature = f64::from(w[3] as i16) * 0.01;
    assert!((flow - last_served(&h, "FT_OUT2")).abs() < 1e-6);
    assert!((pressure - last_served(&h, "PT_OUT2")).abs() < 1e-6);
    assert!((temperature - last_served(&h, "TT_OUT2")).abs() < 1e-9);
    assert!((-5.0..10.0).contains(&temperature), "{temperature}");

    // Input table of unit 1 has nothing; holding 100 of unit 2 neither.
    ctx.set_slave(Slave(1));
    assert_eq!(
        ctx.read_input_registers(0, 2).await.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Count out of 1..=125.
    assert_eq!(
        ctx.read_holding_registers(0, 126).await.expect("transport"),
        Err(ExceptionCode::IllegalDataValue)
    );
    // Bits are readable function codes, but no bit points exist.
    assert_eq!(
        ctx.read_coils(0, 8).await.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );

    ctx.set_slave(Slave(9));
    assert_eq!(
        ctx.read_holding_registers(0, 2).await.expect("transport"),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    h.stop().await;
}

#[tokio::test]
async fn function_codes_are_counted_and_writes_refused() {
    let h = start().await;
    let mut ctx = connect(h.local_addr(), 1).await;
    for _ in 0..3 {
        ctx.read_holding_registers(0, 2)
            .await
            .expect("transport")
            .expect("no exception");
    }
    ctx.set_slave(Slave(2));
    ctx.read_input_registers(100, 2)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(
        ctx.write_single_register(0, 7).await.expect("transport"),
        Err(ExceptionCode::IllegalFunction)
    );
    let fcs = h.function_codes();
    assert_eq!(fcs.get(&3), Some(&3));
    assert_eq!(fcs.get(&4), Some(&1));
    assert_eq!(fcs.get(&6), Some(&1));
    assert_eq!(fcs.len(), 3);
    h.stop().await;
}

#[tokio::test]
async fn stop_closes_connections_and_the_port_can_be_served_again() {
    let h = start().await;
    let addr = h.local_addr();
    let mut ctx = connect(addr, 1).await;
    ctx.read_holding_registers(0, 2)
        .await
        .expect("transport")
        .expect("no exception");
    h.stop().await;

    // The open connection is gone.
    let r = tokio::time::timeout(Duration::from_secs(5), ctx.read_holding_registers(0, 2))
        .await
        .expect("a closed connection fails fast");
    assert!(r.is_err(), "{r:?}");

    // Same port again.
    let h2 = serve(station(), addr).await.expect("rebinds the same port");
    assert_eq!(h2.local_addr(), addr);
    let mut ctx = connect(addr, 2).await;
    ctx.read_input_registers(100, 2)
        .await
        .expect("transport")
        .expect("no exception");
    h2.stop().await;
}

#[tokio::test]
async fn faults_per_unit() {
    let h = start().await;
    let addr = h.local_addr();

    h.set_fault(1, Fault::Exception(0x04));
    let mut ctx = connect(addr, 1).await;
    assert_eq!(
        ctx.read_holding_registers(0, 2).await.expect("transport"),
        Err(ExceptionCode::ServerDeviceFailure)
    );
    // Other units on the same connection are unaffected.
    ctx.set_slave(Slave(2));
    ctx.read_input_registers(100, 2)
        .await
        .expect("transport")
        .expect("no exception");

    h.set_fault(2, Fault::Delay(Duration::from_millis(200)));
    let t0 = std::time::Instant::now();
    ctx.read_input_registers(100, 2)
        .await
        .expect("transport")
        .expect("no exception");
    assert!(t0.elapsed() >= Duration::from_millis(200));

    h.set_fault(2, Fault::NoResponse);
    let r =
        tokio::time::timeout(Duration::from_millis(300), ctx.read_input_registers(100, 2)).await;
    assert!(r.is_err(), "no answer expected");

    h.set_fault(3, Fault::Garbage);
    let mut ctx = connect(addr, 3).await;
    let r = tokio::time::timeout(Duration::from_secs(5), ctx.read_holding_registers(10, 2))
        .await
        .expect("garbage arrives fast");
    assert!(r.is_err(), "{r:?}");

    h.set_fault(3, Fault::CloseConnection);
    let mut ctx = connect(addr, 3).await;
    let r = tokio::time::timeout(Duration::from_secs(5), ctx.read_holding_registers(10, 2))
        .await
        .expect("close arrives fast");
    assert!(r.is_err(), "{r:?}");

    h.set_fault(1, Fault::None);
    h.set_fault(3, Fault::None);
    let mut ctx = connect(addr, 3).await;
    ctx.read_holding_registers(10, 4)
        .await
        .expect("transport")
        .expect("no exception");
    ctx.set_slave(Slave(1));
    ctx.read_holding_registers(0, 2)
        .await
        .expect("transport")
        .expect("no exception");
    h.stop().await;
}

#[tokio::test]
async fn snapshot_and_leak_through_the_handle() {
    let opts = SimOptions {
        speed: 1000.0,
        ..SimOptions::default()
    };
    let st = Station::from_config_str(CITY_GATE, &opts).expect("builds");
    let h = serve(st, ANY.parse().expect("valid")).await.expect("serve");
    let s0 = h.snapshot();
    assert_eq!(s0.station_id, "cg01");
    assert_eq!(s0.values.len(), 9);
    assert!(!s0.physics.leak_active);
    h.set_leak(Some(Leak {
        start_after: Duration::ZERO,
        percent: 3.0,
        end_after: None,
    }))
    .expect("valid leak");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let s1 = h.snapshot();
    assert!(s1.sim_time > s0.sim_time);
    assert!(s1.physics.leak_active);
    assert!((s1.physics.leak_sm3_per_h / s1.physics.demand_sm3_per_h - 0.03).abs() < 1e-9);
    h.stop().await;
}

#[tokio::test]
async fn serve_all_gives_one_listener_per_endpoint() {
    // Move the outlet RTU behind its own endpoint and reuse unit id 1 there.
    let text = CITY_GATE.replacen(
        "id = \"rtu-out2\"\nhost = \"127.0.0.1\"\nport = 5020\nunit_id = 3",
        "id = \"rtu-out2\"\nhost = \"127.0.0.1\"\nport = 5021\nunit_id = 1",
        1,
    );
    assert_ne!(text, CITY_GATE, "the example config changed shape");
    let st = Station::from_config_str(&text, &SimOptions::default()).expect("builds");

    // One listener cannot route unit 1 twice.
    match serve(st.clone(), ANY.parse().expect("valid")).await {
        Err(SimError::UnitIdCollision { unit_id: 1, .. }) => {}
        other => panic!("expected a unit id collision, got {other:?}"),
    }

    let handles = serve_all(st, |_| ANY.parse().expect("valid"))
        .await
        .expect("serve_all");
    assert_eq!(handles.len(), 2);
    let mut ports = handles.iter().map(|(ep, h)| (ep.port, h));
    let (p0, h0) = ports.next().expect("two");
    let (p1, h1) = ports.next().expect("two");
    assert_eq!((p0, p1), (5020, 5021));

    let mut ctx = connect(h1.local_addr(), 1).await;
    let w = ctx
        .read_holding_registers(12, 1)
        .await
        .expect("transport")
        .expect("no exception");
    assert!((1400.0..1600.0).contains(&(f64::from(w[0]) * 0.1)));
    let mut ctx = connect(h0.local_addr(), 1).await;
    ctx.read_holding_registers(0, 2)
        .await
        .expect("transport")
        .expect("no exception");
    assert_eq!(
        ctx.read_holding_registers(12, 1).await.expect("transport"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Served log is shared by the station's listeners; counters are per listener.
    assert!(h0.served().iter().any(|s| s.point == "PT_OUT2"));
    assert_eq!(h1.function_codes().get(&3), Some(&1));
    assert_eq!(h0.function_codes().get(&3), Some(&2));
    for (_, h) in handles {
        h.stop().await;
    }
}

#[tokio::test]
async fn bad_config_is_an_error_not_a_panic() {
    let bad = CITY_GATE.replacen("type = \"u16\"", "type = \"u128\"", 1);
    let e = Station::from_config_str(&bad, &SimOptions::default()).expect_err("rejected");
    assert!(e.to_string().contains("type"), "{e}");
    let e = Station::from_config_str("not toml [", &SimOptions::default()).expect_err("rejected");
    assert!(matches!(e, SimError::Config(_)), "{e}");
}

/// Raw-socket checks below the tokio-modbus client: pipelined requests are all
/// answered in order with their transaction ids, and a malformed header closes
/// the connection.
#[tokio::test]
async fn raw_frames_pipelining_and_malformed_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start().await;
    let mut s = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .expect("connects");
    // Two requests in one write: tid 0x1234 unit 1 FC03 0..2, tid 0x1235 unit 9 FC03.
    let req = [
        0x12, 0x34, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2, //
        0x12, 0x35, 0, 0, 0, 6, 9, 3, 0, 0, 0, 2,
    ];
    s.write_all(&req).await.expect("writes");
    let mut a = [0u8; 13];
    s.read_exact(&mut a).await.expect("first answer");
    assert_eq!(&a[..9], &[0x12, 0x34, 0, 0, 0, 7, 1, 3, 4]);
    let mut b = [0u8; 9];
    s.read_exact(&mut b).await.expect("second answer");
    assert_eq!(b, [0x12, 0x35, 0, 0, 0, 3, 9, 0x83, 0x0B]);

    // Protocol id 1: not Modbus; the server closes.
    s.write_all(&[0, 1, 0, 1, 0, 6, 1, 3, 0, 0, 0, 2])
        .await
        .expect("writes");
    // The rest of the frame is unread, so the kernel may answer with a reset.
    let mut rest = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
    {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    assert_eq!(h.function_codes().get(&3), Some(&2));
    h.stop().await;
}
