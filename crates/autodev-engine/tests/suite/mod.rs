mod bad_input;
mod context;
mod escape;
pub mod harness;
mod lifecycle;
mod outcomes;
mod tools;
