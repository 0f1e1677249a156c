//! List prices and context windows per model. Prices are USD per million tokens, as the
//! vendors list them for standard (non-batch, non-cached) use; the config can override any
//! entry or add new ones. An unknown model costs 0 (with a warning from the caller) and gets
//! a conservative default window.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// USD per million input tokens.
    pub input: f64,
    /// USD per million output tokens.
    pub output: f64,
    /// Context window in tokens. May be left out of a price override (0 here): the built-in
    /// table's window for the model is kept, else [`DEFAULT_CONTEXT_WINDOW`].
    #[serde(default)]
    pub context_window: u64,
}

/// The window assumed for a model the table does not know and whose server does not say:
/// conservative, since a local server often runs with far less than the model was trained
/// for (Ollama 4k by default), and too large a guess is cut silently or refused.
pub const DEFAULT_CONTEXT_WINDOW: u64 = 32_768;

/// (model id or prefix, input $/M, output $/M, context window). Longest prefix wins, so
/// dated snapshots (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`) find their family.
const BUILTIN: &[(&str, f64, f64, u64)] = &[
    // OpenAI
    ("gpt-5", 1.25, 10.0, 400_000),
    ("gpt-5-mini", 0.25, 2.0, 400_000),
    ("gpt-5-nano", 0.05, 0.40, 400_000),
    ("gpt-5-codex", 1.25, 10.0, 400_000),
    ("gpt-5.1", 1.25, 10.0, 400_000),
    ("gpt-4.1", 2.0, 8.0, 1_047_576),
    ("gpt-4.1-mini", 0.40, 1.60, 1_047_576),
    ("gpt-4.1-nano", 0.10, 0.40, 1_047_576),
    ("gpt-4o", 2.50, 10.0, 128_000),
    ("gpt-4o-mini", 0.15, 0.60, 128_000),
    ("o1", 15.0, 60.0, 200_000),
    ("o3", 2.0, 8.0, 200_000),
    ("o3-mini", 1.10, 4.40, 200_000),
    ("o4-mini", 1.10, 4.40, 200_000),
    ("codex-mini-latest", 1.50, 6.0, 200_000),
    // Anthropic
    ("claude-opus-4-5", 5.0, 25.0, 200_000),
    ("claude-opus-4-1", 15.0, 75.0, 200_000),
    ("claude-opus-4", 15.0, 75.0, 200_000),
    ("claude-sonnet-4-5", 3.0, 15.0, 200_000),
    ("claude-sonnet-4", 3.0, 15.0, 200_000),
    ("claude-haiku-4-5", 1.0, 5.0, 200_000),
    ("claude-3-7-sonnet", 3.0, 15.0, 200_000),
    ("claude-3-5-sonnet", 3.0, 15.0, 200_000),
    ("claude-3-5-haiku", 0.80, 4.0, 200_000),
    ("claude-3-haiku", 0.25, 1.25, 200_000),
    // Google Gemini
    ("gemini-3-pro", 2.0, 12.0, 1_048_576),
    ("gemini-2.5-pro", 1.25, 10.0, 1_048_576),
    ("gemini-2.5-flash", 0.30, 2.50, 1_048_576),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 1_048_576),
    ("gemini-2.0-flash", 0.10, 0.40, 1_048_576),
    ("gemini-2.0-flash-lite", 0.075, 0.30, 1_048_576),
    // Groq
    ("llama-3.3-70b-versatile", 0.59, 0.79, 131_072),
    ("llama-3.1-8b-instant", 0.05, 0.08, 131_072),
    ("openai/gpt-oss-120b", 0.15, 0.75, 131_072),
    ("openai/gpt-oss-20b", 0.10, 0.50, 131_072),
    ("meta-llama/llama-4-maverick-17b-128e-instruct", 0.20, 0.60, 131_072),
    ("meta-llama/llama-4-scout-17b-16e-instruct", 0.11, 0.34, 131_072),
    ("moonshotai/kimi-k2-instruct", 1.0, 3.0, 131_072),
    ("qwen/qwen3-32b", 0.29, 0.59, 131_072),
];

#[derive(Clone, Debug, PartialEq)]
pub struct PriceTable {
    entries: BTreeMap<String, ModelInfo>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            entries: BUILTIN
                .iter()
                .map(|(m, i, o, w)| (m.to_string(), ModelInfo { input: *i, output: *o, context_window: *w }))
                .collect(),
        }
    }
}

impl PriceTable {
    /// The built-in table with `overrides` laid over it.
    pub fn with_overrides(overrides: &BTreeMap<String, ModelInfo>) -> Self {
        let mut table = Self::default();
        for (model, info) in overrides {
            let mut info = *info;
            if info.context_window == 0 {
                info.context_window = table.lookup(model).map_or(DEFAULT_CONTEXT_WINDOW, |i| i.context_window);
            }
            table.entries.insert(model.clone(), info);
        }
        table
    }

    /// The entry for `model`: exact, else the longest known prefix (also after stripping a
    /// `provider::` or `provider/` namespace the user may have written).
    pub fn lookup(&self, model: &str) -> Option<ModelInfo> {
        let candidates = [model, model.rsplit_once("::").map_or(model, |(_, m)| m)];
        for name in candidates {
            if let Some(info) = self.entries.get(name) {
                return Some(*info);
            }
            let best = self
                .entries
                .iter()
                .filter(|(k, _)| name.starts_with(k.as_str()) && name[k.len()..].starts_with(['-', '@', ':', '.']))
                .max_by_key(|(k, _)| k.len());
            if let Some((_, info)) = best {
                return Some(*info);
            }
        }
        None
    }

    pub fn context_window(&self, model: &str) -> u64 {
        self.known_context_window(model).unwrap_or(DEFAULT_CONTEXT_WINDOW)
    }

    /// The window of a model the table (or an override) knows.
    pub fn known_context_window(&self, model: &str) -> Option<u64> {
        self.lookup(model).map(|i| i.context_window)
    }

    /// The cost of a call, or `None` when the model is unknown.
    pub fn cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> Option<autodev_domain::MicroUsd> {
        let info = self.lookup(model)?;
        Some(
            autodev_domain::MicroUsd::for_tokens(input_tokens, info.input)
                + autodev_domain::MicroUsd::for_tokens(output_tokens, info.output),
        )
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodev_domain::MicroUsd;

    #[test]
    fn longest_prefix_finds_the_family_of_a_snapshot() {
        let t = PriceTable::default();
        assert_eq!(t.lookup("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(t.lookup("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(t.lookup("claude-sonnet-4-5-20250929").unwrap().output, 15.0);
        assert_eq!(t.lookup("anthropic::claude-haiku-4-5").unwrap().input, 1.0);
        assert_eq!(t.lookup("openai/gpt-oss-120b").unwrap().output, 0.75);
        assert!(t.lookup("gpt-4oops").is_none());
        assert!(t.lookup("my-local-model").is_none());
        assert_eq!(t.context_window("my-local-model"), DEFAULT_CONTEXT_WINDOW);
    }

    #[test]
    fn cost_uses_input_and_output_prices_and_overrides_win() {
        let t = PriceTable::default();
        // 10,000 in at $3/M + 2,000 out at $15/M = $0.03 + $0.03.
        assert_eq!(t.cost("claude-sonnet-4-5", 10_000, 2_000), Some(MicroUsd(60_000)));
        let mut o = BTreeMap::new();
        o.insert("my-local-model".to_string(), ModelInfo { input: 1.0, output: 1.0, context_window: 8_000 });
        let t = PriceTable::with_overrides(&o);
        assert_eq!(t.cost("my-local-model", 1_000_000, 0), Some(MicroUsd(1_000_000)));
        assert_eq!(t.context_window("my-local-model"), 8_000);
        // A price override without a window keeps the known one (issue 12: it was refused).
        let o: BTreeMap<String, ModelInfo> =
            serde_json::from_str(r#"{"gpt-4.1": {"input": 1.0, "output": 2.0}}"#).unwrap();
        let t = PriceTable::with_overrides(&o);
        assert_eq!(t.context_window("gpt-4.1"), PriceTable::default().context_window("gpt-4.1"));
        assert_eq!(t.lookup("gpt-4.1").unwrap().input, 1.0);
    }
}
