//! Where and how to export: `--otlp [ENDPOINT]` and the standard `OTEL_EXPORTER_OTLP_*`
//! variables, resolved by one function that takes the environment as a lookup, so every rule
//! is tested without touching the process environment.
//!
//! Precedence: `--otlp ENDPOINT` sends both signals to ENDPOINT/v1/logs and ENDPOINT/v1/metrics;
//! a bare `--otlp` takes `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` / `_METRICS_ENDPOINT` (used as
//! given, as the spec says) else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/<signal>`, else
//! `http://localhost:4318`. Headers and timeouts: the signal's own variable, else the general
//! one (headers merge, the signal's winning per key).
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error(
        "OTLP endpoint {0:?}: only http:// is supported (no TLS here); point it at a local OpenTelemetry Collector"
    )]
    Scheme(String),
    #[error("OTLP endpoint {0:?}: expected http://HOST[:PORT][/PATH]")]
    Url(String),
    #[error("{var}={value:?}: expected {what}")]
    Var {
        var: String,
        value: String,
        what: &'static str,
    },
}

/// An http:// URL, split for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, ConfigError> {
        let s = s.trim();
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(ConfigError::Scheme(s.to_owned())),
            // `127.0.0.1:4318`: http is the only thing we speak.
            None => s,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let bad = || ConfigError::Url(s.to_owned());
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 80,
                None => return Err(bad()),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
                None => (authority.to_owned(), 80),
            }
        };
        if host.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        Ok(Url {
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// `host:port`, bracketed for IPv6, for the Host header and connecting.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// This URL with `/v1/<signal>` appended to its path (the base-endpoint rule).
    fn join_signal(&self, signal: &str) -> Url {
        let mut u = self.clone();
        u.path = format!("{}/v1/{signal}", u.path.trim_end_matches('/'));
        u
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// How one signal is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalConfig {
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves the endpoints, headers and timeouts of both signals: (logs, metrics).
/// `flag`: the value of `--otlp` (empty for a bare `--otlp`).
pub fn resolve(
    flag: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(SignalConfig, SignalConfig), ConfigError> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let base = if flag.trim().is_empty() {
        var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
    } else {
        flag.to_owned()
    };
    let base = Url::parse(&base)?;
    let general_headers = match var("OTEL_EXPORTER_OTLP_HEADERS") {
        Some(v) => parse_pairs("OTEL_EXPORTER_OTLP_HEADERS", &v)?,
        None => Vec::new(),
    };
    let general_timeout = match var("OTEL_EXPORTER_OTLP_TIMEOUT") {
        Some(v) => parse_ms("OTEL_EXPORTER_OTLP_TIMEOUT", &v)?,
        None => DEFAULT_TIMEOUT,
    };
    let signal = |name: &str| -> Result<SignalConfig, ConfigError> {
        let upper = name.to_ascii_uppercase();
        let own = format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT");
        let url = match var(&own) {
            Some(v) if flag.trim().is_empty() => Url::parse(&v)?,
            _ => base.join_signal(name),
        };
        let mut headers = general_headers.clone();
        let own = format!("OTEL_EXPORTER_OTLP_{upper}_HEADERS");
        if let Some(v) = var(&own) {
            for (k, v) in parse_pairs(&own, &v)? {
                headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
        let own = format!("OTEL_EXPORTER_OTLP_{upper}_TIMEOUT");
        let timeout = match var(&own) {
            Some(v) => parse_ms(&own, &v)?,
            None => general_timeout,
        };
        Ok(SignalConfig {
            url,
            headers,
            timeout,
        })
    };
    Ok((signal("logs")?, signal("metrics")?))
}

/// `key1=value1,key2=value2`, values percent-decoded (the W3C baggage format the spec uses for
/// OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES).
pub fn parse_pairs(var: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || ConfigError::Var {
            var: var.to_owned(),
            value: value.to_owned(),
            what: "comma-separated key=value pairs",
        };
        let (k, v) = item.split_once('=').ok_or_else(bad)?;
        let k = k.trim();
        // Header names may not hold control characters or separators: a CR/LF would let a
        // value inject request lines.
        let v = percent_decode(v.trim());
        if k.is_empty()
            || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            || v.bytes().any(|b| b == b'\r' || b == b'\n')
        {
            return Err(bad());
        }
        out.push((k.to_owned(), v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_ms(var: &str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| ConfigError::Var {
            var: var.to_owned(),
            value: value.to_owned(),
            what: "a positive number of milliseconds",
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 4318, "/")
        );
        let u = Url::parse("collector/otlp/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("collector", 80, "/otlp/")
        );
        let u = Url::parse("http://[::1]:9/x").unwrap();
        assert_eq!(u.authority(), "[::1]:9");
        assert_eq!(u.to_string(), "http://[::1]:9/x");
        assert!(matches!(
            Url::parse("https://c:4318"),
            Err(ConfigError::Scheme(_))
        ));
        assert!(Url::parse("http://:80").is_err());
        assert!(Url::parse("http://h:port").is_err());
        assert!(Url::parse("http://user@h").is_err());
    }

    #[test]
    fn the_flag_wins_and_appends_the_signal_paths() {
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://elsewhere:1"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:2/custom"),
        ]);
        let (l, m) = resolve("http://127.0.0.1:4318/", &e).unwrap();
        assert_eq!(l.url.to_string(), "http://127.0.0.1:4318/v1/logs");
        assert_eq!(m.url.to_string(), "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(l.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn a_bare_flag_follows_the_spec_variables() {
        let (l, m) = resolve("", &env(&[])).unwrap();
        assert_eq!(l.url.to_string(), "http://localhost:4318/v1/logs");
        assert_eq!(m.url.to_string(), "http://localhost:4318/v1/metrics");
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://gw:4318/base"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:2/as/given"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret , tenant=a"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "Tenant=b"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "700"),
        ]);
        let (l, m) = resolve("", &e).unwrap();
        assert_eq!(l.url.to_string(), "http://logs:2/as/given");
        assert_eq!(m.url.to_string(), "http://gw:4318/base/v1/metrics");
        assert_eq!(
            l.headers,
            vec![
                ("api-key".to_owned(), "s=cret".to_owned()),
                ("tenant".to_owned(), "a".to_owned())
            ]
        );
        assert_eq!(
            m.headers,
            vec![
                ("api-key".to_owned(), "s=cret".to_owned()),
                ("Tenant".to_owned(), "b".to_owned())
            ]
        );
        assert_eq!(l.timeout, Duration::from_millis(700));
        assert_eq!(m.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn bad_variables_say_which() {
        let e = env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]);
        let err = resolve("", &e).unwrap_err().to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{err}");
        let e = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=b%0d%0aX-Injected: 1")]);
        assert!(resolve("", &e).is_err());
        let e = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]);
        assert!(resolve("", &e).is_err());
    }
}
