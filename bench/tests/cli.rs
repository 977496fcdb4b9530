//! The benchmark's command line, run as a user runs it.

use std::process::{Command, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_capgate-bench");

/// Runs `capgate-bench` with `args`, expecting it to fail, and returns its
/// one error line.
fn fails_with(args: &[&str]) -> String {
    let output = Command::new(BENCH)
        .args(args)
        .env("CAPGATE_LOG", "error")
        // A gateway binary that does not exist: a scenario that got as far
        // as starting one would fail differently from the check under test.
        .env("CAPGATE_BIN", "/nonexistent/capgate")
        .stdin(Stdio::null())
        .output()
        .expect("capgate-bench runs");
    assert!(!output.status.success(), "expected failure for {args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("capgate-bench: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected, got: {stderr}");
    errors[0].to_owned()
}

#[test]
fn a_bench_without_functions_is_refused_before_starting_anything() {
    for scenario in ["catalog", "reconnect", "reattach"] {
        let error = fails_with(&["--scenario", scenario, "--functions", "0"]);
        assert!(error.contains("--functions must be at least 1"), "{error}");
    }
}

#[test]
fn a_missing_gateway_binary_is_named_with_how_to_build_it() {
    // A copy of the benchmark in a folder with no `capgate` beside it.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("capgate-bench");
    std::fs::copy(BENCH, &copy).unwrap();
    let output = Command::new(&copy)
        .args(["--scenario", "worker", "--calls", "1", "--seconds", "1"])
        .env("CAPGATE_LOG", "error")
        .env_remove("CAPGATE_BIN")
        .stdin(Stdio::null())
        .output()
        .expect("capgate-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no capgate binary at")
            && stderr.contains("cargo build --release -p capgate-gateway"),
        "{stderr}"
    );
}
