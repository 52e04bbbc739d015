//! The terminal view of the console (ratatui): stations on top (wrapped over
//! as many lines as they need, up to 10), standing alarms below (priority,
//! age, state, escalation level highlighted, flood groups collapsed; the
//! selected row marked `>>`), the last command replies at the bottom.
//! Keys: Up/Down (j/k) select, `a` ack, `s` shelve 1 h, `o` shelve one-shot,
//! `u` unshelve, `r` reset, `f` expand/collapse floods, `q` quit.

use super::model::{Applied, Console};
use super::{DispatchArgs, DispatchError, Message, command_json};
use crate::model::Timestamp;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap};
use rumqttc::{AsyncClient, QoS};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::mpsc;

pub async fn run(
    args: DispatchArgs,
    client: AsyncClient,
    mut rx: mpsc::Receiver<Message>,
) -> Result<(), DispatchError> {
    let (key_tx, mut keys) = mpsc::channel::<KeyCode>(64);
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => {
                    if let Ok(TermEvent::Key(k)) = event::read()
                        && k.kind == KeyEventKind::Press
                        && key_tx.blocking_send(k.code).is_err()
                    {
                        break;
                    }
                }
                Ok(false) => {
                    if key_tx.is_closed() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let mut terminal = ratatui::init();
    let mut console = Console::new(&args.prefix);
    let mut table = TableState::default().with_selected(Some(0));
    let mut log: VecDeque<String> = VecDeque::new();
    let mut expand = false;
    let stale_ns = i64::try_from(args.heartbeat.as_nanos() * 3).unwrap_or(i64::MAX);
    let mut redraw = tokio::time::interval(Duration::from_millis(500));
    let result = loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { break Ok(()) };
                apply(&mut console, &mut log, &m);
                // Take what else is waiting so a storm redraws once.
                while let Ok(m) = rx.try_recv() {
                    apply(&mut console, &mut log, &m);
                }
            }
            k = keys.recv() => {
                let Some(k) = k else { break Ok(()) };
                let rows = console.rows(expand);
                let sel = table.selected().unwrap_or(0).min(rows.len().saturating_sub(1));
                let cmd = match k {
                    KeyCode::Char('q') | KeyCode::Esc => break Ok(()),
                    KeyCode::Down | KeyCode::Char('j') => { table.select(Some((sel + 1).min(rows.len().saturating_sub(1)))); None }
                    KeyCode::Up | KeyCode::Char('k') => { table.select(Some(sel.saturating_sub(1))); None }
                    KeyCode::Char('f') => { expand = !expand; None }
                    KeyCode::Char('a') => Some(("ack", None)),
                    KeyCode::Char('s') => Some(("shelve", Some(3600))),
                    KeyCode::Char('o') => Some(("shelve", Some(0))),
                    KeyCode::Char('u') => Some(("unshelve", None)),
                    KeyCode::Char('r') => Some(("reset", None)),
                    _ => None,
                };
                if let (Some((action, dur)), Some(row)) = (cmd, rows.get(sel)) {
                    let topic = format!("{}/{}/commands", args.prefix, row.alarm.station);
                    let body = command_json(&row.alarm.alarm_id, &args.operator, action, dur);
                    let sent = client.try_publish(topic, QoS::AtLeastOnce, false, body);
                    log.push_front(format!("{} {action}: {}", row.alarm.alarm_id, if sent.is_ok() { "sent" } else { "NOT SENT (not connected)" }));
                    log.truncate(5);
                }
            }
            _ = redraw.tick() => {}
        }
        let now = Timestamp::now().nanos();
        if let Err(e) =
            terminal.draw(|f| draw(f, &console, &mut table, &log, expand, now, stale_ns))
        {
            break Err(DispatchError::Terminal(e));
        }
    };
    ratatui::restore();
    result
}

/// Applies one message; a command reply also goes to the log pane.
fn apply(console: &mut Console, log: &mut VecDeque<String>, m: &Message) {
    if let Applied::Reply(v) = console.apply(&m.topic, &m.payload, Timestamp::now().nanos()) {
        log.push_front(format!(
            "{} {} {} by {}: {}{}",
            v["alarm_id"].as_str().unwrap_or("?"),
            v["action"].as_str().unwrap_or("?"),
            if v["ok"].as_bool() == Some(true) {
                "ok"
            } else {
                "REFUSED"
            },
            v["operator"].as_str().unwrap_or("?"),
            v["error"].as_str().unwrap_or(""),
            v["detail"]
                .as_str()
                .map(|d| format!(" {d}"))
                .unwrap_or_default(),
        ));
        log.truncate(5);
    }
}

fn draw(
    f: &mut ratatui::Frame,
    c: &Console,
    table: &mut TableState,
    log: &VecDeque<String>,
    expand: bool,
    now: i64,
    stale_ns: i64,
) {
    let mut online = 0;
    let stations: Vec<String> = c
        .stations
        .iter()
        .map(|(id, s)| {
            let on = c.station_online(id, now, stale_ns);
            online += usize::from(on);
            format!(
                "{id}:{}({})",
                if on { "online" } else { "OFFLINE" },
                s.alarms
            )
        })
        .collect();
    let text = stations.join("  ");
    // Lines the list needs inside the borders once wrapped between
    // stations (at most 10).
    let inner = usize::from(f.area().width.saturating_sub(2)).max(1);
    let mut lines = 1u16;
    let mut used = 0usize;
    for s in &stations {
        let w = s.chars().count();
        if used > 0 && used + 2 + w > inner {
            lines += 1;
            used = w;
        } else {
            used += if used > 0 { 2 + w } else { w };
        }
    }
    let lines = lines.min(10);
    let [top, mid, bottom] = Layout::vertical([
        Constraint::Length(lines + 2),
        Constraint::Min(5),
        Constraint::Length(7),
    ])
    .areas(f.area());
    f.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!("Stations: {} ({online} online)", c.stations.len())),
        ),
        top,
    );
    let rows_data = c.rows(expand);
    // Drawing an empty table drops the selection: select the first row
    // again once there is one, so the row `a` acts on is always marked.
    match table.selected() {
        None if !rows_data.is_empty() => table.select(Some(0)),
        Some(i) if i >= rows_data.len() && !rows_data.is_empty() => {
            table.select(Some(rows_data.len() - 1))
        }
        _ => {}
    }
    let rows = rows_data.iter().map(|r| {
        let a = &r.alarm;
        let age = (now.saturating_sub(a.ts_ns) / 1_000_000_000).max(0);
        let color = match a.priority.as_str() {
            "critical" => Color::Magenta,
            "high" => Color::Red,
            "medium" => Color::Yellow,
            _ => Color::White,
        };
        let mut style = Style::default().fg(color);
        if a.escalated() {
            style = style.add_modifier(Modifier::BOLD | Modifier::REVERSED);
        }
        let id = if r.children > 0 {
            format!("{} [+{} grouped]", a.alarm_id, r.children)
        } else {
            a.alarm_id.clone()
        };
        Row::new(vec![
            a.priority.clone(),
            format!("{}m{:02}s", age / 60, age % 60),
            a.state.clone(),
            a.annunciation.clone(),
            if a.escalated() {
                format!("L{} {}", a.level, a.escalation)
            } else {
                String::new()
            },
            id,
            a.message.clone(),
        ])
        .style(style)
    });
    let t = Table::new(
        rows,
        [
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(18),
            Constraint::Length(36),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(vec![
        "priority", "age", "state", "shown", "escalation", "alarm", "message",
    ]))
    .row_highlight_style(Style::default().add_modifier(Modifier::UNDERLINED))
    .highlight_symbol(">> ")
    .highlight_spacing(HighlightSpacing::Always)
    .block(Block::default().borders(Borders::ALL).title(format!(
        "Standing alarms: {} (a ack, s shelve 1h, o one-shot, u unshelve, r reset, f floods, q quit)",
        rows_data.len()
    )));
    f.render_stateful_widget(t, mid, table);
    let lines: Vec<Line> = log.iter().map(|l| Line::from(l.as_str())).collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("Commands")),
        bottom,
    );
}
