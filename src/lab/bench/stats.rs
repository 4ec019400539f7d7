//! Small helpers for the bench: medians and percentiles, human formatting of times, counts and
//! ratios, and progress lines on stderr stamped with the time since the bench started.

use std::sync::OnceLock;
use std::time::Instant;

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts the clock of the progress lines (the first call wins).
pub fn start_clock() {
    STARTED.get_or_init(Instant::now);
}

/// Prints one progress line to stderr.
pub fn say(msg: impl AsRef<str>) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[bench {t:7.1}s] {}", msg.as_ref());
}

/// The median (the mean of the two middle values for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Seconds as `850 µs`, `12.3 ms` or `4.56 s`.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "n/a".into();
    }
    if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        let ms = s * 1000.0;
        if ms < 10.0 {
            format!("{ms:.2} ms")
        } else {
            format!("{ms:.1} ms")
        }
    } else {
        format!("{s:.2} s")
    }
}

/// Milliseconds, formatted like `secs`.
pub fn ms(v: f64) -> String {
    secs(v / 1000.0)
}

/// A ratio as `0.85×`.
pub fn times(r: f64) -> String {
    if !r.is_finite() {
        return "n/a".into();
    }
    if r < 0.1 {
        format!("{r:.3}×")
    } else {
        format!("{r:.2}×")
    }
}

/// A ratio as a percentage: `1.23%`.
pub fn pct(r: f64) -> String {
    if !r.is_finite() {
        return "n/a".into();
    }
    let p = r * 100.0;
    if p < 1.0 {
        format!("{p:.2}%")
    } else if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// A small share with two significant digits: `12%`, `1.3%`, `0.042%`.
pub fn share(r: f64) -> String {
    if !r.is_finite() {
        return "n/a".into();
    }
    let p = r * 100.0;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        let digits = (1 - p.log10().floor() as i32).max(0) as usize;
        format!("{p:.digits$}%")
    }
}

/// A count as `1M`, `2.5M`, `100k` or `950`.
pub fn count(n: u64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    };
    if n >= 1_000_000 {
        format!("{}M", trim(n as f64 / 1e6))
    } else if n >= 1_000 {
        format!("{}k", trim(n as f64 / 1e3))
    } else {
        n.to_string()
    }
}

/// Bytes as `1.2 GB` or `340 MB`.
pub fn bytes(b: i64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else {
        format!("{:.0} MB", b / 1e6)
    }
}

/// Runs values `v` as a compact list: `1.20 s, 1.31 s, 1.25 s`.
pub fn runs(v: &[f64]) -> String {
    v.iter().map(|s| secs(*s)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(|i| i as f64).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        assert_eq!(percentile(&[1.0, f64::INFINITY], 99.0), f64::INFINITY);
    }

    #[test]
    fn formatting() {
        assert_eq!(count(1_000_000), "1M");
        assert_eq!(count(2_500_000), "2.5M");
        assert_eq!(count(10_000), "10k");
        assert_eq!(secs(0.0123), "12.3 ms");
        assert_eq!(secs(2.5), "2.50 s");
        assert_eq!(pct(0.0123), "1.2%");
        assert_eq!(times(0.5), "0.50×");
        assert_eq!(share(0.00042), "0.042%");
        assert_eq!(share(0.013), "1.3%");
        assert_eq!(share(0.5), "50%");
    }
}
