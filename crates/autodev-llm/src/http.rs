//! Mapping vendor HTTP answers to [`ModelError`].
use std::time::Duration;

use autodev_domain::ModelError;
use reqwest::header::HeaderMap;

/// The longest wait a vendor may ask for before we give up on waiting politely.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The HTTP client every adapter uses: a bounded connect time, and a generous total time for
/// long generations (streams included). One per process, shared by every run's clients (a
/// clone is a reference): its connection pool and TLS configuration (the root store alone is
/// a few hundred kilobytes) are built once, not once per run.
///
/// Pooled connections live on the runtime that opened them, so the client is shared within
/// one tokio runtime (a process has one; each test has its own) and a new one is made for
/// another runtime.
pub fn client() -> reqwest::Client {
    static SHARED: std::sync::Mutex<Option<(tokio::runtime::Id, reqwest::Client)>> = std::sync::Mutex::new(None);
    let build = || {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap_or_default()
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current().map(|h| h.id()) else { return build() };
    let Ok(mut shared) = SHARED.lock() else { return build() };
    match &*shared {
        Some((id, client)) if *id == runtime => client.clone(),
        _ => {
            let client = build();
            *shared = Some((runtime, client.clone()));
            client
        }
    }
}

/// Reads `Retry-After` (seconds; an HTTP date is treated as "a while") and the
/// `retry-after-ms` header some vendors send.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers.get("retry-after-ms").and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64((ms / 1000.0).max(0.0)).min(MAX_RETRY_AFTER));
    }
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<f64>() {
        Ok(secs) => Some(Duration::from_secs_f64(secs.max(0.0)).min(MAX_RETRY_AFTER)),
        Err(_) => Some(Duration::from_secs(30)),
    }
}

/// The vendor's own message from an error body (`{"error": {"message": …}}` for both
/// OpenAI and Anthropic), else the body itself, cut short.
pub fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let msg = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    });
    let text = msg.unwrap_or_else(|| body.trim().to_string());
    if text.is_empty() { "(empty body)".to_string() } else { text.chars().take(500).collect() }
}

/// The wait Google's APIs ask for in the body (`google.rpc.RetryInfo`'s `retryDelay`,
/// `"17s"`), which they send instead of a `Retry-After` header.
fn retry_delay_in_body(body: &str) -> Option<Duration> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let delay = v.pointer("/error/details")?.as_array()?.iter().find_map(|d| d.get("retryDelay")?.as_str())?;
    let secs: f64 = delay.trim().strip_suffix('s')?.parse().ok()?;
    Some(Duration::from_secs_f64(secs.max(0.0)).min(MAX_RETRY_AFTER))
}

/// Classifies a non-success status.
pub fn status_error(provider: &str, status: u16, headers: &HeaderMap, body: &str) -> ModelError {
    let provider = provider.to_string();
    let message = error_message(body);
    let wait = || retry_after(headers).or_else(|| retry_delay_in_body(body));
    match status {
        401 | 403 => ModelError::Auth { provider, status, message },
        429 => ModelError::RateLimited { provider, retry_after: wait(), message },
        408 | 409 | 500..=599 => ModelError::Server { provider, status, retry_after: wait(), message },
        _ => ModelError::Request { provider, status, message },
    }
}

/// Sends a request to a vendor and returns the response if its status is a success, else the
/// classified error (the body read for the vendor's message). Every adapter sends through here.
pub async fn send(provider: &str, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, ModelError> {
    let resp = crate::telemetry::propagate(rb).send().await.map_err(|e| transport_error(provider, &e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    Err(status_error(provider, status.as_u16(), &headers, &text))
}

/// Classifies a transport error.
pub fn transport_error(provider: &str, err: &reqwest::Error) -> ModelError {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if err.is_decode() {
        ModelError::Malformed { provider: provider.to_string(), message }
    } else {
        ModelError::Network { provider: provider.to_string(), message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    #[test]
    fn statuses_are_classified_by_what_to_do() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let body = r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#;
        assert_eq!(
            status_error("openai", 429, &h, body),
            ModelError::RateLimited {
                provider: "openai".into(),
                retry_after: Some(Duration::from_secs(7)),
                message: "Rate limit reached".into()
            }
        );
        let e = status_error(
            "anthropic",
            401,
            &HeaderMap::new(),
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("invalid x-api-key"));
        assert!(status_error("x", 529, &HeaderMap::new(), "overloaded").is_retryable());
        assert!(!status_error("x", 404, &HeaderMap::new(), "").is_retryable());
        let mut ms = HeaderMap::new();
        ms.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&ms), Some(Duration::from_millis(1500)));
    }
}
