//! Traces: the helpers live in `autodev_llm::telemetry` (the lowest crate that makes outgoing
//! requests, which carry the `traceparent`); the engine, the server and delivery use them
//! from here.
pub use autodev_llm::telemetry::*;
