//! The span of one call: started when the call enters the path, its
//! context passed to the provider, ended with the outcome.

use std::borrow::Cow;
use std::sync::Arc;

use capgate_catalog::{Invocation, InvocationError, TraceContext};
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer as Tracer, Span};

/// Where a call came in, as metrics and spans label it.
pub fn source_of(invocation: &Invocation) -> &'static str {
    match &invocation.source {
        Some(trigger) => match trigger.trigger_type.as_ref() {
            "http" => "http",
            "cron" => "cron",
            "queue" | "durable:subscriber" | "subscribe" => "queue",
            "state" => "state",
            "rest" => "rest",
            _ => "trigger",
        },
        None => invocation.entry.label(),
    }
}

/// The FaaS semantic conventions' `faas.trigger` for a source.
fn faas_trigger(source: &str) -> &'static str {
    match source {
        "mcp" | "api" | "http" | "worker" | "rest" => "http",
        "cron" => "timer",
        "queue" => "pubsub",
        "state" => "datasource",
        _ => "other",
    }
}

/// A call's span, or nothing when tracing is off; the `tracing` span its
/// log lines carry (trace and span ids) either way when there is a trace.
pub struct CallSpan {
    span: Option<Span>,
    pub log: tracing::Span,
}

impl CallSpan {
    /// No span (tracing off); log lines still carry an incoming trace id.
    pub fn untraced(trace: &TraceContext, function: &str) -> Self {
        // Checked by `context::sanitize` already; `get` all the same.
        let ids = trace
            .traceparent
            .as_deref()
            .and_then(|parent| Some((parent.get(3..35)?, parent.get(36..52)?)));
        let log = match ids {
            Some((trace_id, parent_id)) => {
                tracing::info_span!("call", function, trace_id, parent_id)
            }
            None => tracing::Span::none(),
        };
        Self { span: None, log }
    }

    /// Starts the call's span as a child of the context it arrived with
    /// (a new trace without one) and makes the invocation carry the new
    /// span as the parent of whatever it calls.
    pub fn start(tracer: &Tracer, invocation: &mut Invocation, source: &'static str) -> Self {
        let parent = parent_context(&invocation.trace);
        let mut attributes = vec![
            KeyValue::new("rpc.system", "capgate"),
            KeyValue::new("rpc.method", invocation.function_id.clone()),
            KeyValue::new("faas.invoked_name", invocation.function_id.clone()),
            KeyValue::new("faas.trigger", faas_trigger(source)),
            KeyValue::new("capgate.source", source),
            KeyValue::new("capgate.caller", invocation.caller.subject().into_owned()),
        ];
        if let Some(trigger) = &invocation.source {
            attributes.push(KeyValue::new(
                "capgate.trigger.type",
                trigger.trigger_type.to_string(),
            ));
            attributes.push(KeyValue::new(
                "capgate.trigger.id",
                trigger.trigger_id.to_string(),
            ));
        }
        if let Some(requirement) = &invocation.version {
            attributes.push(KeyValue::new(
                "capgate.function.requirement",
                requirement.to_string(),
            ));
        }
        let span = tracer
            .span_builder(invocation.function_id.clone())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        let context = span.span_context().clone();
        let log = if context.is_valid() {
            invocation.trace.traceparent = Some(traceparent(&context));
            let state = context.trace_state().header();
            invocation.trace.tracestate = (!state.is_empty()).then_some(state);
            tracing::info_span!(
                "call",
                function = %invocation.function_id,
                trace_id = %context.trace_id(),
                span_id = %context.span_id()
            )
        } else {
            tracing::Span::none()
        };
        Self {
            span: Some(span),
            log,
        }
    }

    /// Ends the span with the version that ran and the outcome.
    pub fn finish<T>(
        self,
        version: Option<&Arc<str>>,
        outcome: &Result<T, InvocationError>,
        code: Cow<'_, str>,
    ) {
        let Some(mut span) = self.span else {
            return;
        };
        if let Some(version) = version {
            span.set_attribute(KeyValue::new("capgate.function.version", version.clone()));
        }
        span.set_attribute(KeyValue::new("capgate.outcome", code.clone().into_owned()));
        if let Err(error) = outcome {
            span.set_attribute(KeyValue::new("error.type", code.into_owned()));
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
    }
}

/// The remote parent named by a W3C context (already checked), or none.
fn parent_context(trace: &TraceContext) -> Context {
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    struct Headers<'a>(&'a TraceContext);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => self.0.traceparent.as_deref(),
                "tracestate" => self.0.tracestate.as_deref(),
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    if trace.traceparent.is_none() {
        return Context::new();
    }
    opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract_with_context(&Context::new(), &Headers(trace))
}

/// The W3C `traceparent` of a span.
fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    #[test]
    fn a_calls_span_is_the_child_of_its_callers_and_the_parent_of_what_it_calls() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("test");
        let mut invocation = Invocation::new(
            "billing::refund",
            serde_json::json!({}),
            capgate_catalog::Caller::Gateway,
        );
        invocation.trace.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        invocation.trace.baggage = Some("tenant=acme".into());
        let span = CallSpan::start(&tracer, &mut invocation, "mcp");
        let passed_on = invocation.trace.traceparent.clone().unwrap();
        assert!(passed_on.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!passed_on.contains("00f067aa0ba902b7"));
        assert_eq!(invocation.trace.baggage.as_deref(), Some("tenant=acme"));
        let outcome: Result<(), _> = Err(InvocationError::not_found("billing::refund"));
        span.finish(None, &outcome, "function_not_found".into());
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(
            span.parent_span_id.to_string(),
            "00f067aa0ba902b7",
            "the caller's span is the parent"
        );
        assert_eq!(&passed_on[36..52], span.span_context.span_id().to_string());
        assert!(matches!(span.status, Status::Error { .. }));
        let attribute = |key: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(
            attribute("error.type").as_deref(),
            Some("function_not_found")
        );
        assert_eq!(attribute("capgate.source").as_deref(), Some("mcp"));
        assert_eq!(attribute("faas.trigger").as_deref(), Some("http"));
    }
}
