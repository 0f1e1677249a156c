//! Keeping a conversation inside the model's context window. Long tasks are the place where
//! today's agents die; here, before a request would overflow, older tool results are
//! replaced by one-line summaries, then older long assistant texts are cut, then whole old
//! turns are dropped — while the opening messages (system prompt, spec, plan, task) and the
//! latest two turns stay whole.
use std::collections::HashMap;

use autodev_domain::{Message, Role};

/// What a compaction did, for the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    pub elided_messages: u32,
    pub tokens_before: u64,
    pub tokens_after: u64,
}

fn total(messages: &[Message]) -> u64 {
    messages.iter().map(Message::estimated_tokens).sum()
}

/// `None` when `messages` fit in `budget` tokens (estimated) as they are; otherwise a fitted
/// copy and what was done. `header_len` opening messages are never touched.
pub fn fit(messages: &[Message], header_len: usize, budget: u64) -> Option<(Vec<Message>, Compaction)> {
    let before = total(messages);
    if before <= budget {
        return None;
    }
    let mut out = messages.to_vec();
    let header_len = header_len.min(out.len());
    let assistants: Vec<usize> =
        out.iter().enumerate().filter(|(_, m)| m.role == Role::Assistant).map(|(i, _)| i).collect();
    let tail_start = if assistants.len() >= 2 { assistants[assistants.len() - 2] } else { out.len() };
    let tail_start = tail_start.max(header_len);
    // What each tool call was, to summarise its result in one line.
    let mut calls: HashMap<String, String> = HashMap::new();
    for m in &out {
        for c in &m.tool_calls {
            let target = autodev_workspace::ToolBox::describe(&c.name, &c.arguments);
            calls.insert(c.id.clone(), format!("{} {}", c.name, target).trim().to_string());
        }
    }
    let mut elided = 0u32;
    let mut current = before;
    // Stage 1: old tool results become one-line summaries, oldest first.
    for m in &mut out[header_len..tail_start] {
        if current <= budget {
            break;
        }
        if m.role == Role::Tool && m.content.len() > 200 {
            let what = m.tool_call_id.as_ref().and_then(|id| calls.get(id)).cloned().unwrap_or_else(|| "tool".into());
            let old = m.estimated_tokens();
            m.content = format!(
                "[result of {what} elided to fit the context window: {} lines{}; run the tool again if you need it]",
                m.content.lines().count(),
                if m.is_error { ", an error" } else { "" }
            );
            current = current - old + m.estimated_tokens();
            elided += 1;
        }
    }
    // Stage 2: old long assistant texts are cut.
    for m in &mut out[header_len..tail_start] {
        if current <= budget {
            break;
        }
        if m.role == Role::Assistant && m.content.len() > 600 {
            let old = m.estimated_tokens();
            let head: String = m.content.chars().take(300).collect();
            m.content = format!("{head} [... cut to fit the context window]");
            current = current - old + m.estimated_tokens();
            elided += 1;
        }
    }
    // Stage 3: whole old turns (an assistant message with its tool results) are dropped.
    if current > budget {
        // Room for the note that replaces the dropped turns.
        let reserve = note(9_999).estimated_tokens();
        let mut start = header_len;
        let mut dropped_turns = 0u32;
        let mut end = start;
        while end < tail_start && current + reserve > budget {
            // One turn: from an assistant message up to the next one.
            let mut next = end + 1;
            while next < tail_start && out[next].role != Role::Assistant {
                next += 1;
            }
            current -= out[end..next].iter().map(Message::estimated_tokens).sum::<u64>();
            elided += (next - end) as u32;
            dropped_turns += 1;
            end = next;
        }
        if dropped_turns > 0 {
            // Skip leading non-assistant messages that belonged to the header's follow-ups.
            while start < end && out[start].role != Role::Assistant {
                start += 1;
            }
            out.splice(start..end, [note(dropped_turns)]);
        }
    }
    let after = total(&out);
    Some((out, Compaction { elided_messages: elided, tokens_before: before, tokens_after: after }))
}

fn note(dropped_turns: u32) -> Message {
    Message::user(format!(
        "[{dropped_turns} earlier steps were removed to fit the context window; the files in the workspace reflect their work]"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodev_domain::ToolCall;

    fn turn(i: usize, size: usize) -> Vec<Message> {
        let id = format!("c{i}");
        vec![
            Message::assistant(
                "",
                vec![ToolCall {
                    id: id.clone(),
                    name: "read_file".into(),
                    arguments: format!(r#"{{"path": "f{i}.rs"}}"#),
                    signature: None,
                }],
            ),
            Message::tool(id, "x\n".repeat(size), false),
        ]
    }

    #[test]
    fn small_conversations_are_left_alone() {
        let msgs = vec![Message::system("s"), Message::user("u")];
        assert!(fit(&msgs, 2, 1_000).is_none());
    }

    #[test]
    fn old_tool_results_are_elided_and_header_and_latest_turns_kept() {
        let mut msgs = vec![Message::system("system"), Message::user("the task")];
        for i in 0..10 {
            msgs.extend(turn(i, 2_000));
        }
        let budget = 3_000;
        let (out, c) = fit(&msgs, 2, budget).unwrap();
        assert!(c.tokens_after <= budget, "{c:?}");
        assert!(c.tokens_before > budget);
        assert_eq!(out[..2], msgs[..2]);
        assert_eq!(out[out.len() - 4..], msgs[msgs.len() - 4..]);
        assert!(out[3].content.starts_with("[result of read_file f0.rs elided"), "{}", out[3].content);
        assert_eq!(out.len(), msgs.len());
    }

    #[test]
    fn whole_turns_are_dropped_when_eliding_is_not_enough() {
        let mut msgs = vec![Message::system("system"), Message::user("the task")];
        for i in 0..200 {
            msgs.extend(turn(i, 10));
        }
        let (out, c) = fit(&msgs, 2, 500).unwrap();
        assert!(c.tokens_after <= 500, "{c:?}");
        assert_eq!(out[..2], msgs[..2]);
        assert!(out[2].content.contains("earlier steps were removed"), "{}", out[2].content);
        assert_eq!(out[3].role, Role::Assistant);
        assert_eq!(out[out.len() - 4..], msgs[msgs.len() - 4..]);
    }
}
