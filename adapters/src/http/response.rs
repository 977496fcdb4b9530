//! A function's result, or a call's failure, as an HTTP response.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use capgate_catalog::InvocationError;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

/// Seconds an overloaded gateway asks HTTP callers to wait.
pub const RETRY_OVERLOADED_S: u64 = 1;
/// Seconds a draining gateway asks HTTP callers to wait (another
/// instance, or this one after its restart).
pub const RETRY_SHUTTING_DOWN_S: u64 = 5;

/// The HTTP status of a failed call, and the `Retry-After` seconds when
/// trying again later can succeed. Shared by every HTTP entry point.
pub fn status_of(error: &InvocationError) -> (StatusCode, Option<u64>) {
    match error {
        InvocationError::NotFound { .. } => (StatusCode::NOT_FOUND, None),
        InvocationError::InvalidInput { .. } => (StatusCode::BAD_REQUEST, None),
        // The function answered, wrongly or with its own error, or never did.
        InvocationError::InvalidOutput { .. }
        | InvocationError::Failed { .. }
        | InvocationError::Stopped { .. } => (StatusCode::BAD_GATEWAY, None),
        InvocationError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, None),
        InvocationError::Overloaded { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, Some(RETRY_OVERLOADED_S))
        }
        InvocationError::ShuttingDown => {
            (StatusCode::SERVICE_UNAVAILABLE, Some(RETRY_SHUTTING_DOWN_S))
        }
    }
}

/// `{"error": {code, message}}` with `status`, and `Retry-After` when given.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<u64>,
) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A failed trigger call: as the call route answers it, except that the
/// function's own error is a 500 (as iii answers it: the route is the
/// function, not a gateway in front of it).
pub fn failed_call(error: &InvocationError, code: &str) -> Response {
    let (status, retry_after) = match error {
        InvocationError::Failed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, None),
        other => status_of(other),
    };
    error_response(status, code, &error.to_string(), retry_after)
}

/// A result with a numeric `status_code` that is not a response.
fn invalid_response(why: String) -> Response {
    error_response(
        StatusCode::BAD_GATEWAY,
        "invalid_output",
        &format!(
            "the function's result is not a valid HTTP response: {why}; return {{status_code, headers, body}} with a status in 100-599 and text header values"
        ),
        None,
    )
}

/// The response for a result: `{status_code, headers, body}` when it has
/// a numeric `status_code` (headers an object, or `"Name: value"`
/// strings; a string body with an explicit content type is sent as it is,
/// any other body as JSON), else the result as a JSON body with 200.
pub fn from_result(result: Value) -> Response {
    let Some(status) = result.get("status_code").filter(|s| s.is_number()) else {
        return (StatusCode::OK, axum::Json(result)).into_response();
    };
    let Some(status) = status
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(|code| (100..=599).contains(&code.as_u16()))
    else {
        return invalid_response(format!("status_code {status} is not an HTTP status"));
    };
    let headers = match headers_of(result.get("headers")) {
        Ok(headers) => headers,
        Err(why) => return invalid_response(why),
    };
    let (body, json) = match result.get("body") {
        None | Some(Value::Null) => (Body::empty(), false),
        Some(Value::String(text)) if headers.contains_key(header::CONTENT_TYPE) => {
            (Body::from(text.clone()), false)
        }
        Some(other) => (Body::from(other.to_string()), true),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if json {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (name, value) in headers {
        if let Some(name) = name {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn headers_of(headers: Option<&Value>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    let mut add = |name: &str, value: &str| -> Result<(), String> {
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("'{name}' is not a header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of header '{name}' is not a header value"))?;
        map.append(name, value);
        Ok(())
    };
    match headers {
        None | Some(Value::Null) => {}
        Some(Value::Object(fields)) => {
            for (name, value) in fields {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    _ => return Err(format!("header '{name}' is not text")),
                };
                add(name, &text)?;
            }
        }
        Some(Value::Array(lines)) => {
            for line in lines {
                let Some((name, value)) = line.as_str().and_then(|l| l.split_once(':')) else {
                    return Err(format!("header {line} is not \"Name: value\""));
                };
                add(name, value)?;
            }
        }
        Some(other) => return Err(format!("headers {other} is neither an object nor a list")),
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_result_is_json_unless_it_is_a_response() {
        let response = from_result(json!({"message": "hello world"}));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body_text(response).await, r#"{"message":"hello world"}"#);
        // A non-numeric status_code is data, not a status.
        let data = from_result(json!({"status_code": "shipped"}));
        assert_eq!(data.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_response_result_sets_status_headers_and_body() {
        let created = from_result(json!({
            "status_code": 201, "headers": {"Location": "/orders/7", "X-Count": 2},
            "body": {"id": 7}
        }));
        assert_eq!(created.status(), StatusCode::CREATED);
        assert_eq!(created.headers()["location"], "/orders/7");
        assert_eq!(created.headers()["x-count"], "2");
        assert_eq!(body_text(created).await, r#"{"id":7}"#);
        let raw = from_result(json!({
            "status_code": 200, "headers": ["Content-Type: text/csv", "X-A: 1"], "body": "a,b\n1,2"
        }));
        assert_eq!(raw.headers()[header::CONTENT_TYPE], "text/csv");
        assert_eq!(body_text(raw).await, "a,b\n1,2");
        // Without a content type, a string body is JSON text.
        let quoted = from_result(json!({"status_code": 200, "body": "hi"}));
        assert_eq!(body_text(quoted).await, r#""hi""#);
        let empty = from_result(json!({"status_code": 204}));
        assert_eq!(empty.status(), StatusCode::NO_CONTENT);
        assert_eq!(body_text(empty).await, "");
    }

    #[tokio::test]
    async fn an_impossible_response_is_the_functions_error_said_plainly() {
        for bad in [
            json!({"status_code": 99}),
            json!({"status_code": 700}),
            json!({"status_code": 200, "headers": {"Bad Name": "x"}}),
            json!({"status_code": 200, "headers": {"X": "a\nb"}}),
            json!({"status_code": 200, "headers": ["no colon"]}),
            json!({"status_code": 200, "headers": "X: 1"}),
        ] {
            let response = from_result(bad.clone());
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{bad}");
            let text = body_text(response).await;
            assert!(text.contains("not a valid HTTP response"), "{bad}: {text}");
        }
    }
}
