//! What every page shares: the session (sign-in, sign-out, the cookie, the CSRF check), the
//! layout, error pages and small formatters.
use std::sync::Arc;

use autodev_domain::AccessRole;
use autodev_store::KeyRow;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "autodev_session";
/// How long a session lasts.
const SESSION_HOURS: i64 = 12;

/// A signed-in browser.
pub struct Session {
    pub key: Arc<KeyRow>,
    pub role: AccessRole,
    pub csrf: String,
}

impl Session {
    /// The same caller the API would see for this key.
    pub fn caller(&self) -> Caller {
        Caller { key: self.key.clone(), role: self.role, via: crate::caller::Via::Ui }
    }

    pub fn can(&self, role: AccessRole) -> bool {
        self.role.allows(role)
    }
}

/// A page for a visitor without a session: to `/login`, coming back afterwards.
pub struct ToLogin(String);

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        Redirect::to(&self.0).into_response()
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let back = || {
            let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/runs");
            let next = form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>();
            ToLogin(state.url(&format!("/login?next={next}"))).into_response()
        };
        let Some(token) = cookie_value(&parts.headers, COOKIE).filter(|t| t.len() == 64) else { return Err(back()) };
        let id = state.pepper.hash(&format!("session:{token}"));
        match state.store.session(&id).await {
            Ok(Some((key, csrf))) => {
                let role = key.role.parse().unwrap_or(AccessRole::Viewer);
                if let Err(wait) = state.guard.check_rate(&key.id) {
                    return Err(error_page(
                        state,
                        None,
                        StatusCode::TOO_MANY_REQUESTS,
                        &format!(
                            "Too many requests for the key `{}`; try again in {} s.",
                            key.name,
                            wait.as_secs().max(1)
                        ),
                    ));
                }
                Ok(Session { key: Arc::new(key), role, csrf })
            }
            Ok(None) => Err(back()),
            Err(e) => Err(error_page(state, None, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
        }
    }
}

/// The projects the session's key sees (all of them, unless it is scoped to some).
pub async fn visible_projects(
    state: &AppState,
    session: &Session,
) -> Result<Vec<autodev_store::ProjectRow>, autodev_store::StoreError> {
    let caller = session.caller();
    Ok(state.store.list_projects().await?.into_iter().filter(|p| caller.sees(Some(&p.id))).collect())
}

/// Refuses a form whose CSRF token is not the session's, or whose `Origin` is another site.
/// The most a form's body may hold: axum's default body limit, which the pages' forms have
/// always had (the API's own limit is `crate::extract::MAX_BODY_BYTES`).
const FORM_MAX_BYTES: usize = 2 * 1024 * 1024;

/// A form posted by a signed-in browser from one of this site's pages: the session, and the
/// form once its CSRF token and origin have been checked (a refusal is the 403 page, a bad
/// session the sign-in page, a bad form axum's own rejection).
pub struct SignedForm<T> {
    pub session: Session,
    pub form: T,
}

impl<T: serde::de::DeserializeOwned + Send> axum::extract::FromRequest<AppState> for SignedForm<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, Self::Rejection> {
        /// The token every form of the UI carries, whatever else it holds.
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            csrf: String,
        }
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let headers = parts.headers.clone();
        let bytes = axum::body::to_bytes(body, FORM_MAX_BYTES)
            .await
            .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response())?;
        let token = serde_urlencoded::from_bytes::<Token>(&bytes).map(|t| t.csrf).unwrap_or_default();
        let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        let Form(form) = Form::<T>::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        check_form(state, &session, &headers, &token).map_err(|refused| *refused)?;
        Ok(SignedForm { session, form })
    }
}

fn check_form(state: &AppState, session: &Session, headers: &HeaderMap, token: &str) -> Result<(), Box<Response>> {
    use subtle::ConstantTimeEq;
    let same = token.len() == session.csrf.len() && bool::from(token.as_bytes().ct_eq(session.csrf.as_bytes()));
    if !same || !same_origin(state, headers) {
        return Err(Box::new(error_page(
            state,
            Some(session),
            StatusCode::FORBIDDEN,
            "This form did not come from this site's page (its CSRF token or origin does not match). Reload the page and try again.",
        )));
    }
    Ok(())
}

/// Whether a request's `Origin` (when the browser sends one) is this site: the public URL's
/// origin, or the `Host` the request came to.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    if origin == "null" {
        return false;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split("://").nth(1).unwrap_or_default();
    if !host.is_empty() && origin_host == host {
        return true;
    }
    state
        .public_url
        .as_deref()
        .is_some_and(|public| reqwest::Url::parse(public).is_ok_and(|u| u.origin().ascii_serialization() == origin))
}

/// The page frame: navigation by role, the heading, the content.
pub fn page(state: &AppState, session: Option<&Session>, title: &str, body: Markup) -> Markup {
    let nav = |path: &str, label: &str| html! { a href=(state.url(path)) { (label) } };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Autodev" }
                link rel="stylesheet" href=(state.url("/ui/ui.css"));
                script src=(state.url("/ui/ui.js")) defer {}
            }
            body data-base=(state.base_path) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href=(state.url("/runs")) { "Autodev" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            (nav("/runs", "Runs"))
                            @if s.can(AccessRole::Operator) { (nav("/runs/new", "New run")) }
                            (nav("/projects", "Projects"))
                            (nav("/ask", "Ask"))
                            (nav("/usage", "Usage"))
                            @if s.can(AccessRole::Admin) { (nav("/keys", "Keys")) }
                        }
                        form.logout method="post" action=(state.url("/logout")) {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span.who { (s.key.name) " (" (s.role) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// An HTML page for an error.
pub fn error_page(state: &AppState, session: Option<&Session>, status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => "Check the form",
        StatusCode::CONFLICT => "Not now",
        _ => "Something went wrong",
    };
    let body = html! {
        h1 { (title) }
        p.error role="alert" { (message) }
        p { a href=(state.url("/runs")) { "Back to the runs" } }
    };
    (status, Html(page(state, session, title, body).into_string())).into_response()
}

/// An API error as a page.
pub fn api_error(state: &AppState, session: &Session, e: ApiError) -> Response {
    let message = match &e.field {
        Some(field) => format!("{}: {}", field, e.message),
        None => e.message.clone(),
    };
    error_page(state, Some(session), e.status, &message)
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

pub(super) async fn login_page(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<LoginQuery>,
) -> Html<String> {
    Html(login_form(&state, q.next.as_deref(), None).into_string())
}

fn login_form(state: &AppState, next: Option<&str>, error: Option<&str>) -> Markup {
    page(
        state,
        None,
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p.error role="alert" #login-error { (e) } }
            form.card method="post" action=(state.url("/login")) {
                label for="key" { "API key" }
                input #key type="password" name="key" autocomplete="current-password" required
                    placeholder="adk_…" aria-describedby="key-help";
                p.help #key-help { "A key from " code { "autodev keys create" } "; your role is the key's." }
                @if let Some(n) = next { input type="hidden" name="next" value=(n); }
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    key: String,
    next: Option<String>,
}

/// Where to go after signing in: a page of this site only, given exactly (a path under the
/// UI's base, of URL-safe characters: no scheme, no `//host`, no backslash, and no tab or
/// newline, which browsers drop, turning `/\t/evil.example` into `//evil.example`).
fn next_page(state: &AppState, next: Option<&str>) -> String {
    let base = state.url("/");
    next.filter(|n| {
        n.starts_with(&base)
            && !n.starts_with("//")
            && !n[1..].starts_with('/')
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~?=&%+:,".contains(&b))
            && !n.contains("/login")
            && !n.contains("/logout")
    })
    .map(str::to_string)
    .unwrap_or_else(|| state.url("/runs"))
}

pub(super) async fn login(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&state, &headers) {
        return error_page(&state, None, StatusCode::FORBIDDEN, "The sign-in form came from another site.");
    }
    let client = client.map(|Extension(ConnectInfo(addr))| addr.ip());
    if let Err(wait) = state.guard.check_sign_in(client) {
        let page =
            login_form(&state, form.next.as_deref(), Some("Too many sign-in attempts from here; wait a minute."));
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Html(page.into_string())).into_response();
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let key = form.key.trim();
    let found = state.guard.authenticate(&state.store, &state.pepper, key).await;
    let (row, _) = match found {
        Ok(Some(found)) => found,
        Ok(None) => {
            let page = login_form(&state, form.next.as_deref(), Some("That key is not valid (or was revoked)."));
            return (StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response();
        }
        Err(e) => return error_page(&state, None, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (token, csrf) = match (crate::auth::random_hex(32), crate::auth::random_hex(32)) {
        (Ok(t), Ok(c)) => (t, c),
        (Err(e), _) | (_, Err(e)) => {
            return error_page(&state, None, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    };
    let expires = autodev_store::now_ms() + SESSION_HOURS * 3_600_000;
    let id = state.pepper.hash(&format!("session:{token}"));
    if let Err(e) = state.store.create_session(&id, &row.hash, &csrf, expires).await {
        return error_page(&state, None, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let _ = state.store.audit(Some(&row), "POST", "/login", 303, None).await;
    let next = next_page(&state, form.next.as_deref());
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(&state, &headers, &token, SESSION_HOURS * 3600)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The session cookie: `HttpOnly`, `SameSite=Strict`, scoped to the UI's path, `Secure`
/// when the site is served over TLS (the public URL, or the proxy says so).
fn cookie(state: &AppState, headers: &HeaderMap, value: &str, max_age: i64) -> String {
    let tls = state.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
        || headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let path = if state.base_path.is_empty() { "/" } else { state.base_path.as_str() };
    format!(
        "{COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if tls { "; Secure" } else { "" }
    )
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    // Required here (a sign-out without a token is refused as a malformed form); its value is
    // checked by `SignedForm`.
    #[expect(dead_code, reason = "read by SignedForm from the raw form")]
    csrf: String,
}

/// Signs out: a POST from this site's page with the session's CSRF token (a link or an image
/// elsewhere cannot sign anyone out).
pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap, _: SignedForm<LogoutForm>) -> Response {
    if let Some(token) = cookie_value(&headers, COOKIE) {
        let id = state.pepper.hash(&format!("session:{token}"));
        let _ = state.store.delete_session(&id).await;
    }
    let mut response = Redirect::to(&state.url("/login")).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(&state, &headers, "", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// "3m ago", "2h ago".
pub fn age(ms: i64) -> String {
    let secs = (autodev_store::now_ms() - ms).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3_600 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3_600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// "42 s", "3 min 5 s".
pub fn duration(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    if secs < 60 { format!("{secs} s") } else { format!("{} min {} s", secs / 60, secs % 60) }
}

pub fn usd(micros: i64) -> String {
    autodev_domain::MicroUsd(micros).to_string()
}

/// A run or task state as a badge: its name in words, and a colour (never the colour alone).
pub fn badge(state: &str) -> Markup {
    html! { span class=(format!("badge s-{}", state.replace(' ', "_"))) { (state.replace('_', " ")) } }
}
