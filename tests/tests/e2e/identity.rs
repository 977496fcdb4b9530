//! JWT identities: HS256 secrets, RS256 keys from a JWKS file, ES256 keys
//! from a JWKS URL (a real HTTP server), the OAuth protected resource
//! metadata, tenants, worker tokens, and the refusal to listen beyond
//! loopback without identities.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use capgate_gateway::config::{IssuerConfig, KeySource};
use capgate_gateway::{Config, Gateway};
use capgate_sdk::{Function, Worker};
use capgate_tests::{HANG, TestGateway, initialize_body, stateless_client_as};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-at-least-thirty-two-bytes";
const PUBLIC: &str = "https://capgate.test";
const AUDIENCE: &str = "https://capgate.test/mcp";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/jwt")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn claims(iss: &str, sub: &str) -> Value {
    json!({"iss": iss, "sub": sub, "aud": AUDIENCE, "exp": now() + 600, "iat": now(), "scope": "capgate read", "org": "acme"})
}

fn hs256(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture(name)).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture("ec.pem")).unwrap()
}

/// The public half of `key` as a JWK set with one key.
fn jwks(key: &EncodingKey, alg: Algorithm, kid: &str) -> String {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap()
}

fn issuer(name: &str, keys: KeySource, algorithms: Vec<Algorithm>) -> IssuerConfig {
    IssuerConfig {
        issuer: name.into(),
        audience: vec![AUDIENCE.into()],
        algorithms,
        keys,
        name_claim: "sub".into(),
        tenant_claim: Some("org".into()),
        required_scopes: vec!["capgate".into()],
        agents: true,
        workers: true,
        leeway_s: 0,
    }
}

/// Serves `body` at `/jwks.json` on a free loopback port.
async fn serve_jwks(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/jwks.json")
}

async fn gateway_with_issuers(dir: &Path) -> TestGateway {
    let jwks_file = dir.join("rsa-jwks.json");
    std::fs::write(
        &jwks_file,
        jwks(&rsa_key("rsa.pem"), Algorithm::RS256, "rsa-1"),
    )
    .unwrap();
    let jwks_url = serve_jwks(jwks(&ec_key(), Algorithm::ES256, "ec-1")).await;
    let policy = dir.join("tenants.csv");
    std::fs::write(
        &policy,
        "p, agent:alice, acme, *, *, allow\np, worker:billing-bot, *, billing::*, register, allow\np, worker:billing-bot, *, engine::*, call, allow\n",
    )
    .unwrap();
    let issuers = vec![
        issuer(
            "https://hs.test",
            KeySource::Secret(SECRET.as_bytes().to_vec()),
            vec![Algorithm::HS256],
        ),
        issuer(
            "https://rsa.test",
            KeySource::JwksFile(jwks_file),
            vec![Algorithm::RS256, Algorithm::ES256],
        ),
        issuer(
            "https://ec.test",
            KeySource::JwksUrl(jwks_url),
            vec![Algorithm::ES256],
        ),
    ];
    TestGateway::start_with(move |config| {
        config.server.public_url = Some(PUBLIC.into());
        config.identity.issuers = issuers;
        config.policies.files = vec![policy];
    })
    .await
}

async fn initialize(gateway: &TestGateway, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(gateway.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .json(&initialize_body("2025-06-18"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_issuer_kind_verifies_and_every_bad_token_says_why() {
    capgate_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_with_issuers(dir.path()).await;

    for (what, token) in [
        ("HS256", hs256(claims("https://hs.test", "alice"))),
        (
            "RS256 from a JWKS file",
            sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &rsa_key("rsa.pem"),
                claims("https://rsa.test", "alice"),
            ),
        ),
        (
            "ES256 from a JWKS URL",
            sign(
                Algorithm::ES256,
                Some("ec-1"),
                &ec_key(),
                claims("https://ec.test", "alice"),
            ),
        ),
    ] {
        let response = initialize(&gateway, Some(&token)).await;
        let status = response.status();
        assert_eq!(status, 200, "{what}: {}", response.text().await.unwrap());
    }

    let mut expired = claims("https://hs.test", "alice");
    expired["exp"] = json!(now() - 120);
    let mut wrong_audience = claims("https://hs.test", "alice");
    wrong_audience["aud"] = json!("https://elsewhere.test/mcp");
    let mut no_scope = claims("https://hs.test", "alice");
    no_scope["scope"] = json!("read");
    let alg_none = format!(
        "{}.{}.",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
        "eyJpc3MiOiJodHRwczovL2hzLnRlc3QiLCJzdWIiOiJhbGljZSJ9"
    );
    let hs_with_public_key = sign(
        Algorithm::HS256,
        Some("rsa-1"),
        &EncodingKey::from_secret(&fixture("rsa.pem")),
        claims("https://rsa.test", "alice"),
    );
    for (what, token, status, needle) in [
        ("missing", None, 401, "requires a bearer token"),
        ("expired", Some(hs256(expired)), 401, "has expired"),
        (
            "wrong audience",
            Some(hs256(wrong_audience)),
            401,
            "audience is not this gateway",
        ),
        (
            "unknown issuer",
            Some(hs256(claims("https://evil.test", "alice"))),
            401,
            "issuer 'https://evil.test' is not configured",
        ),
        (
            "bad signature",
            Some(sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &rsa_key("rsa-other.pem"),
                claims("https://rsa.test", "alice"),
            )),
            401,
            "signature does not verify",
        ),
        (
            "alg none",
            Some(alg_none),
            401,
            "'alg: none' is never accepted",
        ),
        (
            "HMAC over a public key",
            Some(hs_with_public_key),
            401,
            "algorithm is not accepted",
        ),
        (
            "unknown key id",
            Some(sign(
                Algorithm::RS256,
                Some("rsa-9"),
                &rsa_key("rsa.pem"),
                claims("https://rsa.test", "alice"),
            )),
            401,
            "key id is not among",
        ),
        (
            "missing scope",
            Some(hs256(no_scope)),
            403,
            "lacks the scope(s) this gateway requires: capgate",
        ),
        (
            "sub claims the anonymous agent",
            Some(hs256(claims("https://hs.test", "anonymous"))),
            401,
            "'anonymous' is what requests without credentials act as",
        ),
    ] {
        let response = initialize(&gateway, token.as_deref()).await;
        assert_eq!(response.status(), status, "{what}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains(
                r#"resource_metadata="https://capgate.test/.well-known/oauth-protected-resource""#
            ),
            "{what}: {challenge}"
        );
        if status == 403 {
            assert!(
                challenge.contains(r#"error="insufficient_scope""#)
                    && challenge.contains(r#"scope="capgate""#),
                "{challenge}"
            );
        } else if token.is_some() {
            assert!(challenge.contains("error="), "{what}: {challenge}");
        }
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{what}: {message}");
    }

    // Names a policy subject or the audit log could be fooled by: refused
    // as configured names are, and never echoed.
    let long = "a".repeat(10_000);
    for sub in [
        "*",
        "a b,*",
        "alice\nagent:root",
        "\u{1b}[31mred",
        "ünïcode",
        long.as_str(),
    ] {
        let response = initialize(&gateway, Some(&hs256(claims("https://hs.test", sub)))).await;
        assert_eq!(response.status(), 401, "sub {sub:?}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("claim 'sub' is not a usable name")
                && message.contains("1 to 64 letters, digits"),
            "sub {sub:?}: {message}"
        );
        assert!(!message.contains(sub), "the name is echoed: {message}");
    }
}

#[tokio::test]
async fn the_protected_resource_metadata_names_the_resource_and_issuers() {
    capgate_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_with_issuers(dir.path()).await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let metadata: Value =
            reqwest::get(format!("http://{}{path}", gateway.gateway.local_addr()))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(metadata["resource"], AUDIENCE);
        assert_eq!(
            metadata["authorization_servers"],
            json!(["https://hs.test", "https://rsa.test", "https://ec.test"])
        );
        assert_eq!(metadata["scopes_supported"], json!(["capgate"]));
        assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    }
}

#[tokio::test]
async fn tenants_come_from_the_token_and_scope_the_policy() {
    capgate_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_with_issuers(dir.path()).await;
    // A worker authenticates with a JWT too, and is named by its `sub`.
    let worker_token = hs256(claims("https://hs.test", "billing-bot"));
    let worker = Worker::builder(gateway.worker_url())
        .token(worker_token)
        .connect()
        .await
        .unwrap();
    worker.register(Function::new("billing::refund").handler(|input, _| async move { Ok(input) }));
    gateway.wait_live("billing::refund").await;
    let provider = gateway
        .gateway
        .state()
        .catalog
        .resolve("billing::refund", None)
        .unwrap()
        .provider;
    let identity = gateway
        .gateway
        .state()
        .workers
        .get(provider)
        .unwrap()
        .identity
        .clone();
    assert_eq!(identity.name.as_deref(), Some("billing-bot"));
    assert_eq!(identity.tenant.as_deref(), Some("acme"));

    let acme = hs256(claims("https://hs.test", "alice"));
    let mut other = claims("https://hs.test", "alice");
    other["org"] = json!("globex");
    let globex = hs256(other);
    let client = stateless_client_as(&gateway.mcp_url(), Some(&acme)).await;
    let tools = tokio::time::timeout(HANG, client.list_all_tools())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tools.len(), 1);
    let client = stateless_client_as(&gateway.mcp_url(), Some(&globex)).await;
    let tools = client.list_all_tools().await.unwrap();
    assert!(
        tools.is_empty(),
        "the policy grants alice only in tenant acme"
    );
}

#[tokio::test]
async fn beyond_loopback_both_agents_and_workers_need_identities() {
    capgate_gateway::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = |adjust: &dyn Fn(&mut Config)| {
        let mut config = Config::default();
        config.server.listen = "0.0.0.0:0".parse().unwrap();
        config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
        config.server.data_dir = dir.path().to_owned();
        adjust(&mut config);
        config
    };
    let error = Gateway::start(config(&|_| {}))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("without authentication for agents") && error.contains("[agents.NAME]"),
        "{error}"
    );
    let hs = issuer(
        "https://hs.test",
        KeySource::Secret(SECRET.as_bytes().to_vec()),
        vec![Algorithm::HS256],
    );
    let agents_only = IssuerConfig {
        workers: false,
        ..hs.clone()
    };
    let error = Gateway::start(config(&|c| c.identity.issuers = vec![agents_only.clone()]))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("without authentication for workers"),
        "{error}"
    );
    let gateway = Gateway::start(config(&|c| c.identity.issuers = vec![hs.clone()]))
        .await
        .unwrap();
    gateway.shutdown().await;
}

/// The token-time and scope rules the configuration documents: `nbf` in
/// the future is refused, `leeway_s` forgives a clock that is a little off
/// (and only that much), and `scp` (a list or a string) grants scopes like
/// `scope` does.
#[tokio::test]
async fn not_before_leeway_and_scp_are_honoured() {
    capgate_gateway::tls::install_crypto_provider();
    let strict = issuer(
        "https://hs.test",
        KeySource::Secret(SECRET.as_bytes().to_vec()),
        vec![Algorithm::HS256],
    );
    let lenient = IssuerConfig {
        issuer: "https://lenient.test".into(),
        leeway_s: 60,
        ..strict.clone()
    };
    let gateway = TestGateway::start_with(move |config| {
        config.server.public_url = Some(PUBLIC.into());
        config.identity.issuers = vec![strict, lenient];
    })
    .await;
    let refused = |response: reqwest::Response| async move {
        let status = response.status();
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        (status, challenge)
    };

    let mut early = claims("https://hs.test", "alice");
    early["nbf"] = json!(now() + 600);
    let (status, challenge) = refused(initialize(&gateway, Some(&hs256(early))).await).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("not valid yet"), "{challenge}");

    // Expired 30 s ago: refused without leeway, accepted with 60 s of it.
    let mut late = claims("https://hs.test", "alice");
    late["exp"] = json!(now() - 30);
    let (status, challenge) = refused(initialize(&gateway, Some(&hs256(late.clone()))).await).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("has expired"), "{challenge}");
    late["iss"] = json!("https://lenient.test");
    assert_eq!(initialize(&gateway, Some(&hs256(late))).await.status(), 200);
    // Past the leeway, refused there too.
    let mut too_late = claims("https://lenient.test", "alice");
    too_late["exp"] = json!(now() - 300);
    assert_eq!(
        initialize(&gateway, Some(&hs256(too_late))).await.status(),
        401
    );

    // `scp` in place of `scope`, as a list and as a string.
    for scp in [json!(["capgate", "read"]), json!("capgate read")] {
        let mut token = claims("https://hs.test", "alice");
        token.as_object_mut().unwrap().remove("scope");
        token["scp"] = scp.clone();
        let response = initialize(&gateway, Some(&hs256(token))).await;
        assert_eq!(response.status(), 200, "scp = {scp}");
    }
    let mut without = claims("https://hs.test", "alice");
    without.as_object_mut().unwrap().remove("scope");
    without["scp"] = json!(["read"]);
    assert_eq!(
        initialize(&gateway, Some(&hs256(without))).await.status(),
        403
    );
}
