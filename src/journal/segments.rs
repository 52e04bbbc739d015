//! Segment files of the alarm journal: naming, listing, reading, and which
//! old segments retention deletes (a pure decision over their sizes and ages).
//!
//! Layout beside the configured path `dir/journal.jsonl` (the current
//! segment): `dir/journal.000001.jsonl`, `dir/journal.000002.jsonl`, ... the
//! older segments, numbered in the order they were closed. A rotation in
//! progress writes `dir/journal.jsonl.tmp` first (see `Journal::rotate`).

use super::Entry;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A closed segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Archive {
    pub number: u64,
    pub path: PathBuf,
    pub bytes: u64,
    /// Time of its last entry (or of its closing), ns since the epoch.
    pub last_ns: i64,
}

/// `journal` and `jsonl` of `dir/journal.jsonl` (the extension may be empty).
fn stem_ext(active: &Path) -> (String, String) {
    let stem = active
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".to_string());
    let ext = active
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    (stem, ext)
}

/// The path of closed segment `number`.
pub fn archive_path(active: &Path, number: u64) -> PathBuf {
    let (stem, ext) = stem_ext(active);
    let name = if ext.is_empty() {
        format!("{stem}.{number:06}")
    } else {
        format!("{stem}.{number:06}.{ext}")
    };
    active.with_file_name(name)
}

/// Where a rotation writes the next segment before renaming it into place.
pub fn tmp_path(active: &Path) -> PathBuf {
    let mut name = active
        .file_name()
        .map(|s| s.to_os_string())
        .unwrap_or_else(|| "journal.jsonl".into());
    name.push(".tmp");
    active.with_file_name(name)
}

/// The closed segments of the journal at `active`, oldest first, as
/// `(number, path)`. A missing directory has none.
pub fn list_archives(active: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let dir = match active.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (stem, ext) = stem_ext(active);
    let prefix = format!("{stem}.");
    let suffix = if ext.is_empty() {
        String::new()
    } else {
        format!(".{ext}")
    };
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(mid) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(&suffix))
        else {
            continue;
        };
        if mid.is_empty() || !mid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = mid.parse::<u64>() {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Parsed entries of one open segment from its start, plus the number of
/// lines skipped (torn by a crash, or unreadable).
pub fn read_from(f: &mut File) -> std::io::Result<(Vec<Entry>, usize)> {
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

/// Which archives retention deletes at `now_ns`: every one whose last entry
/// is older than `retention_ns`, then the oldest while all segments together
/// (`active_bytes` plus the archives) exceed `max_bytes`. Returns indexes
/// into `archives` (oldest first). Deleting from the oldest end keeps the
/// journal restorable: every segment after the first starts with a snapshot.
pub fn to_delete(
    archives: &[Archive],
    active_bytes: u64,
    now_ns: i64,
    retention_ns: i64,
    max_bytes: u64,
) -> Vec<usize> {
    let cutoff = now_ns.saturating_sub(retention_ns);
    let mut total: u64 = active_bytes + archives.iter().map(|a| a.bytes).sum::<u64>();
    let mut out = Vec::new();
    for (i, a) in archives.iter().enumerate() {
        // Only a prefix: a newer archive never goes before an older one.
        if a.last_ns < cutoff || total > max_bytes {
            total -= a.bytes;
            out.push(i);
        } else {
            break;
        }
    }
    out
}
