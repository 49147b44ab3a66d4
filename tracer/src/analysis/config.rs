//! Thresholds of the analyses: defaults here, a `[analysis]` table in a TOML file
//! (`--config tracer.toml`), and `--threshold KEY=VALUE` on the command line, applied in that
//! order. Every key of [`AnalysisConfig`] is a key of the file and of `--threshold`.
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::units;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {msg}", path.display())]
    Parse { path: PathBuf, msg: String },
    #[error("--threshold '{0}': expected KEY=VALUE, e.g. --threshold restart_min_count=5")]
    BadOverride(String),
    #[error("--threshold {key}: {msg}")]
    Override { key: String, msg: String },
    #[error("invalid threshold {key}: {msg}")]
    Invalid { key: &'static str, msg: String },
}

/// Thresholds of every analysis. Times are event time (from event timestamps), never the wall
/// clock, so the same events always give the same findings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    /// All analyses are evaluated whenever event time crosses a multiple of this, and at the end.
    pub eval_interval_ms: u64,
    /// A raised finding is reported again (UPDATED) when its main figure grew by this fraction
    /// since it was last reported, or its severity rose...
    pub update_growth: f64,
    /// ...but not more often than this (severity changes are always reported).
    pub update_min_interval_s: f64,

    /// socket_leak: open sockets must have grown over this window...
    pub socket_leak_window_s: f64,
    /// ...by at least this many sockets...
    pub socket_leak_min_growth: u64,
    /// ...at a fitted rate of at least this many per minute...
    pub socket_leak_min_per_min: f64,
    /// ...for at least this long (a burst of connections at start-up is not a leak).
    pub socket_leak_min_span_s: f64,

    /// close_wait: a socket counts once it has stayed in CLOSE_WAIT this long...
    pub close_wait_min_age_s: f64,
    /// ...and a process is reported with at least this many such sockets.
    pub close_wait_min_count: u64,

    /// fd_exhaustion: accept()/socket() EMFILE/ENFILE failures that raise it.
    pub fd_min_errors: u64,
    /// fd_exhaustion is also raised (as a warning) when open fds reach this share of the limit.
    pub fd_near_limit_ratio: f64,

    /// reset_storm: resets counted over this sliding window...
    pub reset_window_s: f64,
    /// ...raise it once a process or port has this many in the window.
    pub reset_min_count: u64,

    /// signal_source: the signals reported (names like "TERM" or "SIGTERM", or numbers).
    /// SIGCHLD is never reported.
    #[serde(deserialize_with = "string_or_list")]
    pub fatal_signals: Vec<String>,

    /// restart_loop: a new process of the same program from the same parent within this long
    /// after the previous one died counts as a restart...
    pub restart_within_s: f64,
    /// ...and this many restarts within this window make a loop.
    pub restart_window_s: f64,
    pub restart_min_count: u64,

    /// runaway_alloc: RSS growth is fitted over this sliding window of memory samples...
    pub mem_window_s: f64,
    /// ...with at least this many samples...
    pub mem_min_samples: u64,
    /// ...spanning at least this long...
    pub mem_min_duration_s: f64,
    /// ...growing at least this fast (bytes per second; "1M" accepted)...
    #[serde(deserialize_with = "size")]
    pub mem_min_rate_bytes_per_sec: u64,
    /// ...by at least this much in the window ("64M" accepted)...
    #[serde(deserialize_with = "size")]
    pub mem_min_growth_bytes: u64,
    /// ...and steadily: this share of sample-to-sample moves must be increases.
    pub mem_min_steadiness: f64,
    /// runaway_alloc is critical when the limit is projected to be hit within this long.
    pub mem_critical_s: f64,
    /// runaway_alloc early warning: before the window has spanned mem_min_duration_s, a
    /// process is raised at once, as critical, when its fitted growth reaches the limit sooner
    /// than that span would be complete, with the rate and steadiness rules above and at least
    /// this many samples...
    pub mem_early_min_samples: u64,
    /// ...spanning at least this long (start-up bursts are shorter)...
    pub mem_early_min_duration_s: f64,
    /// ...grown by at least this much ("16M" accepted)...
    #[serde(deserialize_with = "size")]
    pub mem_early_min_growth_bytes: u64,
    /// ...and by at least this share of the headroom it had (limit minus RSS at the window's
    /// start): a bounded allocation that is freed again seldom eats that much at once.
    pub mem_early_min_headroom_share: f64,

    /// conn_pileup: at least this many connections from one process to one remote endpoint...
    pub pileup_min_open: u64,
    /// ...the oldest of them open for at least this long.
    pub pileup_min_age_s: f64,

    /// Report: notable events kept for the incident timeline (the latest are kept).
    pub timeline_max: usize,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            eval_interval_ms: 1000,
            update_growth: 0.25,
            update_min_interval_s: 10.0,
            socket_leak_window_s: 60.0,
            socket_leak_min_growth: 50,
            socket_leak_min_per_min: 20.0,
            socket_leak_min_span_s: 20.0,
            close_wait_min_age_s: 10.0,
            close_wait_min_count: 1,
            fd_min_errors: 1,
            fd_near_limit_ratio: 0.9,
            reset_window_s: 10.0,
            reset_min_count: 20,
            fatal_signals: [
                "HUP", "INT", "QUIT", "ILL", "ABRT", "BUS", "FPE", "KILL", "SEGV", "TERM", "SYS",
            ]
            .map(String::from)
            .to_vec(),
            restart_within_s: 60.0,
            restart_window_s: 600.0,
            restart_min_count: 3,
            mem_window_s: 60.0,
            mem_min_samples: 5,
            mem_min_duration_s: 30.0,
            mem_min_rate_bytes_per_sec: 1 << 20,
            mem_min_growth_bytes: 64 << 20,
            mem_min_steadiness: 0.8,
            mem_critical_s: 600.0,
            mem_early_min_samples: 4,
            mem_early_min_duration_s: 1.0,
            mem_early_min_growth_bytes: 16 << 20,
            mem_early_min_headroom_share: 0.25,
            pileup_min_open: 20,
            pileup_min_age_s: 30.0,
            timeline_max: 5000,
        }
    }
}

/// `--config` and `--threshold`, for `live`, `replay` and `report`.
#[derive(Args, Debug, Clone, Default)]
pub struct AnalysisArgs {
    /// TOML file whose [analysis] table sets thresholds of the findings.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Set one threshold (repeatable), after the config file, e.g. restart_min_count=5 or
    /// mem_min_rate_bytes_per_sec=4M. The keys are those of the [analysis] table.
    #[arg(long = "threshold", value_name = "KEY=VALUE")]
    pub thresholds: Vec<String>,
}

impl AnalysisArgs {
    pub fn load(&self) -> Result<AnalysisConfig, ConfigError> {
        let mut table = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                file_table(&text).map_err(|msg| ConfigError::Parse {
                    path: path.clone(),
                    msg,
                })?
            }
            None => toml::Table::new(),
        };
        for t in &self.thresholds {
            let (key, value) = t
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| ConfigError::BadOverride(t.clone()))?;
            table.insert(key.to_owned(), toml_value(value));
            from_table(&table).map_err(|msg| ConfigError::Override {
                key: key.to_owned(),
                msg,
            })?;
        }
        let cfg = from_table(&table).map_err(|msg| match &self.config {
            Some(path) => ConfigError::Parse {
                path: path.clone(),
                msg,
            },
            None => ConfigError::Invalid {
                key: "threshold",
                msg,
            },
        })?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The `[analysis]` table of a config file (other tables belong to other parts of tracer).
fn file_table(text: &str) -> Result<toml::Table, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    match doc.get("analysis") {
        None => Ok(toml::Table::new()),
        Some(toml::Value::Table(t)) => {
            from_table(t)?;
            Ok(t.clone())
        }
        Some(_) => Err("`analysis` must be a table ([analysis])".into()),
    }
}

fn from_table(t: &toml::Table) -> Result<AnalysisConfig, String> {
    AnalysisConfig::deserialize(toml::Value::Table(t.clone()))
        .map_err(|e| e.to_string().trim().to_owned())
}

/// A command-line value as TOML (`5`, `0.5`, `["TERM"]`), else as a plain string (`4M`, `TERM,KILL`).
fn toml_value(v: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_owned()))
}

impl AnalysisConfig {
    /// Parses a whole config file's text (its `[analysis]` table).
    pub fn from_toml(text: &str) -> Result<AnalysisConfig, String> {
        let cfg = from_table(&file_table(text)?)?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("update_min_interval_s", self.update_min_interval_s),
            ("socket_leak_window_s", self.socket_leak_window_s),
            ("reset_window_s", self.reset_window_s),
            ("restart_within_s", self.restart_within_s),
            ("restart_window_s", self.restart_window_s),
            ("mem_window_s", self.mem_window_s),
        ];
        for (key, v) in positive {
            if !(v.is_finite() && v > 0.0 && v <= 1e9) {
                return Err(ConfigError::Invalid {
                    key,
                    msg: format!("{v} is not a positive number of seconds"),
                });
            }
        }
        let non_negative = [
            ("update_growth", self.update_growth),
            ("socket_leak_min_per_min", self.socket_leak_min_per_min),
            ("socket_leak_min_span_s", self.socket_leak_min_span_s),
            ("close_wait_min_age_s", self.close_wait_min_age_s),
            ("mem_min_duration_s", self.mem_min_duration_s),
            ("mem_critical_s", self.mem_critical_s),
            ("mem_early_min_duration_s", self.mem_early_min_duration_s),
            ("pileup_min_age_s", self.pileup_min_age_s),
        ];
        for (key, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::Invalid {
                    key,
                    msg: format!("{v} must be zero or more"),
                });
            }
        }
        for (key, v) in [
            ("fd_near_limit_ratio", self.fd_near_limit_ratio),
            ("mem_min_steadiness", self.mem_min_steadiness),
            (
                "mem_early_min_headroom_share",
                self.mem_early_min_headroom_share,
            ),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::Invalid {
                    key,
                    msg: format!("{v} is not between 0 and 1"),
                });
            }
        }
        if self.eval_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "eval_interval_ms",
                msg: "must be at least 1".into(),
            });
        }
        self.signal_numbers()?;
        Ok(())
    }

    /// `fatal_signals` as signal numbers.
    pub fn signal_numbers(&self) -> Result<Vec<i32>, ConfigError> {
        self.fatal_signals
            .iter()
            .map(|s| {
                parse_signal(s).ok_or_else(|| ConfigError::Invalid {
                    key: "fatal_signals",
                    msg: format!(
                        "unknown signal '{s}' (use names like TERM or SIGKILL, or numbers)"
                    ),
                })
            })
            .collect()
    }
}

/// `TERM`, `SIGTERM`, `sigterm` or `15`.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    crate::vocab::signal_number(s)
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(u64),
        Text(String),
    }
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(n),
        NumOrText::Text(s) => units::parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// Loads a config file's thresholds (for callers that have a path but no [`AnalysisArgs`]).
pub fn load_file(path: &Path) -> Result<AnalysisConfig, ConfigError> {
    AnalysisArgs {
        config: Some(path.to_owned()),
        thresholds: Vec::new(),
    }
    .load()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_name_known_signals() {
        let c = AnalysisConfig::default();
        c.validate().unwrap();
        let n = c.signal_numbers().unwrap();
        assert!(n.contains(&15) && n.contains(&9) && !n.contains(&17));
    }

    #[test]
    fn file_then_overrides() {
        let dir = std::env::temp_dir().join(format!("tracer-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tracer.toml");
        std::fs::write(
            &path,
            "[record]\nsomething = 1\n\n[analysis]\nrestart_min_count = 5\nmem_min_rate_bytes_per_sec = \"4M\"\nfatal_signals = [\"TERM\", \"KILL\"]\n",
        )
        .unwrap();
        let args = AnalysisArgs {
            config: Some(path.clone()),
            thresholds: vec![
                "restart_min_count=7".into(),
                "socket_leak_window_s=30".into(),
                "fatal_signals=TERM,SIGINT".into(),
            ],
        };
        let c = args.load().unwrap();
        assert_eq!(c.restart_min_count, 7);
        assert_eq!(c.mem_min_rate_bytes_per_sec, 4 << 20);
        assert_eq!(c.socket_leak_window_s, 30.0);
        assert_eq!(c.signal_numbers().unwrap(), vec![15, 2]);
        assert_eq!(c.pileup_min_open, 20, "untouched keys keep their defaults");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_input_gives_clear_errors() {
        let e = AnalysisConfig::from_toml("[analysis]\nrestart_min_cont = 5\n").unwrap_err();
        assert!(e.contains("restart_min_cont"), "{e}");
        let e = AnalysisArgs {
            config: None,
            thresholds: vec!["nonsense".into()],
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("KEY=VALUE"), "{e}");
        let e = AnalysisArgs {
            config: None,
            thresholds: vec!["no_such_key=1".into()],
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("no_such_key"), "{e}");
        let e = AnalysisArgs {
            config: None,
            thresholds: vec!["fatal_signals=TERM,BOGUS".into()],
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("BOGUS"), "{e}");
        let e = AnalysisArgs {
            config: None,
            thresholds: vec!["mem_window_s=0".into()],
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("mem_window_s"), "{e}");
        let e = AnalysisArgs {
            config: Some("/nonexistent/tracer.toml".into()),
            thresholds: vec![],
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/tracer.toml"), "{e}");
        assert!(AnalysisConfig::from_toml("not toml at all [").is_err());
    }
}
