//! Request extractors whose every failure is the API's error shape, with the field at fault.
//!
//! axum's own extractors answer in plain text (`Failed to deserialize query string: …`), and
//! a body extractor that fails before the handler runs answers 400 to a caller the handler
//! would have refused with 403. So bodies are read here but judged by the handler, after it
//! has checked the caller's role; query strings are parsed here with the parameter named.
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Request bodies larger than this are refused with 413 (`too_large`).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the request body is over 1 MiB")
}

/// The body's bytes, or why they could not be read (too large; the connection failed).
async fn read(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_request", rejection.body_text())
        }
    })
}

/// A raw body (webhooks verify a signature over the exact bytes).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        read(req).await.map(RawBody)
    }
}

/// A JSON body, read but not yet judged: the handler checks the caller first, then calls
/// [`JsonBody::parse`] or [`JsonBody::parse_optional`].
pub struct JsonBody {
    content_type: Option<String>,
    bytes: Result<Bytes, ApiError>,
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        Ok(Self { content_type, bytes: read(req).await })
    }
}

/// `application/json`, or any `application/*+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl JsonBody {
    /// A body made in-process (the web UI calls the API's handlers with its forms' values).
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self { content_type: Some("application/json".into()), bytes: Ok(Bytes::from(value.to_string())) }
    }

    /// The body as `T`; a missing body is an error.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        self.parse_optional()?.ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "the request has no body: send a JSON object")
        })
    }

    /// The body as `T`, or `None` when there is no body (empty, whatever its content type).
    pub fn parse_optional<T: DeserializeOwned>(self) -> Result<Option<T>, ApiError> {
        let bytes = self.bytes?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if !self.content_type.as_deref().is_some_and(is_json) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        from_json(&bytes).map(Some)
    }
}

/// JSON into `T`: 400 `malformed_json` for text that is not JSON, 422 `invalid` naming the
/// field for JSON of the wrong shape.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not valid JSON: {e}"))
    };
    // Every body is an object; serde would also take a struct from an array of its fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::invalid("body", "the body must be a JSON object")),
            Err(e) => Err(malformed(e)),
        };
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = field_of(&e.path().to_string(), &e.inner().to_string());
        let inner = e.into_inner();
        if inner.is_data() { ApiError::invalid(&field, inner.to_string()) } else { malformed(inner) }
    })?;
    // Anything after the value (`{} x`) is malformed too.
    de.end().map_err(malformed)?;
    Ok(value)
}

/// The field an error is about: its path, or for an unknown, missing or repeated field at the
/// top level (whose path is `.`) the name in the message; `body` for the body as a whole.
fn field_of(path: &str, message: &str) -> String {
    for prefix in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.split(prefix).nth(1)
            && let Some((name, _)) = rest.split_once('`')
        {
            // An unknown field's path ends with it already; a missing one's is its parent.
            return if path == "." || path.is_empty() {
                name.to_string()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path.to_string()
            } else {
                format!("{path}.{name}")
            };
        }
    }
    if path == "." || path.is_empty() { "body".to_string() } else { path.to_string() }
}

/// Query parameters as `T`: 422 `invalid` naming the parameter for a bad value, an unknown
/// parameter or one given twice.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default().as_bytes();
        let mut seen = std::collections::HashSet::new();
        for (name, _) in form_urlencoded::parse(query) {
            if !seen.insert(name.clone()) {
                return Err(ApiError::invalid(&name, format!("`{name}` is given more than once; give it once")));
            }
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let message = e.inner().to_string();
            let field = field_of(&e.path().to_string(), &message);
            let message = match message.split_once("unknown field `") {
                Some(_) => format!("{message} (query parameter `{field}`)"),
                None => format!("query parameter `{field}`: {message}"),
            };
            ApiError::invalid(if field == "body" { "query" } else { &field }, message)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    #[test]
    fn json_errors_name_the_field() {
        let field = |body: &str| {
            let e = from_json::<Body>(body.as_bytes()).unwrap_err();
            (e.status.as_u16(), e.code, e.field.unwrap_or_default())
        };
        assert_eq!(field(r#"{"name": 1}"#), (422, "invalid", "name".into()));
        assert_eq!(field(r#"{}"#), (422, "invalid", "name".into()));
        assert_eq!(field(r#"{"name": "a", "nme": 1}"#), (422, "invalid", "nme".into()));
        assert_eq!(field(r#"{"name": "a", "inner": {"n": 300}}"#), (422, "invalid", "inner.n".into()));
        assert_eq!(field(r#"{"name": "a", "inner": {"m": 1}}"#), (422, "invalid", "inner.m".into()));
        assert_eq!(field(r#"[1]"#), (422, "invalid", "body".into()));
        assert_eq!(field(r#"{"name": "a"} x"#).1, "malformed_json");
        assert_eq!(field("\0").1, "malformed_json");
        assert_eq!(field(r#"{"name": "a""#).1, "malformed_json");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonx"));
    }
}
