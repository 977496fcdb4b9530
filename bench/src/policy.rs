//! `capgate-bench --scenario policy`: policies at scale.
//!
//! A `capgate serve` child runs with a generated policy of
//! `--policy-lines` lines (about 90% rules for other teams' roles, 9% role
//! memberships, and the measured agent's own few rules, one of which
//! denies a whole namespace) over `--functions` functions in 100
//! namespaces, registered by one worker. Measured:
//!
//! - `tools/list` for the agent (its API key): the first page and the whole
//!   filtered list, warm; and the first page right after a policy reload,
//!   which rebuilds the agent's list from the new policy;
//! - in-process, on the same policy: a decision from the cache (the warm
//!   path of every call), a decision evaluated afresh, and casbin's own
//!   `enforce` on `policies/model.conf` with the same lines.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use capgate_policies::reference::CasbinReference;
use capgate_policies::{Action, Policy, PolicySource, Request};
use capgate_sdk::Worker;
use serde_json::json;

use crate::catalog::{register_all, tools_list_latencies};
use crate::harness::{ChildGateway, percentile, spread};

const NAMESPACES: usize = 100;
/// The namespace the agent's deny rule covers.
const DENIED: usize = 7;
const DECISION_SAMPLES: usize = 200_000;
const FRESH_SAMPLES: usize = 20_000;
const CASBIN_SAMPLES: usize = 200;
const RELOADS: usize = 20;
/// Lines for the measured agent and the registering worker.
const OWN_LINES: usize = 8;

fn id(n: usize) -> String {
    format!("bench::ns_{:02}::fn_{n:05}", n % NAMESPACES)
}

/// The agent's rules, then memberships and other teams' rules up to `lines`.
fn policy_text(lines: usize) -> String {
    let mut text = String::from(
        "p, role:bench-reader, *, bench::*, list, allow\n\
         p, role:bench-reader, *, bench::*, call, allow\n\
         g, agent:bench-agent, role:bench-reader\n\
         p, agent:bench-agent, *, policies, admin, allow\n\
         p, worker:anonymous, *, bench::*, register, allow\n\
         p, worker:anonymous, *, bench::*, list, allow\n\
         p, worker:anonymous, *, engine::*, call, allow\n",
    );
    text.push_str(&format!(
        "p, agent:bench-agent, *, bench::ns_{DENIED:02}::*, call, deny\n"
    ));
    let mut written = OWN_LINES;
    let mut team = 0;
    while written < lines {
        if team % 10 == 0 {
            text.push_str(&format!("g, agent:user_{team}, role:team_{team}\n"));
        } else {
            text.push_str(&format!(
                "p, role:team_{team}, *, bench::ns_{:02}::*, call, allow\n",
                team % NAMESPACES
            ));
        }
        written += 1;
        team += 1;
    }
    text
}

pub async fn run(
    functions: usize,
    lines: usize,
    threads: Option<usize>,
    json_output: bool,
) -> anyhow::Result<()> {
    if functions < NAMESPACES {
        bail!("--functions must be at least {NAMESPACES}");
    }
    if lines < OWN_LINES {
        bail!(
            "--policy-lines must be at least {OWN_LINES} (the measured agent's and worker's own lines)"
        );
    }
    let dir = tempfile::tempdir()?;
    let policy_file = dir.path().join("bench.csv");
    let text = policy_text(lines);
    std::fs::write(&policy_file, &text)?;
    let (key, digest) = capgate_gateway::identity::agents::new_key();
    let config = dir.path().join("capgate.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.bench-agent]\napi_key_sha256 = \"{digest}\"\n\n[policies]\nfiles = [\"bench.csv\"]\nwatch = false\n"
        ),
    )?;
    let gateway = ChildGateway::start_configured(threads, Some(&config)).await?;
    let worker = Worker::builder(gateway.worker_url())
        .name("bench-policy")
        .connect()
        .await?;
    let ids: Vec<String> = (0..functions).map(id).collect();
    register_all(&worker, &ids).await?;
    let visible = ids
        .iter()
        .filter(|id| !id.starts_with(&format!("bench::ns_{DENIED:02}::")))
        .count();
    let list = tools_list_latencies(&gateway.mcp_url(), visible, Some(&key)).await?;
    let after_reload = first_page_after_reload(&gateway, &key).await?;

    let policy = Policy::from_sources(&[PolicySource::new("bench.csv", text)])?;
    let decisions = decision_latencies(&policy, functions).await?;

    let figures = json!({
        "functions": functions,
        "policy_lines": policy.line_count(),
        "visible_tools": visible,
        "tools_list_page_p50_ms": list.page_p50_ms,
        "tools_list_page_p99_ms": list.page_p99_ms,
        "tools_list_all_p50_ms": list.all_p50_ms,
        "tools_list_all_p99_ms": list.all_p99_ms,
        "tools_list_pages": list.pages,
        "tools_list_after_reload_p50_ms": after_reload.0,
        "tools_list_after_reload_max_ms": after_reload.1,
        "decision_cached_p50_us": decisions.cached_p50_us,
        "decision_cached_p99_us": decisions.cached_p99_us,
        "decision_fresh_p50_us": decisions.fresh_p50_us,
        "decision_casbin_p50_us": decisions.casbin_p50_us,
    });
    if json_output {
        println!("{figures}");
    } else {
        println!(
            "policy of {} lines over {functions} functions; the agent sees {visible}",
            policy.line_count()
        );
        println!(
            "  tools/list, one page:        {:>9.2} ms p50, {:.2} ms p99",
            list.page_p50_ms, list.page_p99_ms
        );
        println!(
            "  tools/list, all {} pages:    {:>9.2} ms p50, {:.2} ms p99",
            list.pages, list.all_p50_ms, list.all_p99_ms
        );
        println!(
            "  first page after a reload:   {:>9.2} ms p50, {:.2} ms max",
            after_reload.0, after_reload.1
        );
        println!(
            "  decision, cached:            {:>9.3} µs p50, {:.3} µs p99",
            decisions.cached_p50_us, decisions.cached_p99_us
        );
        println!(
            "  decision, evaluated afresh:  {:>9.3} µs p50",
            decisions.fresh_p50_us
        );
        println!(
            "  decision, casbin enforce:    {:>9.1} µs p50",
            decisions.casbin_p50_us
        );
    }
    worker.shutdown();
    gateway.stop().await;
    Ok(())
}

/// Reloads the policy through the admin API and times the first
/// `tools/list` page after each: (p50 ms, max ms).
async fn first_page_after_reload(gateway: &ChildGateway, key: &str) -> anyhow::Result<(f64, f64)> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let base = gateway.mcp_url().trim_end_matches("/mcp").to_owned();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    }}})
    .to_string();
    let mut latencies: Vec<Duration> = Vec::with_capacity(RELOADS);
    for _ in 0..RELOADS {
        let reload = http
            .post(format!("{base}/api/v1/policies/reload"))
            .bearer_auth(key)
            .send()
            .await?;
        if !reload.status().is_success() {
            bail!("policy reload failed: HTTP {}", reload.status());
        }
        let started = Instant::now();
        let response = http
            .post(gateway.mcp_url())
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .body(body.clone())
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        latencies.push(started.elapsed());
        if !status.is_success() {
            bail!("tools/list after a reload failed: HTTP {status}");
        }
    }
    latencies.sort();
    let max = latencies.last().map_or(0.0, Duration::as_secs_f64);
    Ok((percentile(&latencies, 0.5) * 1e3, max * 1e3))
}

struct DecisionFigures {
    cached_p50_us: f64,
    cached_p99_us: f64,
    fresh_p50_us: f64,
    casbin_p50_us: f64,
}

/// `samples` timings of `work`, one each.
fn timed(samples: usize, mut work: impl FnMut()) -> Vec<Duration> {
    (0..samples)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .collect()
}

async fn decision_latencies(policy: &Policy, functions: usize) -> anyhow::Result<DecisionFigures> {
    let ids: Vec<String> = (0..functions).map(id).collect();
    let request = |n: usize| Request {
        subject: "agent:bench-agent",
        domain: "default",
        action: Action::Call,
        object: &ids[n % functions],
    };
    // Warm the cache over every function first: the call path's steady state.
    for n in 0..functions {
        policy.decide(&request(n));
    }
    let mut next = spread(functions);
    let mut cached = timed(DECISION_SAMPLES, || {
        std::hint::black_box(policy.decide(&request(next())));
    });
    let mut fresh = timed(FRESH_SAMPLES, || {
        std::hint::black_box(policy.explain(&request(next())));
    });
    let casbin = CasbinReference::new(policy)
        .await
        .context("loading the policy into casbin")?;
    let mut enforced = Vec::with_capacity(CASBIN_SAMPLES);
    for _ in 0..CASBIN_SAMPLES {
        let asked = request(next());
        let started = Instant::now();
        let allowed = casbin.allows(&asked)?;
        enforced.push(started.elapsed());
        anyhow::ensure!(
            allowed == policy.decide(&asked).allowed,
            "casbin and the compiled policy disagree on {asked:?}"
        );
    }
    for samples in [&mut cached, &mut fresh, &mut enforced] {
        samples.sort();
    }
    Ok(DecisionFigures {
        cached_p50_us: percentile(&cached, 0.5) * 1e6,
        cached_p99_us: percentile(&cached, 0.99) * 1e6,
        fresh_p50_us: percentile(&fresh, 0.5) * 1e6,
        casbin_p50_us: percentile(&enforced, 0.5) * 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_policy_has_the_asked_lines_and_denies_one_namespace() {
        let policy =
            Policy::from_sources(&[PolicySource::new("b.csv", policy_text(1000))]).unwrap();
        assert_eq!(policy.line_count(), 1000);
        let ask = |object: &str| {
            policy
                .decide(&Request {
                    subject: "agent:bench-agent",
                    domain: "default",
                    action: Action::Call,
                    object,
                })
                .allowed
        };
        assert!(ask(&id(1)));
        assert!(!ask(&id(DENIED)));
    }
}
