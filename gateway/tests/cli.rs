//! The `capgate` binary: start-up errors are one clear line, signals stop it
//! cleanly, and the data it wrote survives.

mod common;
use common::{free_port, local_config};
use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// Every `capgate` here gets its own HTTP trigger port (CAPGATE_HTTP_LISTEN):
// tests run side by side, and 3111 may be taken.
const CAPGATE: &str = env!("CARGO_BIN_EXE_capgate");

/// Runs `capgate ARGS` expecting it to fail fast; returns its stderr.
fn fails_with(args: &[&str]) -> String {
    let output = Command::new(CAPGATE)
        .env("CAPGATE_HTTP_LISTEN", "127.0.0.1:0")
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
fn a_broken_policy_or_identity_stops_the_start_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("capgate.toml");
    let data = dir.path().join("data");
    let serve_with = |toml: &str| {
        std::fs::write(&config, toml).unwrap();
        fails_with(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
    };
    std::fs::write(
        dir.path().join("team.csv"),
        "p, agent:a, *, billing::*, call, allow\np, agent:a, *, *, cal, allow\n",
    )
    .unwrap();
    let error = serve_with("[policies]\nfiles = [\"team.csv\"]\n");
    assert!(
        error.contains("team.csv:2: unknown action 'cal'"),
        "{error}"
    );
    let error = serve_with(
        "[[issuers]]\nissuer = \"https://auth.test\"\naudience = [\"a\"]\njwks_file = \"nowhere.json\"\n",
    );
    assert!(
        error.contains("issuer https://auth.test: cannot read jwks_file"),
        "{error}"
    );
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
        .env("CAPGATE_HTTP_LISTEN", "127.0.0.1:0")
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
        .env("CAPGATE_HTTP_LISTEN", "127.0.0.1:0")
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
    // A version declared through the running gateway's admin API...
    let definition = dir.path().join("refund.json");
    std::fs::write(
        &definition,
        r#"{"id": "billing::refund", "version": "1.0.0", "description": "Refunds a payment"}"#,
    )
    .unwrap();
    let declared = Command::new(CAPGATE)
        .env("CAPGATE_HTTP_LISTEN", "127.0.0.1:0")
        .args(["functions", "declare"])
        .arg(&definition)
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .env_remove("CAPGATE_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        declared.status.success(),
        "{}",
        String::from_utf8_lossy(&declared.stderr)
    );
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
    // ...is in the store the stopped gateway left behind.
    let stored = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = capgate_catalog::store::Store::open_sqlite(dir.path())
                .await
                .unwrap();
            store.load().await.unwrap()
        });
    let ids: Vec<String> = stored
        .iter()
        .map(|c| format!("{}@{}", c.id(), c.version()))
        .collect();
    assert_eq!(ids, ["billing::refund@1.0.0"]);
    assert_eq!(
        stored[0].definition().description.as_deref(),
        Some("Refunds a payment")
    );
}

/// Runs `capgate ARGS` off the async runtime; returns (success, stdout, stderr).
async fn run_capgate(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(CAPGATE)
            .env("CAPGATE_HTTP_LISTEN", "127.0.0.1:0")
            .args(&args)
            .env_remove("CAPGATE_URL")
            .env_remove("CAPGATE_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A running gateway with a worker named `cli-test` providing three
/// functions, and its URL for `--url`.
struct Running {
    gateway: capgate_gateway::Gateway,
    worker: capgate_sdk::Worker,
    url: String,
    _dir: tempfile::TempDir,
}

async fn running() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let gateway = capgate_gateway::Gateway::start(local_config(dir.path()))
        .await
        .unwrap();
    let url = format!("http://{}", gateway.local_addr());
    let worker = capgate_sdk::Worker::builder(gateway.worker_url())
        .name("cli-test")
        .connect()
        .await
        .unwrap();
    for (id, version) in [
        ("billing::refund", "1.2.0"),
        ("billing::charge", "1.0.0"),
        ("search::query", "0.1.0"),
    ] {
        worker.register(
            capgate_sdk::Function::new(id)
                .version(version)
                .owner("payments")
                .description(format!("The {id} function"))
                .handler(|_, _| async { Ok(serde_json::json!({})) }),
        );
    }
    // Frames are handled in order: once this answers, all are registered.
    worker
        .call("engine::workers::list", serde_json::json!({}))
        .await
        .unwrap();
    Running {
        gateway,
        worker,
        url,
        _dir: dir,
    }
}

#[tokio::test]
async fn functions_list_prints_a_table_and_filters_as_json() {
    let running = running().await;
    let url = &running.url;
    let (ok, out, err) = run_capgate(args(&["functions", "list", "--url", url])).await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("VERSION"),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].starts_with("billing::charge") && lines[1].contains("live"),
        "{out}"
    );
    let (ok, out, _) = run_capgate(args(&[
        "functions",
        "list",
        "--prefix",
        "search::",
        "--json",
        "--url",
        url,
    ]))
    .await;
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["id"], "search::query");
    running.gateway.shutdown().await;
}

#[tokio::test]
async fn functions_show_and_workers_list_describe_what_runs() {
    let running = running().await;
    let url = &running.url;
    let (ok, out, _) = run_capgate(args(&[
        "functions",
        "show",
        "billing::refund",
        "--url",
        url,
    ]))
    .await;
    assert!(ok);
    assert!(
        out.contains("1.2.0") && out.contains("sha256:") && out.contains("owner: payments"),
        "{out}"
    );
    assert!(out.contains(&running.worker.worker_id().unwrap()), "{out}");
    let (ok, out, _) = run_capgate(args(&["workers", "list", "--json", "--url", url])).await;
    assert!(ok);
    let workers: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(workers[0]["name"], "cli-test");
    let (ok, _, err) =
        run_capgate(args(&["functions", "show", "nope::missing", "--url", url])).await;
    assert!(!ok);
    assert!(
        err.contains("404") && err.contains("no function 'nope::missing'"),
        "{err}"
    );
    running.gateway.shutdown().await;
}

#[tokio::test]
async fn triggers_list_shows_each_trigger_and_remove_stops_it() {
    let running = running().await;
    let url = &running.url;
    running.worker.register_trigger(
        "refund-route",
        "http",
        "billing::refund",
        serde_json::json!({"api_path": "/refunds", "http_method": "POST"}),
    );
    running
        .worker
        .call("engine::workers::list", serde_json::json!({}))
        .await
        .unwrap();
    let (ok, out, err) = run_capgate(args(&["triggers", "list", "--url", url])).await;
    assert!(ok, "{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.contains("TYPE") && header.contains("FAILURES"),
        "{out}"
    );
    assert!(
        out.contains("refund-route") && out.contains("http") && out.contains("billing::refund"),
        "{out}"
    );
    let (ok, out, _) = run_capgate(args(&["triggers", "list", "--json", "--url", url])).await;
    assert!(ok);
    let triggers: serde_json::Value = serde_json::from_str(&out).unwrap();
    let owner_key = triggers[0]["owner_key"].as_str().unwrap().to_owned();
    assert_eq!(triggers[0]["fires"], 0);
    let (ok, out, err) = run_capgate(args(&[
        "triggers",
        "remove",
        &owner_key,
        "refund-route",
        "--url",
        url,
    ]))
    .await;
    assert!(ok && out.contains("removed"), "{out}{err}");
    let (ok, _, err) = run_capgate(args(&[
        "triggers",
        "remove",
        &owner_key,
        "refund-route",
        "--url",
        url,
    ]))
    .await;
    assert!(
        !ok && err.contains("404") && err.contains("no trigger"),
        "{err}"
    );
    running.gateway.shutdown().await;
}

#[tokio::test]
async fn functions_deprecate_hides_the_version_from_default_listings() {
    let running = running().await;
    let url = &running.url;
    let (ok, out, err) = run_capgate(args(&[
        "functions",
        "deprecate",
        "billing::refund@1.2.0",
        "--sunset",
        "2999-01-31",
        "--replacement",
        "billing::charge",
        "--reason",
        "merged",
        "--url",
        url,
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("billing::refund@1.2.0 deprecated") && out.contains("2999-01-31"),
        "{out}"
    );
    let (_, out, _) = run_capgate(args(&["functions", "list", "--url", url])).await;
    assert!(
        !out.contains("billing::refund"),
        "deprecated versions are hidden by default: {out}"
    );
    let (_, out, _) = run_capgate(args(&[
        "functions",
        "list",
        "--include-deprecated",
        "--url",
        url,
    ]))
    .await;
    assert!(
        out.contains("billing::refund") && out.contains("deprecated"),
        "{out}"
    );
    running.gateway.shutdown().await;
}

#[tokio::test]
async fn a_bad_deprecation_is_refused_with_what_to_write() {
    let running = running().await;
    let url = &running.url;
    let (ok, _, err) = run_capgate(args(&[
        "functions",
        "deprecate",
        "billing::refund",
        "--url",
        url,
    ]))
    .await;
    assert!(!ok && err.contains("write ID@VERSION"), "{err}");
    let (ok, _, err) = run_capgate(args(&[
        "functions",
        "deprecate",
        "billing::charge@1.0.0",
        "--sunset",
        "2001-01-01",
        "--url",
        url,
    ]))
    .await;
    assert!(
        !ok && err.contains("400") && err.contains("not in the future"),
        "{err}"
    );
    running.gateway.shutdown().await;
}

#[tokio::test]
async fn a_gateway_that_is_not_there_is_one_clear_line() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let (ok, _, err) = run_capgate(args(&["workers", "list", "--url", &url])).await;
    assert!(!ok);
    assert!(
        err.contains("cannot reach capgate") && err.contains("CAPGATE_URL"),
        "{err}"
    );
}

#[tokio::test]
async fn an_agent_key_from_the_cli_is_accepted_by_a_gateway_configured_with_its_hash() {
    capgate_gateway::tls::install_crypto_provider();
    let (ok, out, err) = run_capgate(args(&["agents", "key", "legacy-bot"])).await;
    assert!(ok, "{err}");
    let key = out
        .lines()
        .find_map(|line| {
            line.strip_prefix("# cgk_")
                .map(|rest| format!("cgk_{rest}"))
        })
        .unwrap_or_else(|| panic!("no key in {out}"));
    let toml: String = out
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !toml.contains(&key),
        "the key itself must not go in the configuration"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capgate.toml");
    std::fs::write(&file, &toml).unwrap();
    let mut config =
        capgate_gateway::Config::load(Some(&file), capgate_gateway::config::Settings::default())
            .unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config.server.data_dir = dir.path().to_owned();
    let gateway = capgate_gateway::Gateway::start(config).await.unwrap();
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "probe", "version": "0"}}
    });
    let status = |token: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(gateway.mcp_url())
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(Some(key.clone())).await, 200);
    assert_eq!(status(None).await, 401);

    // `functions declare` puts a version in the catalog ahead of its worker.
    let url = format!("http://{}", gateway.local_addr());
    let definition = dir.path().join("refund.json");
    let declare = |json: &str| {
        std::fs::write(&definition, json).unwrap();
        run_capgate(args(&[
            "functions",
            "declare",
            definition.to_str().unwrap(),
            "--url",
            &url,
            "--token",
            &key,
        ]))
    };
    let (ok, out, err) = declare(
        r#"{"id": "billing::refund", "version": "1.0.0", "description": "Refunds a payment"}"#,
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("billing::refund@1.0.0 declared") && out.contains("offline"),
        "{out}"
    );
    let (ok, _, err) = declare(r#"{"id": "billing::refund", "version": "one"}"#).await;
    assert!(
        !ok && err.contains("400") && err.contains("semver"),
        "{err}"
    );
}

#[tokio::test]
async fn policy_check_explains_a_decision_and_casbin_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("team.csv");
    std::fs::write(
        &policy,
        "p, role:support, *, billing::*, call, allow\n\
         p, agent:support-bot, *, billing::refund, call, deny\n\
         g, agent:support-bot, role:support\n",
    )
    .unwrap();
    let config = dir.path().join("capgate.toml");
    std::fs::write(&config, "[policies]\nfiles = [\"team.csv\"]\n").unwrap();
    let check = |subject: &str, action: &str, object: &str| {
        run_capgate(args(&[
            "policy",
            "check",
            subject,
            action,
            object,
            "--config",
            config.to_str().unwrap(),
        ]))
    };
    let (ok, out, err) = check("agent:support-bot", "call", "billing::charge").await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("ALLOW: agent:support-bot call billing::charge"),
        "{out}"
    );
    assert!(out.contains("team.csv:1: p, role:support"), "{out}");
    assert!(out.contains("agent:support-bot, role:support"), "{out}");
    assert!(
        out.contains("casbin on policies/model.conf: allow (agrees)"),
        "{out}"
    );

    let (ok, out, err) = check("agent:support-bot", "call", "billing::refund").await;
    assert!(ok, "{err}");
    assert!(out.starts_with("DENY"), "{out}");
    assert!(out.contains("decided by: "), "{out}");
    assert!(
        out.contains("team.csv:2: p, agent:support-bot, *, billing::refund, call, deny"),
        "{out}"
    );
    assert!(out.contains("(agrees)"), "{out}");

    let (ok, out, _) = check("agent:stranger", "call", "billing::charge").await;
    assert!(ok && out.contains("default deny"), "{out}");

    let (ok, _, err) = check("agent:x", "cal", "billing::charge").await;
    assert!(!ok && err.contains("unknown action 'cal'"), "{err}");
    std::fs::write(&policy, "p, agent:x, *, billing::*, call\n").unwrap();
    let (ok, _, err) = check("agent:x", "call", "billing::charge").await;
    assert!(
        !ok && err.contains("team.csv:1: a rule has 6 fields"),
        "{err}"
    );
}

#[tokio::test]
async fn audit_tail_prints_and_exports_the_log() {
    capgate_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut config = local_config(dir.path());
    config.audit.allowed_calls = true;
    let gateway = capgate_gateway::Gateway::start(config).await.unwrap();
    let worker = capgate_sdk::Worker::connect(gateway.worker_url())
        .await
        .unwrap();
    worker.register(
        capgate_sdk::Function::new("ops::ping")
            .handler(|_, _| async { Ok(serde_json::json!("pong")) }),
    );
    worker
        .call("ops::ping", serde_json::json!({}))
        .await
        .unwrap();
    let url = format!("http://{}", gateway.local_addr());
    let (ok, out, err) = run_capgate(args(&[
        "audit", "tail", "--json", "--kind", "call", "--object", "ops::*", "--url", &url,
    ]))
    .await;
    assert!(ok, "{err}");
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{out}");
    assert_eq!(entries[0]["object"], "ops::ping");
    assert_eq!(entries[0]["allowed"], true);
    assert!(
        entries[0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("worker:")
    );
    let (ok, out, err) = run_capgate(args(&[
        "audit",
        "tail",
        "--kind",
        "registration",
        "--url",
        &url,
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("SEQ") && out.contains("ops::ping@"),
        "{out}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_worker_key_from_the_cli_goes_in_a_workers_entry() {
    let (ok, out, err) = run_capgate(args(&["workers", "key", "billing"])).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("[workers.billing]") && out.contains("api_key_sha256 = \""),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capgate.toml");
    let toml: String = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, toml).unwrap();
    let config = capgate_gateway::Config::load(Some(&file), Default::default()).unwrap();
    assert_eq!(config.identity.workers[0].name, "billing");
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_what_a_truncation_destroyed() {
    let running = running().await;
    let data_dir = running._dir.path().to_owned();
    let data = data_dir.to_str().unwrap();
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("catalog-backup.db");
    let backup_arg = backup.to_str().unwrap();

    // While the gateway serves from the database.
    let (ok, out, err) =
        run_capgate(args(&["store", "backup", backup_arg, "--data-dir", data])).await;
    assert!(ok, "{err}");
    assert!(out.contains("3 versions"), "{out}");
    let (ok, _, err) =
        run_capgate(args(&["store", "backup", backup_arg, "--data-dir", data])).await;
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, err) = run_capgate(args(&["store", "check", "--data-dir", data])).await;
    assert!(ok && out.contains("ok — 3 versions"), "{out}{err}");

    running.gateway.shutdown().await;
    drop(running.worker);
    let file = data_dir.join("capgate.db");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    for refused in [
        fails_with(&[
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
            data,
        ]),
        fails_with(&["store", "check", "--data-dir", data]),
    ] {
        assert!(
            refused.contains(&file.display().to_string())
                && refused.contains("empty (0 bytes)")
                && refused.contains("Restore it from a backup")
                && refused.contains("move it aside"),
            "{refused}"
        );
    }

    // Restored as the documentation says: the copy in place, WAL files gone.
    std::fs::copy(&backup, &file).unwrap();
    for stale in ["capgate.db-wal", "capgate.db-shm"] {
        let _ = std::fs::remove_file(data_dir.join(stale));
    }
    let store = capgate_catalog::store::Store::open_sqlite(&data_dir)
        .await
        .unwrap();
    let mut ids: Vec<String> = store
        .load()
        .await
        .unwrap()
        .iter()
        .map(|c| format!("{}@{}", c.id(), c.version()))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "billing::charge@1.0.0",
            "billing::refund@1.2.0",
            "search::query@0.1.0"
        ]
    );
}

/// An entry written before names were checked (or by anything else that
/// reached the database) still cannot act on the terminal `audit tail`
/// prints to.
#[tokio::test]
async fn audit_tail_escapes_control_characters_even_in_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = capgate_gateway::Gateway::start(local_config(dir.path()))
        .await
        .unwrap();
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("capgate.db").display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_log (seq, at_ms, kind, subject, tenant, action, object, allowed, rule, detail)
         VALUES (999999, 0, 'call', $1, 'default', 'call', $2, 0, $3, '{}')",
    )
    .bind("agent:x\u{1b}[2J\nagent:root")
    .bind("ops::\u{1b}]0;owned\u{7}")
    .bind("rule \u{9b}31m")
    .execute(&pool)
    .await
    .unwrap();
    let url = format!("http://{}", gateway.local_addr());
    let (ok, out, err) =
        run_capgate(args(&["audit", "tail", "--kind", "call", "--url", &url])).await;
    assert!(ok, "{err}");
    assert!(
        !out.contains(['\u{1b}', '\u{7}', '\u{9b}']) && out.lines().count() == 2,
        "{out:?}"
    );
    assert!(
        out.contains("agent:x\\u{1b}[2J\\u{a}agent:root")
            && out.contains("ops::\\u{1b}]0;owned\\u{7}"),
        "{out}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn queues_list_shows_dead_letters_which_dlq_redrive_discard_and_purge_work_on() {
    let running = running().await;
    let url = &running.url;
    running.worker.register(
        capgate_sdk::Function::new("jobs::fail").handler(|_, _| async {
            Err::<serde_json::Value, _>(capgate_sdk::HandlerError::new("the job always fails"))
        }),
    );
    running.worker.register_trigger(
        "jobs-in",
        "durable:subscriber",
        "jobs::fail",
        serde_json::json!({"topic": "jobs", "queue_config": {"maxRetries": 0}}),
    );
    for n in 0..2 {
        running
            .worker
            .call(
                "iii::durable::publish",
                serde_json::json!({"topic": "jobs", "data": {"n": n}}),
            )
            .await
            .unwrap();
    }
    let dead = |listing: &serde_json::Value| {
        listing["queues"]
            .as_array()
            .and_then(|queues| queues.iter().find(|q| q["queue"] == "jobs"))
            .map_or(0, |q| q["dead_letters"].as_i64().unwrap_or(0))
    };
    let mut listing = serde_json::Value::Null;
    for _ in 0..500 {
        let (ok, out, err) = run_capgate(args(&["queues", "list", "--json", "--url", url])).await;
        assert!(ok, "{err}");
        listing = serde_json::from_str(&out).unwrap();
        if dead(&listing) == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(dead(&listing), 2, "{listing}");
    let (ok, out, err) = run_capgate(args(&["queues", "list", "--url", url])).await;
    assert!(ok, "{err}");
    assert!(
        out.lines().next().unwrap_or_default().contains("DEAD"),
        "{out}"
    );
    assert!(out.contains("jobs") && out.contains("topic"), "{out}");
    let (ok, out, err) =
        run_capgate(args(&["queues", "dlq", "jobs", "--json", "--url", url])).await;
    assert!(ok, "{err}");
    let letters: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(letters.as_array().unwrap().len(), 2, "{letters}");
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("the job always fails"),
        "{letters}"
    );
    let id = letters[0]["message_id"].as_str().unwrap().to_owned();
    let (ok, out, err) = run_capgate(args(&["queues", "dlq", "jobs", "--url", url])).await;
    assert!(
        ok && out.contains(&id) && out.contains("ERROR"),
        "{out}{err}"
    );
    let (ok, out, err) = run_capgate(args(&["queues", "discard", "jobs", &id, "--url", url])).await;
    assert!(ok && out.contains("discarded"), "{out}{err}");
    let (ok, _, err) = run_capgate(args(&["queues", "discard", "jobs", &id, "--url", url])).await;
    assert!(
        !ok && err.contains("404") && err.contains("no dead letter"),
        "{err}"
    );
    let (ok, out, err) = run_capgate(args(&["queues", "redrive", "jobs", "--url", url])).await;
    assert!(
        ok && out.contains("redrove 1 message(s) of jobs"),
        "{out}{err}"
    );
    let (ok, _, err) = run_capgate(args(&["queues", "purge", "jobs", "--url", url])).await;
    assert!(!ok && err.contains("--confirm jobs"), "{err}");
    let (ok, out, err) = run_capgate(args(&[
        "queues",
        "purge",
        "jobs",
        "--confirm",
        "jobs",
        "--url",
        url,
    ]))
    .await;
    assert!(ok && out.contains("purged"), "{out}{err}");
    let (ok, out, _) = run_capgate(args(&["queues", "dlq", "jobs", "--json", "--url", url])).await;
    assert!(ok);
    assert_eq!(out.trim(), "[]");
    running.gateway.shutdown().await;
}
