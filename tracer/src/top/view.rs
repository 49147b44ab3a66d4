//! Drawing `tracer top` and reading its keys. Works on a [`Snapshot`] taken from the model
//! under its lock, so drawing never holds up the event stream.
use ratatui::{
    Frame,
    crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{
        Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row as TRow, Table, TableState,
        Wrap,
    },
};

use super::model::{ConnState, Model, NS, Row, SignalRec, SortKey};
use crate::{analysis::Severity, host::HostInfo};

/// What the screen shows at one refresh.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub rows: Vec<Row>,
    /// (time, severity, kind, summary, culprit pid), newest first.
    pub findings: Vec<(u64, Severity, &'static str, String, Option<u32>)>,
    pub detail: Option<Detail>,
    pub now_ns: u64,
    pub events: u64,
    pub lost: u64,
    pub lost_kinds: Vec<(String, u64)>,
    pub host: HostInfo,
}

/// The selected process, in full.
#[derive(Clone, Debug, Default)]
pub struct Detail {
    pub row: Option<Row>,
    pub ppid: u32,
    pub cmdline: String,
    pub cgroup: String,
    pub death: Option<String>,
    pub by_state: Vec<(ConnState, u64)>,
    pub endpoints: Vec<(String, u64, u64, u64)>,
    /// (seconds before now, RSS bytes).
    pub rss_curve: Vec<(f64, f64)>,
    pub signals: Vec<SignalRec>,
    pub resets_per_sec: f64,
}

/// The screen's own state: sorting, filter, selection, pause.
pub struct Ui {
    pub sort: SortKey,
    pub desc: bool,
    pub filter: String,
    pub editing_filter: bool,
    pub paused: bool,
    pub selected: Option<u32>,
    pub detail: bool,
    /// "live on HOST", "replay of DUMP".
    pub source: String,
    pub replay: bool,
    pub speed: f64,
    pub done: bool,
    pub events_per_sec: f64,
    pub snap: Snapshot,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Redraw,
    Quit,
    /// A new replay speed.
    Speed,
    Pause,
}

impl Ui {
    pub fn new(source: String, replay: bool, speed: f64) -> Ui {
        Ui {
            sort: SortKey::Pid,
            desc: false,
            filter: String::new(),
            editing_filter: false,
            paused: false,
            selected: None,
            detail: false,
            source,
            replay,
            speed,
            done: false,
            events_per_sec: 0.0,
            snap: Snapshot::default(),
        }
    }

    /// Takes what the screen needs from the model (under its lock: keep it quick).
    pub fn snapshot(&self, m: &Model, host: &HostInfo) -> Snapshot {
        let rows = m.rows(&self.filter, self.sort, self.desc);
        let findings = m
            .findings
            .iter()
            .map(|u| {
                (
                    u.at_ns,
                    u.finding.severity,
                    u.finding.kind(),
                    u.finding.summary.clone(),
                    u.finding.pid(),
                )
            })
            .collect();
        let detail = match (self.detail, self.selected) {
            (true, Some(pid)) => m.get(pid).map(|p| {
                let rss_curve = p
                    .history
                    .rss
                    .points()
                    .iter()
                    .map(|&(t, v)| (-((m.now_ns.saturating_sub(t)) as f64 / NS as f64), v))
                    .collect();
                Detail {
                    row: Some(m.row(p)),
                    ppid: p.ppid,
                    cmdline: p.cmdline.clone(),
                    cgroup: p.cgroup.clone(),
                    death: p.death.clone(),
                    by_state: p.conns_by_state().into_iter().collect(),
                    endpoints: p
                        .endpoints()
                        .into_iter()
                        .map(|(e, s)| {
                            let g = |k| s.get(&k).copied().unwrap_or(0);
                            (
                                e,
                                g(ConnState::Open),
                                g(ConnState::CloseWait),
                                g(ConnState::Unanswered),
                            )
                        })
                        .collect(),
                    rss_curve,
                    signals: p.signals.clone(),
                    resets_per_sec: p.resets_per_sec(m.now_ns),
                }
            }),
            _ => None,
        };
        Snapshot {
            rows,
            findings,
            detail,
            now_ns: m.now_ns,
            events: m.events,
            lost: m.lost_total(),
            lost_kinds: m
                .lost
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            host: host.clone(),
        }
    }

    /// One key.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.kind == KeyEventKind::Release {
            return Action::None;
        }
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.editing_filter {
            match k.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() && self.filter.len() < 32 => {
                    self.filter.push(c)
                }
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        let rows = &self.snap.rows;
        let pos = self
            .selected
            .and_then(|pid| rows.iter().position(|r| r.pid == pid));
        let select = |i: usize| rows.get(i.min(rows.len().saturating_sub(1))).map(|r| r.pid);
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char(' ') => {
                self.paused = !self.paused;
                return Action::Pause;
            }
            KeyCode::Esc | KeyCode::Backspace if self.detail => self.detail = false,
            KeyCode::Esc => {
                self.selected = None;
                self.filter.clear();
            }
            KeyCode::Enter => {
                if self.detail {
                    self.detail = false;
                } else if self.selected.is_some() || !rows.is_empty() {
                    self.selected = self.selected.or_else(|| select(0));
                    self.detail = true;
                }
            }
            KeyCode::Char('/') => {
                self.editing_filter = true;
                self.filter.clear();
            }
            KeyCode::Down | KeyCode::Char('j') => self.selected = select(pos.map_or(0, |p| p + 1)),
            KeyCode::Up => self.selected = select(pos.map_or(0, |p| p.saturating_sub(1))),
            KeyCode::PageDown => self.selected = select(pos.map_or(0, |p| p + 20)),
            KeyCode::PageUp => self.selected = select(pos.map_or(0, |p| p.saturating_sub(20))),
            KeyCode::Home => self.selected = select(0),
            KeyCode::End => self.selected = select(usize::MAX),
            KeyCode::Char('i') => self.desc = !self.desc,
            KeyCode::Char('<') | KeyCode::Left | KeyCode::Char('>') | KeyCode::Right => {
                let i = SortKey::ALL
                    .iter()
                    .position(|s| *s == self.sort)
                    .unwrap_or(0);
                let n = SortKey::ALL.len();
                let back = matches!(k.code, KeyCode::Char('<') | KeyCode::Left);
                self.sort = SortKey::ALL[if back { (i + n - 1) % n } else { (i + 1) % n }];
                self.desc = self.sort.descending_by_default();
            }
            KeyCode::Char('+') if self.replay => {
                self.speed = if self.speed <= 0.0 {
                    0.0
                } else {
                    (self.speed * 2.0).min(1024.0)
                };
                return Action::Speed;
            }
            KeyCode::Char('-') if self.replay => {
                self.speed = if self.speed <= 0.0 {
                    512.0
                } else {
                    (self.speed / 2.0).max(1.0 / 64.0)
                };
                return Action::Speed;
            }
            KeyCode::Char(c) => match SortKey::from_key(c) {
                Some(s) => {
                    if self.sort == s {
                        self.desc = !self.desc;
                    } else {
                        self.sort = s;
                        self.desc = s.descending_by_default();
                    }
                }
                None => return Action::None,
            },
            _ => return Action::None,
        }
        Action::Redraw
    }
}

// ---- formatting ---------------------------------------------------------------------------

/// `512K`, `12.3M`, `1.2G`: sizes in a narrow column.
pub fn size(b: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if v >= 100.0 {
        format!("{v:.0}{}", U[i])
    } else {
        format!("{v:.1}{}", U[i])
    }
}

fn rate(bytes_per_sec: Option<f64>) -> String {
    match bytes_per_sec {
        Some(r) if r.abs() >= 1024.0 => {
            let s = size(r.abs() as u64);
            format!("{}{s}/s", if r < 0.0 { "-" } else { "+" })
        }
        Some(_) => "0".into(),
        None => "-".into(),
    }
}

/// `45s`, `12m`, `3h`, `2d`.
pub fn secs(s: f64) -> String {
    let s = s.max(0.0);
    if s < 100.0 {
        format!("{s:.0}s")
    } else if s < 6000.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 48.0 * 3600.0 {
        format!("{:.0}h", s / 3600.0)
    } else {
        format!("{:.0}d", s / 86400.0)
    }
}

pub fn clock(host: &HostInfo, ts: u64) -> String {
    let s = host.rfc3339(ts);
    s.get(11..19).unwrap_or(&s).to_owned()
}

fn severity_style(s: Severity) -> Style {
    match s {
        Severity::Critical => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Warning => Style::new().fg(Color::Yellow),
        Severity::Info => Style::new().fg(Color::Cyan),
    }
}

/// The columns: header text and width (the last takes what is left).
const COLUMNS: [(&str, Option<SortKey>, u16); 14] = [
    ("PID", Some(SortKey::Pid), 7),
    ("COMM", Some(SortKey::Comm), 15),
    ("SOCK", Some(SortKey::Sockets), 6),
    ("SOCK/MIN", Some(SortKey::SocketGrowth), 8),
    ("FDS/LIMIT", Some(SortKey::Fds), 11),
    ("CLOSE_W", Some(SortKey::CloseWait), 7),
    ("CONNS", Some(SortKey::Conns), 6),
    ("RST_S/R", Some(SortKey::Resets), 9),
    ("RSS", Some(SortKey::Rss), 7),
    ("RSS/S", Some(SortKey::RssGrowth), 9),
    ("LIMIT_IN", None, 8),
    ("RESTART", Some(SortKey::Restarts), 7),
    ("SIGNALS", Some(SortKey::Signals), 22),
    ("TOP_REMOTE", None, 0),
];

fn cells(r: &Row) -> Vec<String> {
    let fds = match (r.fds, r.fd_limit) {
        (Some(f), Some(l)) => format!("{f}/{l}"),
        (Some(f), None) => f.to_string(),
        (None, Some(l)) => format!("?/{l}"),
        (None, None) => "-".into(),
    };
    let sig = match &r.last_signal {
        Some(s) if r.fatal_signals > 0 => {
            let name = s.signal.trim_start_matches("SIG");
            if s.from_kernel {
                format!("{}x {name}<kernel", r.fatal_signals)
            } else {
                format!("{}x {name}<{} {}", r.fatal_signals, s.from_pid, s.from_comm)
            }
        }
        _ => "-".into(),
    };
    vec![
        r.pid.to_string(),
        if r.comm.is_empty() {
            "?".into()
        } else {
            r.comm.replace(' ', "_")
        },
        r.sockets.to_string(),
        match r.sockets_per_min {
            Some(g) => format!("{g:+.0}"),
            None => "-".into(),
        },
        fds,
        r.close_wait.to_string(),
        r.conns.to_string(),
        format!("{}/{}", r.resets_sent, r.resets_received),
        r.rss.map(size).unwrap_or_else(|| "-".into()),
        rate(r.rss_per_sec),
        r.secs_to_limit.map(secs).unwrap_or_else(|| "-".into()),
        r.restarts.to_string(),
        sig,
        match &r.top_endpoint {
            Some((e, n)) => format!("{e}x{n}"),
            None => "-".into(),
        },
    ]
}

// ---- drawing ------------------------------------------------------------------------------

pub fn draw(f: &mut Frame, ui: &Ui) {
    let [head, body, finds, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(7),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, head, ui);
    match &ui.snap.detail {
        Some(d) if ui.detail => draw_detail(f, body, ui, d),
        _ => draw_table(f, body, ui),
    }
    draw_findings(f, finds, ui);
    draw_footer(f, foot, ui);
}

fn draw_header(f: &mut Frame, area: Rect, ui: &Ui) {
    let s = &ui.snap;
    let time = if s.now_ns > 0 {
        clock(&s.host, s.now_ns)
    } else {
        "--:--:--".into()
    };
    let mut spans = vec![
        Span::styled("tracer top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {}  {time}  {} processes",
            ui.source,
            s.rows.len()
        )),
    ];
    if !ui.filter.is_empty() || ui.editing_filter {
        spans.push(Span::styled(
            format!(
                "  filter: {}{}",
                ui.filter,
                if ui.editing_filter { "_" } else { "" }
            ),
            Style::new().fg(Color::Cyan),
        ));
    }
    if ui.paused {
        spans.push(Span::styled(
            "  PAUSED",
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
    }
    if ui.done {
        spans.push(Span::styled(
            "  END OF DUMP",
            Style::new().fg(Color::Black).bg(Color::Green),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_table(f: &mut Frame, area: Rect, ui: &Ui) {
    let header = TRow::new(COLUMNS.iter().map(|(name, key, _)| {
        let mut t = (*name).to_owned();
        if *key == Some(ui.sort) {
            t.push(if ui.desc { '▼' } else { '▲' });
        }
        Cell::from(t)
    }))
    .style(Style::new().add_modifier(Modifier::REVERSED));
    let rows = ui.snap.rows.iter().map(|r| {
        let style = if r.exited {
            Style::new().fg(Color::DarkGray)
        } else if r.close_wait > 0 || r.fatal_signals > 0 {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        };
        TRow::new(cells(r)).style(style)
    });
    let widths = COLUMNS.iter().map(|(_, _, w)| {
        if *w == 0 {
            Constraint::Fill(1)
        } else {
            Constraint::Length(*w)
        }
    });
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().bg(Color::Blue).fg(Color::White));
    let mut state = TableState::default();
    state.select(
        ui.selected
            .and_then(|pid| ui.snap.rows.iter().position(|r| r.pid == pid)),
    );
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_findings(f: &mut Frame, area: Rect, ui: &Ui) {
    let s = &ui.snap;
    let only = if ui.detail { ui.selected } else { None };
    let lines: Vec<Line> = s
        .findings
        .iter()
        .filter(|(.., pid)| only.is_none() || *pid == only)
        .take(area.height.saturating_sub(2) as usize)
        .map(|(t, sev, kind, summary, _)| {
            Line::from(vec![
                Span::raw(format!("{} ", clock(&s.host, *t))),
                Span::styled(format!("{:<8} ", sev.name()), severity_style(*sev)),
                Span::styled(format!("{kind:<13} "), severity_style(*sev)),
                Span::raw(summary.clone()),
            ])
        })
        .collect();
    let title = format!(" findings ({}, newest first) ", s.findings.len());
    let body = if lines.is_empty() {
        Paragraph::new("none yet")
    } else {
        Paragraph::new(lines)
    };
    f.render_widget(body.block(Block::bordered().title(title)), area);
}

fn draw_footer(f: &mut Frame, area: Rect, ui: &Ui) {
    let s = &ui.snap;
    let lost = if s.lost == 0 {
        Span::raw("lost 0")
    } else {
        let kinds: Vec<String> = s
            .lost_kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        Span::styled(
            format!("LOST {} ({})", s.lost, kinds.join(", ")),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )
    };
    let mut spans = vec![
        Span::raw(format!("{:.0} events/s  ", ui.events_per_sec)),
        lost,
    ];
    if ui.replay {
        spans.push(Span::raw(if ui.speed <= 0.0 {
            "  speed max (+/-)".to_owned()
        } else {
            format!("  speed x{} (+/-)", ui.speed)
        }));
    }
    let keys = if ui.editing_filter {
        "  type a name, Enter: keep, Esc: clear"
    } else if ui.detail {
        "  Esc: back  space: pause  q: quit"
    } else {
        "  sort: p n s g f w c x m a r k (again: invert)  /: filter  space: pause  arrows+Enter: detail  q: quit"
    };
    spans.push(Span::styled(keys, Style::new().fg(Color::DarkGray)));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_detail(f: &mut Frame, area: Rect, ui: &Ui, d: &Detail) {
    let [info, mid, sigs] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Min(6),
        Constraint::Length(6),
    ])
    .areas(area);
    let host = &ui.snap.host;
    let text = match &d.row {
        Some(r) => {
            let mut v = vec![
                Line::from(vec![
                    Span::styled(
                        format!("{} {}", r.pid, r.comm),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(format!(
                        "  parent {}  {}",
                        d.ppid,
                        d.death.as_deref().unwrap_or("running")
                    )),
                ]),
                Line::raw(format!("cmdline: {}", d.cmdline)),
                Line::raw(format!(
                    "sockets {} (min {} over 1 min, {}/min)  fds {}  conns {}  CLOSE_WAIT {}  unanswered {}  resets sent {} received {} ({:.1}/s)",
                    r.sockets,
                    r.sockets_min,
                    r.sockets_per_min.map_or("-".into(), |g| format!("{g:+.0}")),
                    match (r.fds, r.fd_limit) {
                        (Some(f), Some(l)) => format!("{f}/{l}"),
                        (Some(f), None) => f.to_string(),
                        (None, l) => format!("?/{}", l.map_or("?".into(), |l| l.to_string())),
                    },
                    r.conns,
                    r.close_wait,
                    r.unanswered,
                    r.resets_sent,
                    r.resets_received,
                    d.resets_per_sec,
                )),
                Line::raw(format!(
                    "RSS {} ({})  limit {}{}  time to limit {}  restarts {}",
                    r.rss.map_or("-".into(), size),
                    rate(r.rss_per_sec),
                    r.mem_limit.map_or("-".into(), size),
                    if d.cgroup.is_empty() {
                        String::new()
                    } else {
                        format!(" (cgroup {})", d.cgroup)
                    },
                    r.secs_to_limit.map_or("-".into(), secs),
                    r.restarts
                )),
            ];
            if r.exited {
                v.push(Line::styled("exited", Style::new().fg(Color::DarkGray)));
            }
            v
        }
        None => vec![Line::raw("gone")],
    };
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" process (Esc: back) ")),
        info,
    );
    let [socks, mem] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(mid);
    let mut rows: Vec<TRow> = d
        .by_state
        .iter()
        .map(|(s, n)| TRow::new(vec![format!("state {}", s.name()), n.to_string()]))
        .collect();
    rows.extend(d.endpoints.iter().map(|(e, o, cw, un)| {
        TRow::new(vec![
            e.clone(),
            format!("{}", o + cw + un),
            format!("open {o} close_wait {cw} unanswered {un}"),
        ])
    }));
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(28),
                Constraint::Length(6),
                Constraint::Fill(1),
            ],
        )
        .header(TRow::new(vec!["sockets by state / endpoint", "n", ""]))
        .block(Block::bordered().title(" connections ")),
        socks,
    );
    if d.rss_curve.len() >= 2 {
        let pts: Vec<(f64, f64)> = d
            .rss_curve
            .iter()
            .map(|&(t, v)| (t, v / (1 << 20) as f64))
            .collect();
        let x0 = pts.first().map_or(-60.0, |p| p.0).min(-1.0);
        let ymax = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let chart = Chart::new(vec![
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(Color::Green))
                .data(&pts),
        ])
        .x_axis(
            Axis::default()
                .bounds([x0, 0.0])
                .labels(vec![format!("-{}", secs(-x0)), "now".into()]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, ymax])
                .labels(vec!["0".to_owned(), format!("{ymax:.0}M")]),
        )
        .block(Block::bordered().title(" RSS (MiB) "));
        f.render_widget(chart, mem);
    } else {
        f.render_widget(
            Paragraph::new("no memory samples yet").block(Block::bordered().title(" RSS ")),
            mem,
        );
    }
    let lines: Vec<Line> = d
        .signals
        .iter()
        .rev()
        .take(4)
        .map(|s| Line::raw(format!("{}  {}", clock(host, s.ts_ns), s.describe())))
        .collect();
    f.render_widget(
        Paragraph::new(if lines.is_empty() {
            vec![Line::raw("no fatal signals received")]
        } else {
            lines
        })
        .block(Block::bordered().title(" fatal signals received ")),
        sigs,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::{Terminal, backend::TestBackend};

    fn row(pid: u32, comm: &str, sockets: i64) -> Row {
        Row {
            pid,
            comm: comm.into(),
            exited: false,
            sockets,
            sockets_min: 0,
            sockets_per_min: Some(120.0),
            fds: Some(sockets + 3),
            fd_limit: Some(1024),
            close_wait: 2,
            unanswered: 0,
            conns: 4,
            top_endpoint: Some(("127.0.0.1:5432".into(), 4)),
            resets_sent: 1,
            resets_received: 2,
            rss: Some(12 << 20),
            rss_per_sec: Some((1 << 20) as f64),
            mem_limit: Some(128 << 20),
            secs_to_limit: Some(116.0),
            fatal_signals: 0,
            last_signal: None,
            restarts: 0,
        }
    }

    fn screen(ui: &Ui) -> String {
        let mut t = Terminal::new(TestBackend::new(160, 30)).unwrap();
        t.draw(|f| draw(f, ui)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    #[test]
    fn the_table_shows_every_column_and_the_sort() {
        let mut ui = Ui::new("live on test".into(), false, 1.0);
        ui.sort = SortKey::Sockets;
        ui.desc = true;
        ui.snap.rows = vec![row(42, "proxy", 99), row(7, "sshd", 1)];
        let s = screen(&ui);
        assert!(s.contains("SOCK▼"), "{s}");
        let line = s
            .lines()
            .find(|l| l.trim_start().starts_with("42"))
            .unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &cols[..5],
            &["42", "proxy", "99", "+120", "102/1024"],
            "{line}"
        );
        assert!(
            line.contains("12.0M") && line.contains("+1.0M/s") && line.contains("2m"),
            "{line}"
        );
        assert!(line.contains("127.0.0.1:5432x4"));
        assert!(s.contains("lost 0"));
    }

    #[test]
    fn keys_sort_filter_select_and_quit() {
        let k = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        let mut ui = Ui::new("x".into(), false, 1.0);
        ui.snap.rows = vec![row(1, "a", 1), row(2, "b", 2)];
        assert_eq!(ui.key(k('s')), Action::Redraw);
        assert_eq!((ui.sort, ui.desc), (SortKey::Sockets, true));
        ui.key(k('s'));
        assert!(!ui.desc, "the same key again inverts");
        ui.key(k('/'));
        for c in "prox".chars() {
            ui.key(k(c));
        }
        assert_eq!(ui.filter, "prox");
        assert_eq!(
            ui.sort,
            SortKey::Sockets,
            "letters typed in the filter do not sort"
        );
        ui.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert!(!ui.editing_filter);
        ui.key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        ui.key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        assert_eq!(ui.selected, Some(2));
        ui.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        assert!(ui.detail);
        assert_eq!(ui.key(k(' ')), Action::Pause);
        assert!(ui.paused);
        assert_eq!(ui.key(k('q')), Action::Quit);
        assert_eq!(
            ui.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    #[test]
    fn findings_are_coloured_by_severity() {
        let mut ui = Ui::new("x".into(), false, 1.0);
        ui.snap.findings = vec![(
            1,
            Severity::Critical,
            "oom_kill",
            "OOM killer killed 1 (ruby)".into(),
            Some(1),
        )];
        let mut t = Terminal::new(TestBackend::new(120, 20)).unwrap();
        t.draw(|f| draw(f, &ui)).unwrap();
        let buf = t.backend().buffer();
        let found = (0..buf.area.height).find_map(|y| {
            (0..buf.area.width)
                .find(|&x| buf[(x, y)].symbol() == "c" && buf[(x + 1, y)].symbol() == "r")
                .map(|x| buf[(x, y)].fg)
        });
        assert_eq!(found, Some(Color::Red));
    }

    #[test]
    fn sizes_and_durations_fit_narrow_columns() {
        assert_eq!(size(512), "512B");
        assert_eq!(size(12 << 20), "12.0M");
        assert_eq!(size(300 << 30), "300G");
        assert_eq!(secs(45.0), "45s");
        assert_eq!(secs(600.0), "10m");
        assert_eq!(rate(Some(-2.0 * 1048576.0)), "-2.0M/s");
    }
}
