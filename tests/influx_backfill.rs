//! Delivery order after an outage, checked on the requests a local HTTP
//! server records (no real InfluxDB needed for order): alarms first, then
//! balance results, then telemetry, each oldest first; the telemetry
//! backlog is rate-limited and live telemetry keeps flowing while it drains.
//! Assertions are on order and counts only, never on rates.

mod support;

use gaswatch::buffer::{RecordClass, SharedSpool, Spool, SpoolConfig};
use gaswatch::sinks::influxdb::{InfluxConfig, WriterConfig, run};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves HTTP/1.1 on 127.0.0.1:0; records each request body (in arrival
/// order) and answers 500 to the first `fail_first` requests, 204 after.
async fn serve(fail_first: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log2.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd);
                loop {
                    let mut line = String::new();
                    if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if rd.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut raw = vec![0u8; len];
                    if rd.read_exact(&mut raw).await.is_err() {
                        return;
                    }
                    let n = {
                        let mut l = log.lock().expect("log");
                        l.push(String::from_utf8_lossy(&raw).into_owned());
                        l.len()
                    };
                    let status = if n <= fail_first { 500 } else { 204 };
                    let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                    if wr.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), log)
}

const BACKLOG_RECORDS: u64 = 300;
const LINES_PER_RECORD: u64 = 10;
const ALARMS: u64 = 5;
const BALANCES: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_alarms_go_first_and_live_data_flows_during_a_rate_limited_backfill() {
    let (url, log) = serve(2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");

    // The spool as an outage leaves it: a telemetry backlog, then alarms
    // and balance results that arrived later.
    let mut s = Spool::open(&spool_dir, &SpoolConfig::default()).expect("spool");
    for r in 0..BACKLOG_RECORDS {
        let mut payload = String::new();
        for i in 0..LINES_PER_RECORD {
            let n = r * LINES_PER_RECORD + i;
            payload.push_str(&format!("telemetry,point=old n={n}i {}\n", 1_000 + n));
        }
        s.append(RecordClass::Telemetry, payload.as_bytes())
            .expect("append");
    }
    for a in 0..ALARMS {
        s.append(
            RecordClass::Alarm,
            format!("alarm,station=s seq={a}i {}\n", 900_000 + a).as_bytes(),
        )
        .expect("append");
    }
    for b in 0..BALANCES {
        s.append(
            RecordClass::Balance,
            format!("balance,station=s n={b}i {}\n", 800_000 + b).as_bytes(),
        )
        .expect("append");
    }
    s.sync().expect("sync");
    let spool = SharedSpool::new("influxdb", s);

    // 2,000 lines/s with 500-line batches: the 3,000-line backlog cannot
    // drain in fewer than several batches, whatever the machine's speed.
    let cfg = InfluxConfig {
        batch_size: 500,
        flush_interval: Duration::from_millis(50),
        gzip: false,
        timeout: Duration::from_secs(5),
        backfill_lines_per_s: 2_000,
        ..InfluxConfig::v1(&url, "gaswatch")
    };
    let mut w = WriterConfig::resolve(&cfg, &spool_dir).expect("resolve");
    w.backoff_initial = Duration::from_millis(20);
    w.backoff_max = Duration::from_millis(50);
    let cancel = CancellationToken::new();
    let writer = tokio::spawn(run(w, spool.clone(), cancel.clone()));

    // Live data: one line every 20 ms, as the engine task appends it.
    let live_cancel = CancellationToken::new();
    let live = {
        let spool = spool.clone();
        let live_cancel = live_cancel.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !live_cancel.is_cancelled() {
                spool
                    .lock()
                    .append(
                        RecordClass::Telemetry,
                        format!("telemetry,point=live n={n}i {}\n", 5_000_000 + n).as_bytes(),
                    )
                    .expect("append");
                spool.notify();
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        })
    };

    let backlog_lines = BACKLOG_RECORDS * LINES_PER_RECORD;
    let count = |log: &Mutex<Vec<String>>, what: &str| -> u64 {
        log.lock()
            .expect("log")
            .iter()
            .skip(2) // the two failed attempts
            .map(|b| b.lines().filter(|l| l.contains(what)).count() as u64)
            .sum()
    };
    assert!(
        support::wait_until_async(Duration::from_secs(60), || async {
            count(&log, "point=old") >= backlog_lines
        })
        .await,
        "backlog not delivered: {} of {backlog_lines}",
        count(&log, "point=old")
    );
    live_cancel.cancel();
    let live_sent = live.await.expect("live task");
    cancel.cancel();
    writer.await.expect("writer");

    let reqs: Vec<String> = log.lock().expect("log").clone();
    let delivered: Vec<&str> = reqs.iter().skip(2).flat_map(|b| b.lines()).collect();
    // Each line exactly once (every request after the outage succeeded).
    let mut seen = std::collections::BTreeSet::new();
    for l in &delivered {
        assert!(seen.insert(*l), "delivered twice: {l}");
    }
    // Alarms first, then balance results, then telemetry.
    let kinds: Vec<&str> = delivered
        .iter()
        .map(|l| l.split([',', ' ']).next().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds[..(ALARMS + BALANCES) as usize],
        [
            ["alarm"; ALARMS as usize].as_slice(),
            &["balance"; BALANCES as usize]
        ]
        .concat()[..],
        "alarms first, then balance results"
    );
    assert!(
        kinds[(ALARMS + BALANCES) as usize..]
            .iter()
            .all(|k| *k == "telemetry")
    );
    // Backlog oldest first and complete.
    let old: Vec<u64> = delivered
        .iter()
        .filter(|l| l.contains("point=old"))
        .map(|l| {
            l.split("n=")
                .nth(1)
                .and_then(|v| v.split('i').next())
                .and_then(|v| v.parse().ok())
                .expect("n")
        })
        .collect();
    assert_eq!(old, (0..backlog_lines).collect::<Vec<_>>());
    // Live data kept flowing: live lines were delivered in requests before
    // the one that finished the backlog, and every live line arrived.
    let last_backlog_req = reqs
        .iter()
        .rposition(|b| b.contains("point=old"))
        .expect("backlog request");
    let live_before_end: usize = reqs[2..last_backlog_req]
        .iter()
        .map(|b| b.lines().filter(|l| l.contains("point=live")).count())
        .sum();
    assert!(
        live_before_end > 0,
        "no live data was delivered while the backlog drained"
    );
    let backlog_reqs = reqs.iter().filter(|b| b.contains("point=old")).count();
    assert!(
        backlog_reqs > (backlog_lines / 500) as usize,
        "the backlog was spread over more requests than full batches would need ({backlog_reqs})"
    );
    assert_eq!(
        count(&log, "point=live"),
        live_sent,
        "every live line delivered"
    );
    // Everything acknowledged.
    let s = spool.lock();
    for c in RecordClass::ALL {
        assert_eq!(s.stats(c).records, 0, "{c:?} left in the spool");
    }
}

/// CPU time of this process (user + system), from /proc/self/stat.
fn own_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the ")": state is index 0, utime (field 14) index 11, stime 12;
    // in clock ticks (100 per second on Linux).
    let field = |i: usize| {
        after
            .get(i)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// Backfill rate into a real InfluxDB 1.6.7 on loopback after an outage:
/// 200,000 telemetry lines spooled, the writer started with no rate limit
/// (5,000-line gzip batches), timed until the spool is empty. Prints the
/// rate and how much of the wall time the writer's own process used (the
/// rest is influxd). A measurement, not a check: run with
/// `cargo test --release --test influx_backfill -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; prints the backfill rate"]
async fn backfill_rate_into_real_influxdb() {
    let influx = support::influxdb::InfluxServer::start_new().await;
    influx.create_database("gaswatch").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let mut s = Spool::open(&spool_dir, &SpoolConfig::default()).expect("spool");
    let (records, per_record) = (20_000u64, 10u64);
    let t0 = 1_700_000_000_000_000_000i64;
    for r in 0..records {
        let mut payload = String::new();
        for i in 0..per_record {
            let n = r * per_record + i;
            payload.push_str(&format!(
                "telemetry,device=fc-in,point=P{},station=cg01,unit=kPa quality=\"good\",value={}.25 {}\n",
                i,
                1000 + n % 997,
                t0 + i64::try_from(r).expect("r") * 1_000_000_000
            ));
        }
        s.append(RecordClass::Telemetry, payload.as_bytes())
            .expect("append");
    }
    s.sync().expect("sync");
    let spool = SharedSpool::new("influxdb", s);
    let cfg = InfluxConfig {
        batch_size: 5000,
        flush_interval: Duration::from_millis(100),
        gzip: true,
        timeout: Duration::from_secs(30),
        backfill_lines_per_s: 0,
        ..InfluxConfig::v1(&influx.url(), "gaswatch")
    };
    let w = WriterConfig::resolve(&cfg, &spool_dir).expect("resolve");
    let cancel = CancellationToken::new();
    let cpu0 = own_cpu();
    let start = std::time::Instant::now();
    let writer = tokio::spawn(run(w, spool.clone(), cancel.clone()));
    assert!(
        support::wait_until_async(Duration::from_secs(600), || async {
            spool.lock().stats(RecordClass::Telemetry).records == 0
        })
        .await
    );
    let wall = start.elapsed();
    let cpu = own_cpu().saturating_sub(cpu0);
    cancel.cancel();
    writer.await.expect("writer");
    let lines = records * per_record;
    println!(
        "backfill: {lines} lines in {:.2} s = {:.0} lines/s; writer process CPU {:.2} s ({:.0} % of wall)",
        wall.as_secs_f64(),
        lines as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    let v = influx
        .query("gaswatch", "SELECT count(value) FROM telemetry")
        .await;
    assert_eq!(
        v["results"][0]["series"][0]["values"][0][1].as_u64(),
        Some(lines),
        "{v}"
    );
}
