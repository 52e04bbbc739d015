//! The poller and the engine against the simulator (`gaswatch-sim`, a Modbus
//! server written independently of the daemon's client and decoder): every
//! numeric type and byte order, the exception-02 split, and the read-only
//! safety check through every feature (the simulator counts every function
//! code it receives).

mod support;

use gaswatch::engine::EnginePlan;
use gaswatch::model::{Input, Quality, Reason};
use gaswatch::sources::modbus::poller::PollGrid;
use gaswatch_sim::{Fault, SimHandle, SimOptions, Station};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use support::modbus::{Running, plan_of};

const DEADLINE: Duration = Duration::from_secs(15);

/// Every numeric type, all four orders, scale and offset, bound to meters so
/// the simulator serves moving, asymmetric values (not zeros).
const TYPES: &str = r#"
[station]
id = "simt"
kind = "city_gate"

[[devices]]
id = "fc"
host = "127.0.0.1"
port = 502
unit_id = 1
poll_interval = "50ms"
timeout = "500ms"

[[devices.points]]
name = "FT_IN"
register = "holding"
address = 0
type = "f32"
order = "CDAB"
[[devices.points]]
name = "PT_IN"
register = "holding"
address = 2
type = "u32"
order = "DCBA"
scale = 0.01
[[devices.points]]
name = "TT_IN"
register = "holding"
address = 4
type = "i16"
order = "BADC"
scale = 0.01
[[devices.points]]
name = "FT_OUT"
register = "holding"
address = 5
type = "f64"
order = "BADC"
[[devices.points]]
name = "PT_OUT"
register = "holding"
address = 9
type = "u64"
order = "CDAB"
scale = 0.001
[[devices.points]]
name = "TT_OUT"
register = "holding"
address = 13
type = "i32"
scale = 0.001
[[devices.points]]
name = "FT_OUT2"
register = "input"
address = 0
type = "f32"
order = "DCBA"
[[devices.points]]
name = "PT_OUT2"
register = "input"
address = 2
type = "i64"
order = "DCBA"
scale = 0.001
[[devices.points]]
name = "TT_OUT2"
register = "input"
address = 6
type = "u16"
scale = 0.01
offset = -50.0

[[meters]]
name = "IN"
role = "inlet"
flow = "FT_IN"
pressure = "PT_IN"
temperature = "TT_IN"
[[meters]]
name = "OUT"
role = "outlet"
flow = "FT_OUT"
pressure = "PT_OUT"
temperature = "TT_OUT"
[[meters]]
name = "OUT2"
role = "outlet"
flow = "FT_OUT2"
pressure = "PT_OUT2"
temperature = "TT_OUT2"

[sinks.file]
dir = "unused"
"#;

async fn simulator(text: &str) -> SimHandle {
    let station = Station::from_config_str(text, &SimOptions::default())
        .unwrap_or_else(|e| panic!("simulator config: {e}"));
    gaswatch_sim::serve(station, "127.0.0.1:0".parse().expect("address"))
        .await
        .expect("simulator binds")
}

fn plan_for(text: &str, port: u16) -> Arc<EnginePlan> {
    plan_of(&text.replace("port = 502", &format!("port = {port}")))
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    support::modbus::eventually(DEADLINE, what, cond).await;
}

const TYPE_POINTS: [&str; 9] = [
    "FT_IN", "PT_IN", "TT_IN", "FT_OUT", "PT_OUT", "TT_OUT", "FT_OUT2", "PT_OUT2", "TT_OUT2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_decodes_to_exactly_what_the_simulator_served() {
    let sim = simulator(TYPES).await;
    let run = Running::start(plan_for(TYPES, sim.local_addr().port()));
    eventually("three good samples of every point", || {
        TYPE_POINTS.iter().all(|p| run.good_count(p) >= 3)
    })
    .await;
    let served = sim.served();
    for name in TYPE_POINTS {
        let values: Vec<f64> = served
            .iter()
            .filter(|s| s.point == name)
            .map(|s| s.value)
            .collect();
        let samples = run.samples_of(name);
        assert!(
            samples.iter().all(|s| s.quality == Quality::Good),
            "{name}: {samples:?}"
        );
        for s in samples {
            assert!(
                values.contains(&s.value),
                "{name}: decoded {} was never served (served {:?})",
                s.value,
                &values[values.len().saturating_sub(5)..]
            );
        }
        assert!(
            values.iter().any(|v| *v != 0.0),
            "{name}: the simulator served only zeros, which proves no byte order"
        );
    }
    sim.stop().await;
}

/// The daemon's config has a point the device lacks (`C`, register 2), in
/// the middle of a merged read. The block is split, C alone is BAD with
/// exception 02, and A, B, D keep reading good every cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_02_in_a_merged_read_isolates_the_bad_register_and_the_rest_keep_reading() {
    let device = r#"
[station]
id = "split"
kind = "city_gate"
[[devices]]
id = "rtu"
host = "127.0.0.1"
port = 502
unit_id = 1
poll_interval = "50ms"
timeout = "500ms"
[[devices.points]]
name = "A"
register = "holding"
address = 0
type = "u16"
[[devices.points]]
name = "B"
register = "holding"
address = 1
type = "u16"
[[devices.points]]
name = "D"
register = "holding"
address = 3
type = "f32"
[[devices.points]]
name = "E"
register = "holding"
address = 5
type = "u16"
[sinks.file]
dir = "unused"
"#;
    let daemon = device.replace(
        "[[devices.points]]\nname = \"D\"",
        "[[devices.points]]\nname = \"C\"\nregister = \"holding\"\naddress = 2\ntype = \"u16\"\n[[devices.points]]\nname = \"D\"",
    );
    let sim = simulator(device).await;
    let plan = plan_for(&daemon, sim.local_addr().port());
    assert_eq!(plan.devices[0].blocks.len(), 1, "A..E merge into one read");
    let run = Running::start(plan);
    eventually("A, B, D and E good 5 times each", || {
        ["A", "B", "D", "E"].iter().all(|p| run.good_count(p) >= 5)
    })
    .await;
    let c = run.samples_of("C");
    assert!(!c.is_empty());
    assert!(
        c.iter()
            .all(|s| s.quality == Quality::Bad && s.reason == Reason::Exception(2)),
        "{c:?}"
    );
    for p in ["A", "B", "D", "E"] {
        assert!(
            run.samples_of(p).iter().all(|s| s.quality == Quality::Good),
            "{p} was never blanked by C"
        );
    }
    // The split is remembered: after the first cycle no whole-block read is
    // sent to the engine any more, only parts.
    let inputs = run.inputs();
    assert!(
        inputs.iter().all(|i| matches!(
            i,
            Input::RegistersPart { .. } | Input::ReadFailedPart { .. }
        )),
        "{inputs:?}"
    );
    sim.stop().await;
}

/// Read-only toward the field: through bits, registers, splits, timeouts,
/// dropped connections and every exception code, the device only ever
/// receives function codes 01-04. On the way, each fault gives unit 2's
/// point the right reason and unit 1 on the same connection keeps reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_read_function_codes_ever_reach_the_device() {
    let sim_text = TYPES.replacen(
        "[[meters]]",
        "[[devices]]\nid = \"rtu2\"\nhost = \"127.0.0.1\"\nport = 502\nunit_id = 2\npoll_interval = \"50ms\"\ntimeout = \"100ms\"\n\
         pause_for = \"200ms\"\nconfig_error_retry = \"200ms\"\n\
         [[devices.points]]\nname = \"X\"\nregister = \"holding\"\naddress = 0\ntype = \"u16\"\n\n[[meters]]",
        1,
    );
    // The simulator has no bit points: the daemon's coils and discrete
    // inputs are answered with exception 02, which is fine for this test.
    let daemon = sim_text.replacen(
        "[[meters]]",
        "[[devices.points]]\nname = \"COIL\"\nregister = \"coil\"\naddress = 0\ntype = \"bit\"\n\
         [[devices.points]]\nname = \"DI\"\nregister = \"discrete_input\"\naddress = 3\ntype = \"bit\"\n\
         [[devices.points]]\nname = \"GAP\"\nregister = \"holding\"\naddress = 4\ntype = \"u16\"\n\n[[meters]]",
        1,
    );
    let sim = simulator(&sim_text).await;
    let run = Running::start(plan_for(&daemon, sim.local_addr().port()));
    eventually("first good reads", || run.good_count("X") >= 2).await;
    // Each fault, and the reason it must give unit 2's point X. A delay past
    // the timeout also desynchronises transaction ids when the late reply
    // lands; the poller reconnects instead of reading a stale answer.
    let faults: [(Fault, &[Reason]); 12] = [
        (Fault::Delay(Duration::from_millis(300)), &[Reason::Timeout]),
        (Fault::CloseConnection, &[Reason::Transport]),
        (Fault::Garbage, &[Reason::Transport, Reason::Malformed]),
        (Fault::NoResponse, &[Reason::Timeout]),
        (Fault::Exception(1), &[Reason::Exception(1)]),
        (Fault::Exception(2), &[Reason::Exception(2)]),
        (Fault::Exception(3), &[Reason::Exception(3)]),
        (Fault::Exception(4), &[Reason::Exception(4)]),
        (Fault::Exception(5), &[Reason::Exception(5)]),
        (Fault::Exception(6), &[Reason::Exception(6)]),
        (Fault::Exception(0x0A), &[Reason::Exception(0x0A)]),
        (Fault::Exception(0x0B), &[Reason::Exception(0x0B)]),
    ];
    for (fault, reasons) in faults {
        let seen = run.samples_of("X").len();
        sim.set_fault(2, fault);
        eventually(
            &format!("X is BAD with {reasons:?} under {fault:?}"),
            || {
                run.samples_of("X")[seen..]
                    .iter()
                    .any(|s| s.quality == Quality::Bad && reasons.contains(&s.reason))
            },
        )
        .await;
        let before = run.good_count("FT_IN");
        eventually("unit 1 keeps reading under a unit-2 fault", || {
            run.good_count("FT_IN") >= before + 2
        })
        .await;
    }
    sim.set_fault(2, Fault::None);
    let x = run.good_count("X");
    eventually("unit 2 recovers", || run.good_count("X") > x).await;
    let codes: BTreeSet<u8> = sim.function_codes().keys().copied().collect();
    assert_eq!(
        codes,
        BTreeSet::from([1, 2, 3, 4]),
        "only reads reach the field"
    );
    sim.stop().await;
}

/// TYPES plus a second unit `rtu2` (single point X) behind the same port.
fn with_unit2(extra_device_keys: &str) -> String {
    TYPES.replacen(
        "[[meters]]",
        &format!(
            "[[devices]]\nid = \"rtu2\"\nhost = \"127.0.0.1\"\nport = 502\nunit_id = 2\npoll_interval = \"50ms\"\ntimeout = \"100ms\"\n{extra_device_keys}\n\
             [[devices.points]]\nname = \"X\"\nregister = \"holding\"\naddress = 0\ntype = \"u16\"\n\n[[meters]]"
        ),
        1,
    )
}

/// Inputs about device index 1 (rtu2) that are reads (not pauses).
fn unit2_reads(run: &Running) -> usize {
    run.inputs()
        .iter()
        .filter(|i| {
            matches!(i, Input::Registers { device, .. } | Input::ReadFailed { device, .. }
                if device.0 == 1)
        })
        .count()
}

/// A unit that never answers is paused after 2 failed cycles: its point goes
/// STALE `device_paused`, it is not asked again during the pause, and unit 1
/// on the same connection keeps reading good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_unit_is_paused_and_its_points_go_stale_while_the_others_keep_reading() {
    let text = with_unit2("pause_after_failed_cycles = 2\npause_for = \"1h\"");
    let sim = simulator(&text).await;
    sim.set_fault(2, Fault::NoResponse);
    let run = Running::start(plan_for(&text, sim.local_addr().port()));
    eventually("X turns STALE device_paused", || {
        run.samples_of("X")
            .iter()
            .any(|s| s.quality == Quality::Stale && s.reason == Reason::DevicePaused)
    })
    .await;
    let x = run.samples_of("X");
    let timeouts = x.iter().filter(|s| s.reason == Reason::Timeout).count();
    assert_eq!(timeouts, 2, "paused after exactly 2 failed cycles: {x:?}");
    let reads = unit2_reads(&run);
    let good = run.good_count("FT_IN");
    eventually("unit 1 reads 20 more cycles", || {
        run.good_count("FT_IN") >= good + 20
    })
    .await;
    assert_eq!(unit2_reads(&run), reads, "no request to the paused unit");
    sim.stop().await;
}

/// Exception policy: 03 (configuration error) is retried slowly, 06 (busy)
/// with a doubling back-off; the point is BAD with the code as reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_retry_slowly_and_busy_backs_off() {
    for (code, most) in [(3u8, 1usize), (6, 8)] {
        let text = with_unit2("");
        let sim = simulator(&text).await;
        sim.set_fault(2, Fault::Exception(code));
        let run = Running::start(plan_for(&text, sim.local_addr().port()));
        eventually("unit 1 reads 40 cycles", || run.good_count("FT_IN") >= 40).await;
        let x = run.samples_of("X");
        assert!(!x.is_empty());
        assert!(
            x.iter()
                .all(|s| s.quality == Quality::Bad && s.reason == Reason::Exception(code)),
            "{x:?}"
        );
        let n = unit2_reads(&run);
        assert!(
            (1..=most).contains(&n),
            "exception {code:02X}: {n} requests to unit 2 while unit 1 read 40 cycles"
        );
        drop(run);
        sim.stop().await;
    }
}

/// Poll groups: a slow group (4 poll cycles) is read once every 4 cycles of
/// the fast points, and its two blocks are staggered into different cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_poll_group_reads_every_fourth_cycle_staggered() {
    let text = r#"
[station]
id = "groups"
kind = "city_gate"
[[devices]]
id = "plc"
host = "127.0.0.1"
port = 502
unit_id = 1
poll_interval = "50ms"
timeout = "500ms"
[[devices.groups]]
name = "totals"
interval = "200ms"
[[devices.points]]
name = "F"
register = "holding"
address = 0
type = "u16"
[[devices.points]]
name = "S1"
register = "holding"
address = 10
type = "u32"
group = "totals"
[[devices.points]]
name = "S2"
register = "input"
address = 0
type = "u16"
group = "totals"
[sinks.file]
dir = "unused"
"#;
    let sim = simulator(text).await;
    let plan = plan_for(text, sim.local_addr().port());
    let stale = |n: &str| plan.tag_info(plan.tag(n).expect("tag")).stale_after_ns;
    assert_eq!(stale("F"), 75_000_000, "1.5 x 50 ms");
    assert_eq!(stale("S1"), 300_000_000, "1.5 x the group's 200 ms");
    let run = Running::start(Arc::clone(&plan));
    eventually("40 fast reads", || run.good_count("F") >= 40).await;
    // Cycles, as the sequence of inputs: each cycle starts with F's block.
    let f_block = plan.devices[0]
        .blocks
        .iter()
        .position(|b| b.every == 1)
        .expect("fast block");
    let inputs = run.inputs();
    let mut cycles: Vec<Vec<u32>> = Vec::new();
    for i in &inputs {
        if let Input::Registers { block, .. } = i {
            if block.0 as usize == f_block {
                cycles.push(Vec::new());
            } else if let Some(c) = cycles.last_mut() {
                c.push(block.0);
            }
        }
    }
    let complete = &cycles[..cycles.len() - 1];
    assert!(complete.len() >= 39);
    for (n, c) in complete.iter().enumerate() {
        assert!(
            c.len() <= 1,
            "cycle {n} read {c:?}: slow blocks not staggered"
        );
    }
    let slow_reads: usize = complete.iter().map(Vec::len).sum();
    let expected = complete.len() * 2 / 4;
    assert!(
        slow_reads.abs_diff(expected) <= 2,
        "{slow_reads} slow reads in {} cycles, expected about {expected}",
        complete.len()
    );
    sim.stop().await;
}

/// Overruns: a slow poll group whose block takes 2.5 poll intervals to
/// answer. The cycle that reads it overruns; the two grid ticks it covered
/// are skipped and counted (`gaswatch_modbus_overruns_total`), never run
/// back to back to catch up, so the fast point's reads are never closer
/// than its interval; the slow group stays on its own 4-tick grid. Runs on
/// tokio's paused clock (the simulator's delay is a tokio sleep), so the
/// counts and spacings are exact, not timing-dependent.
#[tokio::test(start_paused = true)]
async fn overrunning_cycles_are_skipped_and_counted_never_bunched() {
    let text = r#"
[station]
id = "overrun"
kind = "city_gate"
[[devices]]
id = "ovr-plc"
host = "127.0.0.1"
port = 502
unit_id = 1
poll_interval = "100ms"
timeout = "1s"
[[devices.groups]]
name = "totals"
interval = "400ms"
[[devices.points]]
name = "F"
register = "holding"
address = 0
type = "u16"
[[devices.points]]
name = "S"
register = "holding"
address = 40
type = "u32"
group = "totals"
[sinks.file]
dir = "unused"
"#;
    let sim = simulator(text).await;
    sim.set_fault(1, Fault::DelayAt(40, Duration::from_millis(250)));
    let plan = plan_for(text, sim.local_addr().port());
    let block_of = |point: &str| {
        let tag = plan.tag(point).expect("tag");
        plan.devices[0]
            .blocks
            .iter()
            .position(|b| b.points.iter().any(|p| p.tag == tag))
            .expect("block") as u32
    };
    let (f_block, s_block) = (block_of("F"), block_of("S"));
    assert_ne!(f_block, s_block);
    let run = Running::start(Arc::clone(&plan));
    let reads = |block: u32| -> Vec<tokio::time::Instant> {
        run.inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(t, i)| match i {
                Input::Registers { block: b, .. } if b.0 == block => Some(*t),
                _ => None,
            })
            .collect()
    };
    // Paused time: let the virtual clock run until S was read 6 times.
    let mut waited = Duration::ZERO;
    while reads(s_block).len() < 6 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
        assert!(
            waited < Duration::from_secs(60),
            "S read {:?}",
            reads(s_block)
        );
    }
    let (f, s) = (reads(f_block), reads(s_block));
    let interval = Duration::from_millis(100);
    for pair in f.windows(2) {
        assert!(
            pair[1] - pair[0] >= interval,
            "F read {:?} after the previous one: bunched",
            pair[1] - pair[0]
        );
    }
    for pair in s.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            Duration::from_millis(400),
            "the slow group stays on its 4-tick grid: {s:?}"
        );
    }
    // Each slow cycle (250 ms from a tick) covers the next two ticks: both
    // skipped and counted, none caught up.
    let overruns =
        support::modbus::metric_value("gaswatch_modbus_overruns_total", &[("device", "ovr-plc")]);
    assert_eq!(overruns, 2.0 * s.len() as f64, "F {f:?}\nS {s:?}");
    // Between two S reads (ticks n and n+4): ticks n+1, n+2 skipped, F alone
    // at n+3, F then S at n+4.
    assert_eq!(f.len(), 2 * s.len() - 1 + usize::from(f.last() > s.last()));
    drop(run);
    sim.stop().await;
}

/// `n` gateways, one unit each (unit ids 1..=n), polled every second; ports
/// are placeholders 1000 + i until [`staggered_station`] binds them.
fn gateways(n: usize, modbus: &str) -> String {
    let mut text = format!("[station]\nid = \"stag\"\nkind = \"city_gate\"\n{modbus}\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[devices]]\nid = \"gw{i}\"\nhost = \"127.0.0.1\"\nport = {}\nunit_id = {}\n\
             poll_interval = \"1s\"\ntimeout = \"500ms\"\n\
             [[devices.points]]\nname = \"P{i}\"\nregister = \"holding\"\naddress = 0\ntype = \"u16\"\n",
            1000 + i,
            i + 1
        ));
    }
    text + "[sinks.file]\ndir = \"unused\"\n"
}

/// One simulator listener per gateway; the config with their ports.
async fn staggered_station(text: &str, n: usize) -> (Vec<SimHandle>, String) {
    let mut sims = Vec::new();
    let mut bound = text.to_string();
    for i in 0..n {
        let sim = simulator(text).await;
        bound = bound.replace(
            &format!("port = {}\n", 1000 + i),
            &format!("port = {}\n", sim.local_addr().port()),
        );
        sims.push(sim);
    }
    (sims, bound)
}

/// Per device (plan order): the tokio times of its register reads.
fn reads_by_device(run: &Running) -> Vec<Vec<tokio::time::Instant>> {
    let mut by = vec![Vec::new(); run.plan.devices.len()];
    for (t, i) in run.inputs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if let Input::Registers { device, .. } = i {
            by[device.0 as usize].push(*t);
        }
    }
    by
}

/// Asserts that `times` holds one read per tick of `ticks`, each at most
/// `slack` after its tick (times printed relative to `start`).
fn assert_one_read_per_tick(
    id: &str,
    times: &[tokio::time::Instant],
    ticks: &[tokio::time::Instant],
    slack: Duration,
    start: tokio::time::Instant,
) {
    let rel = |v: &[tokio::time::Instant]| v.iter().map(|t| *t - start).collect::<Vec<_>>();
    assert_eq!(
        times.len(),
        ticks.len(),
        "{id}: reads at {:?}, ticks at {:?}",
        rel(times),
        rel(ticks)
    );
    for (t, tick) in times.iter().zip(ticks) {
        assert!(
            *t >= *tick && *t - *tick < slack,
            "{id}: read at {:?}, its tick at {:?}",
            *t - start,
            *tick - start
        );
    }
}

/// Runs the paused clock until `until` (tokio time).
async fn run_until(until: tokio::time::Instant) {
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stagger (issue #9): twelve gateways with the same 1 s interval are not
/// all polled on one tick. Each one's first read comes at the first tick of
/// its own grid (its link's phase; the smallest at start, so start-up is not
/// delayed), the first reads spread over the second, and each gateway is
/// then read exactly once per interval. Paused clock: the times are tokio's
/// virtual time, exact up to the timer's 1 ms granularity.
#[tokio::test(start_paused = true)]
async fn links_are_polled_on_their_own_phases_spread_over_the_interval() {
    const N: usize = 12;
    let (sims, text) = staggered_station(&gateways(N, ""), N).await;
    let plan = plan_of(&text);
    let start = tokio::time::Instant::now();
    let run = Running::start(Arc::clone(&plan));
    let grid = PollGrid::new(&plan, start);
    run_until(start + Duration::from_millis(3_500)).await;
    let reads = reads_by_device(&run);
    let mut firsts = Vec::new();
    for (d, times) in plan.devices.iter().zip(&reads) {
        let due = grid.first_due(d, start);
        assert!(due < start + Duration::from_secs(1), "{}", d.id);
        let first = *times
            .first()
            .unwrap_or_else(|| panic!("{} never read", d.id));
        assert!(
            first >= due && first - due < Duration::from_millis(5),
            "{}: first read {:?} after start, its tick {:?}",
            d.id,
            first - start,
            due - start
        );
        firsts.push(first);
        // Ticks at due, due + 1 s, due + 2 s, due + 3 s (< 3.5 s): never two
        // in one interval, none skipped.
        let expected = if due + Duration::from_secs(3) < start + Duration::from_millis(3_500) {
            4
        } else {
            3
        };
        assert_eq!(times.len(), expected, "{}: {times:?}", d.id);
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap > Duration::from_millis(995) && gap < Duration::from_millis(1_005),
                "{}: reads {gap:?} apart",
                d.id
            );
        }
    }
    let earliest = firsts.iter().min().copied().unwrap_or(start);
    let latest = firsts.iter().max().copied().unwrap_or(start);
    assert!(
        earliest - start < Duration::from_millis(5),
        "the first link polls at start, not {:?} later",
        earliest - start
    );
    // Twelve hashed phases inside 100 ms: about 1 in 10^10.
    assert!(
        latest - earliest > Duration::from_millis(100),
        "first reads spread over {:?} only",
        latest - earliest
    );
    drop(run);
    for s in sims {
        s.stop().await;
    }
}

/// `[modbus] stagger = false`: every gateway is read on the grid aligned at
/// start, all together, once per interval (time-aligned snapshots).
#[tokio::test(start_paused = true)]
async fn stagger_false_polls_every_link_together_at_start() {
    const N: usize = 6;
    let (sims, text) = staggered_station(&gateways(N, "[modbus]\nstagger = false"), N).await;
    let plan = plan_of(&text);
    let start = tokio::time::Instant::now();
    let run = Running::start(Arc::clone(&plan));
    run_until(start + Duration::from_millis(2_500)).await;
    let ticks: Vec<_> = (0..3u32)
        .map(|k| start + Duration::from_secs(1) * k)
        .collect();
    for (d, times) in plan.devices.iter().zip(reads_by_device(&run)) {
        assert_one_read_per_tick(&d.id, &times, &ticks, Duration::from_millis(5), start);
    }
    drop(run);
    for s in sims {
        s.stop().await;
    }
}

/// A config reload restarts the pollers (on the daemon's grid, from the
/// moment the old ones stopped): every gateway keeps its phase, and no
/// interval is read twice or skipped, wherever in the interval the reload
/// falls. Before the grid, restarted pollers read every device at once: one
/// interval read twice, and the phases would start over.
#[tokio::test(start_paused = true)]
async fn a_reload_keeps_every_links_phase_and_reads_each_interval_once() {
    const N: usize = 8;
    let (sims, text) = staggered_station(&gateways(N, ""), N).await;
    let plan = plan_of(&text);
    // The reloaded config: other timeouts, same devices and points.
    let reloaded = plan_of(&text.replace("timeout = \"500ms\"", "timeout = \"400ms\""));
    assert_eq!(reloaded.devices[0].timeout, Duration::from_millis(400));
    let start = tokio::time::Instant::now();
    let grid = PollGrid::new(&plan, start);
    let mut run = Running::start_on(Arc::clone(&plan), grid.clone(), start);
    // Reloads at odd moments: mid-interval, and twice within one interval.
    let mut stops = Vec::new();
    for at in [1_370u64, 2_910, 3_020] {
        run_until(start + Duration::from_millis(at)).await;
        stops.push(run.restart_on(Arc::clone(&reloaded), grid.clone()).await - start);
    }
    run_until(start + Duration::from_millis(6_500)).await;
    for (d, times) in plan.devices.iter().zip(reads_by_device(&run)) {
        let due = grid.first_due(d, start);
        let ticks: Vec<_> = (0..7u32)
            .map(|k| due + Duration::from_secs(1) * k)
            .filter(|t| *t < start + Duration::from_millis(6_500))
            .collect();
        let id = format!("{} (reloads at {stops:?})", d.id);
        assert_one_read_per_tick(&id, &times, &ticks, Duration::from_millis(5), start);
    }
    drop(run);
    for s in sims {
        s.stop().await;
    }
}

/// A reload while a link is busy: four units behind one gateway, each
/// answer taking 100 ms, so a cycle takes 400 ms and a reload lands while
/// some units still wait for their turn and one is mid-read. The new poller
/// takes over the ticks the old one left unfinished: every unit is still
/// read once per interval, none skipped (the cut read is made again).
#[tokio::test(start_paused = true)]
async fn a_reload_on_a_busy_link_skips_no_units_tick() {
    let mut text = String::from("[station]\nid = \"busy\"\nkind = \"city_gate\"\n");
    for u in 1..=4 {
        text.push_str(&format!(
            "[[devices]]\nid = \"u{u}\"\nhost = \"127.0.0.1\"\nport = 502\nunit_id = {u}\n\
             poll_interval = \"1s\"\ntimeout = \"500ms\"\n\
             [[devices.points]]\nname = \"B{u}\"\nregister = \"holding\"\naddress = 40\ntype = \"u16\"\n"
        ));
    }
    text.push_str("[sinks.file]\ndir = \"unused\"\n");
    let sim = simulator(&text).await;
    for u in 1..=4 {
        sim.set_fault(u, Fault::DelayAt(40, Duration::from_millis(100)));
    }
    let plan = plan_for(&text, sim.local_addr().port());
    let reloaded = plan_for(
        &text.replace("timeout = \"500ms\"", "timeout = \"450ms\""),
        sim.local_addr().port(),
    );
    let start = tokio::time::Instant::now();
    let grid = PollGrid::new(&plan, start);
    let mut run = Running::start_on(Arc::clone(&plan), grid.clone(), start);
    // 150 ms into the second cycle: u1 read, u2 mid-read, u3 and u4 waiting.
    run_until(start + Duration::from_millis(1_150)).await;
    run.restart_on(Arc::clone(&reloaded), grid.clone()).await;
    run_until(start + Duration::from_millis(3_900)).await;
    let reads = reads_by_device(&run);
    // Ticks at 0, 1, 2 and 3 s; the units follow each other on the link.
    let ticks: Vec<_> = (0..4u32)
        .map(|k| start + Duration::from_secs(1) * k)
        .collect();
    for (d, times) in plan.devices.iter().zip(&reads) {
        assert_one_read_per_tick(&d.id, times, &ticks, Duration::from_millis(800), start);
    }
    drop(run);
    sim.stop().await;
}
