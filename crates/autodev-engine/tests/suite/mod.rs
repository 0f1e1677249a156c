mod bad_input;
mod context;
mod escape;
mod governance;
pub mod harness;
mod lifecycle;
mod once;
mod outcomes;
mod tools;
