//! InfluxDB line-protocol encoding of engine output. Pure: no I/O, no
//! allocation beyond growing the caller's reused buffer.
//!
//! Each `encode_*` appends exactly one line ending in `\n` and with at least
//! one field. Timestamps are nanoseconds (the writer sends `precision=ns`)
//! and come from the sample, alarm or window end, never from write time, so
//! a retried batch overwrites instead of duplicating.
//!
//! Escaping (InfluxDB 1.x/2.x line protocol): measurement names escape
//! commas and spaces; tag keys, tag values and field keys escape commas,
//! equals signs and spaces; string field values escape double quotes and
//! backslashes. Line protocol cannot carry a newline in a name or tag value,
//! so CR and LF there are replaced by a space. Tags with an empty value are
//! left out (InfluxDB rejects them). Tags are written sorted by key, as
//! InfluxDB recommends. Non-finite numbers are left out (line protocol has no
//! NaN); floats are written in their shortest round-trip form (ryu: `4012.5`,
//! `-3.0`, `1e-7`), which InfluxDB parses back to the same `f64`.

use crate::engine::TagInfo;
use crate::model::{AlarmEvent, ArchiveSample, BalanceResult, LeakAlert, Reason, Sample};

fn escape_into(buf: &mut Vec<u8>, s: &str, special: &[u8]) {
    // Fast path: station, device, point and unit names almost never hold a
    // byte that any escape set contains; copy them in one go. (Byte-wise
    // pushes here were ~40 % of the daemon's instructions under load,
    // BENCHMARKS.md.)
    if !s
        .bytes()
        .any(|b| matches!(b, b',' | b'=' | b' ' | b'"' | b'\\' | b'\n' | b'\r'))
    {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    for &b in s.as_bytes() {
        let b = if b == b'\n' || b == b'\r' { b' ' } else { b };
        match b {
            _ if special.contains(&b) => {
                buf.push(b'\\');
                buf.push(b);
            }
            _ => buf.push(b),
        }
    }
}

fn measurement(buf: &mut Vec<u8>, name: &str) {
    escape_into(buf, name, b", ");
}

/// `,key=value` (omitted when the value is empty).
fn tag(buf: &mut Vec<u8>, key: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    buf.push(b',');
    escape_into(buf, key, b",= ");
    buf.push(b'=');
    escape_into(buf, value, b",= ");
}

/// Writes field separators: a space before the first field, a comma after.
struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    n: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a mut Vec<u8>) -> Self {
        Fields { buf, n: 0 }
    }

    fn key(&mut self, key: &str) {
        self.buf.push(if self.n == 0 { b' ' } else { b',' });
        self.n += 1;
        escape_into(self.buf, key, b",= ");
        self.buf.push(b'=');
    }

    fn float(&mut self, key: &str, v: f64) {
        if v.is_finite() {
            self.key(key);
            // Shortest round-trip form (`4012.5`, `-3.0`, `1e-7`): InfluxDB
            // parses it back to the same f64 (exponents included).
            self.buf
                .extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
        }
    }

    fn uint(&mut self, key: &str, v: u64) {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self.buf.push(b'i');
    }

    fn string(&mut self, key: &str, v: &str) {
        self.key(key);
        self.buf.push(b'"');
        for &b in v.as_bytes() {
            if b == b'"' || b == b'\\' {
                self.buf.push(b'\\');
            }
            self.buf.push(b);
        }
        self.buf.push(b'"');
    }

    fn end(self, ts_ns: i64) {
        self.buf.push(b' ');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(ts_ns).as_bytes());
        self.buf.push(b'\n');
    }
}

/// `telemetry,device=,point=,station=,unit= value=,quality="",reason="" <ts>`.
///
/// `value` only when the sample has one; `reason` only when it is not
/// [`Reason::None`]; `unit` only when not empty.
pub fn encode_sample(
    buf: &mut Vec<u8>,
    station: &str,
    tag_info: &TagInfo,
    device_id: &str,
    s: &Sample,
) {
    sample_prefix(buf, station, tag_info, device_id, None);
    encode_sample_after_prefix(buf, s);
}

/// [`encode_sample`] with an origin tag `source=<origin>` when given (for
/// example `source=replay` for `gaswatch replay --influx-url`), so results
/// of different origins sit side by side in one database.
pub fn encode_sample_from(
    buf: &mut Vec<u8>,
    station: &str,
    tag_info: &TagInfo,
    device_id: &str,
    s: &Sample,
    origin: Option<&str>,
) {
    sample_prefix(buf, station, tag_info, device_id, origin);
    encode_sample_after_prefix(buf, s);
}

/// The part of a sample's line that is the same for every sample of a tag:
/// measurement and escaped tags (`telemetry,device=..,unit=..`, with
/// `source=<origin>` when given). The router builds it once per tag and
/// reuses it ([`SamplePrefixes`]).
pub fn sample_prefix(
    buf: &mut Vec<u8>,
    station: &str,
    tag_info: &TagInfo,
    device_id: &str,
    origin: Option<&str>,
) {
    measurement(buf, "telemetry");
    tag(buf, "device", device_id);
    tag(buf, "point", &tag_info.name);
    if let Some(o) = origin {
        tag(buf, "source", o);
    }
    tag(buf, "station", station);
    tag(buf, "unit", &tag_info.unit);
}

/// The rest of a sample's line after its [`sample_prefix`]: fields and time.
pub fn encode_sample_after_prefix(buf: &mut Vec<u8>, s: &Sample) {
    let mut f = Fields::new(buf);
    if s.has_value() {
        f.float("value", s.value);
    }
    f.string("quality", s.quality.as_str());
    if s.reason != Reason::None {
        f.string("reason", s.reason.as_str());
    }
    f.end(s.ts.nanos());
}

/// Every tag's [`sample_prefix`], built once per plan, in one buffer.
/// Encoding a sample is then one copy plus its fields: the escaping of four
/// names per sample was most of the encoding time (BENCHMARKS.md).
#[derive(Debug, Default)]
pub struct SamplePrefixes {
    bytes: Vec<u8>,
    /// `ends[i]` is where tag i's prefix ends; it starts at `ends[i - 1]`.
    ends: Vec<usize>,
}

impl SamplePrefixes {
    pub fn new(plan: &crate::engine::EnginePlan) -> Self {
        Self::with_origin(plan, None)
    }

    /// Prefixes carrying `source=<origin>` when given.
    pub fn with_origin(plan: &crate::engine::EnginePlan, origin: Option<&str>) -> Self {
        let mut p = SamplePrefixes {
            bytes: Vec::new(),
            ends: Vec::with_capacity(plan.tags.len()),
        };
        for tag in &plan.tags {
            p.push_from(&plan.station_id, tag, &plan.device(tag.device).id, origin);
        }
        // Grown by doubling: up to half of it spare (~0.5 MB at 15,000 tags).
        p.bytes.shrink_to_fit();
        p
    }

    /// Adds the prefix of the next tag id (the plan's tags, in order).
    pub fn push(&mut self, station: &str, tag: &TagInfo, device_id: &str) {
        self.push_from(station, tag, device_id, None);
    }

    /// [`SamplePrefixes::push`] with an origin tag.
    pub fn push_from(
        &mut self,
        station: &str,
        tag: &TagInfo,
        device_id: &str,
        origin: Option<&str>,
    ) {
        sample_prefix(&mut self.bytes, station, tag, device_id, origin);
        self.ends.push(self.bytes.len());
    }

    /// The prefix of `tag`, empty for a tag the plan does not know.
    pub fn get(&self, tag: crate::model::TagId) -> &[u8] {
        let i = tag.0 as usize;
        let Some(&end) = self.ends.get(i) else {
            return &[];
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..end]
    }

    /// Appends the line of `s`: its tag's prefix, then fields and time.
    pub fn encode(&self, buf: &mut Vec<u8>, s: &Sample) {
        buf.extend_from_slice(self.get(s.tag));
        encode_sample_after_prefix(buf, s);
    }
}

/// `alarm,alarm_id=,kind=,priority=,source=,station= action="raise",value=,limit=,seq=<n>i <ts>`.
pub fn encode_alarm(
    buf: &mut Vec<u8>,
    station: &str,
    alarm_id: &str,
    source: &str,
    e: &AlarmEvent,
) {
    encode_alarm_from(buf, station, alarm_id, source, e, None);
}

/// [`encode_alarm`] with an origin. The `source` tag of an alarm line names
/// the point (or balance) the alarm watches; with an origin, that name moves
/// to the `point` tag and `source` holds the origin, so every measurement
/// carries the origin under the same key (`alarm_id` still names the alarm).
pub fn encode_alarm_from(
    buf: &mut Vec<u8>,
    station: &str,
    alarm_id: &str,
    source: &str,
    e: &AlarmEvent,
    origin: Option<&str>,
) {
    measurement(buf, "alarm");
    tag(buf, "alarm_id", alarm_id);
    tag(buf, "kind", e.kind.code());
    match origin {
        Some(o) => {
            tag(buf, "point", source);
            tag(buf, "priority", e.priority.as_str());
            tag(buf, "source", o);
        }
        None => {
            tag(buf, "priority", e.priority.as_str());
            tag(buf, "source", source);
        }
    }
    tag(buf, "station", station);
    let mut f = Fields::new(buf);
    f.string("action", e.action.as_str());
    f.float("value", e.value);
    f.float("limit", e.limit);
    f.uint("seq", e.seq);
    f.end(e.ts.nanos());
}

/// `balance,group=,station=,window_s= inlet_sm3=,outlet_sm3=,linepack_change_sm3=,imbalance_sm3=,imbalance_percent=,uncertainty_percent=,coverage=,quality="" <window end>`.
///
/// `imbalance_percent` (and any other non-finite number) is left out when NaN.
/// `group` is the balance group; the station group (a station without
/// `[[balance.groups]]`, or a group with id "station") has no `group` tag,
/// so a single-balance station keeps writing the series it always wrote
/// (in InfluxQL: `WHERE "group" = ''`).
pub fn encode_balance(buf: &mut Vec<u8>, station: &str, b: &BalanceResult) {
    encode_balance_from(buf, station, b, None);
}

/// [`encode_balance`] with an origin tag `source=<origin>` when given.
pub fn encode_balance_from(
    buf: &mut Vec<u8>,
    station: &str,
    b: &BalanceResult,
    origin: Option<&str>,
) {
    measurement(buf, "balance");
    if !b.group.is_station() {
        tag(buf, "group", b.group.as_str());
    }
    if let Some(o) = origin {
        tag(buf, "source", o);
    }
    tag(buf, "station", station);
    let window_s = b.end.since(b.start) / 1_000_000_000;
    tag(buf, "window_s", itoa::Buffer::new().format(window_s));
    let mut f = Fields::new(buf);
    f.float("inlet_sm3", b.inlet_sm3);
    f.float("outlet_sm3", b.outlet_sm3);
    f.float("linepack_change_sm3", b.linepack_change_sm3);
    f.float("imbalance_sm3", b.imbalance_sm3);
    f.float("imbalance_percent", b.imbalance_percent);
    f.float("uncertainty_percent", b.uncertainty_percent);
    f.float("coverage", b.coverage);
    f.string("quality", b.quality.as_str());
    f.end(b.end.nanos());
}

/// `leak,group=,station=,window_s= start_ns=<n>i,rate_sm3_per_h=,rate_uncertainty_sm3_per_h=,rate_percent=,confidence=,method="" <detected>`.
///
/// One leak alert (the details of a `balance/LEAK` raise): the leak test's
/// window length as a tag (several tests may report one episode), the
/// estimated start as an integer field, stamped with the end of the window
/// that crossed the threshold. Non-finite numbers are left out.
pub fn encode_leak_from(buf: &mut Vec<u8>, station: &str, a: &LeakAlert, origin: Option<&str>) {
    measurement(buf, "leak");
    // As for `balance`: no tag for the station group.
    if !a.group.is_station() {
        tag(buf, "group", a.group.as_str());
    }
    if let Some(o) = origin {
        tag(buf, "source", o);
    }
    tag(buf, "station", station);
    tag(buf, "window_s", itoa::Buffer::new().format(a.window_s));
    let mut f = Fields::new(buf);
    f.uint("start_ns", u64::try_from(a.start.nanos()).unwrap_or(0));
    f.float("rate_sm3_per_h", a.rate_sm3_per_h);
    f.float("rate_uncertainty_sm3_per_h", a.rate_uncertainty_sm3_per_h);
    f.float("rate_percent", a.rate_percent);
    f.float("confidence", a.confidence);
    f.string("method", a.method());
    f.end(a.detected.nanos());
}

/// `archive_hourly,device=,meter=,station= base_volume_sm3=,flowing_volume_m3=,pressure_kpa=,temperature_c=,record=<n>i,quality="",reason="" <hour end>`.
///
/// One flow-computer archive record, at the end of the hour it covers (the
/// device's time), so reading a record again overwrites it in InfluxDB.
/// Non-finite numbers are left out; `reason` only when not good.
pub fn encode_archive(
    buf: &mut Vec<u8>,
    station: &str,
    device_id: &str,
    meter: &str,
    a: &ArchiveSample,
    origin: Option<&str>,
) {
    measurement(buf, "archive_hourly");
    tag(buf, "device", device_id);
    tag(buf, "meter", meter);
    if let Some(o) = origin {
        tag(buf, "source", o);
    }
    tag(buf, "station", station);
    let r = &a.record;
    let mut f = Fields::new(buf);
    f.float("base_volume_sm3", r.base_volume_sm3);
    f.float("flowing_volume_m3", r.flowing_volume_m3);
    f.float("pressure_kpa", r.pressure_kpa);
    f.float("temperature_c", r.temperature_c);
    f.uint("record", u64::from(r.index));
    f.string("quality", a.quality.as_str());
    if a.reason != Reason::None {
        f.string("reason", a.reason.as_str());
    }
    f.end(r.hour_end.nanos());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlarmAction, AlarmKind, DeviceId, Priority, Quality, TagId, Timestamp};

    fn info(name: &str, unit: &str) -> TagInfo {
        TagInfo {
            name: name.to_string(),
            unit: unit.into(),
            device: DeviceId(0),
            stale_after_ns: 0,
        }
    }

    fn sample(value: f64, quality: Quality, reason: Reason) -> Sample {
        Sample {
            tag: TagId(0),
            value,
            quality,
            reason,
            ts: Timestamp(1_700_000_000_123_456_789),
        }
    }

    fn s(buf: &[u8]) -> &str {
        std::str::from_utf8(buf).expect("utf8")
    }

    #[test]
    fn good_sample() {
        let mut buf = Vec::new();
        encode_sample(
            &mut buf,
            "cg01",
            &info("PT_IN1", "kPa"),
            "rtu1",
            &sample(4012.5, Quality::Good, Reason::None),
        );
        assert_eq!(
            s(&buf),
            "telemetry,device=rtu1,point=PT_IN1,station=cg01,unit=kPa value=4012.5,quality=\"good\" 1700000000123456789\n"
        );
    }

    #[test]
    fn bad_sample_without_value_and_unit() {
        let mut buf = b"previous\n".to_vec();
        encode_sample(
            &mut buf,
            "cg01",
            &info("ZS_1", ""),
            "rtu1",
            &sample(f64::NAN, Quality::Bad, Reason::Timeout),
        );
        assert_eq!(
            s(&buf),
            "previous\ntelemetry,device=rtu1,point=ZS_1,station=cg01 quality=\"bad\",reason=\"timeout\" 1700000000123456789\n"
        );
    }

    #[test]
    fn uncertain_with_value_and_exception_reason() {
        let mut buf = Vec::new();
        encode_sample(
            &mut buf,
            "s",
            &info("p", "u"),
            "d",
            &sample(-3.0, Quality::Uncertain, Reason::Exception(2)),
        );
        assert_eq!(
            s(&buf),
            "telemetry,device=d,point=p,station=s,unit=u value=-3.0,quality=\"uncertain\",reason=\"exception_02_illegal_address\" 1700000000123456789\n"
        );
    }

    #[test]
    fn tag_escaping() {
        let mut buf = Vec::new();
        encode_sample(
            &mut buf,
            "city gate,north=1",
            &info("PT=1, a", "m³/h"),
            "line\nbreak",
            &sample(1e-7, Quality::Good, Reason::None),
        );
        assert_eq!(
            s(&buf),
            "telemetry,device=line\\ break,point=PT\\=1\\,\\ a,station=city\\ gate\\,north\\=1,unit=m³/h value=1e-7,quality=\"good\" 1700000000123456789\n"
        );
    }

    #[test]
    fn string_field_and_measurement_escaping() {
        let mut buf = Vec::new();
        measurement(&mut buf, "a b,c");
        let mut f = Fields::new(&mut buf);
        f.string("k e=y", "say \"hi\" C:\\path");
        f.end(0);
        assert_eq!(
            s(&buf),
            "a\\ b\\,c k\\ e\\=y=\"say \\\"hi\\\" C:\\\\path\" 0\n"
        );
    }

    #[test]
    fn alarm_line() {
        let e = AlarmEvent {
            alarm: 3,
            kind: AlarmKind::HighHigh,
            action: AlarmAction::Raise,
            priority: Priority::Critical,
            value: 6.35,
            limit: 6.3,
            ts: Timestamp(1_700_000_001_000_000_000),
            seq: 42,
            detail: Default::default(),
        };
        let mut buf = Vec::new();
        encode_alarm(&mut buf, "cg01", "cg01/PT_OUT1/HH", "PT_OUT1", &e);
        assert_eq!(
            s(&buf),
            "alarm,alarm_id=cg01/PT_OUT1/HH,kind=HH,priority=critical,source=PT_OUT1,station=cg01 action=\"raise\",value=6.35,limit=6.3,seq=42i 1700000001000000000\n"
        );
    }

    #[test]
    fn balance_line_omits_nan_percent() {
        let b = BalanceResult {
            group: crate::model::GroupId::STATION,
            start: Timestamp::from_secs(1_700_000_000),
            end: Timestamp::from_secs(1_700_003_600),
            inlet_sm3: 0.0,
            outlet_sm3: 12.25,
            imbalance_sm3: -12.25,
            uncertainty_percent: f64::NAN,
            linepack_change_sm3: 0.0,
            imbalance_percent: f64::NAN,
            coverage: 1.0,
            quality: Quality::Good,
        };
        let mut buf = Vec::new();
        encode_balance(&mut buf, "cg01", &b);
        assert_eq!(
            s(&buf),
            "balance,station=cg01,window_s=3600 inlet_sm3=0.0,outlet_sm3=12.25,linepack_change_sm3=0.0,imbalance_sm3=-12.25,coverage=1.0,quality=\"good\" 1700003600000000000\n"
        );
        let b = BalanceResult {
            imbalance_percent: 0.5,
            inlet_sm3: 1000.0,
            quality: Quality::Uncertain,
            ..b
        };
        buf.clear();
        encode_balance(&mut buf, "cg01", &b);
        assert!(s(&buf).contains("imbalance_percent=0.5,coverage=1.0,quality=\"uncertain\""));
        let b = BalanceResult {
            uncertainty_percent: 1.25,
            linepack_change_sm3: -3.5,
            ..b
        };
        buf.clear();
        encode_balance(&mut buf, "cg01", &b);
        assert!(s(&buf).contains("linepack_change_sm3=-3.5,imbalance_sm3=-12.25,imbalance_percent=0.5,uncertainty_percent=1.25,"));
    }

    /// The station group writes the series of a single-balance station (no
    /// `group` tag); another group adds its id as the first tag (key order).
    #[test]
    fn balance_line_tags_the_group_except_the_station_group() {
        let b = BalanceResult {
            group: crate::model::GroupId::new("lineA").expect("id"),
            start: Timestamp::from_secs(1_700_000_000),
            end: Timestamp::from_secs(1_700_000_300),
            inlet_sm3: 1000.0,
            outlet_sm3: 990.0,
            imbalance_sm3: 10.0,
            uncertainty_percent: 1.5,
            linepack_change_sm3: 0.0,
            imbalance_percent: 1.0,
            coverage: 1.0,
            quality: Quality::Good,
        };
        let mut buf = Vec::new();
        encode_balance_from(&mut buf, "cg01", &b, Some("replay"));
        assert_eq!(
            s(&buf),
            "balance,group=lineA,source=replay,station=cg01,window_s=300 inlet_sm3=1000.0,outlet_sm3=990.0,linepack_change_sm3=0.0,imbalance_sm3=10.0,imbalance_percent=1.0,uncertainty_percent=1.5,coverage=1.0,quality=\"good\" 1700000300000000000\n"
        );
        buf.clear();
        let station = BalanceResult {
            group: crate::model::GroupId::STATION,
            ..b
        };
        encode_balance(&mut buf, "cg01", &station);
        assert!(
            s(&buf).starts_with("balance,station=cg01,window_s=300 "),
            "{}",
            s(&buf)
        );
    }

    #[test]
    fn origin_tag_sits_in_key_order_and_alarm_point_moves_to_point() {
        let mut buf = Vec::new();
        encode_sample_from(
            &mut buf,
            "cg01",
            &info("PT_IN1", "kPa"),
            "rtu1",
            &sample(1.5, Quality::Good, Reason::None),
            Some("replay"),
        );
        assert_eq!(
            s(&buf),
            "telemetry,device=rtu1,point=PT_IN1,source=replay,station=cg01,unit=kPa value=1.5,quality=\"good\" 1700000000123456789\n"
        );
        let e = AlarmEvent {
            alarm: 0,
            kind: AlarmKind::High,
            action: AlarmAction::Clear,
            priority: Priority::Medium,
            value: 1.0,
            limit: 2.0,
            ts: Timestamp(5),
            seq: 1,
            detail: Default::default(),
        };
        buf.clear();
        encode_alarm_from(&mut buf, "cg01", "cg01/P/H", "P", &e, Some("replay"));
        assert_eq!(
            s(&buf),
            "alarm,alarm_id=cg01/P/H,kind=H,point=P,priority=medium,source=replay,station=cg01 action=\"clear\",value=1.0,limit=2.0,seq=1i 5\n"
        );
    }

    #[test]
    fn archive_line_at_hour_end() {
        use crate::model::{ArchiveRecord, ArchiveSample};
        let a = ArchiveSample {
            device: DeviceId(0),
            record: ArchiveRecord {
                index: 7,
                hour_end: Timestamp::from_secs(1_767_229_200),
                base_volume_sm3: 30_000.5,
                flowing_volume_m3: 2_000.25,
                pressure_kpa: 3_500.0,
                temperature_c: f64::NAN,
            },
            quality: Quality::Bad,
            reason: Reason::NotFinite,
        };
        let mut buf = Vec::new();
        encode_archive(&mut buf, "cg01", "fc-in", "IN1", &a, None);
        assert_eq!(
            s(&buf),
            "archive_hourly,device=fc-in,meter=IN1,station=cg01 base_volume_sm3=30000.5,flowing_volume_m3=2000.25,pressure_kpa=3500.0,record=7i,quality=\"bad\",reason=\"not_finite\" 1767229200000000000\n"
        );
    }

    #[test]
    fn float_round_trips() {
        for v in [
            0.1,
            1.0 / 3.0,
            123_456_789.123_456_79,
            1e300,
            -2.5e-300,
            f64::MIN_POSITIVE,
        ] {
            let mut buf = Vec::new();
            Fields::new(&mut buf).float("v", v);
            let text = s(&buf).trim_start_matches(" v=");
            assert_eq!(text.parse::<f64>().expect("parse"), v);
        }
    }

    #[test]
    fn leak_alert_line() {
        let a = LeakAlert {
            group: crate::model::GroupId::STATION,
            window_s: 60,
            start: crate::model::Timestamp(1_700_000_000_000_000_000),
            detected: crate::model::Timestamp(1_700_000_180_000_000_000),
            rate_sm3_per_h: 1500.5,
            rate_uncertainty_sm3_per_h: 61.25,
            rate_percent: 5.0,
            confidence: 1.0,
        };
        let mut buf = Vec::new();
        encode_leak_from(&mut buf, "cg01", &a, Some("replay"));
        assert_eq!(
            s(&buf),
            "leak,source=replay,station=cg01,window_s=60 start_ns=1700000000000000000i,rate_sm3_per_h=1500.5,rate_uncertainty_sm3_per_h=61.25,rate_percent=5.0,confidence=1.0,method=\"cusum_compensated_volume_balance\" 1700000180000000000\n"
        );
        let a = LeakAlert {
            group: crate::model::GroupId::new("lineB").expect("id"),
            ..a
        };
        buf.clear();
        encode_leak_from(&mut buf, "cg01", &a, None);
        assert!(
            s(&buf).starts_with("leak,group=lineB,station=cg01,window_s=60 start_ns="),
            "{}",
            s(&buf)
        );
    }
}
