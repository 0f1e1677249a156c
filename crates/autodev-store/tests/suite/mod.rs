mod runs;
mod service;
mod upgrade;
