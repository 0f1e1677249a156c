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
            vec![call("read_file", json!({"path": "big.txt", "offset": turn * 400 + 1, "limit": 400}))],
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
    assert!(last.starts_with("  2001\t") && last.contains("line 2399 of a big"), "{}", &last[..100]);
}
