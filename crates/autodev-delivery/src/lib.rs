//! Delivery: telling the places a team works about a run's milestones — a pull request and a
//! ticket comment on GitHub, a Slack message, signed outgoing webhooks.
//!
//! The store writes each milestone (`run.plan_ready`, `run.awaiting_approval`,
//! `run.succeeded`, `run.failed`, `run.cancelled`, `run.pr_opened`) to its outbox in the
//! transaction of the change that causes it. A [`Dispatcher`] in every `serve`/`worker`
//! process claims due milestones with a lease and hands each to every [`Target`] that wants
//! it. Each call is rate-limited per target and retried in place on 5xx, timeouts and 429
//! (honouring `Retry-After`); what still fails is tried again later with a growing delay, and
//! after [`MAX_ATTEMPTS`] it is marked failed (`delivery_failed`) until `autodev deliver RUN`
//! or `POST /api/v1/runs/{id}/deliver`. Targets that succeeded are not called again. Nothing
//! here changes a run's state: a run that succeeded stays succeeded whatever its deliveries do.
//!
//! Idempotency across crashes comes from the targets: a pull request is looked up by its head
//! branch before one is opened, the ticket comment carries a marker it is found by, and
//! webhook deliveries carry a stable `X-Autodev-Delivery` id for receivers to deduplicate.
//!
//! # Layout
//! - `target`: the [`Milestone`] a target is told, [`CallError`], the [`Target`] trait.
//! - `dispatch`: [`DeliveryConfig`], the [`Dispatcher`] (claims, rate limits, retries) and how
//!   deliveries are shown ([`report_section`], [`deliveries_json`]).
//! - one file per target: `github` (pull requests, issue comments, a GitHub App's tokens),
//!   `gitlab`, `jira`, `confluence`, `webhook` (signed webhooks, Slack); `text` escapes what
//!   goes into each vendor's markup.
//! - `view`: the run as the API and webhooks show it ([`view::RunView`]).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod confluence;
mod dispatch;
pub mod github;
pub mod gitlab;
pub mod jira;
mod target;
pub mod text;
pub mod view;
pub mod webhook;

pub use dispatch::{
    DeliveryConfig, DeliveryView, Dispatcher, MAX_ATTEMPTS, deliveries, deliveries_json, report_section,
};
pub use target::{CallError, Milestone, TIMELINE_TOPICS, Target};
