//! `/metrics` in the Prometheus text format (metrics + metrics-exporter-prometheus).
//!
//! HTTP requests and latency are recorded by a middleware; model calls, tokens, cost,
//! latency and tool calls by the engine (through the `metrics` facade, a no-op when no
//! recorder is installed, as in the CLI); runs by state, queue depth, the oldest queued run's
//! age and active agents are read from the store at scrape time, so they are right whichever
//! process does the work.
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;
use crate::state::AppState;

/// Latency buckets (seconds) for request and model-call histograms.
const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Buckets (seconds) for the time from a ticket to its merge or deploy: a minute to a month.
const LEAD_TIME_BUCKETS: &[f64] =
    &[60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0, 604800.0, 2592000.0];

/// The process-wide recorder, installed on first use.
pub fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Prefix("autodev_ticket_to_".into()),
                    LEAD_TIME_BUCKETS,
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("autodev_http_requests_total", "HTTP requests by method, route and status.");
    describe_histogram!(
        "autodev_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by method and route."
    );
    describe_gauge!("autodev_runs", "Runs by state.");
    describe_gauge!("autodev_queue_depth", "Runs made through the API waiting for a worker.");
    describe_gauge!("autodev_queue_oldest_age_seconds", Unit::Seconds, "Age of the oldest run waiting for a worker.");
    describe_gauge!("autodev_active_agents", "Tasks whose agent is running.");
    describe_gauge!(
        "autodev_data_dir_bytes",
        Unit::Bytes,
        "Size of this process's data directory (AUTODEV_HOME), measured every 5 minutes."
    );
    describe_counter!("autodev_model_calls_total", "Model calls by provider and model.");
    describe_counter!(
        "autodev_asks_total",
        "Questions answered from a project's code index, by whether the answer's citations checked out."
    );
    describe_counter!("autodev_model_tokens_total", "Model tokens by provider, model and direction.");
    describe_counter!("autodev_model_cost_micro_usd_total", "Model cost in millionths of a US dollar.");
    describe_histogram!(
        "autodev_model_call_duration_seconds",
        Unit::Seconds,
        "Model call latency by provider and model."
    );
    describe_counter!("autodev_tool_calls_total", "Agent tool calls by tool and outcome.");
    describe_counter!(
        "autodev_budget_warnings_total",
        "Runs that spent or reserved 80% of a cost limit, by limit (run, project_month, global_month)."
    );
    describe_counter!(
        "autodev_lease_renewals_late_total",
        "Run lease renewals that came after half the lease had passed (a busy or stalled process)."
    );
    describe_counter!(
        "autodev_leases_lost_total",
        "Drivers that stopped because another worker had taken their run over."
    );
    describe_counter!(
        "autodev_commands_refused_total",
        "Comment commands refused because their author lacks the project's trigger_min_permission, by source."
    );
    describe_counter!(
        "autodev_budget_denials_total",
        "Model calls not made because their worst case would pass a limit, by limit."
    );
    describe_counter!(
        "autodev_model_retries_total",
        "Model call attempts retried after a retryable failure, by provider."
    );
    describe_gauge!("autodev_model_breaker_state", "A provider's circuit breaker: 0 closed, 1 half-open, 2 open.");
    describe_counter!("autodev_model_breaker_opened_total", "Times a provider's circuit breaker opened.");
    describe_counter!(
        "autodev_model_breaker_rejections_total",
        "Model calls refused at once because the provider's breaker was open."
    );
    describe_counter!("autodev_model_fallbacks_total", "Model calls switched to a fallback provider, by from and to.");
    describe_counter!(
        "autodev_model_rate_limit_waits_total",
        "Model calls that waited for the provider's requests or tokens per minute."
    );
    describe_histogram!(
        "autodev_model_rate_limit_wait_seconds",
        Unit::Seconds,
        "How long model calls waited for the provider's rate limit."
    );
    describe_counter!(
        "autodev_ci_checks_total",
        "Finished checks (check suites, check runs, workflow runs, pipelines) on Autodev's pull requests, by conclusion."
    );
    describe_counter!(
        "autodev_ci_follow_ups_started_total",
        "Follow-up runs started by failing CI on Autodev's pull requests."
    );
    describe_counter!(
        "autodev_ci_follow_ups_refused_total",
        "Failing CI on Autodev's pull requests that started no follow-up, by reason (off, rounds, active, not_autodev_commit)."
    );
    describe_counter!(
        "autodev_merges_total",
        "Autodev's pull requests merged (merged=true) or closed unmerged (merged=false)."
    );
    describe_counter!("autodev_deploys_requested_total", "Deploys of merged changes asked of the team's CD, by how.");
    describe_counter!(
        "autodev_deploys_total",
        "Deployments of merged changes seen, by result (deployed, deploy_failed)."
    );
    describe_histogram!(
        "autodev_ticket_to_merge_seconds",
        Unit::Seconds,
        "From a run's creation (its ticket) to the merge of its pull request."
    );
    describe_histogram!(
        "autodev_ticket_to_deploy_seconds",
        Unit::Seconds,
        "From a run's creation (its ticket) to the first successful deployment of its change."
    );
    describe_counter!(
        "autodev_trace_spans_dropped_total",
        "Spans the trace exporter could not send (a receiver that is down or refuses them): dropped, nothing else."
    );
    describe_counter!("autodev_trace_spans_exported_total", "Spans the trace exporter sent.");
    describe_counter!("autodev_reverts_total", "Reverts of merged changes asked for (each opens a revert run).");
    describe_counter!("autodev_protected_path_refusals_total", "Agent writes refused at a protected path.");
    describe_counter!(
        "autodev_protected_path_reverts_total",
        "Changes at a protected path made by an agent's command and put back before the commit."
    );
}

/// A span per API and webhook request when the process exports traces (nothing otherwise):
/// a child of the caller's W3C `traceparent` when it sent one, so a run made by the request
/// continues the caller's trace (the ticket system's, a CI job's); the answer carries the
/// request span's own `traceparent`.
pub async fn trace(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    use tracing::Instrument;
    if !autodev_engine::telemetry::enabled() {
        return next.run(req).await;
    }
    let route = matched.map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let span = tracing::info_span!(
        "autodev.http",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let parent = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
    autodev_engine::telemetry::set_parent(&span, parent.as_deref());
    autodev_engine::telemetry::record_ids(&span);
    let own = autodev_engine::telemetry::traceparent(&span);
    let mut response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
    if let Some(value) = own.and_then(|tp| axum::http::HeaderValue::from_str(&tp).ok()) {
        response.headers_mut().insert("traceparent", value);
    }
    response
}

/// Records every request's count and latency by its route template (not the raw path, so
/// run ids do not explode the label set).
pub async fn track(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = matched.map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("autodev_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("autodev_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label value: the standard methods by name, anything else (a client can
/// send any token as a method) as `other`, so no client can add series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

pub async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    let handle = handle().ok_or_else(|| ApiError::internal(&std::io::Error::other("no metrics recorder")))?;
    let stats = state.store.stats().await?;
    for st in autodev_domain::RunState::ALL {
        let n = stats.runs_by_state.iter().find(|(s, _)| s == st.as_str()).map_or(0, |(_, n)| *n);
        metrics::gauge!("autodev_runs", "state" => st.as_str()).set(n as f64);
    }
    metrics::gauge!("autodev_queue_depth").set(stats.queue_depth as f64);
    let age = stats.oldest_queued_ms.map_or(0.0, |at| (autodev_store::now_ms() - at).max(0) as f64 / 1000.0);
    metrics::gauge!("autodev_queue_oldest_age_seconds").set(age);
    metrics::gauge!("autodev_active_agents").set(stats.running_tasks as f64);
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response())
}
