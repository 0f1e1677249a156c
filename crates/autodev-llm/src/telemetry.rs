//! Traces: every run is one OpenTelemetry trace, written through `tracing` spans that
//! `tracing-opentelemetry` exports when the process turned tracing on (`autodev` does when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Off, nothing here does any work.
//!
//! A run's trace starts where the run is made (its creation span, a child of the caller's
//! `traceparent` when an API request or a webhook carried one); its W3C `traceparent` is stored
//! with the run (`RunSettings::trace_parent`), so every process that drives it later (after a
//! gate, a crash, on another worker) continues the same trace: each drive is a span of its own
//! under the creation span, with the phases, tasks, model calls, tool calls and test rounds
//! under it. No span stays open across a wait. A follow-up run (review feedback, failing CI, a
//! revert) links to the trace of the run it follows.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the helpers on (the process installed an OpenTelemetry layer).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether this process exports traces.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of `span`; `None` when tracing is off or the span is not sampled.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The context a `traceparent` names (an empty one when it is malformed).
pub fn context_of(traceparent: &str) -> opentelemetry::Context {
    let carrier: HashMap<String, String> = [("traceparent".to_string(), traceparent.to_string())].into();
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` a child of `traceparent` (a stored run's, or a caller's).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let (true, Some(tp)) = (enabled(), traceparent) {
        let cx = context_of(tp);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}

/// Adds the current span's `traceparent` to an outgoing request (a model provider, a forge, a
/// chat or ticket system: those that trace continue the run's trace; the others ignore it).
pub fn propagate(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match traceparent(&tracing::Span::current()) {
        Some(tp) => request.header("traceparent", tp),
        None => request,
    }
}

/// Links `span` to the trace `traceparent` names (a follow-up to the run it follows).
pub fn link(span: &tracing::Span, traceparent: &str) {
    if !enabled() {
        return;
    }
    let cx = context_of(traceparent);
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.add_link(sc);
    }
}

/// The trace id of `span` in hex, for logs.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The span id of `span` in hex, for logs.
pub fn span_id(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_string())
}

/// Records `trace_id` and `span_id` on `span` (declared as empty fields), so every log line
/// written inside it leads to its trace.
pub fn record_ids(span: &tracing::Span) {
    if let (Some(t), Some(s)) = (trace_id(span), span_id(span)) {
        span.record("trace_id", t.as_str());
        span.record("span_id", s.as_str());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn a_traceparent_reads_back() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = super::context_of(tp);
        use opentelemetry::trace::TraceContextExt;
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!super::context_of("nonsense").span().span_context().is_valid());
    }
}
