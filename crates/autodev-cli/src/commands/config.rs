//! `autodev config check` and `autodev migrate`.
use crate::config::FileConfig;
use crate::{Exit, provider};
use autodev_store::Migrations;
use std::path::Path;

use crate::context::*;

/// `autodev config check`: every problem at once (exit 2), or a summary of what is in force.
pub fn config_check(home: &Path, config: Option<&Path>, repo: Option<&Path>) -> Exit {
    // Loaded and checked once; the summary below reads the same values.
    let (loaded, mut problems) = match FileConfig::load(home, config, repo) {
        Ok(cfg) => match crate::config::delivery_config(&cfg) {
            Ok(delivery) => (Some((cfg, delivery)), Vec::new()),
            Err(p) => (None, p),
        },
        Err(p) => (None, p),
    };
    for var in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GROQ_API_KEY",
        "AUTODEV_KEY_PEPPER",
        "DATABASE_URL",
        "AUTODEV_GITHUB_WEBHOOK_SECRET",
        "AUTODEV_GITLAB_WEBHOOK_TOKEN",
        "AUTODEV_JIRA_WEBHOOK_SECRET",
    ] {
        if let Err(e) = crate::config::secret(var) {
            problems.push(e);
        }
    }
    // A fallback to a provider that is not configured would fail every run at its start.
    if let Some((cfg, _)) = &loaded {
        for (i, entry) in cfg.fallback.iter().enumerate() {
            if let Some((p, _)) = entry.split_once(':')
                && provider::PROVIDERS.contains(&p)
                && !provider::configured(p, cfg)
            {
                problems
                    .push(format!("fallback[{i}] = `{entry}`: provider {p} is not configured (its key or base_url)"));
            }
        }
    }
    if !problems.is_empty() {
        return Exit::Usage(format!(
            "invalid configuration ({} problems):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        ));
    }
    let Some((cfg, delivery)) = loaded else {
        return Exit::Usage("invalid configuration".into());
    };
    let configured: Vec<&str> = provider::PROVIDERS.iter().copied().filter(|p| provider::configured(p, &cfg)).collect();
    println!("configuration is valid");
    println!("  data directory   {}", home.display());
    let mode = cfg.sandbox.mode.unwrap_or_default();
    println!(
        "  sandbox          {mode}{}",
        match mode.check_available() {
            Err(why) => format!(" (UNAVAILABLE: {why})"),
            Ok(()) if mode.isolated() => " (agents isolated)".to_string(),
            Ok(()) => " (agents NOT isolated)".to_string(),
        }
    );
    for warning in &cfg.repo_warnings {
        println!("  warning          {warning}");
    }
    println!(
        "  providers        {}",
        if configured.is_empty() {
            "none configured (set OPENAI_API_KEY, ANTHROPIC_API_KEY, ...)".to_string()
        } else {
            configured.join(", ")
        }
    );
    if !cfg.fallback.is_empty() {
        println!("  fallback         {}", cfg.fallback.join(" → "));
    }
    for p in &configured {
        let g = provider::guard_settings(p, &cfg);
        let per_minute = |n: Option<u32>, what: &str| n.map(|n| format!(", {n} {what}/min")).unwrap_or_default();
        println!(
            "  {:<16} breaker after {} failures, {}s cooldown{}{}; tool calls {}",
            format!("[{p}]"),
            g.breaker_failures,
            g.breaker_cooldown.as_secs(),
            per_minute(g.requests_per_minute, "requests"),
            per_minute(g.tokens_per_minute, "tokens"),
            match cfg.tool_calls_for(p).unwrap_or_default() {
                autodev_engine::ToolCallMode::Auto => "auto",
                autodev_engine::ToolCallMode::Native => "native",
                autodev_engine::ToolCallMode::Text => "text",
                autodev_engine::ToolCallMode::Schema => "schema",
            }
        );
    }
    let usd = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("${v:.2}"));
    println!(
        "  budgets          per run {}, per month (all runs) {}; projects set their own monthly_budget_usd",
        usd(cfg.max_cost_usd),
        usd(cfg.monthly_budget_usd)
    );
    if !cfg.protected_paths.is_empty() {
        println!("  protected paths  {}", cfg.protected_paths.join(", "));
    }
    match (&cfg.embeddings.base_url, &cfg.embeddings.model) {
        (Some(url), Some(model)) => println!(
            "  code search      lexical + embeddings ({model} at {url}), vectors in {}",
            cfg.embeddings
                .qdrant_url
                .as_deref()
                .map_or("a file beside each index".to_string(), |q| format!("Qdrant at {q}"))
        ),
        _ => println!("  code search      lexical (no [embeddings] configured)"),
    }
    let mut integrations = Vec::new();
    if let Some(gh) = &delivery.github {
        let how = match gh.auth {
            autodev_delivery::github::GithubAuth::Token(_) => "token",
            autodev_delivery::github::GithubAuth::App { .. } => "GitHub App",
        };
        integrations.push(format!("github ({}, {how})", gh.api_url));
    }
    if let Some(gl) = &delivery.gitlab {
        integrations.push(format!("gitlab ({})", gl.url));
    }
    if let Some(jira) = &delivery.jira {
        integrations.push(format!("jira ({})", jira.url));
    }
    if let Some(c) = &delivery.confluence {
        integrations.push(format!("confluence ({}, space {})", c.url, c.space));
    }
    if let Some((_, channel)) = &delivery.slack_bot {
        integrations.push(format!("slack (bot, {channel})"));
    } else if delivery.slack_webhook_url.is_some() {
        integrations.push("slack".to_string());
    }
    for w in &delivery.webhooks {
        integrations.push(format!(
            "webhook:{}{}",
            w.name,
            if w.secret.is_some() { " (signed)" } else { " (UNSIGNED)" }
        ));
    }
    println!(
        "  delivery         {}",
        if integrations.is_empty() { "none (runs end as branches)".to_string() } else { integrations.join(", ") }
    );
    if let Some(url) = &delivery.public_url {
        println!("  public URL       {url}");
    }
    Exit::Ok
}

/// `autodev migrate`.
pub async fn migrate(home: &Path, check: bool) -> Exit {
    if check {
        return migrate_check(home).await;
    }
    let store = match open_store_with(home, Migrations::Check).await {
        Ok(store) => {
            println!("the {} database is up to date", store.backend());
            return Exit::Ok;
        }
        Err(_) => match open_store_with(home, Migrations::Apply).await {
            Ok(store) => store,
            Err(e) => return e,
        },
    };
    println!("the {} database is migrated", store.backend());
    Exit::Ok
}

/// `autodev migrate --check`: exit 0 when this build's migrations are all applied (a database
/// a newer build migrated is fine: migrations only expand), 1 listing the pending ones
/// otherwise. Changes nothing; for CI and for an init container before `serve --no-migrate`.
async fn migrate_check(home: &Path) -> Exit {
    let store = match open_store_with(home, Migrations::Leave).await {
        Ok(store) => store,
        Err(e) => return e,
    };
    let status = match store.migration_status().await {
        Ok(status) => status,
        Err(e) => return crate::context::store_error(e),
    };
    let backend = store.backend();
    if !status.newer.is_empty() {
        let newer: Vec<String> = status.newer.iter().map(i64::to_string).collect();
        println!(
            "the {backend} database has migrations of a newer autodev ({}); this build runs on it (migrations only add)",
            newer.join(", ")
        );
    }
    if status.pending.is_empty() {
        println!("the {backend} database is up to date ({} migrations applied)", status.applied.len());
        return Exit::Ok;
    }
    println!("the {backend} database lacks {} migration(s) of this build:", status.pending.len());
    for (version, description) in &status.pending {
        println!("  {version} {description}");
    }
    println!("run `autodev migrate` (or the migrate Job), then start this version");
    Exit::Failed
}
