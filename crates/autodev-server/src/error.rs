//! The API's one error shape: `{"error": {"code", "message", "field"?}}` with the right
//! status. A 5xx shows the client an opaque message and logs the whole cause.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every `code` an error can have (the OpenAPI document lists these as an enum).
pub const CODES: &[&str] = &[
    "unauthorized",
    "forbidden",
    "not_found",
    "webhook_disabled",
    "method_not_allowed",
    "timeout",
    "conflict",
    "too_large",
    "uri_too_long",
    "unsupported_media_type",
    "invalid",
    "malformed_json",
    "malformed_request",
    "missing_header",
    "rate_limited",
    "internal",
    "unavailable",
    "budget_exceeded",
    "no_model",
    "repository_unavailable",
    "index_unavailable",
    "model_failed",
    "too_many_streams",
    "too_many_asks",
    "not_merged",
    "already_reverted",
    "revert_conflict",
    "nothing_to_revert",
    "not_a_project_run",
];

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after: None }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    /// 429 with `Retry-After` (whole seconds, at least 1).
    pub fn rate_limited(key_name: &str, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("the key `{key_name}` is over its rate limit; retry after {}s", secs.max(1)),
            )
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self { field: Some(field.to_string()), ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message) }
    }
    /// An internal failure: logged in full, shown to the client as an opaque message.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the server log has the details")
    }
}

impl From<autodev_store::StoreError> for ApiError {
    fn from(e: autodev_store::StoreError) -> Self {
        use autodev_store::StoreError;
        match e {
            StoreError::RunNotFound(key) => ApiError::not_found(format!("no run `{key}`")),
            StoreError::NotFound(msg) => ApiError::not_found(msg),
            StoreError::Ambiguous(key) => {
                ApiError::invalid("id", format!("`{key}` matches several runs; give more of the id"))
            }
            StoreError::Transition { .. } | StoreError::Conflict(_) | StoreError::Leased { .. } => {
                ApiError::conflict(e.to_string())
            }
            other => ApiError::internal(&other),
        }
    }
}

/// What the engine refused or failed at, as the API says it: the store's errors as the store's,
/// a request the run's state does not allow (`EngineError::Invalid`) as a conflict, the rest
/// internal. (Where `Invalid` names a field of the request, the caller says which.)
impl From<autodev_engine::EngineError> for ApiError {
    fn from(e: autodev_engine::EngineError) -> Self {
        use autodev_engine::EngineError;
        match e {
            EngineError::Store(e) => e.into(),
            EngineError::Invalid(msg) => ApiError::conflict(msg),
            other => ApiError::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}

/// URIs longer than this are refused with 414 (hyper itself refuses those over 64 KiB before
/// the application sees them, with an empty body; this limit keeps Autodev's answer first).
pub const MAX_URI_BYTES: usize = 16 * 1024;

/// The code for a status that a layer below the handlers answered (axum's method router,
/// its path extractor, a body limit).
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "malformed_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "invalid",
        429 => "rate_limited",
        503 => "unavailable",
        _ if status.is_server_error() => "internal",
        _ => "malformed_request",
    }
}

/// Rewrites a response that is an error but not JSON yet (axum answers a wrong method with an
/// empty 405, a path it cannot decode with plain text; tower-http's body limit answers 413 in
/// plain text) into the one shape, its text as the message; its headers (`Allow`) stay.
async fn rewrite(response: Response) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if text.is_empty() {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                let allow = parts.headers.get(axum::http::header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
                format!("this endpoint does not take this method; it takes {allow}")
            }
            _ => status.canonical_reason().unwrap_or("error").to_string(),
        }
    } else {
        text
    };
    let mut fresh = ApiError::new(status, code_for(status), message).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    for (name, value) in &parts.headers {
        fresh.headers_mut().insert(name, value.clone());
    }
    fresh
}

/// Whether a response needs [`rewrite`]: an error that is not JSON.
fn needs_rewrite(response: &Response) -> bool {
    response.status().as_u16() >= 400
        && !response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

type Answer = Result<Response, std::convert::Infallible>;
type Rewritten = futures::future::Either<futures::future::Ready<Answer>, futures::future::BoxFuture<'static, Answer>>;

/// A layer that makes every error leave in the one shape (see [`rewrite`]) and answers URIs
/// over [`MAX_URI_BYTES`] with 414. Written as a tower service rather than
/// `axum::middleware::from_fn` so that the common path (a response that needs nothing) costs
/// a status check, not a boxed future per request.
#[derive(Clone, Copy, Default)]
pub struct JsonErrorsLayer;

impl<S> tower::Layer<S> for JsonErrorsLayer {
    type Service = JsonErrors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        JsonErrors { inner }
    }
}

#[derive(Clone)]
pub struct JsonErrors<S> {
    inner: S,
}

impl<S> tower::Service<axum::extract::Request> for JsonErrors<S>
where
    S: tower::Service<axum::extract::Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        futures::future::Ready<Answer>,
        futures::future::Then<S::Future, Rewritten, fn(Answer) -> Rewritten>,
    >;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        use futures::FutureExt;
        let uri = req.uri();
        if uri.path().len() + uri.query().map_or(0, str::len) > MAX_URI_BYTES {
            let answer = ApiError::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!("the URI is over {} KiB", MAX_URI_BYTES / 1024),
            )
            .into_response();
            return futures::future::Either::Left(futures::future::ready(Ok(answer)));
        }
        let then: fn(Answer) -> Rewritten = |answer| match answer {
            Ok(response) if needs_rewrite(&response) => {
                futures::future::Either::Right(async move { Ok(rewrite(response).await) }.boxed())
            }
            other => futures::future::Either::Left(futures::future::ready(other)),
        };
        futures::future::Either::Right(self.inner.call(req).then(then))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every code the server can send is in [`CODES`] (and so in the document).
    #[test]
    fn every_code_is_listed() {
        for status in 400..600u16 {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(CODES.contains(&code_for(status)), "{status}");
        }
        // Every source file of the crate, wherever a move puts it.
        let mut sources = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    sources.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
        let literal = regex::Regex::new(r#"ApiError::new\(\s*[A-Za-z_:]+,\s*"([a-z_]+)""#).unwrap();
        let mut seen = 0;
        for source in &sources {
            for c in literal.captures_iter(source) {
                assert!(CODES.contains(&&c[1]), "`{}` is not in CODES", &c[1]);
                seen += 1;
            }
        }
        assert!(seen >= 8, "the scan found {seen} codes");
    }
}
