//! REST services as capabilities, against the real `capgate serve` binary
//! and a real HTTP upstream this test starts (a Petstore served by axum):
//! the published Swagger Petstore documents (OpenAPI 3.0 and 3.1) and a
//! large real-world document (Discord's, 242 operations) imported through
//! the CLI, the admin API and the configuration; their operations called
//! by the official MCP Python SDK, by a worker and over the call route;
//! credentials that never leak; SSRF refused; re-import versioning;
//! the circuit breaker; files sent as multipart parts and answered as MCP
//! content; a private CA and mutual TLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use capgate_tests::real::{RealGateway, built_binary};
use capgate_tests::*;
use serde_json::{Value, json};

use crate::observability::{sample, scrape};

const SECRET: &str = "s3cret-petstore-key-0f9a";
/// A file that is not text: a PNG signature, a NUL, bytes no UTF-8 holds.
const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\n\x00\xff\xfe raw image bytes";
const CLIENT_SECRET: &str = "oauth-client-secret-77c1";

fn document(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/openapi")
        .join(name)
}

fn read_document(name: &str) -> String {
    std::fs::read_to_string(document(name)).expect("test document")
}

/// What the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HashMap<String, String>,
    body: String,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Petstore {
    pets: Mutex<HashMap<i64, Value>>,
    seen: Mutex<Vec<Seen>>,
    tokens_issued: AtomicUsize,
    /// The upstream refuses every token issued before this count.
    revoked_before: AtomicUsize,
    failing: AtomicBool,
}

impl Petstore {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request to `path` (its query aside).
    fn last(&self, path: &str) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.uri.split('?').next() == Some(path))
            .unwrap_or_else(|| panic!("the upstream saw no request to {path}"))
    }
}

fn pet(id: i64, name: &str) -> Value {
    json!({"id": id, "name": name, "photoUrls": [], "tags": [{"id": 1, "name": "good"}], "status": "available"})
}

async fn record(
    State(store): State<Arc<Petstore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    store.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        // A header sent twice shows as both values, joined.
        headers: parts
            .headers
            .iter()
            .fold(HashMap::new(), |mut map, (k, v)| {
                let value = v.to_str().unwrap_or_default();
                map.entry(k.to_string())
                    .and_modify(|seen: &mut String| {
                        seen.push_str(", ");
                        seen.push_str(value);
                    })
                    .or_insert_with(|| value.to_owned());
                map
            }),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        bytes: bytes.to_vec(),
    });
    if store.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// The Petstore's operations the tests call, under `/api/v3` and
/// `/api/v31`, and an OAuth2 token endpoint.
async fn start_upstream() -> (SocketAddr, Arc<Petstore>) {
    let store = Arc::new(Petstore::default());
    store.pets.lock().unwrap().insert(5, pet(5, "Rex"));
    let pets = Router::new()
        .route("/pet", post(add_pet).put(add_pet))
        .route("/pet/findByTags", get(find_by_tags))
        .route("/pet/findByStatus", get(find_by_status))
        .route(
            "/pet/{pet_id}",
            get(get_pet).delete(delete_pet).post(update_with_form),
        )
        .route("/pet/{pet_id}/uploadImage", post(upload))
        .route("/store/inventory", get(inventory));
    let app = Router::new()
        .nest("/api/v3", pets.clone())
        .nest("/api/v31", pets)
        .route("/oauth/token", post(token))
        .route("/openapi/{name}", get(serve_document))
        .layer(axum::middleware::from_fn_with_state(store.clone(), record))
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, store)
}

/// The test documents, for imports by URL.
async fn serve_document(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "petstore-3.1.yaml" | "petstore-3.0.yaml" => read_document(&name).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn add_pet(State(store): State<Arc<Petstore>>, Json(mut body): Json<Value>) -> Json<Value> {
    let id = body["id"].as_i64().unwrap_or(100);
    body["id"] = json!(id);
    store.pets.lock().unwrap().insert(id, body.clone());
    Json(body)
}

async fn get_pet(State(store): State<Arc<Petstore>>, Path(pet_id): Path<i64>) -> Response {
    if pet_id == 666 {
        return (
            StatusCode::FOUND,
            [("location", "http://169.254.169.254/latest/meta-data/iam/")],
        )
            .into_response();
    }
    match store.pets.lock().unwrap().get(&pet_id) {
        Some(pet) => Json(pet.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 404, "message": format!("Pet {pet_id} not found")})),
        )
            .into_response(),
    }
}

async fn delete_pet(State(store): State<Arc<Petstore>>, Path(pet_id): Path<i64>) -> StatusCode {
    store.pets.lock().unwrap().remove(&pet_id);
    StatusCode::OK
}

async fn update_with_form(
    State(store): State<Arc<Petstore>>,
    Path(pet_id): Path<i64>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let mut pets = store.pets.lock().unwrap();
    let pet = pets.entry(pet_id).or_insert_with(|| pet(pet_id, "?"));
    if let Some(name) = query.get("name") {
        pet["name"] = json!(name);
    }
    if let Some(status) = query.get("status") {
        pet["status"] = json!(status);
    }
    Json(pet.clone())
}

async fn find_by_tags(uri: Uri) -> Json<Value> {
    // Answers what it was asked, so the test sees the query as sent.
    let query = uri.query().unwrap_or_default().to_owned();
    Json(json!([{"id": 1, "name": query, "photoUrls": []}]))
}

async fn find_by_status(Query(query): Query<HashMap<String, String>>) -> Json<Value> {
    let status = query.get("status").cloned().unwrap_or_default();
    Json(json!([{"id": 2, "name": "by status", "photoUrls": [], "status": status}]))
}

async fn upload(body: axum::body::Bytes) -> Json<Value> {
    Json(json!({"code": 200, "type": "upload", "message": format!("{} bytes", body.len())}))
}

async fn inventory(State(store): State<Arc<Petstore>>, headers: HeaderMap) -> Response {
    let issued = store.tokens_issued.load(Ordering::SeqCst);
    let revoked = store.revoked_before.load(Ordering::SeqCst);
    let valid: Vec<String> = (revoked.max(1)..=issued)
        .map(|n| format!("Bearer tok-{n}"))
        .collect();
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if valid.contains(&presented) {
        Json(json!({"available": 7, "sold": 2})).into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "token refused").into_response()
    }
}

async fn token(State(store): State<Arc<Petstore>>, headers: HeaderMap, body: String) -> Response {
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("capgate:{CLIENT_SECRET}"))
    );
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != expected || !body.contains("grant_type=client_credentials") {
        return (StatusCode::UNAUTHORIZED, "bad client").into_response();
    }
    let n = store.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 3600}))
        .into_response()
}

/// An admin API request; the JSON answer and its status.
async fn admin(
    gateway: &RealGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = http.request(method, format!("http://{}{path}", gateway.addr()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = tokio::time::timeout(HANG, request.send())
        .await
        .expect("the admin API answers")
        .expect("the admin API is reachable");
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let value = response.json().await.unwrap_or(Value::Null);
    (status, value)
}

/// An admin API `GET`'s JSON answer.
async fn admin_get(gateway: &RealGateway, path: &str) -> Value {
    admin(gateway, reqwest::Method::GET, path, None).await.1
}

async fn import(gateway: &RealGateway, body: Value) -> (StatusCode, Value) {
    admin(
        gateway,
        reqwest::Method::POST,
        "/api/v1/rest-services",
        Some(body),
    )
    .await
}

async fn call(gateway: &RealGateway, function: &str, input: Value) -> (StatusCode, Value) {
    admin(
        gateway,
        reqwest::Method::POST,
        &format!("/api/v1/call/{function}"),
        Some(input),
    )
    .await
}

/// The official Python SDK (tests/python/mcp_calls.py) listing the tools
/// and making `calls` in turn, each a tool and its arguments.
fn python_calls(gateway: &RealGateway, calls: &[(&str, Value)]) -> PythonClient {
    let url = gateway.mcp_url();
    let calls: Vec<String> = calls
        .iter()
        .flat_map(|(tool, args)| [tool.to_string(), args.to_string()])
        .collect();
    let mut args: Vec<&str> = vec![&url, "auto"];
    args.extend(calls.iter().map(String::as_str));
    PythonClient::spawn("mcp_calls.py", &args)
}

/// `capgate ARGS…` against the gateway; (success, stdout, stderr).
async fn cli(gateway: &RealGateway, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        HANG,
        tokio::process::Command::new(built_binary("capgate"))
            .args(args)
            .args(["--url", &format!("http://{}", gateway.addr())])
            .output(),
    )
    .await
    .expect("the CLI finishes")
    .expect("the CLI runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn config_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("capgate.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn the_petstore_imported_by_the_cli_is_called_by_the_python_sdk_and_a_worker_and_its_key_never_leaks()
 {
    let (upstream, store) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        r#"
[rest.credentials.petstore_key]
type = "api_key"
in = "header"
name = "api_key"
secret_env = "PETSTORE_KEY"
"#,
    );
    let gateway =
        RealGateway::start_logged(&["--config", &config], &[("PETSTORE_KEY", SECRET)], true).await;
    let base_url = format!("http://{upstream}/api/v3");
    let doc = document("petstore-3.0.yaml").display().to_string();
    let (ok, out, err) = cli(
        &gateway,
        &[
            "rest",
            "import",
            "--openapi",
            &doc,
            "--base-url",
            &base_url,
            "--namespace",
            "petstore",
            "--auth",
            "petstore_key",
            "--owner",
            "pets-team",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("petstore::get_pet_by_id"), "{out}");
    assert_eq!(out.matches(" added").count(), 19, "{out}");

    let mut client = python_calls(
        &gateway,
        &[
            ("petstore__get_pet_by_id", json!({"petId": 5})),
            (
                "petstore__add_pet",
                json!({"body": {"id": 11, "name": "Ada", "photoUrls": ["p.png"]}}),
            ),
            ("petstore__get_pet_by_id", json!({"petId": 11})),
            (
                "petstore__find_pets_by_tags",
                json!({"tags": ["good dog", "b&c"]}),
            ),
            ("petstore__find_pets_by_status", json!({"status": "sold"})),
            (
                "petstore__update_pet_with_form",
                json!({"petId": 11, "name": "Ada Lovelace", "status": "pending"}),
            ),
            (
                "petstore__delete_pet",
                json!({"petId": 11, "api_key": "an-agent-supplied-key"}),
            ),
            ("petstore__get_pet_by_id", json!({"petId": 11})),
            ("petstore__get_pet_by_id", json!({"petId": "eleven"})),
            (
                "petstore__upload_file",
                json!({"petId": 5, "body": BASE64.encode(IMAGE)}),
            ),
        ],
    );
    let tools = client.next().await;
    let names = tools["names"].as_array().unwrap();
    assert_eq!(names.len(), 19, "{tools}");
    let get = &tools["tools"]["petstore__get_pet_by_id"];
    assert_eq!(get["annotations"]["readOnlyHint"], true, "{get}");
    assert_eq!(get["input"]["required"], json!(["petId"]), "{get}");
    assert_eq!(
        tools["tools"]["petstore__delete_pet"]["annotations"]["destructiveHint"],
        true
    );

    let rex = client.next().await;
    assert_eq!(rex["is_error"], false, "{rex}");
    assert_eq!(rex["structured"]["name"], "Rex", "{rex}");
    let added = client.next().await;
    assert_eq!(added["structured"]["name"], "Ada", "{added}");
    let ada = client.next().await;
    assert_eq!(ada["structured"]["photoUrls"], json!(["p.png"]), "{ada}");
    // An array result has no structuredContent (MCP's is an object): its text is the JSON.
    let array = |event: &Value| -> Value {
        serde_json::from_str(event["text"].as_str().unwrap_or_default()).unwrap_or(Value::Null)
    };
    let tags = client.next().await;
    assert_eq!(
        array(&tags)[0]["name"],
        "tags=good%20dog&tags=b%26c",
        "form style, exploded, encoded: {tags}"
    );
    let by_status = client.next().await;
    assert_eq!(array(&by_status)[0]["status"], "sold", "{by_status}");
    let renamed = client.next().await;
    assert_eq!(renamed["structured"]["name"], "Ada Lovelace", "{renamed}");
    let deleted = client.next().await;
    assert_eq!(deleted["is_error"], false, "{deleted}");
    let delete_seen = store.last("/api/v3/pet/11");
    let delete_seen = store
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.method == "DELETE")
        .unwrap_or(delete_seen);
    assert_eq!(
        delete_seen.headers.get("api_key").map(String::as_str),
        Some(SECRET),
        "the credential, not the agent's value, reaches the upstream"
    );
    let gone = client.next().await;
    assert_eq!(gone["is_error"], true, "{gone}");
    assert!(
        gone["text"]
            .as_str()
            .unwrap()
            .contains("answered 404 Not Found")
            && gone["text"].as_str().unwrap().contains("Pet 11 not found"),
        "{gone}"
    );
    let bad = client.next().await;
    assert_eq!(bad["is_error"], true, "{bad}");
    assert!(
        bad["text"].as_str().unwrap().contains("invalid input"),
        "{bad}"
    );
    let upload = client.next().await;
    assert_eq!(
        upload["structured"]["message"],
        format!("{} bytes", IMAGE.len()),
        "{upload}"
    );
    assert_eq!(client.next().await["event"], "closed");
    let (ok, stderr) = client.finish().await;
    assert!(ok, "{stderr}");

    // Every request carried the key; the caller's trace context travels on.
    let get_seen = store.last("/api/v3/pet/5");
    assert_eq!(
        get_seen.headers.get("api_key").map(String::as_str),
        Some(SECRET)
    );
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let traced = http
        .post(format!(
            "http://{}/api/v1/call/petstore::get_pet_by_id",
            gateway.addr()
        ))
        .header("traceparent", traceparent)
        .header("baggage", "tenant=acme")
        .json(&json!({"petId": 5}))
        .send()
        .await
        .unwrap();
    assert!(traced.status().is_success());
    let traced_seen = store.last("/api/v3/pet/5");
    assert_eq!(
        traced_seen.headers.get("traceparent").map(String::as_str),
        Some(traceparent)
    );
    assert_eq!(
        traced_seen.headers.get("baggage").map(String::as_str),
        Some("tenant=acme")
    );
    // The file's bytes, not their base64, whatever bytes they are.
    let upload_seen = store.last("/api/v3/pet/5/uploadImage");
    assert_eq!(upload_seen.bytes, IMAGE);
    assert_eq!(
        upload_seen.headers.get("content-type").map(String::as_str),
        Some("application/octet-stream")
    );

    // A worker calls the same capability.
    let worker = capgate_sdk::Worker::builder(gateway.worker_url())
        .name("caller")
        .connect()
        .await
        .expect("the worker connects");
    let answer = worker
        .call("petstore::get_pet_by_id", json!({"petId": 5}))
        .await
        .expect("the worker's call succeeds");
    assert_eq!(answer["name"], "Rex");

    // The secret is nowhere an agent or operator can read.
    let audit = admin_get(&gateway, "/api/v1/audit?limit=1000").await;
    let services = admin_get(&gateway, "/api/v1/rest-services").await;
    let functions = admin_get(
        &gateway,
        "/api/v1/functions?include_offline=true&include_deprecated=true&limit=100",
    )
    .await;
    assert_eq!(
        services["services"][0]["auth"], "petstore_key",
        "{services}"
    );
    assert!(
        audit.to_string().contains("petstore::get_pet_by_id"),
        "{audit}"
    );
    let log = gateway.log();
    assert!(
        log.contains("REST service imported"),
        "the log was captured: {log}"
    );
    for (what, text) in [
        ("audit", audit.to_string()),
        ("services", services.to_string()),
        ("functions", functions.to_string()),
        ("log", log),
        ("tools", tools.to_string()),
    ] {
        assert!(!text.contains(SECRET), "the secret appears in the {what}");
    }
}

#[tokio::test]
async fn the_3_1_petstore_and_a_large_real_document_import_over_the_admin_api() {
    let (upstream, _store) = start_upstream().await;
    let gateway = RealGateway::start().await;
    // Fetched by the gateway from the URL, through the same address rules.
    let (status, report) = import(
        &gateway,
        json!({"namespace": "pets31", "base_url": format!("http://{upstream}/api/v31"),
               "openapi_url": format!("http://{upstream}/openapi/petstore-3.1.yaml")}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(report["api_version"], "1.0.10-SNAPSHOT", "{report}");
    assert_eq!(
        report["operations"][0]["version"], "1.0.10-SNAPSHOT",
        "{report}"
    );
    let (status, pet) = call(&gateway, "pets31::get_pet_by_id", json!({"petId": 5})).await;
    assert_eq!(status, StatusCode::OK, "{pet}");
    assert_eq!(pet["name"], "Rex");
    let (status, refused) = call(&gateway, "pets31::get_pet_by_id", json!({"petId": 10})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "exclusiveMaximum of 3.1: {refused}"
    );

    let (status, report) = import(
        &gateway,
        // The document as a JSON object rather than text.
        json!({"namespace": "discord", "base_url": "https://discord.com/api/v10",
               "openapi": serde_json::from_str::<Value>(&read_document("discord-10.json")).unwrap()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    let operations = report["operations"].as_array().unwrap();
    assert_eq!(
        operations.len() + report["skipped"].as_array().unwrap().len(),
        242
    );
    assert!(
        operations.iter().all(|op| op["version"] == "10.0.0"),
        "{report}"
    );
    let listed = admin_get(&gateway, "/api/v1/rest-services").await;
    let namespaces: Vec<&str> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["discord", "pets31"]);
    let client = legacy_client(&gateway.mcp_url()).await;
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(
        tools.len(),
        operations.len() + 6,
        "every imported operation is a tool"
    );
    client.cancel().await.ok();
    // The official Python SDK reads every page of those tools (its models
    // validate each tool's schemas and annotations).
    let mut python = PythonClient::spawn("mcp_calls.py", &[&gateway.mcp_url(), "auto"]);
    let listed = python.next().await;
    assert_eq!(
        listed["names"].as_array().map(Vec::len),
        Some(operations.len() + 6),
        "{}",
        listed["names"]
    );
    assert_eq!(python.next().await["event"], "closed");
    let (ok, stderr) = python.finish().await;
    assert!(ok, "{stderr}");
}

#[tokio::test]
async fn bad_documents_are_refused_with_clear_errors_and_nothing_is_registered() {
    let gateway = RealGateway::start().await;
    let op = r#"{"get": {"operationId": "getThing", "responses": {"200": {"description": "ok"}}}}"#;
    let minimal = |paths: &str, components: &str| {
        format!(
            r#"{{"openapi": "3.1.0", "info": {{"title": "t", "version": "1"}}, "paths": {paths}, "components": {components}}}"#
        )
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!("openapi: [this is: not yaml"),
            "neither JSON nor YAML",
        ),
        (json!(minimal("{}", "{}")), "no paths"),
        (
            json!(minimal(
                r##"{"/a": {"get": {"operationId": "a", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}}}}}"##,
                r##"{"schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}}}"##
            )),
            "cycle",
        ),
        (
            json!(minimal(&format!(r#"{{"/a": {op}, "/b": {op}}}"#), "{}")),
            "both become function bad::get_thing",
        ),
        (
            json!("swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {}"),
            "is not supported",
        ),
        (
            json!(format!(
                r#"{{"openapi": "3.1.0", "info": {{"title": "t", "version": "1", "description": "{}"}}, "paths": {{"/a": {op}}}}}"#,
                "x".repeat(10 * 1024 * 1024)
            )),
            "over the limit",
        ),
    ];
    for (openapi, expected) in cases {
        let (status, answer) = import(
            &gateway,
            json!({"namespace": "bad", "base_url": "https://api.example.com", "openapi": openapi}),
        )
        .await;
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::PAYLOAD_TOO_LARGE,
            "{status}: {answer}"
        );
        assert!(
            message.contains(expected),
            "expected '{expected}' in: {answer}"
        );
    }
    for (body, expected) in [
        (
            json!({"namespace": "bad", "base_url": "https://x.example"}),
            "document is missing",
        ),
        (json!({"namespace": "bad"}), "base_url"),
        (
            json!({"namespace": "bad", "base_url": "u", "openapi": "x", "extra": 1}),
            "extra",
        ),
        (
            json!({"namespace": "Bad NS", "base_url": "https://x.example", "openapi": minimal(&format!(r#"{{"/a": {op}}}"#), "{}")}),
            "segment",
        ),
        (
            json!({"namespace": "ok", "base_url": "https://x.example", "auth": "nope", "openapi": minimal(&format!(r#"{{"/a": {op}}}"#), "{}")}),
            "credential 'nope' is not configured",
        ),
    ] {
        let (status, answer) = import(&gateway, body).await;
        assert!(status.is_client_error(), "{status}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "expected '{expected}' in: {answer}"
        );
    }
    // Not JSON, and over the request limit: JSON errors too.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/api/v1/rest-services", gateway.addr());
    let not_json = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), reqwest::StatusCode::BAD_REQUEST);
    let body: Value = not_json.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("send {\"namespace\""),
        "{body}"
    );
    let huge = http
        .post(&url)
        .header("content-type", "application/json")
        .body(format!(
            "{{\"openapi\": \"{}\"}}",
            "x".repeat(17 * 1024 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let (status, missing) = import(
        &gateway,
        json!({"namespace": "bad", "base_url": "https://x.example", "openapi_url": "http://169.254.169.254/openapi.json"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{missing}");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cloud metadata"),
        "{missing}"
    );
    let services = admin_get(&gateway, "/api/v1/rest-services").await;
    assert_eq!(services["services"], json!([]));
    let functions = admin_get(
        &gateway,
        "/api/v1/functions?include_offline=true&include_deprecated=true",
    )
    .await;
    assert!(functions["functions"].is_array(), "{functions}");
    assert!(!functions.to_string().contains("bad::"), "{functions}");
}

#[tokio::test]
async fn upstreams_at_internal_addresses_are_refused_however_they_are_spelled() {
    let (upstream, _store) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        r#"
[rest]
max_response_bytes = 4096

[rest.hosts]
"internal.test" = ["10.0.0.7"]
"metadata.test" = ["::ffff:169.254.169.254"]
"#,
    );
    let gateway = RealGateway::start_with(&["--config", &config]).await;
    let doc = read_document("petstore-3.0.yaml");
    for base_url in [
        "http://169.254.169.254/latest",
        "http://2852039166/",
        "http://0251.0376.0251.0376/",
        "http://0xa9fea9fe/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://10.1.2.3/api",
        "file:///etc/passwd",
        "gopher://example.com/",
    ] {
        let (status, answer) = import(
            &gateway,
            json!({"namespace": "ssrf", "base_url": base_url, "openapi": doc, "include": ["getPetById"]}),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{base_url}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("refuses it") || message.contains("not an http or https URL"),
            "{base_url}: {message}"
        );
    }
    // Names are checked at connect time, on the addresses they resolve to.
    for (namespace, host, expected) in [
        (
            "internal",
            "internal.test",
            "internal.test resolves to 10.0.0.7, which is private",
        ),
        ("metadata", "metadata.test", "IPv4-mapped"),
    ] {
        let (status, answer) = import(
            &gateway,
            json!({"namespace": namespace, "base_url": format!("http://{host}:8080/api"), "openapi": doc, "include": ["getPetById"]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        let (status, error) = call(
            &gateway,
            &format!("{namespace}::get_pet_by_id"),
            json!({"petId": 5}),
        )
        .await;
        assert!(
            status.is_server_error() || status.is_client_error(),
            "{error}"
        );
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{message}");
    }
    // A redirect is an answer, never followed (here: to the metadata service).
    let (status, answer) = import(
        &gateway,
        json!({"namespace": "petstore", "base_url": format!("http://{upstream}/api/v3"), "openapi": doc, "include": ["getPetById", "findPetsByTags"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (_, error) = call(&gateway, "petstore::get_pet_by_id", json!({"petId": 666})).await;
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("302 Found (redirects are not followed"),
        "{error}"
    );
    // An answer over max_response_bytes fails the call rather than filling memory.
    let (_, error) = call(
        &gateway,
        "petstore::find_pets_by_tags",
        json!({"tags": ["x".repeat(5000)]}),
    )
    .await;
    assert!(
        error.to_string().contains("answered more than 4096 bytes"),
        "{error}"
    );
    let (status, small) = call(
        &gateway,
        "petstore::find_pets_by_tags",
        json!({"tags": ["x"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{small}");
    // Path parameters cannot climb out of their segment.
    let (status, answer) = import(
        &gateway,
        json!({"namespace": "petstore", "base_url": format!("http://{upstream}/api/v3"), "openapi": doc, "include": ["getPetById", "findPetsByTags", "getUserByName"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, error) = call(
        &gateway,
        "petstore::get_user_by_name",
        json!({"username": ".."}),
    )
    .await;
    assert!(
        error.to_string().contains("may not be '.' or '..'"),
        "{error}"
    );
}

fn small_document(version: &str, first_query: bool, with_second: bool) -> String {
    let first_params = if first_query {
        r#""parameters": [{"name": "verbose", "in": "query", "schema": {"type": "boolean"}}],"#
    } else {
        ""
    };
    let second = if with_second {
        r#", "/pet/findByStatus": {"get": {"operationId": "listPets", "responses": {"200": {"description": "ok"}}}}"#
    } else {
        ""
    };
    format!(
        r#"{{"openapi": "3.0.3", "info": {{"title": "Small", "version": "{version}"}}, "paths": {{
            "/pet/{{petId}}": {{"get": {{"operationId": "getPet", {first_params}
                "responses": {{"200": {{"description": "ok", "content": {{"application/json": {{"schema": {{"type": "object"}}}}}}}}}}}},
                "parameters": [{{"name": "petId", "in": "path", "required": true, "schema": {{"type": "integer"}}}}]}}
            {second}}}}}"#
    )
}

#[tokio::test]
async fn a_reimport_versions_changed_operations_deprecates_removed_ones_and_survives_a_crash() {
    let (upstream, _store) = start_upstream().await;
    let mut gateway = RealGateway::start().await;
    let base_url = format!("http://{upstream}/api/v3");
    let request = |doc: String| json!({"namespace": "small", "base_url": base_url, "openapi": doc});
    let (status, first) = import(&gateway, request(small_document("1.2", false, true))).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["operations"][0]["version"], "1.2.0");
    // The same document again: nothing changes.
    let (status, again) = import(&gateway, request(small_document("1.2", false, true))).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert!(
        again["operations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|op| op["change"] == "unchanged"),
        "{again}"
    );
    // getPet changed, listPets removed, info.version unchanged.
    let (status, changed) = import(&gateway, request(small_document("1.2", true, false))).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        changed["operations"],
        json!([{"function": "small::get_pet", "version": "1.2.1", "route": "GET /pet/{petId}", "change": "new_version"}])
    );
    assert_eq!(
        changed["deprecated"],
        json!(["small::get_pet@1.2.0", "small::list_pets@1.2.0"])
    );
    let shown = admin_get(&gateway, "/api/v1/functions/small::get_pet").await;
    let old = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "1.2.0")
        .unwrap()
        .clone();
    assert_eq!(
        old["definition"]["deprecation"]["replacement"], "small::get_pet@=1.2.1",
        "{shown}"
    );
    let new = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "1.2.1")
        .unwrap()
        .clone();
    assert_eq!(new["providers"], json!(["rest:small"]), "{shown}");
    assert_eq!(
        old["live"], false,
        "the replaced version is offline: {shown}"
    );
    let (status, pet) = call(
        &gateway,
        "small::get_pet",
        json!({"petId": 5, "verbose": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pet}");
    let (status, gone) = call(&gateway, "small::list_pets", json!({})).await;
    assert!(
        !status.is_success(),
        "a removed operation is offline: {gone}"
    );

    // The service's namespace is its own: a worker may not add a version
    // beside its operations or a function among them (which would also
    // make the next import refuse the namespace as taken), and may use a
    // namespace that only begins alike.
    let worker = capgate_sdk::Worker::builder(gateway.worker_url())
        .name("squatter")
        .connect()
        .await
        .expect("the worker connects");
    let function = |id: &str| {
        capgate_sdk::Function::new(id)
            .version("9.0.0")
            .handler(|_, _| async { Ok(json!({"name": "forged"})) })
    };
    for id in ["small::get_pet", "small::extra"] {
        let rejections = register_and_collect_rejections(&worker, function(id)).await;
        assert_eq!(rejections.len(), 1, "{id}: {rejections:?}");
        assert_eq!(rejections[0].code, "FUNCTION_NAMESPACE_CONFLICT");
        let message = rejections[0].message.as_deref().unwrap_or_default();
        assert!(
            message.contains("REST service imported as 'small'")
                && message.contains("capgate rest remove small"),
            "{message}"
        );
    }
    // Nor may an operator declare a version there.
    let (status, refused) = admin(
        &gateway,
        reqwest::Method::POST,
        "/api/v1/functions",
        Some(json!({"id": "small::declared", "version": "1.0.0"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("REST service imported as 'small'")),
        "{refused}"
    );
    let rejections = register_and_collect_rejections(&worker, function("smaller::x")).await;
    assert!(rejections.is_empty(), "{rejections:?}");
    let (status, pet) = call(&gateway, "small::get_pet", json!({"petId": 5})).await;
    assert_eq!(status, StatusCode::OK, "{pet}");
    assert_eq!(pet["name"], "Rex", "still the upstream's answer");
    let (status, again) = import(&gateway, request(small_document("1.2", true, false))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the namespace is still free: {again}"
    );
    worker.shutdown();

    // SIGKILL right after the answer: the service and its versions are kept.
    gateway.crash_and_restart().await;
    let (status, pet) = call(&gateway, "small::get_pet", json!({"petId": 5})).await;
    assert_eq!(status, StatusCode::OK, "restored after the crash: {pet}");
    assert_eq!(pet["name"], "Rex");
    let shown = admin_get(&gateway, "/api/v1/rest-services/small").await;
    assert_eq!(
        shown["operations"],
        json!([{"function": "small::get_pet", "version": "1.2.1", "route": "GET /pet/{petId}", "change": "live"}])
    );
    // A new info.version is the version of every operation.
    let (_, bumped) = import(&gateway, request(small_document("2.0.0", true, true))).await;
    let versions: Vec<&str> = bumped["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2.0.0", "2.0.0"], "{bumped}");
    // Removal deprecates what is left and is kept too.
    let (ok, out, err) = cli(&gateway, &["rest", "remove", "small"]).await;
    assert!(ok, "{out}{err}");
    gateway.crash_and_restart().await;
    let services = admin_get(&gateway, "/api/v1/rest-services").await;
    assert_eq!(services["services"], json!([]));
    let (status, _) = call(&gateway, "small::get_pet", json!({"petId": 5})).await;
    assert!(!status.is_success());
}

#[tokio::test]
async fn oauth2_client_credentials_are_fetched_reused_and_refreshed_by_capgate() {
    let (upstream, store) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!(
            r#"
[rest.credentials.petstore_oauth]
type = "oauth2_client_credentials"
token_url = "http://{upstream}/oauth/token"
client_id = "capgate"
secret_env = "PETSTORE_CLIENT_SECRET"
scopes = ["read:inventory"]
"#
        ),
    );
    let gateway = RealGateway::start_logged(
        &["--config", &config],
        &[("PETSTORE_CLIENT_SECRET", CLIENT_SECRET)],
        true,
    )
    .await;
    let (status, answer) = import(
        &gateway,
        json!({"namespace": "shop", "base_url": format!("http://{upstream}/api/v3"), "auth": "petstore_oauth",
               "openapi": read_document("petstore-3.0.yaml"), "include": ["getInventory"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    for _ in 0..2 {
        let (status, inventory) = call(&gateway, "shop::get_inventory", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{inventory}");
        assert_eq!(inventory["available"], 7);
    }
    assert_eq!(
        store.tokens_issued.load(Ordering::SeqCst),
        1,
        "the token is reused"
    );
    let token_request = store.last("/oauth/token");
    assert!(
        token_request.body.contains("scope=read%3Ainventory"),
        "{token_request:?}"
    );
    // The upstream stops accepting the token: capgate fetches a new one once.
    store.revoked_before.store(2, Ordering::SeqCst);
    let (status, inventory) = call(&gateway, "shop::get_inventory", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{inventory}");
    assert_eq!(store.tokens_issued.load(Ordering::SeqCst), 2);
    assert_eq!(
        store.last("/api/v3/store/inventory").headers["authorization"],
        "Bearer tok-2"
    );
    let log = gateway.log();
    assert!(
        !log.contains(CLIENT_SECRET) && !log.contains("tok-2"),
        "no secret in the log"
    );
}

#[tokio::test]
async fn a_failing_upstream_opens_its_circuit_and_the_listing_shows_it() {
    let (upstream, store) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        "[rest]\nbreaker_threshold = 4\nbreaker_cooldown_ms = 60000\n",
    );
    let gateway = RealGateway::start_with(&["--config", &config]).await;
    let (status, answer) = import(
        &gateway,
        json!({"namespace": "petstore", "base_url": format!("http://{upstream}/api/v3"),
               "openapi": read_document("petstore-3.0.yaml"), "include": ["getPetById", "addPet"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let base = format!("http://{}", gateway.addr());
    let circuit = |metrics: &prometheus_parse::Scrape, state: &str| {
        sample(
            metrics,
            "capgate_rest_circuit_state",
            &[("service", "petstore"), ("state", state)],
        )
    };
    let metrics = scrape(&base).await;
    assert_eq!(circuit(&metrics, "closed"), 1.0);
    assert_eq!(circuit(&metrics, "open"), 0.0);
    store.failing.store(true, Ordering::SeqCst);
    let before = store.seen().len();
    // A GET is retried (idempotent): three attempts of this call reach the upstream.
    let (_, error) = call(&gateway, "petstore::get_pet_by_id", json!({"petId": 5})).await;
    assert!(
        error.to_string().contains("503 Service Unavailable"),
        "{error}"
    );
    assert_eq!(
        store.seen().len() - before,
        3,
        "an idempotent call is retried"
    );
    // A POST is not.
    let (_, error) = call(
        &gateway,
        "petstore::add_pet",
        json!({"body": {"name": "x", "photoUrls": []}}),
    )
    .await;
    assert!(error.to_string().contains("503"), "{error}");
    assert_eq!(store.seen().len() - before, 4, "a POST is sent once");
    let listed = admin_get(&gateway, "/api/v1/rest-services").await;
    assert_eq!(
        listed["services"][0]["breaker"]["state"], "open",
        "{listed}"
    );
    let (_, error) = call(&gateway, "petstore::get_pet_by_id", json!({"petId": 5})).await;
    assert!(error.to_string().contains("circuit is open"), "{error}");
    assert_eq!(
        store.seen().len() - before,
        4,
        "an open circuit sends nothing"
    );
    let (ok, out, err) = cli(&gateway, &["rest", "list"]).await;
    assert!(ok && out.contains("open"), "{out}{err}");
    let metrics = scrape(&base).await;
    assert_eq!(circuit(&metrics, "open"), 1.0);
    assert_eq!(circuit(&metrics, "closed"), 0.0);
    assert_eq!(circuit(&metrics, "half_open"), 0.0);
}

#[tokio::test]
async fn configured_services_are_imported_at_start_and_changed_only_in_the_configuration() {
    let (upstream, _store) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        document("petstore-3.0.yaml"),
        dir.path().join("petstore.yaml"),
    )
    .unwrap();
    let config = config_file(
        &dir,
        &format!(
            r#"
[[rest_services]]
namespace = "petstore"
openapi = "petstore.yaml"
base_url = "http://{upstream}/api/v3"
include = ["getPetById", "findPetsByStatus"]
"#
        ),
    );
    let mut gateway = RealGateway::start_with(&["--config", &config]).await;
    let (status, pet) = call(&gateway, "petstore::get_pet_by_id", json!({"petId": 5})).await;
    assert_eq!(status, StatusCode::OK, "{pet}");
    let (status, refused) = admin(
        &gateway,
        reqwest::Method::DELETE,
        "/api/v1/rest-services/petstore",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("capgate.toml")
    );
    let (ok, out, err) = cli(&gateway, &["rest", "show", "petstore"]).await;
    assert!(
        ok && out.contains("petstore::find_pets_by_status"),
        "{out}{err}"
    );

    // Taken out of the configuration: at the next start its versions are
    // deprecated, as `capgate rest remove` would, not left offline.
    std::fs::write(&config, "# no REST services\n").unwrap();
    gateway.crash_and_restart().await;
    let services = admin_get(&gateway, "/api/v1/rest-services").await;
    assert_eq!(services["services"], json!([]), "{services}");
    for function in ["petstore::get_pet_by_id", "petstore::find_pets_by_status"] {
        let shown = admin_get(&gateway, &format!("/api/v1/functions/{function}")).await;
        let versions = shown["versions"].as_array().expect("its versions are kept");
        assert!(!versions.is_empty(), "{shown}");
        for version in versions {
            assert_eq!(
                version["definition"]["deprecation"]["reason"],
                "its REST service was removed from the configuration",
                "{shown}"
            );
            assert_eq!(version["live"], false, "{shown}");
        }
    }

    // A configuration naming a credential it does not define does not start.
    let bad = config_file(
        &dir,
        &format!(
            "[[rest_services]]\nnamespace = \"p\"\nopenapi = \"petstore.yaml\"\nbase_url = \"http://{upstream}/\"\nauth = \"missing\"\n"
        ),
    );
    let stderr = refused_start(&bad, &dir.path().join("data")).await;
    assert!(
        stderr.contains("credential 'missing' is not configured"),
        "{stderr}"
    );

    // Nor does one that declares a version in a configured service's namespace.
    let squatting = config_file(
        &dir,
        &format!(
            "[[rest_services]]\nnamespace = \"p\"\nopenapi = \"petstore.yaml\"\nbase_url = \"http://{upstream}/api/v3\"\ninclude = [\"getPetById\"]\n\n[[capabilities]]\nid = \"p::declared\"\nversion = \"1.0.0\"\n"
        ),
    );
    let squatted = tempfile::tempdir().unwrap();
    let stderr = refused_start(&squatting, squatted.path()).await;
    assert!(
        stderr.contains("declares p::declared@1.0.0")
            && stderr.contains("REST service imported as 'p'"),
        "{stderr}"
    );
    // The refused start left nothing behind: without the declaration the
    // same data directory starts, the service's namespace holds its
    // operations only, and its operation answers.
    let fixed = config_file(
        &dir,
        &format!(
            "[[rest_services]]\nnamespace = \"p\"\nopenapi = \"petstore.yaml\"\nbase_url = \"http://{upstream}/api/v3\"\ninclude = [\"getPetById\"]\n"
        ),
    );
    let gateway = RealGateway::start_in(squatted, &["--config", &fixed], &[], false).await;
    let listed = admin_get(&gateway, "/api/v1/functions").await;
    let ids: Vec<&str> = listed["functions"]
        .as_array()
        .expect("a list of functions")
        .iter()
        .filter_map(|function| function["id"].as_str())
        .collect();
    assert_eq!(ids, ["p::get_pet_by_id"], "{listed}");
    let (status, pet) = call(&gateway, "p::get_pet_by_id", json!({"petId": 5})).await;
    assert_eq!(status, StatusCode::OK, "{pet}");
}

/// `capgate serve --config CONFIG`, which must refuse to start (within
/// [`HANG`], not serve): its stderr.
async fn refused_start(config: &str, data_dir: &std::path::Path) -> String {
    let starting = tokio::process::Command::new(built_binary("capgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config,
            "--data-dir",
        ])
        .arg(data_dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(HANG, starting)
        .await
        .expect("the gateway refuses to start instead of serving")
        .expect("capgate runs");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn who_may_import_and_call_a_rest_service_is_policy() {
    let (upstream, store) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.csv"),
        "p, agent:anonymous, *, petstore::get_pet_by_id, call, allow\np, agent:anonymous, *, functions, admin, allow\n",
    )
    .unwrap();
    let config = config_file(
        &dir,
        "[policies]\nfiles = [\"policy.csv\"]\nwatch = false\n",
    );
    let gateway = RealGateway::start_with(&["--config", &config]).await;
    let request = json!({"namespace": "petstore", "base_url": format!("http://{upstream}/api/v3"),
        "openapi": read_document("petstore-3.0.yaml"), "include": ["getPetById", "deletePet"]});
    let (status, refused) = import(&gateway, request.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rest_services"),
        "{refused}"
    );
    std::fs::write(
        dir.path().join("policy.csv"),
        "p, agent:anonymous, *, petstore::get_pet_by_id, call, allow\np, agent:anonymous, *, rest_services, admin, allow\np, agent:anonymous, *, audit, admin, allow\n",
    )
    .unwrap();
    let (status, reloaded) = admin(
        &gateway,
        reqwest::Method::POST,
        "/api/v1/policies/reload",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "reload needs its own rule: {reloaded}"
    );
    drop(gateway);
    let gateway = RealGateway::start_with(&["--config", &config]).await;
    let (status, report) = import(&gateway, request).await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    let (status, pet) = call(&gateway, "petstore::get_pet_by_id", json!({"petId": 5})).await;
    assert_eq!(status, StatusCode::OK, "{pet}");
    let before = store.seen().len();
    let (status, denied) = call(&gateway, "petstore::delete_pet", json!({"petId": 5})).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a denial reads as unknown: {denied}"
    );
    assert_eq!(store.seen().len(), before, "nothing reached the upstream");
    let mut client = PythonClient::spawn("mcp_calls.py", &[&gateway.mcp_url(), "auto"]);
    let tools = client.next().await;
    assert_eq!(
        tools["names"],
        json!(["petstore__get_pet_by_id"]),
        "{tools}"
    );
    let audit = admin_get(&gateway, "/api/v1/audit?kind=rest_service").await;
    assert_eq!(audit["entries"][0]["action"], "import", "{audit}");
    assert_eq!(audit["entries"][0]["object"], "petstore", "{audit}");
}

#[tokio::test]
async fn bearer_basic_and_query_key_credentials_reach_the_upstream_as_configured() {
    let (upstream, store) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        r#"
[rest.credentials.bearer]
type = "bearer"
secret_env = "UPSTREAM_TOKEN"

[rest.credentials.basic]
type = "basic"
username = "capgate"
secret_env = "UPSTREAM_PASSWORD"

[rest.credentials.query_key]
type = "api_key"
in = "query"
name = "key"
secret_env = "UPSTREAM_KEY"
"#,
    );
    let gateway = RealGateway::start_logged(
        &["--config", &config],
        &[
            ("UPSTREAM_TOKEN", "tok-bearer-9f"),
            ("UPSTREAM_PASSWORD", "pw-basic-3c"),
            ("UPSTREAM_KEY", "key-query-7a"),
        ],
        true,
    )
    .await;
    for (namespace, auth) in [("a", "bearer"), ("b", "basic"), ("c", "query_key")] {
        let (status, answer) = import(
            &gateway,
            json!({"namespace": namespace, "base_url": format!("http://{upstream}/api/v3"), "auth": auth,
                   "openapi": read_document("petstore-3.0.yaml"), "include": ["getPetById"]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        let (status, pet) = call(
            &gateway,
            &format!("{namespace}::get_pet_by_id"),
            json!({"petId": 5}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{pet}");
    }
    let seen: Vec<Seen> = store
        .seen()
        .into_iter()
        .filter(|s| s.uri.starts_with("/api/v3/pet/5"))
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].headers["authorization"], "Bearer tok-bearer-9f");
    assert_eq!(
        seen[1].headers["authorization"],
        "Basic Y2FwZ2F0ZTpwdy1iYXNpYy0zYw=="
    );
    assert_eq!(seen[2].uri, "/api/v3/pet/5?key=key-query-7a");
    assert!(!seen[2].headers.contains_key("authorization"));
    // A failed request's error never quotes the URL that carries the key.
    store.failing.store(true, Ordering::SeqCst);
    let (_, error) = call(&gateway, "c::get_pet_by_id", json!({"petId": 5})).await;
    assert!(error.to_string().contains("503"), "{error}");
    let log = gateway.log();
    for secret in [
        "tok-bearer-9f",
        "pw-basic-3c",
        "key-query-7a",
        "Y2FwZ2F0ZTpwdy1iYXNpYy0zYw",
    ] {
        assert!(!error.to_string().contains(secret), "{error}");
        assert!(!log.contains(secret), "{secret} is in the log");
    }
    // A closed port: the error names the service, not the URL.
    let (status, answer) = import(
        &gateway,
        json!({"namespace": "d", "base_url": "http://127.0.0.1:9/api", "auth": "query_key",
               "openapi": read_document("petstore-3.0.yaml"), "include": ["getPetById"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (_, error) = call(&gateway, "d::get_pet_by_id", json!({"petId": 5})).await;
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the REST service d could not be reached"),
        "{error}"
    );
    assert!(!message.contains("key-query-7a"), "{error}");
}

/// Every part of a `multipart/form-data` body as a real parser reads it
/// (multer, which axum's `Multipart` uses): name, filename, content type,
/// bytes.
type Parts = Vec<(String, Option<String>, Option<String>, Vec<u8>)>;

async fn read_parts(headers: &HeaderMap, body: axum::body::Bytes) -> Result<Parts, String> {
    let content_type = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .ok_or("no content type")?;
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let bytes = field.bytes().await.map_err(|e| e.to_string())?;
        parts.push((name, filename, content_type, bytes.to_vec()));
    }
    Ok(parts)
}

/// What a Discord-shaped upstream was sent: the route and its parts.
type Uploads = Arc<Mutex<Vec<(String, Parts)>>>;

/// The parts of a request, kept in `uploads` under `what`; a body that is
/// not multipart is answered 400.
async fn recorded(
    uploads: &Uploads,
    what: String,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Result<Parts, Response> {
    let parts = read_parts(headers, body)
        .await
        .map_err(|error| (StatusCode::BAD_REQUEST, error).into_response())?;
    uploads.lock().unwrap().push((what, parts.clone()));
    Ok(parts)
}

/// Discord's two operations whose bodies are only `multipart/form-data`,
/// answering as its document says they answer.
async fn start_upload_upstream() -> (SocketAddr, Uploads) {
    async fn attachment(
        State(uploads): State<Uploads>,
        Path(id): Path<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Result<Response, Response> {
        let parts = recorded(&uploads, format!("attachment {id}"), &headers, body).await?;
        let Some((_, filename, _, bytes)) = parts.into_iter().find(|part| part.0 == "file") else {
            return Err((StatusCode::BAD_REQUEST, "no file part").into_response());
        };
        Ok(Json(json!({"attachment": {"id": "9", "filename": filename.unwrap_or_default(),
            "size": bytes.len(), "url": "https://cdn.example/9", "proxy_url": "https://media.example/9"}}))
        .into_response())
    }
    async fn sticker(
        State(uploads): State<Uploads>,
        Path(guild): Path<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Result<Response, Response> {
        let parts = recorded(&uploads, format!("sticker {guild}"), &headers, body).await?;
        let text = |name: &str| {
            parts
                .iter()
                .find(|part| part.0 == name)
                .map(|part| String::from_utf8_lossy(&part.3).into_owned())
        };
        let answer = json!({"id": "11", "name": text("name"), "tags": text("tags"), "type": 2,
            "format_type": null, "description": text("description"), "available": true, "guild_id": guild});
        Ok((StatusCode::CREATED, Json(answer)).into_response())
    }
    let uploads = Uploads::default();
    let app = Router::new()
        .route("/api/v10/applications/{id}/attachment", post(attachment))
        .route("/api/v10/guilds/{guild}/stickers", post(sticker))
        .with_state(uploads.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, uploads)
}

#[tokio::test]
async fn files_reach_the_upstream_as_multipart_parts_whatever_their_bytes() {
    let (upstream, uploads) = start_upload_upstream().await;
    let gateway = RealGateway::start().await;
    let (status, report) = import(
        &gateway,
        json!({"namespace": "discord", "base_url": format!("http://{upstream}/api/v10"),
               "openapi": read_document("discord-10.json"),
               "include": ["upload_application_attachment", "create_guild_sticker"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(
        report["operations"].as_array().unwrap().len(),
        2,
        "{report}"
    );

    // Every byte value, and text that would break a part's headers.
    let sticker_file: Vec<u8> = (0..=255u8).rev().collect();
    let description = "a \"quoted\" line\r\n--and another";
    let mut python = python_calls(
        &gateway,
        &[
            (
                "discord__upload_application_attachment",
                json!({"application_id": "42", "body": {"file": BASE64.encode(IMAGE)}}),
            ),
            (
                "discord__create_guild_sticker",
                json!({"guild_id": "7", "body": {"name": "party", "tags": "🎉 party",
                   "description": description, "file": BASE64.encode(&sticker_file)}}),
            ),
            (
                "discord__upload_application_attachment",
                json!({"application_id": "42", "body": {"file": "not base64!"}}),
            ),
        ],
    );
    let tools = python.next().await;
    let body = &tools["tools"]["discord__create_guild_sticker"]["input"]["properties"]["body"];
    assert_eq!(
        body["properties"]["file"]["contentEncoding"], "base64",
        "the agent is told how to send the file: {body}"
    );
    assert_eq!(body["properties"]["name"]["type"], "string", "{body}");
    let attached = python.next().await;
    assert_eq!(attached["is_error"], false, "{attached}");
    assert_eq!(
        attached["structured"]["attachment"]["size"],
        IMAGE.len(),
        "{attached}"
    );
    let sticker = python.next().await;
    assert_eq!(sticker["is_error"], false, "{sticker}");
    assert_eq!(sticker["structured"]["tags"], "🎉 party", "{sticker}");
    assert_eq!(
        sticker["structured"]["description"], description,
        "{sticker}"
    );
    let refused = python.next().await;
    assert_eq!(refused["is_error"], true, "{refused}");
    assert!(
        refused["text"].as_str().unwrap().contains("base64"),
        "says what the file must be: {refused}"
    );
    assert_eq!(python.next().await["event"], "closed");
    let (ok, stderr) = python.finish().await;
    assert!(ok, "{stderr}");

    // What the upstream's parser read: the bytes themselves, files named
    // as files, fields as text; the refused call never left the gateway.
    let seen = uploads.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, "attachment 42");
    assert_eq!(
        seen[0].1,
        vec![(
            "file".to_owned(),
            Some("file".to_owned()),
            Some("application/octet-stream".to_owned()),
            IMAGE.to_vec()
        )]
    );
    assert_eq!(seen[1].0, "sticker 7");
    let part = |name: &str| {
        seen[1]
            .1
            .iter()
            .find(|part| part.0 == name)
            .cloned()
            .unwrap_or_else(|| panic!("no part {name}: {:?}", seen[1].1))
    };
    assert_eq!(part("file").3, sticker_file);
    assert_eq!(part("file").1.as_deref(), Some("file"));
    assert_eq!(
        part("name"),
        ("name".to_owned(), None, None, b"party".to_vec())
    );
    assert_eq!(part("tags").3, "🎉 party".as_bytes());
    assert_eq!(part("description").3, description.as_bytes());
    assert_eq!(seen[1].1.len(), 4, "{:?}", seen[1].1);
}

/// A service whose operations answer files and text, by content type.
fn files_document() -> Value {
    let get = |id: &str, media: &str| {
        json!({"get": {"operationId": id, "responses": {"200": {"description": "the file",
            "content": {media: {"schema": {"type": "string", "format": "binary"}}}}}}})
    };
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Files", "version": "1.0.0"},
        "paths": {
            "/charts/{id}": {"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                             "get": get("getChart", "image/png")["get"]},
            "/reports/{id}": {"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                              "get": get("getReport", "application/pdf")["get"]},
            "/notes": get("getNotes", "text/plain")
        }
    })
}

#[tokio::test]
async fn files_an_upstream_answers_reach_the_agent_as_mcp_content_with_every_byte() {
    // Bytes no text conversion survives: every byte value.
    let png: Vec<u8> = [
        b"\x89PNG\r\n\x1a\n".as_slice(),
        &(0..=255u8).collect::<Vec<_>>(),
    ]
    .concat();
    let pdf: Vec<u8> = [
        b"%PDF-1.7\n".as_slice(),
        &(0..=255u8).rev().collect::<Vec<_>>(),
    ]
    .concat();
    let (png_served, pdf_served) = (png.clone(), pdf.clone());
    let app = Router::new()
        .route(
            "/charts/{id}",
            get(move || async move { ([("content-type", "image/png")], png_served) }),
        )
        .route(
            "/reports/{id}",
            get(move || async move { ([("content-type", "application/pdf")], pdf_served) }),
        )
        .route("/notes", get(|| async { "plain notes" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gateway = RealGateway::start().await;
    let (status, report) = import(
        &gateway,
        json!({"namespace": "files", "base_url": format!("http://{upstream}"), "openapi": files_document()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");

    let mut python = python_calls(
        &gateway,
        &[
            ("files__get_chart", json!({"id": "7"})),
            ("files__get_report", json!({"id": "q3"})),
            ("files__get_notes", json!({})),
        ],
    );
    python.next().await;
    let chart = python.next().await;
    assert_eq!(chart["is_error"], false, "{chart}");
    assert_eq!(
        chart["content"],
        json!([{"type": "image", "data": BASE64.encode(&png), "mimeType": "image/png"}]),
        "{chart}"
    );
    let report = python.next().await;
    assert_eq!(report["is_error"], false, "{report}");
    let resource = &report["content"][0];
    assert_eq!(resource["type"], "resource", "{report}");
    assert_eq!(
        resource["resource"],
        json!({"uri": format!("http://{upstream}/reports/q3"), "mimeType": "application/pdf",
               "blob": BASE64.encode(&pdf)}),
        "{report}"
    );
    // A text answer is the result as it always was: a JSON string.
    let notes = python.next().await;
    assert_eq!(notes["is_error"], false, "{notes}");
    assert_eq!(notes["text"], "\"plain notes\"", "{notes}");
    assert_eq!(python.next().await["event"], "closed");
    let (ok, stderr) = python.finish().await;
    assert!(ok, "{stderr}");

    // Over the call route (and to a worker) the result is that MCP tool
    // result as JSON.
    let (status, answered) = call(&gateway, "files::get_chart", json!({"id": "7"})).await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    let data = answered["content"][0]["data"].as_str().unwrap();
    assert_eq!(BASE64.decode(data).unwrap(), png);
}

/// A private CA, a server certificate it signed for 127.0.0.1, and a
/// client certificate it signed for capgate.
struct TestPki {
    ca_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server: (rustls::pki_types::CertificateDer<'static>, Vec<u8>),
    client_pem: String,
    client_key_pem: String,
    client_der: Vec<u8>,
}

fn test_pki() -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "capgate test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["capgate".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server: (server.der().clone(), server_key.serialize_der()),
        client_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
        client_der: client.der().to_vec(),
    }
}

/// A document of one operation, `GET /whoami`.
fn whoami_document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Internal", "version": "1.0.0"},
        "paths": {"/whoami": {"get": {"operationId": "whoami", "responses": {"200": {
            "description": "who called", "content": {"application/json": {"schema": {
                "type": "object", "required": ["client"], "properties": {"client": {"type": "string"}}}}}}}}}}
    })
}

/// An HTTPS service on loopback, as internal services are run: its
/// certificate from the private CA, and a client certificate from the same
/// CA required of every caller (mutual TLS). `GET /whoami` says whether
/// the caller presented capgate's; `GET /openapi.json` serves its document.
async fn start_tls_upstream(pki: &TestPki) -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server.1.clone().into());
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let expected = pki.client_der.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, expected) = (acceptor.clone(), expected.clone());
            tokio::spawn(async move {
                // A caller without the CA's client certificate ends here.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let presented = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|der| der.as_ref().to_vec());
                let client = if presented == Some(expected) {
                    "capgate"
                } else {
                    "someone else"
                };
                let app = Router::new()
                    .route(
                        "/whoami",
                        get(move || async move { Json(json!({"client": client})) }),
                    )
                    .route("/openapi.json", get(|| async { Json(whoami_document()) }));
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_internal_service_behind_a_private_ca_and_mutual_tls_is_called_with_capgates_certificate()
 {
    let pki = test_pki();
    let upstream = start_tls_upstream(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca, cert) = (
        file("ca.pem", &pki.ca_pem),
        file("client.pem", &pki.client_pem),
    );
    let config = config_file(
        &dir,
        &format!(
            r#"
[rest.tls.corp]
ca_file = "{ca}"
system_roots = false
client_cert_file = "{cert}"
client_key_env = "CAPGATE_TEST_CLIENT_KEY"

[rest.tls.ca_only]
ca_file = "{ca}"
"#
        ),
    );
    let gateway = RealGateway::start_logged(
        &["--config", &config],
        &[("CAPGATE_TEST_CLIENT_KEY", &pki.client_key_pem)],
        true,
    )
    .await;
    let base_url = format!("https://{upstream}");
    // The document itself is fetched over the same TLS.
    let (status, report) = import(
        &gateway,
        json!({"namespace": "internal", "base_url": base_url, "tls": "corp",
               "openapi_url": format!("{base_url}/openapi.json")}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    let (status, answer) = call(&gateway, "internal::whoami", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"client": "capgate"}), "{answer}");
    let listed = admin_get(&gateway, "/api/v1/rest-services/internal").await;
    assert_eq!(listed["service"]["tls"], "corp", "{listed}");
    // The CLI names the settings the same way.
    let document = file("internal.json", &whoami_document().to_string());
    let (ok, out, err) = cli(
        &gateway,
        &[
            "rest",
            "import",
            "--openapi",
            &document,
            "--base-url",
            &base_url,
            "--namespace",
            "by_cli",
            "--tls",
            "corp",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let (status, answer) = call(&gateway, "by_cli::whoami", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, json!({"client": "capgate"}), "{answer}");

    // The CA alone: the service wants a client certificate, and the
    // handshake fails. Without the CA: its certificate is not trusted.
    // Either is a failure to reach the service, and says why.
    let mut errors = HashMap::new();
    for (namespace, tls) in [("trusting", Some("ca_only")), ("plain", None)] {
        let (status, report) = import(
            &gateway,
            json!({"namespace": namespace, "base_url": base_url, "tls": tls,
                   "openapi": whoami_document()}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{report}");
        let (status, error) = call(&gateway, &format!("{namespace}::whoami"), json!({})).await;
        assert!(!status.is_success(), "{namespace}: {error}");
        let text = error.to_string();
        assert!(text.contains("could not be reached"), "{namespace}: {text}");
        errors.insert(namespace, text.to_lowercase());
    }
    assert!(
        errors["plain"].contains("invalid peer certificate")
            && errors["plain"].contains("ca_file under [rest.tls.name]"),
        "an untrusted certificate says so, and what to do: {}",
        errors["plain"]
    );
    assert!(
        errors["trusting"].contains("wants a client certificate"),
        "a missing client certificate says so: {}",
        errors["trusting"]
    );
    // Settings that are not configured are refused by name.
    let (status, refused) = import(
        &gateway,
        json!({"namespace": "other", "base_url": base_url, "tls": "nowhere",
               "openapi": whoami_document()}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused.to_string().contains("[rest.tls.nowhere]"),
        "{refused}"
    );
    // The key never shows.
    let key_line = pki.client_key_pem.lines().nth(1).unwrap();
    assert!(!gateway.log().contains(key_line), "the key is in the log");
}

#[tokio::test]
async fn rest_settings_that_cannot_work_stop_the_start_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem").display().to_string();
    for (text, expected) in [
        (
            format!("[rest.tls.corp]\nca_file = \"{missing}\"\n"),
            ["rest.tls.corp: ca_file", "no-such-ca.pem"],
        ),
        (
            "[rest]\nmax_in_flight_per_service = 0\n".to_owned(),
            ["rest.max_in_flight_per_service = 0", "out of range"],
        ),
    ] {
        let config = config_file(&dir, &text);
        let data_dir = tempfile::tempdir().unwrap();
        let stderr = refused_start(&config, data_dir.path()).await;
        for part in expected {
            assert!(stderr.contains(part), "{text}: {stderr}");
        }
    }
}
