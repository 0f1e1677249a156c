//! Engine tests: the real engine, store, git and sandbox, against a scripted
//! OpenAI-compatible model served over HTTP by wiremock.
mod suite;
