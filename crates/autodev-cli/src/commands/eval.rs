//! `autodev eval`: how often runs succeed on a suite of tasks in SWE-bench's instance format.
//!
//! Each instance: its repository is made (from `repo_files`, Autodev's own suite, or a clone of
//! `repo` at `base_commit`, SWE-bench's), a run is driven on it in this process with the
//! problem statement as the spec (or, with `--gold`, the reference `patch` is applied), then
//! the run's branch is checked out, the hidden tests (`test_patch`) laid over it and the
//! `FAIL_TO_PASS` and `PASS_TO_PASS` tests run in the sandbox. Resolved: both sets pass. The
//! agent never sees the hidden tests. Reports: a table (or `--json`), `report.json` and
//! `report.md` in the output directory.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autodev_domain::{EventKind, MicroUsd, RunState, Spec};
use autodev_engine::{Engine, Outcome, RunRequest, RunSettings};
use autodev_workspace::{Sandbox, SandboxPolicy};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cli::EvalArgs;
use crate::config::FileConfig;
use crate::context::{absolute, open_store};
use crate::{Exit, provider};

/// One task, as SWE-bench exports them (`instance_id`, `repo`, `base_commit`,
/// `problem_statement`, `patch`, `test_patch`, `FAIL_TO_PASS`, `PASS_TO_PASS`) with Autodev's
/// additions for self-contained suites (`repo_files`, `test_command`, `test_cmd`, `language`).
#[derive(Clone, Debug, Deserialize)]
struct Instance {
    instance_id: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    base_commit: String,
    problem_statement: String,
    #[serde(default)]
    patch: String,
    #[serde(default)]
    test_patch: String,
    #[serde(rename = "FAIL_TO_PASS", deserialize_with = "test_ids")]
    fail_to_pass: Vec<String>,
    #[serde(rename = "PASS_TO_PASS", default, deserialize_with = "test_ids")]
    pass_to_pass: Vec<String>,
    /// The repository's files (path → text), for a suite that carries its repositories.
    #[serde(default)]
    repo_files: BTreeMap<String, String>,
    /// The test command the run may use (else detected in the repository).
    #[serde(default)]
    test_command: Option<String>,
    /// How to run test ids: `{tests}` (space separated, shell-quoted) or `{tests_regex}`.
    #[serde(default)]
    test_cmd: Option<String>,
    #[serde(default)]
    language: Option<String>,
}

/// Test ids: a JSON list, or a string holding one (SWE-bench's exports have both).
fn test_ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        List(Vec<String>),
        Text(String),
    }
    match Ids::deserialize(d)? {
        Ids::List(v) => Ok(v),
        Ids::Text(t) => serde_json::from_str(&t).map_err(serde::de::Error::custom),
    }
}

/// What one instance came to.
#[derive(Clone, Debug, Default, Serialize)]
struct Outcome1 {
    instance_id: String,
    language: String,
    resolved: bool,
    fail_to_pass: Option<bool>,
    pass_to_pass: Option<bool>,
    /// The run's end (`succeeded`, `failed: …`), or `gold`.
    run: String,
    run_id: Option<String>,
    model_calls: u64,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    seconds: f64,
    /// A problem of the harness or the instance (not of the agent), when there was one.
    error: Option<String>,
    /// The tail of the hidden tests' output when they failed.
    test_output: Option<String>,
}

pub async fn eval(home: &Path, config: Option<&Path>, args: EvalArgs) -> Exit {
    match eval_inner(home, config, args).await {
        Ok(exit) | Err(exit) => exit,
    }
}

fn load(suite: &Path, only: &[String]) -> Result<Vec<Instance>, Exit> {
    let file = if suite.is_dir() { suite.join("suite.jsonl") } else { suite.to_path_buf() };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Exit::Usage(format!("cannot read the suite {}: {e}", file.display())))?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let parsed: Result<Instance, _> =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(line));
        match parsed {
            Ok(inst) if inst.fail_to_pass.is_empty() => {
                problems.push(format!("line {}: {}: FAIL_TO_PASS is empty", i + 1, inst.instance_id))
            }
            Ok(inst) if inst.repo_files.is_empty() && inst.repo.is_empty() => problems.push(format!(
                "line {}: {}: neither repo (owner/name) nor repo_files is given",
                i + 1,
                inst.instance_id
            )),
            Ok(inst) => out.push(inst),
            Err(e) => problems.push(format!("line {}: {}: {}", i + 1, e.path(), e.inner())),
        }
    }
    if !problems.is_empty() {
        return Err(Exit::Usage(format!("invalid suite {}:\n  - {}", file.display(), problems.join("\n  - "))));
    }
    if !only.is_empty() {
        let unknown: Vec<&String> = only.iter().filter(|id| !out.iter().any(|i| &i.instance_id == *id)).collect();
        if !unknown.is_empty() {
            return Err(Exit::Usage(format!(
                "--instance: no instance {} in {}",
                unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                file.display()
            )));
        }
        out.retain(|i| only.contains(&i.instance_id));
    }
    if out.is_empty() {
        return Err(Exit::Usage(format!("the suite {} has no instances", file.display())));
    }
    Ok(out)
}

async fn eval_inner(home: &Path, config: Option<&Path>, args: EvalArgs) -> Result<Exit, Exit> {
    let instances = load(&args.suite, &args.instances)?;
    if args.jobs == 0 {
        return Err(Exit::Usage("--jobs must be at least 1".into()));
    }
    if let Some(m) = args.min_resolved.filter(|m| !(0.0..=1.0).contains(m)) {
        return Err(Exit::Usage(format!("--min-resolved {m}: give a share from 0 to 1 (0.5 for half)")));
    }
    let cfg = FileConfig::load(home, config, None)
        .map_err(|p| Exit::Usage(format!("invalid configuration:\n  - {}", p.join("\n  - "))))?;
    let out = match &args.out {
        Some(o) => absolute(o),
        None => {
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace(':', "-");
            home.join("eval").join(stamp)
        }
    };
    std::fs::create_dir_all(&out).map_err(|e| Exit::Usage(format!("cannot create {}: {e}", out.display())))?;
    // The runs live in the evaluation's own data directory, not among the user's runs.
    let (engine, base_settings) = if args.gold {
        (None, None)
    } else {
        let (provider_name, model) = provider::resolve(args.provider.clone(), args.model.clone(), &cfg);
        let mut settings = crate::config::configured_settings(&cfg, &provider_name, model);
        settings.max_steps = args.max_steps.unwrap_or(settings.max_steps);
        settings.max_repair_rounds = args.max_repair_rounds.unwrap_or(settings.max_repair_rounds);
        let client = provider::build(&settings.provider, &cfg, None, None).map_err(Exit::Usage)?;
        let eval_home = out.join("home");
        let store = open_store(&eval_home).await?;
        (Some(crate::context::engine(store, client, &cfg, &eval_home)), Some(settings))
    };
    let harness = Arc::new(Harness {
        out: out.clone(),
        repos: args.repos.clone(),
        engine,
        settings: base_settings,
        sandbox: crate::context::sandbox_config(&cfg),
        test_timeout: Duration::from_secs(args.test_timeout),
        gold: args.gold,
    });
    let started = Instant::now();
    let total = instances.len();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.jobs));
    let mut set = tokio::task::JoinSet::new();
    for (i, inst) in instances.into_iter().enumerate() {
        let (harness, gate) = (harness.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (i, harness.one(&inst).await)
        });
    }
    let mut results: Vec<(usize, Outcome1)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.map_err(|e| Exit::Usage(format!("an instance crashed: {e}")))?;
        if !args.json {
            eprintln!(
                "[{}/{total}] {} {}",
                results.len() + 1,
                r.instance_id,
                if r.resolved { "resolved".to_string() } else { format!("not resolved ({})", why(&r)) }
            );
        }
        results.push((i, r));
    }
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<Outcome1> = results.into_iter().map(|(_, r)| r).collect();
    let report = Report::new(&results, started.elapsed(), &args, harness.settings.as_ref());
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(out.join("report.json"), &json)
        .and_then(|_| std::fs::write(out.join("report.md"), report.markdown()))
        .map_err(|e| Exit::Usage(format!("cannot write the report in {}: {e}", out.display())))?;
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
        println!("report: {}", out.join("report.md").display());
    }
    let broken = results.iter().any(|r| r.error.is_some());
    let below = args.min_resolved.is_some_and(|m| report.resolved_share < m);
    // --gold checks the suite: every instance must resolve with its reference solution.
    let gold_failed = args.gold && report.resolved < report.instances;
    Ok(if broken || below || gold_failed { Exit::Failed } else { Exit::Ok })
}

fn why(r: &Outcome1) -> String {
    if let Some(e) = &r.error {
        return e.clone();
    }
    match (r.fail_to_pass, r.pass_to_pass) {
        (Some(false), _) => format!("FAIL_TO_PASS failed; run {}", r.run),
        (_, Some(false)) => format!("PASS_TO_PASS failed; run {}", r.run),
        _ => r.run.clone(),
    }
}

struct Harness {
    out: PathBuf,
    repos: Option<PathBuf>,
    engine: Option<Engine>,
    settings: Option<RunSettings>,
    sandbox: autodev_engine::SandboxConfig,
    test_timeout: Duration,
    gold: bool,
}

impl Harness {
    async fn one(&self, inst: &Instance) -> Outcome1 {
        let started = Instant::now();
        let mut r = Outcome1 {
            instance_id: inst.instance_id.clone(),
            language: inst.language.clone().unwrap_or_default(),
            ..Outcome1::default()
        };
        if let Err(e) = self.evaluate(inst, &mut r).await {
            r.error = Some(e);
            r.resolved = false;
        }
        r.seconds = started.elapsed().as_secs_f64();
        r
    }

    async fn evaluate(&self, inst: &Instance, r: &mut Outcome1) -> Result<(), String> {
        let dir = self.out.join(safe_name(&inst.instance_id));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let repo = dir.join("repo");
        self.materialize(inst, &repo).await?;
        let scored = dir.join("scored");
        if self.gold {
            r.run = "gold".into();
            git(&repo, &["worktree", "add", "-q", "--detach", path_str(&scored)?, "HEAD"], None).await?;
            apply(&scored, &inst.test_patch, "test_patch").await?;
            // The instance is only sound when its FAIL_TO_PASS tests fail without the solution.
            let (passed, _) = self.tests(inst, &scored, &inst.fail_to_pass, &dir).await?;
            if passed {
                return Err("FAIL_TO_PASS already passes without the reference solution".into());
            }
            apply(&scored, &inst.patch, "patch").await?;
        } else {
            let (Some(engine), Some(base)) = (&self.engine, &self.settings) else {
                return Err("no engine".into());
            };
            let branch = self.run_agent(engine, base, inst, &repo, r).await?;
            git(&repo, &["worktree", "add", "-q", "--detach", path_str(&scored)?, &branch], None).await?;
            apply(&scored, &inst.test_patch, "test_patch").await?;
        }
        let (f2p, f2p_out) = self.tests(inst, &scored, &inst.fail_to_pass, &dir).await?;
        r.fail_to_pass = Some(f2p);
        let mut failed_output = (!f2p).then_some(f2p_out);
        if !inst.pass_to_pass.is_empty() {
            let (p2p, p2p_out) = self.tests(inst, &scored, &inst.pass_to_pass, &dir).await?;
            r.pass_to_pass = Some(p2p);
            if !p2p && failed_output.is_none() {
                failed_output = Some(p2p_out);
            }
        }
        r.resolved = r.fail_to_pass == Some(true) && r.pass_to_pass != Some(false);
        r.test_output = failed_output;
        Ok(())
    }

    /// The instance's repository at its base: written from `repo_files` and committed, or
    /// cloned (`--repos DIR/owner__name`, else github.com) and checked out at `base_commit`.
    async fn materialize(&self, inst: &Instance, repo: &Path) -> Result<(), String> {
        if !inst.repo_files.is_empty() {
            std::fs::create_dir_all(repo).map_err(|e| e.to_string())?;
            let root = autodev_workspace::fsops::Root::open(repo).map_err(|e| e.to_string())?;
            for (path, text) in &inst.repo_files {
                let rel = root.check(path).map_err(|e| format!("repo_files: {path}: {e}"))?;
                root.write(&rel, text.as_bytes()).map_err(|e| format!("repo_files: {path}: {e}"))?;
            }
            git(repo, &["init", "-q", "-b", "main"], None).await?;
            git(repo, &["add", "-A"], None).await?;
            git(repo, &["commit", "-q", "-m", &format!("{} (base)", inst.instance_id)], None).await?;
            return Ok(());
        }
        let mirror = self.repos.as_ref().map(|d| d.join(inst.repo.replace('/', "__"))).filter(|p| p.exists());
        let source = match mirror {
            Some(m) => path_str(&m)?.to_string(),
            None => format!("https://github.com/{}.git", inst.repo),
        };
        let parent = repo.parent().unwrap_or(repo);
        git(parent, &["clone", "-q", &source, path_str(repo)?], None).await?;
        if !inst.base_commit.is_empty() {
            git(repo, &["checkout", "-q", "-B", "autodev-eval-base", &inst.base_commit], None).await?;
        }
        Ok(())
    }

    /// Drives a run on `repo` with the problem statement as its spec; returns the branch to
    /// score (the run's, or the base when the run made none).
    async fn run_agent(
        &self,
        engine: &Engine,
        base: &RunSettings,
        inst: &Instance,
        repo: &Path,
        r: &mut Outcome1,
    ) -> Result<String, String> {
        let test_command = inst
            .test_command
            .clone()
            .or_else(|| autodev_engine::detect::detect_test_command(repo))
            .ok_or("no test_command in the instance and none detected in its repository")?;
        let settings = RunSettings { test_command, ..base.clone() };
        // The problem statement alone, as SWE-bench gives it: a heading made of the instance id
        // (`go-reverse-runes`) was taken by the 1.5B model for a directory to list.
        let spec = Spec::from_text(&inst.problem_statement).map_err(|e| format!("problem_statement: {e}"))?;
        let run = engine
            .create_run(RunRequest { repo: repo.to_path_buf(), spec, base: None, settings })
            .await
            .map_err(|e| format!("the run could not start: {e}"))?;
        r.run_id = Some(run.id.clone());
        let outcome = engine.drive(&run.id, CancellationToken::new()).await;
        let row = engine.store().get_run(&run.id).await.map_err(|e| e.to_string())?;
        r.run = match (&outcome, row.run_state()) {
            (Ok(Outcome::AwaitingApproval), _) => "awaiting approval (set approval off for eval)".into(),
            (_, RunState::Succeeded) => "succeeded".into(),
            (_, state) => format!("{state}{}", row.reason.as_deref().map(|x| format!(": {x}")).unwrap_or_default()),
        };
        r.input_tokens = row.input_tokens;
        r.output_tokens = row.output_tokens;
        r.cost_usd = MicroUsd(row.cost_micros).as_usd();
        let events = engine.store().events(&run.id, 0).await.unwrap_or_default();
        r.model_calls = events.iter().filter(|e| matches!(e.kind, EventKind::ModelCall { .. })).count() as u64;
        let exists =
            git(repo, &["rev-parse", "--verify", "--quiet", &format!("{}^{{commit}}", row.branch)], None).await.is_ok();
        Ok(if exists { row.branch } else { "HEAD".into() })
    }

    /// Runs `ids` with the instance's `test_cmd` in the sandbox: whether they passed, and the
    /// output's head and tail.
    async fn tests(&self, inst: &Instance, wt: &Path, ids: &[String], dir: &Path) -> Result<(bool, String), String> {
        let template = inst.test_cmd.as_deref().unwrap_or("python3 -m pytest -rA {tests}");
        let command = test_command(template, ids);
        let mut policy = SandboxPolicy::new(dir.join("tmp")).with_mode(self.sandbox.mode);
        if let Some(readonly) = &self.sandbox.readonly {
            policy.readonly = readonly.clone();
        }
        policy.cache_dir = Some(self.out.join("cache"));
        let outcome = Sandbox::new(wt, policy)
            .run(&command, self.test_timeout)
            .await
            .map_err(|e| format!("the hidden tests could not run: {e}"))?;
        Ok((outcome.success(), outcome.render(4 * 1024)))
    }
}

/// `template` with `{tests}` (the ids, space-separated and shell-quoted) and `{tests_regex}`
/// (`^(a|b)$`, for `go test -run`) filled in.
fn test_command(template: &str, ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| shell_quote(id)).collect();
    let regex = format!("^({})$", ids.iter().map(|id| regex_escape(id)).collect::<Vec<_>>().join("|"));
    template.replace("{tests_regex}", &regex).replace("{tests}", &quoted.join(" "))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:=,@+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if "\\.+*?()|[]{}^$'".contains(c) { vec!['\\', c] } else { vec![c] }).collect()
}

/// An instance id as a directory name.
fn safe_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

/// `git` in `dir` with a fixed identity (the evaluation's commits), `input` on stdin.
async fn git(dir: &Path, args: &[&str], input: Option<&str>) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(["-c", "user.name=autodev eval", "-c", "user.email=eval@autodev.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .stdin(if input.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).await.map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    }
    let out = child.wait_with_output().await.map_err(|e| format!("git {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies a unified diff (`git apply`) in `wt`.
async fn apply(wt: &Path, patch: &str, what: &str) -> Result<(), String> {
    if patch.trim().is_empty() {
        return Err(format!("the instance has no {what}"));
    }
    git(wt, &["apply", "--whitespace=nowarn", "-"], Some(patch)).await.map(|_| ()).map_err(|e| format!("{what}: {e}"))
}

#[derive(Serialize)]
struct Report {
    suite: String,
    model: Option<String>,
    provider: Option<String>,
    gold: bool,
    instances: usize,
    resolved: usize,
    resolved_share: f64,
    by_language: BTreeMap<String, (usize, usize)>,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    seconds: f64,
    results: Vec<Outcome1>,
}

impl Report {
    fn new(results: &[Outcome1], took: Duration, args: &EvalArgs, settings: Option<&RunSettings>) -> Self {
        let resolved = results.iter().filter(|r| r.resolved).count();
        let mut by_language: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in results {
            let e = by_language.entry(if r.language.is_empty() { "-".into() } else { r.language.clone() }).or_default();
            e.0 += usize::from(r.resolved);
            e.1 += 1;
        }
        Self {
            suite: args.suite.display().to_string(),
            model: settings.map(|s| s.model.clone()),
            provider: settings.map(|s| s.provider.clone()),
            gold: args.gold,
            instances: results.len(),
            resolved,
            resolved_share: resolved as f64 / results.len().max(1) as f64,
            by_language,
            input_tokens: results.iter().map(|r| r.input_tokens).sum(),
            output_tokens: results.iter().map(|r| r.output_tokens).sum(),
            cost_usd: results.iter().map(|r| r.cost_usd).sum(),
            seconds: took.as_secs_f64(),
            results: results.to_vec(),
        }
    }

    fn headline(&self) -> String {
        let who = if self.gold {
            "reference solutions".to_string()
        } else {
            format!("{} ({})", self.model.clone().unwrap_or_default(), self.provider.clone().unwrap_or_default())
        };
        format!(
            "{} of {} resolved ({:.0}%) with {who}; {} input + {} output tokens, ${:.4}, {:.0} s",
            self.resolved,
            self.instances,
            self.resolved_share * 100.0,
            self.input_tokens,
            self.output_tokens,
            self.cost_usd,
            self.seconds
        )
    }

    fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<28} {:<10} {:<9} {:>6} {:>9} {:>9} {:>8} {:>7}  {}\n",
            "instance", "language", "resolved", "calls", "in tok", "out tok", "cost $", "secs", "run"
        ));
        for r in &self.results {
            out.push_str(&format!(
                "{:<28} {:<10} {:<9} {:>6} {:>9} {:>9} {:>8.4} {:>7.1}  {}\n",
                r.instance_id,
                r.language,
                if r.resolved { "yes" } else { "no" },
                r.model_calls,
                r.input_tokens,
                r.output_tokens,
                r.cost_usd,
                r.seconds,
                if r.resolved { r.run.clone() } else { why(r) }.chars().take(80).collect::<String>()
            ));
        }
        for (lang, (ok, n)) in &self.by_language {
            out.push_str(&format!("{lang}: {ok}/{n}  "));
        }
        out.push('\n');
        out.push_str(&self.headline());
        out.push('\n');
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("# Evaluation: {}\n\n{}\n\n", self.suite, self.headline());
        out.push_str("| language | resolved |\n| --- | --- |\n");
        for (lang, (ok, n)) in &self.by_language {
            out.push_str(&format!("| {lang} | {ok}/{n} |\n"));
        }
        out.push_str(
            "\n| instance | resolved | FAIL_TO_PASS | PASS_TO_PASS | model calls | tokens in/out | cost | seconds | run |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        let mark = |b: Option<bool>| match b {
            Some(true) => "pass",
            Some(false) => "fail",
            None => "-",
        };
        for r in &self.results {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {}/{} | ${:.4} | {:.1} | {} |\n",
                r.instance_id,
                if r.resolved { "yes" } else { "no" },
                mark(r.fail_to_pass),
                mark(r.pass_to_pass),
                r.model_calls,
                r.input_tokens,
                r.output_tokens,
                r.cost_usd,
                r.seconds,
                if r.resolved { r.run.clone() } else { why(r) }.replace('|', "\\|").replace('\n', " ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_ids_fill_the_template() {
        let ids = vec!["tests.test_a.T.test_x".to_string(), "it's".to_string()];
        assert_eq!(
            test_command("python3 -m unittest {tests}", &ids),
            "python3 -m unittest tests.test_a.T.test_x 'it'\\''s'"
        );
        assert_eq!(
            test_command("go test -run '{tests_regex}' ./...", &["TestA".into(), "TestB".into()]),
            "go test -run '^(TestA|TestB)$' ./..."
        );
    }

    #[test]
    fn swe_bench_rows_parse_with_their_test_ids_as_text() {
        // A SWE-bench Lite row (fields trimmed): the test ids are JSON inside a string.
        let row = r#"{"repo": "astropy/astropy", "instance_id": "astropy__astropy-12907", "base_commit": "d16bfe05a744909de4b27f5875fe0d4ed41ce607", "patch": "diff --git a/x b/x\n", "test_patch": "diff --git a/y b/y\n", "problem_statement": "Modeling's `separability_matrix` does not compute separability correctly for nested CompoundModels", "hints_text": "", "created_at": "2022-03-03T15:14:54Z", "version": "4.3", "FAIL_TO_PASS": "[\"astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]\"]", "PASS_TO_PASS": "[\"astropy/modeling/tests/test_separable.py::test_coord_matrix\"]", "environment_setup_commit": "298ccb478e6bf092953bca67a3d29dc6c35f6752"}"#;
        let i: Instance = serde_json::from_str(row).unwrap();
        assert_eq!(
            i.fail_to_pass,
            vec!["astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]"]
        );
        assert_eq!(i.pass_to_pass.len(), 1);
        assert_eq!(i.repo, "astropy/astropy");
    }
}
