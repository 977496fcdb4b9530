//! How a call's input becomes an HTTP request: parameters serialized by
//! the OpenAPI style rules (`simple`, `label`, `matrix`, `form`,
//! `spaceDelimited`, `pipeDelimited`, `deepObject`, with `explode`), the
//! body as JSON, form fields, multipart parts or bytes.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Map, Value};

use super::multipart::{self, FilePart};

/// Everything percent-encoded but RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// With `allowReserved`, RFC 3986's reserved characters pass as they are.
const RESERVED_ALLOWED: &AsciiSet = &COMPONENT
    .remove(b':')
    .remove(b'/')
    .remove(b'?')
    .remove(b'#')
    .remove(b'[')
    .remove(b']')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=');

/// An operation's request, as imported.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub method: Method,
    /// The path template (`/pets/{petId}`), appended to the service's base URL.
    pub path: String,
    pub params: Vec<Param>,
    /// Taken from the input's `body` property.
    pub body: Option<Body>,
    /// How a success answer becomes the call's result.
    pub answer: Answer,
}

/// What an operation answers, as its document says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    /// JSON: the result is the parsed body (text when the body is not
    /// JSON, `null` when empty).
    #[default]
    Json,
    /// Files (an image, a PDF, bytes): the result is an MCP tool result
    /// whose content carries the body — its function declares
    /// `mcp.result = "content"`.
    Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
    Cookie,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Query => "query",
            Self::Header => "header",
            Self::Cookie => "cookie",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Simple,
    Label,
    Matrix,
    Form,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

impl From<oas3::spec::ParameterStyle> for Style {
    fn from(style: oas3::spec::ParameterStyle) -> Self {
        use oas3::spec::ParameterStyle as S;
        match style {
            S::Matrix => Self::Matrix,
            S::Label => Self::Label,
            S::Form => Self::Form,
            S::Simple => Self::Simple,
            S::SpaceDelimited => Self::SpaceDelimited,
            S::PipeDelimited => Self::PipeDelimited,
            S::DeepObject => Self::DeepObject,
        }
    }
}

/// One parameter: where it goes, how it is written, and the input
/// property it is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// As the upstream names it.
    pub name: String,
    /// As the tool's input names it (`query_id` when two share a name).
    pub property: String,
    pub location: Location,
    pub style: Style,
    pub explode: bool,
    pub allow_reserved: bool,
    /// Declared with `content` (JSON text) instead of a schema.
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub media: BodyMedia,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BodyMedia {
    /// Sent as JSON with this content type.
    Json(String),
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/form-data`: a part per field, these fields as files.
    Multipart(Vec<FilePart>),
    /// Any other content type: the input's `body` string, sent as it is —
    /// decoded from base64 first when the body is bytes (`binary`).
    Raw { content_type: String, binary: bool },
}

/// A request ready to send, relative to the service's base URL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parts {
    /// Path and query, already encoded (`/pets/7?tags=a,b`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The content type and bytes of the body.
    pub body: Option<(String, Vec<u8>)>,
}

/// Why an input cannot be written as a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(String);

impl PlanError {
    pub(crate) fn new(reason: String) -> Self {
        Self(reason)
    }
}

impl Plan {
    /// The request for `input` (already validated against the tool's schema).
    pub fn parts(&self, input: &Value) -> Result<Parts, PlanError> {
        let empty = Map::new();
        let fields = input.as_object().unwrap_or(&empty);
        // Room for the values put in and the query, so the text is not
        // grown (copied) as they are added.
        let mut path = String::with_capacity(self.path.len() + 96);
        path.push_str(&self.path);
        let mut query: Vec<String> = Vec::new();
        let mut headers = Vec::new();
        let mut cookies: Vec<String> = Vec::new();
        for param in &self.params {
            let value = match fields.get(&param.property) {
                None | Some(Value::Null) if param.location != Location::Path => continue,
                None | Some(Value::Null) => {
                    return Err(PlanError(format!(
                        "path parameter '{}' has no value",
                        param.property
                    )));
                }
                Some(value) => value,
            };
            let value = if param.json {
                Value::String(value.to_string())
            } else {
                value.clone()
            };
            match param.location {
                Location::Path => {
                    let text = path_value(param, &value)?;
                    fill(&mut path, &param.name, &text);
                }
                Location::Query => query.extend(query_pairs(param, &value)),
                Location::Header => {
                    let text = simple(&value, param.explode, |s| s.to_owned());
                    if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                        return Err(PlanError(format!(
                            "header parameter '{}' holds a control character",
                            param.property
                        )));
                    }
                    headers.push((param.name.clone(), text));
                }
                Location::Cookie => {
                    let text = simple(&value, false, |s| encode(s, COMPONENT));
                    cookies.push(format!("{}={text}", param.name));
                }
            }
        }
        if !cookies.is_empty() {
            headers.push(("cookie".into(), cookies.join("; ")));
        }
        let mut target = path;
        for (index, pair) in query.iter().enumerate() {
            target.push(if index == 0 { '?' } else { '&' });
            target.push_str(pair);
        }
        let body = match (&self.body, fields.get("body")) {
            (Some(Body { media }), Some(value)) => Some(body(media, value)?),
            _ => None,
        };
        Ok(Parts {
            target,
            headers,
            body,
        })
    }
}

/// Percent-encoded; taken as a `Cow` (borrowed when nothing needs
/// encoding) rather than written through `Display`'s formatting machinery.
fn encode(text: &str, set: &'static AsciiSet) -> String {
    Cow::from(utf8_percent_encode(text, set)).into_owned()
}

/// Puts `text` in place of every `{name}` of `path`, as
/// `path.replace(&format!("{{{name}}}"), text)` would (the text put in is
/// not searched again), without building the pattern or a searcher per call.
fn fill(path: &mut String, name: &str, text: &str) {
    let mut at = 0;
    while let Some(open) = path.get(at..).and_then(|rest| rest.find('{')) {
        let start = at + open;
        let end = start + 1 + name.len();
        if path.get(start + 1..end) == Some(name) && path.as_bytes().get(end) == Some(&b'}') {
            path.replace_range(start..=end, text);
            at = start + text.len();
        } else {
            at = start + 1;
        }
    }
}

/// A primitive as text (nested values as JSON).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(true) => "true".to_owned(),
        Value::Bool(false) => "false".to_owned(),
        // Integers written straight, not through the formatting machinery.
        Value::Number(number) => match number.as_i64() {
            Some(integer) => itoa::Buffer::new().format(integer).to_owned(),
            None => number.to_string(),
        },
        other => other.to_string(),
    }
}

/// `simple`: `a,b,c`; objects `k,v,k,v`, exploded `k=v,k=v`.
fn simple(value: &Value, explode: bool, enc: impl Fn(&str) -> String) -> String {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|i| enc(&text(i)))
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| {
                if explode {
                    format!("{}={}", enc(k), enc(&text(v)))
                } else {
                    format!("{},{}", enc(k), enc(&text(v)))
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        other => enc(&text(other)),
    }
}

fn path_value(param: &Param, value: &Value) -> Result<String, PlanError> {
    // A whole segment of "." or ".." would move the request up the
    // upstream's path (URL normalization resolves them, encoded or not).
    let dots = |s: &str| matches!(s, "." | "..");
    let refused = || {
        PlanError(format!(
            "path parameter '{}' may not be '.' or '..'",
            param.property
        ))
    };
    let enc = |s: &str| encode(s, COMPONENT);
    let written = match param.style {
        Style::Label => {
            let sep = if param.explode { "." } else { "," };
            match value {
                Value::Array(items) => format!(
                    ".{}",
                    items
                        .iter()
                        .map(|i| enc(&text(i)))
                        .collect::<Vec<_>>()
                        .join(sep)
                ),
                Value::Object(fields) => format!(
                    ".{}",
                    fields
                        .iter()
                        .map(|(k, v)| if param.explode {
                            format!("{}={}", enc(k), enc(&text(v)))
                        } else {
                            format!("{},{}", enc(k), enc(&text(v)))
                        })
                        .collect::<Vec<_>>()
                        .join(sep)
                ),
                other => format!(".{}", enc(&text(other))),
            }
        }
        Style::Matrix => {
            let name = enc(&param.name);
            match value {
                Value::Array(items) if param.explode => items
                    .iter()
                    .map(|i| format!(";{name}={}", enc(&text(i))))
                    .collect(),
                Value::Object(fields) if param.explode => fields
                    .iter()
                    .map(|(k, v)| format!(";{}={}", enc(k), enc(&text(v))))
                    .collect(),
                other => format!(";{name}={}", simple(other, false, enc)),
            }
        }
        _ => {
            if let Value::String(s) = value
                && dots(s)
            {
                return Err(refused());
            }
            simple(value, param.explode, enc)
        }
    };
    if dots(&written) {
        return Err(refused());
    }
    Ok(written)
}

/// `name=value` pairs of a query parameter, encoded.
fn query_pairs(param: &Param, value: &Value) -> Vec<String> {
    let set = if param.allow_reserved {
        RESERVED_ALLOWED
    } else {
        COMPONENT
    };
    let enc = |s: &str| encode(s, set);
    let name = encode(&param.name, COMPONENT);
    match (param.style, value) {
        (Style::DeepObject, Value::Object(fields)) => fields
            .iter()
            .map(|(k, v)| format!("{name}%5B{}%5D={}", enc(k), enc(&text(v))))
            .collect(),
        (Style::SpaceDelimited | Style::PipeDelimited, Value::Array(items)) if !param.explode => {
            let sep = if param.style == Style::SpaceDelimited {
                "%20"
            } else {
                "|"
            };
            vec![format!(
                "{name}={}",
                items
                    .iter()
                    .map(|i| enc(&text(i)))
                    .collect::<Vec<_>>()
                    .join(sep)
            )]
        }
        (_, Value::Array(items)) if param.explode => items
            .iter()
            .map(|i| format!("{name}={}", enc(&text(i))))
            .collect(),
        (_, Value::Object(fields)) if param.explode => fields
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(&text(v))))
            .collect(),
        (_, other) => {
            let value = simple(other, false, enc);
            let mut pair = String::with_capacity(name.len() + 1 + value.len());
            pair.push_str(&name);
            pair.push('=');
            pair.push_str(&value);
            vec![pair]
        }
    }
}

fn body(media: &BodyMedia, value: &Value) -> Result<(String, Vec<u8>), PlanError> {
    match media {
        BodyMedia::Json(content_type) => Ok((
            content_type.clone(),
            serde_json::to_vec(value).map_err(|e| PlanError(e.to_string()))?,
        )),
        BodyMedia::Raw {
            content_type,
            binary: true,
        } => match value {
            Value::String(text) => Ok((content_type.clone(), multipart::decode("body", text)?)),
            _ => Err(PlanError("body is bytes and must be base64 text".into())),
        },
        BodyMedia::Raw {
            content_type,
            binary: false,
        } => match value {
            Value::String(text) => Ok((content_type.clone(), text.clone().into_bytes())),
            other => Ok((content_type.clone(), other.to_string().into_bytes())),
        },
        BodyMedia::Multipart(files) => match value {
            Value::Object(fields) => multipart::encode(files, fields),
            _ => Err(PlanError(
                "a multipart body must be an object of fields".into(),
            )),
        },
        BodyMedia::Form => {
            let Value::Object(fields) = value else {
                return Err(PlanError(
                    "a form-encoded body must be an object of fields".into(),
                ));
            };
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (key, value) in fields {
                match value {
                    Value::Array(items) => {
                        for item in items {
                            form.append_pair(key, &text(item));
                        }
                    }
                    Value::Null => {}
                    other => {
                        form.append_pair(key, &text(other));
                    }
                }
            }
            Ok((
                "application/x-www-form-urlencoded".into(),
                form.finish().into_bytes(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn param(location: Location, style: Style, explode: bool) -> Param {
        Param {
            name: "color".into(),
            property: "color".into(),
            location,
            style,
            explode,
            allow_reserved: false,
            json: false,
        }
    }

    fn target(p: Param, value: Value) -> String {
        let path = if p.location == Location::Path {
            "/x/{color}"
        } else {
            "/x"
        };
        let plan = Plan {
            method: Method::GET,
            path: path.into(),
            params: vec![p],
            body: None,
            answer: Answer::Json,
        };
        plan.parts(&json!({"color": value})).unwrap().target
    }

    /// Encoded as `Display` writes it, for text with nothing to encode,
    /// everything to encode, and a mix (multibyte and reserved characters).
    #[test]
    fn encoding_matches_the_formatted_encoding() {
        for text in [
            "",
            "plain-text_1.2~",
            "a b/c?d#e&f=g+h%i",
            "héllo wörld ✓ 😀",
            "!$'()*,;:@[]",
            "\u{0}\u{7f}\n",
        ] {
            for set in [COMPONENT, RESERVED_ALLOWED] {
                assert_eq!(
                    encode(text, set),
                    utf8_percent_encode(text, set).to_string(),
                    "{text:?}"
                );
            }
        }
    }

    /// The examples of the OpenAPI specification's style table
    /// (section 4.8.12.4 of 3.1.1), for string, array and object values.
    #[test]
    fn parameters_follow_the_openapi_style_examples() {
        let s = json!("blue");
        let a = json!(["blue", "black", "brown"]);
        let o = json!({"R": 100, "G": 200, "B": 150});
        use Location::*;
        use Style::*;
        let cases = [
            (Path, Matrix, false, &s, "/x/;color=blue"),
            (Path, Matrix, false, &a, "/x/;color=blue,black,brown"),
            (
                Path,
                Matrix,
                true,
                &a,
                "/x/;color=blue;color=black;color=brown",
            ),
            (Path, Matrix, false, &o, "/x/;color=R,100,G,200,B,150"),
            (Path, Matrix, true, &o, "/x/;R=100;G=200;B=150"),
            (Path, Label, false, &s, "/x/.blue"),
            (Path, Label, false, &a, "/x/.blue,black,brown"),
            (Path, Label, true, &a, "/x/.blue.black.brown"),
            (Path, Label, false, &o, "/x/.R,100,G,200,B,150"),
            (Path, Label, true, &o, "/x/.R=100.G=200.B=150"),
            (Path, Simple, false, &s, "/x/blue"),
            (Path, Simple, false, &a, "/x/blue,black,brown"),
            (Path, Simple, false, &o, "/x/R,100,G,200,B,150"),
            (Path, Simple, true, &o, "/x/R=100,G=200,B=150"),
            (Query, Form, true, &s, "/x?color=blue"),
            (Query, Form, false, &a, "/x?color=blue,black,brown"),
            (
                Query,
                Form,
                true,
                &a,
                "/x?color=blue&color=black&color=brown",
            ),
            (Query, Form, false, &o, "/x?color=R,100,G,200,B,150"),
            (Query, Form, true, &o, "/x?R=100&G=200&B=150"),
            (
                Query,
                SpaceDelimited,
                false,
                &a,
                "/x?color=blue%20black%20brown",
            ),
            (Query, PipeDelimited, false, &a, "/x?color=blue|black|brown"),
            (
                Query,
                DeepObject,
                true,
                &o,
                "/x?color%5BR%5D=100&color%5BG%5D=200&color%5BB%5D=150",
            ),
        ];
        for (location, style, explode, value, expected) in cases {
            // The test object's keys are in serde_json's (sorted) order.
            let expected = expected
                .replace("R,100,G,200,B,150", "B,150,G,200,R,100")
                .replace("R=100;G=200;B=150", "B=150;G=200;R=100")
                .replace("R=100.G=200.B=150", "B=150.G=200.R=100")
                .replace("R=100,G=200,B=150", "B=150,G=200,R=100")
                .replace("R=100&G=200&B=150", "B=150&G=200&R=100")
                .replace(
                    "color%5BR%5D=100&color%5BG%5D=200&color%5BB%5D=150",
                    "color%5BB%5D=150&color%5BG%5D=200&color%5BR%5D=100",
                );
            assert_eq!(
                target(param(location, style, explode), value.clone()),
                expected,
                "{location:?} {style:?} explode={explode}"
            );
        }
    }

    #[test]
    fn values_are_encoded_and_cannot_leave_their_place() {
        let p = param(Location::Path, Style::Simple, false);
        assert_eq!(
            target(p.clone(), json!("a/b?c#d e")),
            "/x/a%2Fb%3Fc%23d%20e"
        );
        let plan = Plan {
            method: Method::GET,
            path: "/x/{color}".into(),
            params: vec![p],
            body: None,
            answer: Answer::Json,
        };
        for hostile in ["..", "."] {
            let error = plan.parts(&json!({"color": hostile})).unwrap_err();
            assert!(error.to_string().contains("may not be"), "{error}");
        }
        let q = param(Location::Query, Style::Form, true);
        assert_eq!(target(q, json!("a&b=c")), "/x?color=a%26b%3Dc");
        let h = Plan {
            method: Method::GET,
            path: "/x".into(),
            params: vec![param(Location::Header, Style::Simple, false)],
            body: None,
            answer: Answer::Json,
        };
        let error = h
            .parts(&json!({"color": "a\r\nX-Injected: 1"}))
            .unwrap_err();
        assert!(error.to_string().contains("control character"), "{error}");
    }

    #[test]
    fn bodies_are_json_form_fields_bytes_or_parts() {
        let mut plan = Plan {
            method: Method::POST,
            path: "/x".into(),
            params: vec![],
            body: Some(Body {
                media: BodyMedia::Json("application/json".into()),
            }),
            answer: Answer::Json,
        };
        let parts = plan.parts(&json!({"body": {"name": "Rex"}})).unwrap();
        assert_eq!(
            parts.body,
            Some(("application/json".into(), br#"{"name":"Rex"}"#.to_vec()))
        );
        plan.body = Some(Body {
            media: BodyMedia::Form,
        });
        let parts = plan
            .parts(&json!({"body": {"name": "Rex & co", "tags": ["a", "b"]}}))
            .unwrap();
        assert_eq!(
            parts.body.unwrap().1,
            b"name=Rex+%26+co&tags=a&tags=b".to_vec()
        );
        // Bytes come as base64 and leave as the bytes they encode; text
        // leaves as it came.
        plan.body = Some(Body {
            media: BodyMedia::Raw {
                content_type: "image/png".into(),
                binary: true,
            },
        });
        let parts = plan.parts(&json!({"body": "iVBORw0KGgoA/w=="})).unwrap();
        assert_eq!(
            parts.body,
            Some((
                "image/png".into(),
                vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff]
            ))
        );
        let refused = plan.parts(&json!({"body": "not base64!"})).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("body is a file and must be base64"),
            "{refused}"
        );
        assert!(plan.parts(&json!({"body": {"not": "text"}})).is_err());
        plan.body = Some(Body {
            media: BodyMedia::Raw {
                content_type: "text/plain".into(),
                binary: false,
            },
        });
        let parts = plan.parts(&json!({"body": "iVBORw0KGgo="})).unwrap();
        assert_eq!(parts.body.unwrap().1, b"iVBORw0KGgo=".to_vec());
        // A multipart body is an object of fields.
        plan.body = Some(Body {
            media: BodyMedia::Multipart(vec![]),
        });
        let parts = plan.parts(&json!({"body": {"name": "Rex"}})).unwrap();
        let (content_type, bytes) = parts.body.unwrap();
        assert!(content_type.starts_with("multipart/form-data; boundary="));
        assert!(
            String::from_utf8(bytes)
                .unwrap()
                .contains("name=\"name\"\r\n\r\nRex\r\n")
        );
        assert!(plan.parts(&json!({"body": "fields?"})).is_err());
    }

    #[test]
    fn a_path_is_filled_as_replace_would_fill_it() {
        for (template, name, text) in [
            ("/pets/{id}", "id", "7"),
            ("/a/{id}/b/{id}", "id", "x"),
            ("/{id}{id}", "id", "{id}"),
            ("/{idx}/{id}", "id", "1"),
            ("/{i/{id", "id", "2"),
            ("/é/{id}/ü", "id", "ß"),
            ("/{}/{id}", "id", ""),
            ("{id}", "id", "%7B"),
            ("/none", "id", "3"),
        ] {
            let mut path = template.to_owned();
            fill(&mut path, name, text);
            assert_eq!(
                path,
                template.replace(&format!("{{{name}}}"), text),
                "{template}"
            );
        }
    }

    #[test]
    fn primitives_read_as_json_writes_them() {
        for value in [
            json!(0),
            json!(-12),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(1.5),
            json!(true),
            json!(false),
        ] {
            assert_eq!(text(&value), value.to_string(), "{value}");
        }
    }
}
