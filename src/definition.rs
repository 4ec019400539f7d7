//! What a summary means: the window and the error rule, and the SQL of the definition rendered
//! from them. Every form (the view, a step, a full refresh, verify, the audit) takes its SQL
//! from a `Definition`, so they cannot drift apart.

use crate::db::source::Target;
use crate::db::sqltext::{duration, strip_comments, AGGREGATES, DEFINITION};
use crate::error::{Error, Result};
use std::fmt;
use std::time::Duration;

/// The summary window, kept as the calendar interval the user gave: `7d` is `7 days`, not 168
/// hours, so the edge `now() - interval '7 days'` moves with the database's time zone exactly
/// as the materialized view's definition does (a day across a DST change lasts 23 or 25 hours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    days: u64,
    micros: u64,
}

impl Window {
    /// The window's edge as the view computes it: `now() - interval '<window>'`, in the session
    /// (the transaction's `now()`, the session's time zone for calendar windows).
    pub async fn edge<C: tokio_postgres::GenericClient>(
        &self,
        client: &C,
    ) -> Result<chrono::DateTime<chrono::Utc>> {
        use crate::error::DbContext;
        Ok(client
            .query_one(
                "select now() - $1::text::interval",
                &[&self.interval_text()],
            )
            .await
            .ctx("reading the window edge")?
            .get(0))
    }

    /// Parses `7d`, `3 days`, `2w`, `36h`, `90m`, `1h30m`, `45s`, `500ms`.
    pub fn parse(flag: &str, value: &str) -> Result<Window> {
        let bad = |why: &str| {
            Error::Config(format!(
                "invalid {flag} {value:?}: {why}; use forms like 7d, 3d, 36h, 2m (units w, d, h, m, s, ms)"
            ))
        };
        let text = value.trim().to_ascii_lowercase();
        let mut rest = text.as_str();
        let (mut days, mut micros) = (0u64, 0u64);
        let mut any = false;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| bad("number too large"))?;
            rest = rest[digits..].trim_start();
            let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
            let unit = &rest[..unit_len];
            rest = rest[unit_len..].trim_start();
            let (d, us) = match unit {
                "w" | "week" | "weeks" => (7, 0),
                "d" | "day" | "days" => (1, 0),
                "h" | "hour" | "hours" => (0, 3_600_000_000),
                "m" | "min" | "mins" | "minute" | "minutes" => (0, 60_000_000),
                "s" | "sec" | "secs" | "second" | "seconds" => (0, 1_000_000),
                "ms" | "millisecond" | "milliseconds" => (0, 1_000),
                "" => return Err(bad("a unit is missing")),
                _ => return Err(bad(&format!("unknown unit {unit:?}"))),
            };
            days = n
                .checked_mul(d)
                .and_then(|v| days.checked_add(v))
                .ok_or_else(|| bad("too large"))?;
            micros = n
                .checked_mul(us)
                .and_then(|v| micros.checked_add(v))
                .ok_or_else(|| bad("too large"))?;
            any = true;
        }
        if !any || (days == 0 && micros == 0) {
            return Err(bad("must be greater than zero"));
        }
        if days > 3650 {
            return Err(bad("longer than ten years"));
        }
        Ok(Window { days, micros })
    }

    /// The window as PostgreSQL interval input, for example `7 days` or `2 days 01:30:00`.
    pub fn interval_text(&self) -> String {
        let mut parts = Vec::new();
        if self.days > 0 {
            parts.push(format!("{} days", self.days));
        }
        if self.micros > 0 {
            let secs = self.micros / 1_000_000;
            let frac = self.micros % 1_000_000;
            let t = format!(
                "{:02}:{:02}:{:02}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            );
            parts.push(if frac > 0 {
                format!("{t}.{frac:06}")
            } else {
                t
            });
        }
        parts.join(" ")
    }

    /// The window as an SQL interval literal, for the materialized view's definition.
    pub fn literal(&self) -> String {
        format!("interval '{}'", self.interval_text())
    }

    /// Reads a window back from the state: the interval's days and the microseconds of its
    /// time part (kept apart: `36h` and `1d 12h` differ across a DST change).
    pub fn from_parts(days: i64, micros: i64) -> Option<Window> {
        let w = Window {
            days: u64::try_from(days).ok()?,
            micros: u64::try_from(micros).ok()?,
        };
        (w.days > 0 || w.micros > 0).then_some(w)
    }

    /// The days and time-part microseconds `from_parts` reads.
    pub fn parts(&self) -> (i64, i64) {
        (self.days as i64, self.micros as i64)
    }

    /// About how long the window is (a day counted as 24 hours), for display and estimates.
    pub fn approx(&self) -> Duration {
        Duration::from_micros(self.days * 86_400_000_000 + self.micros)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.interval_text())
    }
}

/// Which spans `error_count` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrorRule {
    /// Every span whose status is not OK (status_code <> 1, NULL counting as 0): the seed's
    /// definition and the contract.
    NotOk,
    /// Spans with status ERROR (status_code = 2), as upstream counts since March 2026.
    Error,
}

impl ErrorRule {
    /// The stable name stored in the state.
    pub fn name(self) -> &'static str {
        match self {
            ErrorRule::NotOk => "not-ok",
            ErrorRule::Error => "error",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorRule> {
        match name {
            "not-ok" => Some(ErrorRule::NotOk),
            "error" => Some(ErrorRule::Error),
            _ => None,
        }
    }

    /// The filter of the `error_count` aggregate.
    pub fn condition(self) -> &'static str {
        match self {
            ErrorRule::NotOk => "coalesce(status_code, 0) <> 1",
            ErrorRule::Error => "status_code = 2",
        }
    }
}

/// The columns of otel_traces the definition reads, and the stamp.
const SPAN_COLUMNS: &str = "\"timestamp\", trace_id, span_id, parent_span_id, name, kind, \
     start_time_unix_nano, end_time_unix_nano, service_name, status_code, status_message, \
     trace_summarizer_xid";

/// What a summary means: the window and the error rule. Every form (view, cycle, rebuild,
/// verify, audit) renders its SQL from one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub window: Window,
    pub error_rule: ErrorRule,
}

impl Definition {
    /// The aggregate list (columns 2..14) over the spans in scope.
    pub fn aggregates(&self) -> String {
        strip_comments(AGGREGATES)
            .replace(
                "{{duration}}",
                &duration("max(end_time_unix_nano)", "min(start_time_unix_nano)"),
            )
            .replace("{{error_condition}}", self.error_rule.condition())
    }

    /// The view's definition over `target`'s otel_traces. `extra` adds select-list items
    /// (for example the oldest span time) after the 14 columns.
    pub fn query(&self, target: &Target, extra: &str) -> String {
        self.render(target, extra, "")
    }

    /// The definition over the rows a tailing position covers (what the summaries hold once
    /// that position is stored), for the full refresh, with the window's edge given by `edge`,
    /// an SQL expression such as a parameter holding the instant read once in the refresh's
    /// transaction (every session of a parallel refresh then computes the same window, whenever
    /// its own transaction began), and a further condition on the spans (`more`, for example a
    /// range of trace_ids).
    ///
    /// The spans are read behind a fence (`offset 0`), in trace_id order as the view reads them,
    /// and the condition on stamps applies after the scan. Planned together, a stamp column
    /// without statistics (it has none until otel_traces is analyzed after install) made the
    /// planner expect a third of the rows, scan the stamp index into a bitmap of every row and
    /// sort them all; and a range of trace_ids no longer narrowed the scan.
    pub fn query_covered_at(
        &self,
        target: &Target,
        extra: &str,
        covers: &crate::state::Position,
        edge: &str,
        more: &str,
    ) -> String {
        let spans = format!(
            "(select {SPAN_COLUMNS} from {} where \"timestamp\" > {edge} and trace_id is not null{more} order by trace_id offset 0) spans",
            target.traces()
        );
        strip_comments(DEFINITION)
            .replace("{{aggregates}}", &format!("{}{extra}", self.aggregates()))
            .replace("{{traces}}", &spans)
            .replace("{{edge}}", edge)
            .replace("{{filter}}", &Self::covered_filter(covers))
    }

    fn covered_filter(covers: &crate::state::Position) -> String {
        let xip = covers
            .xip
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",");
        format!(
            " and {}",
            crate::maintain::tailing::covered(
                "trace_summarizer_xid",
                &covers.xmax.to_string(),
                &format!("'{{{xip}}}'")
            )
        )
    }

    fn render(&self, target: &Target, extra: &str, filter: &str) -> String {
        strip_comments(DEFINITION)
            .replace("{{aggregates}}", &format!("{}{extra}", self.aggregates()))
            .replace("{{traces}}", &target.traces())
            .replace("{{edge}}", &format!("now() - {}", self.window.literal()))
            .replace("{{filter}}", filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_keep_calendar_days() {
        let w = Window::parse("--window", "7d").unwrap();
        assert_eq!(w.interval_text(), "7 days");
        assert_eq!(w.literal(), "interval '7 days'");
        assert_eq!(
            Window::parse("--window", "1h30m").unwrap().interval_text(),
            "01:30:00"
        );
        assert_eq!(
            Window::parse("--window", "2w 12h").unwrap().interval_text(),
            "14 days 12:00:00"
        );
        assert_eq!(
            Window::parse("--window", "2m").unwrap().approx(),
            Duration::from_secs(120)
        );
        for bad in ["seven", "0d", "7", "7x", "", "-1d"] {
            let err = Window::parse("--window", bad).unwrap_err().to_string();
            assert!(err.contains("--window"), "{bad}: {err}");
        }
    }

    #[test]
    fn windows_read_back_from_their_parts() {
        for text in ["7d", "2h", "1d12h", "36h", "1500ms"] {
            let w = Window::parse("--window", text).unwrap();
            let (d, us) = w.parts();
            assert_eq!(Window::from_parts(d, us).unwrap(), w);
        }
        assert_ne!(
            Window::parse("--window", "36h").unwrap(),
            Window::parse("--window", "1d12h").unwrap()
        );
        assert!(Window::from_parts(0, 0).is_none());
    }

    fn def(rule: ErrorRule) -> Definition {
        Definition {
            window: Window::parse("--window", "3d").unwrap(),
            error_rule: rule,
        }
    }

    #[test]
    fn the_definition_renders_window_and_error_rule() {
        let target = Target::new("platform");
        let q = def(ErrorRule::Error).query(&target, "");
        assert!(q.contains("now() - interval '3 days'"), "{q}");
        assert!(q.contains("filter (where status_code = 2)"), "{q}");
        assert!(q.contains("\"platform\".\"otel_traces\""), "{q}");
        assert!(!q.contains("{{"), "{q}");
        let q = def(ErrorRule::NotOk).query(&target, "");
        assert!(q.contains("coalesce(status_code, 0) <> 1"), "{q}");
    }

    #[test]
    fn a_refresh_shared_by_sessions_names_its_edge() {
        let target = Target::new("platform");
        let covers = crate::state::Position {
            xmax: 100,
            xip: vec![97, 98],
        };
        let q = def(ErrorRule::NotOk).query_covered_at(
            &target,
            "",
            &covers,
            "$1",
            " and trace_id >= $2",
        );
        assert!(!q.contains("now()") && !q.contains("{{"), "{q}");
        assert!(
            q.contains("where \"timestamp\" > $1 and trace_id is not null and trace_id >= $2 order by trace_id offset 0) spans"),
            "{q}"
        );
        assert!(
            q.contains(
                "trace_summarizer_xid < 100 and trace_summarizer_xid <> all('{97,98}'::bigint[])"
            ) && q.ends_with("group by trace_id"),
            "{q}"
        );
    }
}
