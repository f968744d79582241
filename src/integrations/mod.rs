//! Where agents already live: adapters that put the guard in front of their tool calls, each
//! behind its own cargo feature so the default build pulls in none of their dependencies. The
//! configuration they read from the policy document is always compiled, so `tollgate policy
//! check` validates it in every build.
//!
//! - `mcp` (feature `mcp`): the MCP gateway, a server to the agent's client and a client to
//!   downstream MCP servers (its `[mcp]` section types are in every build);
//! - `openai` (feature `openai`): OpenAI-style `tool_calls` as frameworks hold them;
//! - `tower` (feature `tower`): a `Layer` that guards a tool-call `Service`;
//! - `otel` (feature `otel`): OpenTelemetry spans and metrics for decisions, following the
//!   GenAI semantic conventions;
//! - `rig` (feature `rig`): a rig `AgentHook` that checks every tool call.

pub mod mcp;
#[cfg(feature = "openai")]
pub mod openai;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "rig")]
pub mod rig;
#[cfg(feature = "tower")]
pub mod tower;
