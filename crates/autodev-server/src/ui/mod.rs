//! The web UI: server-rendered HTML (maud) on the API's port, with a small script of our own
//! for live updates (an `EventSource` on the run's events, and a refresh of the runs list).
//! No build step, no CDN: the stylesheet and the script are compiled into the binary.
//!
//! maud rather than askama (CRATES.md's pick): pages here are built from small components
//! (badges, tables, forms with their CSRF token) that are plain Rust functions in maud,
//! checked by the compiler the same way, without a template directory to keep in step.
//!
//! Every action goes through the service layer (`crate::service`) with the signed-in key as
//! the caller: the same roles, validation and audit records as `curl`.
//!
//! Sessions: `/login` takes an API key; a random token goes into an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` behind TLS), expiring after 12 hours; only its keyed hash
//! is stored, with the key it acts as (a revoked key ends its sessions). Forms carry the
//! session's CSRF token, and a POST whose `Origin` is another site is refused.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};

use crate::state::AppState;

mod admin;
mod ask;
mod diff;
mod page;
mod runs;
mod svg;

pub use page::{COOKIE, Session};
use page::{login, login_page, logout};

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// The UI's routes, relative to the UI's base path.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|State(s): State<AppState>| async move { Redirect::to(&s.url("/runs")) }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/runs", get(runs::list))
        .route("/runs/new", get(runs::new_page).post(runs::create))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/live", get(runs::live))
        .route("/runs/{id}/stream", get(runs::stream))
        .route("/runs/{id}/artifacts/{name}", get(runs::artifact))
        .route("/runs/{id}/{action}", post(runs::act))
        .route("/projects", get(admin::projects).post(admin::create_project))
        .route("/projects/{id}", post(admin::update_project))
        .route("/usage", get(admin::usage))
        .route("/ask", get(ask::page_get).post(ask::submit))
        .route("/ask/stream", post(ask::stream))
        .route("/keys", get(admin::keys).post(admin::create_key))
        .route("/keys/{id}/revoke", post(admin::revoke_key))
        .route("/ui/ui.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/ui/ui.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        // What the browser is told about every page: only this site's script, styles and
        // forms; never framed (clickjacking); no type sniffing; no page address sent elsewhere.
        .layer(page_header("content-security-policy", CSP))
        .layer(page_header("x-frame-options", "DENY"))
        .layer(page_header("x-content-type-options", "nosniff"))
        .layer(page_header("referrer-policy", "same-origin"))
}

/// A file compiled into the binary, cached by browsers for an hour.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body)
}

/// The pages' Content-Security-Policy.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn page_header(name: &'static str, value: &'static str) -> tower_http::set_header::SetResponseHeaderLayer<HeaderValue> {
    tower_http::set_header::SetResponseHeaderLayer::if_not_present(
        header::HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}
