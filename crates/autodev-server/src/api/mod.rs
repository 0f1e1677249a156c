//! The REST API (`/api/v1/…`): thin adapters that parse the request's JSON, path and query
//! into the service layer's typed requests and serialise what it returns. Authentication is
//! the [`Caller`](crate::caller::Caller) extractor; the routes are in `app.rs`.
pub mod projects;
pub mod runs;
