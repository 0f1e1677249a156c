//! One agent conversation, persisted turn by turn.
//!
//! Turn `n`: the model's reply is stored before any of its tool calls run (or, on resume,
//! read back instead of calling the model again); each tool call is stored as started before
//! it runs and as finished with its result after (or, on resume, a finished call's result is
//! read back; a call that was started but never finished runs again). The opening messages
//! are stored once, so the conversation rebuilt on resume is the one the model saw.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use autodev_domain::{CallMeta, EventKind, Message, ModelRequest, ModelResponse, Plan, ToolSpec};
use autodev_store::{ModelCallRecord, ToolStart};
use autodev_workspace::{ToolBox, ToolOutcome};

use crate::compact;
use crate::ctx::RunCtx;
use crate::error::{EngineError, Result};
use crate::prompts;
use crate::settings::ToolCallMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgentKind {
    /// Read-only tools plus `submit_plan`; ends with an accepted plan.
    Planner,
    /// The v1 tools; ends with `finish`.
    Coder,
}

pub(crate) struct AgentSpec<'a> {
    pub conversation: String,
    pub header: Vec<Message>,
    pub kind: AgentKind,
    pub toolbox: &'a ToolBox,
    pub max_steps: u32,
    /// Input + output tokens this conversation may spend.
    pub token_budget: Option<u64>,
}

#[derive(Debug)]
pub(crate) enum AgentEnd {
    Finished(String),
    Plan(Plan),
    /// A coder used all its steps without calling `finish`: its work so far is kept, and
    /// the engine's tests decide (SWE-agent submits at its limit too).
    StepLimit(u32),
}

const PLANNER_TOOLS: &[&str] = &["list_files", "read_file", "search", "search_code"];
/// Plans refused before the planner is given up on.
const MAX_PLAN_REJECTIONS: u32 = 3;

/// The tools a conversation sees: the interface's tools, `search_code` when the toolbox has
/// an index, and for the planner the read-only ones and `submit_plan`.
fn tool_specs(kind: AgentKind, toolbox: &ToolBox) -> Vec<ToolSpec> {
    let mut all = ToolBox::specs();
    if toolbox.has_code_search() {
        // After `search`, so a model reads the tools in the documented order.
        let at = all.iter().position(|s| s.name == "search").map_or(all.len(), |i| i + 1);
        all.insert(at, ToolBox::search_code_spec());
    }
    match kind {
        AgentKind::Coder => all,
        AgentKind::Planner => {
            let mut specs: Vec<ToolSpec> =
                all.into_iter().filter(|s| PLANNER_TOOLS.contains(&s.name.as_str())).collect();
            specs.push(prompts::submit_plan_spec());
            specs
        }
    }
}

/// What a tool call produced, and whether it ends the conversation.
struct CallResult {
    content: String,
    is_error: bool,
    end: Option<AgentEnd>,
    /// A write refused at a protected path: (path, glob).
    protected: Option<(String, String)>,
}

/// Runs the tool (or validates the plan). Deterministic for `submit_plan` and `finish`, so
/// a recorded result can be turned back into the same ending on resume.
async fn execute(kind: AgentKind, toolbox: &ToolBox, name: &str, arguments: &str) -> CallResult {
    match (kind, name) {
        (AgentKind::Planner, "submit_plan") => plan_result(arguments),
        (AgentKind::Planner, n) if !PLANNER_TOOLS.contains(&n) => CallResult {
            content: format!(
                "the planner cannot use `{n}`; use list_files, read_file, search, search_code and submit_plan"
            ),
            is_error: true,
            end: None,
            protected: None,
        },
        _ => {
            let ToolOutcome { content, is_error, finished, protected } = toolbox.execute(name, arguments).await;
            CallResult { content, is_error, end: finished.map(AgentEnd::Finished), protected }
        }
    }
}

fn plan_result(arguments: &str) -> CallResult {
    match Plan::from_arguments(arguments) {
        Ok(plan) => CallResult {
            content: "Plan accepted.".into(),
            is_error: false,
            end: Some(AgentEnd::Plan(plan)),
            protected: None,
        },
        Err(e) => CallResult {
            content: format!("plan refused: {e}. Fix the plan and call submit_plan again."),
            is_error: true,
            end: None,
            protected: None,
        },
    }
}

/// The ending a recorded, finished call implies (resume).
fn recorded_end(kind: AgentKind, name: &str, arguments: &str, is_error: bool) -> Option<AgentEnd> {
    if is_error {
        return None;
    }
    match (kind, name) {
        (AgentKind::Planner, "submit_plan") => plan_result(arguments).end,
        (AgentKind::Coder, "finish") => {
            let v: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
            Some(AgentEnd::Finished(v.get("summary").and_then(|s| s.as_str()).unwrap_or_default().to_string()))
        }
        _ => None,
    }
}

/// The JSON object in a reply's text (bare, in a code fence, or in `<tool_call>` tags).
fn json_in_text(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (start < end).then(|| &text[start..=end])
}

/// A tool call written as text, `{"name": ..., "arguments": ...}`: its name and arguments,
/// the arguments as written (not re-serialised, so a duplicate key is still an error later).
fn tool_call_in_text(text: &str) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct TextCall<'a> {
        name: String,
        #[serde(borrow, alias = "parameters")]
        arguments: &'a serde_json::value::RawValue,
    }
    let json = json_in_text(text)?;
    // Some models (Qwen2.5-Coder 1.5B under llama.cpp, seen) double the braces of the format
    // their template shows: `{{"name": …}}`.
    let call: TextCall = serde_json::from_str(json)
        .ok()
        .or_else(|| json.strip_prefix('{')?.strip_suffix('}').and_then(|inner| serde_json::from_str(inner).ok()))?;
    let raw = call.arguments.get();
    let args = serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string());
    Some((call.name, args))
}

/// What a planner's reply in text holds: a plan that validates, or why it is not one. `None`
/// when the text has no JSON at all.
fn plan_in_text(text: &str) -> Option<std::result::Result<Plan, String>> {
    // A `submit_plan` call written as text carries the plan as its arguments.
    let json = match tool_call_in_text(text) {
        Some((name, args)) if name == "submit_plan" => args,
        _ => json_in_text(text)?.to_string(),
    };
    Some(Plan::from_arguments(&json).map_err(|e| e.to_string()))
}

/// The calls a reply makes: its native tool calls; else, in the text mode, one written as
/// text; in the auto mode, one written as text that names one of the agent's tools (so JSON
/// quoted in an explanation is not taken for a call).
fn calls_of(
    response: &ModelResponse,
    mode: ToolCallMode,
    tools: &[ToolSpec],
    turn: u32,
) -> Vec<autodev_domain::ToolCall> {
    if !response.message.tool_calls.is_empty() || mode == ToolCallMode::Native {
        return response.message.tool_calls.clone();
    }
    // In the text and schema modes every JSON call is taken (an unknown name gets its error
    // back, which teaches more than silence).
    let any_name = matches!(mode, ToolCallMode::Text | ToolCallMode::Schema);
    match tool_call_in_text(&response.message.content) {
        Some((name, arguments)) if any_name || tools.iter().any(|t| t.name == name) => {
            vec![autodev_domain::ToolCall { id: format!("text_{turn}"), name, arguments, signature: None }]
        }
        _ => Vec::new(),
    }
}

/// Whether two replies say the same thing: the same text and the same calls (ids aside).
fn same_reply(a: &Message, b: &Message) -> bool {
    a.content == b.content
        && a.tool_calls.len() == b.tool_calls.len()
        && a.tool_calls.iter().zip(&b.tool_calls).all(|(x, y)| x.name == y.name && x.arguments == y.arguments)
}

/// Whether the last assistant message made its calls in text (its results go back as text).
fn response_is_text(messages: &[Message]) -> bool {
    messages.iter().rev().find(|m| m.role == autodev_domain::Role::Assistant).is_some_and(|m| m.tool_calls.is_empty())
}

/// Replies without a tool call, in a row, that stop an agent (the first gets a reminder).
const MAX_TEXT_REPLIES: u32 = 2;
/// The same reply this many times in a row is a loop.
const MAX_SAME_REPLIES: u32 = 3;

/// Why an agent whose model does not call tools was stopped.
fn no_tool_calls(conv: &str, n: u32, detail: &str) -> EngineError {
    EngineError::Failed(format!(
        "{conv}: the model answered {n} times without calling a tool{detail}; it may not support tool calls on \
         this server (for llama.cpp: start it with `--jinja` and use a tool-capable model; for Ollama: a model \
         with tool support), or set `tool_calls = \"schema\"` (replies constrained to tool calls; `autodev doctor` \
         says whether the server honours it) or `\"text\"`, or choose another model"
    ))
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let cut: String = line.chars().take(120).collect();
    if cut.len() < text.len() { format!("{cut}…") } else { cut }
}

/// Runs one agent conversation to its end: a finished task or an accepted plan.
pub(crate) async fn run_agent(ctx: &RunCtx, spec: AgentSpec<'_>) -> Result<AgentEnd> {
    let mut agent = AgentLoop::open(ctx, spec).await?;
    for turn in 0.. {
        if let Some(end) = agent.step(turn).await? {
            return Ok(end);
        }
    }
    Err(EngineError::Failed(format!("{} ended without finishing", agent.spec.conversation)))
}

/// One agent conversation as a small state machine. Each step (`step`) takes the turn's reply
/// (`reply`: replayed from the store, or `call`ed and `record`ed before anything acts on it),
/// then either answers a reply without tool calls (`text_reply`) or runs its calls (`tools`,
/// each recorded as started and finished, or replayed).
struct AgentLoop<'a, 's> {
    ctx: &'a RunCtx,
    spec: AgentSpec<'s>,
    /// The configured mode; `auto` becomes `schema` for a model that answers in text
    /// without ever calling a tool (recomputed the same way when a run resumes).
    mode: ToolCallMode,
    /// The reply schema, made once when the mode is `schema`.
    reply_schema: Option<serde_json::Value>,
    header_len: usize,
    /// Replies stored by an earlier driver, by turn (taken as they are replayed).
    recorded: HashMap<u32, ModelResponse>,
    /// Tool results stored by an earlier driver, by turn and position.
    finished_tools: HashMap<(u32, u32), (String, bool)>,
    tools: Vec<ToolSpec>,
    /// The context window, and the tokens a request's messages may fill.
    window: u64,
    budget: u64,
    messages: Vec<Message>,
    /// Tokens spent by this conversation (its token budget).
    spent: u64,
    rejections: u32,
    quiet_turns: u32,
    ever_called: bool,
    same_replies: u32,
    last_compaction: Option<u32>,
    /// Input token counters for budget reservations, per model the call may be served by
    /// (each caches what it counted, so a turn counts only its new messages).
    counters: HashMap<String, autodev_llm::TokenCounter>,
    /// The model's and the tools' own time in this step (left out of the step's overhead).
    excluded: Duration,
}

/// A turn's reply, and how it came.
struct Reply {
    response: ModelResponse,
    /// Called now (not replayed from the store).
    fresh: bool,
    /// The reply was stored with its first tool call marked as started.
    first_started: bool,
}

impl<'a, 's> AgentLoop<'a, 's> {
    /// Stores the opening messages once and reads back what an earlier driver recorded.
    async fn open(ctx: &'a RunCtx, spec: AgentSpec<'s>) -> Result<Self> {
        let store = &ctx.engine.store;
        let run_id = ctx.run.id.as_str();
        let conv = spec.conversation.as_str();
        let mode = ctx.settings.tool_calls;
        let mut tools = tool_specs(spec.kind, spec.toolbox);
        if ctx.compact() {
            tools = prompts::compact_tools(tools);
        }
        let mut opening = spec.header.clone();
        if matches!(mode, ToolCallMode::Text | ToolCallMode::Schema)
            && let Some(first) = opening.first_mut()
        {
            first.content.push_str(&prompts::text_tools(&tools));
        }
        let header_json = serde_json::to_string(&opening).map_err(autodev_store::StoreError::from)?;
        let header: Vec<Message> = serde_json::from_str(&store.put_conversation(run_id, conv, &header_json).await?)
            .map_err(autodev_store::StoreError::from)?;
        let mut recorded = HashMap::new();
        let mut spent: u64 = 0;
        for c in store.model_calls(run_id, conv).await? {
            spent += (c.input_tokens + c.output_tokens) as u64;
            let resp: ModelResponse = serde_json::from_str(&c.response).map_err(autodev_store::StoreError::from)?;
            recorded.insert(c.turn as u32, resp);
        }
        let mut finished_tools = HashMap::new();
        for t in store.tool_calls(run_id, conv).await? {
            if t.status == "finished" {
                finished_tools.insert((t.turn as u32, t.idx as u32), (t.result.unwrap_or_default(), t.is_error));
            }
        }
        let tools_tokens: u64 =
            tools.iter().map(|t| (t.description.len() + t.parameters.to_string().len()) as u64 / 4 + 8).sum();
        let window = ctx.window();
        let budget =
            window.saturating_sub(ctx.max_output_tokens() as u64).saturating_sub(tools_tokens).saturating_mul(95) / 100;
        let reply_schema = (mode == ToolCallMode::Schema).then(|| prompts::reply_schema(&tools));
        Ok(Self {
            ctx,
            spec,
            mode,
            reply_schema,
            header_len: header.len(),
            recorded,
            finished_tools,
            tools,
            window,
            budget,
            messages: header,
            spent,
            rejections: 0,
            quiet_turns: 0,
            ever_called: false,
            same_replies: 0,
            last_compaction: None,
            counters: HashMap::new(),
            excluded: Duration::ZERO,
        })
    }

    fn conv(&self) -> &str {
        &self.spec.conversation
    }

    /// One turn: its reply, then its calls (or the answer to a reply without any). `Some` when
    /// the conversation ended.
    async fn step(&mut self, turn: u32) -> Result<Option<AgentEnd>> {
        self.ctx.check_cancel()?;
        if turn >= self.spec.max_steps {
            if self.spec.kind == AgentKind::Coder {
                return Ok(Some(AgentEnd::StepLimit(self.spec.max_steps)));
            }
            return Err(EngineError::Failed(format!(
                "{} reached its step limit ({} model turns) without finishing",
                self.conv(),
                self.spec.max_steps
            )));
        }
        let step_started = Instant::now();
        self.excluded = Duration::ZERO;
        let Reply { response, fresh, first_started } = self.reply(turn).await?;
        self.spent += response.usage.input_tokens + response.usage.output_tokens;
        let calls = calls_of(&response, self.mode, &self.tools, turn);
        let text = response.message.content.clone();
        // A loop: the same reply (text and calls) again and again. Compared with the previous
        // reply still in the conversation: nothing is copied or serialised per step.
        // The last three replies, found in one walk back (the previous one for repeats, all
        // three for two replies in turn).
        let mut earlier = self.messages.iter().rev().filter(|m| m.role == autodev_domain::Role::Assistant);
        let (b, a, b0) = (earlier.next(), earlier.next(), earlier.next());
        self.same_replies = if b.is_some_and(|p| same_reply(p, &response.message)) { self.same_replies + 1 } else { 1 };
        // Two replies in turn (A, B, A, B), as the 1.5B model did with list_files and read_file
        // of the same missing path: a loop too.
        let alternating = matches!((a, b, b0), (Some(a), Some(b), Some(b0))
            if same_reply(a, &response.message) && same_reply(b0, b) && !same_reply(b, &response.message));
        let describe = |m: &Message| {
            short(
                &m.tool_calls
                    .first()
                    .map(|c| format!("{} {}", c.name, c.arguments))
                    .unwrap_or_else(|| m.content.clone()),
            )
        };
        let looped = if self.same_replies >= MAX_SAME_REPLIES {
            Some(EngineError::Failed(format!(
                "{}: the model gave the same reply {} times in a row (a loop): {}",
                self.conv(),
                self.same_replies,
                short(&calls.first().map(|c| format!("{} {}", c.name, c.arguments)).unwrap_or_else(|| text.clone()))
            )))
        } else if alternating {
            Some(EngineError::Failed(format!(
                "{}: the model alternated between the same two replies twice (a loop): {} / {}",
                self.conv(),
                describe(&response.message),
                b.map(describe).unwrap_or_default()
            )))
        } else {
            None
        };
        self.messages.push(response.message);
        if calls.is_empty() {
            return self.text_reply(text, fresh).await;
        }
        self.quiet_turns = 0;
        self.ever_called = true;
        let end = self.tools(turn, &calls, first_started).await?;
        if let Some(Ok(mut v)) = self.ctx.engine.step_overheads.as_ref().map(|o| o.lock()) {
            v.push(step_started.elapsed().saturating_sub(self.excluded));
        }
        if let Some(end) = end {
            return Ok(Some(end));
        }
        if self.rejections >= MAX_PLAN_REJECTIONS {
            return Err(EngineError::Failed(format!(
                "the planner did not produce a valid plan after {} attempts; last reason: {}",
                self.rejections,
                self.messages.last().map(|m| m.content.clone()).unwrap_or_default()
            )));
        }
        // Checked after the calls ran (their results are on record) and after the planner's
        // own limit, whose reason says more.
        match looped {
            Some(looped) => Err(looped),
            None => Ok(None),
        }
    }

    /// The turn's reply: replayed when an earlier driver stored it, else called now.
    async fn reply(&mut self, turn: u32) -> Result<Reply> {
        if let Some(response) = self.recorded.remove(&turn) {
            return Ok(Reply { response, fresh: false, first_started: false });
        }
        if let Some(limit) = self.spec.token_budget.filter(|l| self.spent >= *l) {
            return Err(EngineError::Failed(format!(
                "{} spent its token budget ({} of {limit} tokens) without finishing",
                self.conv(),
                self.spent
            )));
        }
        let (response, first_started) = self.call(turn).await?;
        Ok(Reply { response, fresh: true, first_started })
    }

    /// Calls the model for `turn`; when the provider says the request is longer than the
    /// model's window (the window was guessed too large, or the server runs with less), the
    /// conversation is compacted to two thirds of what was sent and the call made once more.
    async fn call(&mut self, turn: u32) -> Result<(ModelResponse, bool)> {
        match self.call_once(turn).await {
            Err(EngineError::Model(e)) if e.is_context_overflow() => {
                let sent: u64 = self.messages.iter().map(Message::estimated_tokens).sum();
                let before = self.budget;
                self.budget = (sent.min(self.budget) * 2 / 3).max(1_000);
                self.ctx
                    .event(EventKind::Warning {
                        message: format!(
                            "{}: the provider refused turn {turn} as longer than the model's context ({e}); compacting \
                             to {} tokens (from {before}) and trying once more. Set `context_window` for this model \
                             to avoid it.",
                            self.conv(),
                            self.budget
                        ),
                    })
                    .await?;
                self.call_once(turn).await
            }
            other => other,
        }
    }

    /// Calls the model for `turn` (the conversation compacted to fit, the worst case reserved
    /// against the budgets) and records the reply before anything acts on it.
    async fn call_once(&mut self, turn: u32) -> Result<(ModelResponse, bool)> {
        let ctx = self.ctx;
        // The request borrows the conversation by moving it in and out, so a step does not
        // copy the whole history; a compacted copy is made only when needed.
        let fitted = compact::fit(&self.messages, self.header_len, self.budget);
        if let Some((_, c)) = &fitted {
            // Log each new level of compaction once, not on every turn.
            if self.last_compaction != Some(c.elided_messages) {
                self.last_compaction = Some(c.elided_messages);
                ctx.event(EventKind::ContextCompacted {
                    conversation: self.spec.conversation.clone(),
                    turn,
                    elided_messages: c.elided_messages,
                    tokens_before: c.tokens_before,
                    tokens_after: c.tokens_after,
                    window: self.window,
                })
                .await?;
            }
        }
        let compacted = fitted.is_some();
        let mut request = ModelRequest {
            model: ctx.settings.model.clone(),
            messages: match fitted {
                Some((fitted, _)) => fitted,
                None => std::mem::take(&mut self.messages),
            },
            // Constrained replies carry their calls in text: the tools are in the prompt.
            tools: if self.reply_schema.is_some() { Vec::new() } else { std::mem::take(&mut self.tools) },
            max_output_tokens: ctx.max_output_tokens(),
            meta: CallMeta { conversation: self.spec.conversation.clone(), turn },
            response_schema: self.reply_schema.clone(),
        };
        let reserved = reserve(ctx, &request, &mut self.counters).await?;
        // The model call as the GenAI semantic conventions name it.
        let span = tracing::info_span!(
            "autodev.model_call",
            otel.name = %format!("chat {}", ctx.settings.model),
            otel.kind = "client",
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = %ctx.settings.provider,
            gen_ai.request.model = %ctx.settings.model,
            gen_ai.request.max_tokens = i64::from(request.max_output_tokens),
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            autodev.cost_usd = tracing::field::Empty,
            autodev.run.id = %ctx.run.id,
            autodev.conversation = %self.spec.conversation,
            autodev.turn = i64::from(turn),
        );
        let started = Instant::now();
        let result = tokio::select! {
            r = tracing::Instrument::instrument(ctx.engine.model.complete(&request), span.clone()) => Some(r),
            _ = ctx.cancel.cancelled() => None,
        };
        if !matches!(result, Some(Ok(_))) && reserved > 0 {
            ctx.engine.store.release_cost(&ctx.run.id, reserved).await?;
        }
        if self.reply_schema.is_none() {
            self.tools = std::mem::take(&mut request.tools);
        }
        if !compacted {
            self.messages = std::mem::take(&mut request.messages);
        }
        let response = match result {
            Some(r) => r?,
            None => return Err(EngineError::Cancelled),
        };
        let latency = started.elapsed();
        self.excluded += latency;
        // Recorded under the call's span, which takes its usage and cost from the record.
        tracing::Instrument::instrument(self.record(turn, response, latency, reserved), span).await
    }

    /// Prices the reply, warns about spending, and stores it with the start of its first tool
    /// call, in one transaction. Returns the reply the run goes on with (another driver's, if
    /// it recorded this turn first) and whether the first call was marked started.
    async fn record(
        &self,
        turn: u32,
        response: ModelResponse,
        latency: Duration,
        reserved: i64,
    ) -> Result<(ModelResponse, bool)> {
        let ctx = self.ctx;
        let run_id = ctx.run.id.as_str();
        let conv = self.spec.conversation.as_str();
        // A fallback may have answered: its provider and model are what was used and what
        // is priced.
        let (provider, model) = match response.served_by() {
            Some((p, m)) => (p.to_string(), m.to_string()),
            None => (ctx.engine.model.provider().to_string(), ctx.settings.model.clone()),
        };
        for f in &response.fallbacks {
            ctx.event(EventKind::ProviderFallback {
                conversation: conv.to_string(),
                turn,
                from: format!("{}:{}", f.from_provider, f.from_model),
                to: format!("{}:{}", f.to_provider, f.to_model),
                reason: f.reason.clone(),
            })
            .await?;
        }
        let cost = match ctx.engine.prices.cost(&model, response.usage.input_tokens, response.usage.output_tokens) {
            Some(c) => c.0,
            None => {
                if !ctx.warned_unpriced.swap(true, Ordering::Relaxed) {
                    ctx.event(EventKind::Warning {
                        message: format!(
                            "model `{model}` is not in the price table; its calls are counted at $0 (add it under [prices] in autodev.toml)"
                        ),
                    })
                    .await?;
                }
                0
            }
        };
        let span = tracing::Span::current();
        if !span.is_disabled() {
            // Integers as OTLP ints (a u64 would be exported as a string).
            span.record("gen_ai.response.model", model.as_str());
            span.record("gen_ai.usage.input_tokens", response.usage.input_tokens.min(i64::MAX as u64) as i64);
            span.record("gen_ai.usage.output_tokens", response.usage.output_tokens.min(i64::MAX as u64) as i64);
            span.record("autodev.cost_usd", autodev_domain::MicroUsd(cost).as_usd());
        }
        let spent = ctx.cost_micros.fetch_add(cost, Ordering::Relaxed) + cost;
        if let Some(max) = ctx.settings.max_cost_usd
            && spent as f64 >= max * 0.8e6
            && !ctx.warned_budget.swap(true, Ordering::Relaxed)
        {
            let message =
                format!("80% of the run's limit max_cost_usd = ${max:.4} is spent (${:.4})", spent as f64 / 1e6);
            tracing::warn!(run = %ctx.run.id, "{message}");
            metrics::counter!("autodev_budget_warnings_total", "limit" => "run").increment(1);
            ctx.event(EventKind::Warning { message }).await?;
        }
        let json = serde_json::to_string(&response).map_err(autodev_store::StoreError::from)?;
        // The reply and the start of its first tool call are stored together, before the tool
        // runs.
        let effective = calls_of(&response, self.mode, &self.tools, turn);
        let first = effective.first();
        let target = first.map(|c| ToolBox::describe(&c.name, &c.arguments)).unwrap_or_default();
        let start = first.map(|c| ToolStart {
            idx: 0,
            call_id: &c.id,
            name: &c.name,
            arguments: &c.arguments,
            target: &target,
        });
        let rec = ModelCallRecord {
            run_id,
            conversation: conv,
            turn,
            provider: &provider,
            model: &model,
            response_json: &json,
            input_tokens: response.usage.input_tokens,
            output_tokens: response.usage.output_tokens,
            cost_micros: cost,
            latency_ms: latency.as_millis() as u64,
            reserved_micros: reserved,
        };
        let labels = [("provider", rec.provider.to_string()), ("model", rec.model.to_string())];
        metrics::counter!("autodev_model_calls_total", &labels).increment(1);
        metrics::counter!(
            "autodev_model_tokens_total",
            &[labels[0].clone(), labels[1].clone(), ("direction", "input".to_string())]
        )
        .increment(rec.input_tokens);
        metrics::counter!(
            "autodev_model_tokens_total",
            &[labels[0].clone(), labels[1].clone(), ("direction", "output".to_string())]
        )
        .increment(rec.output_tokens);
        metrics::counter!("autodev_model_cost_micro_usd_total", &labels).increment(rec.cost_micros.max(0) as u64);
        metrics::histogram!("autodev_model_call_duration_seconds", &labels).record(latency.as_secs_f64());
        match ctx.engine.store.record_model_call(&rec, start.as_ref()).await? {
            autodev_store::Recorded::New(events) => {
                for e in events {
                    ctx.emit(e).await;
                }
                Ok((response, start.is_some()))
            }
            // Another driver recorded this turn first: its answer is the one the run goes on
            // with (this one's is dropped, never recorded twice).
            autodev_store::Recorded::Already { response_json } => {
                tracing::warn!(run = %run_id, conversation = conv, turn, "turn already recorded by another driver; continuing from its answer");
                let theirs = serde_json::from_str(&response_json).map_err(autodev_store::StoreError::from)?;
                Ok((theirs, false))
            }
        }
    }

    /// A reply without tool calls: a plan or a summary written as text, a reminder, or the
    /// end of a model that does not call tools.
    async fn text_reply(&mut self, text: String, fresh: bool) -> Result<Option<AgentEnd>> {
        self.quiet_turns += 1;
        let in_text = tool_call_in_text(&text);
        // `auto`, a model that has not called a tool yet, a server with structured output:
        // the next replies are constrained to tool calls (a plan written as text is still
        // taken first, below).
        let switch = self.mode == ToolCallMode::Auto
            && !self.ever_called
            && self.quiet_turns < MAX_TEXT_REPLIES
            && self.ctx.engine.model.structured_output()
            && !(self.spec.kind == AgentKind::Planner && matches!(plan_in_text(&text), Some(Ok(_))));
        if switch {
            self.mode = ToolCallMode::Schema;
            self.reply_schema = Some(prompts::reply_schema(&self.tools));
            if fresh {
                self.ctx
                    .event(EventKind::Warning {
                        message: format!(
                            "{}: the model answered without calling a tool; its replies are now constrained to tool calls (tool_calls = \"schema\")",
                            self.conv()
                        ),
                    })
                    .await?;
            }
            self.messages.push(Message::user(prompts::schema_switch(&self.tools)));
            return Ok(None);
        }
        let nudge = match self.spec.kind {
            AgentKind::Planner => {
                // Some models write the plan as JSON in their reply instead of calling the
                // tool; a plan that parses and validates is taken as submitted, and one that
                // does not gets its error back rather than a generic reminder.
                let parsed = plan_in_text(&text);
                if let Some(Ok(plan)) = parsed {
                    return Ok(Some(AgentEnd::Plan(plan)));
                }
                let error = parsed.and_then(std::result::Result::err);
                if self.quiet_turns >= MAX_TEXT_REPLIES {
                    let detail = match &error {
                        Some(e) => format!(" (its last reply held a plan that could not be read: {e})"),
                        None => String::new(),
                    };
                    return Err(no_tool_calls(self.conv(), self.quiet_turns, &detail));
                }
                match error {
                    Some(e) => {
                        if fresh {
                            self.ctx.event(EventKind::PlanRejected { reason: e.clone() }).await?;
                        }
                        format!(
                            "The plan in your reply could not be read: {e}. Call the `submit_plan` tool with the plan as its arguments."
                        )
                    }
                    None => prompts::PLANNER_NUDGE.to_string(),
                }
            }
            AgentKind::Coder => {
                // Many models end their work by answering without a tool call. After one
                // reminder to call `finish`, a second such answer ends the task with its text
                // as the summary, if the model has called tools before (it can, and says it is
                // done). A model that never called one, or that writes tool calls as text, is
                // stopped with the likely cause: its text is no summary.
                if self.quiet_turns >= MAX_TEXT_REPLIES {
                    if let Some((name, _)) = &in_text {
                        return Err(no_tool_calls(
                            self.conv(),
                            self.quiet_turns,
                            &format!(" (it wrote a `{name}` call as text)"),
                        ));
                    }
                    if !self.ever_called {
                        return Err(no_tool_calls(self.conv(), self.quiet_turns, ""));
                    }
                    let summary = if text.trim().is_empty() { "(no summary given)".to_string() } else { text };
                    return Ok(Some(AgentEnd::Finished(summary)));
                }
                match &in_text {
                    Some((name, _)) => format!(
                        "Your reply holds a `{name}` call written as text, which this server did not return as a tool call, so it was not run. Call tools through the tool-calling interface; when the work is complete and checked, call `finish`."
                    ),
                    None => prompts::NUDGE.to_string(),
                }
            }
        };
        self.messages.push(Message::user(nudge));
        Ok(None)
    }

    /// Runs the turn's calls in order (or replays the results an earlier driver stored), each
    /// recorded as started before it runs and as finished after. `Some` when a call ended the
    /// conversation (`finish`, an accepted plan).
    async fn tools(
        &mut self,
        turn: u32,
        calls: &[autodev_domain::ToolCall],
        first_started: bool,
    ) -> Result<Option<AgentEnd>> {
        let ctx = self.ctx;
        let run_id = ctx.run.id.as_str();
        let mut end = None;
        for (idx, call) in calls.iter().enumerate() {
            let idx = idx as u32;
            let (content, is_error, call_end, fresh) = match self.finished_tools.remove(&(turn, idx)) {
                Some((content, is_error)) => {
                    let call_end = recorded_end(self.spec.kind, &call.name, &call.arguments, is_error);
                    (content, is_error, call_end, false)
                }
                None => {
                    let conv = self.spec.conversation.as_str();
                    if !(idx == 0 && first_started) {
                        let target = ToolBox::describe(&call.name, &call.arguments);
                        let start = ToolStart {
                            idx,
                            call_id: &call.id,
                            name: &call.name,
                            arguments: &call.arguments,
                            target: &target,
                        };
                        let e = ctx.engine.store.tool_started(run_id, conv, turn, &start).await?;
                        ctx.emit(e).await;
                    }
                    let tool_started = Instant::now();
                    let span = tracing::info_span!(
                        "autodev.tool_call",
                        otel.name = %format!("execute_tool {}", call.name),
                        gen_ai.operation.name = "execute_tool",
                        gen_ai.tool.name = %call.name,
                        gen_ai.tool.call.id = %call.id,
                        autodev.conversation = %conv,
                        autodev.turn = i64::from(turn),
                        autodev.tool.error = tracing::field::Empty,
                    );
                    let result = tracing::Instrument::instrument(
                        execute(self.spec.kind, self.spec.toolbox, &call.name, &call.arguments),
                        span.clone(),
                    )
                    .await;
                    span.record("autodev.tool.error", result.is_error);
                    drop(span);
                    self.excluded += tool_started.elapsed();
                    let outcome = if result.is_error { "error" } else { "ok" };
                    // The name comes from the model: only known names become label values.
                    let known = self.tools.iter().any(|t| t.name == call.name);
                    let tool = if known { call.name.clone() } else { "unknown".to_string() };
                    metrics::counter!("autodev_tool_calls_total", "tool" => tool, "outcome" => outcome).increment(1);
                    let e = ctx
                        .engine
                        .store
                        .tool_finished(
                            run_id,
                            conv,
                            turn,
                            idx,
                            &call.name,
                            &result.content,
                            result.is_error,
                            &short(&result.content),
                        )
                        .await?;
                    ctx.emit(e).await;
                    if let Some((path, glob)) = &result.protected {
                        metrics::counter!("autodev_protected_path_refusals_total").increment(1);
                        ctx.event(EventKind::ProtectedPath {
                            conversation: conv.to_string(),
                            path: path.clone(),
                            glob: glob.clone(),
                            action: "refused".into(),
                        })
                        .await?;
                    }
                    (result.content, result.is_error, result.end, true)
                }
            };
            if self.spec.kind == AgentKind::Planner && call.name == "submit_plan" && is_error {
                self.rejections += 1;
                if fresh {
                    ctx.event(EventKind::PlanRejected { reason: content.clone() }).await?;
                }
            }
            // The same reply as the previous turn (small models repeat a call whose result they
            // already have): said with the result, before the loop check stops the agent.
            let content = if self.same_replies == MAX_SAME_REPLIES - 1 {
                format!("{content}\n\n{}", prompts::REPEATED_CALL)
            } else {
                content
            };
            // The steps left, with the last result of the turn when a fifth and a twentieth
            // of them remain (worked out from the turn, so a resumed run says the same).
            let content = match prompts::steps_left(turn, self.spec.max_steps)
                .filter(|_| self.spec.kind == AgentKind::Coder && idx as usize + 1 == calls.len())
            {
                Some(note) => format!("{content}\n\n{note}"),
                None => content,
            };
            if self.mode != ToolCallMode::Native && response_is_text(&self.messages) {
                let status = if is_error { " (error)" } else { "" };
                self.messages.push(Message::user(format!("Result of `{}`{status}:\n{content}", call.name)));
            } else {
                self.messages.push(Message::tool(call.id.clone(), content, is_error));
            }
            if end.is_none() {
                end = call_end;
            }
        }
        Ok(end)
    }
}

/// Reserves the call's worst-case cost before it is made, against every limit that applies:
/// the run's `max_cost_usd`, its project's `monthly_budget_usd` and the operator's monthly
/// budget. The input is estimated conservatively (the conversation and tool definitions at
/// three characters a token, where the estimate elsewhere takes four) and all the output it
/// may ask for is added. Returns what was reserved (0 without a limit or a price); a call
/// that would pass a limit is not made and the run fails `budget_exceeded`, naming the limit.
async fn reserve(
    ctx: &RunCtx,
    request: &ModelRequest,
    counters: &mut HashMap<String, autodev_llm::TokenCounter>,
) -> Result<i64> {
    let to_micros = |usd: f64| (usd * 1e6).round() as i64;
    let project_month = match &ctx.run.project_id {
        Some(_) => ctx.engine.store.project_monthly_budget(&ctx.run.id).await?.map(to_micros),
        None => None,
    };
    let limits = autodev_store::Limits {
        run: ctx.settings.max_cost_usd.map(to_micros),
        project_month,
        global_month: ctx.engine.budgets.monthly_usd.map(to_micros),
    };
    if limits == autodev_store::Limits::default() {
        return Ok(0);
    }
    // The worst case over every model the call may end up on (a fallback may cost more than
    // the primary): its input counted with its tokenizer where there is one, else
    // estimated conservatively, plus all the output the call may ask for.
    let mut worst: Option<autodev_domain::MicroUsd> = None;
    for (_, model) in ctx.engine.model.candidates(&ctx.settings.model) {
        let counter = counters.entry(model.clone()).or_insert_with(|| autodev_llm::TokenCounter::for_model(&model));
        let input = counter.input(request);
        if let Some(cost) = ctx.engine.prices.cost(&model, input, request.max_output_tokens as u64) {
            worst = worst.max(Some(cost));
        }
    }
    let Some(worst) = worst else {
        // Unpriced models are counted at $0 (with a warning); nothing to reserve.
        return Ok(0);
    };
    let usd = |m: i64| m as f64 / 1e6;
    match ctx.engine.store.reserve_cost(&ctx.run.id, worst.0, &limits).await? {
        autodev_store::Reservation::Granted { project_month: p, global_month: g } => {
            for (kind, committed, limit) in [("project", p, limits.project_month), ("global", g, limits.global_month)] {
                let (Some(committed), Some(limit)) = (committed, limit) else { continue };
                let flag = if kind == "project" { &ctx.warned_project_month } else { &ctx.warned_global_month };
                if committed as f64 >= limit as f64 * 0.8 && !flag.swap(true, Ordering::Relaxed) {
                    let what = if kind == "project" {
                        "the project's monthly_budget_usd"
                    } else {
                        "the monthly_budget_usd of this deployment"
                    };
                    let message = format!(
                        "80% of {what} = ${:.4} is spent or reserved this month (${:.4})",
                        usd(limit),
                        usd(committed)
                    );
                    tracing::warn!(run = %ctx.run.id, "{message}");
                    metrics::counter!("autodev_budget_warnings_total", "limit" => format!("{kind}_month")).increment(1);
                    ctx.event(EventKind::Warning { message }).await?;
                }
            }
            Ok(worst.0)
        }
        autodev_store::Reservation::Denied { limit, month, spent_micros, reserved_micros } => {
            let in_flight = if reserved_micros > 0 {
                format!(" with ${:.4} reserved by calls in flight", usd(reserved_micros))
            } else {
                String::new()
            };
            let (what, value, raise) = match limit {
                autodev_store::LimitKind::Run => (
                    "the run's limit max_cost_usd".to_string(),
                    limits.run,
                    "raise it (autodev resume RUN --max-cost-usd N) to continue",
                ),
                autodev_store::LimitKind::ProjectMonth => (
                    format!("the project's monthly_budget_usd for {}", month.unwrap_or_default()),
                    limits.project_month,
                    "raise the project's monthly_budget_usd and resume the run to continue",
                ),
                autodev_store::LimitKind::GlobalMonth => (
                    format!("the deployment's monthly_budget_usd for {}", month.unwrap_or_default()),
                    limits.global_month,
                    "raise monthly_budget_usd (AUTODEV_MONTHLY_BUDGET_USD) and resume the run to continue",
                ),
            };
            metrics::counter!("autodev_budget_denials_total", "limit" => match limit {
                autodev_store::LimitKind::Run => "run",
                autodev_store::LimitKind::ProjectMonth => "project_month",
                autodev_store::LimitKind::GlobalMonth => "global_month",
            })
            .increment(1);
            Err(EngineError::Budget(format!(
                "budget_exceeded: {what} = ${:.4} would be passed: ${:.4} spent{in_flight}, and the next model call may cost up to ${:.4} ({raise})",
                usd(value.unwrap_or_default()),
                usd(spent_micros),
                usd(worst.0)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tool_call_in_text;

    #[test]
    fn calls_written_as_text_are_read_with_doubled_braces_too() {
        let want = Some(("ping".to_string(), r#"{"echo": "pong"}"#.to_string()));
        assert_eq!(tool_call_in_text(r#"{"name": "ping", "arguments": {"echo": "pong"}}"#), want);
        // As Qwen2.5-Coder 1.5B wrote it under llama.cpp.
        assert_eq!(tool_call_in_text(r#"{{"name": "ping", "arguments": {"echo": "pong"}}}"#), want);
        assert_eq!(tool_call_in_text("no call here"), None);
    }
}
