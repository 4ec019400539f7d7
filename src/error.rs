//! The library's error type, and the one place where an error kind maps to a behaviour
//! (retry, stop) and an exit code. Decisions use SQLSTATE codes and error types, never
//! message text.

use crate::db::tls::{self, SslMode};
use std::path::PathBuf;
use tokio_postgres::error::SqlState;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: reconnect or retry with capped backoff.
    Retry,
    /// The user must change something; exit code 2.
    Stop,
}

/// An error of the library. `Display` gives only the context (what we were doing); `chain()`
/// adds the cause, and `hint()` what to do. `commands.rs` prints `chain()` and `hint()` once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or settings: exit 2 with the message as-is.
    #[error("{0}")]
    Config(String),

    /// The server could not be reached or the connection failed.
    #[error("cannot connect to {target}")]
    Connect {
        target: String,
        /// The TLS settings used, for the hint when the handshake fails.
        ssl_mode: SslMode,
        root_cert: Option<PathBuf>,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A precondition in the database is not met (missing table, column, privilege, mode).
    #[error("{message}")]
    Precondition { message: String, hint: String },

    /// An error from PostgreSQL while doing `context`.
    #[error("{context}")]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The operation was cancelled by a shutdown signal.
    #[error("cancelled by shutdown")]
    Cancelled,

    /// Something changed under the operation that a new attempt deals with (a Citus shard moved
    /// during a step): retried like a lost connection.
    #[error("{0}")]
    Transient(String),

    /// An error of one installation (schema) of several.
    #[error("schema {schema}")]
    Scoped { schema: String, inner: Box<Error> },

    /// Several installations failed.
    #[error("{} installations failed", .0.len())]
    Several(Vec<Error>),
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

    /// A lock was not granted within `lock_timeout` (the caller may retry).
    pub fn is_lock_timeout(&self) -> bool {
        self.sqlstate() == Some(&SqlState::LOCK_NOT_AVAILABLE)
    }

    /// The role lacks a privilege (or ownership).
    pub fn is_privilege_error(&self) -> bool {
        self.sqlstate() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
    }

    /// The SQLSTATE of a database error, if there is one.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            Error::Db { source, .. } | Error::Connect { source, .. } => source.code(),
            Error::Scoped { inner, .. } => inner.sqlstate(),
            _ => None,
        }
    }

    /// Scopes this error to one installation.
    pub fn in_schema(self, schema: &str) -> Error {
        Error::Scoped {
            schema: schema.to_string(),
            inner: Box::new(self),
        }
    }

    /// No error, one, or several together.
    pub fn combine(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }

    /// The whole message: the context and its causes, each once.
    pub fn chain(&self) -> String {
        match self {
            Error::Db { context, source }
            | Error::Connect {
                target: context,
                source,
                ..
            } => {
                let ctx = if matches!(self, Error::Connect { .. }) {
                    format!("cannot connect to {context}")
                } else {
                    context.clone()
                };
                format!("{ctx}: {}", pg_cause(source))
            }
            Error::Io { context, source } => format!("{context}: {source}"),
            Error::Scoped { schema, inner } => format!("schema {schema}: {}", inner.chain()),
            Error::Several(all) => all.iter().map(|e| e.chain()).collect::<Vec<_>>().join("; "),
            other => other.to_string(),
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
            Error::Transient(_) => "transient",
            Error::Scoped { inner, .. } => inner.kind(),
            Error::Several(_) => "several",
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
            Error::Io { .. } | Error::Transient(_) => Disposition::Retry,
            Error::Scoped { inner, .. } => inner.disposition(),
            Error::Config(_)
            | Error::Precondition { .. }
            | Error::Cancelled
            | Error::Several(_) => Disposition::Stop,
        }
    }

    /// What the operator should do, when we know. Every hint goes through here.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Scoped { inner, .. } => inner.hint(),
            Error::Several(all) => {
                let hints: Vec<String> = all.iter().filter_map(|e| e.hint()).collect();
                (!hints.is_empty()).then(|| hints.join("\nhint: "))
            }
            Error::Precondition { hint, .. } if !hint.is_empty() => Some(hint.clone()),
            Error::Connect {
                source,
                ssl_mode,
                root_cert,
                ..
            } => Some(match source.code() {
                Some(c) if c.code().starts_with("28") => {
                    "check the user name and password (PGUSER/PGPASSWORD or the URL)".into()
                }
                Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
                    "check the database name (PGDATABASE or the URL path)".into()
                }
                _ => match tls_cause(source) {
                    Some(tls) => tls_hint(tls, *ssl_mode, root_cert.as_deref()),
                    None => "check that PostgreSQL runs and accepts TCP connections on that host \
                             and port"
                        .into(),
                },
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
            Error::Scoped { inner, .. } => inner.exit_code(),
            Error::Several(all) => all.iter().map(|e| e.exit_code()).max().unwrap_or(1),
            Error::Db { .. } if self.disposition() == Disposition::Retry => 1,
            Error::Io { .. } | Error::Transient(_) => 1,
            _ => 2,
        }
    }
}

/// The cause of a PostgreSQL error as an operator wants to read it: the server's message (with
/// its detail), or what happened to the connection.
fn pg_cause(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        };
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// The rustls error under a failed connection, if TLS is what failed. tokio-postgres-rustls
/// reports it as an `io::Error` wrapping the `rustls::Error`; `io::Error::source` skips the
/// wrapped error, so `get_ref` is looked at too.
fn tls_cause(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        source = s.source();
    }
    None
}

/// What to do about a failed TLS handshake, by the rustls error and the sslmode in use.
fn tls_hint(e: &rustls::Error, mode: SslMode, root_cert: Option<&std::path::Path>) -> String {
    use rustls::CertificateError as C;
    let mode_name = mode.as_str();
    let Some(root) = root_cert.filter(|_| tls::verifies(mode, root_cert.is_some())) else {
        return format!(
            "TLS handshake failed with sslmode={mode_name}, which encrypts without verifying the \
             server certificate: check the server's TLS setup (its certificate and key; rustls \
             speaks TLS 1.2 and 1.3 only, see ssl_min_protocol_version)"
        );
    };
    let root = root.display();
    let problem = match e {
        rustls::Error::InvalidCertificate(C::Other(other))
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::UnsupportedCertVersion)
            ) =>
        {
            "the server certificate is X.509 v1, which rustls cannot verify (v3 only): reissue it as v3 \
             (with subjectAltName and basicConstraints), signed by the CA in sslrootcert"
                .to_string()
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("the server certificate is not signed by a CA in sslrootcert {root}")
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server certificate does not name the host connected to: connect by a name or \
             address it lists (subjectAltName), or use sslmode=verify-ca"
                .to_string()
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the server certificate is expired or not yet valid: renew it, or check the clock"
            .to_string(),
        rustls::Error::InvalidCertificate(_) => {
            format!("the server certificate was refused: check it and sslrootcert {root}")
        }
        _ => "the TLS handshake failed: check the server's TLS setup (rustls speaks TLS 1.2 and \
              1.3 only, see ssl_min_protocol_version)"
            .to_string(),
    };
    let how = if mode == SslMode::Require {
        format!("sslmode=require with sslrootcert {root} verifies the chain like verify-ca, as libpq does")
    } else {
        format!("sslmode={mode_name} verifies the server certificate against sslrootcert {root}")
    };
    format!(
        "TLS: {problem} ({how}); sslmode=prefer and require without sslrootcert encrypt without \
         verifying the certificate, as libpq does"
    )
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
    let class = &code.code()[..2];
    class == "08" // connection exception
        || class == "40" // transaction rollback: serialization failure, deadlock
        || class == "53" // insufficient resources
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::QUERY_CANCELED, // statement_timeout
            SqlState::LOCK_NOT_AVAILABLE, // lock_timeout
            SqlState::OBJECT_IN_USE,
        ]
        .contains(code)
}
