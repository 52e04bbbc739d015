//! Pure validation of a parsed [`Config`]: cross-references, ranges and
//! consistency. No I/O (secrets are resolved later, at start-up).

use super::{Config, MeterRole, Problem, Secret};
use crate::sinks::influxdb::config::InfluxApi;
use crate::sources::modbus::{
    DataType, DeviceConfig, PointConfig, SerialConfig, Transport, WordOrder,
};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::time::Duration;

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            line: None,
            message: message.into(),
        });
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Modbus addressing and type rules of one point (see `sources/modbus/config.rs`).
/// Where a point is defined, as a config key (`devices[3].points[7]`).
#[derive(Debug, Clone, Copy)]
enum PointAt {
    Device(usize, usize),
    Mqtt(usize, usize),
}

impl std::fmt::Display for PointAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointAt::Device(d, p) => write!(f, "devices[{d}].points[{p}]"),
            PointAt::Mqtt(s, p) => write!(f, "mqtt_sources[{s}].points[{p}]"),
        }
    }
}

fn modbus_point(p: &mut Problems, pk: PointAt, d: &DeviceConfig, pt: &PointConfig) {
    // An address_base above 1 is reported once, on the device key.
    if d.address_base <= 1 && pt.address < u16::from(d.address_base) {
        p.add(
            format!("{pk}.address"),
            format!(
                "expected at least {} because the device numbers registers from address_base = {}",
                d.address_base, d.address_base
            ),
        );
    }
    let bits = pt.register.is_bits();
    if bits && pt.data_type != DataType::Bit {
        p.add(
            format!("{pk}.type"),
            "coils and discrete inputs hold single bits: expected type = \"bit\"",
        );
    }
    match (pt.data_type, pt.bit) {
        (DataType::Bit, None) if !bits => p.add(
            format!("{pk}.bit"),
            "a bit inside a holding or input register needs bit = 0..15",
        ),
        (DataType::Bit, Some(b)) if bits || b > 15 => p.add(
            format!("{pk}.bit"),
            "expected 0..15 for a bit inside a register; remove it for a coil or discrete input",
        ),
        (DataType::Bit, _) => {}
        (_, Some(_)) => p.add(format!("{pk}.bit"), "applies only to type = \"bit\""),
        (_, None) => {}
    }
    match (pt.data_type, pt.length) {
        (DataType::String, Some(1..=125)) => {}
        (DataType::String, _) => p.add(
            format!("{pk}.length"),
            "a string point needs length = 1..125 (registers, two ASCII characters each)",
        ),
        (_, Some(_)) => p.add(format!("{pk}.length"), "applies only to type = \"string\""),
        (_, None) => {}
    }
    if d.enron && (pt.data_type.registers() == 4 || pt.data_type == DataType::String) {
        p.add(
            format!("{pk}.type"),
            "Enron mode (enron = true) holds 16- and 32-bit values only; use a separate device entry without enron for 64-bit or string points",
        );
    }
    if pt.data_type == DataType::String
        && (pt.scale != 1.0 || pt.offset != 0.0 || pt.min.is_some() || pt.max.is_some())
    {
        p.add(
            format!("{pk}.type"),
            "a string point takes no scale, offset, min or max",
        );
    }
    if let (Some(lo), Some(hi)) = (pt.raw_min, pt.raw_max)
        && lo >= hi
    {
        p.add(
            format!("{pk}.raw_min"),
            format!("expected raw_min < raw_max, got raw_min {lo} and raw_max {hi}"),
        );
    }
}

/// Transport and serial settings of one device (see `sources/modbus/config.rs`).
fn modbus_transport(p: &mut Problems, dk: &str, d: &DeviceConfig) {
    let t = d.transport.as_str();
    match d.transport {
        Transport::Tcp | Transport::RtuOverTcp => {
            if d.host.trim().is_empty() {
                p.add(
                    format!("{dk}.host"),
                    format!(
                        "expected a host name or IP address for transport = \"{t}\" (for a local serial port use transport = \"rtu\" with [devices.serial])"
                    ),
                );
            }
            if d.port == 0 {
                p.add(format!("{dk}.port"), "expected a TCP port 1-65535, got 0");
            }
            if d.serial.is_some() {
                p.add(
                    format!("{dk}.serial"),
                    format!(
                        "applies only to transport = \"rtu\" (a local serial port); this device has transport = \"{t}\""
                    ),
                );
            }
        }
        Transport::Rtu => {
            if !d.host.is_empty() {
                p.add(
                    format!("{dk}.host"),
                    "applies only to transport = \"tcp\" or \"rtu_over_tcp\"; a transport = \"rtu\" device is on the serial port of [devices.serial]",
                );
            }
            if d.port != 502 {
                p.add(
                    format!("{dk}.port"),
                    "applies only to transport = \"tcp\" or \"rtu_over_tcp\"",
                );
            }
            match &d.serial {
                None => p.add(
                    format!("{dk}.serial"),
                    "transport = \"rtu\" needs a [devices.serial] table with path, baud and parity",
                ),
                Some(s) => serial_line(p, &format!("{dk}.serial"), d, s),
            }
        }
    }
    if d.transport != Transport::Tcp && !(1..=247).contains(&d.unit_id) {
        p.add(
            format!("{dk}.unit_id"),
            format!(
                "expected 1-247 on an RTU bus (0 is broadcast, which no device answers; 248-255 are reserved), got {}",
                d.unit_id
            ),
        );
    }
}

/// Line settings of a serial port, and whether the device's timeout leaves
/// time for its largest answer to cross the line.
fn serial_line(p: &mut Problems, sk: &str, d: &DeviceConfig, s: &SerialConfig) {
    if s.path.trim().is_empty() {
        p.add(
            format!("{sk}.path"),
            "expected the serial device path, e.g. \"/dev/ttyUSB0\", got an empty string",
        );
    }
    if !(300..=1_000_000).contains(&s.baud) {
        p.add(
            format!("{sk}.baud"),
            format!(
                "expected a line speed of 300-1000000 baud (e.g. 9600, 19200), got {}",
                s.baud
            ),
        );
    }
    if s.data_bits != 8 {
        p.add(
            format!("{sk}.data_bits"),
            format!(
                "expected 8 (Modbus RTU frames are 8-bit; 7 data bits is Modbus ASCII, which gaswatch does not speak), got {}",
                s.data_bits
            ),
        );
    }
    if !(1..=2).contains(&s.stop_bits) {
        p.add(
            format!("{sk}.stop_bits"),
            format!("expected 1 or 2, got {}", s.stop_bits),
        );
    }
    if (300..=1_000_000).contains(&s.baud) && s.data_bits == 8 {
        // Request (8 bytes) + turnaround + largest answer (5 + 2 x registers).
        let chars = 8 + 5 + 2 * u32::from(d.max_registers_per_read.clamp(1, 125));
        let wire = s.char_time(chars);
        if d.timeout <= wire {
            p.add(
                format!("{sk}.baud"),
                format!(
                    "at {} baud a request and an answer of {} registers take {:?} on the line, \
                     longer than the device's timeout of {:?}: raise timeout or lower max_registers_per_read",
                    s.baud, d.max_registers_per_read, wire, d.timeout
                ),
            );
        }
    }
}

/// Devices that share a link must agree on how it works: one host:port is
/// either Modbus/TCP or RTU over TCP, and one serial path has one line speed,
/// parity and framing.
fn shared_links(p: &mut Problems, devices: &[DeviceConfig]) {
    let mut tcp: HashMap<(&str, u16), (usize, Transport)> = HashMap::new();
    let mut serial: HashMap<&str, (usize, &SerialConfig)> = HashMap::new();
    for (di, d) in devices.iter().enumerate() {
        match (d.transport, &d.serial) {
            (Transport::Tcp | Transport::RtuOverTcp, _) => {
                let first = *tcp
                    .entry((d.host.as_str(), d.port))
                    .or_insert((di, d.transport));
                if first.1 != d.transport {
                    p.add(
                        format!("devices[{di}].transport"),
                        format!(
                            "{}:{} is already used with transport = \"{}\" by devices[{}]; one port speaks one framing",
                            d.host,
                            d.port,
                            first.1.as_str(),
                            first.0
                        ),
                    );
                }
            }
            (Transport::Rtu, Some(s)) => {
                let (first, line) = *serial.entry(s.path.as_str()).or_insert((di, s));
                if line != s {
                    p.add(
                        format!("devices[{di}].serial"),
                        format!(
                            "{} is already used by devices[{first}] with baud {}, parity {}, {} data bits, {} stop bits; \
                             every device on one serial bus uses the same line settings",
                            s.path, line.baud, line.parity.as_str(), line.data_bits, line.stop_bits
                        ),
                    );
                }
            }
            (Transport::Rtu, None) => {}
        }
    }
}

/// A flow computer's archive (`[devices.archive]`): the meter it belongs
/// to, and a register map that fits, reads one record per request at least,
/// and overlaps neither itself nor the device's holding-register points.
fn archive(
    p: &mut Problems,
    ak: &str,
    d: &DeviceConfig,
    a: &crate::sources::modbus::ArchiveConfig,
    meters: &HashSet<&str>,
) {
    use crate::sources::modbus::{ARCHIVE_HEADER_WORDS, ARCHIVE_RECORD_WORDS, RegisterKind};
    if !meters.contains(a.meter.as_str()) {
        p.add(
            format!("{ak}.meter"),
            format!("expected the name of a [[meters]] entry, got {:?}", a.meter),
        );
    }
    if a.capacity == 0 {
        p.add(format!("{ak}.capacity"), "expected at least 1 record");
    }
    if a.interval < Duration::from_millis(10) {
        p.add(
            format!("{ak}.interval"),
            format!("expected at least 10ms, got {:?}", a.interval),
        );
    }
    if d.max_registers_per_read < ARCHIVE_RECORD_WORDS {
        p.add(
            ak.to_string(),
            format!(
                "an archive record is {ARCHIVE_RECORD_WORDS} registers but the device reads at most {} per request",
                d.max_registers_per_read
            ),
        );
    }
    let base = u32::from(d.address_base);
    let header = (u32::from(a.address), u32::from(ARCHIVE_HEADER_WORDS));
    let ring = (u32::from(a.records_address), a.ring_words());
    for (key, (start, len)) in [("address", header), ("records_address", ring)] {
        if start < base {
            p.add(
                format!("{ak}.{key}"),
                format!("expected at least {base} because the device numbers registers from address_base = {base}"),
            );
        } else if start - base + len > 65536 {
            p.add(
                format!("{ak}.{key}"),
                format!("expected the archive to end at or below register 65535, but {start} + {len} registers passes it"),
            );
        }
    }
    let overlaps = |(s1, l1): (u32, u32), (s2, l2): (u32, u32)| s1 < s2 + l2 && s2 < s1 + l1;
    if overlaps(header, ring) {
        p.add(
            format!("{ak}.records_address"),
            format!(
                "the record ring ({} registers from {}) overlaps the header ({} registers from {})",
                ring.1, ring.0, header.1, header.0
            ),
        );
    }
    for pt in d
        .points
        .iter()
        .filter(|pt| pt.register == RegisterKind::Holding)
    {
        let span = (
            u32::from(pt.address),
            u32::from(pt.register_numbers(d.enron)),
        );
        if overlaps(span, header) || overlaps(span, ring) {
            p.add(
                ak.to_string(),
                format!(
                    "the archive registers overlap holding point {:?} at {}",
                    pt.name, pt.address
                ),
            );
        }
    }
}

pub(super) fn validate(c: &Config) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    if !is_ident(&c.station.id) {
        p.add(
            "station.id",
            format!(
                "expected 1-64 letters, digits, '_', '-' or '.', got {:?}",
                c.station.id
            ),
        );
    }

    // Devices and points.
    let mut device_ids = HashSet::new();
    let mut points: HashMap<&str, PointAt> =
        HashMap::with_capacity(c.devices.iter().map(|d| d.points.len()).sum());
    for (di, d) in c.devices.iter().enumerate() {
        let dk = format!("devices[{di}]");
        if !is_ident(&d.id) {
            p.add(
                format!("{dk}.id"),
                format!(
                    "expected 1-64 letters, digits, '_', '-' or '.', got {:?}",
                    d.id
                ),
            );
        } else if !device_ids.insert(d.id.as_str()) {
            p.add(
                format!("{dk}.id"),
                format!("device id {:?} is used twice", d.id),
            );
        }
        modbus_transport(&mut p, &dk, d);
        if d.poll_interval < Duration::from_millis(10) {
            p.add(
                format!("{dk}.poll_interval"),
                format!("expected at least 10ms, got {:?}", d.poll_interval),
            );
        }
        if d.timeout < Duration::from_millis(1) {
            p.add(format!("{dk}.timeout"), "expected at least 1ms");
        }
        if !(1..=125).contains(&d.max_registers_per_read) {
            p.add(
                format!("{dk}.max_registers_per_read"),
                format!(
                    "expected 1-125 (the Modbus limit for FC03/04), got {}",
                    d.max_registers_per_read
                ),
            );
        }
        if d.pause_after_failed_cycles > 0 && d.pause_for < Duration::from_millis(10) {
            p.add(
                format!("{dk}.pause_for"),
                format!("expected at least 10ms, got {:?}", d.pause_for),
            );
        }
        if d.config_error_retry < Duration::from_millis(10) {
            p.add(
                format!("{dk}.config_error_retry"),
                format!("expected at least 10ms, got {:?}", d.config_error_retry),
            );
        }
        let mut group_names = HashSet::new();
        for (gi, g) in d.groups.iter().enumerate() {
            let gk = format!("{dk}.groups[{gi}]");
            if !group_names.insert(g.name.as_str()) {
                p.add(
                    format!("{gk}.name"),
                    format!("group name {:?} is used twice", g.name),
                );
            }
            let base = d.poll_interval.as_nanos().max(1);
            if g.interval.as_nanos() < base || g.interval.as_nanos() % base != 0 {
                p.add(
                    format!("{gk}.interval"),
                    format!(
                        "expected a multiple of the device's poll_interval ({:?}), got {:?}",
                        d.poll_interval, g.interval
                    ),
                );
            }
        }
        for (pi, pt) in d.points.iter().enumerate() {
            if let Some(g) = &pt.group
                && !group_names.contains(g.as_str())
            {
                p.add(
                    format!("{dk}.points[{pi}].group"),
                    format!(
                        "expected the name of one of this device's [[devices.groups]], got {g:?}"
                    ),
                );
            }
        }
        if d.address_base > 1 {
            p.add(
                format!("{dk}.address_base"),
                format!("expected 0 or 1, got {}", d.address_base),
            );
        }
        if d.points.is_empty() {
            p.add(
                format!("{dk}.points"),
                "expected at least one [[devices.points]] entry",
            );
        }
        for (pi, pt) in d.points.iter().enumerate() {
            // The key is formatted only for a problem: 15,000 points must
            // not cost 15,000 strings at every start.
            let pk = PointAt::Device(di, pi);
            register_point(&mut p, &mut points, &pt.name, pk);
            let width = u32::from(pt.register_numbers(d.enron));
            modbus_point(&mut p, pk, d, pt);
            if u32::from(pt.address) + width > 65536 {
                p.add(
                    format!("{pk}.address"),
                    format!("expected the value to end at or below register 65535, but {} + {width} registers passes it", pt.address),
                );
            }
            if width > u32::from(d.max_registers_per_read) {
                p.add(
                    format!("{pk}.type"),
                    format!(
                        "needs {width} registers but the device reads at most {} per request",
                        d.max_registers_per_read
                    ),
                );
            }
            if matches!(pt.order, WordOrder::CDAB | WordOrder::DCBA)
                && !pt.data_type.is_multi_word()
            {
                p.add(
                    format!("{pk}.order"),
                    "word order applies only to 32-bit types and 64-bit types; a 16-bit point takes ABCD or BADC (byte swap)",
                );
            }
            if !pt.scale.is_finite() || pt.scale == 0.0 {
                p.add(
                    format!("{pk}.scale"),
                    format!("expected a finite, non-zero number, got {}", pt.scale),
                );
            }
            if !pt.offset.is_finite() {
                p.add(format!("{pk}.offset"), "expected a finite number");
            }
            if let (Some(lo), Some(hi)) = (pt.min, pt.max)
                && lo >= hi
            {
                p.add(
                    format!("{pk}.min"),
                    format!("expected min < max, got min {lo} and max {hi}"),
                );
            }
        }
    }

    shared_links(&mut p, &c.devices);

    // MQTT sources: their own checks, then their point names join the station's.
    for prob in crate::sources::mqtt::config::validate(&c.mqtt_sources) {
        p.0.push(prob);
    }
    for (si, src) in c.mqtt_sources.iter().enumerate() {
        check_secret(
            &mut p,
            &format!("mqtt_sources[{si}].password"),
            src.password.as_ref(),
        );
        for (pi, pt) in src.points.iter().enumerate() {
            register_point(&mut p, &mut points, &pt.name, PointAt::Mqtt(si, pi));
        }
    }

    // Meters.
    let mut meter_names = HashSet::new();
    for (mi, m) in c.meters.iter().enumerate() {
        let mk = format!("meters[{mi}]");
        if !meter_names.insert(m.name.as_str()) {
            p.add(
                format!("{mk}.name"),
                format!("meter name {:?} is used twice", m.name),
            );
        }
        for (field, point) in [
            ("flow", Some(&m.flow)),
            ("pressure", m.pressure.as_ref()),
            ("temperature", m.temperature.as_ref()),
        ] {
            if let Some(point) = point
                && !points.contains_key(point.as_str())
            {
                p.add(
                    format!("{mk}.{field}"),
                    format!("expected the name of a point defined under [[devices.points]], got {point:?}"),
                );
            }
        }
    }
    for (di, d) in c.devices.iter().enumerate() {
        if let Some(a) = &d.archive {
            archive(
                &mut p,
                &format!("devices[{di}].archive"),
                d,
                a,
                &meter_names,
            );
        }
    }
    let inlets = c
        .meters
        .iter()
        .filter(|m| m.role == MeterRole::Inlet)
        .count();
    let outlets = c.meters.len() - inlets;
    // With groups, each group is checked on its own (`balance_groups`).
    if c.balance.groups.is_empty() && !c.meters.is_empty() && (inlets == 0 || outlets == 0) {
        p.add(
            "meters",
            format!("a balance needs at least one inlet and one outlet meter, found {inlets} inlet and {outlets} outlet"),
        );
    }

    // Balance.
    if c.balance.window < Duration::from_secs(1) {
        p.add(
            "balance.window",
            format!("expected at least 1s, got {:?}", c.balance.window),
        );
    }
    if !(c.balance.limit_percent.is_finite() && c.balance.limit_percent > 0.0) {
        p.add(
            "balance.limit_percent",
            format!(
                "expected a positive percentage, got {}",
                c.balance.limit_percent
            ),
        );
    }
    if !(0.0..=1.0).contains(&c.balance.min_coverage) {
        p.add(
            "balance.min_coverage",
            format!(
                "expected a fraction 0.0-1.0, got {}",
                c.balance.min_coverage
            ),
        );
    }

    validate_balance_extras(c, &points, &mut p);
    balance_groups(c, &mut p);

    // Limits.
    for (li, l) in c.limits.iter().enumerate() {
        let lk = format!("limits[{li}]");
        if !points.contains_key(l.point.as_str()) {
            p.add(
                format!("{lk}.point"),
                format!(
                    "expected the name of a point defined under [[devices.points]], got {:?}",
                    l.point
                ),
            );
        }
        let levels = [("ll", l.ll), ("l", l.l), ("h", l.h), ("hh", l.hh)];
        let set: Vec<(&str, f64)> = levels
            .iter()
            .filter_map(|(n, v)| v.map(|v| (*n, v)))
            .collect();
        if set.is_empty() && l.rate_per_min.is_none() && !l.quality_alarm {
            p.add(
                lk.clone(),
                "expected at least one of hh, h, l, ll, rate_per_min, quality_alarm",
            );
        }
        for (n, v) in &set {
            if !v.is_finite() {
                p.add(format!("{lk}.{n}"), "expected a finite number");
            }
        }
        for w in set.windows(2) {
            if w[0].1 >= w[1].1 {
                p.add(
                    format!("{lk}.{}", w[1].0),
                    format!(
                        "expected ll < l < h < hh, but {} = {} is not above {} = {}",
                        w[1].0, w[1].1, w[0].0, w[0].1
                    ),
                );
            }
        }
        if let Some(db) = l.deadband
            && !(db.is_finite() && db >= 0.0)
        {
            p.add(
                format!("{lk}.deadband"),
                format!("expected a non-negative number, got {db}"),
            );
        }
    }

    // Sinks.
    let s = &c.sinks;
    if s.file.is_none() && s.influxdb.is_none() && s.mqtt.is_none() {
        p.add(
            "sinks",
            "expected at least one of [sinks.file], [sinks.influxdb] or [sinks.mqtt]; without one, data would go nowhere",
        );
    }
    if let Some(i) = &s.influxdb {
        if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
            p.add(
                "sinks.influxdb.url",
                format!("expected an http:// or https:// URL, got {:?}", i.url),
            );
        }
        match i.api {
            InfluxApi::V1 => {
                if i.database.as_deref().is_none_or(str::is_empty) {
                    p.add(
                        "sinks.influxdb.database",
                        "expected a database name for api = \"v1\"",
                    );
                }
            }
            InfluxApi::V2 => {
                if i.org.as_deref().is_none_or(str::is_empty) {
                    p.add(
                        "sinks.influxdb.org",
                        "expected an organisation for api = \"v2\"",
                    );
                }
                if i.bucket.as_deref().is_none_or(str::is_empty) {
                    p.add(
                        "sinks.influxdb.bucket",
                        "expected a bucket for api = \"v2\"",
                    );
                }
                if i.token.is_none() {
                    p.add("sinks.influxdb.token", "expected a token `{ env = \"VAR\" }` or `{ file = \"/path\" }` for api = \"v2\"");
                }
            }
        }
        if i.batch_size == 0 {
            p.add("sinks.influxdb.batch_size", "expected at least 1");
        }
        check_secret(&mut p, "sinks.influxdb.token", i.token.as_ref());
        check_secret(&mut p, "sinks.influxdb.password", i.password.as_ref());
    }
    if let Some(m) = &s.mqtt {
        if m.host.trim().is_empty() {
            p.add("sinks.mqtt.host", "expected a broker host name or address");
        }
        if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#']) {
            p.add(
                "sinks.mqtt.topic_prefix",
                "expected a non-empty topic level without '+' or '#'",
            );
        }
        check_secret(&mut p, "sinks.mqtt.password", m.password.as_ref());
        if let Some(t) = &m.tls
            && t.client_cert_file.is_some() != t.client_key_file.is_some()
        {
            p.add(
                "sinks.mqtt.tls",
                "expected both client_cert_file and client_key_file for client certificate authentication, or neither",
            );
        }
    }
    if let Some(i) = &s.influxdb
        && i.tls_ca_file.is_some()
        && !i.url.starts_with("https://")
    {
        p.add(
            "sinks.influxdb.tls_ca_file",
            format!("applies only to an https:// URL, got {:?}", i.url),
        );
    }
    if let Some(h) = &c.http
        && h.listen.parse::<std::net::SocketAddr>().is_err()
    {
        p.add(
            "http.listen",
            format!(
                "expected IP:port such as \"127.0.0.1:9810\", got {:?}",
                h.listen
            ),
        );
    }
    let names: HashSet<&str> = c
        .devices
        .iter()
        .flat_map(|d| d.points.iter().map(|pt| pt.name.as_str()))
        .collect();
    for (li, l) in c.limits.iter().enumerate() {
        if let Some(s) = &l.suppressed_by
            && !names.contains(s.as_str())
        {
            p.add(
                format!("limits[{li}].suppressed_by"),
                format!("expected the name of a point, got {s:?}"),
            );
        }
        if let Some(r) = l.rate_per_min
            && !(r.is_finite() && r > 0.0)
        {
            p.add(
                format!("limits[{li}].rate_per_min"),
                format!("expected a positive number, got {r}"),
            );
        }
    }
    super::alarms::validate(&c.alarms, &c.digital_alarms, &names, &mut p.0);
    if let Some(sp) = &s.sparkplug {
        for prob in crate::sinks::sparkplug::config::validate(sp) {
            p.0.push(prob);
        }
        check_secret(&mut p, "sinks.sparkplug.password", sp.password.as_ref());
    }
    if c.spool.max_bytes < 1 << 20 {
        p.add(
            "spool.max_bytes",
            format!(
                "expected at least 1048576 (1 MiB), got {}",
                c.spool.max_bytes
            ),
        );
    }
    p.0
}

/// Checks a point name and records where it is defined; a name used twice
/// (by any source) is reported at its second place with the first one.
fn register_point<'a>(
    p: &mut Problems,
    points: &mut HashMap<&'a str, PointAt>,
    name: &'a str,
    key: PointAt,
) {
    if !is_ident(name) {
        p.add(
            format!("{key}.name"),
            format!("expected 1-64 letters, digits, '_', '-' or '.', got {name:?}"),
        );
    } else if let Some(first) = points.get(name) {
        p.add(
            format!("{key}.name"),
            format!("point name {name:?} is already used at {first}; names must be unique in the station"),
        );
    } else {
        points.insert(name, key);
    }
}

fn check_secret(p: &mut Problems, key: &str, s: Option<&Secret>) {
    if let Some(msg) = s.and_then(Secret::shape_problem) {
        p.add(key, msg);
    }
}

/// Meter kinds, line-pack elements, extra windows, leak test and `[gas]`.
fn validate_balance_extras(c: &Config, points: &HashMap<&str, PointAt>, p: &mut Problems) {
    let point_problem = |p: &mut Problems, key: String, point: &str| {
        if !points.contains_key(point) {
            p.add(
                key,
                format!(
                    "expected the name of a point defined under [[devices.points]], got {point:?}"
                ),
            );
        }
    };
    for (mi, m) in c.meters.iter().enumerate() {
        let mk = format!("meters[{mi}]");
        if m.kind.is_line() {
            for (field, v) in [("pressure", &m.pressure), ("temperature", &m.temperature)] {
                if v.is_none() {
                    p.add(
                        format!("{mk}.{field}"),
                        format!("kind {:?} is at line conditions: a {field} point is required for the conversion", m.kind),
                    );
                }
            }
        }
        if let Some(r) = m.rollover {
            if !m.kind.is_totaliser() {
                p.add(format!("{mk}.rollover"), "only totaliser kinds roll over");
            } else if !(r.is_finite() && r > 0.0) {
                p.add(
                    format!("{mk}.rollover"),
                    format!("expected a positive number, got {r}"),
                );
            }
        }
        if !(m.uncertainty_percent.is_finite() && (0.0..=20.0).contains(&m.uncertainty_percent)) {
            p.add(
                format!("{mk}.uncertainty_percent"),
                format!("expected 0-20 %, got {}", m.uncertainty_percent),
            );
        }
    }
    let mut names = HashSet::new();
    for (i, l) in c.linepack.iter().enumerate() {
        let k = format!("linepack[{i}]");
        if !is_ident(&l.name) || !names.insert(l.name.as_str()) {
            p.add(
                format!("{k}.name"),
                format!(
                    "expected a unique name of 1-64 letters, digits, '_', '-' or '.', got {:?}",
                    l.name
                ),
            );
        }
        if !(l.volume_m3.is_finite() && l.volume_m3 > 0.0) {
            p.add(
                format!("{k}.volume_m3"),
                format!("expected a positive geometric volume, got {}", l.volume_m3),
            );
        }
        point_problem(p, format!("{k}.pressure"), &l.pressure);
        point_problem(p, format!("{k}.temperature"), &l.temperature);
        if !(l.uncertainty_percent.is_finite() && (0.0..=50.0).contains(&l.uncertainty_percent)) {
            p.add(
                format!("{k}.uncertainty_percent"),
                format!("expected 0-50 %, got {}", l.uncertainty_percent),
            );
        }
        if let Some(r) = l.rupture_kpa_per_min
            && !(r.is_finite() && r > 0.0)
        {
            p.add(
                format!("{k}.rupture_kpa_per_min"),
                format!("expected a positive rate, got {r}"),
            );
        }
    }
    for (i, w) in c.balance.longer_windows().iter().enumerate() {
        if *w <= c.balance.window || w.as_secs() > 7 * 86_400 {
            p.add(
                format!("balance.longer_windows[{i}]"),
                format!("expected a window longer than balance.window ({:?}) and at most 7 days, got {w:?}", c.balance.window),
            );
        }
    }
    let edge = c.balance.edge();
    if edge > c.balance.window / 4 {
        p.add(
            "balance.edge",
            format!(
                "expected at most a quarter of balance.window ({:?}), got {edge:?}",
                c.balance.window / 4
            ),
        );
    }
    if c.balance.contract_hour > 23 {
        p.add(
            "balance.contract_hour",
            format!("expected an hour 0-23, got {}", c.balance.contract_hour),
        );
    }
    if !(-12..=14).contains(&c.balance.utc_offset_hours) {
        p.add(
            "balance.utc_offset_hours",
            format!("expected -12..=14, got {}", c.balance.utc_offset_hours),
        );
    }
    let l = &c.balance.leak;
    if !(l.min_leak_percent.is_finite() && l.min_leak_percent > 0.0 && l.min_leak_percent < 50.0) {
        p.add(
            "balance.leak.min_leak_percent",
            format!("expected 0-50 %, got {}", l.min_leak_percent),
        );
    }
    if !(l.threshold_sigma.is_finite() && l.threshold_sigma > 0.0) {
        p.add(
            "balance.leak.threshold_sigma",
            format!("expected a positive number, got {}", l.threshold_sigma),
        );
    }
    if l.bias_windows == 0 {
        p.add("balance.leak.bias_windows", "expected at least 1");
    }
    if l.enabled && l.tests.is_empty() {
        p.add(
            "balance.leak.tests",
            "expected at least one test window (or set enabled = false)",
        );
    }
    for (i, t) in l.tests.iter().enumerate() {
        let k = format!("balance.leak.tests[{i}]");
        if t.window < Duration::from_secs(20) || t.window.as_secs() > 86_400 {
            p.add(
                format!("{k}.window"),
                format!("expected a window of 20s to 1 day, got {:?}", t.window),
            );
        }
        if let Some(edge) = t.edge
            && (edge.is_zero() || edge > t.window / 4)
        {
            p.add(
                format!("{k}.edge"),
                format!(
                    "expected a half-width above 0 and at most a quarter of the window ({:?}), got {edge:?}",
                    t.window / 4
                ),
            );
        }
        if let Some(m) = t.min_leak_percent
            && !(m.is_finite() && m > 0.0 && m < 50.0)
        {
            p.add(
                format!("{k}.min_leak_percent"),
                format!("expected 0-50 %, got {m}"),
            );
        }
        if let Some(h) = t.threshold_sigma
            && !(h.is_finite() && h > 0.0)
        {
            p.add(
                format!("{k}.threshold_sigma"),
                format!("expected a positive number, got {h}"),
            );
        }
    }
    for (key, msg) in c.gas.problems() {
        p.add(format!("gas.{key}"), msg);
    }
    if let Some(gc) = &c.gas.gc {
        for (component, point) in &gc.components {
            point_problem(p, format!("gas.gc.components.{component}"), point);
        }
    }
}

/// `[[balance.groups]]`: ids, members, and every meter and line-pack element
/// in at least one group. A meter in no group is an error, not a warning:
/// its gas would be in no balance at all, and a leak on its line could
/// never be seen (a meter only watched, not balanced, is a plain point).
fn balance_groups(c: &Config, p: &mut Problems) {
    if c.balance.groups.is_empty() {
        return;
    }
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut meter_used = vec![false; c.meters.len()];
    let mut element_used = vec![false; c.linepack.len()];
    for (gi, g) in c.balance.groups.iter().enumerate() {
        let gk = format!("balance.groups[{gi}]");
        if crate::model::GroupId::new(&g.id).is_none() {
            p.add(
                format!("{gk}.id"),
                format!(
                    "expected 1-{} letters, digits, '_' or '-', got {:?}",
                    crate::model::GroupId::MAX_LEN,
                    g.id
                ),
            );
        } else if let Some(first) = ids.insert(g.id.as_str(), gi) {
            ids.insert(g.id.as_str(), first);
            p.add(
                format!("{gk}.id"),
                format!(
                    "group id {:?} is already used by balance.groups[{first}]; ids must be unique",
                    g.id
                ),
            );
        }
        if g.inlet.is_empty() {
            p.add(
                format!("{gk}.inlet"),
                format!(
                    "group {:?} needs at least one inlet meter (its 输差率 is a share of the inlet)",
                    g.id
                ),
            );
        } else if g.outlet.is_empty() && g.linepack.is_empty() {
            p.add(
                format!("{gk}.outlet"),
                format!(
                    "group {:?} needs at least one outlet meter or line-pack element; otherwise all of its inlet counts as imbalance",
                    g.id
                ),
            );
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (list, names) in [("inlet", &g.inlet), ("outlet", &g.outlet)] {
            for (j, name) in names.iter().enumerate() {
                let k = format!("{gk}.{list}[{j}]");
                match c.meters.iter().position(|m| &m.name == name) {
                    None => p.add(
                        k.clone(),
                        format!(
                            "group {:?}: expected the name of a [[meters]] entry, got {name:?}",
                            g.id
                        ),
                    ),
                    Some(mi) => meter_used[mi] = true,
                }
                match seen.insert(name.as_str(), list) {
                    Some(other) if other == list => p.add(
                        k,
                        format!("group {:?}: meter {name:?} is listed twice in {list}", g.id),
                    ),
                    Some(other) => p.add(
                        k,
                        format!(
                            "group {:?}: meter {name:?} is both an {other} and an {list}; a meter takes one role in a group",
                            g.id
                        ),
                    ),
                    None => {}
                }
            }
        }
        let mut seen_el = HashSet::new();
        for (j, name) in g.linepack.iter().enumerate() {
            let k = format!("{gk}.linepack[{j}]");
            match c.linepack.iter().position(|l| &l.name == name) {
                None => p.add(
                    k,
                    format!(
                        "group {:?}: expected the name of a [[linepack]] entry, got {name:?}",
                        g.id
                    ),
                ),
                Some(e) => element_used[e] = true,
            }
            if !seen_el.insert(name.as_str()) {
                p.add(
                    format!("{gk}.linepack[{j}]"),
                    format!("group {:?}: element {name:?} is listed twice", g.id),
                );
            }
        }
        if let Some(l) = g.limit_percent
            && !(l.is_finite() && l > 0.0)
        {
            p.add(
                format!("{gk}.limit_percent"),
                format!("group {:?}: expected a positive percentage, got {l}", g.id),
            );
        }
    }
    for (mi, used) in meter_used.iter().enumerate() {
        if !used {
            p.add(
                format!("meters[{mi}]"),
                format!(
                    "meter {:?} is in no [[balance.groups]] entry: add it to a group's inlet or outlet (its gas is otherwise in no balance), or remove the [[meters]] entry and keep its points",
                    c.meters[mi].name
                ),
            );
        }
    }
    for (e, used) in element_used.iter().enumerate() {
        if !used {
            p.add(
                format!("linepack[{e}]"),
                format!(
                    "line-pack element {:?} is in no [[balance.groups]] entry: add it to the linepack list of the group whose pipework it is",
                    c.linepack[e].name
                ),
            );
        }
    }
}
