//! Modbus RTU: the poller on a serial port (the slave side of a real
//! pseudo-terminal; the simulator serves RTU on its master side) and RTU over
//! TCP (the simulator behind a "serial-to-Ethernet converter"). Two unit ids
//! share the bus; values must be exactly what the simulator served, faults
//! on one unit must not stop the other, the Modbus session is dropped and
//! the line resynchronised (waited out until quiet) after a timeout so a
//! late answer is never taken for the next one, only read function codes
//! ever reach the bus, and an unplugged USB adapter is reopened by its
//! stable path when it comes back.
//!
//! Pseudo-terminals here refuse parity (tcsetattr answers EINVAL), so the
//! serial tests run 19200 baud 8N1; a UART takes any parity.

mod support;

use gaswatch::model::{Quality, Reason};
use gaswatch_sim::{Fault, Framing, SimHandle, SimOptions, Station};
use std::collections::BTreeSet;
use std::time::Duration;
use support::modbus::{Running, eventually, metric_value, plan_of};

const DEADLINE: Duration = Duration::from_secs(20);

/// Two units on one bus. `LINK` is replaced by the transport keys, `ID` by
/// a per-test prefix (metric labels of parallel tests stay apart).
const BUS: &str = r#"
[station]
id = "rtu"
kind = "city_gate"

[[devices]]
id = "ID-fc"
LINK
unit_id = 1
poll_interval = "50ms"
timeout = "200ms"
pause_after_failed_cycles = 0

[[devices.points]]
name = "FT_IN"
register = "holding"
address = 0
type = "f32"
order = "CDAB"
[[devices.points]]
name = "PT_IN"
register = "holding"
address = 20
type = "f32"
[[devices.points]]
name = "TT_IN"
register = "input"
address = 0
type = "i16"
scale = 0.01

[[devices]]
id = "ID-rtu2"
LINK
unit_id = 2
poll_interval = "50ms"
timeout = "200ms"
pause_after_failed_cycles = 0
config_error_retry = "200ms"

[[devices.points]]
name = "X"
register = "holding"
address = 0
type = "u32"
order = "DCBA"
scale = 0.01

[[meters]]
name = "IN"
role = "inlet"
flow = "FT_IN"
pressure = "PT_IN"
temperature = "TT_IN"
[[meters]]
name = "OUT"
role = "outlet"
flow = "X"

[sinks.file]
dir = "unused"
"#;

fn bus(id: &str, link: &str) -> String {
    BUS.replace("LINK", link).replace("ID-", &format!("{id}-"))
}

/// A pty pair: the simulator serves RTU on the master; returns the handle,
/// the slave's path for the daemon, and the pair's own slave descriptor.
/// Keep that open for the test: if every slave descriptor closes, the
/// master reports a hang-up (EPOLLHUP), tokio keeps that "read closed"
/// readiness for good, and tokio-serial's `poll_read` then loops on EAGAIN
/// without ever returning Pending: the simulator's task spins on a runtime
/// thread and tasks queued behind it wait, which shows up as answers
/// delivered late and out of turn (seen with strace). A UART has no master
/// side that could hang up.
fn simulator_on_a_pty(text: &str) -> (SimHandle, String, tokio_serial::SerialStream) {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().expect("openpty");
    let path = slave.name().expect("the slave side has a path");
    let station =
        Station::from_config_str(text, &SimOptions::default()).expect("simulator reads config");
    let sim = gaswatch_sim::serve_rtu_line(station, master).expect("serves");
    (sim, path, slave)
}

fn serial_link(path: &str) -> String {
    format!(
        "transport = \"rtu\"\nserial = {{ path = \"{path}\", baud = 19200, parity = \"none\" }}"
    )
}

const POINTS: [&str; 4] = ["FT_IN", "PT_IN", "TT_IN", "X"];

/// Every good sample of `point` equals a value the simulator served for it.
fn all_good_values_were_served(run: &Running, sim: &SimHandle, point: &str) {
    let served: Vec<f64> = sim
        .served()
        .iter()
        .filter(|s| s.point == point)
        .map(|s| s.value)
        .collect();
    for s in run.samples_of(point) {
        if s.quality == Quality::Good {
            assert!(
                served.contains(&s.value),
                "{point}: decoded {} was never served for it (last served {:?})",
                s.value,
                &served[served.len().saturating_sub(3)..]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_units_on_a_serial_port_read_exactly_what_was_served_over_one_open_port() {
    let (sim, path, _slave) = simulator_on_a_pty(&bus("pty1", &serial_link("PATH")));
    let text = bus("pty1", &serial_link(&path));
    // Pty numbers are reused by later tests of this binary: count from here.
    let connects = || {
        metric_value(
            "gaswatch_modbus_connects_total",
            &[("endpoint", &path), ("result", "ok")],
        )
    };
    let before = connects();
    let run = Running::start(plan_of(&text));
    eventually(DEADLINE, "five good samples of every point", || {
        POINTS.iter().all(|p| run.good_count(p) >= 5)
    })
    .await;
    for p in POINTS {
        assert!(
            run.samples_of(p).iter().all(|s| s.quality == Quality::Good),
            "{p}: {:?}",
            run.samples_of(p)
        );
        all_good_values_were_served(&run, &sim, p);
    }
    // Both units on ONE open port, opened once.
    assert_eq!(connects() - before, 1.0);
    let codes: BTreeSet<u8> = sim.function_codes().keys().copied().collect();
    assert_eq!(codes, BTreeSet::from([3, 4]), "only reads reach the bus");
    run.stop().await;
    sim.stop().await;
}

/// A reply later than the timeout is the dangerous one on RTU (no
/// transaction id). Unit 1 has two blocks of the same function code and
/// length (FT_IN at 0 and PT_IN at 20) and only PT_IN's answers come late;
/// unit 2 is polled once an hour, so the request after PT_IN's timeout is
/// FT_IN's. Taking the late answer for it would put PT_IN's value into FT_IN
/// (and then FT_IN's into PT_IN). The poller must drop its session and wait
/// for silence instead, so every good value is one served for that very
/// point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_late_answers_are_never_taken_for_the_next_request() {
    let text = bus("pty2", &serial_link("PATH")).replacen(
        "unit_id = 2\npoll_interval = \"50ms\"",
        "unit_id = 2\npoll_interval = \"1h\"",
        1,
    );
    let (sim, path, _slave) = simulator_on_a_pty(&text);
    let plan = plan_of(&text.replace("PATH", &path));
    let fc = &plan.devices[0];
    assert_eq!(
        fc.blocks.len(),
        3,
        "FT_IN, PT_IN and TT_IN are separate reads"
    );
    assert_eq!(
        (fc.blocks[0].count, fc.blocks[1].count),
        (2, 2),
        "two holding reads of the same length"
    );
    let run = Running::start(plan);
    eventually(DEADLINE, "first good reads", || {
        ["FT_IN", "PT_IN", "TT_IN"]
            .iter()
            .all(|p| run.good_count(p) >= 2)
    })
    .await;
    let connects = || {
        metric_value(
            "gaswatch_modbus_connects_total",
            &[("endpoint", &path), ("result", "ok")],
        )
    };
    let before = connects();
    let ft_good = run.good_count("FT_IN");
    sim.set_fault(1, Fault::DelayAt(20, Duration::from_millis(320)));
    eventually(
        DEADLINE,
        "PT_IN timed out 5 times, the session resynced as often, FT_IN read 5 times",
        || {
            run.samples_of("PT_IN")
                .iter()
                .filter(|s| s.quality == Quality::Bad && s.reason == Reason::Timeout)
                .count()
                >= 5
                && connects() >= before + 5.0
                && run.good_count("FT_IN") >= ft_good + 5
        },
    )
    .await;
    sim.set_fault(1, Fault::None);
    let good = run.good_count("PT_IN");
    eventually(DEADLINE, "PT_IN reads good again", || {
        run.good_count("PT_IN") >= good + 3
    })
    .await;
    for p in POINTS {
        all_good_values_were_served(&run, &sim, p);
    }
    run.stop().await;
    sim.stop().await;
}

/// Faults on unit 2 of a serial bus: its point gets the reason, unit 1 on
/// the same port keeps reading, nothing but reads reach the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_faults_on_one_unit_do_not_stop_the_other() {
    let (sim, path, _slave) = simulator_on_a_pty(&bus("pty3", &serial_link("PATH")));
    let run = Running::start(plan_of(&bus("pty3", &serial_link(&path))));
    eventually(DEADLINE, "first good reads", || {
        POINTS.iter().all(|p| run.good_count(p) >= 2)
    })
    .await;
    let faults: [(Fault, &[Reason]); 6] = [
        (Fault::Delay(Duration::from_millis(320)), &[Reason::Timeout]),
        (Fault::NoResponse, &[Reason::Timeout]),
        (
            Fault::Garbage,
            &[Reason::Malformed, Reason::Transport, Reason::Timeout],
        ),
        (Fault::Exception(2), &[Reason::Exception(2)]),
        (Fault::Exception(4), &[Reason::Exception(4)]),
        (Fault::Exception(0x0B), &[Reason::Exception(0x0B)]),
    ];
    for (fault, reasons) in faults {
        let seen = run.samples_of("X").len();
        sim.set_fault(2, fault);
        eventually(
            DEADLINE,
            &format!("X BAD with {reasons:?} under {fault:?}"),
            || {
                run.samples_of("X")[seen..]
                    .iter()
                    .any(|s| s.quality == Quality::Bad && reasons.contains(&s.reason))
            },
        )
        .await;
        let before = run.good_count("FT_IN");
        eventually(
            DEADLINE,
            "unit 1 keeps reading under a unit-2 fault",
            || run.good_count("FT_IN") >= before + 3,
        )
        .await;
        sim.set_fault(2, Fault::None);
    }
    let x = run.good_count("X");
    eventually(DEADLINE, "unit 2 recovers", || run.good_count("X") > x).await;
    for p in POINTS {
        all_good_values_were_served(&run, &sim, p);
    }
    let codes: BTreeSet<u8> = sim.function_codes().keys().copied().collect();
    assert_eq!(codes, BTreeSet::from([3, 4]), "only reads reach the bus");
    run.stop().await;
    sim.stop().await;
}

/// A USB adapter unplugged and plugged back: the config names a stable
/// symlink (as /dev/serial/by-id/... is); the adapter's device node goes
/// away (the pty closes) and comes back under another name behind the same
/// link. The points go BAD/STALE meanwhile, the poller reopens the port by
/// its configured path, and reads resume with exactly the served values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replugged_adapter_is_reopened_by_its_stable_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("usb-FTDI-port0");
    let (sim, path, slave) = simulator_on_a_pty(&bus("pty5", &serial_link("PATH")));
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    let run = Running::start(plan_of(&bus(
        "pty5",
        &serial_link(&link.display().to_string()),
    )));
    eventually(DEADLINE, "good reads before the unplug", || {
        POINTS.iter().all(|p| run.good_count(p) >= 3)
    })
    .await;

    // Unplugged: the device node is gone. The poller's port fails and
    // reopening it fails (the engine marks the points STALE by itself
    // meanwhile: the poller sends nothing while disconnected).
    let link_name = link.display().to_string();
    let failed_opens = || {
        metric_value(
            "gaswatch_modbus_connects_total",
            &[("endpoint", &link_name), ("result", "error")],
        )
    };
    let failed_before = failed_opens();
    sim.stop().await;
    drop(slave);
    eventually(
        DEADLINE,
        "the port cannot be reopened while unplugged",
        || failed_opens() >= failed_before + 2.0,
    )
    .await;

    // Plugged back: a new node behind the same link.
    let (sim, path2, _slave2) = simulator_on_a_pty(&bus("pty5", &serial_link("PATH")));
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(&path2, &link).expect("symlink again");
    let before: Vec<usize> = POINTS.iter().map(|p| run.good_count(p)).collect();
    eventually(
        Duration::from_secs(60),
        "good reads after the replug",
        || {
            POINTS
                .iter()
                .zip(&before)
                .all(|(p, b)| run.good_count(p) >= b + 3)
        },
    )
    .await;
    for p in POINTS {
        // Values after the replug come from the new simulator only.
        let served: Vec<f64> = sim
            .served()
            .iter()
            .filter(|s| s.point == p)
            .map(|s| s.value)
            .collect();
        let after: Vec<_> = run
            .samples_of(p)
            .into_iter()
            .filter(|s| s.quality == Quality::Good)
            .skip(before[POINTS.iter().position(|q| q == &p).unwrap_or(0)])
            .collect();
        assert!(!after.is_empty());
        for s in after {
            assert!(served.contains(&s.value), "{p}: {} never served", s.value);
        }
    }
    run.stop().await;
    sim.stop().await;
}

/// RTU over TCP (a serial-to-Ethernet converter in transparent mode): same
/// values, one connection for both units, only reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_two_units_one_connection_exact_values() {
    let sim_text = bus("rot", "host = \"127.0.0.1\"\nport = 502");
    let station = Station::from_config_str(&sim_text, &SimOptions::default()).expect("station");
    let sim = gaswatch_sim::serve_with(station, "127.0.0.1:0".parse().expect("addr"), Framing::Rtu)
        .await
        .expect("binds");
    let port = sim.local_addr().port();
    let text = bus(
        "rot",
        &format!("transport = \"rtu_over_tcp\"\nhost = \"127.0.0.1\"\nport = {port}"),
    );
    let run = Running::start(plan_of(&text));
    eventually(DEADLINE, "five good samples of every point", || {
        POINTS.iter().all(|p| run.good_count(p) >= 5)
    })
    .await;
    for p in POINTS {
        all_good_values_were_served(&run, &sim, p);
    }
    // A late answer on RTU over TCP: the connection is dropped and the line
    // waited out, like a serial port.
    sim.set_fault(1, Fault::DelayAt(20, Duration::from_millis(320)));
    eventually(DEADLINE, "PT_IN times out 3 times", || {
        run.samples_of("PT_IN")
            .iter()
            .filter(|s| s.reason == Reason::Timeout)
            .count()
            >= 3
    })
    .await;
    sim.set_fault(1, Fault::None);
    let good = run.good_count("PT_IN");
    eventually(DEADLINE, "unit 1 reads good again", || {
        run.good_count("PT_IN") >= good + 3
    })
    .await;
    for p in POINTS {
        all_good_values_were_served(&run, &sim, p);
    }
    let endpoint = format!("127.0.0.1:{port}");
    assert!(
        metric_value(
            "gaswatch_modbus_connects_total",
            &[("endpoint", &endpoint), ("result", "ok")]
        ) >= 2.0,
        "reconnected after the timeout"
    );
    let codes: BTreeSet<u8> = sim.function_codes().keys().copied().collect();
    assert_eq!(codes, BTreeSet::from([3, 4]), "only reads reach the device");
    run.stop().await;
    sim.stop().await;
}
