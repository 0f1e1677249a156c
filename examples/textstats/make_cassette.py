#!/usr/bin/env python3
"""Writes cassette.jsonl: the model side of the textstats demo, keyed by conversation and
turn as Autodev's cassettes are. Everything else in the demo (tools, git, cargo test) is
real. Regenerate with: python3 examples/textstats/make_cassette.py"""
import json
import os

MODEL = "gpt-4.1-2025-04-14"
lines = []
usage_in = [0]


def turn(conv, n, calls, text="", tokens=(1800, 160)):
    usage_in[0] += 1
    tool_calls = [
        {"id": f"call_{conv.replace(':', '_')}_{n}_{i}", "name": name, "arguments": json.dumps(args)}
        for i, (name, args) in enumerate(calls)
    ]
    lines.append({
        "conversation": conv,
        "turn": n,
        "provider": "openai",
        "model": "gpt-4.1",
        "response": {
            "message": {"role": "assistant", "content": text, "tool_calls": tool_calls},
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
            "stop_reason": "tool_use",
            "model": MODEL,
        },
    })


TEST = "cargo test --offline --quiet"

# The planner looks around, then plans: two independent counters, then the summary.
turn("planner", 0, [("list_files", {})], "Let me look at the project first.", (1450, 40))
turn("planner", 1, [("read_file", {"path": "src/lib.rs"}), ("read_file", {"path": "src/words.rs"})], "", (1700, 60))
turn("planner", 2, [("submit_plan", {
    "summary": "Add count_lines and count_chars as modules of their own (independent, in parallel), then a Summary struct with a Display that combines the three counters.",
    "tasks": [
        {"id": "lines", "title": "Add count_lines", "description": "New module src/lines.rs with count_lines(text) -> usize and unit tests; declare it in src/lib.rs next to words.", "depends_on": [], "acceptance": ["\"a\\nb\" and \"a\\nb\\n\" are 2 lines; \"\" is 0", "unit tests pass"]},
        {"id": "chars", "title": "Add count_chars", "description": "New module src/chars.rs with count_chars(text) -> usize counting Unicode scalar values; declare it at the end of src/lib.rs.", "depends_on": [], "acceptance": ["\"héllo\" is 5 chars", "unit tests pass"]},
        {"id": "summary", "title": "Add summary() and Summary", "description": "New module src/summary.rs: struct Summary { words, lines, chars }, fn summary(text), Display as \"{words} words, {lines} lines, {chars} chars\"; re-export from lib.rs.", "depends_on": ["lines", "chars"], "acceptance": ["Display matches the spec", "unit tests pass"]},
    ],
})], "", (2300, 420))

LINES_RS = '''/// Counts lines: a trailing newline does not start a new line, and "" has none.
pub fn count_lines(text: &str) -> usize {
    text.lines().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines() {
        assert_eq!(count_lines("a\\nb"), 2);
        assert_eq!(count_lines("a\\nb\\n"), 2);
        assert_eq!(count_lines(""), 0);
    }
}
'''
turn("task:lines", 0, [("read_file", {"path": "src/lib.rs"})], "", (2100, 30))
turn("task:lines", 1, [
    ("write_file", {"path": "src/lines.rs", "content": LINES_RS}),
    ("edit_file", {"path": "src/lib.rs", "old_text": "pub mod words;\n", "new_text": "pub mod lines;\npub mod words;\n"}),
], "", (2400, 260))
turn("task:lines", 2, [("run", {"command": TEST})], "", (2800, 30))
turn("task:lines", 3, [("finish", {"summary": "Added src/lines.rs with count_lines (str::lines semantics) and tests; declared the module in lib.rs."})], "", (3000, 50))

CHARS_RS = '''/// Counts Unicode scalar values (not bytes).
pub fn count_chars(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_characters_not_bytes() {
        assert_eq!(count_chars("héllo"), 5);
        assert_eq!(count_chars(""), 0);
    }
}
'''
turn("task:chars", 0, [
    ("write_file", {"path": "src/chars.rs", "content": CHARS_RS}),
    ("edit_file", {"path": "src/lib.rs", "old_text": "pub use words::count_words;\n", "new_text": "pub use words::count_words;\n\npub mod chars;\n"}),
], "", (2050, 230))
turn("task:chars", 1, [("run", {"command": TEST})], "", (2500, 30))
turn("task:chars", 2, [("finish", {"summary": "Added src/chars.rs with count_chars (chars().count()) and tests; declared the module at the end of lib.rs."})], "", (2700, 45))

# The summary task swaps two fields in Display and finishes without running the tests.
SUMMARY_RS = '''use std::fmt;

use crate::chars::count_chars;
use crate::lines::count_lines;
use crate::words::count_words;

/// Words, lines and characters of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub words: usize,
    pub lines: usize,
    pub chars: usize,
}

/// Computes all three counts.
pub fn summary(text: &str) -> Summary {
    Summary { words: count_words(text), lines: count_lines(text), chars: count_chars(text) }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} words, {} lines, {} chars", self.words, self.chars, self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_and_displays() {
        let s = summary("héllo world\\nbye\\n");
        assert_eq!(s, Summary { words: 3, lines: 2, chars: 16 });
        assert_eq!(s.to_string(), "3 words, 2 lines, 16 chars");
    }
}
'''
turn("task:summary", 0, [("read_file", {"path": "src/lib.rs"})], "", (2600, 30))
turn("task:summary", 1, [
    ("write_file", {"path": "src/summary.rs", "content": SUMMARY_RS}),
    ("edit_file", {"path": "src/lib.rs", "old_text": "pub mod chars;\n", "new_text": "pub mod chars;\npub mod summary;\n\npub use summary::{summary, Summary};\n"}),
], "", (3100, 420))
turn("task:summary", 2, [("finish", {"summary": "Added Summary, summary() and its Display; re-exported from lib.rs."})], "", (3600, 40))

# The tests fail; the repair agent reads the failure, fixes the swapped fields, checks.
turn("repair:1", 0, [("read_file", {"path": "src/summary.rs", "offset": 20, "limit": 6})], "The Display prints chars and lines in the wrong order.", (3900, 50))
turn("repair:1", 1, [("edit_file", {
    "path": "src/summary.rs",
    "old_text": "self.words, self.chars, self.lines)",
    "new_text": "self.words, self.lines, self.chars)",
})], "", (4200, 80))
turn("repair:1", 2, [("run", {"command": TEST})], "", (4500, 30))
turn("repair:1", 3, [("finish", {"summary": "Fixed the field order in Summary's Display; all tests pass."})], "", (4800, 40))

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "cassette.jsonl"), "w") as f:
    for line in lines:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
print(f"wrote {len(lines)} exchanges")
