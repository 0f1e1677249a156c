//! A receipt: a delivery stored under its id before anything acts on it, then acted on once.
use autodev_domain::Spec;
use autodev_engine::{EngineError, RunSettings, checkout};
use autodev_store::ProjectRow;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Feedback, Intent, github_repo_of};
use crate::commanders::{Rule, may_command};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::run_json;

/// The project a ticket belongs to: settings `github_repo`/`gitlab_project`/`jira_project`,
/// or for GitHub a repository URL on github.com naming the same repository.
async fn project_for(state: &AppState, source: &str, place: &str) -> Result<Option<ProjectRow>, ApiError> {
    let projects = state.store.list_projects().await?;
    Ok(projects.into_iter().find(|p| {
        let settings = p.settings();
        let named = match source {
            "github" => settings.github_repo,
            "gitlab" => settings.gitlab_project,
            _ => settings.jira_project,
        };
        if named.is_some_and(|s| s.eq_ignore_ascii_case(place)) {
            return true;
        }
        source == "github" && github_repo_of(&p.repository).is_some_and(|r| r.eq_ignore_ascii_case(place))
    }))
}

/// Acts on an understood delivery: creates the run, or says why not. Returns the HTTP
/// status, the answer, the outcome to store and the run id.
async fn act(
    state: &AppState,
    source: &str,
    intent: Intent,
) -> Result<(StatusCode, Value, String, Option<String>), ApiError> {
    let ticket = match intent {
        Intent::Ignore(why) => {
            return Ok((StatusCode::OK, json!({"status": "ignored", "reason": why}), format!("ignored: {why}"), None));
        }
        Intent::FollowUp(feedback) => return follow_up(state, feedback).await,
        Intent::After(news) => return super::after::act(state, news).await,
        Intent::Start(t) => t,
    };
    let ignored = |why: String| {
        Ok((StatusCode::OK, json!({"status": "ignored", "reason": why}), format!("ignored: {why}"), None))
    };
    let Some(project) = project_for(state, source, &ticket.place).await? else {
        return ignored(format!("no project is configured for {source} `{}`", ticket.place));
    };
    if let Some(by) = &ticket.by
        && let Err(why) = may_command(&state.forges, source, &ticket.place, by, &Rule::of(&project.settings())).await
    {
        tracing::warn!(source, place = %ticket.place, login = %by.login, "{why}");
        return ignored(why);
    }
    if let Some(active) = state.store.active_run_for_origin(&ticket.origin).await? {
        return ignored(format!("run {} for {} is still {}", active.short_id, ticket.origin, active.state));
    }
    let mut text = format!("# {}\n\n{}\n", ticket.title.trim(), ticket.body.trim());
    if let Some(extra) = ticket.extra.as_deref().filter(|e| !e.is_empty()) {
        text.push_str(&format!("\n## Requested in a comment\n\n{extra}\n"));
    }
    if let Some(url) = &ticket.url {
        text.push_str(&format!("\nTicket: {url}\n"));
    }
    let spec = match Spec::parse(text.as_bytes()) {
        Ok(spec) => spec,
        Err(e) => return ignored(format!("the ticket is not a usable spec: {e}")),
    };
    let settings =
        RunSettings { test_command: project.test_command.clone().unwrap_or_default(), ..state.models.run_settings() };
    if let Err(e) = state.models.check(&settings) {
        return ignored(format!("no model client: {e}"));
    }
    let req = checkout::ProjectRun {
        project: &project,
        spec,
        settings,
        origin: Some(ticket.origin.clone()),
        audit: None,
        base_branch: None,
    };
    match checkout::enqueue(&state.store, req).await {
        Ok((run, _)) => {
            tracing::info!(run = %run.id, origin = %ticket.origin, "run created from a webhook");
            let id = run.id.clone();
            Ok((
                StatusCode::CREATED,
                json!({"status": "created", "run": run_json(&run)}),
                "run created".into(),
                Some(id),
            ))
        }
        Err(EngineError::Store(e)) => Err(e.into()),
        Err(e) => ignored(e.to_string()),
    }
}

/// Review feedback becomes a follow-up run of the run that opened the pull request: the
/// original spec plus the feedback, started from the pull request's branch and delivered onto
/// it (a fast-forward push, so the same pull request shows the new commits). Pull requests
/// Autodev did not open are ignored, and one run per pull request is active at a time.
async fn follow_up(
    state: &AppState,
    feedback: Feedback,
) -> Result<(StatusCode, Value, String, Option<String>), ApiError> {
    let ignored = |why: String| {
        Ok((StatusCode::OK, json!({"status": "ignored", "reason": why}), format!("ignored: {why}"), None))
    };
    // The newest run of the pull request (its follow-ups come after the run that opened it).
    let Some(parent_id) = state.store.runs_for_link(feedback.link, &feedback.pr_url).await?.pop() else {
        return ignored(format!("{} was not opened by Autodev", feedback.pr_url));
    };
    let parent = state.store.get_run(&parent_id).await?;
    if let Some(active) = state.store.active_run_for_origin(&feedback.origin).await? {
        return ignored(format!("run {} for {} is still {}", active.short_id, feedback.origin, active.state));
    }
    let Some(project) = (match &parent.project_id {
        Some(id) => state.store.find_project(id).await.ok(),
        None => None,
    }) else {
        return ignored("the run that opened the pull request has no project any more".into());
    };
    if let Err(why) =
        may_command(&state.forges, feedback.source, &feedback.place, &feedback.by, &Rule::of(&project.settings())).await
    {
        tracing::warn!(source = feedback.source, place = %feedback.place, login = %feedback.by.login, "{why}");
        return ignored(why);
    }
    let mut settings: RunSettings = parent.settings().unwrap_or_default();
    let branch = settings.deliver_branch.clone().unwrap_or_else(|| parent.branch.clone());
    settings.deliver_branch = Some(branch.clone());
    // The gates stay as the project and the operator set them (the parent's settings carry
    // the project's delivery gate and protected paths; the plan gate is the operator's):
    // nothing a comment carries turns one off.
    settings.approval = settings.approval || state.models.run_settings().approval;
    settings.config_warnings.clear();
    if let Err(e) = state.models.check(&settings) {
        return ignored(format!("no model client: {e}"));
    }
    let text = format!(
        "{}\n\n## Review feedback on {}\n\nThe work above is on branch `{branch}` already. Change it as this feedback asks, keeping what is right:\n\n{}\n",
        parent.spec.trim_end(),
        feedback.pr_url,
        feedback.text.trim()
    );
    let spec = match Spec::from_text(&text) {
        Ok(spec) => spec,
        Err(e) => return ignored(format!("the feedback is not a usable spec: {e}")),
    };
    let req = checkout::ProjectRun {
        project: &project,
        spec,
        settings,
        origin: Some(feedback.origin.clone()),
        audit: None,
        base_branch: Some(branch),
    };
    match checkout::enqueue(&state.store, req).await {
        Ok((run, _)) => {
            tracing::info!(run = %run.id, parent = %parent.id, pr = %feedback.pr_url, "follow-up run created from review feedback");
            let id = run.id.clone();
            Ok((
                StatusCode::CREATED,
                json!({"status": "created", "run": run_json(&run)}),
                "follow-up run created".into(),
                Some(id),
            ))
        }
        Err(autodev_engine::EngineError::Store(e)) => Err(e.into()),
        Err(e) => ignored(format!("could not create the follow-up run: {e}")),
    }
}

/// Stores the delivery, acts once, records the outcome. A redelivery answers 200 with the
/// first outcome and does nothing.
pub(super) async fn receive(
    state: &AppState,
    source: &str,
    id: &str,
    event: &str,
    intent: impl FnOnce() -> Intent,
) -> Result<Response, ApiError> {
    if !state.store.record_receipt(source, id, event).await? {
        let seen = state.store.receipt(source, id).await?;
        let (outcome, run) = seen.unwrap_or((None, None));
        return Ok((
            StatusCode::OK,
            Json(json!({"status": "duplicate", "delivery": id, "outcome": outcome, "run_id": run})),
        )
            .into_response());
    }
    let (status, mut body, outcome, run_id) = act(state, source, intent()).await?;
    state.store.finish_receipt(source, id, &outcome, run_id.as_deref()).await?;
    state
        .store
        .audit(
            None,
            "POST",
            &format!("/webhooks/{source}"),
            status.as_u16(),
            Some(&format!("delivery {id}: {outcome}")),
        )
        .await?;
    body["delivery"] = json!(id);
    Ok((status, Json(body)).into_response())
}
