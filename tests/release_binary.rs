//! The product's release build (what the Dockerfile ships: no default features, so no lab)
//! builds, answers `--help`, and has no `demo` or `bench`.
use std::process::Command;

#[test]
fn the_release_binary_builds_and_prints_help() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--no-default-features",
            "--bin",
            "trace-summarizer",
            "--manifest-path",
        ])
        .arg(format!("{manifest}/Cargo.toml"))
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "cargo build --release failed");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{manifest}/target"));
    let out = Command::new(format!("{target}/release/trace-summarizer"))
        .arg("--help")
        .output()
        .expect("run the release binary");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("install") && text.contains("Exit codes"),
        "{text}"
    );
    assert!(
        !text.contains("demo") && !text.contains("bench"),
        "the product binary carries the lab: {text}"
    );
    let out = Command::new(format!("{target}/release/trace-summarizer"))
        .arg("demo")
        .output()
        .expect("run the release binary");
    assert_eq!(
        out.status.code(),
        Some(2),
        "demo is not a command of the product"
    );
}
