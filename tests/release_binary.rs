//! The release build (what the Dockerfile ships) builds and answers `--help`.
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
}
