//! The Model Context Protocol server (rmcp, the official Rust SDK): Autodev's code search,
//! answers and runs as MCP tools, and runs' reports as resources, for editors and chat
//! clients.
//!
//! Two transports, one server: `autodev mcp` over stdio (a local process the client starts,
//! acting with the operator's rights on the local database, optionally on a repository given
//! with `--repo`), and streamable HTTP at `/mcp` under `autodev serve`, behind the API's keys
//! (the key's role decides what each tool may do, exactly as for the REST API: every tool
//! calls the API's own handler with the caller).
//!
//! Tools (each with a JSON schema from its argument type): `search_code`, `ask`,
//! `create_run`, `get_run`, `list_runs`, `approve_run`, `cancel_run`, `revert_run`. A tool's failure (bad
//! input, a role that does not allow it, an unknown run) is a tool result with `isError` and
//! the API's message, which a model can read and act on; protocol errors are for protocol
//! faults only.
use std::path::PathBuf;
use std::sync::Arc;

use autodev_domain::AccessRole;
use autodev_store::KeyRow;
use axum::extract::State;
use axum::response::IntoResponse;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::service::{ask, runs};
use crate::state::AppState;
use crate::views::run_json;

/// The reports listed as resources: the newest runs'.
const LISTED_REPORTS: i64 = 100;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchCodeArgs {
    /// What to look for, in plain words or identifiers (e.g. "where are API keys checked").
    pub query: String,
    /// The project (id or name) whose code to search; over stdio, omit it to search the
    /// repository `autodev mcp --repo` was started with.
    #[serde(default)]
    pub project: Option<String>,
    /// Results, 1 to 50 (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskArgs {
    /// A question about the code, in plain words.
    pub question: String,
    /// The project (id or name); over stdio, omit it to ask about the `--repo` repository.
    #[serde(default)]
    pub project: Option<String>,
    /// The `conversation` of an earlier answer, to follow it up ("and where is that called
    /// from?"); omit it to start a conversation.
    #[serde(default)]
    pub conversation: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CreateRunArgs {
    /// The project (id or name) the run changes.
    pub project: String,
    /// What to build or fix, in Markdown.
    pub spec: String,
    /// A title (default: the spec's first line).
    #[serde(default)]
    pub title: Option<String>,
    /// Stop after planning until a person approves the plan.
    #[serde(default)]
    pub approve_plan: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunArgs {
    /// The run's id, short id or a unique prefix.
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ApproveArgs {
    /// The run's id, short id or a unique prefix.
    pub id: String,
    /// Recorded with the approval.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListRunsArgs {
    /// Only this project's runs (id or name).
    #[serde(default)]
    pub project: Option<String>,
    /// Only runs in this state (`queued`, `planning`, `awaiting_approval`, `executing`,
    /// `verifying`, `delivering`, `succeeded`, `failed`, `cancelled`).
    #[serde(default)]
    pub state: Option<String>,
    /// Runs to return, 1 to 200 (default 20).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Who the server acts for when the transport carries no key (stdio).
#[derive(Clone)]
pub struct Local {
    pub caller: Caller,
    /// The repository `search_code` and `ask` use when no project is named.
    pub repo: Option<PathBuf>,
}

impl Local {
    /// The local operator: `autodev mcp` runs with the rights of whoever can run `autodev`
    /// on this machine (as the CLI does), shown as `local:mcp` in audit records.
    pub fn operator(repo: Option<PathBuf>) -> Self {
        let key = KeyRow {
            id: "local:mcp".into(),
            name: "local:mcp".into(),
            role: AccessRole::Admin.to_string(),
            prefix: String::new(),
            hash: String::new(),
            created_at: 0,
            last_used_at: None,
            revoked_at: None,
            projects: None,
        };
        Self { caller: Caller { key: Arc::new(key), role: AccessRole::Admin, via: crate::caller::Via::Mcp }, repo }
    }
}

#[derive(Clone)]
pub struct McpServer {
    state: AppState,
    local: Option<Local>,
    tool_router: ToolRouter<Self>,
}

fn text_result(v: &Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(serde_json::to_string_pretty(v).unwrap_or_default())])
}

fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

fn api_error(e: &ApiError) -> CallToolResult {
    let field = e.field.as_deref().map(|f| format!(" (field `{f}`)")).unwrap_or_default();
    tool_error(format!("{}: {}{field}", e.code, e.message))
}

/// The JSON body of an API handler's response.

#[tool_router]
impl McpServer {
    pub fn new(state: AppState, local: Option<Local>) -> Self {
        Self { state, local, tool_router: Self::tool_router() }
    }

    /// The caller: the local operator (stdio), or the key the HTTP request was authenticated
    /// with (set by [`authenticate`]).
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, CallToolResult> {
        if let Some(local) = &self.local {
            return Ok(local.caller.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>().cloned())
            .ok_or_else(|| tool_error("unauthorized: no API key on this connection"))
    }

    /// The index to search: a project's (fetched from its repository), or the local `--repo`.
    async fn searcher(
        &self,
        caller: &Caller,
        project: Option<&str>,
    ) -> Result<(Option<autodev_store::ProjectRow>, autodev_engine::code::Searcher), CallToolResult> {
        caller.require(AccessRole::Viewer).map_err(|e| api_error(&e))?;
        let code = &self.state.engine.code;
        let (project, searcher) = match (project, self.local.as_ref().and_then(|l| l.repo.clone())) {
            (Some(p), _) => {
                let row = caller.project(&self.state, p).await.map_err(|e| api_error(&e))?;
                let searcher = code.open_project(&row).await.map_err(|e| tool_error(e.to_string()))?;
                (Some(row), searcher)
            }
            // The local repository is the local operator's (stdio); a scoped key names a project.
            (None, Some(repo)) if caller.scope().is_none() => {
                (None, code.open(&repo, true).await.map_err(|e| tool_error(e.to_string()))?)
            }
            (None, _) => return Err(tool_error("invalid: name a project (id or name) in `project`")),
        };
        Ok((project, searcher))
    }

    #[tool(
        description = "Search a project's code in plain words or identifiers (fused with embeddings when the server has an embedding model). Returns the best functions, classes and blocks as {path, start_line, end_line, score, name, text}."
    )]
    async fn search_code(
        &self,
        Parameters(args): Parameters<SearchCodeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(outcome(self.search_code_in(args, &ctx).await))
    }

    #[tool(
        description = "Ask a question about a project's code. The configured model answers from the code index and cites path:start-end; every citation is checked against the index (citations_ok). 'I could not find it' is a possible answer. Usage is recorded under your key."
    )]
    async fn ask(
        &self,
        Parameters(args): Parameters<AskArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(outcome(self.ask_in(args, &ctx).await))
    }

    #[tool(
        description = "Start a run: Autodev plans the spec into tasks, agents carry them out in the project's repository, the tests verify, and the result is delivered as a branch or pull request. Needs the operator role."
    )]
    async fn create_run(
        &self,
        Parameters(args): Parameters<CreateRunArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let caller = self.caller(&ctx)?;
            let request = runs::CreateRun {
                project: args.project,
                spec: args.spec,
                title: args.title,
                approval: args.approve_plan,
                ..Default::default()
            };
            let created = runs::create(&self.state, &caller, request).await.map_err(|e| api_error(&e))?;
            Ok(run_json(&created))
        };
        Ok(outcome(run.await))
    }

    #[tool(description = "A run: its state (and why), plan, tasks, cost and branch.")]
    async fn get_run(
        &self,
        Parameters(args): Parameters<RunArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let caller = self.caller(&ctx)?;
            let got = runs::get(&self.state, &caller, &args.id).await.map_err(|e| api_error(&e))?;
            serde_json::to_value(got.view()).map_err(|e| api_error(&ApiError::internal(&e)))
        };
        Ok(outcome(run.await))
    }

    #[tool(description = "Runs, newest first; filter by project and state.")]
    async fn list_runs(
        &self,
        Parameters(args): Parameters<ListRunsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let caller = self.caller(&ctx)?;
            let q = runs::ListRuns {
                project: args.project,
                state: args.state,
                limit: Some(args.limit.unwrap_or(20)),
                cursor: None,
            };
            let page = runs::list(&self.state, &caller, q).await.map_err(|e| api_error(&e))?;
            serde_json::from_slice(&page).map_err(|e| api_error(&ApiError::internal(&e)))
        };
        Ok(outcome(run.await))
    }

    #[tool(description = "Approve a run waiting at a gate (its plan, or its delivery). Needs the operator role.")]
    async fn approve_run(
        &self,
        Parameters(args): Parameters<ApproveArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let caller = self.caller(&ctx)?;
            let decision = runs::Decision { comment: args.comment, allow_paths: None };
            let approved = runs::decide(&self.state, &caller, &args.id, true, decision).await;
            approved.map(|r| run_json(&r)).map_err(|e| api_error(&e))
        };
        Ok(outcome(run.await))
    }

    #[tool(description = "Cancel a run that has not finished. Needs the operator role.")]
    async fn cancel_run(
        &self,
        Parameters(args): Parameters<RunArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let caller = self.caller(&ctx)?;
            let cancelled = runs::cancel(&self.state, &caller, &args.id).await;
            cancelled.map(|r| run_json(&r)).map_err(|e| api_error(&e))
        };
        Ok(outcome(run.await))
    }

    #[tool(
        description = "Revert a run's merged change: opens a revert run (tested, through the project's delivery gate, delivered as a pull request that links the run and its ticket). Refused with the reason when the run was never merged, was reverted already, or the revert does not apply cleanly. Needs the operator role."
    )]
    async fn revert_run(
        &self,
        Parameters(args): Parameters<RunArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let run = async {
            let caller = self.caller(&ctx)?;
            let reverted = runs::revert(&self.state, &caller, &args.id).await;
            reverted.map(|r| run_json(&r)).map_err(|e| api_error(&e))
        };
        Ok(outcome(run.await))
    }
}

impl McpServer {
    async fn search_code_in(
        &self,
        args: SearchCodeArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, CallToolResult> {
        let caller = self.caller(ctx)?;
        crate::rules::text("query", &args.query, 500).map_err(|e| api_error(&e))?;
        let limit = args.limit.unwrap_or(10);
        if !(1..=50).contains(&limit) {
            return Err(tool_error("invalid: limit must be 1 to 50 (field `limit`)"));
        }
        let (_, searcher) = self.searcher(&caller, args.project.as_deref()).await?;
        let hits = searcher.search(&args.query, limit).await.map_err(|e| tool_error(e.to_string()))?;
        Ok(json!(
            hits.iter()
                .map(|h| json!({
                    "path": h.path, "start_line": h.start_line, "end_line": h.end_line,
                    "score": h.score, "name": h.name, "text": h.text,
                }))
                .collect::<Vec<_>>()
        ))
    }

    async fn ask_in(&self, args: AskArgs, ctx: &RequestContext<RoleServer>) -> Result<Value, CallToolResult> {
        let caller = self.caller(ctx)?;
        let question = ask::valid_question(&args.question).map_err(|e| api_error(&e))?.to_string();
        if let Some(project) = &args.project {
            let prepared = ask::prepare(&self.state, &caller, project, &question, args.conversation.as_deref())
                .await
                .map_err(|e| api_error(&e))?;
            let answer = prepared.answer(&self.state, &caller, None).await.map_err(|e| api_error(&e))?;
            return serde_json::to_value(answer).map_err(|e| api_error(&ApiError::internal(&e)));
        }
        // The local repository's conversations have no project.
        let conversation = match &args.conversation {
            Some(id) => ask::valid_conversation(id).map_err(|e| api_error(&e))?.to_string(),
            None => uuid::Uuid::now_v7().to_string(),
        };
        let earlier: Vec<autodev_engine::ask::Turn> = match &args.conversation {
            None => Vec::new(),
            Some(_) => self
                .state
                .store
                .ask_turns(&conversation, Some(&caller.key.id), None)
                .await
                .map_err(|e| api_error(&e.into()))?
                .ok_or_else(|| tool_error(format!("not_found: no conversation {conversation} for this key")))?
                .into_iter()
                .map(|t| autodev_engine::ask::Turn { question: t.question, answer: t.answer })
                .collect(),
        };
        // The local repository: answered and recorded without a project.
        let (_, searcher) = self.searcher(&caller, None).await?;
        let settings = self.state.models.run_settings();
        let client = self.state.models.build(&settings).map_err(|e| tool_error(format!("no_model: {e}")))?;
        let prices = &self.state.engine.prices;
        let answer =
            autodev_engine::ask::ask_in(&searcher, client.as_ref(), prices, &settings.model, &question, &earlier, None)
                .await
                .map_err(|e| tool_error(format!("model_failed: {e}")))?;
        let asker = autodev_engine::ask::Asker { key: Some((&caller.key.id, &caller.key.name)), project_id: None };
        let id = autodev_engine::ask::record(&self.state.store, asker, &question, &answer)
            .await
            .map_err(|e| api_error(&e.into()))?;
        let turn = self
            .state
            .store
            .add_ask_turn(&conversation, Some(&caller.key.id), None, &question, &answer.answer, Some(&id))
            .await
            .map_err(|e| api_error(&e.into()))?
            .ok_or_else(|| tool_error(format!("not_found: no conversation {conversation} for this key")))?;
        let mut v = serde_json::to_value(&answer).unwrap_or_default();
        v["id"] = json!(id);
        v["conversation"] = json!(conversation);
        v["turn"] = json!(turn);
        Ok(v)
    }
}

/// A tool's outcome as MCP's result: the JSON it produced, or the error result it met.
fn outcome(r: Result<Value, CallToolResult>) -> CallToolResult {
    match r {
        Ok(v) => text_result(&v),
        Err(e) => e,
    }
}

fn report_uri(id: &str) -> String {
    format!("autodev://runs/{id}/report")
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("autodev", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Autodev turns specs into tested code changes. Use search_code and ask to understand a project's \
                 code; create_run to have agents implement a spec (then get_run to follow it, approve_run at a \
                 gate, cancel_run to stop it, revert_run to undo a merged one). Runs' reports are resources autodev://runs/{id}/report.",
            )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller =
            self.caller(&ctx).map_err(|_| ErrorData::invalid_request("no API key on this connection", None))?;
        caller.require(AccessRole::Viewer).map_err(|e| ErrorData::invalid_request(e.message, None))?;
        let mut runs: Vec<Resource> = Vec::new();
        self.state
            .store
            .visit_runs_page(None, caller.scope(), None, LISTED_REPORTS, None, |r| {
                runs.push(
                    Resource::new(report_uri(r.id), format!("run {} report", r.short_id))
                        .with_description(format!("{} ({})", r.title, r.state))
                        .with_mime_type("text/markdown"),
                );
            })
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(ListResourcesResult::with_all_items(runs))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller =
            self.caller(&ctx).map_err(|_| ErrorData::invalid_request("no API key on this connection", None))?;
        let id = request
            .uri
            .strip_prefix("autodev://runs/")
            .and_then(|r| r.strip_suffix("/report"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| {
                ErrorData::resource_not_found(
                    format!("no resource {}: reports are autodev://runs/ID/report", request.uri),
                    None,
                )
            })?;
        let report = runs::artifact(&self.state, &caller, id, "report").await.map_err(|e| {
            if e.status == axum::http::StatusCode::NOT_FOUND {
                ErrorData::resource_not_found(e.message, None)
            } else {
                ErrorData::invalid_request(e.message, None)
            }
        })?;
        let text = String::from_utf8_lossy(&report.bytes).into_owned();
        let contents = match ResourceContents::text(text, request.uri.clone()) {
            ResourceContents::TextResourceContents { uri, text, meta, .. } => {
                ResourceContents::TextResourceContents { uri, text, meta, mime_type: Some("text/markdown".into()) }
            }
            other => other,
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

/// Authenticates an MCP HTTP request with the API's keys (the same `Authorization: Bearer`
/// check, rate limit and errors as the REST API) and hands the caller to the tools.
pub async fn authenticate(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::extract::FromRequestParts;
    let (mut parts, body) = req.into_parts();
    match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => {
            parts.extensions.insert(Caller { via: crate::caller::Via::Mcp, ..caller });
            req = axum::extract::Request::from_parts(parts, body);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The streamable HTTP service mounted at `/mcp`.
pub fn http_service(
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    McpServer,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    // Keys guard the endpoint, so any Host may reach it (behind a proxy, the public name);
    // browsers are held off by the key, which they do not send on their own.
    let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    config.cancellation_token = shutdown.child_token();
    StreamableHttpService::new(move || Ok(McpServer::new(state.clone(), None)), Default::default(), config)
}

/// Serves MCP over stdin/stdout until the client closes it.
pub async fn serve_stdio(state: AppState, local: Local) -> Result<(), String> {
    use rmcp::ServiceExt;
    let server = McpServer::new(state, Some(local))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP session did not start: {e}"))?;
    server.waiting().await.map_err(|e| format!("MCP session ended with an error: {e}"))?;
    Ok(())
}
