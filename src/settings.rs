//! Validated settings: the second stage after `cli.rs`, in the way ripgrep turns raw flags into a
//! config. Every flag is parsed and checked here, before any I/O, so a wrong flag exits 2 with a
//! message naming the flag. What comes out are the types the rest of the crate takes: a
//! `Window` instead of "7d", a `Duration` instead of "30s", an `ErrorRule` instead of a word.

use crate::definition::{ErrorRule, Window};
use crate::error::{Error, Result};
use std::time::Duration;

/// Parses a duration such as `90s`, `2m`, `1h30m`, `500ms` for the flag named `flag`.
pub fn duration(flag: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        Error::Config(format!(
            "invalid {flag} {value:?}: {e}; use forms like 500ms, 30s, 2m, 7d"
        ))
    })
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

/// Schema names for `--schema`: one or more, comma-separated (`run` serves several).
pub fn schemas(value: Option<&str>) -> Result<Vec<String>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let list: Vec<String> = value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() || list.iter().any(|s| s.contains('\0')) {
        return Err(Error::Config(format!("invalid --schema {value:?}")));
    }
    let mut seen = std::collections::HashSet::new();
    for s in &list {
        if !seen.insert(s) {
            return Err(Error::Config(format!(
                "invalid --schema {value:?}: {s:?} is named twice"
            )));
        }
    }
    Ok(list)
}

/// Like `duration`, but `0` (or `off`) means no limit.
pub fn optional_duration(flag: &str, value: &str) -> Result<Option<Duration>> {
    let v = value.trim();
    if v == "0" || v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let d = duration(flag, v)?;
    Ok((!d.is_zero()).then_some(d))
}

/// Everything a command needs, validated before any I/O.
pub struct Settings {
    pub connect: crate::db::connect::ConnectOptions,
    /// `--database-url` as given (demo and bench start their own server without one).
    pub database_url: Option<String>,
    /// `--schema`: empty for the search_path's first schema; `run` takes several.
    pub schemas: Vec<String>,
    pub command: CommandSettings,
}

impl Settings {
    /// The one schema of a command that serves one installation.
    pub fn schema(&self) -> Result<Option<&str>> {
        match self.schemas.len() {
            0 => Ok(None),
            1 => Ok(Some(self.schemas[0].as_str())),
            _ => Err(Error::Config(
                "only `run` takes several schemas; name one with --schema".into(),
            )),
        }
    }
}

pub enum CommandSettings {
    Install {
        mode: crate::state::Mode,
        window: Window,
        error_rule: ErrorRule,
        reader_roles: Vec<String>,
        cron_schedule: String,
        adopt: bool,
        alter_publications: bool,
    },
    Uninstall,
    Run {
        worker: crate::ops::worker::WorkerSettings,
        listen: Option<std::net::SocketAddr>,
    },
    Rebuild {
        timeout: Option<Duration>,
        jobs: crate::maintain::parallel::Jobs,
    },
    Status {
        json: bool,
        warn_after: Duration,
        stale_after: Duration,
    },
    Verify {
        scope: crate::ops::verify::Scope,
        repair: bool,
    },
    #[cfg(feature = "lab")]
    Demo(crate::cli::DemoArgs),
    #[cfg(feature = "lab")]
    Bench(crate::cli::BenchArgs),
}

/// Turns parsed flags into validated settings.
pub fn from_cli(cli: crate::cli::Cli) -> Result<Settings> {
    use crate::cli::Command;
    let g = cli.global;
    let schemas = schemas(g.schema.as_deref())?;
    let command = match cli.command {
        Command::Install(a) => CommandSettings::Install {
            mode: match a.mode {
                crate::cli::Mode::Incremental => crate::state::Mode::Incremental,
                crate::cli::Mode::Mv => crate::state::Mode::Mv,
            },
            window: Window::parse("--window", &a.window)?,
            error_rule: ErrorRule::from_name(&a.error_rule).ok_or_else(|| {
                Error::Config(format!(
                    "invalid --error-rule {:?}: use not-ok or error",
                    a.error_rule
                ))
            })?,
            reader_roles: reader_roles(&a.reader_roles)?,
            cron_schedule: a.cron_schedule,
            adopt: a.adopt,
            alter_publications: a.alter_publications,
        },
        Command::Uninstall => CommandSettings::Uninstall,
        Command::Run(a) => {
            let worker = crate::ops::worker::WorkerSettings {
                schemas: schemas.clone(),
                once: a.once,
                interval: positive_duration("--interval", &a.interval)?,
                max_interval: positive_duration("--max-interval", &a.max_interval)?,
                idle_interval: positive_duration("--idle-interval", &a.idle_interval)?,
                step_batch: a.step_batch.max(1),
                statement_timeout: positive_duration("--statement-timeout", &a.statement_timeout)?,
                rebuild_timeout: optional_duration("--rebuild-timeout", &a.rebuild_timeout)?,
                rebuild_jobs: crate::maintain::parallel::Jobs::parse(
                    "--rebuild-jobs",
                    &a.rebuild_jobs,
                )?,
                audit_period: optional_duration("--audit-period", &a.audit_period)?,
                limits: crate::maintain::cycle::Limits {
                    max_spans: positive("--max-spans-per-step", a.max_spans_per_step)?,
                    max_traces: positive("--max-traces-per-step", a.max_traces_per_step)?,
                    check_backlog: true,
                    refresh_when_cheaper: true,
                },
            };
            CommandSettings::Run {
                worker,
                listen: a.listen,
            }
        }
        Command::Rebuild(a) => CommandSettings::Rebuild {
            timeout: optional_duration("--timeout", &a.timeout)?,
            jobs: crate::maintain::parallel::Jobs::parse("--jobs", &a.jobs)?,
        },
        Command::Status(a) => {
            let warn_after = duration("--warn-after", &a.warn_after)?;
            let stale_after = duration("--stale-after", &a.stale_after)?;
            if stale_after < warn_after {
                return Err(Error::Config(
                    "--stale-after must not be shorter than --warn-after".into(),
                ));
            }
            CommandSettings::Status {
                json: a.json,
                warn_after,
                stale_after,
            }
        }
        Command::Verify(a) => CommandSettings::Verify {
            scope: match (a.sample, &a.since) {
                (Some(0), _) => return Err(Error::Config("--sample must be at least 1".into())),
                (Some(n), _) => crate::ops::verify::Scope::Sample(n),
                (None, Some(d)) => {
                    crate::ops::verify::Scope::Since(positive_duration("--since", d)?)
                }
                (None, None) => crate::ops::verify::Scope::Whole,
            },
            repair: a.repair,
        },
        #[cfg(feature = "lab")]
        Command::Demo(a) => CommandSettings::Demo(a),
        #[cfg(feature = "lab")]
        Command::Bench(a) => CommandSettings::Bench(a),
    };
    // demo and bench start their own server when no URL is given: parse the URL only when set.
    let connect = crate::db::connect::ConnectOptions::parse(g.database_url.as_deref())?;
    let settings = Settings {
        connect,
        database_url: g.database_url.clone(),
        schemas,
        command,
    };
    if !matches!(settings.command, CommandSettings::Run { .. }) {
        settings.schema()?;
    }
    Ok(settings)
}

fn positive(flag: &str, n: u32) -> Result<i64> {
    if n == 0 {
        return Err(Error::Config(format!(
            "invalid {flag} 0: must be at least 1"
        )));
    }
    Ok(n as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_name_the_flag() {
        assert!(positive_duration("--interval", "0s").is_err());
        let err = duration("--warn-after", "soon").unwrap_err().to_string();
        assert!(err.contains("--warn-after"), "{err}");
    }

    #[test]
    fn schema_lists_are_checked() {
        assert_eq!(schemas(Some("a, b")).unwrap(), vec!["a", "b"]);
        assert!(schemas(Some("a,a")).is_err());
        assert!(schemas(Some(" , ")).is_err());
        assert!(schemas(None).unwrap().is_empty());
    }
}
