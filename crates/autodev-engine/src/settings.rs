//! The settings a run is created with (typed in `autodev_domain::settings`).
pub use autodev_domain::settings::{RunSettings, ToolCallMode};
