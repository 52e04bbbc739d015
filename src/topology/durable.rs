//! Group commit for the engine task: what the engine task wrote (the sink
//! spools, the file sink, the alarm journal, a capture) is handed to the
//! kernel ON the engine task, and the fsyncs run on a blocking thread, so an
//! input that raises an alarm never waits behind a disk sync to be routed
//! and published.
//!
//! Invariants:
//! - One sync runs at a time; a sync covers everything handed over before it
//!   started. A request while one runs ([`DiskSync::request`], a receipt)
//!   starts the next one as soon as it finishes.
//! - Order inside one sync: the spools and the file sink first, the alarm
//!   journal last, so on disk the journal is never ahead of the spools (see
//!   `Emitter::emit` and the journal's module notes).
//! - A receipt (an MQTT source message, a dispatcher's command) is confirmed
//!   only after a sync that STARTED after its output was stored finished
//!   `Ok`: durable before acknowledged. When that sync fails, the receipt is
//!   dropped unconfirmed and the broker delivers the message again.
//! - A journal sync that failed (or did not run because a spool sync failed
//!   first) marks the journal dirty again, so the next sync retries it.

use super::route::{FlushJob, Router};
use crate::journal::{Journal, JournalSync};
use crate::model::Receipt;
use std::fs::File;
use std::path::PathBuf;
use tokio::task::JoinHandle;
use tracing::error;

/// What a sync job reports back.
struct Outcome {
    result: Result<(), String>,
    /// The journal's entries handed over are not known to be durable.
    journal_unsynced: bool,
}

/// The running sync and the receipts waiting for one.
#[derive(Default)]
pub struct DiskSync {
    running: Option<JoinHandle<Outcome>>,
    /// Receipts the running sync covers.
    covered: Vec<Receipt>,
    /// Receipts of stored output handed over after the running sync started.
    waiting: Vec<Receipt>,
    /// A flush asked for while a sync was running.
    wanted: bool,
    /// The last sync did not make the journal's handed-over entries durable.
    journal_unsynced: bool,
    /// A capture file handed over while a sync ran: synced by the next one.
    capture: Option<(File, PathBuf)>,
}

impl DiskSync {
    /// No sync is running.
    pub fn idle(&self) -> bool {
        self.running.is_none()
    }

    /// Receipts of output that is stored (routed and journaled); they are
    /// confirmed once a sync that starts from now on finished.
    pub fn wait_for(&mut self, receipts: &mut Vec<Receipt>) {
        self.waiting.append(receipts);
    }

    /// Starts a sync now when none runs, else right after the running one.
    pub fn request(
        &mut self,
        router: &mut Router,
        journal: &mut Journal,
        capture: Option<(File, PathBuf)>,
    ) {
        if self.idle() {
            self.start(router, journal, capture);
        } else {
            self.wanted = true;
            if capture.is_some() {
                // A newer handle of the same file covers everything before it.
                self.capture = capture;
            }
        }
    }

    /// Hands everything to the kernel and spawns the fsyncs (must be idle).
    fn start(
        &mut self,
        router: &mut Router,
        journal: &mut Journal,
        capture: Option<(File, PathBuf)>,
    ) {
        debug_assert!(self.idle());
        self.wanted = false;
        let older = self.capture.take();
        let capture = capture.or(older);
        let job = match router.begin_flush() {
            Ok(job) => job,
            Err(e) => {
                error!(error = %e, "Cannot flush the spool to disk; MQTT messages stay unacknowledged.");
                self.waiting.clear();
                return;
            }
        };
        let jsync = match journal.begin_sync() {
            Ok(j) => j,
            Err(e) => {
                error!(error = %e, "Cannot sync the alarm journal; MQTT messages stay unacknowledged.");
                self.waiting.clear();
                None
            }
        };
        if job.is_empty() && jsync.is_none() && capture.is_none() {
            // Nothing handed over since the last sync, which has finished:
            // what these receipts need is durable already.
            self.waiting.drain(..).for_each(Receipt::confirm);
            return;
        }
        self.covered = std::mem::take(&mut self.waiting);
        self.running = Some(tokio::task::spawn_blocking(move || {
            run(job, jsync, capture)
        }));
    }

    /// Waits for the running sync (forever when none runs, so a `select!`
    /// branch on it never fires then). Cancel-safe: the job keeps running.
    pub async fn done(&mut self) -> Result<(), String> {
        let Some(job) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = job.await.unwrap_or_else(|e| Outcome {
            result: Err(format!("disk sync task failed: {e}")),
            journal_unsynced: true,
        });
        self.running = None;
        if outcome.journal_unsynced {
            self.journal_unsynced = true;
        }
        outcome.result
    }

    /// After [`DiskSync::done`]: settles the sync (see `settle`) and starts
    /// the next one when one was asked for meanwhile.
    pub fn finished(
        &mut self,
        result: Result<(), String>,
        router: &mut Router,
        journal: &mut Journal,
    ) {
        self.settle(result, router, journal);
        if self.wanted || !self.waiting.is_empty() {
            self.start(router, journal, None);
        }
    }

    /// Waits for the running sync, if any, and settles it (no new sync is
    /// started): for reloads and shutdown, which then flush inline.
    pub async fn finish(&mut self, router: &mut Router, journal: &mut Journal) {
        if self.idle() {
            return;
        }
        let result = self.done().await;
        self.settle(result, router, journal);
    }

    /// For reloads and shutdown: waits for the running sync, then flushes
    /// the spools, the file sink and the journal inline and confirms every
    /// receipt handed over (or drops them when a flush failed). Receipts
    /// whose sources are gone are harmless to confirm: an archive mark moves
    /// on disk, a closed MQTT session's confirmation goes nowhere.
    pub async fn flush_inline(&mut self, router: &mut Router, journal: &mut Journal, what: &str) {
        self.finish(router, journal).await;
        let mut ok = true;
        if let Err(e) = router.flush() {
            error!(error = %e, "Cannot flush the spool to disk {what}.");
            ok = false;
        }
        if let Err(e) = journal.sync() {
            error!(error = %e, "Cannot sync the alarm journal {what}.");
            ok = false;
        }
        if ok {
            self.waiting.drain(..).for_each(Receipt::confirm);
        } else {
            self.waiting.clear();
        }
    }

    /// Confirms the covered receipts (or drops them when the sync failed)
    /// and re-marks the journal (and on a failure the spools and files)
    /// when its sync did not complete, so the next sync retries them.
    fn settle(&mut self, result: Result<(), String>, router: &mut Router, journal: &mut Journal) {
        if std::mem::take(&mut self.journal_unsynced) {
            journal.sync_failed();
        }
        match result {
            Ok(()) => self.covered.drain(..).for_each(Receipt::confirm),
            Err(e) => {
                error!(error = %e, "Cannot sync the spool, file sink or alarm journal to disk; MQTT messages stay unacknowledged.");
                router.sync_failed();
                self.covered.clear();
            }
        }
    }
}

/// The fsyncs, on a blocking thread: spools and files, then the journal.
fn run(job: FlushJob, journal: Option<JournalSync>, capture: Option<(File, PathBuf)>) -> Outcome {
    let has_journal = journal.is_some();
    if let Err(e) = job.run() {
        return Outcome {
            result: Err(e.to_string()),
            journal_unsynced: has_journal,
        };
    }
    if let Some(j) = journal
        && let Err(e) = j.run()
    {
        return Outcome {
            result: Err(e.to_string()),
            journal_unsynced: true,
        };
    }
    if let Some((f, path)) = capture
        && let Err(e) = f.sync_data()
    {
        // The capture is a diagnostic: its loss does not hold receipts back.
        error!(path = %path.display(), error = %e, "Cannot sync the capture file.");
    }
    Outcome {
        result: Ok(()),
        journal_unsynced: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::EnginePlan;
    use crate::model::{Output, Quality, Reason, Sample, Timestamp};
    use crate::sinks::file::FileSinkConfig;
    use crate::sinks::file::writer::FileSink;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn plan() -> Arc<EnginePlan> {
        let c = Config::from_str_named(
            "[station]\nid = \"cg01\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n\
             [[mqtt_sources]]\nid = \"s\"\nhost = \"h\"\nformat = \"json\"\ntopics = [\"a/{device}\"]\n\
             [[mqtt_sources.points]]\nname = \"P1\"\ndevice = \"d\"\nexpected_interval = \"1s\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Arc::new(EnginePlan::compile(&c))
    }

    /// A receipt that records the highest sequence number confirmed.
    fn receipt(seq: u64, confirmed: &Arc<AtomicU64>) -> Receipt {
        let c = Arc::clone(confirmed);
        Receipt::new(
            seq,
            Arc::new(move |s| {
                c.fetch_max(s, Ordering::SeqCst);
            }),
        )
    }

    #[tokio::test]
    async fn receipts_are_confirmed_only_by_a_sync_that_started_after_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan();
        let file = FileSink::open(&FileSinkConfig {
            dir: dir.path().join("files"),
        })
        .expect("file sink");
        let mut router = Router::new(Arc::clone(&plan), None, None, Some(file));
        let (mut journal, _) = Journal::open(&dir.path().join("j.jsonl")).expect("journal");
        let confirmed = Arc::new(AtomicU64::new(0));
        let mut disk = DiskSync::default();
        let mut out = Output::default();
        let tag = plan.tag("P1").expect("tag");
        let mut route_one = |router: &mut Router, ts: i64| {
            out.samples.push(Sample {
                tag,
                value: 1.0,
                quality: Quality::Good,
                reason: Reason::None,
                ts: Timestamp(ts),
            });
            router.route(&out).expect("route");
            out.clear();
        };

        // Output stored, then its receipt: a sync starts and covers it.
        route_one(&mut router, 1);
        disk.wait_for(&mut vec![receipt(1, &confirmed)]);
        disk.request(&mut router, &mut journal, None);
        assert!(!disk.idle());
        assert_eq!(confirmed.load(Ordering::SeqCst), 0, "not before the fsync");
        // More output while it runs: its receipt waits for the NEXT sync.
        route_one(&mut router, 2);
        disk.wait_for(&mut vec![receipt(2, &confirmed)]);
        disk.request(&mut router, &mut journal, None);
        let r = disk.done().await;
        disk.finished(r, &mut router, &mut journal);
        assert_eq!(confirmed.load(Ordering::SeqCst), 1);
        assert!(!disk.idle(), "the waiting receipt started the next sync");
        let r = disk.done().await;
        disk.finished(r, &mut router, &mut journal);
        assert_eq!(confirmed.load(Ordering::SeqCst), 2);
        assert!(disk.idle());
        // Nothing handed over since: a receipt is confirmed at once.
        disk.wait_for(&mut vec![receipt(3, &confirmed)]);
        disk.request(&mut router, &mut journal, None);
        assert_eq!(confirmed.load(Ordering::SeqCst), 3);
        // Shutdown or reload: the running sync is awaited, the rest is
        // flushed inline, and every receipt is confirmed after it.
        route_one(&mut router, 4);
        disk.wait_for(&mut vec![receipt(4, &confirmed)]);
        disk.request(&mut router, &mut journal, None);
        route_one(&mut router, 5);
        disk.wait_for(&mut vec![receipt(5, &confirmed)]);
        disk.flush_inline(&mut router, &mut journal, "in the test")
            .await;
        assert_eq!(confirmed.load(Ordering::SeqCst), 5);
        assert!(disk.idle());
        // Everything routed reached the file.
        let text = std::fs::read_dir(dir.path().join("files"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("telemetry-"))
            .map(|e| std::fs::read_to_string(e.path()).expect("read"))
            .collect::<String>();
        assert_eq!(text.lines().count(), 4, "{text}");
    }
}
