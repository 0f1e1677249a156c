mod runs;
mod service;
