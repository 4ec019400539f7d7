//! Bad input gets a clear message and exit code 2, never a panic or a password in the output.
mod common;
use common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_describes_every_subcommand() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "install",
        "uninstall",
        "run",
        "rebuild",
        "status",
        "verify",
        "demo",
        "bench",
    ] {
        assert!(text.contains(sub), "--help lacks {sub}");
        let out = bin().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help failed");
        assert!(!out.stdout.is_empty());
    }
    assert!(text.contains("Exit codes"));
}

#[test]
fn a_wrong_flag_exits_2() {
    let out = bin().args(["install", "--mode", "bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["run", "--interval", "soon"])
        .env("DATABASE_URL", "postgresql://u@127.0.0.1:1/db")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--interval"), "{}", stderr(&out));
}

#[test]
fn a_bad_url_exits_2_with_a_clear_message() {
    let out = bin()
        .args(["status"])
        .env("DATABASE_URL", "this is not a url secretpw")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("secretpw"), "password leaked: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_invalid_sslmode_exits_2() {
    let out = bin()
        .args(["status"])
        .env(
            "DATABASE_URL",
            "postgresql://u@127.0.0.1/db?sslmode=sometimes",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("sslmode"));
}

#[test]
fn an_unreachable_server_names_host_and_port_but_not_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://app:hunter2@127.0.0.1:{port}/app?sslmode=disable");
    let out = bin()
        .args(["status"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn libpq_environment_variables_are_used_when_no_url_is_given() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bin()
        .args(["status"])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", "someone")
        .env("PGDATABASE", "somedb")
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}/somedb as someone")),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_without_otel_traces_exits_2_naming_the_table_and_schema() {
    let db = TestDb::new().await;
    db.client
        .batch_execute("drop table otel_traces")
        .await
        .unwrap();
    let out = db.cli(&["install"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("otel_traces does not exist in schema \"public\""),
        "{err}"
    );
    assert!(err.contains("--schema"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_column_exits_2_naming_the_column() {
    let db = TestDb::new().await;
    db.client
        .batch_execute("alter table otel_traces drop column service_name")
        .await
        .unwrap();
    let out = db.cli(&["install", "--mode", "incremental"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("otel_traces.service_name is missing"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_privilege_exits_2_with_the_grant_to_run() {
    let db = TestDb::new().await;
    let role = format!("reader_{}", db.name);
    db.client
        .batch_execute(&format!("create role {role} login"))
        .await
        .unwrap();
    let url = db.url.replace("postgres@", &format!("{role}@"));
    let out = bin()
        .args(["install"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("grant select on"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_schema_exits_2() {
    let db = TestDb::new().await;
    let out = bin()
        .args(["status", "--schema", "nope"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("schema \"nope\" does not exist"));
}
