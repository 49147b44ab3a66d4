//! A bounded time series: at most [`MAX_POINTS`] buckets over any span, the bucket width
//! doubling (and neighbouring buckets merged) whenever it would hold more. What the detail
//! view's memory curve and the HTML report's charts are drawn from, for a dump of seconds or
//! of days alike.

/// Buckets kept at most.
pub const MAX_POINTS: usize = 512;

/// How the values that fall into one bucket combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// A level (RSS, open sockets): the highest in the bucket, so a peak is never hidden.
    Max,
    /// A count (resets): the sum, so totals survive thinning.
    Sum,
}

#[derive(Clone, Debug)]
pub struct Series {
    merge: Merge,
    width_ns: u64,
    /// (bucket start, value), bucket starts in increasing order, multiples of `width_ns`.
    points: Vec<(u64, f64)>,
}

impl Series {
    pub fn new(merge: Merge) -> Series {
        Series {
            merge,
            width_ns: 1_000_000_000,
            points: Vec::new(),
        }
    }

    pub fn width_ns(&self) -> u64 {
        self.width_ns
    }

    pub fn points(&self) -> &[(u64, f64)] {
        &self.points
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn last(&self) -> Option<f64> {
        self.points.last().map(|p| p.1)
    }

    pub fn max(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }

    /// Adds `v` at `ts_ns`. Values older than the last bucket go into the last bucket (the two
    /// ring buffers may deliver a little out of order).
    pub fn add(&mut self, ts_ns: u64, v: f64) {
        let bucket = ts_ns - ts_ns % self.width_ns;
        match self.points.last_mut() {
            Some(last) if last.0 >= bucket => last.1 = self.merge.combine(last.1, v),
            _ => self.points.push((bucket, v)),
        }
        if self.points.len() > MAX_POINTS {
            self.thin();
        }
    }

    fn thin(&mut self) {
        self.width_ns = self.width_ns.saturating_mul(2);
        let w = self.width_ns;
        let mut out: Vec<(u64, f64)> = Vec::with_capacity(self.points.len() / 2 + 1);
        for &(t, v) in &self.points {
            let b = t - t % w;
            match out.last_mut() {
                Some(last) if last.0 == b => last.1 = self.merge.combine(last.1, v),
                _ => out.push((b, v)),
            }
        }
        self.points = out;
    }
}

impl Merge {
    fn combine(self, a: f64, b: f64) -> f64 {
        match self {
            Merge::Max => a.max(b),
            Merge::Sum => a + b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn buckets_per_second_then_thins_keeping_peaks_and_sums() {
        let mut levels = Series::new(Merge::Max);
        let mut counts = Series::new(Merge::Sum);
        for i in 0..2000u64 {
            levels.add(i * S, if i == 1234 { 1e6 } else { i as f64 });
            counts.add(i * S, 1.0);
            counts.add(i * S + 1, 1.0);
        }
        assert!(levels.points().len() <= MAX_POINTS);
        assert!(levels.width_ns() >= 4 * S);
        assert_eq!(levels.max(), 1e6, "a one-second peak survives thinning");
        let total: f64 = counts.points().iter().map(|p| p.1).sum();
        assert_eq!(total, 4000.0, "no count is lost to thinning");
        let ts: Vec<u64> = levels.points().iter().map(|p| p.0).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn late_values_join_the_last_bucket() {
        let mut s = Series::new(Merge::Sum);
        s.add(10 * S, 1.0);
        s.add(9 * S, 1.0);
        assert_eq!(s.points(), &[(10 * S, 2.0)]);
    }
}
