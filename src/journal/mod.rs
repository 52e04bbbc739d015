//! The alarm journal: every alarm event (transition, ack, shelve, re-alarm,
//! escalation) and every command reply, appended as one JSON line to a file
//! that only grows. It is written right AFTER the output is in the sink
//! spools (alarm records handed to the OS), synced with them, and read back
//! at start to restore each alarm's state and the sequence number, so
//! sequence numbers keep increasing across restarts and an unacknowledged
//! alarm stays so. That order means a crash can leave the journal one batch
//! behind the spools (those alarms are raised again after the restart, a
//! duplicate for consumers) but never ahead (an alarm the state says was
//! raised while no sink has it).
//!
//! Rotation: the journal is a series of segments (see `segments.rs`): the
//! current one at the configured path and closed ones numbered beside it.
//! A new segment starts once the current one is `segment_bytes` big or
//! `segment_age` old, and its FIRST line is a snapshot of every alarm's
//! state and the sequence number. Retention deletes the oldest closed
//! segments (older than `retention`, or beyond `max_bytes` in all).
//!
//! Invariants:
//! - Append only; a line torn by a crash (no trailing newline) is skipped on
//!   reading, counted and reported, and the next append starts a new line.
//! - Lines that do not parse are skipped and counted, never a panic.
//! - The file names alarms by their stable id, so a config change that
//!   reorders alarms restores them correctly (unknown ids are ignored).
//! - Restored state never depends on a deleted segment: every segment but
//!   the oldest starts with a snapshot equal to what reading all segments
//!   before it gives (the journal keeps that state in memory as it writes),
//!   and retention deletes only from the oldest end.
//! - A rotation is crash-safe: the next segment is written and synced as
//!   `<path>.tmp`, then the current one is renamed to its number and the
//!   temp file to `<path>`, then the directory is synced. A start-up that
//!   finds `<path>` empty while older segments exist writes a fresh
//!   snapshot; a leftover temp file is removed.
//! - The request ids of journaled commands are remembered (the most recent
//!   [`REMEMBERED_COMMANDS`]), so a command the broker delivers again after a
//!   crash or reconnect is recognised and not applied twice.

mod segments;

pub use segments::{Archive, archive_path, list_archives};

use crate::config::alarms::JournalRotation;
use crate::engine::{EnginePlan, SavedAlarm};
use crate::model::{AlarmState, Annunciation, Output, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// How many recent command request ids are remembered to recognise a
/// command delivered again.
pub const REMEMBERED_COMMANDS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("alarm journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// When segments are cut and deleted (from `[alarms.journal_rotation]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotation {
    pub segment_bytes: u64,
    pub segment_age_ns: i64,
    pub retention_ns: i64,
    pub max_bytes: u64,
}

impl Rotation {
    pub fn from_config(r: &JournalRotation) -> Rotation {
        let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Rotation {
            segment_bytes: r.segment_bytes,
            segment_age_ns: ns(r.segment_age),
            retention_ns: ns(r.retention),
            max_bytes: r.max_bytes,
        }
    }
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation::from_config(&JournalRotation::default())
    }
}

/// One alarm's state in a [`Entry::Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotAlarm {
    pub state: String,
    pub annunciation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelved_until_ns: Option<i64>,
    pub level: u8,
    pub realarms: u32,
    pub repeats: u32,
    pub raised_at_ns: i64,
    /// The seq of the alarm's last event (what its retained message carries).
    #[serde(default)]
    pub last_seq: u64,
}

impl SnapshotAlarm {
    fn of(s: &SavedAlarm, last_seq: u64) -> SnapshotAlarm {
        SnapshotAlarm {
            last_seq,
            state: s.state.as_str().to_string(),
            annunciation: s.annunciation.as_str().to_string(),
            shelved_until_ns: s.shelved_until.map(Timestamp::nanos),
            level: s.level,
            realarms: s.realarms,
            repeats: s.repeats,
            raised_at_ns: s.raised_at.nanos(),
        }
    }

    fn saved(&self) -> SavedAlarm {
        SavedAlarm {
            state: AlarmState::parse(&self.state).unwrap_or_default(),
            annunciation: Annunciation::parse(&self.annunciation).unwrap_or_default(),
            shelved_until: self.shelved_until_ns.map(Timestamp),
            level: self.level,
            realarms: self.realarms,
            repeats: self.repeats,
            raised_at: Timestamp(self.raised_at_ns),
        }
    }
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
    /// The first line of every segment after the first: the state of every
    /// alarm the journal knows and the sequence number, as reading all
    /// earlier segments gives them.
    Snapshot {
        seq: u64,
        /// When the segment was started.
        ts_ns: i64,
        alarms: BTreeMap<String, SnapshotAlarm>,
    },
}

impl Entry {
    pub fn ts_ns(&self) -> i64 {
        match self {
            Entry::Event { ts_ns, .. } | Entry::Command { ts_ns, .. } => *ts_ns,
            Entry::Snapshot { ts_ns, .. } => *ts_ns,
        }
    }

    /// The alarm the entry is about; empty for a snapshot.
    pub fn alarm_id(&self) -> &str {
        match self {
            Entry::Event { alarm_id, .. } | Entry::Command { alarm_id, .. } => alarm_id,
            Entry::Snapshot { .. } => "",
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
    /// Segments read (closed ones plus the current one).
    pub segments: usize,
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

/// The state the journal's entries add up to; kept up to date while
/// appending, so a snapshot can be written at any time.
#[derive(Debug, Clone, Default)]
struct Tracked {
    seq: u64,
    alarms: BTreeMap<String, SavedAlarm>,
    /// Per alarm, the seq of its last event.
    last_seq: BTreeMap<String, u64>,
    commands: HashSet<String>,
    command_order: VecDeque<String>,
}

impl Tracked {
    fn apply(&mut self, e: &Entry) {
        match e {
            Entry::Event {
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
            } => {
                self.seq = self.seq.max(*seq);
                let prev_raised = self.alarms.get(alarm_id).map(|s| s.raised_at);
                let raised_at = if action == "raise" {
                    Timestamp(*ts_ns)
                } else {
                    prev_raised.unwrap_or(Timestamp(*ts_ns))
                };
                let saved = SavedAlarm {
                    state: AlarmState::parse(state).unwrap_or_default(),
                    annunciation: Annunciation::parse(annunciation).unwrap_or_default(),
                    shelved_until: shelved_until_ns.map(Timestamp),
                    level: *level,
                    realarms: *realarms,
                    repeats: *repeats,
                    raised_at,
                };
                match self.alarms.get_mut(alarm_id) {
                    Some(s) => *s = saved,
                    None => {
                        self.alarms.insert(alarm_id.clone(), saved);
                    }
                }
                match self.last_seq.get_mut(alarm_id) {
                    Some(s) => *s = (*s).max(*seq),
                    None => {
                        self.last_seq.insert(alarm_id.clone(), *seq);
                    }
                }
            }
            Entry::Command {
                request_id, seq, ..
            } => {
                if let Some(s) = seq {
                    self.seq = self.seq.max(*s);
                }
                self.remember(request_id);
            }
            Entry::Snapshot { seq, alarms, .. } => {
                self.seq = self.seq.max(*seq);
                self.alarms = alarms
                    .iter()
                    .map(|(id, a)| (id.clone(), a.saved()))
                    .collect();
                self.last_seq = alarms
                    .iter()
                    .map(|(id, a)| (id.clone(), a.last_seq))
                    .collect();
            }
        }
    }

    /// Remembers a command's request id; false when it was already known.
    fn remember(&mut self, request_id: &str) -> bool {
        if self.commands.contains(request_id) {
            return false;
        }
        self.commands.insert(request_id.to_string());
        self.command_order.push_back(request_id.to_string());
        while self.command_order.len() > REMEMBERED_COMMANDS {
            if let Some(old) = self.command_order.pop_front() {
                self.commands.remove(&old);
            }
        }
        true
    }

    fn snapshot(&self, ts_ns: i64) -> Entry {
        Entry::Snapshot {
            seq: self.seq,
            ts_ns,
            alarms: self
                .alarms
                .iter()
                .map(|(id, s)| {
                    let last = self.last_seq.get(id).copied().unwrap_or(0);
                    (id.clone(), SnapshotAlarm::of(s, last))
                })
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.seq == 0 && self.alarms.is_empty()
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
    entries: Vec<Entry>,
    rotation: Rotation,
    tracked: Tracked,
    /// Size of the current segment.
    active_bytes: u64,
    /// When the current segment was started (its snapshot, else its first entry).
    active_since_ns: i64,
    /// Entries in the current segment other than its snapshot.
    active_entries: usize,
    /// Closed segments, oldest first.
    archives: Vec<Archive>,
    /// Appended since the last sync.
    dirty: bool,
}

impl Journal {
    /// Opens (creating) the journal with the default rotation; see [`Journal::open_with`].
    pub fn open(path: &Path) -> Result<(Journal, Recovered), JournalError> {
        Journal::open_with(path, Rotation::default(), Timestamp::now())
    }

    /// Opens (creating) the journal at `path`, reads every segment back
    /// (oldest first), applies retention at `now` and positions at the end.
    pub fn open_with(
        path: &Path,
        rotation: Rotation,
        now: Timestamp,
    ) -> Result<(Journal, Recovered), JournalError> {
        let io = io_err(path);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(&io)?;
        }
        // A rotation that did not finish: its segment is rebuilt below.
        let tmp = segments::tmp_path(path);
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        let mut tracked = Tracked::default();
        let mut rec = Recovered::default();
        let mut archives = Vec::new();
        for (number, apath) in list_archives(path).map_err(&io)? {
            let (bytes, (entries, skipped)) = {
                let aio = io_err(&apath);
                let mut f = File::open(&apath).map_err(&aio)?;
                let bytes = f.metadata().map_err(&aio)?.len();
                (bytes, segments::read_from(&mut f).map_err(&aio)?)
            };
            rec.skipped += skipped;
            rec.entries += entries.len();
            rec.segments += 1;
            let last_ns = entries.iter().map(Entry::ts_ns).max().unwrap_or(0);
            for e in &entries {
                tracked.apply(e);
            }
            archives.push(Archive {
                number,
                path: apath,
                bytes,
                last_ns,
            });
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(&io)?;
        let (entries, skipped) = segments::read_from(&mut file).map_err(&io)?;
        rec.skipped += skipped;
        rec.entries += entries.len();
        rec.segments += 1;
        for e in &entries {
            tracked.apply(e);
        }
        let active_entries = entries
            .iter()
            .filter(|e| !matches!(e, Entry::Snapshot { .. }))
            .count();
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
            line: Vec::with_capacity(512),
            entries: Vec::new(),
            rotation,
            tracked,
            active_bytes: 0,
            active_since_ns: entries.first().map_or(now.nanos(), Entry::ts_ns),
            active_entries,
            archives,
            dirty: false,
        };
        let mut len = journal.file.seek(SeekFrom::End(0)).map_err(&io)?;
        if len > 0 {
            // A torn last line: start the next entry on a fresh line.
            let mut last = [0u8; 1];
            journal.file.seek(SeekFrom::Start(len - 1)).map_err(&io)?;
            journal.file.read_exact(&mut last).map_err(&io)?;
            if last[0] != b'\n' {
                journal.file.write_all(b"\n").map_err(&io)?;
                len += 1;
            }
        }
        if entries.is_empty() && !journal.tracked.is_empty() {
            // Nothing readable in the current segment (new after an
            // unfinished rotation, or only a torn line) while older
            // segments hold state: start it with the snapshot, so it
            // never depends on them.
            journal.line.clear();
            push_line(&mut journal.line, &journal.tracked.snapshot(now.nanos()));
            journal.file.write_all(&journal.line).map_err(&io)?;
            journal.file.sync_data().map_err(&io)?;
            len += journal.line.len() as u64;
            journal.active_since_ns = now.nanos();
        }
        journal.active_bytes = len;
        rec.seq = journal.tracked.seq;
        rec.alarms = journal.tracked.alarms.clone();
        journal.apply_retention(now)?;
        Ok((journal, rec))
    }

    /// The current segment's path (the configured one).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closed segments still on disk, oldest first.
    pub fn archives(&self) -> &[Archive] {
        &self.archives
    }

    /// The highest sequence number journaled.
    pub fn seq(&self) -> u64 {
        self.tracked.seq
    }

    /// Records that a command with this request id is being applied; false
    /// when the journal already holds (or was just told about) it: the
    /// broker delivered it again, and it must not be applied twice.
    pub fn first_delivery(&mut self, request_id: &str) -> bool {
        self.tracked.remember(request_id)
    }

    /// Appends every alarm event and command reply of `out`.
    pub fn append(&mut self, plan: &EnginePlan, out: &Output) -> Result<(), JournalError> {
        if out.alarms.is_empty() && out.replies.is_empty() {
            return Ok(());
        }
        self.entries.clear();
        for e in &out.alarms {
            let Some(def) = plan.alarms.get(e.alarm as usize) else {
                continue;
            };
            let d = &e.detail;
            self.entries.push(Entry::Event {
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
            });
        }
        for r in &out.replies {
            let c = &r.command;
            self.entries.push(Entry::Command {
                ts_ns: c.ts.nanos(),
                request_id: c.request_id.clone(),
                alarm_id: c.alarm_id.clone(),
                operator: c.operator.clone(),
                action: c.action.as_str().to_string(),
                ok: r.refused.is_none(),
                error: r.refused.map(|x| x.as_str().to_string()),
                detail: r.detail.clone(),
                seq: r.seq,
            });
        }
        self.write_entries()
    }

    /// Writes `self.entries` as one append and folds them into the state.
    fn write_entries(&mut self) -> Result<(), JournalError> {
        self.line.clear();
        for e in &self.entries {
            push_line(&mut self.line, e);
        }
        // The state follows what was attempted: the engine applied it either
        // way, and the next snapshot must agree with the engine.
        for e in &self.entries {
            self.tracked.apply(e);
        }
        self.active_entries += self.entries.len();
        self.dirty = true;
        self.file
            .write_all(&self.line)
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.active_bytes += self.line.len() as u64;
        Ok(())
    }

    /// Makes appended entries durable (nothing to do when none were appended).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if !self.dirty {
            return Ok(());
        }
        self.file.sync_data().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.dirty = false;
        Ok(())
    }

    /// The first half of [`Journal::sync`], for group commit: the entries
    /// are already in the kernel (every append is one `write`), so this
    /// only takes a duplicate handle of the current segment, whose
    /// [`JournalSync::run`] makes them durable on another thread while
    /// appends go on. `None` when nothing was appended since the last sync.
    /// If that run fails, call [`Journal::sync_failed`] so the next sync
    /// tries again.
    pub fn begin_sync(&mut self) -> Result<Option<JournalSync>, JournalError> {
        if !self.dirty {
            return Ok(None);
        }
        let file = self.file.try_clone().map_err(|source| JournalError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.dirty = false;
        Ok(Some(JournalSync {
            file,
            path: self.path.clone(),
        }))
    }

    /// A [`JournalSync`] failed: what it covered is not known to be
    /// durable, so the next sync runs even with no new entry.
    pub fn sync_failed(&mut self) {
        self.dirty = true;
    }

    /// Whether [`Journal::maintain`] at `now` would start a new segment
    /// (which syncs inline: the caller makes the sink spools durable first,
    /// so the journal is never ahead of them on disk).
    pub fn rotation_due(&self, now: Timestamp) -> bool {
        let due = self.active_bytes >= self.rotation.segment_bytes
            || now.nanos().saturating_sub(self.active_since_ns) >= self.rotation.segment_age_ns;
        due && self.active_entries > 0
    }

    /// Rotation and retention, called periodically with the current time:
    /// starts a new segment when the current one is too big or too old (and
    /// holds more than its snapshot), then deletes what retention allows.
    /// Returns whether a new segment was started.
    pub fn maintain(&mut self, now: Timestamp) -> Result<bool, JournalError> {
        let rotated = self.rotation_due(now);
        if rotated {
            self.rotate(now)?;
        }
        self.apply_retention(now)?;
        Ok(rotated)
    }

    /// Closes the current segment under the next number and starts a new
    /// one whose first line is the snapshot (see the module notes on crash safety).
    pub fn rotate(&mut self, now: Timestamp) -> Result<(), JournalError> {
        self.sync()?;
        let number = self.archives.last().map_or(1, |a| a.number + 1);
        let archive = archive_path(&self.path, number);
        let tmp = segments::tmp_path(&self.path);
        self.line.clear();
        push_line(&mut self.line, &self.tracked.snapshot(now.nanos()));
        {
            let tio = io_err(&tmp);
            let mut f = File::create(&tmp).map_err(&tio)?;
            f.write_all(&self.line).map_err(&tio)?;
            f.sync_all().map_err(&tio)?;
        }
        std::fs::rename(&self.path, &archive).map_err(io_err(&archive))?;
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            // The renames are durable once the directory is synced.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        self.archives.push(Archive {
            number,
            path: archive,
            bytes: self.active_bytes,
            last_ns: now.nanos(),
        });
        self.active_bytes = self.line.len() as u64;
        self.active_since_ns = now.nanos();
        self.active_entries = 0;
        Ok(())
    }

    /// Deletes the closed segments retention no longer keeps.
    fn apply_retention(&mut self, now: Timestamp) -> Result<(), JournalError> {
        let gone = segments::to_delete(
            &self.archives,
            self.active_bytes,
            now.nanos(),
            self.rotation.retention_ns,
            self.rotation.max_bytes,
        );
        let n = gone.len();
        for a in self.archives.iter().take(n) {
            match std::fs::remove_file(&a.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&a.path)(e)),
            }
        }
        self.archives.drain(..n);
        Ok(())
    }
}

/// The fsync a [`Journal::begin_sync`] still owes, on a duplicate handle of
/// the segment (a rotation meanwhile renames the file; the handle still
/// syncs the same inode).
#[derive(Debug)]
pub struct JournalSync {
    file: File,
    path: PathBuf,
}

impl JournalSync {
    /// fdatasync of the segment: every entry appended before the
    /// [`Journal::begin_sync`] that made this is durable once it returns `Ok`.
    pub fn run(self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(|source| JournalError::Io {
            path: self.path,
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

/// Every entry of the journal at `path`, closed segments first (oldest
/// first), then the current one; plus the number of lines skipped.
/// Snapshots are included (see [`query`], which leaves them out).
pub fn read_entries(path: &Path) -> Result<(Vec<Entry>, usize), JournalError> {
    let mut entries = Vec::new();
    let mut skipped = 0;
    let mut paths: Vec<PathBuf> = list_archives(path)
        .map_err(io_err(path))?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    paths.push(path.to_path_buf());
    let last = paths.len() - 1;
    for (i, p) in paths.iter().enumerate() {
        let mut f = match File::open(p) {
            Ok(f) => f,
            // Deleted by retention meanwhile; a missing current segment is an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && i < last => continue,
            Err(e) => return Err(io_err(p)(e)),
        };
        let (mut e, s) = segments::read_from(&mut f).map_err(io_err(p))?;
        entries.append(&mut e);
        skipped += s;
    }
    Ok((entries, skipped))
}

#[cfg(test)]
mod tests;

/// The events and commands at or after `since_ns` (when given) for `alarm`
/// (an exact alarm id, or a prefix ending in `/`, e.g. `cg01/PT_OUT1/`),
/// oldest first. Segment snapshots are left out.
pub fn query<'a>(
    entries: &'a [Entry],
    since_ns: Option<i64>,
    alarm: Option<&str>,
) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| !matches!(e, Entry::Snapshot { .. }))
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
        Entry::Snapshot {
            seq, ts_ns, alarms, ..
        } => format!(
            "{} segment snapshot: {} alarms, seq {seq}",
            t(*ts_ns),
            alarms.len()
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
