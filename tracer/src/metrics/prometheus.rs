//! A [`Snapshot`] in the OpenMetrics text format, through the prometheus-client crate's
//! encoder (escaping, `# TYPE`/`# HELP`, `_total`, `# EOF`). A fresh registry per snapshot:
//! series that disappeared (a process beyond the top N, or gone) disappear from the output.
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family as PFamily, gauge::Gauge},
    registry::Registry,
};

use super::{MetricKind, Snapshot};

type Labels = Vec<(String, String)>;

pub fn encode(snap: &Snapshot) -> String {
    let mut reg = Registry::default();
    for f in &snap.families {
        let labels = |l: &super::model::Labels| -> Labels {
            l.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        match f.kind {
            MetricKind::Counter => {
                let fam = PFamily::<Labels, Counter<u64>>::default();
                for (l, v) in &f.samples {
                    fam.get_or_create(&labels(l)).inc_by(v.max(0.0) as u64);
                }
                // The encoder adds `_total` to a counter's name.
                let name = f.name.strip_suffix("_total").unwrap_or(f.name);
                reg.register(name, f.help, fam);
            }
            MetricKind::Gauge => {
                let fam = PFamily::<Labels, Gauge<f64, AtomicU64>>::default();
                for (l, v) in &f.samples {
                    fam.get_or_create(&labels(l)).set(*v);
                }
                reg.register(f.name, f.help, fam);
            }
        }
    }
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Family;

    #[test]
    fn openmetrics_text_with_escaped_labels() {
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
                    samples: vec![(
                        vec![("pid", "7".into()), ("comm", "we\"ird\\".into())],
                        1048576.0,
                    )],
                },
            ],
            at_ns: 0,
        };
        let text = encode(&snap);
        assert!(text.contains("# TYPE tracer_events counter"), "{text}");
        assert!(
            text.contains("tracer_events_total{kind=\"signal\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(r#"tracer_process_rss_bytes{pid="7",comm="we\"ird\\"} 1048576"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
