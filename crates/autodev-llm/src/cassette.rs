//! Cassettes: every model exchange of a run, one JSON object per line, keyed by
//! conversation and turn (not by order or by a hash of the prompt), so a run with parallel
//! tasks replays exactly even though the tasks interleave differently, and test output that
//! carries timings does not break the match.
//!
//! Line format: `{"conversation": "task:t1", "turn": 0, "provider": "openai", "model": "…",
//! "request": {"messages": […]}, "response": {ModelResponse}}`. `request` is informational.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use autodev_domain::{ModelClient, ModelError, ModelRequest, ModelResponse};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Interaction {
    conversation: String,
    turn: u32,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<serde_json::Value>,
    response: ModelResponse,
}

/// Wraps a client and appends every successful exchange to a cassette file.
pub struct Recorder {
    inner: Arc<dyn ModelClient>,
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Recorder {
    pub fn new(inner: Arc<dyn ModelClient>, path: &Path) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { inner, path: path.to_path_buf(), file: Mutex::new(file) })
    }
}

#[async_trait::async_trait]
impl ModelClient for Recorder {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn structured_output(&self) -> bool {
        self.inner.structured_output()
    }

    async fn context_window(&self, model: &str) -> Option<u64> {
        self.inner.context_window(model).await
    }

    fn candidates(&self, model: &str) -> Vec<(String, String)> {
        self.inner.candidates(model)
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let resp = self.inner.complete(req).await?;
        self.write(req, resp)
    }

    async fn complete_with(
        &self,
        req: &ModelRequest,
        on_text: &autodev_domain::TextSink<'_>,
    ) -> Result<ModelResponse, ModelError> {
        let resp = self.inner.complete_with(req, on_text).await?;
        self.write(req, resp)
    }
}

impl Recorder {
    /// Appends the interaction to the cassette.
    fn write(&self, req: &ModelRequest, resp: ModelResponse) -> Result<ModelResponse, ModelError> {
        let line = Interaction {
            conversation: req.meta.conversation.clone(),
            turn: req.meta.turn,
            provider: self.inner.provider().to_string(),
            model: req.model.clone(),
            request: Some(serde_json::json!({"messages": req.messages})),
            response: resp.clone(),
        };
        let mut text = serde_json::to_string(&line).map_err(|e| ModelError::Record(e.to_string()))?;
        text.push('\n');
        let mut file = self.file.lock().map_err(|_| ModelError::Record("cassette lock poisoned".into()))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|e| ModelError::Record(format!("{}: {e}", self.path.display())))?;
        Ok(resp)
    }
}

/// Answers from a cassette with no network.
pub struct Replayer {
    answers: HashMap<(String, u32), ModelResponse>,
    path: PathBuf,
}

/// A cassette that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    #[error("cannot read cassette {path}: {source}; check the --replay path")]
    Read { path: String, source: std::io::Error },
    #[error("cassette {path} line {line} is not a recorded exchange: {message}")]
    Parse { path: String, line: usize, message: String },
    #[error("cassette {path} holds no exchanges")]
    Empty { path: String },
}

impl Replayer {
    pub fn load(path: &Path) -> Result<Self, CassetteError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| CassetteError::Read { path: display.clone(), source })?;
        let mut answers = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let it: Interaction = serde_json::from_str(line).map_err(|e| CassetteError::Parse {
                path: display.clone(),
                line: i + 1,
                message: e.to_string(),
            })?;
            answers.insert((it.conversation, it.turn), it.response);
        }
        if answers.is_empty() {
            return Err(CassetteError::Empty { path: display });
        }
        Ok(Self { answers, path: path.to_path_buf() })
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

#[async_trait::async_trait]
impl ModelClient for Replayer {
    fn provider(&self) -> &str {
        "replay"
    }

    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, ModelError> {
        self.answers.get(&(req.meta.conversation.clone(), req.meta.turn)).cloned().ok_or_else(|| {
            ModelError::ReplayMiss {
                conversation: req.meta.conversation.clone(),
                turn: req.meta.turn,
                hint: format!(
                    "{} was recorded for a different spec or plan; record it again with --record",
                    self.path.display()
                ),
            }
        })
    }
}
