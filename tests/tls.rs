//! TLS the way libpq users expect: verify-full checks chain and host name, verify-ca the chain
//! only, require encrypts without verifying, and a wrong CA is refused with exit 2.
mod common;
use common::*;
use std::process::Command;

/// Makes a CA and a server certificate for 127.0.0.1 / localhost in `dir`.
fn make_certs(dir: &std::path::Path) -> bool {
    let sh = format!(
        "set -e; cd {d};
         openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca >/dev/null 2>&1;
         openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=other-ca >/dev/null 2>&1;
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost >/dev/null 2>&1;
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf;
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf >/dev/null 2>&1",
        d = dir.display()
    );
    Command::new("sh")
        .arg("-c")
        .arg(sh)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
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
    let data = cluster.data_dir();
    for f in ["server.crt", "server.key"] {
        std::fs::copy(certs.path().join(f), data.join(f)).unwrap();
        let meta_owner = std::fs::metadata(&data).unwrap();
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::os::unix::fs::chown(data.join(f), Some(meta_owner.uid()), Some(meta_owner.gid()))
            .unwrap();
        std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let conf = data.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
    std::fs::write(&conf, text).unwrap();
    cluster.restart().unwrap();

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
