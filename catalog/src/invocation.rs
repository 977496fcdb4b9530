//! The one shape every call takes, whatever started it.
//!
//! An MCP `tools/call`, a worker's `invokefunction`, and (later) an HTTP
//! route, a cron tick or a queue message all become an [`Invocation`] and go
//! through an [`Invoker`]: resolve → authorize → validate input → dispatch →
//! await → validate output → audit. Adapters hold an `Invoker`; the gateway
//! implements it. Nothing else calls a provider.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use capgate_payload::Payload;
use semver::{Version, VersionReq};
use serde_json::Value;

/// Who is calling: the subject that policies decide on. Serialized (as
/// `{"kind": "agent" | "worker" | "gateway", ...}`) where a call is kept
/// to be made later as its caller — a queued call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Caller {
    /// An MCP client (an agent), named by its identity or `anonymous`.
    Agent {
        name: String,
        /// The policy domain; `None` is the tenant `default`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
    },
    /// Another worker, by its connection id and authenticated name
    /// (`None`: a worker that connected without identity).
    Worker {
        worker_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
    },
    /// The gateway itself (built-in functions, benchmarks).
    Gateway,
}

/// The tenant of callers that name none.
pub const DEFAULT_TENANT: &str = "default";

/// The subject of workers that connected without identity.
pub const ANONYMOUS_WORKER: &str = "worker:anonymous";

impl Caller {
    /// The policy subject: `agent:NAME`, `worker:NAME` (`worker:anonymous`
    /// without identity), or `gateway` for the gateway's own calls — those
    /// two borrowed, so an entry that keeps the subject copies no text.
    pub fn subject(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::Worker { name: None, .. } => ANONYMOUS_WORKER.into(),
            Self::Gateway => "gateway".into(),
            _ => {
                let mut subject = String::new();
                self.write_subject(&mut subject);
                subject.into()
            }
        }
    }

    /// Writes [`Self::subject`] into `out` (emptied first), for a caller
    /// that keeps one buffer rather than allocating per call.
    pub fn write_subject(&self, out: &mut String) {
        out.clear();
        match self {
            Self::Agent { name, .. } => {
                out.push_str("agent:");
                out.push_str(name);
            }
            Self::Worker {
                name: Some(name), ..
            } => {
                out.push_str("worker:");
                out.push_str(name);
            }
            Self::Worker { name: None, .. } => out.push_str(ANONYMOUS_WORKER),
            Self::Gateway => out.push_str("gateway"),
        }
    }

    /// The policy domain.
    pub fn tenant(&self) -> &str {
        match self {
            Self::Agent { tenant, .. } | Self::Worker { tenant, .. } => {
                tenant.as_deref().unwrap_or(DEFAULT_TENANT)
            }
            Self::Gateway => DEFAULT_TENANT,
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent { name, .. } => write!(f, "agent:{name}"),
            Self::Worker {
                worker_id,
                name: Some(name),
                ..
            } => write!(f, "worker:{name}({worker_id})"),
            Self::Worker {
                worker_id,
                name: None,
                ..
            } => write!(f, "worker:anonymous({worker_id})"),
            Self::Gateway => f.write_str("gateway"),
        }
    }
}

/// W3C trace context travelling with a call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub baggage: Option<String>,
}

impl TraceContext {
    /// The three W3C fields, each read by its name (`traceparent`,
    /// `tracestate`, `baggage`) from wherever a carrier keeps them: HTTP
    /// headers, MCP `_meta`.
    pub fn read<'a>(field: impl Fn(&str) -> Option<&'a str>) -> Self {
        let text = |name: &str| field(name).map(str::to_owned);
        Self {
            traceparent: text("traceparent"),
            tracestate: text("tracestate"),
            baggage: text("baggage"),
        }
    }
}

/// The door a call came in by, for metrics and traces (what started a
/// triggered call is its [`TriggerSource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// MCP `tools/call`.
    Mcp,
    /// `POST /api/v1/call/{id}`.
    Api,
    /// A worker's `invokefunction`.
    Worker,
    /// The gateway's own calls.
    Gateway,
}

impl Entry {
    /// The door a caller of this kind usually comes in by.
    pub fn of(caller: &Caller) -> Self {
        match caller {
            Caller::Agent { .. } => Self::Mcp,
            Caller::Worker { .. } => Self::Worker,
            Caller::Gateway => Self::Gateway,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Mcp => "mcp",
            Self::Api => "api",
            Self::Worker => "worker",
            Self::Gateway => "gateway",
        }
    }
}

/// The trigger that started a call: recorded with it in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSource {
    /// `http`, `engine::functions-available`, …
    pub trigger_type: Arc<str>,
    /// The id its owner gave it.
    pub trigger_id: Arc<str>,
}

/// One call.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The id as the caller named it; checked during resolution.
    pub function_id: String,
    /// A version requirement (`^1.2`); `None` means the highest live version.
    pub version: Option<VersionReq>,
    /// Kept as the text it arrived as until something looks inside.
    pub input: Payload,
    pub caller: Caller,
    pub trace: TraceContext,
    /// Overrides the function's and the gateway's deadline.
    pub timeout: Option<Duration>,
    pub idempotency_key: Option<String>,
    /// The trigger that started it; `None` for a caller's own call.
    pub source: Option<TriggerSource>,
    pub entry: Entry,
}

impl Invocation {
    pub fn new(function_id: impl Into<String>, input: impl Into<Payload>, caller: Caller) -> Self {
        Self {
            function_id: function_id.into(),
            version: None,
            input: input.into(),
            entry: Entry::of(&caller),
            caller,
            trace: TraceContext::default(),
            timeout: None,
            idempotency_key: None,
            source: None,
        }
    }
}

/// Why a call produced no result. Every variant says what happened and,
/// where there is one, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvocationError {
    #[error("Function {function} not found{reason}")]
    NotFound {
        function: String,
        reason: NotFoundReason,
    },
    #[error("invalid input for {function}: {violations}")]
    InvalidInput {
        function: String,
        violations: String,
    },
    #[error("{function} returned output that does not match its output schema: {violations}")]
    InvalidOutput {
        function: String,
        violations: String,
    },
    /// The function ran and failed; code, message and stack are the provider's.
    #[error("{message}")]
    Failed {
        code: String,
        message: String,
        stacktrace: Option<String>,
    },
    #[error("the worker providing {function} disconnected before answering")]
    Stopped { function: String },
    #[error("{function} did not answer within {} ms", .after.as_millis())]
    Timeout { function: String, after: Duration },
    #[error("the gateway is shutting down and takes no new calls; retry against another instance")]
    ShuttingDown,
    /// Refused at once: too many calls in flight (never queued without bound).
    #[error(
        "{function} was not called: {scope} has {limit} calls in flight, its limit; retry in a moment"
    )]
    Overloaded {
        function: String,
        /// `the worker providing it` or `the gateway`.
        scope: &'static str,
        limit: usize,
    },
}

impl InvocationError {
    /// A `function_not_found` with nothing more to say.
    pub fn not_found(function: impl Into<String>) -> Self {
        Self::NotFound {
            function: function.into(),
            reason: NotFoundReason::Unknown,
        }
    }
}

/// Why a function could not be resolved. An unknown function and one the
/// caller may not see both read [`NotFoundReason::Unknown`], so a denial
/// tells nothing more than an id that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFoundReason {
    /// No such function (or the caller may not see it): nothing more to say.
    Unknown,
    /// Known, but no worker providing it is connected.
    Offline,
    /// A version matches the requirement, but none of them has a live provider.
    NoLiveMatch { requirement: VersionReq },
    /// No known version matches the requirement.
    NoMatch {
        requirement: VersionReq,
        known: Vec<Version>,
    },
    /// The matching version's sunset has passed.
    Sunset {
        version: Version,
        sunset: String,
        replacement: Option<String>,
    },
    /// Only a deprecated version matches, and the caller's policy refuses those.
    DeprecatedRefused { version: Version },
    /// Its provider's connection was lost and did not come back within the hold.
    NotReattached { version: Version },
    /// The worker that offered it had the registration refused.
    RegistrationRefused { reason: String },
    /// Another reason, under a version pin from the gateway's configuration.
    Pinned {
        reason: Box<NotFoundReason>,
        caller: String,
        pin: VersionReq,
    },
}

/// The reason as the end of "Function X not found…": empty for
/// [`NotFoundReason::Unknown`], else `: ` and what happened.
impl fmt::Display for NotFoundReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => Ok(()),
            Self::Offline => f.write_str(": it is known but no worker providing it is connected"),
            Self::NoLiveMatch { requirement } => {
                write!(f, ": no live provider for a version matching {requirement}")
            }
            Self::NoMatch { requirement, known } => {
                let known: Vec<String> = known.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    ": no version matches {requirement} (known: {})",
                    known.join(", ")
                )
            }
            Self::Sunset {
                version,
                sunset,
                replacement,
            } => {
                write!(f, ": version {version} was sunset on {sunset}")?;
                match replacement {
                    Some(replacement) => write!(f, "; use {replacement} instead"),
                    None => Ok(()),
                }
            }
            Self::DeprecatedRefused { version } => write!(
                f,
                ": version {version} is deprecated and the caller's policy refuses deprecated versions"
            ),
            Self::NotReattached { version } => write!(
                f,
                ": the worker providing version {version} disconnected and did not reconnect"
            ),
            Self::RegistrationRefused { reason } => {
                write!(f, ": its registration was refused: {reason}")
            }
            Self::Pinned {
                reason,
                caller,
                pin,
            } => write!(
                f,
                "{reason} ({caller} is pinned to {pin} by the gateway's configuration)"
            ),
        }
    }
}

/// Runs invocations along the one path. Implemented by the gateway; held by
/// adapters, which never reach a provider any other way.
///
/// Object-safe, so that adapters hold it as `Arc<dyn Invoker>` and never
/// name the gateway's type.
pub trait Invoker: Send + Sync + 'static {
    fn invoke(
        &self,
        invocation: Invocation,
    ) -> Pin<Box<dyn Future<Output = Result<Value, InvocationError>> + Send + '_>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_gets_the_subject_whatever_it_held_before() {
        let worker = |name: Option<&str>| Caller::Worker {
            worker_id: "w1".into(),
            name: name.map(str::to_owned),
            tenant: None,
        };
        let mut buffer = String::from("left over from an earlier caller");
        for (caller, subject) in [
            (
                Caller::Agent {
                    name: "ops".into(),
                    tenant: Some("acme".into()),
                },
                "agent:ops",
            ),
            (worker(Some("billing")), "worker:billing"),
            (worker(None), ANONYMOUS_WORKER),
            (Caller::Gateway, "gateway"),
        ] {
            caller.write_subject(&mut buffer);
            assert_eq!(buffer, subject);
            assert_eq!(caller.subject(), subject);
        }
    }
}
