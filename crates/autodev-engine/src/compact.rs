//! Keeping a conversation inside the model's context window. Long tasks are the place where
//! today's agents die; here, before a request would overflow, older tool results are
//! replaced by one-line summaries, then older long assistant texts are cut, then whole old
//! turns are dropped — while the opening messages (system prompt, spec, plan, task) stay
//! whole, and the latest two turns too unless one of their tool results alone overflows (it
//! then keeps its head and tail).
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
    // The latest two turns (or the only one) are the tail, kept whole while anything else can go.
    let tail_start = match assistants.len() {
        0 => out.len(),
        n => assistants[n.saturating_sub(2)],
    };
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
    // Stage 4: the latest turns are still too big (one command printed a book): their
    // largest tool results keep their head and tail, the middle cut.
    if current > budget {
        let mut tail: Vec<usize> =
            (tail_start.min(out.len())..out.len()).filter(|&i| out[i].role == Role::Tool).collect();
        tail.sort_by_key(|&i| std::cmp::Reverse(out[i].content.len()));
        for i in tail {
            if current <= budget {
                break;
            }
            let old = out[i].estimated_tokens();
            let excess = current - budget;
            // Four characters a token, less room for the line saying what was cut; never below
            // a useful 2,000 characters.
            let keep = (old.saturating_sub(excess) as usize * 4).saturating_sub(400).max(2_000);
            if keep >= out[i].content.len() {
                continue;
            }
            let content = &out[i].content;
            let (cut, _) = autodev_workspace::sandbox::clip_stream(
                "",
                content,
                content.len() as u64,
                keep,
                "if you need them, run the tool again with a narrower request",
            );
            out[i].content = cut;
            current = current - old + out[i].estimated_tokens();
            elided += 1;
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

    #[test]
    fn one_oversized_latest_result_keeps_its_head_and_tail() {
        let mut msgs = vec![Message::system("system"), Message::user("the task")];
        msgs.extend(turn(0, 10));
        let id = "big".to_string();
        msgs.push(Message::assistant(
            "",
            vec![ToolCall {
                id: id.clone(),
                name: "run".into(),
                arguments: r#"{"command": "make"}"#.into(),
                signature: None,
            }],
        ));
        let output = format!("error: the first cause\n{}last line\n", "noise\n".repeat(100_000));
        msgs.push(Message::tool(id, output, true));
        let (out, c) = fit(&msgs, 2, 8_000).unwrap();
        assert!(c.tokens_after <= 8_000, "{c:?}");
        let last = &out.last().unwrap().content;
        assert!(last.starts_with("error: the first cause\n"), "{}", &last[..50]);
        assert!(last.trim_end().ends_with("last line"), "{}", &last[last.len() - 50..]);
        assert!(last.contains("left out here"), "the cut is said");
    }
}
