//! The configuration reference: every key of `autodev.toml` with its variable, default, who may
//! set it and what it does. `autodev config reference` prints it as Markdown; the README
//! holds the same table, and a test fails when either the table or a key of [`FileConfig`]
//! changes without the other (the keys are read from `FileConfig` itself through serde).
use std::fmt::Write as _;

#[cfg(test)]
use crate::config::FileConfig;

/// Who may set a key.
#[derive(Clone, Copy)]
pub enum Who {
    /// Only the operator: config file in `AUTODEV_HOME` or `--config`, `AUTODEV_*`.
    Operator,
    /// Also a repository's own `autodev.toml`.
    Repository,
    /// Also a repository, but only to lower it (or, for a switch, to turn it on).
    RepositoryTighten,
}

pub struct Key {
    pub key: &'static str,
    pub env: Option<&'static str>,
    pub default: &'static str,
    pub who: Who,
    pub doc: &'static str,
}

const fn k(key: &'static str, env: Option<&'static str>, default: &'static str, who: Who, doc: &'static str) -> Key {
    Key { key, env, default, who, doc }
}

use Who::{Operator, Repository, RepositoryTighten};

/// Every key, in the order the table shows them.
pub const KEYS: &[Key] = &[
    k("model", Some("AUTODEV_MODEL"), "the provider's default", Operator, "Model id for every agent."),
    k(
        "provider",
        Some("AUTODEV_PROVIDER"),
        "from the model, else `openai`",
        Operator,
        "`openai`, `anthropic`, `gemini`, `groq` or `ollama`.",
    ),
    k(
        "test_command",
        Some("AUTODEV_TEST_COMMAND"),
        "detected",
        Repository,
        "The project's tests (detected from Cargo.toml, package.json, go.mod, pytest config, a Makefile).",
    ),
    k("base_branch", Some("AUTODEV_BASE_BRANCH"), "the checked-out branch", Repository, "The branch runs start from."),
    k("max_parallel", Some("AUTODEV_MAX_PARALLEL"), "2", RepositoryTighten, "Tasks run at once."),
    k(
        "max_repair_rounds",
        Some("AUTODEV_MAX_REPAIR_ROUNDS"),
        "2",
        RepositoryTighten,
        "Repair rounds after failing tests (or missing evidence).",
    ),
    k(
        "max_steps",
        Some("AUTODEV_MAX_STEPS"),
        "100",
        RepositoryTighten,
        "Model turns per coding agent (told to it; at the limit its change is kept and tested, the task marked `incomplete`).",
    ),
    k(
        "max_task_tokens",
        Some("AUTODEV_MAX_TASK_TOKENS"),
        "2000000",
        RepositoryTighten,
        "Input + output tokens per agent.",
    ),
    k(
        "max_cost_usd",
        Some("AUTODEV_MAX_COST_USD"),
        "none",
        RepositoryTighten,
        "Each model call first reserves its worst-case cost (input counted with the model's tokenizer or estimated high, plus max_output_tokens); one that could pass this many dollars is not made and the run fails `budget_exceeded` (concurrent agents included); `autodev resume RUN --max-cost-usd N` continues it. A warning at 80%.",
    ),
    k(
        "max_output_tokens",
        Some("AUTODEV_MAX_OUTPUT_TOKENS"),
        "8192",
        RepositoryTighten,
        "Output tokens asked for per model call (`max_tokens`).",
    ),
    k(
        "context_window",
        Some("AUTODEV_CONTEXT_WINDOW"),
        "from the price table",
        Operator,
        "The model's context window; conversations are compacted to fit.",
    ),
    k(
        "command_timeout_secs",
        Some("AUTODEV_COMMAND_TIMEOUT_SECS"),
        "120",
        RepositoryTighten,
        "An agent's `run` command, unless it asks for more (at most 1800).",
    ),
    k("test_timeout_secs", Some("AUTODEV_TEST_TIMEOUT_SECS"), "900", RepositoryTighten, "The test command."),
    k("stream", Some("AUTODEV_STREAM"), "true", Operator, "Stream model responses."),
    k(
        "require_evidence",
        Some("AUTODEV_REQUIRE_EVIDENCE"),
        "false",
        RepositoryTighten,
        "A run whose tests do not fail without its change gets repair rounds asking for such a test, then fails `no_evidence` (also a project setting).",
    ),
    k(
        "tool_calls",
        Some("AUTODEV_TOOL_CALLS"),
        "`auto`",
        Operator,
        "`auto`: native tool calls, and a reply's `{\"name\", \"arguments\"}` JSON (bare or fenced) naming a tool when the model made no native call, as small local models often answer; `native`: native calls only; `text`: for servers without tool calls, the tools are described in the prompt; `schema`: as `text`, with each reply constrained by the server's structured output (`response_format` json_schema: llama.cpp, Ollama, vLLM, LM Studio) to one call of an offered tool. `auto` turns to `schema` for a model that answers in text before it ever called a tool.",
    ),
    k(
        "monthly_budget_usd",
        Some("AUTODEV_MONTHLY_BUDGET_USD"),
        "none",
        Operator,
        "What all runs together may spend per calendar month (UTC). Each model call reserves its worst case first; a run that would pass it fails `budget_exceeded` (projects: setting `monthly_budget_usd`).",
    ),
    k(
        "fallback",
        None,
        "[]",
        Operator,
        "Providers to fall back on, in order, as `\"provider:model\"`, when the run's provider is unavailable (breaker open, retries spent, or the request refused); each switch is an event.",
    ),
    k(
        "protected_paths",
        None,
        "[]",
        Operator,
        "Globs agents may not change in any run (projects add their own); a write there is a tool error unless the run is approved with `--allow-path`.",
    ),
    k(
        "rate_limit_per_minute",
        Some("AUTODEV_RATE_LIMIT_PER_MINUTE"),
        "1200",
        Operator,
        "API requests per key per minute (0: off).",
    ),
    k("trigger_label", Some("AUTODEV_TRIGGER_LABEL"), "`autodev`", Operator, "The ticket label that starts a run."),
    k(
        "openai.base_url",
        Some("OPENAI_BASE_URL"),
        "`https://api.openai.com/v1`",
        Operator,
        "Any OpenAI-compatible server (vLLM, llama.cpp, LM Studio).",
    ),
    k(
        "openai.api_key",
        Some("OPENAI_API_KEY"),
        "none",
        Operator,
        "Discouraged: use the variable or `OPENAI_API_KEY_FILE`.",
    ),
    k("anthropic.base_url", Some("ANTHROPIC_BASE_URL"), "`https://api.anthropic.com`", Operator, "Anthropic's API."),
    k(
        "anthropic.api_key",
        Some("ANTHROPIC_API_KEY"),
        "none",
        Operator,
        "Discouraged: use the variable or `ANTHROPIC_API_KEY_FILE`.",
    ),
    k(
        "groq.base_url",
        Some("GROQ_BASE_URL"),
        "`https://api.groq.com/openai/v1`",
        Operator,
        "Groq's OpenAI-compatible API.",
    ),
    k("groq.api_key", Some("GROQ_API_KEY"), "none", Operator, "Discouraged: use the variable or `GROQ_API_KEY_FILE`."),
    k("ollama.base_url", Some("OLLAMA_HOST"), "`http://localhost:11434/v1`", Operator, "An Ollama server."),
    k("ollama.api_key", None, "none", Operator, "For an Ollama behind a proxy that wants one."),
    k(
        "gemini.base_url",
        Some("GEMINI_BASE_URL"),
        "`https://generativelanguage.googleapis.com/v1beta`",
        Operator,
        "Google's Gemini API (generateContent).",
    ),
    k(
        "gemini.api_key",
        Some("GEMINI_API_KEY"),
        "none",
        Operator,
        "Discouraged: use the variable or `GEMINI_API_KEY_FILE`.",
    ),
    k(
        "PROVIDER.tool_calls",
        None,
        "the top-level `tool_calls`",
        Operator,
        "Per provider section (`[openai]`, `[anthropic]`, `[groq]`, `[ollama]`, `[gemini]`).",
    ),
    k(
        "PROVIDER.requests_per_minute",
        None,
        "no limit",
        Operator,
        "Requests per minute this process sends the provider; calls wait their turn.",
    ),
    k(
        "PROVIDER.tokens_per_minute",
        None,
        "no limit",
        Operator,
        "Tokens per minute (input estimate plus requested output) this process sends the provider.",
    ),
    k(
        "PROVIDER.breaker_failures",
        None,
        "5",
        Operator,
        "Consecutive failed calls that open the provider's circuit breaker (0: off); while open, calls fail at once and go to the fallback.",
    ),
    k(
        "PROVIDER.breaker_cooldown_secs",
        None,
        "30",
        Operator,
        "Seconds an open breaker waits before letting one trial call through (half-open).",
    ),
    k(
        "sandbox.mode",
        Some("AUTODEV_SANDBOX_MODE"),
        "`bwrap`",
        Operator,
        "`bwrap` (namespaces), or knowingly `landlock` / `none` (unisolated, flagged on every run).",
    ),
    k(
        "sandbox.readonly",
        None,
        "what `autodev doctor` lists",
        Operator,
        "System and toolchain directories agents see read-only.",
    ),
    k("sandbox.network", None, "false", Operator, "Let agent commands and tests use the network."),
    k(
        "sandbox.pass_env",
        None,
        "[]",
        Operator,
        "More variables for commands (secret-looking names are still dropped).",
    ),
    k("sandbox.writable", None, "[]", Operator, "More directories commands may write to."),
    k(
        "public_url",
        Some("AUTODEV_PUBLIC_URL"),
        "none",
        Operator,
        "The URL people reach Autodev at: links in pull requests, ticket comments and messages.",
    ),
    k(
        "github.api_url",
        Some("AUTODEV_GITHUB_API_URL"),
        "`https://api.github.com`",
        Operator,
        "GitHub's API (GitHub Enterprise: `https://HOST/api/v3`). The token is `AUTODEV_GITHUB_TOKEN` (or `_FILE`).",
    ),
    k("github.labels", None, "[]", Operator, "Labels on every pull request Autodev opens."),
    k(
        "gitlab.url",
        Some("AUTODEV_GITLAB_URL"),
        "`https://gitlab.com`",
        Operator,
        "GitLab (self-managed too). The token is `AUTODEV_GITLAB_TOKEN` (or `_FILE`).",
    ),
    k("gitlab.labels", None, "[]", Operator, "Labels on every merge request Autodev opens."),
    k(
        "jira.url",
        Some("AUTODEV_JIRA_URL"),
        "none",
        Operator,
        "Jira Cloud or Data Center. Credentials: `AUTODEV_JIRA_EMAIL` + `AUTODEV_JIRA_API_TOKEN` (Cloud) or `AUTODEV_JIRA_PAT` (Data Center), each also as `_FILE`.",
    ),
    k("jira.email", Some("AUTODEV_JIRA_EMAIL"), "none", Operator, "The Jira Cloud account the API token belongs to."),
    k(
        "jira.transitions",
        None,
        "none",
        Operator,
        "Milestone → transition name, e.g. `\"run.pr_opened\" = \"In Review\"`.",
    ),
    k(
        "confluence.url",
        Some("AUTODEV_CONFLUENCE_URL"),
        "none",
        Operator,
        "Confluence Cloud: a page per run with its report. Needs `AUTODEV_CONFLUENCE_EMAIL`, `AUTODEV_CONFLUENCE_API_TOKEN` (or `_FILE`) and `confluence.space`.",
    ),
    k("confluence.email", Some("AUTODEV_CONFLUENCE_EMAIL"), "none", Operator, "The account the API token belongs to."),
    k("confluence.space", None, "none", Operator, "The space key the pages go in."),
    k("confluence.parent_id", None, "none", Operator, "The id of the page they go under."),
    k(
        "notify.webhooks",
        None,
        "[]",
        Operator,
        "`[[notify.webhooks]]` with `url`, optional `name`, `secret_env` (a variable holding the signing secret) and `events`; `AUTODEV_NOTIFY_WEBHOOK_URL` + `_SECRET` add one more.",
    ),
    k(
        "embeddings.base_url",
        None,
        "none (lexical search only)",
        Operator,
        "An OpenAI-compatible embeddings endpoint (`https://api.openai.com/v1`, Ollama's or llama.cpp's `/v1`) for code search, fused with the lexical index; needs `embeddings.model`.",
    ),
    k(
        "embeddings.model",
        None,
        "none",
        Operator,
        "The embedding model, e.g. `text-embedding-3-small` or `nomic-embed-text`.",
    ),
    k(
        "embeddings.api_key_env",
        None,
        "none",
        Operator,
        "The variable (or `NAME_FILE`) holding the endpoint's key, e.g. `OPENAI_API_KEY`.",
    ),
    k(
        "embeddings.qdrant_url",
        None,
        "none (a file beside each index)",
        Operator,
        "Keep vectors in Qdrant (REST URL, port 6333), a collection per repository; `embeddings.qdrant_api_key_env` names its key's variable.",
    ),
    k(
        "embeddings.qdrant_api_key_env",
        None,
        "none",
        Operator,
        "The variable (or `NAME_FILE`) holding Qdrant's API key.",
    ),
    k(
        "prices",
        None,
        "the built-in table",
        Operator,
        "`[prices.\"MODEL\"]` with `input` and `output` (USD per million tokens) and optional `context_window`.",
    ),
];

/// The table as Markdown.
pub fn markdown() -> String {
    let mut out =
        String::from("| key | variable | default | set by | what it does |\n| --- | --- | --- | --- | --- |\n");
    for key in KEYS {
        let who = match key.who {
            Operator => "operator",
            Repository => "operator, repository",
            RepositoryTighten => "operator; repository only lower",
        };
        let env = key.env.map(|e| format!("`{e}`")).unwrap_or_else(|| "—".into());
        let _ = writeln!(out, "| `{}` | {env} | {} | {who} | {} |", key.key, key.default, key.doc);
    }
    out
}

/// The keys `FileConfig` has, as dotted paths (sections one level deep; `prices` as one key).
#[cfg(test)]
fn config_keys() -> Vec<String> {
    let value = serde_json::to_value(FileConfig::default()).unwrap_or_default();
    let mut keys = Vec::new();
    for (k, v) in value.as_object().into_iter().flatten() {
        match v.as_object() {
            // A provider's tuning keys are the same in every provider's section: one row each.
            Some(section) if crate::provider::PROVIDERS.contains(&k.as_str()) => keys.extend(section.keys().map(|s| {
                if matches!(s.as_str(), "base_url" | "api_key") { format!("{k}.{s}") } else { format!("PROVIDER.{s}") }
            })),
            Some(section) if k != "prices" => keys.extend(section.keys().map(|s| format!("{k}.{s}"))),
            _ => keys.push(k.clone()),
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_key_is_in_the_reference_and_nothing_else() {
        let mut documented: Vec<String> = KEYS.iter().map(|k| k.key.to_string()).collect();
        documented.sort();
        assert_eq!(documented, config_keys());
    }

    #[test]
    fn the_readme_holds_the_generated_reference() {
        let readme = include_str!("../../../README.md");
        let start = "<!-- config-reference:start (autodev config reference) -->\n";
        let end = "<!-- config-reference:end -->";
        let (_, rest) = readme.split_once(start).unwrap_or_default();
        let (table, _) = rest.split_once(end).unwrap_or_default();
        assert_eq!(table, markdown(), "regenerate the README's table with `autodev config reference`");
    }
}
