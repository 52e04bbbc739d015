//! RTU framing of the simulator, checked against tokio-modbus's RTU client
//! (another implementation) and against hand-built frames: RTU over TCP,
//! RTU on a byte stream standing for a serial line, CRC handling, and which
//! config endpoints `serve_all` serves.

use std::time::Duration;

use gaswatch_sim::{Fault, Framing, SimOptions, Station, Transport, serve_all, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_modbus::prelude::*;

const CITY_GATE: &str = include_str!("../../config/city-gate.toml");
const DEADLINE: Duration = Duration::from_secs(5);

fn station() -> Station {
    Station::from_config_str(CITY_GATE, &SimOptions::default()).expect("example config builds")
}

fn f32_abcd(w: &[u16]) -> f64 {
    f64::from(f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1])))
}

fn last_served(h: &gaswatch_sim::SimHandle, point: &str) -> f64 {
    h.served()
        .iter()
        .rev()
        .find(|s| s.point == point)
        .map(|s| s.value)
        .unwrap_or_else(|| panic!("{point} was served"))
}

/// CRC from the Modbus over Serial Line specification's example
/// (read 10 holding registers of unit 1: CRC bytes C5 CD).
#[test]
fn crc_matches_the_specification_example() {
    let crc = gaswatch_sim::server::crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]);
    assert_eq!(crc.to_le_bytes(), [0xC5, 0xCD]);
}

#[tokio::test]
async fn rtu_over_tcp_answers_tokio_modbus_rtu_client_and_refuses_writes() {
    let h = serve_with(
        station(),
        "127.0.0.1:0".parse().expect("addr"),
        Framing::Rtu,
    )
    .await
    .expect("binds");
    let stream = TcpStream::connect(h.local_addr()).await.expect("connect");
    let mut ctx = rtu::attach_slave(stream, Slave(1));
    let w = tokio::time::timeout(DEADLINE, ctx.read_holding_registers(0, 2))
        .await
        .expect("in time")
        .expect("transport")
        .expect("no exception");
    assert_eq!(f32_abcd(&w), last_served(&h, "FT_IN1"));
    ctx.set_slave(Slave(2));
    tokio::time::timeout(DEADLINE, ctx.read_input_registers(100, 2))
        .await
        .expect("in time")
        .expect("transport")
        .expect("no exception");
    assert_eq!(
        tokio::time::timeout(DEADLINE, ctx.write_single_register(0, 7))
            .await
            .expect("in time")
            .expect("transport"),
        Err(ExceptionCode::IllegalFunction)
    );
    let fcs = h.function_codes();
    assert_eq!(fcs.get(&3), Some(&1));
    assert_eq!(fcs.get(&4), Some(&1));
    assert_eq!(fcs.get(&6), Some(&1));
    h.stop().await;
}

/// Hand-built frames: the answer carries unit, function, byte count, data
/// and a CRC that checks; a request with a bad CRC is not answered, and the
/// next good request is.
#[tokio::test]
async fn raw_rtu_frames_bad_crc_is_ignored_and_the_next_request_answered() {
    let h = serve_with(
        station(),
        "127.0.0.1:0".parse().expect("addr"),
        Framing::Rtu,
    )
    .await
    .expect("binds");
    let mut s = TcpStream::connect(h.local_addr()).await.expect("connect");
    let mut req = vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x02];
    let crc = gaswatch_sim::server::crc16(&req);
    let mut bad = req.clone();
    bad.extend_from_slice(&(crc ^ 1).to_le_bytes());
    s.write_all(&bad).await.expect("write");
    let mut buf = [0u8; 9];
    let silent = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
    assert!(silent.is_err(), "a bad CRC must get no answer: {silent:?}");
    req.extend_from_slice(&crc.to_le_bytes());
    s.write_all(&req).await.expect("write");
    tokio::time::timeout(DEADLINE, s.read_exact(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    assert_eq!(&buf[..3], &[0x01, 0x03, 0x04]);
    let crc = gaswatch_sim::server::crc16(&buf[..7]);
    assert_eq!(&buf[7..], &crc.to_le_bytes());
    let w = [
        u16::from_be_bytes([buf[3], buf[4]]),
        u16::from_be_bytes([buf[5], buf[6]]),
    ];
    assert_eq!(f32_abcd(&w), last_served(&h, "FT_IN1"));
    h.stop().await;
}

/// A serial line (here an in-memory duplex pipe) never "closes": a fault
/// that closes a TCP connection answers nothing, and the line keeps serving.
#[tokio::test]
async fn serial_line_survives_a_close_fault() {
    let (ours, theirs) = tokio::io::duplex(1024);
    let h = gaswatch_sim::serve_rtu_line(station(), theirs).expect("serves");
    let mut ctx = rtu::attach_slave(ours, Slave(1));
    async fn read(
        ctx: &mut client::Context,
    ) -> Result<tokio_modbus::Result<Vec<u16>>, tokio::time::error::Elapsed> {
        tokio::time::timeout(Duration::from_millis(500), ctx.read_holding_registers(0, 2)).await
    }
    read(&mut ctx)
        .await
        .expect("in time")
        .expect("transport")
        .expect("no exception");
    h.set_fault(1, Fault::CloseConnection);
    assert!(read(&mut ctx).await.is_err(), "no answer under the fault");
    h.set_fault(1, Fault::None);
    // The client's codec buffer may hold nothing: the fault sent nothing.
    read(&mut ctx)
        .await
        .expect("in time")
        .expect("transport")
        .expect("no exception");
    assert_eq!(h.function_codes().get(&3), Some(&3));
    h.stop().await;
}

/// `text` (the example city gate) with its PLC moved to serial port
/// /dev/ttyUSB7.
fn plc_on_serial(text: &str) -> String {
    let moved = text.replacen(
        "id = \"plc-out\"\nhost = \"127.0.0.1\"\nport = 5020",
        "id = \"plc-out\"\ntransport = \"rtu\"\nserial = { path = \"/dev/ttyUSB7\", baud = 9600, parity = \"even\" }",
        1,
    );
    assert_ne!(moved, text, "the example config changed shape");
    moved
}

#[tokio::test]
async fn serve_all_frames_each_endpoint_by_its_transport_and_skips_serial_ports() {
    let text = CITY_GATE.replacen(
        "id = \"rtu-out2\"\nhost = \"127.0.0.1\"\nport = 5020\nunit_id = 3",
        "id = \"rtu-out2\"\ntransport = \"rtu_over_tcp\"\nhost = \"127.0.0.1\"\nport = 5021\nunit_id = 3",
        1,
    );
    assert_ne!(text, CITY_GATE, "the example config changed shape");
    let text = plc_on_serial(&text);
    let st = Station::from_config_str(&text, &SimOptions::default()).expect("builds");
    let eps = st.endpoints();
    assert!(
        eps.iter()
            .any(|e| e.transport == Transport::Rtu && e.host == "/dev/ttyUSB7"),
        "{eps:?}"
    );
    let handles = serve_all(st, |_| "127.0.0.1:0".parse().expect("valid"))
        .await
        .expect("serve_all");
    let kinds: Vec<Transport> = handles.keys().map(|e| e.transport).collect();
    assert_eq!(kinds, vec![Transport::Tcp, Transport::RtuOverTcp]);
    let rtu_handle = handles
        .iter()
        .find(|(e, _)| e.transport == Transport::RtuOverTcp)
        .map(|(_, h)| h)
        .expect("rtu endpoint");
    let stream = TcpStream::connect(rtu_handle.local_addr())
        .await
        .expect("connect");
    let mut ctx = rtu::attach_slave(stream, Slave(3));
    tokio::time::timeout(DEADLINE, ctx.read_holding_registers(12, 1))
        .await
        .expect("in time")
        .expect("transport")
        .expect("no exception");
    for (_, h) in handles {
        h.stop().await;
    }
}

/// `serve_station` serves a serial endpoint on the line given for it.
#[tokio::test]
async fn serve_station_serves_a_serial_endpoint_on_its_line() {
    let text = plc_on_serial(CITY_GATE);
    let st = Station::from_config_str(&text, &SimOptions::default()).expect("builds");
    let cfg = gaswatch_sim::StationConfig::from_toml_str(&text).expect("parses");
    let plc = cfg
        .devices
        .iter()
        .find(|d| d.id == "plc-out")
        .expect("plc-out");
    let (unit, first) = (plc.unit_id, plc.points[0].clone());
    let (ours, theirs) = tokio::io::duplex(1024);
    let mut line = Some(theirs);
    let handles = gaswatch_sim::serve_station(
        st,
        |_| "127.0.0.1:0".parse().expect("valid"),
        |ep| ep.is_serial().then(|| line.take()).flatten(),
    )
    .await
    .expect("serve_station");
    assert!(handles.keys().any(|e| e.transport == Transport::Rtu));
    let mut ctx = rtu::attach_slave(ours, Slave(unit));
    assert_eq!(
        format!("{:?}", first.register),
        "Input",
        "the example's first PLC point"
    );
    tokio::time::timeout(DEADLINE, ctx.read_input_registers(first.address, 2))
        .await
        .expect("in time")
        .expect("transport")
        .expect("no exception");
    for (_, h) in handles {
        h.stop().await;
    }
}

/// The `gaswatch-sim` binary serves a config's serial bus on a
/// pseudo-terminal and prints its path; an RTU master on that path reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_serial_bus_on_a_pty() {
    use tokio::io::AsyncBufReadExt;
    let dir = std::env::temp_dir().join(format!("gw-sim-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("serial.toml");
    std::fs::write(
        &cfg,
        r#"
[station]
id = "pty"
kind = "city_gate"

[[devices]]
id = "rtu1"
transport = "rtu"
serial = { path = "/dev/ttyUSB7", baud = 9600, parity = "even" }
unit_id = 4

[[devices.points]]
name = "PT_IN"
register = "holding"
address = 10
type = "f32"
"#,
    )
    .expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gaswatch-sim"))
        .arg("-c")
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gaswatch-sim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await.expect("read") {
            if l.starts_with("serial ") {
                return l;
            }
        }
        panic!("gaswatch-sim printed no serial line");
    })
    .await
    .expect("in time");
    let pty = line
        .strip_prefix("serial /dev/ttyUSB7 -> ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(&pty, 9600)).expect("open pty");
    let mut ctx = rtu::attach_slave(port, Slave(4));
    let w = tokio::time::timeout(DEADLINE, ctx.read_holding_registers(10, 2))
        .await
        .expect("in time")
        .expect("transport")
        .expect("no exception");
    assert!(f32_abcd(&w).is_finite());
    child.kill().await.expect("kill");
    let _ = std::fs::remove_dir_all(&dir);
}
