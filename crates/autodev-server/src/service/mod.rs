//! The service layer: what the API, the web UI and MCP can do, once. Each operation takes the
//! caller and a typed request, checks the caller's role and what its key sees, validates,
//! acts, audits, and returns typed rows or views. The front ends are adapters over it: a REST
//! handler parses JSON into the request and serialises the result; a UI page reads a form and
//! renders HTML; an MCP tool reads its arguments and returns text. None calls another front
//! end.
pub mod ask;
pub mod projects;
pub mod runs;
pub mod usage;
