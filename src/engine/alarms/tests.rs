//! Scripted sequences through the alarm state machine, with passed-in time.

use super::*;
use crate::model::Priority;

const S: i64 = 1_000_000_000;

fn def(kind: AlarmKind, limit: f64, deadband: f64) -> AlarmDef {
    AlarmDef {
        id: format!("s/P/{}", kind.code()),
        source: "P".into(),
        kind,
        priority: Priority::High,
        limit,
        deadband,
        mgmt: Default::default(),
    }
}

fn flood_def() -> AlarmDef {
    def(AlarmKind::Flood, 10.0, 0.0)
}

fn ts(s: i64) -> Timestamp {
    Timestamp(s * S)
}

fn cmd(alarm: &str, action: CommandAction, at: i64) -> AlarmCommand {
    AlarmCommand {
        request_id: "r1".into(),
        alarm_id: alarm.into(),
        operator: "li".into(),
        action,
        ts: ts(at),
        sent: None,
    }
}

fn actions(out: &[AlarmEvent]) -> Vec<(u32, AlarmAction, AlarmState)> {
    out.iter()
        .map(|e| (e.alarm, e.action, e.detail.state))
        .collect()
}

struct Rig {
    defs: Vec<AlarmDef>,
    policy: AlarmPolicy,
    st: AlarmStates,
    out: Vec<AlarmEvent>,
    health: Vec<AlarmHealth>,
}

impl Rig {
    fn new(defs: Vec<AlarmDef>, policy: AlarmPolicy) -> Rig {
        let st = AlarmStates::with_policy(defs.len(), 0, &policy);
        Rig {
            defs,
            policy,
            st,
            out: Vec::new(),
            health: Vec::new(),
        }
    }
    fn flood(&self) -> Option<u32> {
        self.defs
            .iter()
            .position(|d| d.kind == AlarmKind::Flood)
            .map(|i| i as u32)
    }
    fn eval(&mut self, i: u32, v: f64, at: i64) {
        let f = self.flood();
        self.st
            .evaluate(i, &self.defs, &self.policy, f, v, ts(at), &mut self.out);
    }
    fn tick(&mut self, at: i64) {
        let f = self.flood();
        self.st.tick(
            &self.defs,
            &self.policy,
            f,
            ts(at),
            &mut self.out,
            &mut self.health,
        );
    }
    fn cmd(&mut self, i: u32, action: CommandAction, at: i64) -> CommandReply {
        let c = cmd(&self.defs[i as usize].id, action, at);
        self.st
            .command(Some(i), &self.defs, &self.policy, &c, &mut self.out)
    }
}

#[test]
fn high_alarm_raises_above_limit_and_clears_below_deadband() {
    let mut r = Rig::new(
        vec![def(AlarmKind::High, 100.0, 5.0)],
        AlarmPolicy::default(),
    );
    for (i, v) in [90.0, 100.0, 101.0, 99.0, 96.0, 101.0, 94.9]
        .iter()
        .enumerate()
    {
        r.eval(0, *v, i as i64);
    }
    assert_eq!(
        actions(&r.out),
        [
            (0, AlarmAction::Raise, AlarmState::Unacked),
            (0, AlarmAction::Clear, AlarmState::RtnUnacked)
        ]
    );
    assert_eq!(r.out[0].ts, ts(2));
    assert_eq!((r.out[0].seq, r.out[1].seq), (1, 2));
}

#[test]
fn ack_rtn_and_latch_follow_isa_18_2() {
    let mut d = def(AlarmKind::SlamShut, 1.0, 0.0);
    d.mgmt.latch = true;
    d.mgmt.active_when = 1.0;
    let mut r = Rig::new(
        vec![d, def(AlarmKind::Low, 10.0, 1.0)],
        AlarmPolicy::default(),
    );
    // Latched SSD: raise, ack, clear -> latched, reset -> normal.
    r.eval(0, 1.0, 0);
    assert_eq!(
        r.cmd(0, CommandAction::Reset, 1).refused,
        Some(CommandRefusal::WrongState)
    );
    assert!(r.cmd(0, CommandAction::Ack, 2).refused.is_none());
    assert_eq!(
        r.cmd(0, CommandAction::Ack, 3).refused,
        Some(CommandRefusal::WrongState)
    );
    r.eval(0, 0.0, 4);
    assert_eq!(r.st.state(0), AlarmState::Latched);
    assert!(r.cmd(0, CommandAction::Reset, 5).refused.is_none());
    assert_eq!(r.st.state(0), AlarmState::Normal);
    // Non-latched: raise, clear (RTN unacked), ack -> normal.
    r.eval(1, 5.0, 6);
    r.eval(1, 12.0, 7);
    assert_eq!(r.st.state(1), AlarmState::RtnUnacked);
    assert!(r.cmd(1, CommandAction::Ack, 8).refused.is_none());
    assert_eq!(r.st.state(1), AlarmState::Normal);
    let seqs: Vec<u64> = r.out.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn slam_shut_escalates_through_the_chain_at_once() {
    let mut d = def(AlarmKind::SlamShut, 1.0, 0.0);
    d.mgmt.escalate_at_once = true;
    d.mgmt.active_when = 1.0;
    let mut r = Rig::new(vec![d], AlarmPolicy::default());
    r.eval(0, 1.0, 0);
    let got: Vec<(AlarmAction, u8)> = r.out.iter().map(|e| (e.action, e.detail.level)).collect();
    assert_eq!(
        got,
        [
            (AlarmAction::Raise, 0),
            (AlarmAction::Escalate, 1),
            (AlarmAction::Escalate, 2),
            (AlarmAction::Escalate, 3)
        ]
    );
    assert_eq!(r.policy.level_name(3), "duty_engineer");
}

#[test]
fn unacked_alarm_realarms_then_escalates_and_ack_stops_it() {
    let mut d = def(AlarmKind::HighHigh, 100.0, 1.0);
    d.mgmt.realarm_ns = 60 * S;
    let policy = AlarmPolicy {
        escalate_after_realarms: 2,
        ..AlarmPolicy::default()
    };
    let mut r = Rig::new(vec![d], policy);
    r.eval(0, 150.0, 0);
    for t in (10..=300).step_by(10) {
        r.tick(t);
        if t == 240 {
            assert!(r.cmd(0, CommandAction::Ack, 240).refused.is_none());
        }
    }
    let got: Vec<(i64, AlarmAction, u8, u32)> = r
        .out
        .iter()
        .map(|e| {
            (
                e.ts.nanos() / S,
                e.action,
                e.detail.level,
                e.detail.realarms,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (0, AlarmAction::Raise, 0, 0),
            (60, AlarmAction::ReAlarm, 0, 1),
            (120, AlarmAction::ReAlarm, 0, 2),
            (120, AlarmAction::Escalate, 1, 2),
            (180, AlarmAction::ReAlarm, 1, 3),
            (240, AlarmAction::ReAlarm, 1, 4),
            (240, AlarmAction::Escalate, 2, 4),
            (240, AlarmAction::Ack, 2, 4),
        ]
    );
}

#[test]
fn timed_shelve_expires_at_tick_and_shelved_alarms_are_still_evaluated() {
    let mut d = def(AlarmKind::High, 100.0, 1.0);
    d.mgmt.realarm_ns = 10 * S;
    let mut r = Rig::new(vec![d], AlarmPolicy::default());
    assert!(
        r.cmd(
            0,
            CommandAction::Shelve {
                duration_ns: 300 * S
            },
            0
        )
        .refused
        .is_none()
    );
    r.eval(0, 120.0, 10);
    // Shelved: no re-alarm while shelved, but the raise is an event.
    for t in (20..=290).step_by(10) {
        r.tick(t);
    }
    assert_eq!(
        r.out
            .iter()
            .map(|e| (e.action, e.detail.annunciation))
            .collect::<Vec<_>>(),
        [
            (AlarmAction::Shelve, Annunciation::Shelved),
            (AlarmAction::Raise, Annunciation::Shelved)
        ]
    );
    r.tick(300);
    assert_eq!(r.out.last().map(|e| e.action), Some(AlarmAction::Unshelve));
    r.tick(310);
    assert_eq!(r.out.last().map(|e| e.action), Some(AlarmAction::ReAlarm));
}

#[test]
fn shelve_validation() {
    let mut r = Rig::new(
        vec![def(AlarmKind::High, 100.0, 1.0)],
        AlarmPolicy::default(),
    );
    let too_long = CommandAction::Shelve {
        duration_ns: 9 * 3600 * S,
    };
    assert_eq!(
        r.cmd(0, too_long, 0).refused,
        Some(CommandRefusal::ShelveTooLong)
    );
    // One-shot needs an active alarm.
    let one_shot = CommandAction::Shelve { duration_ns: 0 };
    assert_eq!(
        r.cmd(0, one_shot, 0).refused,
        Some(CommandRefusal::WrongState)
    );
    // Sent 120 s ago for 60 s: expired on arrival.
    let mut c = cmd(
        "s/P/H",
        CommandAction::Shelve {
            duration_ns: 60 * S,
        },
        200,
    );
    c.sent = Some(ts(80));
    let reply = r.st.command(Some(0), &r.defs, &r.policy, &c, &mut r.out);
    assert_eq!(reply.refused, Some(CommandRefusal::ShelveExpired));
    assert_eq!(
        r.cmd(0, CommandAction::Unshelve, 0).refused,
        Some(CommandRefusal::WrongState)
    );
    let reply = r.st.command(None, &r.defs, &r.policy, &c, &mut r.out);
    assert_eq!(reply.refused, Some(CommandRefusal::UnknownAlarm));
    assert!(r.out.is_empty(), "refused commands change nothing");
    // One-shot ends when the alarm returns to normal.
    r.eval(0, 120.0, 300);
    assert!(r.cmd(0, one_shot, 301).refused.is_none());
    r.eval(0, 90.0, 302);
    let tail: Vec<_> = r.out.iter().rev().take(2).map(|e| e.action).collect();
    assert_eq!(tail, [AlarmAction::Unshelve, AlarmAction::Clear]);
}

#[test]
fn on_and_off_delay_need_sustained_conditions() {
    let mut d = def(AlarmKind::High, 100.0, 0.0);
    d.mgmt.on_delay_ns = 5 * S;
    d.mgmt.off_delay_ns = 3 * S;
    let mut r = Rig::new(vec![d], AlarmPolicy::default());
    // A 3 s excursion does not raise.
    for (t, v) in [
        (0, 101.0),
        (3, 101.0),
        (4, 99.0),
        (5, 101.0),
        (8, 101.0),
        (10, 101.0),
    ] {
        r.eval(0, v, t);
    }
    assert_eq!(
        actions(&r.out),
        [(0, AlarmAction::Raise, AlarmState::Unacked)]
    );
    assert_eq!(r.out[0].ts, ts(10));
    for (t, v) in [(11, 99.0), (12, 101.0), (13, 99.0), (15, 99.0), (16, 99.0)] {
        r.eval(0, v, t);
    }
    assert_eq!(r.out.len(), 2);
    assert_eq!(r.out[1].ts, ts(16));
}

#[test]
fn flood_groups_children_under_one_parent_and_ends_below_five() {
    let mut defs: Vec<AlarmDef> = (0..15)
        .map(|i| {
            let mut d = def(AlarmKind::High, 100.0, 1.0);
            d.id = format!("s/P{i}/H");
            d
        })
        .collect();
    defs.push(flood_def());
    let mut r = Rig::new(defs, AlarmPolicy::default());
    for i in 0..15 {
        r.eval(i, 120.0, i64::from(i));
    }
    let flood = r
        .out
        .iter()
        .find(|e| e.kind == AlarmKind::Flood)
        .expect("flood raised")
        .clone();
    assert_eq!(flood.action, AlarmAction::Raise);
    // The 11th activation starts the flood; parent first, then that child.
    let raises: Vec<&AlarmEvent> = r
        .out
        .iter()
        .filter(|e| e.kind != AlarmKind::Flood)
        .collect();
    assert!(raises[..10].iter().all(|e| e.detail.flood_parent.is_none()));
    assert!(
        raises[10..]
            .iter()
            .all(|e| e.detail.flood_parent == Some(flood.seq))
    );
    assert!(raises[10].seq == flood.seq + 1);
    r.tick(600 + 9); // activations at 10..=14 s remain: 5, not below 5
    assert!(
        !r.out
            .iter()
            .any(|e| e.kind == AlarmKind::Flood && e.action == AlarmAction::Clear)
    );
    r.tick(600 + 10); // 4 left: below 5
    let last = r.out.last().expect("event");
    assert_eq!(
        (last.kind, last.action),
        (AlarmKind::Flood, AlarmAction::Clear)
    );
    assert!(!r.st.in_flood());
}

#[test]
fn chattering_is_flagged_and_repeats_counted() {
    let mut r = Rig::new(
        vec![def(AlarmKind::High, 100.0, 0.0)],
        AlarmPolicy::default(),
    );
    for (t, v) in [(0, 101.0), (10, 99.0), (20, 101.0), (30, 99.0), (40, 101.0)] {
        r.eval(0, v, t);
    }
    let raises: Vec<(u32, bool)> = r
        .out
        .iter()
        .filter(|e| e.action == AlarmAction::Raise)
        .map(|e| (e.detail.repeats, e.detail.chattering))
        .collect();
    assert_eq!(raises, [(1, false), (2, false), (3, true)]);
    r.tick(50);
    assert_eq!(r.health.last().map(|h| h.chattering), Some(1));
    r.tick(200);
    assert_eq!(r.st.health(&r.defs, ts(200)).chattering, 0);
}

#[test]
fn health_reports_max_time_unacknowledged() {
    let mut r = Rig::new(
        vec![
            def(AlarmKind::High, 100.0, 0.0),
            def(AlarmKind::Low, 0.0, 0.0),
        ],
        AlarmPolicy::default(),
    );
    r.eval(0, 101.0, 10);
    r.eval(1, -1.0, 40);
    let h = r.st.health(&r.defs, ts(100));
    assert_eq!((h.unacked, h.standing, h.alarms_per_10min), (2, 2, 2));
    assert_eq!(h.max_unacked_s, 90.0);
}

#[test]
fn restore_keeps_state_and_sequence() {
    let mut r = Rig::new(
        vec![def(AlarmKind::High, 100.0, 1.0)],
        AlarmPolicy::default(),
    );
    r.st.resume_seq(41);
    r.st.restore(
        0,
        &SavedAlarm {
            state: AlarmState::Acked,
            annunciation: Annunciation::Shown,
            shelved_until: None,
            level: 1,
            realarms: 2,
            repeats: 5,
            raised_at: ts(0),
        },
    );
    r.eval(0, 90.0, 10);
    assert_eq!(
        actions(&r.out),
        [(0, AlarmAction::Clear, AlarmState::Normal)]
    );
    assert_eq!(r.out[0].seq, 42);
    assert_eq!(r.out[0].detail.repeats, 5);
}

#[test]
fn caller_decided_transitions_run_the_same_state_machine() {
    // The balance's 输差 and leak alarms decide raise/clear themselves and
    // go through `transition`: on-delay, shelving, ack and RTN as any alarm.
    let mut imb = def(AlarmKind::Imbalance, 2.0, 0.4);
    imb.mgmt.on_delay_ns = 5 * S;
    let mut r = Rig::new(
        vec![imb, def(AlarmKind::Leak, 5.0, 4.95)],
        AlarmPolicy::default(),
    );
    let (p, f) = (r.policy.clone(), r.flood());
    let tr = |r: &mut Rig, i: u32, raise: bool, clear: bool, at: i64| {
        r.st.transition(i, &r.defs, &p, f, raise, clear, 3.0, ts(at), &mut r.out);
    };
    // On-delay: the first raise decision is held, the confirmed one raises.
    tr(&mut r, 0, true, false, 0);
    assert!(r.out.is_empty());
    tr(&mut r, 0, true, false, 300);
    assert_eq!(
        actions(&r.out),
        [(0, AlarmAction::Raise, AlarmState::Unacked)]
    );
    // Neither raise nor clear (inside the window's uncertainty): no event.
    tr(&mut r, 0, false, false, 600);
    assert_eq!(r.out.len(), 1);
    tr(&mut r, 0, false, true, 900);
    assert_eq!(r.st.state(0), AlarmState::RtnUnacked);
    // Leak: shelved while active, still journaled, unshelved by its clear.
    r.out.clear();
    tr(&mut r, 1, true, false, 1000);
    assert!(
        r.cmd(1, CommandAction::Shelve { duration_ns: 0 }, 1001)
            .refused
            .is_none()
    );
    assert!(r.cmd(1, CommandAction::Ack, 1002).refused.is_none());
    tr(&mut r, 1, false, true, 1300);
    assert_eq!(
        actions(&r.out),
        [
            (1, AlarmAction::Raise, AlarmState::Unacked),
            (1, AlarmAction::Shelve, AlarmState::Unacked),
            (1, AlarmAction::Ack, AlarmState::Acked),
            (1, AlarmAction::Clear, AlarmState::Normal),
            (1, AlarmAction::Unshelve, AlarmState::Normal),
        ]
    );
    assert_eq!(r.out[3].detail.annunciation, Annunciation::Shelved);
}
