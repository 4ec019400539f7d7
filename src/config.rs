//! Validated settings: the second stage after `cli.rs`. Durations and windows are parsed here,
//! before any I/O, so a wrong flag exits 2 with a message naming the flag.

use crate::error::{Error, Result};
use std::time::Duration;

/// Parses a duration such as `7d`, `90s`, `2m`, `1h30m` for the flag named `flag`.
pub fn duration(flag: &str, value: &str) -> Result<Duration> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        Error::Config(format!(
            "invalid {flag} {value:?}: {e}; use forms like 500ms, 30s, 2m, 7d"
        ))
    })?;
    Ok(d)
}

/// Like `duration`, but zero is refused.
pub fn positive_duration(flag: &str, value: &str) -> Result<Duration> {
    let d = duration(flag, value)?;
    if d.is_zero() {
        return Err(Error::Config(format!(
            "invalid {flag} {value:?}: must be greater than zero"
        )));
    }
    Ok(d)
}

/// A PostgreSQL interval literal for a duration, exact to the microsecond.
pub fn interval_literal(d: Duration) -> String {
    format!("interval '{} microseconds'", d.as_micros())
}

/// Role names for GRANT: non-empty, and no NUL (everything else is quoted).
pub fn reader_roles(roles: &[String]) -> Result<Vec<String>> {
    roles
        .iter()
        .map(|r| r.trim().to_string())
        .map(|r| {
            if r.is_empty() || r.contains('\0') {
                Err(Error::Config(format!("invalid --reader-role {r:?}")))
            } else {
                Ok(r)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_days_and_minutes() {
        assert_eq!(
            duration("--window", "7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(
            duration("--window", "2m").unwrap(),
            Duration::from_secs(120)
        );
        assert!(positive_duration("--interval", "0s").is_err());
        let err = duration("--window", "seven").unwrap_err().to_string();
        assert!(err.contains("--window"), "{err}");
    }
}
