#!/usr/bin/env python3
"""Builds eval/suite.jsonl, Autodev's own evaluation suite, in SWE-bench's instance format.

    python3 eval/build.py            write eval/suite.jsonl
    python3 eval/build.py --check    exit 1 when eval/suite.jsonl is not what this file makes

Each task below is a small repository (`repo`: path -> content), a problem statement as an
issue would say it, the hidden tests (`hidden`: files laid over the repository after the
agent is done; the agent never sees them) and a reference solution (`gold`: files laid over
the repository). The instance carries SWE-bench's fields: `instance_id`, `problem_statement`,
`test_patch` and `patch` (both unified diffs made here with git, so `git apply` takes them),
`FAIL_TO_PASS` and `PASS_TO_PASS` (test ids), `base_commit` (empty: the repository is made
from `repo_files`), plus Autodev's: `repo_files`, `language`, `test_command` (the visible tests
the run may use) and `test_cmd` (how to run test ids: `{tests}` is the ids, space separated
and shell-quoted; `{tests_regex}` is `^(a|b)$`).

`autodev eval eval/suite.jsonl --gold` checks every instance: its FAIL_TO_PASS tests fail
on the base and pass with the reference solution; CI runs it, and the mechanics with a
scripted model (crates/autodev-cli/tests/suite/eval.rs).
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "suite.jsonl")

PY = {
    "language": "python",
    "test_command": "python3 -m unittest discover -s tests -t . -q",
    "test_cmd": "python3 -m unittest -q {tests}",
}
RS = {
    "language": "rust",
    "test_command": "cargo test --offline -q",
    "test_cmd": "cargo test --offline -q -- --exact {tests}",
}
TS = {
    "language": "typescript",
    "test_command": "tsc -p . && node --test test/",
    "test_cmd": "tsc -p . && node --test {tests}",
}
GO = {
    "language": "go",
    "test_command": "go test ./...",
    "test_cmd": "go test -count=1 -run '{tests_regex}' ./...",
}

CARGO = lambda name: f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'
TSCONFIG = json.dumps(
    {"compilerOptions": {"target": "ES2020", "module": "commonjs", "strict": True, "outDir": "dist", "rootDir": "src"}},
    indent=2,
) + "\n"
PKG = lambda name: json.dumps({"name": name, "version": "0.1.0", "private": True, "scripts": {"test": "tsc -p . && node --test test/"}}, indent=2) + "\n"
GOMOD = lambda name: f"module example.com/{name}\n\ngo 1.19\n"

TASKS = []


def task(instance_id, kind, problem, repo, hidden, gold, f2p, p2p):
    TASKS.append(dict(instance_id=instance_id, kind=kind, problem=problem, repo=repo, hidden=hidden, gold=gold, f2p=f2p, p2p=p2p))


# ---------------------------------------------------------------- Python
task(
    "py-wordcount-whitespace", PY,
    "`count_words` in `wordcount/core.py` counts wrong when words are separated by more than one space, "
    "or by tabs or newlines: `count_words('a  b')` gives 3 and `count_words('a\\tb\\nc')` gives 1. Words are "
    "runs of non-whitespace characters; an empty or blank text has 0 words.",
    {
        "wordcount/__init__.py": "from .core import count_words\n",
        "wordcount/core.py": 'def count_words(text):\n    """The number of words in text."""\n    if text == "":\n        return 0\n    return len(text.split(" "))\n',
        "tests/__init__.py": "",
        "tests/test_core.py": "import unittest\n\nfrom wordcount import count_words\n\n\nclass CountTest(unittest.TestCase):\n    def test_simple(self):\n        self.assertEqual(count_words(\"one two three\"), 3)\n\n    def test_empty(self):\n        self.assertEqual(count_words(\"\"), 0)\n",
    },
    {"tests/test_hidden.py": "import unittest\n\nfrom wordcount import count_words\n\n\nclass WhitespaceTest(unittest.TestCase):\n    def test_runs_of_spaces(self):\n        self.assertEqual(count_words(\"a  b   c\"), 3)\n\n    def test_tabs_and_newlines(self):\n        self.assertEqual(count_words(\"a\\tb\\nc\"), 3)\n\n    def test_blank(self):\n        self.assertEqual(count_words(\"  \\n \"), 0)\n"},
    {"wordcount/core.py": 'def count_words(text):\n    """The number of words in text."""\n    return len(text.split())\n'},
    ["tests.test_hidden.WhitespaceTest.test_runs_of_spaces", "tests.test_hidden.WhitespaceTest.test_tabs_and_newlines", "tests.test_hidden.WhitespaceTest.test_blank"],
    ["tests.test_core.CountTest.test_simple", "tests.test_core.CountTest.test_empty"],
)

task(
    "py-roman-parse", PY,
    "`roman.py` can write numbers as Roman numerals (`to_roman`) but not read them back. Add "
    "`from_roman(text)` that returns the integer for a valid numeral from 1 to 3999 (`from_roman('MCMXCIV') "
    "== 1994`), accepting lower case too, and raises `ValueError` for anything else (empty text, unknown "
    "letters, or a numeral that `to_roman` would not write, such as `IIII` or `IC`).",
    {
        "roman.py": "NUMERALS = [\n    (1000, \"M\"), (900, \"CM\"), (500, \"D\"), (400, \"CD\"), (100, \"C\"), (90, \"XC\"),\n    (50, \"L\"), (40, \"XL\"), (10, \"X\"), (9, \"IX\"), (5, \"V\"), (4, \"IV\"), (1, \"I\"),\n]\n\n\ndef to_roman(n):\n    if not 0 < n < 4000:\n        raise ValueError(f\"{n} is out of range (1-3999)\")\n    out = []\n    for value, letters in NUMERALS:\n        while n >= value:\n            out.append(letters)\n            n -= value\n    return \"\".join(out)\n",
        "tests/__init__.py": "",
        "tests/test_roman.py": "import unittest\n\nfrom roman import to_roman\n\n\nclass ToRomanTest(unittest.TestCase):\n    def test_values(self):\n        self.assertEqual(to_roman(1994), \"MCMXCIV\")\n        self.assertEqual(to_roman(4), \"IV\")\n\n    def test_range(self):\n        with self.assertRaises(ValueError):\n            to_roman(0)\n",
    },
    {"tests/test_hidden.py": "import unittest\n\nfrom roman import from_roman, to_roman\n\n\nclass FromRomanTest(unittest.TestCase):\n    def test_round_trip(self):\n        for n in range(1, 4000):\n            self.assertEqual(from_roman(to_roman(n)), n)\n\n    def test_lower_case(self):\n        self.assertEqual(from_roman(\"mcmxciv\"), 1994)\n\n    def test_invalid(self):\n        for bad in [\"\", \"IIII\", \"IC\", \"ABC\", \"MMMM\", \"VV\"]:\n            with self.assertRaises(ValueError, msg=bad):\n                from_roman(bad)\n"},
    {"roman.py": "NUMERALS = [\n    (1000, \"M\"), (900, \"CM\"), (500, \"D\"), (400, \"CD\"), (100, \"C\"), (90, \"XC\"),\n    (50, \"L\"), (40, \"XL\"), (10, \"X\"), (9, \"IX\"), (5, \"V\"), (4, \"IV\"), (1, \"I\"),\n]\n\n\ndef to_roman(n):\n    if not 0 < n < 4000:\n        raise ValueError(f\"{n} is out of range (1-3999)\")\n    out = []\n    for value, letters in NUMERALS:\n        while n >= value:\n            out.append(letters)\n            n -= value\n    return \"\".join(out)\n\n\ndef from_roman(text):\n    s = text.upper()\n    total, i = 0, 0\n    for value, letters in NUMERALS:\n        while s.startswith(letters, i):\n            total += value\n            i += len(letters)\n    if i != len(s) or not 0 < total < 4000 or to_roman(total) != s:\n        raise ValueError(f\"not a Roman numeral: {text!r}\")\n    return total\n"},
    ["tests.test_hidden.FromRomanTest.test_round_trip", "tests.test_hidden.FromRomanTest.test_lower_case", "tests.test_hidden.FromRomanTest.test_invalid"],
    ["tests.test_roman.ToRomanTest.test_values", "tests.test_roman.ToRomanTest.test_range"],
)

task(
    "py-csv-empty-cells", PY,
    "`column_total(rows, name)` in `sheet.py` crashes with `ValueError: could not convert string to float: ''` "
    "when a row has an empty cell in that column (spreadsheets export blanks that way). Empty cells (also "
    "cells of only spaces) should count as nothing; a cell that is not a number should still raise "
    "`ValueError`, naming the row number (1-based) in its message.",
    {
        "sheet.py": "def column_total(rows, name):\n    \"\"\"The sum of column `name` over rows (dicts, as csv.DictReader gives).\"\"\"\n    total = 0.0\n    for row in rows:\n        total += float(row[name])\n    return total\n",
        "tests/__init__.py": "",
        "tests/test_sheet.py": "import unittest\n\nfrom sheet import column_total\n\n\nclass TotalTest(unittest.TestCase):\n    def test_sum(self):\n        self.assertEqual(column_total([{\"a\": \"1\"}, {\"a\": \"2.5\"}], \"a\"), 3.5)\n",
    },
    {"tests/test_hidden.py": "import unittest\n\nfrom sheet import column_total\n\n\nclass EmptyCellTest(unittest.TestCase):\n    def test_empty_cells_are_skipped(self):\n        self.assertEqual(column_total([{\"a\": \"1\"}, {\"a\": \"\"}, {\"a\": \"  \"}, {\"a\": \"2\"}], \"a\"), 3.0)\n\n    def test_bad_cell_names_its_row(self):\n        with self.assertRaises(ValueError) as e:\n            column_total([{\"a\": \"1\"}, {\"a\": \"x\"}], \"a\")\n        self.assertIn(\"2\", str(e.exception))\n"},
    {"sheet.py": "def column_total(rows, name):\n    \"\"\"The sum of column `name` over rows (dicts, as csv.DictReader gives); empty cells count as nothing.\"\"\"\n    total = 0.0\n    for i, row in enumerate(rows, start=1):\n        cell = (row.get(name) or \"\").strip()\n        if not cell:\n            continue\n        try:\n            total += float(cell)\n        except ValueError:\n            raise ValueError(f\"row {i}: {cell!r} is not a number\") from None\n    return total\n"},
    ["tests.test_hidden.EmptyCellTest.test_empty_cells_are_skipped", "tests.test_hidden.EmptyCellTest.test_bad_cell_names_its_row"],
    ["tests.test_sheet.TotalTest.test_sum"],
)

task(
    "py-merge-intervals", PY,
    "`merge(intervals)` in `spans.py` should merge overlapping or touching closed intervals and return them "
    "sorted, but `merge([(5, 6), (1, 2), (2, 3)])` returns `[(5, 6), (1, 2), (2, 3)]`: it neither sorts its "
    "input nor merges intervals that only touch. Expected: `[(1, 3), (5, 6)]`. The input list must not be "
    "changed.",
    {
        "spans.py": "def merge(intervals):\n    out = []\n    for start, end in intervals:\n        if out and start < out[-1][1]:\n            out[-1] = (out[-1][0], max(out[-1][1], end))\n        else:\n            out.append((start, end))\n    return out\n",
        "tests/__init__.py": "",
        "tests/test_spans.py": "import unittest\n\nfrom spans import merge\n\n\nclass MergeTest(unittest.TestCase):\n    def test_overlap(self):\n        self.assertEqual(merge([(1, 4), (2, 6)]), [(1, 6)])\n\n    def test_empty(self):\n        self.assertEqual(merge([]), [])\n",
    },
    {"tests/test_hidden.py": "import unittest\n\nfrom spans import merge\n\n\nclass TouchingTest(unittest.TestCase):\n    def test_unsorted_and_touching(self):\n        self.assertEqual(merge([(5, 6), (1, 2), (2, 3)]), [(1, 3), (5, 6)])\n\n    def test_input_unchanged(self):\n        given = [(3, 4), (1, 2)]\n        merge(given)\n        self.assertEqual(given, [(3, 4), (1, 2)])\n"},
    {"spans.py": "def merge(intervals):\n    out = []\n    for start, end in sorted(intervals):\n        if out and start <= out[-1][1]:\n            out[-1] = (out[-1][0], max(out[-1][1], end))\n        else:\n            out.append((start, end))\n    return out\n"},
    ["tests.test_hidden.TouchingTest.test_unsorted_and_touching"],
    ["tests.test_spans.MergeTest.test_overlap", "tests.test_spans.MergeTest.test_empty", "tests.test_hidden.TouchingTest.test_input_unchanged"],
)

task(
    "py-lru-get-refreshes", PY,
    "`LRUCache` in `lru.py` evicts the wrong entry: reading a key with `get` does not make it recently "
    "used, so `c = LRUCache(2); c.put('a', 1); c.put('b', 2); c.get('a'); c.put('c', 3)` evicts `a` "
    "instead of `b`. `get` of a missing key should return `None` (it raises `KeyError` today).",
    {
        "lru.py": "from collections import OrderedDict\n\n\nclass LRUCache:\n    def __init__(self, capacity):\n        self.capacity = capacity\n        self.items = OrderedDict()\n\n    def get(self, key):\n        return self.items[key]\n\n    def put(self, key, value):\n        self.items[key] = value\n        self.items.move_to_end(key)\n        if len(self.items) > self.capacity:\n            self.items.popitem(last=False)\n",
        "tests/__init__.py": "",
        "tests/test_lru.py": "import unittest\n\nfrom lru import LRUCache\n\n\nclass PutTest(unittest.TestCase):\n    def test_evicts_oldest_put(self):\n        c = LRUCache(1)\n        c.put(\"a\", 1)\n        c.put(\"b\", 2)\n        self.assertEqual(list(c.items), [\"b\"])\n",
    },
    {"tests/test_hidden.py": "import unittest\n\nfrom lru import LRUCache\n\n\nclass GetTest(unittest.TestCase):\n    def test_get_refreshes(self):\n        c = LRUCache(2)\n        c.put(\"a\", 1)\n        c.put(\"b\", 2)\n        self.assertEqual(c.get(\"a\"), 1)\n        c.put(\"c\", 3)\n        self.assertEqual(c.get(\"b\"), None)\n        self.assertEqual(c.get(\"a\"), 1)\n\n    def test_missing_is_none(self):\n        self.assertIsNone(LRUCache(1).get(\"x\"))\n"},
    {"lru.py": "from collections import OrderedDict\n\n\nclass LRUCache:\n    def __init__(self, capacity):\n        self.capacity = capacity\n        self.items = OrderedDict()\n\n    def get(self, key):\n        if key not in self.items:\n            return None\n        self.items.move_to_end(key)\n        return self.items[key]\n\n    def put(self, key, value):\n        self.items[key] = value\n        self.items.move_to_end(key)\n        if len(self.items) > self.capacity:\n            self.items.popitem(last=False)\n"},
    ["tests.test_hidden.GetTest.test_get_refreshes", "tests.test_hidden.GetTest.test_missing_is_none"],
    ["tests.test_lru.PutTest.test_evicts_oldest_put"],
)

# ---------------------------------------------------------------- Rust
RS_LIB_TEST = "#[cfg(test)]\nmod tests {\n    use super::*;\n\n%s}\n"

task(
    "rs-stack-peek", RS,
    "The `Stack<T>` in `src/lib.rs` has `push`, `pop` and `len` but no way to look at the top without "
    "removing it. Add `peek(&self) -> Option<&T>` (the top element, `None` when empty) and "
    "`is_empty(&self) -> bool`.",
    {
        "Cargo.toml": CARGO("stack"),
        "src/lib.rs": "/// A last-in, first-out stack.\n#[derive(Debug, Default)]\npub struct Stack<T> {\n    items: Vec<T>,\n}\n\nimpl<T> Stack<T> {\n    pub fn new() -> Self {\n        Self { items: Vec::new() }\n    }\n\n    pub fn push(&mut self, item: T) {\n        self.items.push(item);\n    }\n\n    pub fn pop(&mut self) -> Option<T> {\n        self.items.pop()\n    }\n\n    pub fn len(&self) -> usize {\n        self.items.len()\n    }\n}\n",
        "tests/basic.rs": "use stack::Stack;\n\n#[test]\nfn push_then_pop() {\n    let mut s = Stack::new();\n    s.push(1);\n    s.push(2);\n    assert_eq!(s.pop(), Some(2));\n    assert_eq!(s.len(), 1);\n}\n",
    },
    {"tests/hidden.rs": "use stack::Stack;\n\n#[test]\nfn peek_shows_the_top() {\n    let mut s = Stack::new();\n    assert_eq!(s.peek(), None);\n    s.push(\"a\");\n    s.push(\"b\");\n    assert_eq!(s.peek(), Some(&\"b\"));\n    assert_eq!(s.len(), 2);\n}\n\n#[test]\nfn empty_until_pushed() {\n    let mut s = Stack::new();\n    assert!(s.is_empty());\n    s.push(1);\n    assert!(!s.is_empty());\n}\n"},
    {"src/lib.rs": "/// A last-in, first-out stack.\n#[derive(Debug, Default)]\npub struct Stack<T> {\n    items: Vec<T>,\n}\n\nimpl<T> Stack<T> {\n    pub fn new() -> Self {\n        Self { items: Vec::new() }\n    }\n\n    pub fn push(&mut self, item: T) {\n        self.items.push(item);\n    }\n\n    pub fn pop(&mut self) -> Option<T> {\n        self.items.pop()\n    }\n\n    pub fn peek(&self) -> Option<&T> {\n        self.items.last()\n    }\n\n    pub fn len(&self) -> usize {\n        self.items.len()\n    }\n\n    pub fn is_empty(&self) -> bool {\n        self.items.is_empty()\n    }\n}\n"},
    ["peek_shows_the_top", "empty_until_pushed"],
    ["push_then_pop"],
)

task(
    "rs-duration-units", RS,
    "`parse_duration` in `src/lib.rs` reads `\"90s\"` and `\"5m\"` but fails on durations that combine units, "
    "as people write them: `\"1h30m\"` should be 5400 seconds and `\"2m5s\"` 125. Units are `h`, `m` and `s`, "
    "each at most once, in that order; anything else (`\"\"`, `\"5\"`, `\"1x\"`, `\"5s1m\"`) is an error.",
    {
        "Cargo.toml": CARGO("durations"),
        "src/lib.rs": "/// Seconds in a duration such as `90s` or `5m`.\npub fn parse_duration(text: &str) -> Result<u64, String> {\n    let (number, unit) = text.split_at(text.len().saturating_sub(1));\n    let n: u64 = number.parse().map_err(|_| format!(\"bad duration: {text:?}\"))?;\n    match unit {\n        \"h\" => Ok(n * 3600),\n        \"m\" => Ok(n * 60),\n        \"s\" => Ok(n),\n        _ => Err(format!(\"bad duration: {text:?}\")),\n    }\n}\n",
        "tests/basic.rs": "use durations::parse_duration;\n\n#[test]\nfn single_units() {\n    assert_eq!(parse_duration(\"90s\"), Ok(90));\n    assert_eq!(parse_duration(\"5m\"), Ok(300));\n    assert!(parse_duration(\"5\").is_err());\n}\n",
    },
    {"tests/hidden.rs": "use durations::parse_duration;\n\n#[test]\nfn combined_units() {\n    assert_eq!(parse_duration(\"1h30m\"), Ok(5400));\n    assert_eq!(parse_duration(\"2m5s\"), Ok(125));\n    assert_eq!(parse_duration(\"1h0m1s\"), Ok(3601));\n}\n\n#[test]\nfn bad_durations() {\n    for bad in [\"\", \"5\", \"1x\", \"5s1m\", \"1h1h\", \"h\"] {\n        assert!(parse_duration(bad).is_err(), \"{bad}\");\n    }\n}\n"},
    {"src/lib.rs": "/// Seconds in a duration such as `90s`, `5m` or `1h30m` (units h, m, s, each at most once, in\n/// that order).\npub fn parse_duration(text: &str) -> Result<u64, String> {\n    let bad = || format!(\"bad duration: {text:?}\");\n    let mut total = 0u64;\n    let mut number = String::new();\n    let mut next_unit = 0;\n    for c in text.chars() {\n        if c.is_ascii_digit() {\n            number.push(c);\n            continue;\n        }\n        let (rank, secs) = match c {\n            'h' => (1, 3600),\n            'm' => (2, 60),\n            's' => (3, 1),\n            _ => return Err(bad()),\n        };\n        if rank <= next_unit || number.is_empty() {\n            return Err(bad());\n        }\n        let n: u64 = number.parse().map_err(|_| bad())?;\n        total += n * secs;\n        number.clear();\n        next_unit = rank;\n    }\n    if !number.is_empty() || next_unit == 0 {\n        return Err(bad());\n    }\n    Ok(total)\n}\n"},
    ["combined_units", "bad_durations"],
    ["single_units"],
)

task(
    "rs-wrap-long-words", RS,
    "`wrap(text, width)` in `src/lib.rs` splits text into lines of at most `width` characters at spaces. A "
    "word longer than `width` makes it emit an empty first line (`wrap(\"abcdefgh ij\", 4)` gives "
    "`[\"\", \"abcdefgh\", \"ij\"]`). A long word should go on a line of its own, without empty lines: "
    "`[\"abcdefgh\", \"ij\"]`. Widths count characters, not bytes (`wrap(\"ééé ééé\", 3)` is two lines).",
    {
        "Cargo.toml": CARGO("wrap"),
        "src/lib.rs": "/// Lines of at most `width` characters, broken at spaces.\npub fn wrap(text: &str, width: usize) -> Vec<String> {\n    let mut lines = vec![String::new()];\n    for word in text.split_whitespace() {\n        let line = lines.last_mut().unwrap();\n        if line.is_empty() && word.len() <= width {\n            line.push_str(word);\n        } else if line.len() + 1 + word.len() <= width {\n            line.push(' ');\n            line.push_str(word);\n        } else {\n            lines.push(word.to_string());\n        }\n    }\n    lines\n}\n",
        "tests/basic.rs": "use wrap::wrap;\n\n#[test]\nfn wraps_at_spaces() {\n    assert_eq!(wrap(\"aa bb cc\", 5), vec![\"aa bb\", \"cc\"]);\n}\n",
    },
    {"tests/hidden.rs": "use wrap::wrap;\n\n#[test]\nfn long_words_get_their_own_line() {\n    assert_eq!(wrap(\"abcdefgh ij\", 4), vec![\"abcdefgh\", \"ij\"]);\n    assert_eq!(wrap(\"ij abcdefgh kl\", 4), vec![\"ij\", \"abcdefgh\", \"kl\"]);\n}\n\n#[test]\nfn widths_count_characters() {\n    assert_eq!(wrap(\"ééé ééé\", 3), vec![\"ééé\", \"ééé\"]);\n    assert_eq!(wrap(\"é é\", 3), vec![\"é é\"]);\n}\n"},
    {"src/lib.rs": "/// Lines of at most `width` characters, broken at spaces; a longer word has a line of its own.\npub fn wrap(text: &str, width: usize) -> Vec<String> {\n    let mut lines: Vec<String> = Vec::new();\n    let mut line = String::new();\n    let mut chars = 0;\n    for word in text.split_whitespace() {\n        let n = word.chars().count();\n        if chars > 0 && chars + 1 + n <= width {\n            line.push(' ');\n            line.push_str(word);\n            chars += 1 + n;\n            continue;\n        }\n        if chars > 0 {\n            lines.push(std::mem::take(&mut line));\n        }\n        line.push_str(word);\n        chars = n;\n    }\n    if chars > 0 || lines.is_empty() {\n        lines.push(line);\n    }\n    lines\n}\n"},
    ["long_words_get_their_own_line", "widths_count_characters"],
    ["wraps_at_spaces"],
)

task(
    "rs-median-even", RS,
    "`median` in `src/lib.rs` is wrong for an even number of values: `median(&[1.0, 2.0, 3.0, 4.0])` gives "
    "3.0 where the median is 2.5 (the mean of the two middle values), and it panics on an empty slice. It "
    "should return `Option<f64>`: `None` for no values. It must not reorder the caller's slice.",
    {
        "Cargo.toml": CARGO("median"),
        "src/lib.rs": "/// The median of `values`.\npub fn median(values: &[f64]) -> f64 {\n    let mut sorted = values.to_vec();\n    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());\n    sorted[sorted.len() / 2]\n}\n",
        "tests/basic.rs": "#[test]\nfn odd_count() {\n    assert_eq!(median::median(&[3.0, 1.0, 2.0]), 2.0);\n}\n",
    },
    {"tests/hidden.rs": "#[test]\nfn even_count_is_the_mean_of_the_middle() {\n    assert_eq!(median::median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));\n}\n\n#[test]\nfn empty_is_none() {\n    assert_eq!(median::median(&[]), None);\n}\n"},
    {"tests/basic.rs": "#[test]\nfn odd_count() {\n    assert_eq!(median::median(&[3.0, 1.0, 2.0]), Some(2.0));\n}\n",
     "src/lib.rs": "/// The median of `values`: the middle value, or the mean of the two middle ones; `None` when\n/// there are none.\npub fn median(values: &[f64]) -> Option<f64> {\n    if values.is_empty() {\n        return None;\n    }\n    let mut sorted = values.to_vec();\n    sorted.sort_by(|a, b| a.total_cmp(b));\n    let mid = sorted.len() / 2;\n    Some(if sorted.len() % 2 == 0 { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] })\n}\n"},
    ["even_count_is_the_mean_of_the_middle", "empty_is_none"],
    ["odd_count"],
)

task(
    "rs-snake-case", RS,
    "Add `to_snake_case(name: &str) -> String` to `src/lib.rs`, next to `to_camel_case`: it turns "
    "`\"HttpServer\"` into `\"http_server\"`, keeps acronyms together (`\"HTTPServerError\"` → "
    "`\"http_server_error\"`, `\"parseJSON\"` → `\"parse_json\"`), and leaves digits with the word before "
    "them (`\"utf8Decoder\"` → `\"utf8_decoder\"`).",
    {
        "Cargo.toml": CARGO("case"),
        "src/lib.rs": "/// `snake_case` to `camelCase`.\npub fn to_camel_case(name: &str) -> String {\n    let mut out = String::new();\n    let mut upper = false;\n    for c in name.chars() {\n        if c == '_' {\n            upper = !out.is_empty();\n        } else if upper {\n            out.extend(c.to_uppercase());\n            upper = false;\n        } else {\n            out.push(c);\n        }\n    }\n    out\n}\n",
        "tests/basic.rs": "#[test]\nfn camel() {\n    assert_eq!(case::to_camel_case(\"http_server\"), \"httpServer\");\n}\n",
    },
    {"tests/hidden.rs": "use case::to_snake_case;\n\n#[test]\nfn snake_words() {\n    assert_eq!(to_snake_case(\"HttpServer\"), \"http_server\");\n    assert_eq!(to_snake_case(\"already_snake\"), \"already_snake\");\n}\n\n#[test]\nfn snake_acronyms_and_digits() {\n    assert_eq!(to_snake_case(\"HTTPServerError\"), \"http_server_error\");\n    assert_eq!(to_snake_case(\"parseJSON\"), \"parse_json\");\n    assert_eq!(to_snake_case(\"utf8Decoder\"), \"utf8_decoder\");\n}\n"},
    {"src/lib.rs": "/// `snake_case` to `camelCase`.\npub fn to_camel_case(name: &str) -> String {\n    let mut out = String::new();\n    let mut upper = false;\n    for c in name.chars() {\n        if c == '_' {\n            upper = !out.is_empty();\n        } else if upper {\n            out.extend(c.to_uppercase());\n            upper = false;\n        } else {\n            out.push(c);\n        }\n    }\n    out\n}\n\n/// `CamelCase` or `camelCase` to `snake_case`; acronyms stay one word.\npub fn to_snake_case(name: &str) -> String {\n    let chars: Vec<char> = name.chars().collect();\n    let mut out = String::new();\n    for (i, &c) in chars.iter().enumerate() {\n        if c.is_uppercase() && i > 0 {\n            let prev = chars[i - 1];\n            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());\n            if prev != '_' && (prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower)) {\n                out.push('_');\n            }\n        }\n        out.extend(c.to_lowercase());\n    }\n    out\n}\n"},
    ["snake_words", "snake_acronyms_and_digits"],
    ["camel"],
)

# ---------------------------------------------------------------- TypeScript
TS_BASE = lambda name: {"package.json": PKG(name), "tsconfig.json": TSCONFIG}

task(
    "ts-clamp-below", TS,
    "`clamp(value, min, max)` in `src/clamp.ts` returns `max` for a value below `min` (`clamp(-5, 0, 10)` "
    "gives 10). It should return `min` then, and throw a `RangeError` when `min > max`.",
    {
        **TS_BASE("clamp"),
        "src/clamp.ts": "export function clamp(value: number, min: number, max: number): number {\n  if (value > max || value < min) {\n    return max;\n  }\n  return value;\n}\n",
        "test/clamp.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { clamp } = require('../dist/clamp.js');\n\ntest('inside and above', () => {\n  assert.strictEqual(clamp(5, 0, 10), 5);\n  assert.strictEqual(clamp(50, 0, 10), 10);\n});\n",
    },
    {"test/hidden.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { clamp } = require('../dist/clamp.js');\n\ntest('below is min', () => {\n  assert.strictEqual(clamp(-5, 0, 10), 0);\n});\n\ntest('min above max throws', () => {\n  assert.throws(() => clamp(1, 10, 0), RangeError);\n});\n"},
    {"src/clamp.ts": "export function clamp(value: number, min: number, max: number): number {\n  if (min > max) {\n    throw new RangeError(`min ${min} is above max ${max}`);\n  }\n  return Math.min(Math.max(value, min), max);\n}\n"},
    ["test/hidden.test.js"],
    ["test/clamp.test.js"],
)

task(
    "ts-chunk", TS,
    "Add `chunk<T>(items: T[], size: number): T[][]` to `src/arrays.ts`: it splits `items` into arrays of "
    "`size` elements, the last one shorter when they do not divide evenly (`chunk([1, 2, 3, 4, 5], 2)` is "
    "`[[1, 2], [3, 4], [5]]`), returns `[]` for no items, and throws a `RangeError` when `size` is not a "
    "positive integer.",
    {
        **TS_BASE("arrays"),
        "src/arrays.ts": "export function last<T>(items: T[]): T | undefined {\n  return items[items.length - 1];\n}\n",
        "test/arrays.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { last } = require('../dist/arrays.js');\n\ntest('last', () => {\n  assert.strictEqual(last([1, 2]), 2);\n  assert.strictEqual(last([]), undefined);\n});\n",
    },
    {"test/hidden.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { chunk } = require('../dist/arrays.js');\n\ntest('chunks', () => {\n  assert.deepStrictEqual(chunk([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]]);\n  assert.deepStrictEqual(chunk([], 3), []);\n  assert.deepStrictEqual(chunk(['a'], 3), [['a']]);\n});\n\ntest('bad sizes', () => {\n  for (const size of [0, -1, 1.5, NaN]) {\n    assert.throws(() => chunk([1], size), RangeError, String(size));\n  }\n});\n"},
    {"src/arrays.ts": "export function last<T>(items: T[]): T | undefined {\n  return items[items.length - 1];\n}\n\nexport function chunk<T>(items: T[], size: number): T[][] {\n  if (!Number.isInteger(size) || size <= 0) {\n    throw new RangeError(`size must be a positive integer, not ${size}`);\n  }\n  const out: T[][] = [];\n  for (let i = 0; i < items.length; i += size) {\n    out.push(items.slice(i, i + size));\n  }\n  return out;\n}\n"},
    ["test/hidden.test.js"],
    ["test/arrays.test.js"],
)

task(
    "ts-title-case", TS,
    "`titleCase` in `src/title.ts` keeps small words (a, an, the, of, and, …) lower case, which is right "
    "inside a title but not at its start or end: `titleCase('the lord of the rings')` should be "
    "`'The Lord of the Rings'` (it gives `'the Lord of the Rings'`), and `titleCase('what it is for')` should "
    "end in `'For'`.",
    {
        **TS_BASE("title"),
        "src/title.ts": "const SMALL = new Set(['a', 'an', 'the', 'of', 'and', 'or', 'for', 'in', 'on', 'to']);\n\nexport function titleCase(text: string): string {\n  return text\n    .split(' ')\n    .map((word) => (SMALL.has(word) ? word : word.charAt(0).toUpperCase() + word.slice(1)))\n    .join(' ');\n}\n",
        "test/title.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { titleCase } = require('../dist/title.js');\n\ntest('inner small words stay small', () => {\n  assert.strictEqual(titleCase('war and peace'), 'War and Peace');\n});\n",
    },
    {"test/hidden.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { titleCase } = require('../dist/title.js');\n\ntest('first and last words are capitalised', () => {\n  assert.strictEqual(titleCase('the lord of the rings'), 'The Lord of the Rings');\n  assert.strictEqual(titleCase('what it is for'), 'What It Is For');\n  assert.strictEqual(titleCase('a'), 'A');\n});\n"},
    {"src/title.ts": "const SMALL = new Set(['a', 'an', 'the', 'of', 'and', 'or', 'for', 'in', 'on', 'to']);\n\nexport function titleCase(text: string): string {\n  const words = text.split(' ');\n  return words\n    .map((word, i) =>\n      SMALL.has(word) && i > 0 && i < words.length - 1 ? word : word.charAt(0).toUpperCase() + word.slice(1),\n    )\n    .join(' ');\n}\n"},
    ["test/hidden.test.js"],
    ["test/title.test.js"],
)

task(
    "ts-deep-equal-arrays", TS,
    "`deepEqual(a, b)` in `src/equal.ts` says an array equals an object with the same indexes: "
    "`deepEqual([1], { 0: 1 })` is `true`. An array is only equal to an array. Also `deepEqual({ a: 1 }, { a: 1, "
    "b: undefined })` should be `false` (different keys).",
    {
        **TS_BASE("equal"),
        "src/equal.ts": "export function deepEqual(a: unknown, b: unknown): boolean {\n  if (a === b) {\n    return true;\n  }\n  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {\n    return false;\n  }\n  const x = a as Record<string, unknown>;\n  const y = b as Record<string, unknown>;\n  for (const key of Object.keys(x)) {\n    if (!deepEqual(x[key], y[key])) {\n      return false;\n    }\n  }\n  return true;\n}\n",
        "test/equal.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { deepEqual } = require('../dist/equal.js');\n\ntest('nested', () => {\n  assert.strictEqual(deepEqual({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] }), true);\n  assert.strictEqual(deepEqual({ a: 1 }, { a: 2 }), false);\n});\n",
    },
    {"test/hidden.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { deepEqual } = require('../dist/equal.js');\n\ntest('arrays are not objects', () => {\n  assert.strictEqual(deepEqual([1], { 0: 1 }), false);\n  assert.strictEqual(deepEqual({ 0: 1 }, [1]), false);\n  assert.strictEqual(deepEqual([1, 2], [1, 2]), true);\n  assert.strictEqual(deepEqual([1, 2], [1]), false);\n});\n\ntest('keys must match', () => {\n  assert.strictEqual(deepEqual({ a: 1 }, { a: 1, b: undefined }), false);\n});\n"},
    {"src/equal.ts": "export function deepEqual(a: unknown, b: unknown): boolean {\n  if (a === b) {\n    return true;\n  }\n  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {\n    return false;\n  }\n  if (Array.isArray(a) !== Array.isArray(b)) {\n    return false;\n  }\n  const x = a as Record<string, unknown>;\n  const y = b as Record<string, unknown>;\n  const keys = Object.keys(x);\n  if (keys.length !== Object.keys(y).length) {\n    return false;\n  }\n  return keys.every((key) => Object.prototype.hasOwnProperty.call(y, key) && deepEqual(x[key], y[key]));\n}\n"},
    ["test/hidden.test.js"],
    ["test/equal.test.js"],
)

task(
    "ts-query-repeated-keys", TS,
    "`parseQuery` in `src/query.ts` keeps only the last value of a repeated key (`parseQuery('a=1&a=2')` "
    "gives `{ a: '2' }`) and leaves `+` as is. A repeated key should give an array of its values in order "
    "(`{ a: ['1', '2'] }`; a key seen once stays a string), and `+` means a space, as in HTML forms "
    "(`'q=hello+world'` → `{ q: 'hello world' }`). A leading `?` is ignored.",
    {
        **TS_BASE("query"),
        "src/query.ts": "export type Query = Record<string, string | string[]>;\n\nexport function parseQuery(text: string): Query {\n  const out: Query = {};\n  for (const pair of text.split('&')) {\n    if (!pair) {\n      continue;\n    }\n    const [key, value = ''] = pair.split('=');\n    out[decodeURIComponent(key)] = decodeURIComponent(value);\n  }\n  return out;\n}\n",
        "test/query.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { parseQuery } = require('../dist/query.js');\n\ntest('pairs', () => {\n  assert.deepStrictEqual(parseQuery('a=1&b=%20x'), { a: '1', b: ' x' });\n  assert.deepStrictEqual(parseQuery(''), {});\n});\n",
    },
    {"test/hidden.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\nconst { parseQuery } = require('../dist/query.js');\n\ntest('repeated keys', () => {\n  assert.deepStrictEqual(parseQuery('a=1&a=2&b=3&a=4'), { a: ['1', '2', '4'], b: '3' });\n});\n\ntest('plus and question mark', () => {\n  assert.deepStrictEqual(parseQuery('?q=hello+world&x=a%2Bb'), { q: 'hello world', x: 'a+b' });\n});\n"},
    {"src/query.ts": "export type Query = Record<string, string | string[]>;\n\nfunction decode(part: string): string {\n  return decodeURIComponent(part.replace(/\\+/g, ' '));\n}\n\nexport function parseQuery(text: string): Query {\n  const out: Query = {};\n  for (const pair of text.replace(/^\\?/, '').split('&')) {\n    if (!pair) {\n      continue;\n    }\n    const at = pair.indexOf('=');\n    const key = decode(at < 0 ? pair : pair.slice(0, at));\n    const value = at < 0 ? '' : decode(pair.slice(at + 1));\n    const seen = out[key];\n    if (seen === undefined) {\n      out[key] = value;\n    } else if (Array.isArray(seen)) {\n      seen.push(value);\n    } else {\n      out[key] = [seen, value];\n    }\n  }\n  return out;\n}\n"},
    ["test/hidden.test.js"],
    ["test/query.test.js"],
)

# ---------------------------------------------------------------- Go
task(
    "go-reverse-runes", GO,
    "`Reverse` in `text.go` reverses bytes, so a string with multi-byte characters comes back as invalid "
    "UTF-8 (`Reverse(\"héllo\")` is not `\"olléh\"`). It should reverse characters (runes).",
    {
        "go.mod": GOMOD("text"),
        "text.go": "package text\n\n// Reverse returns s backwards.\nfunc Reverse(s string) string {\n\tb := []byte(s)\n\tfor i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {\n\t\tb[i], b[j] = b[j], b[i]\n\t}\n\treturn string(b)\n}\n",
        "text_test.go": "package text\n\nimport \"testing\"\n\nfunc TestReverseASCII(t *testing.T) {\n\tif got := Reverse(\"abc\"); got != \"cba\" {\n\t\tt.Fatalf(\"got %q\", got)\n\t}\n}\n",
    },
    {"hidden_test.go": "package text\n\nimport \"testing\"\n\nfunc TestReverseRunes(t *testing.T) {\n\tfor in, want := range map[string]string{\"héllo\": \"olléh\", \"日本語\": \"語本日\", \"\": \"\"} {\n\t\tif got := Reverse(in); got != want {\n\t\t\tt.Errorf(\"Reverse(%q) = %q, want %q\", in, got, want)\n\t\t}\n\t}\n}\n"},
    {"text.go": "package text\n\n// Reverse returns s backwards, character by character.\nfunc Reverse(s string) string {\n\tr := []rune(s)\n\tfor i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {\n\t\tr[i], r[j] = r[j], r[i]\n\t}\n\treturn string(r)\n}\n"},
    ["TestReverseRunes"],
    ["TestReverseASCII"],
)

task(
    "go-stats-mode", GO,
    "Package `stats` has `Mean` but no `Mode`. Add `func Mode(values []int) (int, error)`: the most frequent "
    "value, the smallest of them on a tie (`Mode([]int{3, 1, 3, 1, 2})` is 1), and an error for an empty "
    "slice.",
    {
        "go.mod": GOMOD("stats"),
        "stats.go": "package stats\n\nimport \"errors\"\n\n// Mean is the arithmetic mean of values.\nfunc Mean(values []float64) (float64, error) {\n\tif len(values) == 0 {\n\t\treturn 0, errors.New(\"no values\")\n\t}\n\tsum := 0.0\n\tfor _, v := range values {\n\t\tsum += v\n\t}\n\treturn sum / float64(len(values)), nil\n}\n",
        "stats_test.go": "package stats\n\nimport \"testing\"\n\nfunc TestMean(t *testing.T) {\n\tif m, err := Mean([]float64{1, 2, 3}); err != nil || m != 2 {\n\t\tt.Fatalf(\"got %v %v\", m, err)\n\t}\n}\n",
    },
    {"hidden_test.go": "package stats\n\nimport \"testing\"\n\nfunc TestMode(t *testing.T) {\n\tif m, err := Mode([]int{3, 1, 3, 1, 2}); err != nil || m != 1 {\n\t\tt.Fatalf(\"tie: got %v %v\", m, err)\n\t}\n\tif m, err := Mode([]int{5, 4, 5}); err != nil || m != 5 {\n\t\tt.Fatalf(\"got %v %v\", m, err)\n\t}\n}\n\nfunc TestModeEmpty(t *testing.T) {\n\tif _, err := Mode(nil); err == nil {\n\t\tt.Fatal(\"want an error\")\n\t}\n}\n"},
    {"stats.go": "package stats\n\nimport \"errors\"\n\n// Mean is the arithmetic mean of values.\nfunc Mean(values []float64) (float64, error) {\n\tif len(values) == 0 {\n\t\treturn 0, errors.New(\"no values\")\n\t}\n\tsum := 0.0\n\tfor _, v := range values {\n\t\tsum += v\n\t}\n\treturn sum / float64(len(values)), nil\n}\n\n// Mode is the most frequent value, the smallest on a tie.\nfunc Mode(values []int) (int, error) {\n\tif len(values) == 0 {\n\t\treturn 0, errors.New(\"no values\")\n\t}\n\tcounts := map[int]int{}\n\tbest, bestCount := 0, 0\n\tfor _, v := range values {\n\t\tcounts[v]++\n\t}\n\tfor v, c := range counts {\n\t\tif c > bestCount || (c == bestCount && v < best) {\n\t\t\tbest, bestCount = v, c\n\t\t}\n\t}\n\treturn best, nil\n}\n"},
    ["TestMode", "TestModeEmpty"],
    ["TestMean"],
)

task(
    "go-format-bytes", GO,
    "`FormatBytes` in `size.go` rounds down to whole units: `FormatBytes(1536)` gives `\"1 KiB\"`. Sizes of a "
    "KiB or more should show one decimal (`\"1.5 KiB\"`, `\"1.0 MiB\"` for 1048576) and go up to GiB and TiB; "
    "below 1024 it stays whole bytes (`\"512 B\"`).",
    {
        "go.mod": GOMOD("size"),
        "size.go": "package size\n\nimport \"fmt\"\n\n// FormatBytes writes n bytes for people.\nfunc FormatBytes(n int64) string {\n\tswitch {\n\tcase n >= 1<<20:\n\t\treturn fmt.Sprintf(\"%d MiB\", n>>20)\n\tcase n >= 1<<10:\n\t\treturn fmt.Sprintf(\"%d KiB\", n>>10)\n\t}\n\treturn fmt.Sprintf(\"%d B\", n)\n}\n",
        "size_test.go": "package size\n\nimport \"testing\"\n\nfunc TestSmall(t *testing.T) {\n\tif got := FormatBytes(512); got != \"512 B\" {\n\t\tt.Fatalf(\"got %q\", got)\n\t}\n}\n",
    },
    {"hidden_test.go": "package size\n\nimport \"testing\"\n\nfunc TestDecimals(t *testing.T) {\n\tcases := map[int64]string{1536: \"1.5 KiB\", 1 << 20: \"1.0 MiB\", 3 << 30: \"3.0 GiB\", 5 << 40: \"5.0 TiB\", 1023: \"1023 B\"}\n\tfor n, want := range cases {\n\t\tif got := FormatBytes(n); got != want {\n\t\t\tt.Errorf(\"FormatBytes(%d) = %q, want %q\", n, got, want)\n\t\t}\n\t}\n}\n"},
    {"size.go": "package size\n\nimport \"fmt\"\n\n// FormatBytes writes n bytes for people: whole bytes below a KiB, else one decimal.\nfunc FormatBytes(n int64) string {\n\tif n < 1024 {\n\t\treturn fmt.Sprintf(\"%d B\", n)\n\t}\n\tv := float64(n)\n\tunits := []string{\"KiB\", \"MiB\", \"GiB\", \"TiB\"}\n\tunit := \"\"\n\tfor _, u := range units {\n\t\tv /= 1024\n\t\tunit = u\n\t\tif v < 1024 {\n\t\t\tbreak\n\t\t}\n\t}\n\treturn fmt.Sprintf(\"%.1f %s\", v, unit)\n}\n"},
    ["TestDecimals"],
    ["TestSmall"],
)

task(
    "go-semver-compare", GO,
    "`Compare(a, b string) int` in `semver.go` compares versions as strings, so `Compare(\"1.10.0\", "
    "\"1.9.0\")` says 1.10.0 is older. It should compare major, minor and patch as numbers (-1, 0 or 1), "
    "accept a leading `v` (`v1.2.3`), and treat a missing part as 0 (`\"1.2\"` equals `\"1.2.0\"`).",
    {
        "go.mod": GOMOD("semver"),
        "semver.go": "package semver\n\nimport \"strings\"\n\n// Compare returns -1, 0 or 1 as version a is older than, the same as or newer than b.\nfunc Compare(a, b string) int {\n\treturn strings.Compare(a, b)\n}\n",
        "semver_test.go": "package semver\n\nimport \"testing\"\n\nfunc TestSame(t *testing.T) {\n\tif Compare(\"1.2.3\", \"1.2.3\") != 0 || Compare(\"1.2.3\", \"1.2.4\") != -1 {\n\t\tt.Fatal(\"basic order\")\n\t}\n}\n",
    },
    {"hidden_test.go": "package semver\n\nimport \"testing\"\n\nfunc TestNumericParts(t *testing.T) {\n\tcases := []struct {\n\t\ta, b string\n\t\twant int\n\t}{{\"1.10.0\", \"1.9.0\", 1}, {\"v1.2.3\", \"1.2.3\", 0}, {\"1.2\", \"1.2.0\", 0}, {\"2\", \"10\", -1}, {\"0.0.10\", \"0.0.9\", 1}}\n\tfor _, c := range cases {\n\t\tif got := Compare(c.a, c.b); got != c.want {\n\t\t\tt.Errorf(\"Compare(%q, %q) = %d, want %d\", c.a, c.b, got, c.want)\n\t\t}\n\t}\n}\n"},
    {"semver.go": "package semver\n\nimport (\n\t\"strconv\"\n\t\"strings\"\n)\n\nfunc parts(v string) [3]int {\n\tvar out [3]int\n\tfor i, p := range strings.SplitN(strings.TrimPrefix(v, \"v\"), \".\", 3) {\n\t\tout[i], _ = strconv.Atoi(p)\n\t}\n\treturn out\n}\n\n// Compare returns -1, 0 or 1 as version a is older than, the same as or newer than b.\nfunc Compare(a, b string) int {\n\tx, y := parts(a), parts(b)\n\tfor i := range x {\n\t\tif x[i] < y[i] {\n\t\t\treturn -1\n\t\t}\n\t\tif x[i] > y[i] {\n\t\t\treturn 1\n\t\t}\n\t}\n\treturn 0\n}\n"},
    ["TestNumericParts"],
    ["TestSame"],
)

task(
    "go-backoff-cap", GO,
    "`Backoff(attempt int) time.Duration` in `retry.go` doubles a 100 ms base delay per attempt but has no "
    "ceiling: at attempt 40 it overflows to a negative duration. The delay should never exceed `MaxDelay` "
    "(30 s), also for very large attempts, and attempt 0 (or below) is the base delay.",
    {
        "go.mod": GOMOD("retry"),
        "retry.go": "package retry\n\nimport \"time\"\n\n// Base is the first delay; MaxDelay the longest.\nconst (\n\tBase     = 100 * time.Millisecond\n\tMaxDelay = 30 * time.Second\n)\n\n// Backoff is the delay before retry number attempt (0-based).\nfunc Backoff(attempt int) time.Duration {\n\treturn Base * time.Duration(1<<attempt)\n}\n",
        "retry_test.go": "package retry\n\nimport \"testing\"\n\nfunc TestDoubles(t *testing.T) {\n\tif Backoff(0) != Base || Backoff(2) != 4*Base {\n\t\tt.Fatal(\"doubling\")\n\t}\n}\n",
    },
    {"hidden_test.go": "package retry\n\nimport \"testing\"\n\nfunc TestCapped(t *testing.T) {\n\tfor _, a := range []int{9, 10, 40, 63, 64, 1000} {\n\t\tif d := Backoff(a); d != MaxDelay {\n\t\t\tt.Errorf(\"Backoff(%d) = %v, want %v\", a, d, MaxDelay)\n\t\t}\n\t}\n\tif Backoff(-3) != Base {\n\t\tt.Error(\"negative attempt\")\n\t}\n}\n"},
    {"retry.go": "package retry\n\nimport \"time\"\n\n// Base is the first delay; MaxDelay the longest.\nconst (\n\tBase     = 100 * time.Millisecond\n\tMaxDelay = 30 * time.Second\n)\n\n// Backoff is the delay before retry number attempt (0-based), doubling from Base up to MaxDelay.\nfunc Backoff(attempt int) time.Duration {\n\td := Base\n\tfor i := 0; i < attempt; i++ {\n\t\td *= 2\n\t\tif d >= MaxDelay {\n\t\t\treturn MaxDelay\n\t\t}\n\t}\n\treturn d\n}\n"},
    ["TestCapped"],
    ["TestDoubles"],
)


def git(cwd, *args, input=None):
    env = dict(os.environ, GIT_AUTHOR_NAME="eval", GIT_AUTHOR_EMAIL="eval@autodev", GIT_COMMITTER_NAME="eval",
               GIT_COMMITTER_EMAIL="eval@autodev", GIT_AUTHOR_DATE="2026-01-01T00:00:00Z",
               GIT_COMMITTER_DATE="2026-01-01T00:00:00Z")
    return subprocess.run(["git", "-C", cwd, *args], check=True, capture_output=True, text=True, input=input, env=env).stdout


def diff(repo, overlay):
    """The unified diff (git's) that lays `overlay` over `repo`."""
    with tempfile.TemporaryDirectory() as d:
        for path, text in repo.items():
            os.makedirs(os.path.dirname(os.path.join(d, path)) or d, exist_ok=True)
            with open(os.path.join(d, path), "w") as f:
                f.write(text)
        git(d, "init", "-q")
        git(d, "add", "-A")
        git(d, "commit", "-qm", "base")
        for path, text in overlay.items():
            os.makedirs(os.path.dirname(os.path.join(d, path)) or d, exist_ok=True)
            with open(os.path.join(d, path), "w") as f:
                f.write(text)
        git(d, "add", "-A")
        return git(d, "diff", "--cached", "--no-color", "--no-ext-diff", "--full-index")


def build():
    lines = []
    for t in TASKS:
        kind = t["kind"]
        lines.append(json.dumps({
            "instance_id": t["instance_id"],
            "repo": "",
            "base_commit": "",
            "problem_statement": t["problem"],
            "patch": diff(t["repo"], t["gold"]),
            "test_patch": diff(t["repo"], t["hidden"]),
            "FAIL_TO_PASS": json.dumps(t["f2p"]),
            "PASS_TO_PASS": json.dumps(t["p2p"]),
            "language": kind["language"],
            "test_command": kind["test_command"],
            "test_cmd": kind["test_cmd"],
            "repo_files": t["repo"],
        }, sort_keys=True))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = build()
    if "--check" in sys.argv:
        with open(OUT) as f:
            same = f.read() == text
        print("eval/suite.jsonl is " + ("up to date" if same else "stale: run python3 eval/build.py"))
        sys.exit(0 if same else 1)
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {OUT}: {len(TASKS)} instances")
