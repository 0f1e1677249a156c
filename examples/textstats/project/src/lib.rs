//! Text statistics.
//!
//! Each statistic lives in its own module.

pub mod words;

// Re-exports for callers.
pub use words::count_words;
