//! The official MCP conformance suites against the real `capgate serve`
//! binary with the fixture worker of `examples/conformance`: the stable
//! 0.1.x and the 2026-07-28 pre-release 0.2.0-alpha, each judged by the
//! suite itself against a baseline in `tests/conformance` that lists, with
//! reasons, what capgate does not do on purpose (prompts, resources,
//! sampling, ...). Any other failure fails the test, and so does a
//! baseline entry that starts passing.

use capgate_tests::real::{FixtureWorker, RealGateway, conformance_baseline, conformance_server};

/// Runs one suite against a fresh gateway and fixture; the suite's verdict
/// decides, and the scenarios named must have run.
async fn suite(package: &str, args: &[&str], baseline: &str, must_run: &[&str]) {
    let gateway = RealGateway::start().await;
    let _fixture = FixtureWorker::start(&gateway.worker_url()).await;
    let url = gateway.mcp_url();
    let baseline = conformance_baseline(baseline);
    let mut all = vec!["--url", &url, "--expected-failures", &baseline];
    all.extend_from_slice(args);
    let (passed, output) = conformance_server(package, &all).await;
    assert!(
        passed,
        "{package} {args:?} found failures outside its baseline (or a baseline entry now passes):\n{output}"
    );
    for scenario in must_run {
        assert!(
            output.contains(&format!("✓ {scenario}:")),
            "{package} {args:?}: scenario {scenario} did not run and pass:\n{output}"
        );
    }
}

#[tokio::test]
async fn the_stable_conformance_suite_passes_all_but_its_baseline() {
    suite(
        "conformance-stable",
        &["--suite", "all"],
        "stable-0.1.yml",
        &[
            "server-initialize",
            "tools-list",
            "tools-call-simple-text",
            "tools-call-image",
            "tools-call-audio",
            "tools-call-embedded-resource",
            "tools-call-mixed-content",
            "tools-call-error",
            "json-schema-2020-12",
            "dns-rebinding-protection",
        ],
    )
    .await;
}

#[tokio::test]
async fn the_pre_release_suite_passes_all_but_its_baseline_in_sessions() {
    suite(
        "conformance-next",
        &["--suite", "all"],
        "alpha-sessions.yml",
        &[
            "server-initialize",
            "server-session-lifecycle",
            "tools-list",
            "tools-call-image",
            "tools-call-error",
            "dns-rebinding-protection",
        ],
    )
    .await;
}

#[tokio::test]
async fn the_pre_release_suite_passes_the_2026_07_28_requirements_but_its_baseline() {
    suite(
        "conformance-next",
        &["--requirements", "2026-07-28"],
        "alpha-2026-07-28.yml",
        &[
            "tools-list",
            "tools-call-simple-text",
            "tools-call-mixed-content",
            "tools-call-error",
            "http-header-validation",
            "json-schema-2020-12",
            "dns-rebinding-protection",
        ],
    )
    .await;
}
