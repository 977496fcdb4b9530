//! The `capgate` binary: start-up errors are one clear line, signals stop it
//! cleanly, and the data it wrote survives.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CAPGATE: &str = env!("CARGO_BIN_EXE_capgate");

/// Runs `capgate ARGS` expecting it to fail fast; returns its stderr.
fn fails_with(args: &[&str]) -> String {
    let output = Command::new(CAPGATE)
        .args(args)
        .env("CAPGATE_LOG", "error")
        .env_remove("CAPGATE_LISTEN")
        .env_remove("CAPGATE_DATA_DIR")
        .env_remove("CAPGATE_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("capgate runs");
    assert!(!output.status.success(), "expected failure for {args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("capgate: error:"))
        .collect();
    assert_eq!(
        error_lines.len(),
        1,
        "one error line expected, got: {stderr}"
    );
    error_lines[0].to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let error = fails_with(&[
        "serve",
        "--listen",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        error.contains("already in use") && error.contains("--listen"),
        "{error}"
    );
}

#[test]
fn an_unwritable_data_dir_is_one_clear_line() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let data_dir = file.path().join("below-a-file");
    let listen = format!("127.0.0.1:{}", free_port());
    let error = fails_with(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(
        error.contains("cannot use data directory") && error.contains("--data-dir"),
        "{error}"
    );
}

#[test]
fn a_bad_config_file_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("capgate.toml");
    std::fs::write(&config, "listen = 42\n").unwrap();
    let error = fails_with(&["serve", "--config", config.to_str().unwrap()]);
    assert!(error.contains("capgate.toml is invalid"), "{error}");
    let error = fails_with(&[
        "serve",
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert!(error.contains("cannot read config file"), "{error}");
}

#[test]
fn listening_beyond_loopback_without_authentication_is_refused() {
    let error = fails_with(&["serve", "--listen", "0.0.0.0:0"]);
    assert!(
        error.contains("without authentication") && error.contains("loopback"),
        "{error}"
    );
}

#[test]
fn environment_overrides_are_honoured() {
    let output = Command::new(CAPGATE)
        .args(["serve"])
        .env("CAPGATE_LISTEN", "not-an-address")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("'not-an-address' is invalid"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_gateway_cleanly_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(CAPGATE)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("CAPGATE_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    assert!(dir.path().join("capgate.db").exists());
}
