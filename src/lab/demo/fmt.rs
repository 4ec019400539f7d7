//! Small formatting helpers for the demo's output: thousands separators, fixed-width cells
//! that never break the layout, percentiles, and reading totals from the metrics text.

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A cell of exactly `width` characters: control characters become spaces, long text ends
/// with `…`, NULL shows as `-`.
pub fn cell(text: Option<&str>, width: usize) -> String {
    let text = text.unwrap_or("-");
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let count = clean.chars().count();
    if count <= width {
        format!("{clean}{}", " ".repeat(width - count))
    } else {
        let mut cut: String = clean.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The `q` quantile (0..=1) of `values`, nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Sums every sample of the metric `name` (any labels) in Prometheus text format.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Seconds as `12.3 s`, or `-` when unknown.
pub fn secs(v: Option<f64>) -> String {
    match v {
        Some(s) if s < 10.0 => format!("{s:.2} s"),
        Some(s) => format!("{s:.1} s"),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn cells_keep_their_width_whatever_the_text() {
        assert_eq!(cell(None, 3), "-  ");
        assert_eq!(cell(Some("new\nline"), 8), "new line");
        assert_eq!(cell(Some("checkout-service"), 6), "check…");
        assert_eq!(cell(Some("日本語"), 4).chars().count(), 4);
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 1.0), Some(4.0));
    }

    #[test]
    fn metric_sums_cover_all_labels_and_skip_prefixes() {
        let text = "# HELP x\nts_fallbacks_total{reason=\"a\"} 2\nts_fallbacks_total{reason=\"b\"} 3\nts_fallbacks_totally 9\nts_c_count 7\n";
        assert_eq!(metric_sum(text, "ts_fallbacks_total"), 5.0);
        assert_eq!(metric_sum(text, "ts_c_count"), 7.0);
        assert_eq!(metric_sum(text, "missing"), 0.0);
    }
}
