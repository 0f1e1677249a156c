use autodev_domain::EventKind;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::*;

#[tokio::test]
async fn a_long_task_is_kept_inside_a_small_context_window() {
    let app = TestApp::new().await;
    // A 6,000-line file: each read is ~15k tokens' worth of text, far over the window.
    let big: String = (0..6_000).map(|i| format!("line {i} of a big generated file\n")).collect();
    std::fs::write(app.repo.join("big.txt"), &big).unwrap();
    git(&app.repo, &["add", "big.txt"]);
    git(&app.repo, &["commit", "--quiet", "-m", "big file"]);
    app.script
        .plan(json!([{"id": "t1", "title": "Read a lot", "description": "", "depends_on": [], "acceptance": []}]));
    for turn in 0..6 {
        app.script.on(
            "task:t1",
            turn,
            vec![call("read_file", json!({"path": "big.txt", "offset": turn * 250 + 1, "limit": 250}))],
        );
    }
    app.script.on("task:t1", 6, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let mut s = settings();
    s.context_window = Some(12_000);
    s.max_output_tokens = 1_000;
    let (id, outcome) = app.run(s, "# Read").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);

    let compactions: Vec<(u64, u64, u64)> = app
        .events(&id)
        .await
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ContextCompacted { tokens_before, tokens_after, window, .. } => {
                Some((*tokens_before, *tokens_after, *window))
            }
            _ => None,
        })
        .collect();
    assert!(!compactions.is_empty());
    for (before, after, window) in &compactions {
        assert_eq!(*window, 12_000);
        assert!(before > after && *after < 12_000, "{before} -> {after}");
    }
    let requests = app.script.requests_for("task:t1");
    assert_eq!(requests.len(), 7);
    for r in &requests {
        // The task itself stays whole in every request...
        assert!(r["messages"][1]["content"].as_str().unwrap().contains("# Your task: t1"));
        // ...and every request fits the window (about four characters a token).
        let chars = r["messages"].to_string().len();
        assert!(chars / 4 < 12_000, "request of {chars} chars");
    }
    // The latest tool result is always whole.
    let last = requests.last().unwrap()["messages"].as_array().unwrap().last().unwrap().clone();
    let last = last["content"].as_str().unwrap();
    assert!(last.starts_with("  1251\t") && last.contains("line 1499 of a big"), "{}", &last[..100]);
}

/// Issue 27: with an 8k window (a small local model), the prompts and tool definitions take
/// their compact form, the planner's view of a repository with many files and one read of a
/// big file are sized to the window, and the opening requests leave most of it for the work.
#[tokio::test]
async fn an_8k_window_gets_compact_prompts_and_outputs_sized_to_it() {
    let mut sizes = Vec::new();
    for window in [None, Some(8_192)] {
        let app = TestApp::new().await;
        let big: String = (0..1_500).map(|i| format!("line {i} of a big generated file\n")).collect();
        std::fs::write(app.repo.join("big.txt"), &big).unwrap();
        for i in 0..300 {
            let dir = app.repo.join(format!("pkg/module_{:03}", i / 10));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("file_number_{i:03}.py")), "x = 1\n").unwrap();
        }
        git(&app.repo, &["add", "-A"]);
        git(&app.repo, &["commit", "--quiet", "-m", "many files"]);
        app.script
            .plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]))
            .on("task:t1", 0, vec![call("read_file", json!({"path": "big.txt"}))])
            .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("ok")]);
        let mut s = settings();
        s.context_window = window;
        let (id, outcome) = app.run(s, "# Greet").await;
        let said = app.script.requests_for("task:t1").iter().map(|r| tool_results(r).join(" | ")).collect::<Vec<_>>();
        assert_eq!(outcome, succeeded(), "{window:?} {}: {said:?}", app.reason(&id).await);
        let planner = app.script.requests_for("planner")[0].clone();
        let task = app.script.requests_for("task:t1");
        let read = tool_results(&task[1]).last().cloned().unwrap();
        let tools = task[0]["tools"].to_string();
        let (planner_chars, task_chars) = (planner.to_string().len(), task[0].to_string().len());
        sizes.push((planner_chars, task_chars, read.len()));
        if window.is_none() {
            assert!(read.contains("line 1499 of a big"), "a default read is whole");
            assert!(tools.contains("First line to read (1-based)."), "{tools}");
            continue;
        }
        // The compact opening: the system prompts are short, the tools carry no parameter
        // descriptions, and each opening request is well under a quarter of the window.
        let system = planner["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with("You plan code changes for Autodev.") && system.len() < 600, "{system}");
        let coder = task[0]["messages"][0]["content"].as_str().unwrap();
        assert!(coder.starts_with("You are a software engineer") && coder.len() < 500, "{coder}");
        assert!(!tools.contains("First line to read") && tools.contains("\"offset\""), "{tools}");
        assert!(planner_chars / 4 < 8_192 / 2 && task_chars / 4 < 8_192 / 4, "{planner_chars} {task_chars}");
        let view = planner["messages"][1]["content"].as_str().unwrap();
        assert!(view.contains("more files (list_files shows them)"), "{view}");
        // One read fills about a quarter of the window, and says how to read on.
        assert!(read.len() <= 8_192 + 200 && read.contains("read on with offset"), "{} chars", read.len());
    }
    let (full, compact) = (sizes[0], sizes[1]);
    eprintln!("request characters (planner opening, coder opening, one read): default {full:?}, 8k window {compact:?}");
    assert!(compact.0 < full.0 && compact.1 < full.1 && compact.2 < full.2, "{full:?} -> {compact:?}");
}

/// A server whose real window is smaller than the one assumed: a request whose messages hold
/// more than `max_chars` characters is refused as OpenAI refuses it (HTTP 400,
/// `context_length_exceeded`); others are answered by the script.
struct SmallWindow {
    script: Script,
    max_chars: usize,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl wiremock::Respond for SmallWindow {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let chars: usize = body["messages"]
            .as_array()
            .map(|m| m.iter().map(|m| m["content"].as_str().map_or(0, str::len)).sum())
            .unwrap_or(0);
        if chars > self.max_chars {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return wiremock::ResponseTemplate::new(400).set_body_json(json!({"error": {
                "message": format!("This model's maximum context length is 4096 tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.", chars / 4),
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"
            }}));
        }
        self.script.respond(request)
    }
}

/// A provider's context-length error is recovered: the conversation is compacted (the
/// oversized latest result keeps its head and tail) and the call made once more, instead of
/// failing the task.
#[tokio::test]
async fn a_context_length_error_from_the_provider_compacts_and_retries() {
    let app = TestApp::new().await;
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path_regex("/chat/completions$"))
        .respond_with(SmallWindow { script: app.script.clone(), max_chars: 17_000, refused: refused.clone() })
        .with_priority(1)
        .mount(&app.server)
        .await;
    app.script
        .plan(json!([{"id": "t1", "title": "Greet", "description": "", "depends_on": [], "acceptance": []}]))
        .on("task:t1", 0, vec![call("run", json!({"command": "echo 'the first line'; seq 1 8000"}))])
        .on("task:t1", 1, vec![write("greeting.txt", "hello\n"), finish("ok")]);
    let (id, outcome) = app.run(settings(), "# Greet").await;
    assert_eq!(outcome, succeeded(), "{}", app.reason(&id).await);
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1, "one refusal, then a call that fits");
    let warned = app.events(&id).await.iter().any(
        |e| matches!(&e.kind, EventKind::Warning { message } if message.contains("longer than the model's context")),
    );
    assert!(warned, "the retry is said");
    let requests = app.script.requests_for("task:t1");
    let last = requests[1]["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
    assert!(last.contains("the first line") && last.contains("8000") && last.contains("left out"), "{last}");
}
