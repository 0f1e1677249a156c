pub mod harness;
mod bad_input;
mod context;
mod lifecycle;
mod tools;
