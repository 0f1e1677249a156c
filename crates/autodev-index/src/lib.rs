//! A code index of a repository, for search and cited answers.
//!
//! What it is for: cutting a repository into chunks that follow the code's structure
//! ([`chunk`]), indexing them lexically with a tokenizer that understands identifiers
//! ([`tokens`]) in tantivy, refreshing incrementally by git blob ids, and searching.
//! [`vectors`] adds embeddings (an OpenAI-compatible endpoint; an embedded store or Qdrant)
//! fused with the lexical ranking by reciprocal rank fusion.
//! What it is not for: calling models (answers are the engine's and the server's).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod chunk;
pub mod index;
pub mod tokens;
pub mod vectors;

pub use chunk::{Chunk, chunk_file};
pub use index::{CodeIndex, Hit, IndexError, Refresh, chunk_id};
pub use vectors::{Embedder, FileStore, QdrantStore, VectorError, VectorStore, VectorSync};
