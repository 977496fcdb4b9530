//! An HTTP request as a function's input.

use serde_json::{Map, Value, json};

use super::InputMode;
use super::routes::{params_object, query_object};

/// Keys of iii's request object: a body field of the same name does not
/// replace them at the top level.
const REQUEST_KEYS: [&str; 7] = [
    "method",
    "path",
    "path_params",
    "query_params",
    "headers",
    "body",
    "trigger",
];

/// What the listener knows of a request.
pub struct RequestParts<'a> {
    pub method: &'a http::Method,
    /// The route's path as registered (`/orders/:id`), as iii reports it.
    pub route_path: &'a str,
    pub params: &'a [(String, String)],
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
    /// Headers left out of the input (the credential capgate consumed).
    pub hidden_headers: &'a [http::HeaderName],
}

/// Why a request cannot become an input: answered 400 or 415.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub status: http::StatusCode,
    pub message: String,
}

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest {
        status: http::StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

/// A request's content type, lowercase, without parameters.
fn essence(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
}

/// The body: parsed JSON for JSON content types (`application/json`,
/// `…+json`), the text otherwise, `null` when empty. A body sent without a
/// content type, or as a form (`curl -d` sends form data unless told
/// otherwise), is parsed when it is a JSON document: no form is one.
fn body_value(parts: &RequestParts<'_>) -> Result<Value, BadRequest> {
    if parts.body.is_empty() {
        return Ok(Value::Null);
    }
    let essence = essence(parts.headers);
    match essence.as_deref() {
        Some(json) if json == "application/json" || json.ends_with("+json") => {
            return serde_json::from_slice(parts.body).map_err(|error| {
                bad(format!(
                    "the body is declared JSON but is not ({error}); send a JSON document or another content type"
                ))
            });
        }
        None | Some("application/x-www-form-urlencoded") => {
            if let Ok(value) = serde_json::from_slice(parts.body) {
                return Ok(value);
            }
        }
        Some(_) => {}
    }
    match std::str::from_utf8(parts.body) {
        Ok(text) => Ok(Value::from(text)),
        Err(_) => Err(BadRequest {
            status: http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "the body is not text; HTTP triggers take JSON or text bodies".into(),
        }),
    }
}

/// Headers as an object of strings (names lowercase; a repeated header's
/// values joined with `, `; values that are not text left out).
fn headers_object(parts: &RequestParts<'_>) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, value) in parts.headers {
        if parts.hidden_headers.contains(name) {
            continue;
        }
        let Ok(value) = value.to_str() else {
            continue;
        };
        match map.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), Value::from(value));
            }
        }
    }
    map
}

/// The function's input for a request, in the route's input mode.
pub fn input(parts: &RequestParts<'_>, mode: InputMode) -> Result<Value, BadRequest> {
    let body = body_value(parts)?;
    match mode {
        InputMode::Request => {
            let mut input = json!({
                "method": parts.method.as_str(),
                "path": parts.route_path,
                "path_params": params_object(parts.params),
                "query_params": query_object(parts.query),
                "headers": headers_object(parts),
                "body": body,
                "trigger": {"type": "http", "path": parts.route_path, "method": parts.method.as_str()},
            });
            // The canonical example's `input.name` works over HTTP too.
            if let (Value::Object(input), Value::Object(fields)) = (&mut input, &body) {
                for (key, value) in fields {
                    if !REQUEST_KEYS.contains(&key.as_str()) {
                        input.insert(key.clone(), value.clone());
                    }
                }
            }
            Ok(input)
        }
        InputMode::Body => {
            let mut fields = match body {
                Value::Object(fields) => fields,
                Value::Null => Map::new(),
                other => {
                    return Err(bad(format!(
                        "this route takes a JSON object body (input = \"body\"), not {}",
                        json_type(&other)
                    )));
                }
            };
            // Parameters are the request's own: they win over the body.
            fields.extend(query_object(parts.query));
            fields.extend(params_object(parts.params));
            Ok(Value::Object(fields))
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text (send it with Content-Type: application/json)",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(headers: &'a http::HeaderMap, body: &'a [u8]) -> RequestParts<'a> {
        RequestParts {
            method: &http::Method::POST,
            route_path: "/orders/:id",
            params: &[],
            query: Some("page=2"),
            headers,
            body,
            hidden_headers: &[http::header::AUTHORIZATION],
        }
    }

    fn json_headers() -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        headers.append("x-tag", "a".parse().unwrap());
        headers.append("x-tag", "b".parse().unwrap());
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer secret".parse().unwrap(),
        );
        headers
    }

    #[test]
    fn the_request_object_is_iiis_with_the_body_fields_on_top() {
        let headers = json_headers();
        let params = [("id".to_owned(), "7".to_owned())];
        let request = RequestParts {
            params: &params,
            ..parts(&headers, br#"{"name":"world","method":"forged"}"#)
        };
        let input = input(&request, InputMode::Request).unwrap();
        assert_eq!(input["name"], "world");
        assert_eq!(
            input["method"], "POST",
            "a body field does not replace the request's"
        );
        assert_eq!(input["body"]["method"], "forged");
        assert_eq!(input["path"], "/orders/:id");
        assert_eq!(input["path_params"], json!({"id": "7"}));
        assert_eq!(input["query_params"], json!({"page": "2"}));
        assert_eq!(input["headers"]["x-tag"], "a, b");
        assert!(input["headers"].get("authorization").is_none());
        assert_eq!(
            input["trigger"],
            json!({"type": "http", "path": "/orders/:id", "method": "POST"})
        );
    }

    #[test]
    fn bodies_read_by_content_type() {
        let plain = http::HeaderMap::new();
        assert_eq!(
            input(&parts(&plain, b"hi"), InputMode::Request).unwrap()["body"],
            "hi"
        );
        // curl -d '{"name":"world"}' sends a form content type.
        let mut form = http::HeaderMap::new();
        form.insert(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let curl = input(&parts(&form, br#"{"name":"world"}"#), InputMode::Request).unwrap();
        assert_eq!(curl["name"], "world");
        assert_eq!(
            input(&parts(&form, b"a=1&b=2"), InputMode::Request).unwrap()["body"],
            "a=1&b=2"
        );
        let mut text = http::HeaderMap::new();
        text.insert(http::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(
            input(&parts(&text, b"{}"), InputMode::Request).unwrap()["body"],
            "{}"
        );
        assert_eq!(
            input(&parts(&plain, b""), InputMode::Request).unwrap()["body"],
            Value::Null
        );
        let binary = input(&parts(&plain, &[0xff, 0xfe]), InputMode::Request).unwrap_err();
        assert_eq!(binary.status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let headers = json_headers();
        let broken = input(&parts(&headers, b"{nope"), InputMode::Request).unwrap_err();
        assert_eq!(broken.status, http::StatusCode::BAD_REQUEST);
        assert!(
            broken.message.contains("declared JSON"),
            "{}",
            broken.message
        );
    }

    #[test]
    fn body_mode_merges_parameters_over_the_body() {
        let headers = json_headers();
        let params = [("id".to_owned(), "7".to_owned())];
        let request = RequestParts {
            params: &params,
            ..parts(&headers, br#"{"id":"forged","qty":2,"page":1}"#)
        };
        assert_eq!(
            input(&request, InputMode::Body).unwrap(),
            json!({"id": "7", "qty": 2, "page": "2"})
        );
        let error = input(&parts(&headers, b"[1]"), InputMode::Body).unwrap_err();
        assert!(error.message.contains("not an array"), "{}", error.message);
        assert_eq!(
            input(&parts(&headers, b""), InputMode::Body).unwrap(),
            json!({"page": "2"})
        );
    }
}
