//! Connection settings the way libpq users expect them: a `postgresql://` URL or a
//! `key=value` string, completed by the PG* environment variables, with libpq's sslmode and
//! sslrootcert handled here (tokio-postgres alone rejects the verify modes). Passwords never
//! appear in messages: `ConnectOptions::target` names host, port, database and user only.

use crate::db::tls::{self, SslMode};
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Validated connection settings.
#[derive(Clone)]
pub struct ConnectOptions {
    pub config: Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Shows where we connect, never the password.
impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("target", &self.target())
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

/// Reads an environment variable, treating empty as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ConnectOptions {
    /// Parses `--database-url` (or the PG* variables when it is `None`).
    pub fn parse(url: Option<&str>) -> Result<Self> {
        let (rest, ssl_mode, root_cert) = match url {
            Some(s) => split_ssl_params(s)?,
            None => (String::new(), None, None),
        };
        let mut config = if rest.trim().is_empty() {
            Config::new()
        } else {
            rest.parse::<Config>().map_err(|e| {
                Error::Config(format!(
                    "invalid --database-url / DATABASE_URL: {e}; expected postgresql://user@host:5432/dbname or \"host=... dbname=...\""
                ))
            })?
        };
        // libpq fills what the string leaves out from the environment, then from defaults.
        if config.get_hosts().is_empty() {
            for host in env("PGHOST")
                .unwrap_or_else(|| "localhost".into())
                .split(',')
            {
                config.host(host);
            }
        }
        if config.get_ports().is_empty() {
            let port = env("PGPORT").unwrap_or_else(|| "5432".into());
            let port: u16 = port.parse().map_err(|_| {
                Error::Config(format!("invalid PGPORT {port:?}: expected a port number"))
            })?;
            config.port(port);
        }
        if config.get_user().is_none() {
            let user = env("PGUSER")
                .or_else(|| env("USER"))
                .unwrap_or_else(|| "postgres".into());
            config.user(&user);
        }
        if config.get_password().is_none() {
            if let Some(pw) = env("PGPASSWORD") {
                config.password(pw);
            }
        }
        if config.get_dbname().is_none() {
            let db = env("PGDATABASE")
                .unwrap_or_else(|| config.get_user().unwrap_or("postgres").to_string());
            config.dbname(&db);
        }
        if config.get_application_name().is_none() {
            config.application_name(env("PGAPPNAME").unwrap_or_else(|| "trace-summarizer".into()));
        }
        let ssl_mode = match ssl_mode.or_else(|| env("PGSSLMODE")) {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Prefer,
        };
        let root_cert = root_cert
            .or_else(|| env("PGSSLROOTCERT"))
            .map(PathBuf::from)
            .or_else(|| {
                // libpq's default location; used only when it exists.
                let default = PathBuf::from(env("HOME")?).join(".postgresql/root.crt");
                default.exists().then_some(default)
            });
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        // Keepalives let a half-dead connection fail instead of hanging.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(5));
        config.keepalives_interval(Duration::from_secs(2));
        config.keepalives_retries(3);
        config.tcp_user_timeout(Duration::from_secs(15));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let opts = ConnectOptions {
            config,
            ssl_mode,
            root_cert,
        };
        // Fail early on unreadable certificates, before any I/O to the server.
        tls::client_config(opts.ssl_mode, opts.root_cert.as_deref())?;
        Ok(opts)
    }

    /// `host:port/dbname as user`, for messages. Never includes the password.
    pub fn target(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{host}:{port}/{} as {}",
            self.config.get_dbname().unwrap_or("?"),
            self.config.get_user().unwrap_or("?")
        )
    }

    /// The same settings with another application_name (shown in pg_stat_activity).
    pub fn with_application_name(&self, name: &str) -> Self {
        let mut copy = self.clone();
        copy.config.application_name(name);
        copy
    }

    /// The same settings for another server (a Citus node): every setting but host and port.
    pub fn with_host(&self, host: &str, port: u16) -> Self {
        let c = &self.config;
        let mut n = Config::new();
        n.host(host);
        n.port(port);
        if let Some(v) = c.get_user() {
            n.user(v);
        }
        if let Some(v) = c.get_password() {
            n.password(v);
        }
        if let Some(v) = c.get_dbname() {
            n.dbname(v);
        }
        if let Some(v) = c.get_options() {
            n.options(v);
        }
        if let Some(v) = c.get_application_name() {
            n.application_name(v);
        }
        if let Some(v) = c.get_connect_timeout() {
            n.connect_timeout(*v);
        }
        if let Some(v) = c.get_tcp_user_timeout() {
            n.tcp_user_timeout(*v);
        }
        n.ssl_mode(c.get_ssl_mode());
        n.keepalives(c.get_keepalives());
        n.keepalives_idle(c.get_keepalives_idle());
        if let Some(v) = c.get_keepalives_interval() {
            n.keepalives_interval(v);
        }
        if let Some(v) = c.get_keepalives_retries() {
            n.keepalives_retries(v);
        }
        ConnectOptions {
            config: n,
            ssl_mode: self.ssl_mode,
            root_cert: self.root_cert.clone(),
        }
    }

    /// Connects and drives the connection on a background task.
    pub async fn connect(&self) -> Result<Client> {
        let fail = |source| Error::Connect {
            target: self.target(),
            ssl_mode: self.ssl_mode,
            root_cert: self.root_cert.clone(),
            source,
        };
        match tls::client_config(self.ssl_mode, self.root_cert.as_deref())? {
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(fail)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection closed");
                    }
                });
                Ok(client)
            }
            Some(tls) => {
                let (client, conn) = self
                    .config
                    .connect(MakeRustlsConnect::new(tls))
                    .await
                    .map_err(fail)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection closed");
                    }
                });
                Ok(client)
            }
        }
    }

    /// Cancels the query running on `client`'s session, on the server.
    pub async fn cancel(&self, token: &tokio_postgres::CancelToken) {
        let result = match tls::client_config(self.ssl_mode, self.root_cert.as_deref()) {
            Ok(None) => token.cancel_query(NoTls).await,
            Ok(Some(tls)) => token.cancel_query(MakeRustlsConnect::new(tls)).await,
            Err(_) => return,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "query cancel request failed");
        }
    }
}

/// Removes `sslmode` and `sslrootcert` (which we handle) from a URL or key=value string.
fn split_ssl_params(s: &str) -> Result<(String, Option<String>, Option<String>)> {
    let s = s.trim();
    let mut mode = None;
    let mut root = None;
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        let Some((base, query)) = s.split_once('?') else {
            return Ok((s.to_string(), None, None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => mode = Some(percent_decode(v)),
                "sslrootcert" => root = Some(percent_decode(v)),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, mode, root));
    }
    if !s.contains('=') {
        return Err(Error::Config(format!(
            "invalid --database-url / DATABASE_URL: expected postgresql://user@host:5432/dbname or \"host=... dbname=...\", got {:?}",
            redact_guess(s)
        )));
    }
    let mut kept = Vec::new();
    for (k, v) in parse_key_values(s)? {
        match k.as_str() {
            "sslmode" => mode = Some(v),
            "sslrootcert" => root = Some(v),
            _ => kept.push(format!(
                "{k}='{}'",
                v.replace('\\', "\\\\").replace('\'', "\\'")
            )),
        }
    }
    Ok((kept.join(" "), mode, root))
}

/// Splits libpq `key=value` pairs; values may be single-quoted with backslash escapes.
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(Error::Config(format!(
                "invalid connection string: missing '=' after {key:?}"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(Error::Config(
                            "invalid connection string: unterminated quote".into(),
                        ))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Shows at most the scheme-like prefix of a string that failed to parse, which could hold a
/// password in an unexpected place.
fn redact_guess(s: &str) -> String {
    let prefix: String = s.chars().take(12).collect();
    if s.len() > 12 {
        format!("{prefix}…")
    } else {
        prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ssl_params_are_taken_out_and_the_rest_kept() {
        let (rest, mode, root) =
            split_ssl_params("postgresql://app:pw@db:5432/app?sslmode=verify-full&sslrootcert=%2Fca.crt&connect_timeout=3")
                .unwrap();
        assert_eq!(rest, "postgresql://app:pw@db:5432/app?connect_timeout=3");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/ca.crt"));
    }

    #[test]
    fn key_value_strings_keep_quoted_values() {
        let (rest, mode, _) =
            split_ssl_params("host=db password='a b\\'c' sslmode=require").unwrap();
        assert_eq!(mode.as_deref(), Some("require"));
        let config: Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn garbage_is_a_config_error_without_echoing_secrets() {
        let err = ConnectOptions::parse(Some("not a url with secretpassword")).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(!err.to_string().contains("secretpassword"));
    }

    #[test]
    fn target_never_shows_the_password() {
        let opts =
            ConnectOptions::parse(Some("postgresql://u:hunter2@h:1/d?sslmode=disable")).unwrap();
        assert_eq!(opts.target(), "h:1/d as u");
    }
}
