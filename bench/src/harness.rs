//! What every scenario stands on: the `capgate serve` child process, the
//! provider worker process, and the arithmetic of the figures.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use capgate_sdk::{Function, Worker};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The function every scenario calls: `hello::greet`, as in the example.
fn greet() -> Function {
    Function::new("hello::greet")
        .description("Greets someone by name")
        .input_schema(json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))
        .output_schema(json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}))
        .handler(|input, _ctx| async move {
            let name = input.get("name").and_then(Value::as_str).unwrap_or_default();
            Ok(json!({ "message": format!("hello {name}") }))
        })
}

/// The `capgate` binary under test: `CAPGATE_BIN`, or the one built beside
/// this benchmark (`cargo build --release` puts both in `target/release`).
pub fn capgate_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("CAPGATE_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("locating the capgate-bench binary")?;
    let beside = exe.with_file_name(format!("capgate{}", std::env::consts::EXE_SUFFIX));
    if !beside.is_file() {
        bail!(
            "no capgate binary at {}: build it with `cargo build --release -p capgate-gateway`, or name it with CAPGATE_BIN",
            beside.display()
        );
    }
    Ok(beside)
}

/// `capgate-bench provider URL`: the worker under test, in its own process
/// as it would be deployed. Serves until killed.
pub async fn serve_provider(url: String) -> anyhow::Result<()> {
    let worker = Worker::builder(url)
        .name("bench-provider")
        .connect()
        .await?;
    worker.register(greet());
    std::future::pending::<()>().await;
    Ok(())
}

pub async fn wait_until_callable(probe: &Worker) -> anyhow::Result<()> {
    for _ in 0..500 {
        if probe
            .call("hello::greet", json!({"name": "ready"}))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the benchmark's provider worker did not register hello::greet within 5 s")
}

/// The provider worker's process.
pub struct ProviderProcess(Child);

impl ProviderProcess {
    pub async fn start(url: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the capgate-bench binary")?;
        let child = Command::new(exe)
            .args(["provider", url])
            .env("CAPGATE_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the benchmark's provider worker")?;
        Ok(Self(child))
    }

    /// Starts the provider and waits until its `hello::greet` answers a
    /// probe worker's call (which proves the registration is live).
    pub async fn start_live(url: &str) -> anyhow::Result<Self> {
        let provider = Self::start(url).await?;
        let probe = Worker::builder(url).name("bench-probe").connect().await?;
        wait_until_callable(&probe).await?;
        probe.shutdown();
        Ok(provider)
    }

    pub async fn stop(&mut self) {
        let _ = self.0.start_kill();
        let _ = self.0.wait().await;
    }
}

/// A `capgate serve` child process on a free loopback port with a temporary
/// data directory.
pub struct ChildGateway {
    child: Child,
    addr: String,
    /// The HTTP trigger listener's address, when it is on.
    http_addr: Option<String>,
    threads: Option<usize>,
    config: Option<std::path::PathBuf>,
    data_dir: tempfile::TempDir,
}

impl ChildGateway {
    pub async fn start(threads: Option<usize>) -> anyhow::Result<Self> {
        Self::start_configured(threads, None).await
    }

    /// [`ChildGateway::start`] with a configuration file.
    pub async fn start_configured(
        threads: Option<usize>,
        config: Option<&Path>,
    ) -> anyhow::Result<Self> {
        Self::start_full(threads, config, false).await
    }

    /// [`ChildGateway::start`] with its HTTP trigger listener on.
    pub async fn start_with_http(threads: Option<usize>) -> anyhow::Result<Self> {
        Self::start_full(threads, None, true).await
    }

    async fn start_full(
        threads: Option<usize>,
        config: Option<&Path>,
        http: bool,
    ) -> anyhow::Result<Self> {
        let free = || -> anyhow::Result<String> {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            Ok(format!("127.0.0.1:{port}"))
        };
        let addr = free()?;
        let http_addr = if http { Some(free()?) } else { None };
        let data_dir = tempfile::tempdir()?;
        let child = Self::spawn(
            &addr,
            http_addr.as_deref(),
            threads,
            config,
            data_dir.path(),
        )?;
        let gateway = Self {
            child,
            addr,
            http_addr,
            threads,
            config: config.map(Path::to_owned),
            data_dir,
        };
        gateway.wait_healthy().await?;
        Ok(gateway)
    }

    fn spawn(
        addr: &str,
        http_addr: Option<&str>,
        threads: Option<usize>,
        config: Option<&Path>,
        data_dir: &Path,
    ) -> anyhow::Result<Child> {
        let mut command = Command::new(capgate_binary()?);
        if let Some(threads) = threads {
            command.env("TOKIO_WORKER_THREADS", threads.to_string());
        }
        command.arg("serve");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .args(["--listen", addr, "--data-dir"])
            .arg(data_dir)
            // The HTTP trigger listener only where a scenario uses it: its
            // default port may be taken.
            .env("CAPGATE_HTTP_LISTEN", http_addr.unwrap_or("off"))
            .env("CAPGATE_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting capgate serve")
    }

    pub fn socket_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.addr.parse()?)
    }

    /// Kills the gateway (SIGKILL) and starts it again on the same address
    /// and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.child = Self::spawn(
            &self.addr,
            self.http_addr.as_deref(),
            self.threads,
            self.config.as_deref(),
            self.data_dir.path(),
        )?;
        self.wait_healthy().await
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let url = format!("http://{}/healthz", self.addr);
        for _ in 0..200 {
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
        bail!("the gateway did not become healthy at {url} within 5 s")
    }

    /// `http://HOST:PORT` of the HTTP trigger listener, when it is on.
    pub fn http_url(&self) -> Option<String> {
        self.http_addr.as_ref().map(|addr| format!("http://{addr}"))
    }

    pub fn worker_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// `HOST:PORT` of the gateway's main listener (admin API, MCP).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the gateway process has exited")?;
        read_rss_kib(&Path::new("/proc").join(pid.to_string()).join("status"))
    }

    /// CPU time the gateway process has used (user + system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds_of(self.pid()?)
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the gateway process has exited")
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `VmRSS` of a `/proc/PID/status` file, in KiB.
pub fn read_rss_kib(status: &Path) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(status).with_context(|| format!("reading {}", status.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {}", status.display()))
}

/// Pseudo-random indexes below `n` (xorshift): a cheap spread over a
/// catalog's ids, so caches are not flattered by repeating one.
pub fn spread(n: usize) -> impl FnMut() -> usize {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    }
}

/// The `p` quantile (0..=1) of sorted durations, in seconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(index).map_or(0.0, Duration::as_secs_f64)
}

/// How hard a call-path measurement pushes.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Sequential calls (after 1,000 warm-up calls).
    pub calls: usize,
    /// Concurrent callers for the throughput run.
    pub concurrency: usize,
    /// Length of the throughput run, in seconds.
    pub seconds: u64,
}

/// Figures of one scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub scenario: &'static str,
    pub sequential_calls: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub concurrency: usize,
    pub calls_per_sec: f64,
    pub errors: u64,
}

/// Sequential p50/p99 over `load.calls` calls (after 1,000 warm-up calls),
/// then throughput with `load.concurrency` callers for `load.seconds`.
pub async fn measure<F, Fut>(
    scenario: &'static str,
    load: &Load,
    call: F,
) -> anyhow::Result<Figures>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    for _ in 0..1_000 {
        call()
            .await
            .map_err(|e| anyhow::anyhow!("{scenario} warm-up call failed: {e}"))?;
    }
    let mut latencies = Vec::with_capacity(load.calls);
    for _ in 0..load.calls {
        let started = Instant::now();
        call()
            .await
            .map_err(|e| anyhow::anyhow!("{scenario} call failed: {e}"))?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let percentile = |p: f64| percentile(&latencies, p) * 1e6;

    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..load.concurrency {
        let (call, done, errors, stop) = (call.clone(), done.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match call().await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(load.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let completed = done.load(Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    Ok(Figures {
        scenario,
        sequential_calls: load.calls,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        concurrency: load.concurrency,
        calls_per_sec: completed as f64 / elapsed.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Stateless MCP `tools/call` over keep-alive HTTP connections.
#[derive(Clone)]
pub struct McpCaller {
    http: reqwest::Client,
    url: String,
    next_id: Arc<AtomicU64>,
}

impl McpCaller {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().no_proxy().build()?,
            url: url.to_owned(),
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    pub async fn call_greet(&self) -> Result<(), String> {
        self.call("hello__greet", json!({"name": "bench"}), "hello bench")
            .await
    }

    /// `tools/call` of `tool`; an error unless the answer contains `expect`.
    pub async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Value,
        expect: &str,
    ) -> Result<(), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {
                "name": tool, "arguments": arguments,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}
                }
            }
        });
        let response = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() || !text.contains(expect) || text.contains("\"isError\":true") {
            return Err(format!("HTTP {status}: {text}"));
        }
        Ok(())
    }
}

/// CPU time process `pid` has used (user + system), in seconds.
pub fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(index)
            .context("a short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The median of one figure over rounds.
pub fn median_of(runs: &[Figures], read: fn(&Figures) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(read).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Median throughput and median sequential p50 of each configuration.
pub fn medians<const N: usize>(figures: &[Vec<Figures>; N]) -> ([f64; N], [f64; N]) {
    let of = |read: fn(&Figures) -> f64| figures.each_ref().map(|runs| median_of(runs, read));
    (of(|f| f.calls_per_sec), of(|f| f.p50_us))
}

/// Prints each round of configurations measured side by side.
pub fn print_rounds<const N: usize>(what: &str, names: [&str; N], figures: &[Vec<Figures>; N]) {
    println!(
        "{what:<9} {:>6} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "round", "p50 µs", "p99 µs", "concurrency", "calls/s", "errors"
    );
    for (index, runs) in figures.iter().enumerate() {
        for (round, r) in runs.iter().enumerate() {
            println!(
                "{:<9} {:>6} {:>10.1} {:>10.1} {:>12} {:>12.0} {:>8}",
                names[index],
                round + 1,
                r.p50_us,
                r.p99_us,
                r.concurrency,
                r.calls_per_sec,
                r.errors
            );
        }
    }
}

/// This binary's hidden `command` serving on a free loopback address, in a
/// process of its own (killed when dropped); the address it serves on.
pub fn spawn_server(command: &str, what: &str) -> anyhow::Result<(Child, String)> {
    spawn_server_with(command, &[], what)
}

/// [`spawn_server`] with arguments after the address.
pub fn spawn_server_with(
    command: &str,
    arguments: &[&str],
    what: &str,
) -> anyhow::Result<(Child, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(std::env::current_exe()?)
        .args([command, &addr])
        .args(arguments)
        .env("CAPGATE_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    Ok((child, addr))
}
