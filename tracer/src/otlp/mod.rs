//! OTLP export (`--otlp [ENDPOINT]`): findings (and, with `--otlp-events`, events) as OTLP log
//! records and the metrics of [`crate::metrics`] as OTLP metrics, over OTLP/HTTP protobuf to an
//! OpenTelemetry Collector.
//!
//! Why not the opentelemetry-otlp crate: it brings the SDK's async runtime plumbing and an HTTP
//! client stack (hyper/reqwest or tonic) for what is two POSTs from one thread here. The
//! official message definitions come from opentelemetry-proto (prost messages only, no tonic
//! runtime), encoded with prost, sent by [`http`]: a few dozen lines over std's TcpStream.
//!
//! Layout: [`config`] (flags and `OTEL_*` variables) → [`encode`] (protobuf) → [`exporter`]
//! (bounded queue, one thread, retries) → [`http`].
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::{
    analysis::{Engine, FindingUpdate},
    host::HostInfo,
    metrics::{ExtraFamilies, Publisher},
    output,
    pipeline::{Ctx, Sink},
    units,
};

pub mod config;
pub mod encode;
pub mod exporter;
pub mod http;

pub use exporter::{Exporter, Handle, Summary};

/// The OTLP options of `live`, `record` and `top`.
#[derive(Args, Debug, Clone, Default)]
pub struct OtlpArgs {
    /// Export findings and metrics over OTLP/HTTP protobuf to an OpenTelemetry Collector at
    /// ENDPOINT (e.g. http://127.0.0.1:4318; /v1/logs and /v1/metrics are appended). Bare
    /// --otlp: the OTEL_EXPORTER_OTLP_*ENDPOINT variables, else http://localhost:4318.
    #[arg(long, value_name = "ENDPOINT", num_args = 0..=1, default_missing_value = "")]
    pub otlp: Option<String>,
    /// With --otlp: every event as a log record too, not only findings.
    #[arg(long, requires = "otlp")]
    pub otlp_events: bool,
    /// With --otlp: how often metrics are sent (default: OTEL_METRIC_EXPORT_INTERVAL in ms,
    /// else 10s).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration, requires = "otlp")]
    pub otlp_interval: Option<Duration>,
    /// With --otlp: log records queued at most while the collector is slow or away; beyond
    /// that new ones are dropped (counted in tracer_otlp_dropped_total).
    #[arg(long, value_name = "N", default_value_t = 2048, requires = "otlp")]
    pub otlp_queue: usize,
}

/// Reads an environment variable (the one place the exporter looks at the environment).
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What [`start`] gives the session: the exporter (keep it alive; shut it down at the end)
/// and its publisher and counters for [`crate::metrics::attach`].
pub struct Started {
    pub exporter: Exporter,
    pub publisher: (Publisher, Option<ExtraFamilies>),
    pub endpoints: String,
}

/// Starts the exporter when `--otlp` was given: findings from `engine`, events (with
/// `--otlp-events`) from a sink added to `pipeline`.
pub fn start(
    pipeline: &mut crate::pipeline::Pipeline,
    args: &OtlpArgs,
    engine: Option<&std::sync::Arc<std::sync::Mutex<Engine>>>,
) -> anyhow::Result<Option<Started>> {
    let Some(flag) = &args.otlp else {
        return Ok(None);
    };
    let (logs, metrics) = config::resolve(flag, &env_var)?;
    if let Some(p) = env_var("OTEL_EXPORTER_OTLP_PROTOCOL").filter(|p| p != "http/protobuf") {
        tracing::warn!("OTEL_EXPORTER_OTLP_PROTOCOL={p}: tracer speaks http/protobuf only");
    }
    if let Some(c) = env_var("OTEL_EXPORTER_OTLP_COMPRESSION").filter(|c| c != "none") {
        tracing::warn!("OTEL_EXPORTER_OTLP_COMPRESSION={c}: not supported, sending uncompressed");
    }
    let interval = match args.otlp_interval {
        Some(d) => d,
        None => match env_var("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "OTEL_METRIC_EXPORT_INTERVAL={v:?}: expected a positive number of milliseconds"
                    )
                })?,
            None => Duration::from_secs(10),
        },
    }
    .max(Duration::from_millis(100));
    let mut user = match env_var("OTEL_RESOURCE_ATTRIBUTES") {
        Some(v) => config::parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v)?,
        None => Vec::new(),
    };
    if let Some(name) = env_var("OTEL_SERVICE_NAME").filter(|s| !s.trim().is_empty()) {
        user.push(("service.name".into(), name));
    }
    let resource = encode::resource(&pipeline.host, machine_id().as_deref(), &user);
    let endpoints = format!("{} and {}", logs.url, metrics.url);
    let exporter = exporter::Exporter::start(exporter::Settings {
        logs,
        metrics,
        interval,
        queue: args.otlp_queue,
        resource,
        start_ns: pipeline.host.wall_ns(crate::host::boot_ns()),
    })?;
    let h = exporter.handle();
    if let Some(e) = engine {
        let h = h.clone();
        e.lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_update(move |u, host| push_finding(&h, u, host));
    }
    if args.otlp_events {
        pipeline.add_sink(Box::new(EventSink(h.clone())));
    }
    let hp = h.clone();
    let publisher: Publisher = Box::new(move |snap| hp.set_metrics(snap));
    let extra: ExtraFamilies = Box::new(move || h.families());
    Ok(Some(Started {
        exporter,
        publisher: (publisher, Some(extra)),
        endpoints,
    }))
}

/// A finding as a log record: the fields of its JSON line as attributes.
pub fn finding_item(u: &FindingUpdate, host: &HostInfo) -> encode::LogItem {
    let attributes = match crate::report::update_json(u, host) {
        Value::Object(m) => m,
        _ => Default::default(),
    };
    encode::LogItem {
        time_ns: host.wall_ns(u.at_ns),
        severity: Some(u.finding.severity),
        event_name: encode::FINDING_EVENT_NAME,
        body: u.finding.summary.clone(),
        attributes,
    }
}

fn push_finding(h: &Handle, u: &FindingUpdate, host: &HostInfo) {
    if !h.reject_if_full() {
        h.push_log(finding_item(u, host));
    }
}

/// `--otlp-events`: each printable event as a log record (its `--json` fields as attributes,
/// its printed line as the body). Nothing is built when the queue is full.
struct EventSink(Handle);

impl Sink for EventSink {
    fn event(
        &mut self,
        ev: &crate::event::Event,
        _raw: &[u8],
        ctx: &Ctx<'_>,
    ) -> anyhow::Result<()> {
        if !output::printable(ev) || self.0.reject_if_full() {
            return Ok(());
        }
        let mut attributes = match serde_json::to_value(output::to_json(ev, ctx)) {
            Ok(Value::Object(m)) => m,
            _ => return Ok(()),
        };
        attributes.insert("type".into(), Value::from("event"));
        self.0.push_log(encode::LogItem {
            time_ns: ctx.host.wall_ns(ev.ts_ns),
            severity: None,
            event_name: encode::EVENT_EVENT_NAME,
            body: output::to_line(ev, ctx),
            attributes,
        });
        Ok(())
    }
}

impl Summary {
    pub fn render(&self) -> String {
        let mut s = format!(
            "tracer: otlp: sent {} log records and {} metric points; dropped {} log records and {} metric points",
            self.logs_sent, self.points_sent, self.logs_dropped, self.metrics_dropped
        );
        if let Some(e) = &self.last_error {
            s.push_str(&format!(" (last error: {e})"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn otlp_of(args: &[&str]) -> Result<super::OtlpArgs, clap::Error> {
        let cli = Cli::try_parse_from(["tracer", "record", "-o", "/tmp/x"].iter().chain(args))?;
        match cli.command {
            Command::Record(r) => Ok(r.otlp),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_flag_takes_an_optional_endpoint() {
        assert_eq!(otlp_of(&[]).unwrap().otlp, None);
        let a = otlp_of(&["--otlp", "http://c:4318", "--otlp-events"]).unwrap();
        assert_eq!(a.otlp.as_deref(), Some("http://c:4318"));
        assert!(a.otlp_events);
        assert_eq!(a.otlp_queue, 2048);
        // Bare: the environment decides; the next flag is not taken for an endpoint.
        let a = otlp_of(&["--otlp", "--otlp-interval", "2s"]).unwrap();
        assert_eq!(a.otlp.as_deref(), Some(""));
        assert_eq!(a.otlp_interval, Some(std::time::Duration::from_secs(2)));
        assert!(otlp_of(&["--otlp-events"]).is_err(), "needs --otlp");
    }
}
