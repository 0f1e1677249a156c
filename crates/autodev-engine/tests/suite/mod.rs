mod bad_input;
mod context;
pub mod harness;
mod lifecycle;
mod tools;
