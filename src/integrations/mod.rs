//! Where agents already live: adapters that put the guard in front of their tool calls. Each
//! one is behind its own cargo feature; the configuration they read from the policy document is
//! always compiled, so `tollgate policy check` validates it in every build.

pub mod mcp;
