//! Findings, events and metric snapshots as OTLP protobuf messages (the official definitions,
//! from the opentelemetry-proto crate), encoded with prost.
//!
//! Log records carry the JSON fields of `--json` output as attributes, under the same names
//! (`kind`, `severity`, `summary`, `pid`, `comm`, the evidence fields, `unit`...), nested values
//! as OTLP arrays and key-value lists; the body is the summary (findings) or the printed line
//! (events). Metrics keep the Prometheus names less a counter's `_total` (the collector's
//! Prometheus exporter adds it back to a monotonic sum).
use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    metrics::v1::{
        AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric, number_data_point,
    },
    resource::v1::Resource,
};
use prost::Message;
use serde_json::{Map, Value};

use crate::{
    analysis::Severity,
    host::HostInfo,
    metrics::{MetricKind, Snapshot},
};

/// One log record waiting in the queue: built on the pipeline thread from what is at hand
/// there, encoded on the exporter thread.
#[derive(Clone, Debug, PartialEq)]
pub struct LogItem {
    /// Wall-clock ns since the Unix epoch.
    pub time_ns: i64,
    /// A finding's; None for an event.
    pub severity: Option<Severity>,
    pub event_name: &'static str,
    pub body: String,
    pub attributes: Map<String, Value>,
}

pub const FINDING_EVENT_NAME: &str = "tracer.finding";
pub const EVENT_EVENT_NAME: &str = "tracer.event";

/// The OTLP severity of a finding: info → INFO, warning → WARN, critical → ERROR (tracer
/// itself is fine; the process it points at is in trouble, which is not FATAL for the
/// emitter). Events carry no severity of their own: INFO.
pub fn severity_number(s: Option<Severity>) -> SeverityNumber {
    match s {
        None | Some(Severity::Info) => SeverityNumber::Info,
        Some(Severity::Warning) => SeverityNumber::Warn,
        Some(Severity::Critical) => SeverityNumber::Error,
    }
}

pub fn any_value(v: &Value) -> Option<AnyValue> {
    let value = match v {
        Value::Null => return None,
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            // Beyond i64 (a u64 address) or a float.
            None => match n.as_u64() {
                Some(u) => any_value::Value::StringValue(u.to_string()),
                None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().filter_map(any_value).collect(),
        }),
        Value::Object(m) => any_value::Value::KvlistValue(KeyValueList {
            values: key_values(m),
        }),
    };
    Some(AnyValue { value: Some(value) })
}

pub fn key_values(m: &Map<String, Value>) -> Vec<KeyValue> {
    m.iter()
        .filter_map(|(k, v)| {
            any_value(v).map(|v| KeyValue {
                key: k.clone(),
                value: Some(v),
                ..Default::default()
            })
        })
        .collect()
}

fn kv(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// The resource: the traced host and tracer itself, then OTEL_RESOURCE_ATTRIBUTES and
/// OTEL_SERVICE_NAME (which override ours, as the spec says they should).
pub fn resource(host: &HostInfo, machine_id: Option<&str>, user: &[(String, String)]) -> Resource {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let mut attrs: Vec<(String, String)> = vec![
        ("service.name".into(), "tracer".into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("host.name".into(), host.hostname.clone()),
        ("host.arch".into(), arch.into()),
        ("os.type".into(), "linux".into()),
        ("os.version".into(), host.kernel.clone()),
    ];
    if let Some(id) = machine_id.filter(|s| !s.is_empty()) {
        attrs.push(("host.id".into(), id.to_owned()));
    }
    if !host.boot_id.is_empty() {
        attrs.push(("tracer.boot_id".into(), host.boot_id.clone()));
    }
    for (k, v) in user {
        attrs.retain(|(ak, _)| ak != k);
        attrs.push((k.clone(), v.clone()));
    }
    Resource {
        attributes: attrs
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| kv(&k, v))
            .collect(),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "tracer".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

pub fn log_record(item: &LogItem, observed_ns: i64) -> LogRecord {
    let sev = severity_number(item.severity);
    LogRecord {
        time_unix_nano: item.time_ns.max(0) as u64,
        observed_time_unix_nano: observed_ns.max(0) as u64,
        severity_number: sev as i32,
        severity_text: item
            .severity
            .map(|s| s.name().to_owned())
            .unwrap_or_else(|| "info".into()),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(item.body.clone())),
        }),
        attributes: key_values(&item.attributes),
        event_name: item.event_name.to_owned(),
        ..Default::default()
    }
}

pub fn logs_request(resource: &Resource, items: &[LogItem], observed_ns: i64) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: items.iter().map(|i| log_record(i, observed_ns)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Cumulative sums for counters (since `start_ns`, when tracer started), gauges for the rest.
pub fn metrics_request(
    resource: &Resource,
    snap: &Snapshot,
    start_ns: i64,
    now_ns: i64,
) -> Vec<u8> {
    let (start, now) = (start_ns.max(0) as u64, now_ns.max(0) as u64);
    let metrics = snap
        .families
        .iter()
        .map(|f| {
            let points = f
                .samples
                .iter()
                .map(|(labels, v)| NumberDataPoint {
                    attributes: labels.iter().map(|(k, v)| kv(k, v.clone())).collect(),
                    start_time_unix_nano: if f.kind == MetricKind::Counter {
                        start
                    } else {
                        0
                    },
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsDouble(*v)),
                    ..Default::default()
                })
                .collect();
            let (name, data) = match f.kind {
                MetricKind::Counter => (
                    f.name.strip_suffix("_total").unwrap_or(f.name),
                    metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                ),
                MetricKind::Gauge => (
                    f.name,
                    metric::Data::Gauge(Gauge {
                        data_points: points,
                    }),
                ),
            };
            Metric {
                name: name.to_owned(),
                description: f.help.to_owned(),
                data: Some(data),
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metrics::Family;

    fn attr<'a>(attrs: &'a [KeyValue], k: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn a_finding_round_trips_with_its_json_fields() {
        let Value::Object(attributes) = json!({
            "kind": "close_wait", "severity": "critical", "summary": "proxy leaks",
            "pid": 42, "comm": "proxy", "count": 7, "oldest_age_s": 3.5,
            "peers": ["10.0.0.1:80"], "unit": "proxy.service", "missing": null,
            "big": u64::MAX,
        }) else {
            unreachable!()
        };
        let item = LogItem {
            time_ns: 1_700_000_000_000_000_000,
            severity: Some(Severity::Critical),
            event_name: FINDING_EVENT_NAME,
            body: "proxy leaks".into(),
            attributes,
        };
        let host = HostInfo {
            hostname: "h1".into(),
            boot_id: "b".into(),
            ..Default::default()
        };
        let res = resource(&host, Some("m"), &[("service.name".into(), "edge".into())]);
        let bytes = logs_request(&res, &[item], 5);
        let req = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        let rl = &req.resource_logs[0];
        let rattrs = &rl.resource.as_ref().unwrap().attributes;
        assert_eq!(
            attr(rattrs, "service.name"),
            Some(&any_value::Value::StringValue("edge".into()))
        );
        assert_eq!(
            attr(rattrs, "host.id"),
            Some(&any_value::Value::StringValue("m".into()))
        );
        assert!(attr(rattrs, "host.name").is_some() && attr(rattrs, "os.type").is_some());
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.severity_number, SeverityNumber::Error as i32);
        assert_eq!(r.severity_text, "critical");
        assert_eq!(r.event_name, FINDING_EVENT_NAME);
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_000);
        let a = &r.attributes;
        assert_eq!(attr(a, "pid"), Some(&any_value::Value::IntValue(42)));
        assert_eq!(
            attr(a, "oldest_age_s"),
            Some(&any_value::Value::DoubleValue(3.5))
        );
        assert_eq!(
            attr(a, "kind"),
            Some(&any_value::Value::StringValue("close_wait".into()))
        );
        assert_eq!(
            attr(a, "big"),
            Some(&any_value::Value::StringValue(u64::MAX.to_string()))
        );
        assert!(
            matches!(attr(a, "peers"), Some(any_value::Value::ArrayValue(v)) if v.values.len() == 1)
        );
        assert!(attr(a, "missing").is_none());
    }

    #[test]
    fn counters_are_cumulative_sums_without_total() {
        let snap = Snapshot {
            families: vec![
                Family {
                    name: "tracer_events_total",
                    help: "Events.",
                    kind: MetricKind::Counter,
                    samples: vec![(vec![("kind", "signal".into())], 3.0)],
                },
                Family {
                    name: "tracer_process_rss_bytes",
                    help: "RSS.",
                    kind: MetricKind::Gauge,
                    samples: vec![(vec![("pid", "7".into())], 4096.0)],
                },
            ],
            at_ns: 0,
        };
        let res = resource(&HostInfo::default(), None, &[]);
        let bytes = metrics_request(&res, &snap, 10, 20);
        let req = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        let m = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(m[0].name, "tracer_events");
        let Some(metric::Data::Sum(s)) = &m[0].data else {
            panic!("{:?}", m[0])
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(s.data_points[0].start_time_unix_nano, 10);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsDouble(3.0))
        );
        assert_eq!(m[1].name, "tracer_process_rss_bytes");
        let Some(metric::Data::Gauge(g)) = &m[1].data else {
            panic!("{:?}", m[1])
        };
        assert_eq!(
            attr(&g.data_points[0].attributes, "pid"),
            Some(&any_value::Value::StringValue("7".into()))
        );
    }
}
