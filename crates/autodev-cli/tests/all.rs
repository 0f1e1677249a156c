//! The `autodev` binary as a user runs it: real processes, a scripted model over HTTP, real
//! git repositories.
mod suite;
