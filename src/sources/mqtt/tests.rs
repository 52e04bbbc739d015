//! Unit tests of the pure MQTT decoders on a compiled plan.

use super::json::{JsonMapper, Mapped, RejectReason};
use super::sparkplug::{HostAction, SparkplugHost};
use super::spb::{self, proto};
use crate::config::Config;
use crate::engine::EnginePlan;
use crate::model::{Quality, TagId, Timestamp};
use prost::Message;
use std::path::Path;

fn config(extra: &str) -> Config {
    let text = format!(
        "[station]\nid = \"cg01\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n{extra}"
    );
    Config::from_str_named(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn sample_toml_validates_and_compiles() {
    let c = config(include_str!("sample.toml"));
    let plan = EnginePlan::compile(&c);
    assert_eq!(plan.tags.len(), 3);
    let t = plan.tag("PT_RTU3_OUT").unwrap();
    assert_eq!(plan.device(plan.tag_info(t).device).id, "regulator");
    assert_eq!(plan.tag_info(t).stale_after_ns, 15_000_000_000);
    assert!(plan.devices.iter().all(|d| d.blocks.is_empty()));
}

#[test]
fn bad_source_config_names_every_key() {
    let text = "[station]\nid = \"cg01\"\nkind = \"city_gate\"\n[sinks.file]\ndir = \"d\"\n\
        [[mqtt_sources]]\nid = \"s\"\nhost = \"h\"\nformat = \"json\"\ntopics = [\"a/#/b\"]\n\
        [[mqtt_sources.points]]\nname = \"P\"\npath = \"no-slash\"\nexpected_interval = \"0s\"\n\
        [[mqtt_sources]]\nid = \"s\"\nhost = \"h\"\nformat = \"sparkplug_b\"\n\
        [[mqtt_sources.points]]\nname = \"P\"\nexpected_interval = \"1s\"\n";
    let e = Config::from_str_named(text, Path::new("t.toml")).unwrap_err();
    let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "mqtt_sources[0].topics[0]",
        "mqtt_sources[0].points[0].path",
        "mqtt_sources[0].points[0].expected_interval",
        "mqtt_sources[1].id",
        "mqtt_sources[1].group_id",
        "mqtt_sources[1].points[0].node",
        "mqtt_sources[1].points[0].metric",
        "mqtt_sources[1].points[0].name",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
}

fn json_plan() -> (EnginePlan, JsonMapper) {
    let c = config(
        "[[mqtt_sources]]\nid = \"j\"\nhost = \"h\"\nformat = \"json\"\n\
         topics = [\"t/{station}/{device}/json\", \"p/{device}/{point}\"]\n\
         timestamp = { path = \"/ts\", format = \"epoch_ms\" }\n\
         [[mqtt_sources.points]]\nname = \"A\"\ndevice = \"d1\"\npath = \"/v/a\"\nscale = 2.0\noffset = 1.0\nexpected_interval = \"1s\"\n\
         [[mqtt_sources.points]]\nname = \"B\"\ndevice = \"d1\"\npath = \"/arr/1/b\"\nexpected_interval = \"1s\"\n\
         [[mqtt_sources.points]]\nname = \"C\"\ndevice = \"d2\"\ntopic_point = \"flow\"\npath = \"/value\"\nexpected_interval = \"1s\"\n",
    );
    let plan = EnginePlan::compile(&c);
    let m = JsonMapper::new(&c.mqtt_sources[0], &plan);
    (plan, m)
}

#[test]
fn json_fields_by_pointer_with_scale_and_payload_time() {
    let (_, mut m) = json_plan();
    let mut out = Mapped::default();
    m.map(
        "t/cg01/d1/json",
        br#"{"ts": 1700000000000, "v": {"a": 3}, "arr": [{}, {"b": null}]}"#,
        Timestamp(1),
        &mut out,
    );
    assert!(out.rejects.is_empty(), "{:?}", out.rejects);
    let (ts, v) = &out.batches[0];
    assert_eq!(*ts, Timestamp::from_millis(1_700_000_000_000));
    assert_eq!(v[0], (TagId(0), 7.0, Quality::Good));
    assert_eq!(v[1].0, TagId(1));
    assert!(
        v[1].1.is_nan() && v[1].2 == Quality::Bad,
        "null is bad, not zero"
    );
    m.map(
        "p/d2/flow",
        br#"{"ts": 5, "value": true}"#,
        Timestamp(1),
        &mut out,
    );
    assert_eq!(out.batches[0].1, vec![(TagId(2), 1.0, Quality::Good)]);
}

#[test]
fn json_rejects_say_why_and_keep_the_rest() {
    let (_, mut m) = json_plan();
    let mut out = Mapped::default();
    let cases: [(&str, &[u8], RejectReason); 6] = [
        ("t/cg01/d1/json", b"{not json", RejectReason::Malformed),
        ("t/other/d1/json", b"{}", RejectReason::StationMismatch),
        ("t/cg01/d9/json", b"{}", RejectReason::UnmappedTopic),
        ("x/y", b"{}", RejectReason::UnmappedTopic),
        (
            "t/cg01/d1/json",
            br#"{"v": {"a": 1}}"#,
            RejectReason::BadTimestamp,
        ),
        (
            "p/d2/flow",
            br#"{"ts": 1, "value": "high"}"#,
            RejectReason::NotANumber,
        ),
    ];
    for (topic, payload, reason) in cases {
        m.map(topic, payload, Timestamp(0), &mut out);
        assert_eq!(out.rejects.len(), 1, "{topic}");
        assert_eq!(out.rejects[0].reason, reason, "{topic}: {:?}", out.rejects);
        assert!(out.batches.is_empty());
    }
    // One missing field: the other is still delivered.
    m.map(
        "t/cg01/d1/json",
        br#"{"ts": 1, "v": {"a": 1}}"#,
        Timestamp(0),
        &mut out,
    );
    assert_eq!(out.rejects[0].reason, RejectReason::MissingField);
    assert_eq!(out.batches[0].1.len(), 1);
}

fn spb_host() -> (EnginePlan, SparkplugHost) {
    let c = config(
        "[[mqtt_sources]]\nid = \"s\"\nhost = \"h\"\nformat = \"sparkplug_b\"\ngroup_id = \"G\"\nnode_timeout = \"10s\"\n\
         [[mqtt_sources.points]]\nname = \"N1\"\nnode = \"n1\"\nmetric = \"Pressure\"\nexpected_interval = \"1s\"\n\
         [[mqtt_sources.points]]\nname = \"D1\"\nnode = \"n1\"\ndevice = \"dev\"\nmetric = \"Flow\"\nscale = 10.0\nexpected_interval = \"1s\"\n",
    );
    let plan = EnginePlan::compile(&c);
    let h = SparkplugHost::new(&c.mqtt_sources[0], &plan);
    (plan, h)
}

fn payload(seq: Option<u64>, metrics: Vec<proto::payload::Metric>) -> Vec<u8> {
    proto::Payload {
        timestamp: Some(1000),
        seq,
        metrics,
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn sparkplug_birth_data_gap_death() {
    let (_, mut h) = spb_host();
    let mut out = Mapped::default();
    let t = Timestamp(0);
    // Data before birth: rejected, rebirth requested once.
    let data = payload(
        Some(1),
        vec![spb::double_metric(None, 1, 5.0, Quality::Good, 1000)],
    );
    assert_eq!(
        h.handle("spBv1.0/G/NDATA/n1", &data, t, &mut out),
        Some(HostAction::Rebirth { node: "n1".into() })
    );
    assert_eq!(out.rejects[0].reason, RejectReason::NotBorn);
    assert_eq!(h.handle("spBv1.0/G/NDATA/n1", &data, t, &mut out), None);
    // Birth with bdSeq 3 and alias 1 = Pressure.
    let birth = payload(
        Some(0),
        vec![
            spb::bdseq_metric(3, 1000),
            spb::double_metric(Some("Pressure"), 1, 4.0, Quality::Good, 1000),
        ],
    );
    assert_eq!(h.handle("spBv1.0/G/NBIRTH/n1", &birth, t, &mut out), None);
    assert_eq!(out.batches[0].1, vec![(TagId(0), 4.0, Quality::Good)]);
    let dbirth = payload(
        Some(1),
        vec![spb::double_metric(
            Some("Flow"),
            7,
            1.5,
            Quality::Uncertain,
            2000,
        )],
    );
    h.handle("spBv1.0/G/DBIRTH/n1/dev", &dbirth, t, &mut out);
    assert_eq!(
        out.batches[0],
        (
            Timestamp::from_millis(2000),
            vec![(TagId(1), 15.0, Quality::Uncertain)]
        )
    );
    let ddata = payload(
        Some(2),
        vec![spb::double_metric(None, 7, 2.0, Quality::Good, 3000)],
    );
    h.handle("spBv1.0/G/DDATA/n1/dev", &ddata, t, &mut out);
    assert_eq!(out.batches[0].1, vec![(TagId(1), 20.0, Quality::Good)]);
    // Seq gap (3 expected, 5 sent): rejected and a rebirth asked.
    let gap = payload(
        Some(5),
        vec![spb::double_metric(None, 1, 9.0, Quality::Good, 4000)],
    );
    assert!(h.handle("spBv1.0/G/NDATA/n1", &gap, t, &mut out).is_some());
    assert!(out.batches.is_empty());
    // Rebirth, then an NDEATH of an old session is ignored, the right one stales.
    h.handle("spBv1.0/G/NBIRTH/n1", &birth, t, &mut out);
    let old_death = payload(None, vec![spb::bdseq_metric(2, 0)]);
    h.handle("spBv1.0/G/NDEATH/n1", &old_death, t, &mut out);
    assert!(out.batches.is_empty());
    let death = payload(None, vec![spb::bdseq_metric(3, 0)]);
    h.handle("spBv1.0/G/NDEATH/n1", &death, Timestamp(9), &mut out);
    let (ts, v) = &out.batches[0];
    assert_eq!(*ts, Timestamp(9));
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|(_, x, q)| x.is_nan() && *q == Quality::Stale));
    // Garbage is rejected as malformed.
    h.handle("spBv1.0/G/NDATA/n1", b"\xff\xff\xff", t, &mut out);
    assert_eq!(out.rejects[0].reason, RejectReason::Malformed);
}

#[test]
fn quiet_sparkplug_node_goes_stale_once() {
    let (_, mut h) = spb_host();
    let mut out = Mapped::default();
    let birth = payload(
        Some(0),
        vec![
            spb::bdseq_metric(0, 0),
            spb::double_metric(Some("Pressure"), 1, 4.0, Quality::Good, 0),
        ],
    );
    h.handle("spBv1.0/G/NBIRTH/n1", &birth, Timestamp(0), &mut out);
    h.tick(Timestamp::from_secs(5), &mut out);
    assert!(out.batches.is_empty());
    h.tick(Timestamp::from_secs(11), &mut out);
    assert_eq!(out.batches[0].1.len(), 2);
    h.tick(Timestamp::from_secs(12), &mut out);
    assert!(out.batches.is_empty());
}
