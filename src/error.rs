//! The library's error type, and the one place where an error kind maps to a behaviour
//! (retry, stop) and an exit code. Decisions use SQLSTATE codes, never message text.

use tokio_postgres::error::SqlState;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: reconnect or retry with capped backoff.
    Retry,
    /// The user must change something; exit code 2.
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or settings: exit 2 with the message as-is.
    #[error("{0}")]
    Config(String),

    /// The server could not be reached or the connection failed.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A precondition in the database is not met (missing table, column, privilege, mode).
    #[error("{message}")]
    Precondition { message: String, hint: String },

    /// An error from PostgreSQL while doing `context`.
    #[error("{context}: {source}")]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The operation was cancelled by a shutdown signal.
    #[error("cancelled by shutdown")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what we were doing to a PostgreSQL error.
pub trait DbContext<T> {
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> DbContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|source| Error::Db {
            context: context.to_string(),
            source,
        })
    }
}

impl Error {
    pub fn precondition(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Precondition {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The SQLSTATE of a database error, if there is one.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            Error::Db { source, .. } | Error::Connect { source, .. } => source.code(),
            _ => None,
        }
    }

    /// A short, stable label for metrics (`errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Connect { .. } => "connect",
            Error::Precondition { .. } => "precondition",
            Error::Io { .. } => "io",
            Error::Cancelled => "cancelled",
            Error::Db { source, .. } => match source.code() {
                None if is_connection_error(source) => "connection",
                None => "client",
                Some(c) if is_transient(c) => "transient",
                Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => "privilege",
                _ => "database",
            },
        }
    }

    /// Retry or stop. Connection-level failures and transient SQLSTATEs are retried.
    pub fn disposition(&self) -> Disposition {
        match self {
            Error::Connect { source, .. } => match source.code() {
                // Authentication and missing databases will not fix themselves.
                Some(c) if c.code().starts_with("28") || *c == SqlState::INVALID_CATALOG_NAME => {
                    Disposition::Stop
                }
                _ => Disposition::Retry,
            },
            Error::Db { source, .. } => match source.code() {
                None if is_connection_error(source) => Disposition::Retry,
                None => Disposition::Stop,
                Some(c) if is_transient(c) => Disposition::Retry,
                Some(_) => Disposition::Stop,
            },
            Error::Io { .. } => Disposition::Retry,
            Error::Config(_) | Error::Precondition { .. } | Error::Cancelled => Disposition::Stop,
        }
    }

    /// What the operator should do, when we know.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Precondition { hint, .. } if !hint.is_empty() => Some(hint.clone()),
            Error::Connect { source, .. } => Some(match source.code() {
                Some(c) if c.code().starts_with("28") => {
                    "check the user name and password (PGUSER/PGPASSWORD or the URL)".into()
                }
                Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
                    "check the database name (PGDATABASE or the URL path)".into()
                }
                _ => "check that PostgreSQL runs and accepts TCP connections on that host and port"
                    .into(),
            }),
            Error::Db { source, .. } => match source.code() {
                Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => Some(
                    "grant the missing privilege to this role (see deploy/README.md, 'Privileges')"
                        .into(),
                ),
                Some(c) if *c == SqlState::UNDEFINED_TABLE || *c == SqlState::UNDEFINED_COLUMN => {
                    Some(
                        "check --schema and that otel_traces has the columns in CONTRACT.md".into(),
                    )
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Process exit code for a failed command.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Cancelled => 0,
            Error::Db { .. } if self.disposition() == Disposition::Retry => 1,
            Error::Io { .. } => 1,
            _ => 2,
        }
    }
}

/// A closed connection or an I/O error underneath (as opposed to, say, a decoding error).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// SQLSTATEs that are worth retrying: lost connections, shutdowns, serialization failures,
/// deadlocks, lock and statement timeouts, and resource exhaustion.
pub fn is_transient(code: &SqlState) -> bool {
    let c = code.code();
    c.starts_with("08") // connection exception
        || c.starts_with("40") // transaction rollback: serialization failure, deadlock
        || c.starts_with("53") // insufficient resources
        || c == "57P01" // admin_shutdown
        || c == "57P02" // crash_shutdown
        || c == "57P03" // cannot_connect_now
        || c == "57014" // query_canceled (statement_timeout)
        || c == "55P03" // lock_not_available (lock_timeout)
        || c == "55006" // object_in_use
}
