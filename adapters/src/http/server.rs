//! The HTTP trigger listener's one handler: find the route, read the
//! request, check the condition, call the function on the one path, answer
//! in the function's own shape.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use capgate_catalog::{Caller, InvocationError, TraceContext};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::request::{self, RequestParts};
use super::response::{error_response, failed_call, from_result};
use super::routes::{Found, Route};
use super::{AuthMode, HttpRoutes, HttpTarget};
use crate::triggers::TriggerServices;
use crate::triggers::fire::{Fired, Firing};

/// What the listener serves with.
struct Listener {
    routes: Arc<HttpRoutes>,
    services: TriggerServices,
    max_body_bytes: usize,
}

/// The listener's router: every path goes to the route table.
pub fn router(routes: Arc<HttpRoutes>, services: TriggerServices, max_body_bytes: usize) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Arc::new(Listener {
            routes,
            services,
            max_body_bytes,
        }))
}

async fn handle(State(listener): State<Arc<Listener>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if parts.method == Method::OPTIONS
        && let Some(origin) = &origin
        && let Some(asked) = parts.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(&listener.routes, parts.uri.path(), origin, asked);
    }
    let (route, params) = match listener.routes.find(&parts.method, parts.uri.path()) {
        Found::Route { route, params } => (route, params),
        Found::WrongMethod(allowed) => return wrong_method(&allowed),
        Found::NotFound => {
            return error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!(
                    "no HTTP trigger serves {} {}",
                    parts.method,
                    parts.uri.path()
                ),
                None,
            );
        }
    };
    let target = &route.target;
    let allow_origin = match (&target.cors, &origin) {
        (Some(cors), Some(origin)) => match cors.allow(origin) {
            Some(allowed) => Some(allowed),
            None => return origin_refused(origin),
        },
        _ => None,
    };
    let mut response = serve(&listener, &route, params, parts, body).await;
    if let Some(allowed) = allow_origin.and_then(|a| HeaderValue::from_str(&a).ok()) {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

async fn serve(
    listener: &Listener,
    route: &Route<HttpTarget>,
    params: Vec<(String, String)>,
    parts: http::request::Parts,
    body: Body,
) -> Response {
    let target = &route.target;
    let body = match axum::body::to_bytes(body, listener.max_body_bytes).await {
        Ok(body) => body,
        Err(error) if !is_over_limit(&error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read in full (it stopped, or took longer than http_body_timeout_ms); send it again",
                None,
            );
        }
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!(
                    "the body is over the {} byte limit (max_frame_bytes); send less, or raise the limit",
                    listener.max_body_bytes
                ),
                None,
            );
        }
    };
    let (caller, hidden): (Caller, &[http::HeaderName]) = match target.auth {
        AuthMode::Owner => (target.owner.clone(), &[]),
        AuthMode::Agent => match listener.services.host.agent(&parts.headers) {
            // The credential is capgate's to check, not the function's to see.
            Ok(agent) => (agent, &[header::AUTHORIZATION]),
            Err(why) => return unauthorized(&why),
        },
    };
    let route_path = route.pattern.path();
    let input = match request::input(
        &RequestParts {
            method: &parts.method,
            route_path: &route_path,
            params: &params,
            query: parts.uri.query(),
            headers: &parts.headers,
            body: &body,
            hidden_headers: hidden,
        },
        target.input,
    ) {
        Ok(input) => input,
        Err(bad) => return error_response(bad.status, "bad_request", &bad.message, None),
    };
    let firing = Firing {
        function_id: &target.function_id,
        condition: target.condition_function_id.as_deref(),
        caller: &caller,
        source: &target.source,
        trace: trace_context(&parts.headers),
        timeout: None,
    };
    let mut response = match firing
        .run(listener.services.invoker.as_ref(), input, &target.stats)
        .await
    {
        Fired::Called(Ok(result)) => from_result(result),
        Fired::Called(Err(error)) | Fired::ConditionFailed(error) => failed(listener, &error),
        Fired::ConditionNotMet => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "CONDITION_NOT_MET",
            &format!(
                "the request did not meet the route's condition ({})",
                target.condition_function_id.as_deref().unwrap_or_default()
            ),
            None,
        ),
    };
    if parts.method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response
}

/// Whether reading a body failed because it was over the limit (rather
/// than cut off or too slow).
fn is_over_limit(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>())
}

fn failed(listener: &Listener, error: &InvocationError) -> Response {
    failed_call(error, &listener.services.host.error_code(error))
}

fn trace_context(headers: &HeaderMap) -> TraceContext {
    TraceContext::read(|name| headers.get(name).and_then(|value| value.to_str().ok()))
}

fn wrong_method(allowed: &[Method]) -> Response {
    let list = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this path is served for {list}"),
        None,
    );
    if let Ok(value) = HeaderValue::from_str(&list) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

fn unauthorized(why: &str) -> Response {
    let mut response = error_response(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        &format!(
            "{why}; this route is called as the agent whose API key or JWT is sent as Authorization: Bearer"
        ),
        None,
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn origin_refused(origin: &str) -> Response {
    error_response(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        &format!(
            "pages from {origin} may not call this route; add the origin to the trigger's cors.origins"
        ),
        None,
    )
}

/// A browser asking whether a page may send a request.
fn preflight(routes: &HttpRoutes, path: &str, origin: &str, asked: &HeaderValue) -> Response {
    let method = asked
        .to_str()
        .ok()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let Some(method) = method else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Access-Control-Request-Method is not a method",
            None,
        );
    };
    let Found::Route { route, .. } = routes.find(&method, path) else {
        return origin_refused(origin);
    };
    let Some(cors) = &route.target.cors else {
        return origin_refused(origin);
    };
    let Some(allowed) = cors.allow(origin) else {
        return origin_refused(origin);
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::ACCESS_CONTROL_ALLOW_ORIGIN, &allowed);
    set(header::ACCESS_CONTROL_ALLOW_METHODS, method.as_str());
    if !cors.headers.is_empty() {
        set(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &cors.headers.join(", "),
        );
    }
    if let Some(seconds) = cors.max_age_s {
        set(header::ACCESS_CONTROL_MAX_AGE, &seconds.to_string());
    }
    set(header::VARY, "Origin");
    response
}
