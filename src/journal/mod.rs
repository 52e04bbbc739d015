//! The alarm journal: every alarm event (transition, ack, shelve, re-alarm,
//! escalation) and every command reply, appended as one JSON line to a file
//! that only grows. It is written BEFORE the output is routed to the sinks
//! (write-ahead), synced with the spools, and read back at start to restore
//! each alarm's state and the sequence number, so sequence numbers keep
//! increasing across restarts and an unacknowledged alarm stays so.
//!
//! Invariants:
//! - Append only; a line torn by a crash (no trailing newline) is skipped on
//!   reading, counted and reported, and the next append starts a new line.
//! - Lines that do not parse are skipped and counted, never a panic.
//! - The file names alarms by their stable id, so a config change that
//!   reorders alarms restores them correctly (unknown ids are ignored).

use crate::engine::{EnginePlan, SavedAlarm};
use crate::model::{AlarmState, Annunciation, Output, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("alarm journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// An alarm event as the engine produced it.
    Event {
        seq: u64,
        ts_ns: i64,
        alarm_id: String,
        kind: String,
        priority: String,
        action: String,
        state: String,
        annunciation: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shelved_until_ns: Option<i64>,
        level: u8,
        realarms: u32,
        repeats: u32,
        chattering: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flood_parent: Option<u64>,
        value: Option<f64>,
    },
    /// An operator command and what became of it.
    Command {
        ts_ns: i64,
        request_id: String,
        alarm_id: String,
        operator: String,
        action: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        detail: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
}

impl Entry {
    pub fn ts_ns(&self) -> i64 {
        match self {
            Entry::Event { ts_ns, .. } | Entry::Command { ts_ns, .. } => *ts_ns,
        }
    }

    pub fn alarm_id(&self) -> &str {
        match self {
            Entry::Event { alarm_id, .. } | Entry::Command { alarm_id, .. } => alarm_id,
        }
    }
}

/// What reading a journal found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    /// The highest alarm sequence number written.
    pub seq: u64,
    /// Last known state per alarm id.
    pub alarms: BTreeMap<String, SavedAlarm>,
    /// Lines skipped (torn by a crash or unreadable).
    pub skipped: usize,
    pub entries: usize,
}

impl Recovered {
    /// The saved states keyed by alarm index in `plan` (unknown ids dropped).
    pub fn for_plan(&self, plan: &EnginePlan) -> Vec<(u32, SavedAlarm)> {
        self.alarms
            .iter()
            .filter_map(|(id, s)| plan.alarm_index(id).map(|i| (i, *s)))
            .collect()
    }
}

/// The default journal path for a spool directory.
pub fn default_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("alarms").join("journal.jsonl")
}

/// The append handle.
pub struct Journal {
    path: PathBuf,
    file: File,
    line: Vec<u8>,
}

impl Journal {
    /// Opens (creating) the journal, reads it back and positions at the end.
    pub fn open(path: &Path) -> Result<(Journal, Recovered), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let recovered = recover(read_entries_from(&mut file).map_err(io)?);
        // A torn last line: start the next entry on a fresh line.
        let len = file.seek(SeekFrom::End(0)).map_err(io)?;
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
            file.read_exact(&mut last).map_err(io)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(io)?;
            }
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                line: Vec::with_capacity(512),
            },
            recovered,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends every alarm event and command reply of `out`.
    pub fn append(&mut self, plan: &EnginePlan, out: &Output) -> Result<(), JournalError> {
        if out.alarms.is_empty() && out.replies.is_empty() {
            return Ok(());
        }
        self.line.clear();
        for e in &out.alarms {
            let Some(def) = plan.alarms.get(e.alarm as usize) else {
                continue;
            };
            let d = &e.detail;
            let entry = Entry::Event {
                seq: e.seq,
                ts_ns: e.ts.nanos(),
                alarm_id: def.id.clone(),
                kind: e.kind.code().to_string(),
                priority: e.priority.as_str().to_string(),
                action: e.action.as_str().to_string(),
                state: d.state.as_str().to_string(),
                annunciation: d.annunciation.as_str().to_string(),
                shelved_until_ns: d.shelved_until.map(Timestamp::nanos),
                level: d.level,
                realarms: d.realarms,
                repeats: d.repeats,
                chattering: d.chattering,
                flood_parent: d.flood_parent,
                value: e.value.is_finite().then_some(e.value),
            };
            push_line(&mut self.line, &entry);
        }
        for r in &out.replies {
            let c = &r.command;
            let entry = Entry::Command {
                ts_ns: c.ts.nanos(),
                request_id: c.request_id.clone(),
                alarm_id: c.alarm_id.clone(),
                operator: c.operator.clone(),
                action: c.action.as_str().to_string(),
                ok: r.refused.is_none(),
                error: r.refused.map(|x| x.as_str().to_string()),
                detail: r.detail.clone(),
                seq: r.seq,
            };
            push_line(&mut self.line, &entry);
        }
        self.file
            .write_all(&self.line)
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Makes appended entries durable.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

fn push_line(buf: &mut Vec<u8>, e: &Entry) {
    // Serializing strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut *buf, e).is_ok() {
        buf.push(b'\n');
    }
}

/// Parsed entries, plus the number of lines skipped.
pub fn read_entries(path: &Path) -> Result<(Vec<Entry>, usize), JournalError> {
    let mut f = File::open(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_entries_from(&mut f).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_entries_from(f: &mut File) -> std::io::Result<(Vec<Entry>, usize)> {
    f.seek(SeekFrom::Start(0))?;
    let mut entries = Vec::new();
    let mut skipped = 0;
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            skipped += 1; // torn by a crash
            break;
        }
        let text = &line[..line.len() - 1];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Entry>(text) {
            Ok(e) => entries.push(e),
            Err(_) => skipped += 1,
        }
    }
    Ok((entries, skipped))
}

fn recover((entries, skipped): (Vec<Entry>, usize)) -> Recovered {
    let mut r = Recovered {
        skipped,
        entries: entries.len(),
        ..Recovered::default()
    };
    for e in entries {
        let Entry::Event {
            seq,
            ts_ns,
            alarm_id,
            action,
            state,
            annunciation,
            shelved_until_ns,
            level,
            realarms,
            repeats,
            ..
        } = e
        else {
            continue;
        };
        r.seq = r.seq.max(seq);
        let prev_raised = r.alarms.get(&alarm_id).map(|s| s.raised_at);
        let raised_at = if action == "raise" {
            Timestamp(ts_ns)
        } else {
            prev_raised.unwrap_or(Timestamp(ts_ns))
        };
        r.alarms.insert(
            alarm_id,
            SavedAlarm {
                state: AlarmState::parse(&state).unwrap_or_default(),
                annunciation: Annunciation::parse(&annunciation).unwrap_or_default(),
                shelved_until: shelved_until_ns.map(Timestamp),
                level,
                realarms,
                repeats,
                raised_at,
            },
        );
    }
    r
}

#[cfg(test)]
mod tests;

/// The entries at or after `since_ns` (when given) for `alarm` (an exact
/// alarm id, or a prefix ending in `/`, e.g. `cg01/PT_OUT1/`), oldest first.
pub fn query<'a>(
    entries: &'a [Entry],
    since_ns: Option<i64>,
    alarm: Option<&str>,
) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| since_ns.is_none_or(|s| e.ts_ns() >= s))
        .filter(|e| {
            alarm.is_none_or(|a| {
                e.alarm_id() == a || (a.ends_with('/') && e.alarm_id().starts_with(a))
            })
        })
        .collect()
}

/// One human-readable line for `gaswatch alarms history`.
pub fn format_entry(e: &Entry) -> String {
    let t = |ns: i64| Timestamp(ns).to_rfc3339();
    match e {
        Entry::Event {
            seq,
            ts_ns,
            alarm_id,
            priority,
            action,
            state,
            annunciation,
            level,
            value,
            flood_parent,
            chattering,
            ..
        } => format!(
            "{} #{seq} {alarm_id} {action} -> {state} [{priority}, {annunciation}, level {level}]{}{}{}",
            t(*ts_ns),
            value.map(|v| format!(" value {v}")).unwrap_or_default(),
            flood_parent
                .map(|p| format!(" flood #{p}"))
                .unwrap_or_default(),
            if *chattering { " CHATTERING" } else { "" },
        ),
        Entry::Command {
            ts_ns,
            request_id,
            alarm_id,
            operator,
            action,
            ok,
            error,
            detail,
            seq,
        } => format!(
            "{} command {action} {alarm_id} by {operator} ({request_id}): {}{}{}",
            t(*ts_ns),
            if *ok { "applied" } else { "refused" },
            error
                .as_deref()
                .map(|e| format!(" {e}"))
                .unwrap_or_default(),
            if detail.is_empty() {
                seq.map(|s| format!(" as #{s}")).unwrap_or_default()
            } else {
                format!(": {detail}")
            },
        ),
    }
}
