//! No allocation per sample in steady state: a counting global allocator
//! proves that, once warmed up, `Engine::process` + `Engine::tick` on a whole
//! station batch and the line-protocol encoding of its samples into a reused
//! buffer allocate nothing at all.
//!
//! Why it matters: the engine task runs for months on small gateways; an
//! allocation per register is both the main CPU cost at high rates and a
//! source of fragmentation (RSS growth). The architecture contract
//! (src/engine/mod.rs) promises it; this test keeps the promise checked.
//!
//! Only allocations made by the thread that runs the measured code, while
//! counting is switched on, are counted, so the test harness's other threads
//! cannot disturb the count.

use gaswatch::config::Config;
use gaswatch::engine::{Engine, EnginePlan};
use gaswatch::model::{BlockId, DeviceId, Input, Output, Timestamp};
use gaswatch::sinks::influxdb::SamplePrefixes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

struct Counting;

thread_local! {
    /// Whether allocations of this thread are counted now.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocations counted on this thread (tests run in parallel threads).
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get) - before
}

/// A station of `devices` x `points` f32 points (CDAB on odd devices), a
/// meter per device (so the balance runs), limits on every fifth point with
/// one that raises and clears (so the alarm path runs) and a 10 s balance
/// window (so windows close during the measured cycles).
fn station(devices: usize, points: usize, meters: bool) -> Config {
    let mut s = String::from(
        "[station]\nid = \"alloc\"\nkind = \"city_gate\"\n[balance]\nwindow = \"10s\"\n[sinks.file]\ndir = \"x\"\n",
    );
    for d in 0..devices {
        let _ = write!(
            s,
            "[[devices]]\nid = \"d{d}\"\nhost = \"127.0.0.1\"\nunit_id = {}\n",
            d % 250 + 1
        );
        for p in 0..points {
            let order = if d % 2 == 1 { "CDAB" } else { "ABCD" };
            let _ = write!(
                s,
                "[[devices.points]]\nname = \"P{d}_{p}\"\nregister = \"holding\"\naddress = {}\ntype = \"f32\"\norder = \"{order}\"\nunit = \"kPa\"\n",
                p * 2
            );
        }
    }
    for d in 0..devices {
        let role = if d == 0 { "inlet" } else { "outlet" };
        if meters {
            let _ = write!(
                s,
                "[[meters]]\nname = \"M{d}\"\nrole = \"{role}\"\nflow = \"P{d}_0\"\n"
            );
        }
        for p in (1..points).step_by(5) {
            let _ = write!(s, "[[limits]]\npoint = \"P{d}_{p}\"\nh = 1e9\nl = -1e9\n");
        }
    }
    // Toggles between 1000 and 0 every cycle: raise, clear, raise, ...
    s.push_str("[[limits]]\npoint = \"P0_2\"\nh = 500.0\ndeadband = 1.0\n");
    Config::from_str_named(&s, Path::new("alloc-test")).expect("test config is valid")
}

/// f32 1000.0 is 0x447A0000; ABCD -> [0x447A, 0], CDAB -> [0, 0x447A].
fn registers(count: u16, cdab: bool, high: bool) -> Vec<u16> {
    let hi = if high { 0x447A } else { 0 };
    (0..count)
        .map(|i| match (i % 2 == 0, cdab) {
            (true, false) | (false, true) => hi,
            _ => 0,
        })
        .collect()
}

/// Counts of what 100 steady-state cycles produced, and their allocations.
struct Steady {
    samples: u64,
    alarms: u64,
    balances: u64,
    allocations: u64,
}

#[test]
fn engine_and_line_protocol_allocate_nothing_per_sample_in_steady_state() {
    let (devices, points) = (10, 30);
    let r = steady_state(devices, points, false);
    assert_eq!(r.samples, 100 * (devices * points) as u64);
    assert_eq!(
        r.alarms, 100,
        "the toggling limit raised or cleared every cycle"
    );
    assert_eq!(r.balances, 0);
    assert_eq!(
        r.allocations, 0,
        "allocations in 100 steady-state cycles of {} samples",
        r.samples
    );
}

/// Balance windows open and close (and the leak test's windows with them)
/// without allocating: closed windows' per-meter vectors are reused.
#[test]
fn with_a_balance_windows_close_without_allocating() {
    let (devices, points) = (10, 30);
    let r = steady_state(devices, points, true);
    assert_eq!(r.samples, 100 * (devices * points) as u64);
    assert_eq!(
        r.alarms, 100,
        "the toggling limit raised or cleared every cycle"
    );
    assert!(r.balances >= 9, "balance windows closed: {}", r.balances);
    assert!(
        r.allocations == 0,
        "{} allocations in 100 cycles of {} samples and {} balance windows",
        r.allocations,
        r.samples,
        r.balances
    );
}

fn steady_state(devices: usize, points: usize, meters: bool) -> Steady {
    let plan = Arc::new(EnginePlan::compile(&station(devices, points, meters)));
    let mut engine = Engine::new(Arc::clone(&plan), 0);
    // Two sets of inputs, so the toggling limit raises and clears.
    let inputs: Vec<Vec<Input>> = [true, false]
        .iter()
        .map(|&high| {
            (0..devices)
                .flat_map(|d| {
                    plan.devices[d]
                        .blocks
                        .iter()
                        .enumerate()
                        .map(move |(b, blk)| Input::Registers {
                            device: DeviceId(d as u32),
                            block: BlockId(b as u32),
                            ts: Timestamp(0),
                            regs: registers(blk.count, d % 2 == 1, high),
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect();
    let mut out = Output::default();
    let mut lines: Vec<u8> = Vec::new();
    // As the router encodes: each tag's measurement and tags built once.
    let prefixes = SamplePrefixes::new(&plan);
    let mut samples = 0u64;
    let mut alarms = 0u64;
    let mut balances = 0u64;

    let mut cycle = |t: i64, out: &mut Output, lines: &mut Vec<u8>, inputs: &mut Vec<Input>| {
        out.clear();
        lines.clear();
        for input in inputs.iter_mut() {
            if let Input::Registers { ts, .. } = input {
                *ts = Timestamp(t);
            }
            engine.process(input, out);
        }
        engine.tick(Timestamp(t), out);
        for s in &out.samples {
            prefixes.encode(lines, s);
        }
    };

    let mut inputs = inputs;
    let second = 1_000_000_000i64;
    // A realistic epoch, so line lengths (digits of the timestamp) stay
    // the same through warm-up and measurement.
    let epoch = 1_700_000_000 * second;
    // Warm-up: the reused buffers grow to their working size (balance
    // windows of 10 s so the balance output vector has grown too), and the
    // alarm-rate history covers its whole 10-minute window once, so its
    // ring buffer has reached its working size (it keeps its capacity).
    const WARM_UP: usize = 700;
    for i in 0..WARM_UP {
        let set = &mut inputs[i % 2];
        cycle(epoch + i as i64 * second, &mut out, &mut lines, set);
    }

    let measured = allocations_in(|| {
        for i in WARM_UP..WARM_UP + 100 {
            let set = &mut inputs[i % 2];
            cycle(epoch + i as i64 * second, &mut out, &mut lines, set);
            samples += out.samples.len() as u64;
            alarms += out.alarms.len() as u64;
            balances += out.balances.len() as u64;
        }
    });

    assert!(!lines.is_empty());
    Steady {
        samples,
        alarms,
        balances,
        allocations: measured,
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that counts nothing.
    let n = allocations_in(|| {
        let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(16));
        drop(v);
    });
    assert_eq!(n, 1);
}
