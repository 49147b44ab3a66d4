//! Sizes (`64M`, `1G`, `512K`, `4096`) and durations (`500ms`, `30s`, `10m`, `2h`, `7d`) on the
//! command line.
use std::time::Duration;

/// Parses a byte size with an optional binary suffix (K, M, G, T; `KiB`/`KB`/`k` accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(format!(
            "invalid size '{s}': expected a number with an optional K, M, G or T suffix, like 64M"
        ));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("invalid size '{s}': number too large"))?;
    let unit = t[digits..].trim().to_ascii_lowercase();
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size '{s}': unknown unit '{}' (use K, M, G or T)",
                &t[digits..]
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("invalid size '{s}': too large"))
}

/// Parses a duration: a number followed by ms, s, m, h or d (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let n: f64 = t[..digits].parse().map_err(|_| {
        format!("invalid duration '{s}': expected a number and a unit, like 30s, 10m or 7d")
    })?;
    let secs = match t[digits..].trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        u => {
            return Err(format!(
                "invalid duration '{s}': unknown unit '{u}' (use ms, s, m, h or d)"
            ));
        }
    };
    let total = n * secs;
    if !total.is_finite() || total < 0.0 || total > 1e12 {
        return Err(format!("invalid duration '{s}': out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// `512 B`, `1.5 KiB`, `2.0 GiB`: sizes for people.
pub fn bytes_human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2mb"), Ok(2 << 20));
        assert!(parse_size("M").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
