//! One REST upstream: its HTTP client (a connection pool, the guarded
//! resolver, redirects off), its credential and circuit breaker, and the
//! call of one operation within the invocation's deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capgate_catalog::{InvocationError, TraceContext};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerView};
use super::credentials::{Credential, Secret};
use super::guard::{AddressRules, GuardError, GuardedResolver, Hosts, guard_error};
use super::plan::{Answer, Plan};
use super::tls::UpstreamTls;

const TRACEPARENT: reqwest::header::HeaderName =
    reqwest::header::HeaderName::from_static("traceparent");
const TRACESTATE: reqwest::header::HeaderName =
    reqwest::header::HeaderName::from_static("tracestate");
const BAGGAGE: reqwest::header::HeaderName = reqwest::header::HeaderName::from_static("baggage");

/// Most bytes of an upstream's error answer quoted in the call's error.
const QUOTED_BODY_BYTES: usize = 1024;
/// Most attempts of an idempotent call (retries of failures that never
/// reached the upstream's logic: connection errors, 502/503/504).
const MAX_ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// How an upstream is reached and bounded.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub rules: AddressRules,
    pub hosts: Arc<Hosts>,
    /// Largest answer read, in bytes; a longer one fails the call.
    pub max_response_bytes: usize,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    /// Idle pooled connections kept per host.
    pub max_idle_per_host: usize,
    /// Calls to one service in flight at once; one more is refused.
    pub max_in_flight: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            rules: AddressRules::default(),
            hosts: Arc::default(),
            max_response_bytes: 4 * 1024 * 1024,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            max_idle_per_host: 64,
            max_in_flight: 256,
        }
    }
}

pub struct Upstream {
    /// Service name for errors and logs (its namespace).
    name: String,
    /// The base URL without a trailing `/`.
    base: String,
    /// The base URL parsed once: each call's URL is it with the call's path
    /// and query set, so no call parses a host again.
    base_url: url::Url,
    /// Its path without a trailing `/`.
    base_path: String,
    client: reqwest::Client,
    rules: AddressRules,
    credential: Option<Arc<Credential>>,
    breaker: Breaker,
    max_response_bytes: usize,
    /// A permit per call in flight: a surge of agents' calls cannot open
    /// more connections to one service than this.
    in_flight: tokio::sync::Semaphore,
    max_in_flight: usize,
}

/// Why an upstream cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("base URL: {0}")]
    Guard(#[from] GuardError),
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
}

impl Upstream {
    pub fn new(
        name: &str,
        base_url: &str,
        settings: &UpstreamSettings,
        credential: Option<Arc<Credential>>,
        tls: Option<&UpstreamTls>,
    ) -> Result<Self, UpstreamError> {
        let parsed = url::Url::parse(base_url).map_err(|error| GuardError::Url {
            url: base_url.to_owned(),
            reason: error.to_string(),
        })?;
        settings.rules.check_url(&parsed)?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(GuardError::Url {
                url: base_url.to_owned(),
                reason: "a base URL has no query or fragment".into(),
            }
            .into());
        }
        let client = guarded_client(settings, tls)?;
        Ok(Self {
            name: name.to_owned(),
            base: parsed.as_str().trim_end_matches('/').to_owned(),
            base_path: parsed.path().trim_end_matches('/').to_owned(),
            base_url: parsed,
            client,
            rules: settings.rules.clone(),
            credential,
            breaker: Breaker::new(settings.breaker_threshold, settings.breaker_cooldown),
            max_response_bytes: settings.max_response_bytes,
            in_flight: tokio::sync::Semaphore::new(settings.max_in_flight),
            max_in_flight: settings.max_in_flight,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn breaker(&self) -> BreakerView {
        self.breaker.view()
    }

    /// Calls one operation with `input` (already checked against its schema).
    pub async fn call(
        &self,
        function: &str,
        plan: &Plan,
        input: &Value,
        trace: &TraceContext,
        until: Instant,
        deadline: Duration,
    ) -> Result<Value, InvocationError> {
        let parts = plan
            .parts(input)
            .map_err(|error| InvocationError::InvalidInput {
                function: function.to_owned(),
                violations: error.to_string(),
            })?;
        // The path is percent-encoded, so its first `?` starts the query.
        let (path, query) = match parts.target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (parts.target.as_str(), None),
        };
        let mut url = self.base_url.clone();
        url.set_path(&format!("{}{path}", self.base_path));
        url.set_query(query);
        self.rules
            .check_url(&url)
            .map_err(|error| failed("upstream_refused", error.to_string()))?;
        // Refused at once rather than queued: the caller hears now that
        // the service is saturated, and no hidden queue grows.
        let Ok(_slot) = self.in_flight.try_acquire() else {
            return Err(failed(
                "upstream_busy",
                format!(
                    "the REST service {} has reached its limit of {} calls in flight (rest.max_in_flight_per_service); try again shortly, or raise the limit",
                    self.name, self.max_in_flight
                ),
            ));
        };
        let idempotent = matches!(
            plan.method,
            Method::GET
                | Method::HEAD
                | Method::PUT
                | Method::DELETE
                | Method::OPTIONS
                | Method::TRACE
        );
        let timeout = || InvocationError::Timeout {
            function: function.to_owned(),
            after: deadline,
        };
        // One timer for the whole call, its attempts and its answer's read
        // (a `timeout_at` per await registered and removed one each).
        let expiry = tokio::time::sleep_until(until);
        tokio::pin!(expiry);
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let permit = match self.breaker.admit() {
                Ok(permit) => permit,
                Err(open) => {
                    return Err(failed(
                        "upstream_unavailable",
                        format!(
                            "the REST service {} failed repeatedly and its circuit is open; calls resume in {} ms",
                            self.name,
                            open.retry_in.as_millis()
                        ),
                    ));
                }
            };
            // A call that never reached the upstream says nothing of its
            // health: its permit is dropped unrecorded.
            let request = self.request(plan, &url, &parts, trace).await?;
            let sent = before(expiry.as_mut(), request.send()).await;
            let retry_after_failure = |attempt: u32| {
                idempotent && attempt < MAX_ATTEMPTS && Instant::now() + backoff(attempt) < until
            };
            let response = match sent {
                None => {
                    permit.record(false);
                    return Err(timeout());
                }
                Some(Err(error)) => {
                    if let Some(guard) = guard_error(&error) {
                        return Err(failed("upstream_refused", guard.to_string()));
                    }
                    permit.record(false);
                    if retry_after_failure(attempt) {
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    return Err(failed(
                        "upstream_unreachable",
                        format!(
                            "the REST service {} could not be reached: {}",
                            self.name,
                            describe(&error)
                        ),
                    ));
                }
                Some(Ok(response)) => response,
            };
            let status = response.status();
            permit.record(!status.is_server_error());
            // 429 and 503 may say when to come back: an idempotent call
            // waits that long when its deadline allows, else the error says it.
            let asked_wait = matches!(status.as_u16(), 429 | 503)
                .then(|| retry_after(response.headers(), SystemTime::now()))
                .flatten();
            if let Some(wait) = asked_wait
                && idempotent
                && attempt < MAX_ATTEMPTS
                && Instant::now() + wait < until
            {
                tokio::time::sleep(wait).await;
                continue;
            }
            if matches!(status.as_u16(), 502..=504)
                && asked_wait.is_none()
                && retry_after_failure(attempt)
            {
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            if status == reqwest::StatusCode::UNAUTHORIZED
                && !refreshed
                && let Some(Credential::OAuth2(oauth)) = self.credential.as_deref()
            {
                // The token may have been revoked early: one fresh one is tried.
                oauth.forget().await;
                refreshed = true;
                continue;
            }
            let body = before(expiry.as_mut(), self.read_limited(response))
                .await
                .ok_or_else(timeout)??;
            if plan.answer == Answer::Content && status.is_success() {
                return Ok(file_answer(&url, body.0.as_deref(), &body.1));
            }
            return answer(&self.name, status, body.0, &body.1).map_err(|error| match asked_wait {
                Some(wait) => {
                    let why = if !idempotent {
                        "the operation is not idempotent, so capgate does not call it again"
                    } else if attempt >= MAX_ATTEMPTS {
                        "capgate made its attempts"
                    } else {
                        "past this call's deadline"
                    };
                    with_retry_hint(error, wait, why)
                }
                None => error,
            });
        }
    }

    async fn request(
        &self,
        plan: &Plan,
        url: &url::Url,
        parts: &super::plan::Parts,
        trace: &TraceContext,
    ) -> Result<reqwest::RequestBuilder, InvocationError> {
        let mut url = url.clone();
        let mut auth: Option<(String, Secret)> = None;
        match self.credential.as_deref() {
            Some(Credential::Header { name, value }) => auth = Some((name.clone(), value.clone())),
            Some(Credential::Query { name, value }) => {
                url.query_pairs_mut().append_pair(name, value.expose());
            }
            Some(Credential::OAuth2(oauth)) => {
                // The token endpoint is held to the service's address rules
                // (an IP literal never meets the guarded resolver).
                self.rules
                    .check_url(&oauth.token_url)
                    .map_err(|error| failed("upstream_credentials", error.to_string()))?;
                let token = oauth
                    .token(&self.client)
                    .await
                    .map_err(|error| failed("upstream_credentials", error.to_string()))?;
                auth = Some((
                    "authorization".into(),
                    Secret::new(format!("Bearer {}", token.expose())),
                ));
            }
            None => {}
        }
        let mut request = self.client.request(plan.method.clone(), url);
        for (name, value) in &parts.headers {
            // The credential's header is capgate's alone: a parameter of
            // the same name (an agent's input) never rides beside it.
            if auth
                .as_ref()
                .is_some_and(|(auth, _)| auth.eq_ignore_ascii_case(name))
            {
                continue;
            }
            request = request.header(name.as_str(), value.as_str());
        }
        for (name, value) in [
            (TRACEPARENT, &trace.traceparent),
            (TRACESTATE, &trace.tracestate),
            (BAGGAGE, &trace.baggage),
        ] {
            if let Some(value) = value {
                request = request.header(name, value.as_str());
            }
        }
        if let Some((name, value)) = auth {
            let mut value =
                reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                    failed(
                        "upstream_credentials",
                        "the credential is not a valid header value".into(),
                    )
                })?;
            value.set_sensitive(true);
            request = request.header(name.as_str(), value);
        }
        if let Some((content_type, bytes)) = &parts.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                .body(bytes.clone());
        }
        Ok(request.header(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/json, */*;q=0.5"),
        ))
    }

    /// The answer's content type and bytes, at most `max_response_bytes`.
    async fn read_limited(
        &self,
        mut response: reqwest::Response,
    ) -> Result<(Option<String>, Vec<u8>), InvocationError> {
        let too_long = || {
            failed(
                "upstream_too_large",
                format!(
                    "the REST service {} answered more than {} bytes (max_response_bytes)",
                    self.name, self.max_response_bytes
                ),
            )
        };
        if response
            .content_length()
            .is_some_and(|length| length as usize > self.max_response_bytes)
        {
            return Err(too_long());
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| {
            failed(
                "upstream_unreachable",
                format!(
                    "the REST service {}'s answer broke off: {}",
                    self.name,
                    describe(&error)
                ),
            )
        })? {
            if bytes.len() + chunk.len() > self.max_response_bytes {
                return Err(too_long());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((content_type, bytes))
    }
}

/// `future`'s output, or `None` once `expiry` has passed (`timeout_at` on
/// a timer shared by the awaits of one call).
async fn before<T>(
    mut expiry: std::pin::Pin<&mut tokio::time::Sleep>,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(output));
        }
        expiry.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// The wait a `Retry-After` header asks for: delay-seconds, or an HTTP
/// date (IMF-fixdate, as RFC 9110 writes it) from `now`; at most a day. A
/// date already past is no wait; a header that is neither is ignored.
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    const LONGEST: Duration = Duration::from_secs(24 * 60 * 60);
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = if let Ok(seconds) = text.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.timestamp()).ok()?);
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(LONGEST))
}

/// `error`, saying when the service asked to be called again and why
/// capgate did not.
fn with_retry_hint(error: InvocationError, wait: Duration, why: &str) -> InvocationError {
    match error {
        InvocationError::Failed {
            code,
            message,
            stacktrace,
        } => InvocationError::Failed {
            code,
            message: format!(
                "{message} (the service asks to be called again in {} s: {why})",
                wait.as_secs_f64().ceil()
            ),
            stacktrace,
        },
        other => other,
    }
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1))
}

fn failed(code: &str, message: String) -> InvocationError {
    InvocationError::Failed {
        code: code.to_owned(),
        message,
        stacktrace: None,
    }
}

/// The result of an answer: 2xx bodies as JSON (text when not JSON, null
/// when empty); anything else an error quoting the status and the start
/// of the body. Redirects are answers too: they are never followed.
fn answer(
    service: &str,
    status: reqwest::StatusCode,
    content_type: Option<String>,
    bytes: &[u8],
) -> Result<Value, InvocationError> {
    if status.is_success() {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        return match serde_json::from_slice(bytes) {
            Ok(value) => Ok(value),
            Err(error)
                if content_type
                    .as_deref()
                    .is_some_and(|ct| ct.contains("json")) =>
            {
                Err(failed(
                    "upstream_invalid_json",
                    format!(
                        "the REST service {service} answered {status} with invalid JSON: {error}"
                    ),
                ))
            }
            Err(_) => Ok(Value::String(String::from_utf8_lossy(bytes).into_owned())),
        };
    }
    let mut quoted =
        String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BODY_BYTES)]).into_owned();
    if bytes.len() > QUOTED_BODY_BYTES {
        quoted.push('…');
    }
    let quoted: String = quoted
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect();
    let what = if status.is_redirection() {
        " (redirects are not followed: configure the service's base URL to where it redirects)"
    } else {
        ""
    };
    Err(InvocationError::Failed {
        code: "upstream_status".into(),
        message: format!("the REST service {service} answered {status}{what}: {quoted}"),
        stacktrace: None,
    })
}

/// A success answer of an operation that answers files, as the MCP tool
/// result its function declares: an image or audio block for those media,
/// text for text, else an embedded resource whose `blob` is the bytes as
/// base64 and whose `uri` is the request's URL without its query (which may
/// hold an API key) or user info. Nothing of the bytes is lost to a text
/// conversion.
fn file_answer(url: &url::Url, content_type: Option<&str>, bytes: &[u8]) -> Value {
    use base64::Engine;
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let data = || base64::engine::general_purpose::STANDARD.encode(bytes);
    let textual = media.starts_with("text/") || media.contains("json") || media.contains("xml");
    let block = match std::str::from_utf8(bytes) {
        _ if bytes.is_empty() => json!({"type": "text", "text": ""}),
        _ if media.starts_with("image/") => {
            json!({"type": "image", "data": data(), "mimeType": media})
        }
        _ if media.starts_with("audio/") => {
            json!({"type": "audio", "data": data(), "mimeType": media})
        }
        Ok(text) if textual => json!({"type": "text", "text": text}),
        _ => {
            let mut uri = url.clone();
            uri.set_query(None);
            uri.set_fragment(None);
            let _ = uri.set_username("");
            let _ = uri.set_password(None);
            json!({"type": "resource", "resource": {"uri": uri.as_str(), "mimeType": media, "blob": data()}})
        }
    };
    json!({"content": [block]})
}

/// What went wrong with a request, without its URL (whose query may hold
/// an API key).
pub fn describe(error: &reqwest::Error) -> String {
    if let Some(guard) = guard_error(error) {
        return guard.to_string();
    }
    let mut root: &dyn std::error::Error = error;
    while let Some(source) = root.source() {
        root = source;
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "the answer could not be read"
    } else {
        "request failed"
    };
    if std::ptr::eq(
        root as *const _ as *const u8,
        error as *const _ as *const u8,
    ) {
        kind.to_owned()
    } else {
        let cause = root.to_string();
        format!("{kind}: {cause}{}", tls_hint(&cause))
    }
}

/// What to do about a TLS failure an operator can fix in capgate's
/// configuration (rustls names the alert or the verification error).
fn tls_hint(cause: &str) -> &'static str {
    if cause.contains("CertificateRequired") || cause.contains("BadCertificate") {
        "; the service wants a client certificate capgate does not present: set client_cert_file and its key under [rest.tls.NAME] and import the service with tls = NAME"
    } else if cause.contains("UnknownIssuer") || cause.contains("invalid peer certificate") {
        "; if the service's certificate comes from a private CA, name the CA's bundle as ca_file under [rest.tls.NAME] and import the service with tls = NAME"
    } else {
        ""
    }
}

/// A client whose every connection goes through the guard.
pub fn guarded_client(
    settings: &UpstreamSettings,
    tls: Option<&UpstreamTls>,
) -> Result<reqwest::Client, UpstreamError> {
    // reqwest's rustls takes the process's crypto provider: ring, as the
    // gateway installs it (no aws-lc C build). Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resolver = GuardedResolver {
        rules: settings.rules.clone(),
        hosts: settings.hosts.clone(),
    };
    let builder = reqwest::Client::builder();
    let builder = match tls {
        Some(tls) => tls.apply(builder),
        None => builder,
    };
    builder
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(resolver))
        .pool_max_idle_per_host(settings.max_idle_per_host)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| UpstreamError::Client(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_answered_as_mcp_content_with_every_byte() {
        use base64::Engine;
        let url =
            url::Url::parse("http://user:pw@files.example:8080/api/reports/7?api_key=k#x").unwrap();
        let bytes: Vec<u8> = (0..=255u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(
            file_answer(&url, Some("image/PNG; q=1"), &bytes),
            json!({"content": [{"type": "image", "data": b64, "mimeType": "image/png"}]})
        );
        assert_eq!(
            file_answer(&url, Some("audio/ogg"), &bytes)["content"][0]["type"],
            "audio"
        );
        // Anything else is an embedded resource: its URI names the request
        // without the query or the user info (either may hold a secret).
        assert_eq!(
            file_answer(&url, Some("application/pdf"), &bytes),
            json!({"content": [{"type": "resource", "resource": {
                "uri": "http://files.example:8080/api/reports/7", "mimeType": "application/pdf", "blob": b64}}]})
        );
        assert_eq!(
            file_answer(&url, None, &bytes)["content"][0]["resource"]["mimeType"],
            "application/octet-stream"
        );
        // Text stays text; bytes that are not UTF-8 never become text.
        assert_eq!(
            file_answer(&url, Some("text/csv"), b"a,b\n1,2"),
            json!({"content": [{"type": "text", "text": "a,b\n1,2"}]})
        );
        assert_eq!(
            file_answer(&url, Some("text/plain"), &[0xff, 0xfe])["content"][0]["resource"]["blob"],
            "//4="
        );
        assert_eq!(
            file_answer(&url, Some("image/png"), b""),
            json!({"content": [{"type": "text", "text": ""}]})
        );
    }

    #[test]
    fn answers_become_results_or_errors_quoting_the_upstream() {
        let ok = answer(
            "pets",
            reqwest::StatusCode::OK,
            Some("application/json".into()),
            br#"{"id":1}"#,
        );
        assert_eq!(ok.unwrap(), serde_json::json!({"id": 1}));
        assert_eq!(
            answer("pets", reqwest::StatusCode::NO_CONTENT, None, b"").unwrap(),
            Value::Null
        );
        let text = answer(
            "pets",
            reqwest::StatusCode::OK,
            Some("text/plain".into()),
            b"pong",
        );
        assert_eq!(text.unwrap(), Value::String("pong".into()));
        let long = vec![b'x'; 5000];
        let Err(InvocationError::Failed { code, message, .. }) = answer(
            "pets",
            reqwest::StatusCode::NOT_FOUND,
            Some("text/plain".into()),
            &long,
        ) else {
            panic!("an error")
        };
        assert_eq!(code, "upstream_status");
        assert!(
            message.starts_with("the REST service pets answered 404 Not Found: xxx"),
            "{message}"
        );
        assert!(
            message.len() < 1200,
            "quoted body is cut: {}",
            message.len()
        );
        let Err(InvocationError::Failed { message, .. }) =
            answer("pets", reqwest::StatusCode::FOUND, None, b"")
        else {
            panic!("an error")
        };
        assert!(message.contains("redirects are not followed"), "{message}");
    }

    /// A server on loopback that reads each request and writes `answer`,
    /// then holds the connection open without writing more; its base URL.
    async fn holding_server(answer: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(answer).await;
                held.push(stream);
            }
        });
        base
    }

    /// A service at `base` (loopback allowed) with at most `max_in_flight`
    /// calls, and the plan of its `METHOD /item`.
    fn item_service(base: &str, method: Method, max_in_flight: usize) -> (Upstream, Plan) {
        let settings = UpstreamSettings {
            rules: AddressRules {
                allow: Vec::new(),
                allow_loopback: true,
            },
            max_in_flight,
            ..UpstreamSettings::default()
        };
        let plan = Plan {
            method,
            path: "/item".into(),
            params: Vec::new(),
            body: None,
            answer: Answer::Json,
        };
        (
            Upstream::new("svc", base, &settings, None, None).unwrap(),
            plan,
        )
    }

    /// One call of `plan` with `deadline`: the outcome and how long it
    /// took. Hangs past 20 s fail.
    async fn call_with(
        upstream: &Upstream,
        plan: &Plan,
        deadline: Duration,
    ) -> (Result<Value, InvocationError>, Duration) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            upstream.call(
                "svc::item",
                plan,
                &serde_json::json!({}),
                &TraceContext::default(),
                started + deadline,
                deadline,
            ),
        )
        .await
        .expect("the call ends by its deadline, not the hang guard");
        (outcome, started.elapsed())
    }

    /// `METHOD /item` of a service at `base` with `deadline`.
    async fn call_item(
        base: &str,
        method: Method,
        deadline: Duration,
    ) -> (Result<Value, InvocationError>, Duration) {
        let (upstream, plan) = item_service(base, method, 256);
        call_with(&upstream, &plan, deadline).await
    }

    /// The call's deadline bounds both the wait for the answer and the read
    /// of its body, on one timer: an upstream that never answers, and one
    /// that sends its headers and stalls in its body, both fail the call
    /// as timed out — not before the deadline, and not long after it.
    #[tokio::test]
    async fn the_deadline_bounds_the_answer_and_its_body() {
        let deadline = Duration::from_millis(300);
        let call = |base: String| async move { call_item(&base, Method::GET, deadline).await };
        let answered = holding_server(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{\"id\":1}",
        )
        .await;
        let (outcome, _) = call(answered).await;
        assert_eq!(outcome.unwrap(), serde_json::json!({"id": 1}));
        let silent = holding_server(b"").await;
        let stalled = holding_server(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":",
        )
        .await;
        for (what, base) in [("no answer", silent), ("a stalled body", stalled)] {
            let (outcome, took) = call(base).await;
            assert!(
                matches!(outcome, Err(InvocationError::Timeout { ref function, after }) if function == "svc::item" && after == deadline),
                "{what}: {outcome:?}"
            );
            assert!(took >= deadline, "{what}: timed out early, after {took:?}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let read = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                reqwest::header::RETRY_AFTER,
                reqwest::header::HeaderValue::from_str(value).unwrap(),
            );
            retry_after(&headers, now)
        };
        assert_eq!(read("2"), Some(Duration::from_secs(2)));
        assert_eq!(read(" 7 "), Some(Duration::from_secs(7)));
        // 1,700,000,000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            read("Tue, 14 Nov 2023 22:13:50 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(read("Tue, 14 Nov 2023 22:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            read("999999999999"),
            Some(Duration::from_secs(24 * 60 * 60))
        );
        assert_eq!(read("soon"), None);
        assert_eq!(read("-1"), None);
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new(), now), None);
    }

    /// A service that answers `first` to the first request and 200 to the
    /// others; its base URL and the count of requests it saw.
    async fn busy_server(
        first: reqwest::StatusCode,
        retry_after: &'static str,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::response::IntoResponse as _;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    (first, [("retry-after", retry_after)], "busy").into_response()
                } else {
                    axum::Json(serde_json::json!({"ok": true})).into_response()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn a_service_that_asks_to_wait_is_called_again_when_the_call_may_wait() {
        use std::sync::atomic::Ordering;
        let call = |base: String, method: Method, deadline: Duration| async move {
            call_item(&base, method, deadline).await
        };
        let message = |outcome: Result<Value, InvocationError>| match outcome {
            Err(InvocationError::Failed { message, .. }) => message,
            other => panic!("a failure: {other:?}"),
        };
        // Idempotent, within its deadline: waits as asked, then succeeds.
        let (base, seen) = busy_server(reqwest::StatusCode::TOO_MANY_REQUESTS, "1").await;
        let (outcome, took) = call(base, Method::GET, Duration::from_secs(10)).await;
        assert_eq!(outcome.unwrap(), serde_json::json!({"ok": true}));
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert!(took >= Duration::from_secs(1), "waited as asked: {took:?}");
        // Not idempotent: not called again; the error says when and why.
        let (base, seen) = busy_server(reqwest::StatusCode::TOO_MANY_REQUESTS, "1").await;
        let (outcome, _) = call(base, Method::POST, Duration::from_secs(10)).await;
        let text = message(outcome);
        assert!(text.contains("429"), "{text}");
        assert!(
            text.contains("called again in 1 s: the operation is not idempotent"),
            "{text}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        // A wait past the deadline is not waited (nor backed off from, for
        // a 503 that says how long): the error says so at once.
        let (base, seen) = busy_server(reqwest::StatusCode::SERVICE_UNAVAILABLE, "120").await;
        let (outcome, took) = call(base, Method::GET, Duration::from_secs(5)).await;
        let text = message(outcome);
        assert!(
            text.contains("called again in 120 s: past this call's deadline"),
            "{text}"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn calls_past_a_services_in_flight_limit_are_refused_at_once() {
        // A service that never answers holds the one call in flight.
        let base = holding_server(b"").await;
        let (upstream, plan) = item_service(&base, Method::POST, 1);
        let service = Arc::new((upstream, plan));
        let call = |deadline: Duration| {
            let service = service.clone();
            async move { call_with(&service.0, &service.1, deadline).await }
        };
        let held = tokio::spawn(call(Duration::from_millis(800)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (refused, took) = call(Duration::from_secs(5)).await;
        match refused {
            Err(InvocationError::Failed { code, message, .. }) => {
                assert_eq!(code, "upstream_busy");
                assert!(
                    message.contains(
                        "reached its limit of 1 calls in flight (rest.max_in_flight_per_service)"
                    ),
                    "{message}"
                );
            }
            other => panic!("refused: {other:?}"),
        }
        assert!(
            took < Duration::from_secs(1),
            "at once, not queued: {took:?}"
        );
        // Once the held call ends (its deadline), the slot is free again.
        let (held, _) = held.await.unwrap();
        assert!(
            matches!(held, Err(InvocationError::Timeout { .. })),
            "{held:?}"
        );
        let (next, _) = call(Duration::from_millis(200)).await;
        assert!(
            matches!(next, Err(InvocationError::Timeout { .. })),
            "{next:?}"
        );
    }
}
