//! Traces out: OpenTelemetry over OTLP (HTTP/protobuf), configured by the standard variables
//! and off unless one is set.
//!
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://collector:4318`, the exporter adds `/v1/traces`)
//!   or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) turns it on; `OTEL_SDK_DISABLED=true`
//!   keeps it off.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` / `_TRACES_PROTOCOL`: `http/protobuf` (the default; gRPC is
//!   not built in: a clear error says so). `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT` as the
//!   exporter reads them.
//! - `OTEL_SERVICE_NAME` (default `autodev`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
//!   (and `_ARG`): read by the SDK.
//!
//! Spans leave through the SDK's batch processor, on its own thread with a bounded queue: an
//! export that fails (a receiver that is down) drops that batch, counted in
//! `autodev_trace_spans_dropped_total`, and never slows or fails a run.
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

/// The exporter, counting what it sends and what it drops.
#[derive(Debug)]
struct Counted(opentelemetry_otlp::SpanExporter);

impl SpanExporter for Counted {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.0.export(batch).await;
        match &result {
            Ok(()) => metrics::counter!("autodev_trace_spans_exported_total").increment(n),
            Err(_) => metrics::counter!("autodev_trace_spans_dropped_total").increment(n),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Whether the environment asks for traces.
pub fn wanted() -> bool {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some())
}

/// The tracer provider the environment asks for (`Ok(None)`: tracing is off), or why it
/// cannot be made.
pub fn provider() -> Result<Option<SdkTracerProvider>, String> {
    if !wanted() {
        return Ok(None);
    }
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(p) = protocol.as_deref().filter(|p| *p != "http/protobuf") {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={p} is not supported: Autodev exports OTLP over http/protobuf (a collector's port 4318); set it to http/protobuf or leave it out"
        ));
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: the OTLP exporter cannot be made: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("autodev");
    }
    let resource =
        resource.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
    Ok(Some(SdkTracerProvider::builder().with_batch_exporter(Counted(exporter)).with_resource(resource).build()))
}

/// The tracer spans are exported with.
pub fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("autodev")
}

/// Sends what is still queued and stops the exporter (at exit; a receiver that is down costs at
/// most the exporter's timeout).
pub fn shutdown(provider: SdkTracerProvider) {
    if let Err(e) = provider.shutdown() {
        tracing::debug!(error = %e, "the trace exporter did not shut down cleanly");
    }
}
