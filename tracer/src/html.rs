//! `tracer report --html FILE`: the report as one self-contained HTML file (no network, no
//! JavaScript): findings ranked with their evidence, the incident timeline, per-culprit charts
//! over the dump's time (RSS with its limit and OOM kills; open sockets and CLOSE_WAIT;
//! connections per remote endpoint; resets per second; signals, restarts and exits as marks),
//! and what was lost. Charts are inline SVG drawn with plotters' SVG backend; the figures come
//! from the same model `tracer top` shows ([`crate::top::model`]), fed by the same pipeline.
//! Everything that comes from the traced host (names, command lines) is HTML-escaped.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use plotters::prelude::*;

use crate::{
    analysis::{Engine, Evidence, Finding, Severity},
    dump::cmd::DumpFilterArgs,
    event::Event,
    host::HostInfo,
    pipeline::{Ctx, Sink},
    report::ReportArgs,
    top::{
        model::{MarkKind, Model, ModelOptions, NS, Proc},
        series::Series,
        view::{clock, size},
    },
};

/// Culprits charted at most.
const MAX_CULPRITS: usize = 8;
const CHART_W: u32 = 900;
const CHART_H: u32 = 240;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// Feeds the model (with history kept) from the pipeline.
struct ModelSink(Arc<Mutex<Model>>);

impl Sink for ModelSink {
    fn event(&mut self, ev: &Event, _raw: &[u8], ctx: &Ctx<'_>) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(ev, ctx.procs, ctx.host);
        Ok(())
    }
}

/// `tracer report --html FILE DUMP`: runs the analyses and the model over the dump, writes
/// the page (mode 0600: it holds command lines).
pub fn run(
    paths: &[PathBuf],
    filter: &DumpFilterArgs,
    args: &ReportArgs,
    out: &Path,
) -> anyhow::Result<()> {
    let cfg = args.analysis.load()?;
    let fatal = cfg.signal_numbers()?;
    let (engine_sink, engine) = Engine::new(cfg)?.into_shared();
    let model = Arc::new(Mutex::new(Model::new(ModelOptions {
        fatal_signals: fatal,
        show_idle: true,
        keep_exited: true,
    })));
    let outcome = crate::dump::cmd::run(
        paths,
        filter,
        vec![Box::new(engine_sink), Box::new(ModelSink(model.clone()))],
    )?;
    let engine = engine.lock().unwrap_or_else(|e| e.into_inner());
    let model = model.lock().unwrap_or_else(|e| e.into_inner());
    let page = render(&engine, &model, engine.host());
    {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        f.write_all(page.as_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    crate::output::eprint(&format!(
        "tracer: wrote {} ({} findings)",
        out.display(),
        engine.findings().len()
    ));
    outcome.into_result()
}

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1000px;padding:16px;color:#222;background:#fafafa}
h1{font-size:1.5em;margin-bottom:0} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{margin:24px 0 4px} .sub{color:#666;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:0.9em;background:#fff}
td,th{border:1px solid #e2e2e2;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.n{text-align:right;font-variant-numeric:tabular-nums}
.sev{font-weight:bold;padding:1px 6px;border-radius:3px;color:#fff;white-space:nowrap}
.critical{background:#c62828} .warning{background:#ef8f00} .info{background:#0277bd}
.finding{background:#fff;border:1px solid #e2e2e2;border-left:6px solid #999;margin:8px 0;padding:6px 10px}
.finding.critical-b{border-left-color:#c62828} .finding.warning-b{border-left-color:#ef8f00} .finding.info-b{border-left-color:#0277bd}
.finding .summary{font-weight:600} .ev{font-size:0.85em;color:#444;margin-top:4px}
.ev span{display:inline-block;margin-right:12px} .ev b{color:#000}
code{font-size:0.9em;background:#f3f3f3;padding:0 3px;word-break:break-all}
svg{width:100%;height:auto;background:#fff;border:1px solid #e2e2e2}
.legend span{display:inline-block;margin-right:14px;font-size:0.85em}
.legend i{display:inline-block;width:14px;height:4px;margin-right:4px;vertical-align:middle}
.ok{color:#2e7d32;font-weight:bold} .bad{color:#c62828;font-weight:bold}
.marks{font-size:0.85em;color:#444;margin:4px 0 0 0;padding-left:18px}
"#;

/// The whole page.
pub fn render(engine: &Engine, model: &Model, host: &HostInfo) -> String {
    let st = engine.stats();
    let findings = engine.findings();
    let (t0, t1) = match st.first_ns {
        Some(f) => (f, st.last_ns.max(f + NS)),
        None => (0, NS),
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>tracer report: {}</title><style>{CSS}</style></head><body>",
        esc(&host.hostname)
    );
    let span = if st.first_ns.is_some() {
        format!(
            "{} .. {} UTC ({:.1} s)",
            esc(&host.rfc3339(t0)[..19.min(host.rfc3339(t0).len())].replace('T', " ")),
            esc(&clock(host, st.last_ns)),
            (st.last_ns.saturating_sub(t0)) as f64 / 1e9
        )
    } else {
        "no events".into()
    };
    let lost = st.drops_total();
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(
        o,
        "<h1>tracer report: {}</h1><p class=\"sub\">kernel {} &middot; {span} &middot; {} events \
         from {} processes &middot; {}</p>",
        esc(&host.hostname),
        esc(&host.kernel),
        st.events,
        st.processes(),
        if lost == 0 {
            "<span class=\"ok\">no records lost</span>".to_owned()
        } else {
            format!("<span class=\"bad\">{lost} records LOST in the kernel</span>")
        }
    );

    // Findings.
    let _ = writeln!(
        o,
        "<h2 id=\"findings\">Findings ({}: {} critical, {} warning, {} info)</h2>",
        findings.len(),
        count(Severity::Critical),
        count(Severity::Warning),
        count(Severity::Info)
    );
    if findings.is_empty() {
        o.push_str("<p>None: nothing crossed the thresholds.</p>\n");
    }
    for (i, f) in findings.iter().enumerate() {
        finding_html(&mut o, i + 1, f, host);
    }

    // Timeline.
    let tl = engine.timeline();
    let entries = tl.entries();
    let _ = writeln!(
        o,
        "<h2 id=\"timeline\">Incident timeline ({} notable events{})</h2>",
        entries.len(),
        if tl.omitted > 0 {
            format!("; {} earlier ones not kept", tl.omitted)
        } else {
            String::new()
        }
    );
    if entries.is_empty() {
        o.push_str("<p>None: no fatal signals, kills, OOM kills, fd exhaustion or findings.</p>\n");
    } else {
        o.push_str("<table class=\"timeline\"><tr><th>time (UTC)</th><th>what</th><th>pid</th><th>event</th></tr>\n");
        for e in entries {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&full_clock(host, e.ts_ns)),
                esc(e.what),
                e.pid,
                esc(&e.text)
            );
        }
        o.push_str("</table>\n");
    }

    // Charts.
    let culprits = culprits(&findings, model);
    let _ = writeln!(
        o,
        "<h2 id=\"charts\">Culprits over time ({} .. {})</h2>",
        esc(&clock(host, t0)),
        esc(&clock(host, t1))
    );
    if culprits.is_empty() {
        o.push_str("<p>No finding names a process with recorded figures.</p>\n");
    }
    for p in culprits {
        culprit_html(&mut o, p, model, host, (t0, t1));
    }

    // Events and losses.
    let _ = writeln!(
        o,
        "<h2 id=\"lost\">Events and lost records</h2><p>{}</p>",
        if lost == 0 {
            "<span class=\"ok\">No record was lost: every event the kernel produced is in the dump.</span>".to_owned()
        } else {
            format!(
                "<span class=\"bad\">{lost} records were lost in the kernel (ring buffer full)</span>: \
                 the figures below are lower bounds for the kinds that lost some."
            )
        }
    );
    o.push_str("<table class=\"events\"><tr><th>kind</th><th>events</th><th>lost</th></tr>\n");
    for k in st.kinds() {
        let l = st.drops.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n{}\">{l}</td></tr>",
            esc(k),
            st.per_kind.get(k),
            if l > 0 { " bad" } else { "" }
        );
    }
    o.push_str("</table>\n");
    let _ = writeln!(
        o,
        "<p class=\"sub\">Generated by tracer {} from the dump's events alone; times are the \
         traced host's, in UTC.</p></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    o
}

fn full_clock(host: &HostInfo, ts: u64) -> String {
    let s = host.rfc3339(ts);
    s.get(11..23).unwrap_or(&s).to_owned()
}

fn finding_html(o: &mut String, rank: usize, f: &Finding, host: &HostInfo) {
    let sev = f.severity.name();
    let _ = write!(
        o,
        "<div class=\"finding {sev}-b\"><span class=\"sev {sev}\">{sev}</span> <b>{rank}. {}</b> \
         <span class=\"summary\">{}</span><div class=\"ev\">",
        esc(f.kind()),
        esc(&f.summary)
    );
    for (k, shown, _) in crate::report::evidence_fields(f) {
        let _ = write!(o, "<span><b>{}</b> {}</span>", esc(&k), esc(&shown));
    }
    let _ = writeln!(
        o,
        "<span><b>seen</b> {} .. {}</span></div></div>",
        esc(&full_clock(host, f.first_seen_ns)),
        esc(&full_clock(host, f.last_seen_ns))
    );
}

/// The processes findings name, most severe first: the culprit, and for signals and OOM
/// kills their target too.
fn culprits<'a>(findings: &[&Finding], model: &'a Model) -> Vec<&'a Proc> {
    let mut pids: Vec<u32> = Vec::new();
    for f in findings {
        let mut add = |p: u32| {
            if p != 0 && !pids.contains(&p) {
                pids.push(p);
            }
        };
        match &f.evidence {
            Evidence::SignalSource(e) => {
                add(e.target_pid);
                add(e.sender_pid);
            }
            Evidence::RestartLoop(e) => {
                if let Some(last) = e.pids.last() {
                    add(*last);
                }
                add(e.supervisor_pid);
            }
            _ => {
                if let Some(p) = f.pid() {
                    add(p);
                }
            }
        }
    }
    pids.into_iter()
        .filter_map(|p| model.get(p))
        .filter(|p| has_figures(p))
        .take(MAX_CULPRITS)
        .collect()
}

fn has_figures(p: &Proc) -> bool {
    let h = &p.history;
    !h.rss.is_empty()
        || h.sockets.max() > 0.0
        || !h.resets.is_empty()
        || !h.marks.is_empty()
        || !h.endpoints.is_empty()
}

const PALETTE: [RGBColor; 7] = [
    RGBColor(21, 101, 192),
    RGBColor(230, 81, 0),
    RGBColor(46, 125, 50),
    RGBColor(106, 27, 154),
    RGBColor(0, 131, 143),
    RGBColor(173, 20, 87),
    RGBColor(93, 64, 55),
];
const LIMIT: RGBColor = RGBColor(198, 40, 40);

fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

struct Plot<'a> {
    label: String,
    color: RGBColor,
    series: &'a Series,
    /// Counts per bucket shown per second.
    per_sec: bool,
}

fn culprit_html(o: &mut String, p: &Proc, model: &Model, host: &HostInfo, span: (u64, u64)) {
    let _ = writeln!(
        o,
        "<h3 id=\"pid-{}\">{} {}</h3><p class=\"sub\"><code>{}</code>{}</p>",
        p.pid,
        p.pid,
        esc(&p.comm),
        esc(&p.cmdline),
        match &p.death {
            Some(d) => format!(" &middot; {}", esc(d)),
            None => String::new(),
        }
    );
    let h = &p.history;
    let marks = &h.marks;
    if !h.rss.is_empty() {
        let limit = p
            .mem_limit
            .map(|l| (l, "cgroup limit"))
            .or((model.mem_total > 0).then_some((model.mem_total, "host memory")));
        let lines = [Plot {
            label: "RSS".into(),
            color: PALETTE[0],
            series: &h.rss,
            per_sec: false,
        }];
        // A host-sized limit line would flatten a small process's curve: only a near one.
        let limit = limit.filter(|(l, _)| (*l as f64) < h.rss.max() * 4.0);
        chart(o, "Memory (RSS)", &lines, limit, marks, host, span, |v| {
            size(v as u64)
        });
    }
    if h.sockets.max() > 0.0 || !h.close_wait.is_empty() {
        let lines = [
            Plot {
                label: "open sockets".into(),
                color: PALETTE[0],
                series: &h.sockets,
                per_sec: false,
            },
            Plot {
                label: "CLOSE_WAIT".into(),
                color: PALETTE[1],
                series: &h.close_wait,
                per_sec: false,
            },
        ];
        let limit = p
            .fd_limit
            .filter(|l| (*l as f64) < h.sockets.max() * 3.0)
            .map(|l| (l, "fd limit"));
        chart(
            o,
            "Open sockets and CLOSE_WAIT",
            &lines,
            limit,
            marks,
            host,
            span,
            |v| format!("{v:.0}"),
        );
    }
    if !h.endpoints.is_empty() {
        let mut eps: Vec<(&String, &Series)> = h.endpoints.iter().collect();
        eps.sort_by(|a, b| b.1.max().total_cmp(&a.1.max()).then(a.0.cmp(b.0)));
        let lines: Vec<Plot> = eps
            .into_iter()
            .enumerate()
            .map(|(i, (e, s))| Plot {
                label: e.replace(">:", " \u{2192} :"),
                color: PALETTE[i % PALETTE.len()],
                series: s,
                per_sec: false,
            })
            .collect();
        chart(
            o,
            "Open connections per remote endpoint",
            &lines,
            None,
            marks,
            host,
            span,
            |v| format!("{v:.0}"),
        );
    }
    if !h.resets.is_empty() {
        let lines = [Plot {
            label: "resets sent + received per second".into(),
            color: PALETTE[5],
            series: &h.resets,
            per_sec: true,
        }];
        chart(
            o,
            "TCP resets per second",
            &lines,
            None,
            marks,
            host,
            span,
            |v| format!("{v:.1}"),
        );
    }
    if !marks.is_empty() {
        o.push_str("<ul class=\"marks\">");
        for m in marks.iter().take(40) {
            let _ = write!(
                o,
                "<li>{} <b>{}</b> {}</li>",
                esc(&full_clock(host, m.ts_ns)),
                mark_name(m.kind),
                esc(&m.text)
            );
        }
        if marks.len() > 40 {
            let _ = write!(o, "<li>... {} more</li>", marks.len() - 40);
        }
        o.push_str("</ul>\n");
    }
}

fn mark_name(k: MarkKind) -> &'static str {
    match k {
        MarkKind::Signal => "signal",
        MarkKind::Restart => "restart",
        MarkKind::Exit => "exit",
        MarkKind::Oom => "OOM kill",
    }
}

fn mark_color(k: MarkKind) -> RGBColor {
    match k {
        MarkKind::Signal => RGBColor(239, 143, 0),
        MarkKind::Restart => RGBColor(46, 125, 50),
        MarkKind::Exit => RGBColor(120, 120, 120),
        MarkKind::Oom => RGBColor(198, 40, 40),
    }
}

/// One chart as inline SVG, its legend in HTML (names from the host stay out of the SVG).
#[allow(clippy::too_many_arguments)]
fn chart(
    o: &mut String,
    title: &str,
    lines: &[Plot<'_>],
    limit: Option<(u64, &str)>,
    marks: &[crate::top::model::Mark],
    host: &HostInfo,
    (t0, t1): (u64, u64),
    fmt: impl Fn(f64) -> String,
) {
    let secs = |t: u64| t.saturating_sub(t0) as f64 / 1e9;
    let span = secs(t1).max(1.0);
    let data: Vec<Vec<(f64, f64)>> = lines
        .iter()
        .map(|l| {
            let w = l.series.width_ns() as f64 / 1e9;
            l.series
                .points()
                .iter()
                .map(|&(t, v)| (secs(t).min(span), if l.per_sec { v / w } else { v }))
                .collect()
        })
        .collect();
    let mut ymax = data.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    if let Some((l, _)) = limit {
        ymax = ymax.max(l as f64);
    }
    let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.1 };
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, (CHART_W, CHART_H)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(26)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..span, 0f64..ymax)?;
        c.configure_mesh()
            .x_labels(7)
            .y_labels(5)
            .light_line_style(RGBColor(238, 238, 238))
            .x_label_formatter(&|x| clock(host, t0 + (*x * 1e9) as u64))
            .y_label_formatter(&|y| fmt(*y))
            .label_style(("sans-serif", 12))
            .draw()?;
        for m in marks {
            let x = secs(m.ts_ns);
            if (0.0..=span).contains(&x) {
                c.draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, ymax)],
                    mark_color(m.kind).stroke_width(1),
                )))?;
            }
        }
        if let Some((l, _)) = limit {
            c.draw_series(DashedLineSeries::new(
                vec![(0.0, l as f64), (span, l as f64)],
                8,
                5,
                LIMIT.stroke_width(2),
            ))?;
        }
        for (l, pts) in lines.iter().zip(&data) {
            if pts.len() == 1 {
                c.draw_series(std::iter::once(Circle::new(pts[0], 3, l.color.filled())))?;
            } else {
                c.draw_series(LineSeries::new(
                    pts.iter().copied(),
                    l.color.stroke_width(2),
                ))?;
            }
        }
        root.present()?;
        Ok(())
    })();
    let _ = write!(
        o,
        "<figure class=\"chart\"><figcaption><b>{}</b></figcaption>",
        esc(title)
    );
    match drawn {
        Ok(()) => {
            // Scales with the page.
            let svg = svg.replacen(
                &format!("<svg width=\"{CHART_W}\" height=\"{CHART_H}\""),
                &format!(
                    "<svg role=\"img\" aria-label=\"{}\" preserveAspectRatio=\"xMinYMin meet\" width=\"{CHART_W}\" height=\"{CHART_H}\"",
                    esc(title)
                ),
                1,
            );
            o.push_str(&svg);
        }
        Err(e) => {
            let _ = write!(
                o,
                "<p class=\"bad\">chart not drawn: {}</p>",
                esc(&e.to_string())
            );
        }
    }
    o.push_str("<div class=\"legend\">");
    for l in lines {
        let _ = write!(
            o,
            "<span><i style=\"background:{}\"></i>{}</span>",
            hex(l.color),
            esc(&l.label)
        );
    }
    if let Some((v, what)) = limit {
        let _ = write!(
            o,
            "<span><i style=\"background:{}\"></i>{} ({})</span>",
            hex(LIMIT),
            esc(what),
            esc(&fmt(v as f64))
        );
    }
    let mut kinds: Vec<MarkKind> = marks.iter().map(|m| m.kind).collect();
    kinds.dedup();
    for k in [
        MarkKind::Signal,
        MarkKind::Restart,
        MarkKind::Exit,
        MarkKind::Oom,
    ] {
        if kinds.contains(&k) {
            let _ = write!(
                o,
                "<span><i style=\"background:{};width:2px;height:12px\"></i>{}</span>",
                hex(mark_color(k)),
                mark_name(k)
            );
        }
    }
    o.push_str("</div></figure>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{analysis::testutil::Stream, proc_table::ProcTable};
    use tracer_common::tcp::{ROLE_PASSIVE, status};

    fn page(s: &mut Stream) -> String {
        s.finish();
        let mut m = Model::new(ModelOptions {
            fatal_signals: vec![9, 15],
            show_idle: true,
            keep_exited: true,
        });
        let mut procs = ProcTable::new();
        for ev in &s.events {
            procs.apply(ev);
            m.observe(ev, &procs, &s.host);
        }
        render(&s.engine, &m, &s.host)
    }

    #[test]
    fn a_close_wait_incident_has_ranked_findings_charts_and_the_loss_summary() {
        let mut s = Stream::new();
        s.proc_info(1, 0, "sh", |_| {});
        s.proc_info(77, 1, "proxy", |i| {
            i.open_sockets = Some(1);
            i.cmdline = vec!["proxy".into(), "--port".into(), "80".into()];
        });
        for k in 0..30u64 {
            s.at(k * 1000)
                .conn_open(77, "proxy", 0x500 + k, 4, ROLE_PASSIVE, 80, 4000 + k as u16);
            s.at(k * 1000 + 1500).conn_status(
                77,
                "proxy",
                0x500 + k,
                status::CLOSE_WAIT,
                k * 1000 + 100,
                8,
                ROLE_PASSIVE,
                80,
                4000 + k as u16,
            );
            s.at(k * 1000 + 1600).mem(77, "proxy", (10 + k) << 20);
            s.at(k * 1000 + 1700).tick();
        }
        s.at(31_000).signal(1, "sh", 15, 0, 77, "proxy");
        s.at(31_100).exit(77, "proxy", 15);
        let html = page(&mut s);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("close_wait"), "the finding is listed");
        let first = html.find("class=\"sev ").unwrap();
        assert!(
            html[first..].starts_with("class=\"sev critical\"")
                || html[first..].starts_with("class=\"sev warning\"")
        );
        assert!(html.contains("id=\"pid-77\""), "the culprit has charts");
        for t in [
            "Memory (RSS)",
            "Open sockets and CLOSE_WAIT",
            "Open connections per remote endpoint",
        ] {
            assert!(html.contains(&format!("aria-label=\"{t}\"")), "{t} chart");
        }
        assert!(html.matches("<svg").count() >= 3);
        assert!(
            html.contains("<polyline") || html.contains("<path"),
            "lines drawn"
        );
        assert!(html.contains("SIGTERM from 1 sh"), "the signal is a mark");
        assert!(html.contains("No record was lost"));
        assert!(!html.contains("<script"), "no JavaScript");
        for fetch in ["src=\"http", "href=\"http", "url(http", "@import"] {
            assert!(
                !html.contains(fetch),
                "nothing fetched from the network: {fetch}"
            );
        }
    }

    #[test]
    fn everything_from_the_host_is_escaped() {
        let mut s = Stream::new();
        s.proc_info(66, 1, "<script>x", |i| {
            i.cmdline = vec!["<img src=x onerror=alert(1)>".into(), "a&b\"c'".into()];
        });
        for k in 0..5u64 {
            s.at(k * 1000).mem(66, "<script>x", (1 + k) << 24);
        }
        s.at(6000).oom(66, "<script>x", 66, "<script>x", 200 << 10);
        let html = page(&mut s);
        assert!(!html.contains("<script>"), "comm escaped");
        assert!(!html.contains("<img"), "cmdline escaped");
        assert!(html.contains("&lt;script&gt;x"));
        assert!(html.contains("a&amp;b&quot;c&#39;"));
    }

    #[test]
    fn an_empty_dump_gives_a_page_without_charts() {
        let mut s = Stream::new();
        let html = page(&mut s);
        assert!(html.contains("None: nothing crossed the thresholds"));
        assert!(!html.contains("<svg"));
        assert!(html.ends_with("</html>\n"));
    }
}
