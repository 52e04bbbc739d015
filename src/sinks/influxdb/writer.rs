//! The InfluxDB writer task: reads line-protocol records from the sink's
//! spool and delivers them with the v1 (`/write`) or v2 (`/api/v2/write`)
//! API, acknowledging the spool only after the server confirmed them.
//!
//! Invariants:
//! - Order: alarms first, then balance results, then telemetry (each oldest
//!   first). A batch holds up to `batch_size` lines; it is sent when full or
//!   when its oldest line has waited `flush_interval`.
//! - Backfill: when the writer starts with telemetry in the spool, or
//!   recovers from failed writes, the telemetry backlog (every id below the
//!   spool's next id at that moment, `live_from`) is sent at most
//!   `backfill_lines_per_s` (a token bucket holding at most one batch), while
//!   live telemetry (ids from `live_from` on) is read by its own cursor and
//!   goes into every batch ahead of the backlog, so live data keeps flowing
//!   and the database is not flooded. The watermark is one number per class,
//!   so live records are acknowledged only when the backfill has caught up
//!   with them; a crash before that sends them again (InfluxDB overwrites
//!   identical points). Alarms and balance results are never rate-limited.
//! - One batch in flight. Its records are acknowledged (per class, up to the
//!   highest id in the batch) only when every line in it was accepted or
//!   quarantined. A delivery interrupted by shutdown or a crash is repeated;
//!   the lines carry their own timestamps, so InfluxDB overwrites instead of
//!   duplicating.
//! - Outcomes are explicit (never "accept all to get unstuck"):
//!   - 2xx: delivered.
//!   - 400 (bad lines): the batch is bisected until the rejected lines are
//!     isolated; those go to `<spool dir>/influxdb-quarantine.lp` with a
//!     comment holding the server's reason; the rest is delivered. (1.x
//!     writes the good points of a partly bad batch and still answers 400;
//!     re-sending them overwrites the same points.)
//!   - 413: the batch is split in halves (a single line that is too large is
//!     quarantined).
//!   - 401/403/404: configuration error (credentials, database/bucket). ERROR
//!     once per episode; the data stays spooled, retried every
//!     `config_error_retry`.
//!   - 429, 5xx, timeouts, connection errors: retried with capped exponential
//!     backoff with jitter, honouring `Retry-After`. WARN once per episode,
//!     INFO when writes succeed again.
//! - Secrets (password, token) never appear in URLs, logs or `Debug`: v1
//!   credentials travel as HTTP basic auth, tokens as `Authorization: Token`.

use super::config::{InfluxApi, InfluxConfig};
use crate::buffer::{Record, RecordClass, SharedSpool};
use crate::config::SecretString;
use crate::model::Timestamp;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Name of the quarantine file in the spool folder.
pub const QUARANTINE_FILE: &str = "influxdb-quarantine.lp";

/// Problems found while resolving the sink's configuration.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    #[error(
        "sinks.influxdb.url: expected an http(s) URL such as \"http://127.0.0.1:8086\", found {url:?}: {reason}"
    )]
    Url { url: String, reason: String },
    #[error("sinks.influxdb.{0}: required for api = \"{1}\"")]
    Missing(&'static str, &'static str),
    #[error("sinks.influxdb.{field}: {message}")]
    Secret {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Tls(#[from] crate::sinks::tls::TlsError),
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// v1 user and password, sent as HTTP basic auth.
    Basic {
        username: String,
        password: Option<SecretString>,
    },
    /// `Authorization: Token <token>` (v2; v1 on 2.x/3.x). The header value is
    /// marked sensitive.
    Token(HeaderValue),
}

/// The writer's configuration with secrets resolved and URLs built.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Full write URL including its query (`db`, `rp`, `precision=ns` or
    /// `org`, `bucket`, `precision=ns`). Holds no secret.
    pub write_url: Url,
    /// The database (v1) or bucket (v2), for log messages.
    pub target: String,
    pub auth: Auth,
    /// Most lines in one request.
    pub batch_size: usize,
    /// Longest time a line waits before its batch is sent.
    pub flush_interval: Duration,
    /// Compress request bodies with gzip.
    pub gzip: bool,
    /// Time allowed for one HTTP request.
    pub timeout: Duration,
    /// Where rejected lines go (`<spool dir>/influxdb-quarantine.lp`).
    pub quarantine_path: PathBuf,
    /// First retry delay after a transient failure; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Retry interval while the server answers 401/403/404.
    pub config_error_retry: Duration,
    /// Time allowed for the final delivery on shutdown.
    pub shutdown_grace: Duration,
    /// Most telemetry backlog lines per second after an outage; 0 = no limit.
    pub backfill_lines_per_s: u64,
    /// Extra trusted CAs for https (`tls_ca_file`), on top of the system roots.
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl WriterConfig {
    /// Builds the writer configuration: URL with query, secrets resolved.
    /// `spool_dir` is the sink's spool folder (for the quarantine file).
    pub fn resolve(cfg: &InfluxConfig, spool_dir: &Path) -> Result<WriterConfig, InfluxError> {
        let bad_url = |reason: String| InfluxError::Url {
            url: cfg.url.clone(),
            reason,
        };
        let mut base = Url::parse(&cfg.url).map_err(|e| bad_url(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad_url("scheme must be http or https".into()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad_url(
                "credentials belong in username/password/token, not in the URL".into(),
            ));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        base.set_query(None);
        let token = match &cfg.token {
            Some(s) => Some(s.resolve().map_err(|message| InfluxError::Secret {
                field: "token",
                message,
            })?),
            None => None,
        };
        let token_header = match token {
            Some(t) => {
                let mut v =
                    HeaderValue::from_str(&format!("Token {}", t.expose())).map_err(|_| {
                        InfluxError::Secret {
                            field: "token",
                            message: "contains characters not allowed in an HTTP header".into(),
                        }
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let (write_url, target, auth) = match cfg.api {
            InfluxApi::V1 => {
                let db = cfg
                    .database
                    .as_deref()
                    .ok_or(InfluxError::Missing("database", "v1"))?;
                let mut url = base.join("write").map_err(|e| bad_url(e.to_string()))?;
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("db", db);
                    if let Some(rp) = cfg.retention_policy.as_deref().filter(|s| !s.is_empty()) {
                        q.append_pair("rp", rp);
                    }
                    q.append_pair("precision", "ns");
                }
                let auth = match (token_header, &cfg.username) {
                    (Some(t), _) => Auth::Token(t),
                    (None, Some(u)) => Auth::Basic {
                        username: u.clone(),
                        password: match &cfg.password {
                            Some(s) => {
                                Some(s.resolve().map_err(|message| InfluxError::Secret {
                                    field: "password",
                                    message,
                                })?)
                            }
                            None => None,
                        },
                    },
                    (None, None) => Auth::None,
                };
                (url, db.to_string(), auth)
            }
            InfluxApi::V2 => {
                let org = cfg
                    .org
                    .as_deref()
                    .ok_or(InfluxError::Missing("org", "v2"))?;
                let bucket = cfg
                    .bucket
                    .as_deref()
                    .ok_or(InfluxError::Missing("bucket", "v2"))?;
                let token = token_header.ok_or(InfluxError::Missing("token", "v2"))?;
                let mut url = base
                    .join("api/v2/write")
                    .map_err(|e| bad_url(e.to_string()))?;
                url.query_pairs_mut()
                    .append_pair("org", org)
                    .append_pair("bucket", bucket)
                    .append_pair("precision", "ns");
                (url, bucket.to_string(), Auth::Token(token))
            }
        };
        Ok(WriterConfig {
            write_url,
            target,
            auth,
            batch_size: cfg.batch_size.max(1),
            flush_interval: cfg.flush_interval,
            gzip: cfg.gzip,
            timeout: cfg.timeout,
            quarantine_path: spool_dir.join(QUARANTINE_FILE),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            config_error_retry: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            backfill_lines_per_s: cfg.backfill_lines_per_s,
            extra_roots: match &cfg.tls_ca_file {
                Some(path) => crate::sinks::tls::influx_ca(path)?,
                None => Vec::new(),
            },
        })
    }
}

/// Runs the writer until `cancel` fires, then tries one final delivery of
/// what is in the spool within `shutdown_grace` and returns (the spool keeps
/// the rest).
pub async fn run(cfg: WriterConfig, spool: Arc<SharedSpool>, cancel: CancellationToken) {
    crate::sinks::tls::ensure_crypto_provider();
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .tls_certs_merge(cfg.extra_roots.iter().cloned())
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(sink = spool.name(), %error, "Cannot build the HTTP client; InfluxDB sink not running, data stays spooled.");
            return;
        }
    };
    let grace = cfg.shutdown_grace;
    let mut w = Writer::new(cfg, spool, client);
    tracing::info!(sink = %w.sink, url = %w.cfg.write_url, "InfluxDB writer started.");
    w.maybe_start_backfill();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = w.step() => {}
        }
    }
    match tokio::time::timeout(grace, w.drain()).await {
        Ok(()) => tracing::info!(sink = %w.sink, "InfluxDB writer stopped; spool delivered."),
        Err(_) => {
            let left: u64 = RecordClass::ALL
                .iter()
                .map(|&c| w.spool.lock().stats(c).records)
                .sum();
            tracing::warn!(sink = %w.sink, records = left, "InfluxDB writer stopped before delivering everything; the rest stays spooled.");
        }
    }
    w.update_gauges();
}

/// What one POST ended with.
enum Post {
    Accepted,
    /// 400: some line is bad.
    Rejected(String),
    /// 413: too large.
    TooLarge(String),
    /// 401/403/404.
    ConfigError(u16, String),
    /// 429/5xx/other status, timeout, connection error.
    Transient {
        what: String,
        retry_after: Option<Duration>,
    },
}

/// What delivering the pending batch ended with.
enum Delivery {
    Done,
    /// Stopped; try again after this delay.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Ok,
    Transient,
    ConfigError,
    QuarantineError,
}

struct Writer {
    cfg: WriterConfig,
    spool: Arc<SharedSpool>,
    client: reqwest::Client,
    sink: String,
    /// Lines of the current batch, back to back, each ending in `\n`.
    body: Vec<u8>,
    /// Byte range of each line in `body`.
    lines: Vec<Range<usize>>,
    /// Per class, the highest id read (into this or an earlier batch).
    read_after: [u64; 3],
    /// Per class, the highest id in the current batch.
    batch_upto: [Option<u64>; 3],
    /// When the current batch got its first line.
    started: Option<Instant>,
    /// Ranges of line indices still to deliver (a stack; the last is next).
    /// Empty while the batch is still filling.
    pending: Vec<Range<usize>>,
    quarantined: u64,
    first_reason: Option<String>,
    records: Vec<Record>,
    health: Health,
    backoff: Duration,
    failed_attempts: u64,
    /// While `Some(l)`: telemetry ids below `l` are the backlog (read from
    /// `read_after`, rate-limited, acknowledged per batch), ids from `l` on
    /// are live (read from `live_after`, acknowledged when the backlog is done).
    live_from: Option<u64>,
    live_after: u64,
    backfill: TokenBucket,
}

/// A token bucket in lines: `rate` per second, at most `burst` held. Pure
/// (the caller passes the time), so it is unit-tested without a clock.
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    /// Set for the shutdown drain: no limit.
    unlimited: bool,
}

impl TokenBucket {
    fn new(lines_per_s: u64, burst: usize, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: lines_per_s as f64,
            burst: burst as f64,
            tokens: 0.0,
            at: now,
            unlimited: lines_per_s == 0,
        }
    }

    /// Lines that may be sent now.
    fn available(&mut self, now: Instant) -> f64 {
        if self.unlimited {
            return f64::INFINITY;
        }
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.tokens
    }

    /// Takes `lines` (may go into debt by the last record's lines).
    fn take(&mut self, lines: usize) {
        if !self.unlimited {
            self.tokens -= lines as f64;
        }
    }
}

impl Writer {
    fn new(cfg: WriterConfig, spool: Arc<SharedSpool>, client: reqwest::Client) -> Writer {
        let (cfg_backfill_rate, cfg_batch_size) = (cfg.backfill_lines_per_s, cfg.batch_size);
        Writer {
            sink: spool.name().to_string(),
            cfg,
            spool,
            client,
            body: Vec::new(),
            lines: Vec::new(),
            read_after: [0; 3],
            batch_upto: [None; 3],
            started: None,
            pending: Vec::new(),
            quarantined: 0,
            first_reason: None,
            records: Vec::new(),
            health: Health::Ok,
            backoff: Duration::ZERO,
            failed_attempts: 0,
            live_from: None,
            live_after: 0,
            backfill: TokenBucket::new(cfg_backfill_rate, cfg_batch_size, Instant::now()),
        }
    }

    /// Enters backfill mode if telemetry is waiting in the spool (at start,
    /// and after writes succeed again following failures).
    fn maybe_start_backfill(&mut self) {
        if self.live_from.is_some() || self.cfg.backfill_lines_per_s == 0 {
            return;
        }
        let t = RecordClass::Telemetry;
        let (next, acked) = {
            let s = self.spool.lock();
            (s.next_id(t), s.acked(t))
        };
        let backlog = next
            .saturating_sub(1)
            .saturating_sub(self.read_after[t as usize].max(acked));
        if backlog == 0 {
            return;
        }
        self.live_from = Some(next);
        self.live_after = next - 1;
        self.backfill = TokenBucket::new(
            self.cfg.backfill_lines_per_s,
            self.cfg.batch_size,
            Instant::now(),
        );
        tracing::info!(sink = %self.sink, records = backlog, lines_per_s = self.cfg.backfill_lines_per_s,
            "Backfilling spooled telemetry alongside live data.");
    }

    /// Adds telemetry to the batch in backfill mode: live records first,
    /// then backlog records as far as the token bucket allows. Leaves
    /// backfill mode when the backlog is done.
    fn fill_telemetry_backfill(
        &mut self,
        s: &mut crate::buffer::Spool,
        live_from: u64,
    ) -> Result<(), crate::buffer::SpoolError> {
        let t = RecordClass::Telemetry;
        let room = self.cfg.batch_size.saturating_sub(self.lines.len());
        if room == 0 {
            return Ok(());
        }
        self.records.clear();
        s.read(t, self.live_after, room, 16 << 20, &mut self.records)?;
        let records = std::mem::take(&mut self.records);
        for r in &records {
            self.live_after = r.id;
            self.push_lines(&r.payload);
        }
        self.records = records;
        let now = Instant::now();
        while self.lines.len() < self.cfg.batch_size && self.backfill.available(now) > 0.0 {
            self.records.clear();
            s.read(
                t,
                self.read_after[t as usize],
                1,
                16 << 20,
                &mut self.records,
            )?;
            let Some(r) = self.records.pop().filter(|r| r.id < live_from) else {
                // Caught up: the live records read so far are acknowledged
                // with this batch; back to one cursor.
                self.live_from = None;
                let ra = &mut self.read_after[t as usize];
                if self.live_after > *ra {
                    *ra = self.live_after;
                    self.batch_upto[t as usize] = Some(self.live_after);
                }
                tracing::info!(sink = %self.sink, "Backfill complete.");
                break;
            };
            self.read_after[t as usize] = r.id;
            self.batch_upto[t as usize] = Some(r.id);
            let n = self.push_lines(&r.payload);
            self.backfill.take(n);
            metrics::counter!("gaswatch_influx_backfill_lines_total").increment(n as u64);
        }
        Ok(())
    }

    /// Appends the non-blank lines of one record to the batch; returns how many.
    fn push_lines(&mut self, payload: &[u8]) -> usize {
        let mut n = 0;
        for line in payload.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let start = self.body.len();
            self.body.extend_from_slice(line);
            self.body.push(b'\n');
            self.lines.push(start..self.body.len());
            n += 1;
        }
        n
    }

    /// One round of the main loop: fill, wait for more or for the flush
    /// interval, or deliver. Cancel-safe: all state lives in `self` and is
    /// changed only after an outcome is known.
    async fn step(&mut self) {
        if self.pending.is_empty() {
            if !self.fill() {
                tokio::time::sleep(self.cfg.config_error_retry.min(Duration::from_secs(5))).await;
                return;
            }
            let spool = self.spool.clone();
            if self.lines.is_empty() {
                self.update_gauges();
                tokio::select! {
                    () = spool.notified() => {}
                    () = tokio::time::sleep(self.cfg.flush_interval) => {}
                }
                return;
            }
            if self.lines.len() < self.cfg.batch_size {
                let deadline = self.started.unwrap_or_else(Instant::now) + self.cfg.flush_interval;
                if Instant::now() < deadline {
                    tokio::select! {
                        () = spool.notified() => {}
                        () = tokio::time::sleep_until(deadline.into()) => {}
                    }
                    return;
                }
            }
            self.pending.push(0..self.lines.len());
        }
        if let Delivery::Wait(d) = self.deliver().await {
            tokio::time::sleep(d).await;
        }
    }

    /// Delivers everything in the spool now, without waiting for full batches.
    async fn drain(&mut self) {
        // No live data any more: send the backlog as fast as the server takes it.
        self.backfill.unlimited = true;
        loop {
            if self.pending.is_empty() {
                if !self.fill() || self.lines.is_empty() {
                    return;
                }
                self.pending.push(0..self.lines.len());
            }
            if let Delivery::Wait(d) = self.deliver().await {
                tokio::time::sleep(d).await;
            }
        }
    }

    /// Adds records to the current batch, alarms first. False on a spool error.
    fn fill(&mut self) -> bool {
        let spool = self.spool.clone();
        let mut s = spool.lock();
        for class in RecordClass::ALL {
            if class == RecordClass::Telemetry
                && let Some(live_from) = self.live_from
            {
                if let Err(error) = self.fill_telemetry_backfill(&mut s, live_from) {
                    tracing::error!(sink = %self.sink, %error, "Cannot read the spool; retrying.");
                    return false;
                }
                continue;
            }
            let room = self.cfg.batch_size.saturating_sub(self.lines.len());
            if room == 0 {
                break;
            }
            self.records.clear();
            if let Err(error) = s.read(
                class,
                self.read_after[class as usize],
                room,
                16 << 20,
                &mut self.records,
            ) {
                tracing::error!(sink = %self.sink, %error, "Cannot read the spool; retrying.");
                return false;
            }
            let records = std::mem::take(&mut self.records);
            for r in &records {
                self.read_after[class as usize] = r.id;
                self.batch_upto[class as usize] = Some(r.id);
                self.push_lines(&r.payload);
            }
            self.records = records;
        }
        if !self.lines.is_empty() && self.started.is_none() {
            self.started = Some(Instant::now());
        }
        // Records with no lines at all still need acknowledging.
        if self.lines.is_empty() && self.batch_upto.iter().any(Option::is_some) {
            drop(s);
            self.finish_batch();
        }
        true
    }

    async fn deliver(&mut self) -> Delivery {
        while let Some(range) = self.pending.last().cloned() {
            match self.post(range.clone()).await {
                Post::Accepted => {
                    self.pending.pop();
                    metrics::counter!("gaswatch_influx_lines_written_total")
                        .increment(range.len() as u64);
                }
                Post::Rejected(reason) | Post::TooLarge(reason) if range.len() == 1 => {
                    if let Err(error) = self.quarantine(range.start, &reason) {
                        if self.health != Health::QuarantineError {
                            tracing::error!(sink = %self.sink, path = %self.cfg.quarantine_path.display(), %error,
                                "Cannot write the InfluxDB quarantine file; the batch stays spooled until it can.");
                            self.health = Health::QuarantineError;
                        }
                        return Delivery::Wait(self.cfg.config_error_retry);
                    }
                    self.pending.pop();
                }
                Post::Rejected(_) | Post::TooLarge(_) => {
                    self.pending.pop();
                    let mid = range.start + range.len() / 2;
                    self.pending.push(mid..range.end);
                    self.pending.push(range.start..mid);
                }
                Post::ConfigError(status, text) => {
                    if self.health != Health::ConfigError {
                        tracing::error!(sink = %self.sink, url = %self.cfg.write_url, target = %self.cfg.target, status, server_error = %text,
                            retry_every_s = self.cfg.config_error_retry.as_secs(),
                            "InfluxDB refused the write: check url, database/bucket and credentials. Data stays spooled.");
                        self.health = Health::ConfigError;
                    }
                    self.failed_attempts += 1;
                    return Delivery::Wait(self.cfg.config_error_retry);
                }
                Post::Transient { what, retry_after } => {
                    let wait = self.next_backoff(retry_after);
                    if self.health != Health::Transient {
                        tracing::warn!(sink = %self.sink, url = %self.cfg.write_url, error = %what, retry_in_ms = wait.as_millis() as u64,
                            "InfluxDB write failed; retrying with backoff. Data stays spooled.");
                        self.health = Health::Transient;
                    } else {
                        tracing::debug!(sink = %self.sink, error = %what, retry_in_ms = wait.as_millis() as u64, "InfluxDB write failed again.");
                    }
                    self.failed_attempts += 1;
                    return Delivery::Wait(wait);
                }
            }
        }
        let recovered = self.health != Health::Ok;
        if recovered {
            tracing::info!(sink = %self.sink, failed_attempts = self.failed_attempts, "InfluxDB accepts writes again.");
            self.health = Health::Ok;
        }
        self.failed_attempts = 0;
        self.backoff = Duration::ZERO;
        if self.quarantined > 0 {
            tracing::error!(sink = %self.sink, lines = self.quarantined, path = %self.cfg.quarantine_path.display(),
                reason = self.first_reason.as_deref().unwrap_or(""), "InfluxDB rejected lines; they were quarantined.");
            metrics::counter!("gaswatch_influx_quarantined_lines_total")
                .increment(self.quarantined);
            metrics::counter!("gaswatch_points_dropped_total", "reason" => "influxdb_rejected")
                .increment(self.quarantined);
        }
        self.finish_batch();
        if recovered {
            self.maybe_start_backfill();
        }
        Delivery::Done
    }

    /// Acknowledges the batch's records and clears it.
    fn finish_batch(&mut self) {
        {
            let mut s = self.spool.lock();
            for class in RecordClass::ALL {
                if let Some(upto) = self.batch_upto[class as usize]
                    && let Err(error) = s.ack(class, upto)
                {
                    // Delivered anyway; at worst it is delivered again after a restart.
                    tracing::warn!(sink = %self.sink, class = class.as_str(), %error, "Cannot record the spool watermark.");
                }
            }
        }
        self.batch_upto = [None; 3];
        self.body.clear();
        self.lines.clear();
        self.pending.clear();
        self.started = None;
        self.quarantined = 0;
        self.first_reason = None;
        self.update_gauges();
    }

    fn update_gauges(&self) {
        let s = self.spool.lock();
        for class in RecordClass::ALL {
            metrics::gauge!("gaswatch_spool_records", "sink" => self.sink.clone(), "class" => class.as_str())
                .set(s.stats(class).records as f64);
        }
    }

    fn next_backoff(&mut self, retry_after: Option<Duration>) -> Duration {
        self.backoff = if self.backoff.is_zero() {
            self.cfg.backoff_initial
        } else {
            (self.backoff * 2).min(self.cfg.backoff_max)
        };
        let jitter = 0.8 + 0.4 * fastrand::f64();
        let wait = self.backoff.mul_f64(jitter);
        match retry_after {
            Some(ra) => wait.max(ra.min(Duration::from_secs(600))),
            None => wait,
        }
    }

    fn quarantine(&mut self, line: usize, reason: &str) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.quarantine_path)?;
        let reason_one_line = reason.replace(['\n', '\r'], " ");
        let mut text = format!(
            "# {} rejected by {}: {}\n",
            Timestamp::now().to_rfc3339(),
            self.cfg.target,
            reason_one_line
        )
        .into_bytes();
        text.extend_from_slice(&self.body[self.lines[line].clone()]);
        f.write_all(&text)?;
        f.sync_data()?;
        self.quarantined += 1;
        self.first_reason.get_or_insert(reason_one_line);
        Ok(())
    }

    async fn post(&mut self, range: Range<usize>) -> Post {
        let (Some(first), Some(last)) = (
            self.lines.get(range.start),
            self.lines.get(range.end.saturating_sub(1)),
        ) else {
            return Post::Accepted;
        };
        let bytes = &self.body[first.start..last.end];
        let payload = if self.cfg.gzip {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(bytes.len() / 4 + 64),
                flate2::Compression::fast(),
            );
            let res = enc.write_all(bytes).and_then(|()| enc.finish());
            match res {
                Ok(v) => v,
                Err(e) => {
                    return Post::Transient {
                        what: format!("gzip: {e}"),
                        retry_after: None,
                    };
                }
            }
        } else {
            bytes.to_vec()
        };
        let mut req = self
            .client
            .post(self.cfg.write_url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(payload);
        if self.cfg.gzip {
            req = req.header(CONTENT_ENCODING, "gzip");
        }
        req = match &self.cfg.auth {
            Auth::None => req,
            Auth::Basic { username, password } => {
                req.basic_auth(username, password.as_ref().map(SecretString::expose))
            }
            Auth::Token(v) => req.header(AUTHORIZATION, v.clone()),
        };
        let t0 = Instant::now();
        let res = req.send().await;
        metrics::histogram!("gaswatch_influx_write_seconds").record(t0.elapsed().as_secs_f64());
        let resp = match res {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timeout".to_string()
                } else if e.is_connect() {
                    format!("connect: {}", error_chain(&e))
                } else {
                    error_chain(&e)
                };
                metrics::counter!("gaswatch_influx_writes_total", "result" => "transport")
                    .increment(1);
                crate::telemetry::health::set_sink_reachable(&self.sink, false);
                return Post::Transient {
                    what,
                    retry_after: None,
                };
            }
        };
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            metrics::counter!("gaswatch_influx_writes_total", "result" => "ok").increment(1);
            crate::telemetry::health::set_sink_reachable(&self.sink, true);
            return Post::Accepted;
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match resp.bytes().await {
            Ok(b) => server_error_text(&b),
            Err(e) => format!("(no body: {e})"),
        };
        let (result, post) = match status {
            400 => ("rejected", Post::Rejected(text)),
            413 => ("too_large", Post::TooLarge(text)),
            401 | 403 | 404 => ("config_error", Post::ConfigError(status, text)),
            _ => (
                "retry",
                Post::Transient {
                    what: format!("HTTP {status}: {text}"),
                    retry_after,
                },
            ),
        };
        metrics::counter!("gaswatch_influx_writes_total", "result" => result).increment(1);
        // The server answered: reachable, unless it refuses us (auth/config) or fails.
        crate::telemetry::health::set_sink_reachable(
            &self.sink,
            matches!(post, Post::Rejected(_) | Post::TooLarge(_)),
        );
        post
    }
}

/// The `error` member of InfluxDB's JSON error body, else the body itself,
/// cut to 1 KiB.
fn server_error_text(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let mut end = text.len().min(1024);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::TokenBucket;
    use std::time::{Duration, Instant};

    #[test]
    fn token_bucket_allows_rate_times_elapsed_up_to_one_batch() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 500, t0);
        assert_eq!(b.available(t0), 0.0);
        assert_eq!(b.available(t0 + Duration::from_millis(100)), 100.0);
        b.take(130); // one record more than allowed: debt
        assert_eq!(b.available(t0 + Duration::from_millis(100)), -30.0);
        assert_eq!(b.available(t0 + Duration::from_millis(200)), 70.0);
        // Idle for long: at most one batch.
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 500.0);
        let mut unlimited = TokenBucket::new(0, 500, t0);
        unlimited.take(1_000_000);
        assert!(unlimited.available(t0).is_infinite());
    }
}
