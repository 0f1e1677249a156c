//! A run's trace context: made at creation (under the caller's span), stored with the run, and
//! linked to the trace of the run it follows.
use autodev_domain::Spec;
use autodev_engine::RunRequest;
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt as _;

use super::harness::*;

#[tokio::test(flavor = "current_thread")]
async fn a_run_stores_its_trace_and_links_to_the_run_it_follows() {
    let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider =
        opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    autodev_engine::telemetry::enable();
    let app = TestApp::new().await;
    // The run it follows (a pull request's first run, say) was traced elsewhere.
    let followed = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = RunRequest {
        repo: app.repo.clone(),
        spec: Spec::parse(b"# Follow up\n\nMore.").unwrap(),
        base: None,
        settings: autodev_engine::RunSettings { trace_parent: Some(followed.into()), ..settings() },
    };
    let run = app.engine.create_run(req).await.unwrap();
    let stored = run.settings().unwrap().trace_parent.expect("a trace context stored with the run");
    assert_ne!(stored, followed, "a new trace of its own");
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let created = spans.iter().find(|s| s.name == "run created").expect("the creation span");
    assert_eq!(stored, format!("00-{}-{}-01", created.span_context.trace_id(), created.span_context.span_id()));
    let links: Vec<String> = created.links.iter().map(|l| l.span_context.trace_id().to_string()).collect();
    assert_eq!(links, ["4bf92f3577b34da6a3ce929d0e0e4736"], "linked to the run it follows");
    assert!(
        created.attributes.iter().any(|kv| kv.key.as_str() == "autodev.run.id" && kv.value.as_str() == run.id.as_str())
    );
}
