//! Facts about the traced host that dumps carry, so replay elsewhere renders the same output:
//! the boot-time → wall-clock offset (events are stamped with CLOCK_BOOTTIME), hostname,
//! kernel release, boot id and total memory.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub boot_id: String,
    /// Add to a boot-time timestamp to get nanoseconds since the Unix epoch.
    pub boot_to_wall_ns: i64,
    pub mem_total_bytes: u64,
    pub page_size: u64,
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Nanoseconds since boot, the clock of `bpf_ktime_get_boot_ns`.
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME) as u64
}

impl HostInfo {
    pub fn current() -> HostInfo {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        // Take the offset as the minimum over a few samples: the pair read with the least
        // preemption between the two clock reads.
        let boot_to_wall_ns = (0..5)
            .map(|_| {
                let b = clock_ns(libc::CLOCK_BOOTTIME);
                let w = clock_ns(libc::CLOCK_REALTIME);
                let b2 = clock_ns(libc::CLOCK_BOOTTIME);
                (b2 - b, w - (b + b2) / 2)
            })
            .min_by_key(|(spread, _)| *spread)
            .map(|(_, off)| off)
            .unwrap_or(0);
        let mem_total_bytes = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        HostInfo {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            boot_to_wall_ns,
            mem_total_bytes,
            // SAFETY: sysconf has no preconditions.
            page_size: unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64,
        }
    }

    /// Wall-clock nanoseconds since the Unix epoch for a boot-time timestamp.
    pub fn wall_ns(&self, boot_ns: u64) -> i64 {
        // Saturating: a corrupt timestamp in a dump must not overflow.
        i64::try_from(boot_ns)
            .unwrap_or(i64::MAX)
            .saturating_add(self.boot_to_wall_ns)
    }

    /// RFC 3339 UTC with nanoseconds, e.g. `2026-11-24T03:04:05.123456789Z`.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        rfc3339_ns(self.wall_ns(boot_ns))
    }

    /// [`HostInfo::rfc3339`] without the `String`: what the printers use once per event.
    pub fn rfc3339_stamp(&self, boot_ns: u64) -> Stamp {
        Stamp::new(self.wall_ns(boot_ns))
    }
}

/// Length of an RFC 3339 timestamp with nanoseconds: i64 nanoseconds since the epoch span the
/// years 1677 to 2262, always four digits.
const STAMP_LEN: usize = 30;
/// Length of its `YYYY-MM-DDTHH:MM:SS.` prefix, the same for a whole second.
const PREFIX_LEN: usize = 20;

/// [`rfc3339_ns`] on the stack: `as_str` is the same text. The date and time of day are
/// formatted once per second (consecutive events mostly share their second) and kept in a
/// per-thread cache; only the nanoseconds are written for each stamp.
pub struct Stamp {
    buf: [u8; STAMP_LEN],
}

thread_local! {
    /// The second last formatted and its prefix.
    static PREFIX: std::cell::Cell<(i64, [u8; PREFIX_LEN])> =
        const { std::cell::Cell::new((i64::MIN, [0; PREFIX_LEN])) };
}

impl Stamp {
    pub fn new(ns: i64) -> Stamp {
        let secs = ns.div_euclid(1_000_000_000);
        let mut buf = [0u8; STAMP_LEN];
        let (cached, prefix) = PREFIX.get();
        if cached == secs {
            buf[..PREFIX_LEN].copy_from_slice(&prefix);
        } else {
            let days = secs.div_euclid(86_400);
            let sod = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            let p = &mut buf[..PREFIX_LEN];
            digits(&mut p[0..4], y.clamp(0, 9999) as u64);
            p[4] = b'-';
            digits(&mut p[5..7], u64::from(m));
            p[7] = b'-';
            digits(&mut p[8..10], u64::from(d));
            p[10] = b'T';
            digits(&mut p[11..13], (sod / 3600) as u64);
            p[13] = b':';
            digits(&mut p[14..16], (sod % 3600 / 60) as u64);
            p[16] = b':';
            digits(&mut p[17..19], (sod % 60) as u64);
            p[19] = b'.';
            let mut prefix = [0u8; PREFIX_LEN];
            prefix.copy_from_slice(p);
            PREFIX.set((secs, prefix));
        }
        digits(
            &mut buf[PREFIX_LEN..STAMP_LEN - 1],
            ns.rem_euclid(1_000_000_000) as u64,
        );
        buf[STAMP_LEN - 1] = b'Z';
        Stamp { buf }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written to `buf`.
        std::str::from_utf8(&self.buf).unwrap_or_default()
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `v` in decimal, zero padded to fill `out` (the caller makes it wide enough).
fn digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with nanoseconds.
pub fn rfc3339_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Parses the RFC 3339 timestamps this tool prints (and any offset form with `Z` or `±hh:mm`)
/// into nanoseconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', ' '])?;
    let mut dp = date.splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (time, offset_s) =
        if let Some(t) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
            (t, 0i64)
        } else if let Some(i) = rest.rfind(['+', '-']) {
            let (t, off) = rest.split_at(i);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (oh, om) = off[1..].split_once(':')?;
            (
                t,
                sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
            )
        } else {
            (rest, 0)
        };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut tp = hms.splitn(3, ':');
    let hh: i64 = tp.next()?.parse().ok()?;
    let mm: i64 = tp.next()?.parse().ok()?;
    let ss: i64 = tp.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut nanos = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{frac:0<9}").parse().ok()?;
    }
    let days = days_from_civil(y, m, d);
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss - offset_s) * 1_000_000_000 + nanos)
}

// Howard Hinnant's civil calendar algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ns(1_795_479_845_123_456_789),
            "2026-11-24T00:24:05.123456789Z"
        );
        assert_eq!(
            rfc3339_ns(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn parses_what_it_prints_and_offsets() {
        for ns in [0i64, 1_795_479_845_123_456_789, 951_782_400_000_000_001] {
            assert_eq!(parse_rfc3339(&rfc3339_ns(ns)), Some(ns));
        }
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-24T00:24:05Z"),
            Some(1_795_479_845_000_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }

    /// The stamp and its per-second cache against the general formatter: across second, day,
    /// month and year boundaries, leap days (2000, 2024; not 1900, 2100), going back in time
    /// (out-of-order records), before 1970 and at both ends of the i64 range.
    #[test]
    fn stamp_matches_the_formatter() {
        let day = 86_400i64 * 1_000_000_000;
        let sec = 1_000_000_000i64;
        let mut points = vec![0i64, -1, 1, i64::MAX, i64::MIN, i64::MIN + 1, i64::MAX - 1];
        for s in [
            "1900-02-28T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "1999-12-31T23:59:59Z",
            "2000-02-28T23:59:59Z",
            "2000-02-29T23:59:59Z",
            "2024-02-28T23:59:59Z",
            "2024-12-31T23:59:59Z",
            "2026-11-24T00:24:05Z",
            "2100-02-28T23:59:59Z",
            "2262-04-08T23:59:59Z",
        ] {
            let t = parse_rfc3339(s).unwrap();
            for d in [
                -sec,
                -1,
                0,
                1,
                sec - 1,
                sec,
                sec + 1,
                day,
                day + 1,
                2 * day - 1,
            ] {
                points.push(t + d);
                points.push(t + d + 999_999_999);
            }
        }
        // A walk with small steps (the cache hits) and jumps back and forth (it misses).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut t = parse_rfc3339("2024-02-29T23:59:58Z").unwrap();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += match x % 8 {
                0 => -(((x >> 8) % (3 * sec as u64)) as i64),
                1 => ((x >> 8) % (400 * day as u64)) as i64 - 200 * day,
                _ => ((x >> 8) % 50_000_000) as i64,
            };
            points.push(t);
        }
        for (i, ns) in points.into_iter().enumerate() {
            assert_eq!(Stamp::new(ns).as_str(), rfc3339_ns(ns), "point {i}: {ns}");
            // Twice: the second time from the cache.
            assert_eq!(
                Stamp::new(ns).to_string(),
                rfc3339_ns(ns),
                "point {i}: {ns}"
            );
        }
        let h = HostInfo {
            boot_to_wall_ns: 1_795_400_000_000_000_000,
            ..HostInfo::default()
        };
        for b in [0u64, 1, 999_999_999, 1_000_000_000, u64::MAX] {
            assert_eq!(h.rfc3339_stamp(b).as_str(), h.rfc3339(b));
        }
    }

    #[test]
    fn boot_offset_puts_now_near_the_wall_clock() {
        let h = HostInfo::current();
        let wall = clock_ns(libc::CLOCK_REALTIME);
        assert!((h.wall_ns(boot_ns()) - wall).abs() < 1_000_000_000);
    }
}
