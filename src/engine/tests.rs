//! Engine tests through the public contract: config -> plan -> inputs -> outputs.

use super::*;
use crate::config::Config;
use crate::model::{AlarmAction, AlarmKind, BlockId, DeviceId, Input, ReadError};
use std::path::Path;

const S: i64 = 1_000_000_000;

const STATION: &str = r#"
[station]
id = "t1"
kind = "city_gate"

[[devices]]
id = "fc"
host = "127.0.0.1"
port = 5020
unit_id = 1
poll_interval = "1s"

[[devices.points]]
name = "FT_IN"
register = "holding"
address = 0
type = "f32"

[[devices.points]]
name = "PT_OUT"
register = "holding"
address = 2
type = "u16"
scale = 0.1
unit = "kPa"

[[devices.points]]
name = "FT_OUT"
register = "holding"
address = 3
type = "f32"
order = "CDAB"

[[meters]]
name = "IN"
role = "inlet"
flow = "FT_IN"

[[meters]]
name = "OUT"
role = "outlet"
flow = "FT_OUT"

[balance]
window = "60s"
limit_percent = 1.0

[[limits]]
point = "PT_OUT"
h = 1700.0
hh = 1750.0
deadband = 20.0

[sinks.file]
dir = "x"
"#;

fn engine() -> Engine {
    let c = Config::from_str_named(STATION, Path::new("test.toml")).expect("valid config");
    Engine::new(Arc::new(EnginePlan::compile(&c)), 0)
}

fn regs(inlet: f32, p_kpa: f64, outlet: f32) -> Vec<u16> {
    let i = inlet.to_bits();
    let o = outlet.to_bits();
    vec![
        (i >> 16) as u16,
        i as u16,
        (p_kpa * 10.0).round() as u16,
        o as u16,
        (o >> 16) as u16,
    ]
}

fn poll(e: &mut Engine, t: i64, r: Vec<u16>, out: &mut Output) {
    e.process(
        &Input::Registers {
            device: DeviceId(0),
            block: BlockId(0),
            ts: Timestamp(t),
            regs: r,
        },
        out,
    );
    e.tick(Timestamp(t), out);
}

#[test]
fn one_block_decodes_every_point_with_poll_timestamp() {
    let mut e = engine();
    let mut out = Output::default();
    poll(&mut e, 5 * S, regs(1000.0, 1500.0, 990.0), &mut out);
    let v: Vec<_> = out
        .samples
        .iter()
        .map(|s| (s.tag.0, s.value, s.quality, s.ts))
        .collect();
    assert_eq!(
        v,
        vec![
            (0, 1000.0, Quality::Good, Timestamp(5 * S)),
            (1, 1500.0, Quality::Good, Timestamp(5 * S)),
            (2, 990.0, Quality::Good, Timestamp(5 * S)),
        ]
    );
}

#[test]
fn pressure_alarm_raises_and_clears_with_deadband_only_on_good_data() {
    let mut e = engine();
    let mut out = Output::default();
    let mut events = Vec::new();
    for (t, p) in [
        (0, 1600.0),
        (1, 1710.0),
        (2, 1760.0),
        (3, 1740.0),
        (4, 1685.0),
        (5, 1679.0),
    ] {
        out.clear();
        poll(&mut e, t * S, regs(1000.0, p, 1000.0), &mut out);
        events.extend(out.alarms.iter().map(|a| (t, a.kind, a.action)));
    }
    assert_eq!(
        events,
        vec![
            (1, AlarmKind::High, AlarmAction::Raise),
            (2, AlarmKind::HighHigh, AlarmAction::Raise),
            (4, AlarmKind::HighHigh, AlarmAction::Clear),
            (5, AlarmKind::High, AlarmAction::Clear),
        ]
    );
    // A failed read neither clears nor raises.
    out.clear();
    e.process(
        &Input::ReadFailed {
            device: DeviceId(0),
            block: BlockId(0),
            ts: Timestamp(6 * S),
            error: ReadError::Exception(2),
        },
        &mut out,
    );
    assert!(out.alarms.is_empty());
    assert!(
        out.samples
            .iter()
            .all(|s| s.quality == Quality::Bad && !s.has_value())
    );
    assert_eq!(out.samples[0].reason, Reason::Exception(2));
}

#[test]
fn silence_turns_points_stale_once_and_never_resends_old_values() {
    let mut e = engine();
    let mut out = Output::default();
    poll(&mut e, 0, regs(1000.0, 1500.0, 1000.0), &mut out);
    out.clear();
    e.tick(Timestamp(S + S / 2), &mut out); // exactly 1.5 periods: not yet
    assert!(out.samples.is_empty());
    e.tick(Timestamp(2 * S), &mut out);
    assert_eq!(out.samples.len(), 3);
    assert!(
        out.samples
            .iter()
            .all(|s| s.quality == Quality::Stale && !s.has_value() && s.ts == Timestamp(2 * S))
    );
    out.clear();
    e.tick(Timestamp(10 * S), &mut out);
    assert!(out.samples.is_empty(), "stale is reported once");
}

#[test]
fn leak_raises_the_imbalance_alarm_and_data_loss_does_not() {
    let mut e = engine();
    let mut out = Output::default();
    let mut alarms = Vec::new();
    let mut balances = Vec::new();
    // Two minutes balanced, then a 5 % leak for three minutes.
    for t in 0..=300 {
        out.clear();
        let outlet = if t < 120 { 1000.0 } else { 950.0 };
        poll(&mut e, t * S, regs(1000.0, 1500.0, outlet), &mut out);
        alarms.extend(
            out.alarms
                .iter()
                .filter(|a| a.kind == AlarmKind::Imbalance)
                .map(|a| (t, a.action)),
        );
        balances.extend(out.balances.iter().copied());
    }
    assert_eq!(
        alarms,
        vec![(180, AlarmAction::Raise)],
        "raised at the end of the first leaking window"
    );
    assert!(
        (balances[2].imbalance_percent - 5.0).abs() < 1e-6,
        "{:?}",
        balances[2]
    );

    // Fresh engine: the outlet meter stops answering for a whole window. No
    // leak alarm (the device's communication-loss alarm is expected instead).
    let mut e = engine();
    let mut alarms = 0;
    for t in 0..=300 {
        out.clear();
        if (60..120).contains(&t) {
            e.process(
                &Input::ReadFailed {
                    device: DeviceId(0),
                    block: BlockId(0),
                    ts: Timestamp(t * S),
                    error: ReadError::Timeout,
                },
                &mut out,
            );
            e.tick(Timestamp(t * S), &mut out);
        } else {
            poll(&mut e, t * S, regs(1000.0, 1500.0, 1000.0), &mut out);
        }
        alarms += out
            .alarms
            .iter()
            .filter(|a| a.kind == AlarmKind::Imbalance)
            .count();
        for b in &out.balances {
            if b.start == Timestamp(60 * S) {
                assert_eq!(b.quality, Quality::Bad);
            }
        }
    }
    assert_eq!(alarms, 0);
}

#[test]
fn same_inputs_give_same_outputs() {
    let run = || {
        let mut e = engine();
        let mut all = Vec::new();
        let mut out = Output::default();
        for t in 0..200 {
            out.clear();
            let p = 1500.0 + (t as f64 * 0.7).sin() * 300.0;
            poll(&mut e, t * S, regs(1000.0 + t as f32, p, 990.0), &mut out);
            all.push(format!("{:?}", out));
        }
        all
    };
    assert_eq!(run(), run());
}

#[test]
fn reload_carries_active_alarms_by_id_without_raising_them_again() {
    let mut old = engine();
    let mut out = Output::default();
    poll(&mut old, S, regs(1000.0, 1760.0, 990.0), &mut out);
    let raised: Vec<_> = out.alarms.iter().map(|a| (a.kind, a.action)).collect();
    assert_eq!(
        raised,
        vec![
            (AlarmKind::HighHigh, AlarmAction::Raise),
            (AlarmKind::High, AlarmAction::Raise)
        ]
    );
    let seq = old.alarm_seq();

    // New config: HH removed, H kept (same id), a new L added.
    let text = STATION.replace("hh = 1750.0", "l = 100.0");
    let c = Config::from_str_named(&text, Path::new("new.toml")).expect("valid config");
    let mut new = Engine::new(Arc::new(EnginePlan::compile(&c)), 0);
    assert_eq!(new.carry_alarms_from(&old), 1);
    assert_eq!(new.alarm_seq(), seq);

    // Still high: no new event. Back to normal: one Clear with the next seq.
    out.clear();
    poll(&mut new, 2 * S, regs(1000.0, 1760.0, 990.0), &mut out);
    assert!(out.alarms.is_empty(), "{:?}", out.alarms);
    out.clear();
    poll(&mut new, 3 * S, regs(1000.0, 1500.0, 990.0), &mut out);
    let ev: Vec<_> = out
        .alarms
        .iter()
        .map(|a| (a.kind, a.action, a.seq))
        .collect();
    assert_eq!(ev, vec![(AlarmKind::High, AlarmAction::Clear, seq + 1)]);
}

#[test]
fn an_alarm_on_delay_does_not_hold_back_the_imbalance_alarm_of_a_closed_window() {
    // A closed window is already a confirmed judgement: the general on-delay
    // applies to sampled alarms, not to the balance.
    let text = STATION.replace(
        "[sinks.file]",
        "[alarms]\non_delay = \"5s\"\noff_delay = \"5s\"\n\n[sinks.file]",
    );
    let c = Config::from_str_named(&text, Path::new("test.toml")).expect("valid config");
    let mut e = Engine::new(Arc::new(EnginePlan::compile(&c)), 0);
    let mut out = Output::default();
    let mut raised = Vec::new();
    for t in 0..=300 {
        out.clear();
        let outlet = if t < 120 { 1000.0 } else { 950.0 };
        poll(&mut e, t * S, regs(1000.0, 1500.0, outlet), &mut out);
        raised.extend(
            out.alarms
                .iter()
                .filter(|a| a.kind == AlarmKind::Imbalance && a.action == AlarmAction::Raise)
                .map(|_| t),
        );
    }
    assert_eq!(raised.first(), Some(&180), "{raised:?}");
}

#[test]
fn reload_carries_the_open_balance_window_and_last_values() {
    // One run without a reload, one with a reload (new limit, same balance)
    // in the middle of a window: the same balance results, full coverage.
    let run = |reload_at: Option<i64>| {
        let mut e = engine();
        let mut out = Output::default();
        let mut balances = Vec::new();
        for t in 0..200 {
            if Some(t) == reload_at {
                let text = STATION.replace("hh = 1750.0", "hh = 1750.0\nl = 100.0");
                let c = Config::from_str_named(&text, Path::new("new.toml")).expect("config");
                let mut new = Engine::new(Arc::new(EnginePlan::compile(&c)), e.alarm_seq());
                new.carry_state_from(&e);
                assert_eq!(
                    new.current(TagId(0)),
                    e.current(TagId(0)),
                    "last value kept"
                );
                e = new;
            }
            out.clear();
            poll(&mut e, t * S, regs(1000.0, 1500.0, 990.0), &mut out);
            balances.extend(out.balances.iter().map(|b| (b.start, b.end, b.coverage)));
        }
        balances
    };
    let plain = run(None);
    assert!(plain.len() >= 2, "{plain:?}");
    assert_eq!(run(Some(90)), plain, "a reload at 90 s changed the windows");
    assert!(plain[1..].iter().all(|b| b.2 >= 0.999), "{plain:?}");

    // A changed balance (another window length) starts afresh: the 30 s
    // window joined at 100 s is partly covered.
    let mut e = engine();
    let mut out = Output::default();
    for t in 0..100 {
        poll(&mut e, t * S, regs(1000.0, 1500.0, 990.0), &mut out);
    }
    let text = STATION.replace("window = \"60s\"", "window = \"30s\"");
    let c = Config::from_str_named(&text, Path::new("new.toml")).expect("config");
    let mut new = Engine::new(Arc::new(EnginePlan::compile(&c)), e.alarm_seq());
    new.carry_state_from(&e);
    out.clear();
    for t in 100..125 {
        poll(&mut new, t * S, regs(1000.0, 1500.0, 990.0), &mut out);
    }
    let first = out.balances.first().expect("a window closed");
    assert_eq!(
        (first.start, first.end),
        (Timestamp(90 * S), Timestamp(120 * S))
    );
    assert!(first.coverage < 0.999, "{first:?}");
}

/// A rate-of-change alarm reads the change per minute since the previous
/// GOOD value of its point; a bad sample in between gives no rate.
#[test]
fn rate_of_change_alarm_uses_the_previous_good_value() {
    let text = STATION.replace(
        "[sinks.file]",
        "[[limits]]\npoint = \"FT_IN\"\nrate_per_min = 600.0\n\n[sinks.file]",
    );
    let c = Config::from_str_named(&text, Path::new("test.toml")).expect("valid config");
    let mut e = Engine::new(Arc::new(EnginePlan::compile(&c)), 0);
    let mut out = Output::default();
    let mut events = Vec::new();
    // 1000 -> 1005 in 1 s is 300/min; -> 1020 is 900/min; flat is 0/min.
    for (t, flow) in [
        (0, 1000.0),
        (1, 1005.0),
        (2, 1020.0),
        (3, 1020.0),
        (4, 1020.0),
    ] {
        out.clear();
        poll(&mut e, t * S, regs(flow, 1500.0, 1000.0), &mut out);
        events.extend(
            out.alarms
                .iter()
                .filter(|a| a.kind == AlarmKind::RateOfChange)
                .map(|a| (t, a.action, a.value)),
        );
    }
    assert_eq!(
        events.first().map(|e| (e.0, e.1)),
        Some((2, AlarmAction::Raise)),
        "{events:?}"
    );
    assert_eq!(events.first().map(|e| e.2), Some(900.0));
    assert!(
        events.iter().any(|e| e.1 == AlarmAction::Clear),
        "flat flow clears it: {events:?}"
    );
    // A failed read, then +30 two seconds after the last good value: 900/min
    // from the last GOOD value (not from the bad sample, which has none).
    let n = events.len();
    out.clear();
    e.process(
        &Input::ReadFailed {
            device: DeviceId(0),
            block: BlockId(0),
            ts: Timestamp(5 * S),
            error: ReadError::Exception(4),
        },
        &mut out,
    );
    out.clear();
    poll(&mut e, 6 * S, regs(1050.0, 1500.0, 1000.0), &mut out);
    let raised: Vec<_> = out
        .alarms
        .iter()
        .filter(|a| a.kind == AlarmKind::RateOfChange)
        .map(|a| (a.action, a.value))
        .collect();
    assert_eq!(
        raised,
        vec![(AlarmAction::Raise, 900.0)],
        "after {n} events"
    );
}
