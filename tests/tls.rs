//! TLS the way libpq users expect: verify-full checks chain and host name, verify-ca the chain
//! only, require encrypts without verifying, and a wrong CA is refused with exit 2. An X.509 v1
//! self-signed certificate (as Citus makes) is accepted unverified by prefer and require, and
//! refused by the verifying modes.
mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use trace_summarizer::lab::cluster::Cluster;

/// Runs a shell script; false when it (or openssl in it) fails.
fn sh(script: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Makes a CA and a server certificate for 127.0.0.1 / localhost in `dir`.
fn make_certs(dir: &std::path::Path) -> bool {
    let script = format!(
        "set -e; cd {d};
         openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca >/dev/null 2>&1;
         openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=other-ca >/dev/null 2>&1;
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost >/dev/null 2>&1;
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf;
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf >/dev/null 2>&1",
        d = dir.display()
    );
    sh(&script)
}

/// Makes a self-signed X.509 v1 certificate (no extensions) for CN=localhost in `dir`:
/// `v1.crt` and `v1.key`.
fn make_v1_cert(dir: &Path) -> bool {
    sh(&format!(
        "set -e; cd {d};
         openssl req -newkey rsa:2048 -nodes -keyout v1.key -out v1.csr -subj /CN=localhost >/dev/null 2>&1;
         openssl x509 -req -in v1.csr -signkey v1.key -out v1.crt -days 2 >/dev/null 2>&1",
        d = dir.display()
    ))
}

/// Installs `crt` and `key` as the cluster's server certificate, turns ssl on and restarts.
fn serve_tls(cluster: &Cluster, crt: &Path, key: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let data = cluster.data_dir();
    let owner = std::fs::metadata(&data).unwrap();
    for (from, to) in [(crt, "server.crt"), (key, "server.key")] {
        std::fs::copy(from, data.join(to)).unwrap();
        std::os::unix::fs::chown(data.join(to), Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(data.join(to), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let conf = data.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
    std::fs::write(&conf, text).unwrap();
    cluster.restart().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmodes_verify_like_libpq() {
    if std::env::var("TEST_DATABASE_URL").is_ok() {
        eprintln!("needs its own server with TLS; skipping under TEST_DATABASE_URL");
        return;
    }
    let cluster = trace_summarizer::lab::cluster::Cluster::start(&Default::default()).unwrap();
    let certs = tempfile::tempdir().unwrap();
    if !make_certs(certs.path()) {
        eprintln!("openssl is not available: skipping");
        return;
    }
    serve_tls(
        &cluster,
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
    );

    let ca = certs.path().join("ca.crt");
    let other = certs.path().join("other-ca.crt");
    let base = |host: &str, mode: &str, root: &std::path::Path| {
        format!(
            "postgresql://postgres@{host}:{}/postgres?sslmode={mode}&sslrootcert={}",
            cluster.port,
            root.display()
        )
    };
    // `status` on a database without otel_traces fails *after* connecting (exit 2, "otel_traces
    // does not exist"), which tells a TLS success from a TLS failure ("cannot connect").
    let run = |url: String| {
        let out = bin()
            .env("DATABASE_URL", url)
            .arg("status")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let connected = |err: &str| err.contains("not installed") || err.contains("otel_traces");
    let err = run(base("localhost", "verify-full", &ca));
    assert!(
        connected(&err),
        "verify-full with the right CA and host failed: {err}"
    );
    let err = run(base("127.0.0.1", "verify-full", &ca));
    assert!(connected(&err), "verify-full by IP address failed: {err}");
    let err = run(base("localhost", "verify-full", &other));
    assert!(
        err.contains("cannot connect") && !connected(&err),
        "a wrong CA was accepted: {err}"
    );
    assert!(
        err.contains("hint: TLS: the server certificate is not signed by a CA in sslrootcert")
            && err.contains("sslmode=verify-full"),
        "a wrong CA got no TLS hint: {err}"
    );
    let err = run(base("localhost", "verify-ca", &ca));
    assert!(connected(&err), "verify-ca failed: {err}");
    let url = format!(
        "postgresql://postgres@localhost:{}/postgres?sslmode=require",
        cluster.port
    );
    let err = run(url);
    assert!(connected(&err), "require failed: {err}");
    // verify-full without a root certificate is a configuration error, before any I/O.
    let out = bin()
        .env(
            "DATABASE_URL",
            format!(
                "postgresql://postgres@localhost:{}/postgres?sslmode=verify-full",
                cluster.port
            ),
        )
        .env("HOME", certs.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sslrootcert"));
    // The server saw TLS sessions.
    let client = connect(&cluster.url("postgres")).await;
    let ssl: bool = client
        .query_one("select current_setting('ssl')::bool", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl);
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_certificates_are_accepted_unverified_like_libpq() {
    if std::env::var("TEST_DATABASE_URL").is_ok() {
        eprintln!("needs its own server with TLS; skipping under TEST_DATABASE_URL");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    if !make_v1_cert(certs.path()) {
        eprintln!("openssl is not available: skipping");
        return;
    }
    let crt = certs.path().join("v1.crt");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Version: 1 (0x0)") && !text.contains("X509v3"),
        "openssl made no v1 certificate: {text}"
    );
    let cluster = Cluster::start(&Default::default()).unwrap();
    serve_tls(&cluster, &crt, &certs.path().join("v1.key"));

    let url = |mode: &str, root: Option<&Path>| {
        let root = root.map_or(String::new(), |r| format!("&sslrootcert={}", r.display()));
        format!(
            "postgresql://postgres@localhost:{}/postgres?sslmode={mode}{root}",
            cluster.port
        )
    };
    // No root certificate from the environment or ~/.postgresql/root.crt: HOME is empty.
    let run = |url: String| {
        let out = bin()
            .env("DATABASE_URL", url)
            .env_remove("PGSSLMODE")
            .env_remove("PGSSLROOTCERT")
            .env("HOME", certs.path().join("no-home"))
            .arg("status")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let connected = |err: &str| err.contains("not installed") || err.contains("otel_traces");

    // prefer (also the default, without sslmode) and require connect, unverified.
    for mode in ["prefer", "require"] {
        let (_, err) = run(url(mode, None));
        assert!(
            connected(&err),
            "sslmode={mode} refused a v1 certificate: {err}"
        );
    }
    let (_, err) = run(format!(
        "postgresql://postgres@localhost:{}/postgres",
        cluster.port
    ));
    assert!(
        connected(&err),
        "the default sslmode refused a v1 certificate: {err}"
    );

    // Through the crate's connect path, over TLS 1.3 and then TLS 1.2 (each has its own
    // handshake signature check, both against the v1 certificate's key).
    let encrypted = |mode: &'static str| {
        let url = url(mode, None);
        async move {
            let mut opts =
                trace_summarizer::db::connect::ConnectOptions::parse(Some(&url)).unwrap();
            opts.root_cert = None;
            let client = opts
                .connect()
                .await
                .unwrap_or_else(|e| panic!("sslmode={mode}: {}", e.chain()));
            let row = client
                .query_one(
                    "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap();
            assert!(row.get::<_, bool>(0), "sslmode={mode} did not encrypt");
            row.get::<_, String>(1)
        }
    };
    assert_eq!(encrypted("require").await, "TLSv1.3");
    // Two statements: ALTER SYSTEM cannot run in the implicit transaction of a multi-statement
    // query. Over a plain connection: the server-only builds of other majors have no psql.
    let admin = connect(&cluster.url("postgres")).await;
    admin
        .batch_execute("alter system set ssl_max_protocol_version = 'TLSv1.2'")
        .await
        .unwrap();
    admin
        .batch_execute("select pg_reload_conf()")
        .await
        .unwrap();
    // The reload is asynchronous: wait until new sessions see it.
    let mut version = String::new();
    for _ in 0..50 {
        version = encrypted("prefer").await;
        if version == "TLSv1.2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(version, "TLSv1.2");
    assert_eq!(encrypted("require").await, "TLSv1.2");

    // The verifying modes refuse it, even as its own root, with exit 2 and a TLS hint; so does
    // require with a root certificate (it verifies like verify-ca).
    for mode in ["verify-ca", "verify-full", "require"] {
        let (code, err) = run(url(mode, Some(&crt)));
        assert!(
            err.contains("cannot connect") && !connected(&err),
            "sslmode={mode} accepted a v1 certificate: {err}"
        );
        assert_eq!(code, Some(2), "sslmode={mode}: {err}");
        assert!(
            err.contains("hint: TLS: the server certificate is X.509 v1")
                && err.contains(&format!("sslmode={mode}"))
                && err.contains("prefer and require without sslrootcert encrypt without verifying"),
            "sslmode={mode}: no TLS hint: {err}"
        );
        assert!(
            !err.contains("accepts TCP connections"),
            "sslmode={mode}: the TCP hint for a TLS failure: {err}"
        );
    }
}
