//! Adapters that put the guard where agents already are, each behind its own cargo feature so
//! the default build pulls in none of their dependencies:
//!
//! - `openai` (feature `openai`): OpenAI-style `tool_calls` as frameworks hold them;
//! - `tower` (feature `tower`): a `Layer` that guards a tool-call `Service`;
//! - `otel` (feature `otel`): OpenTelemetry spans and metrics for decisions, following the
//!   GenAI semantic conventions;
//! - `rig` (feature `rig`): a `rig-core` `PromptHook` that checks every tool call.

#[cfg(feature = "openai")]
pub mod openai;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "rig")]
pub mod rig;
#[cfg(feature = "tower")]
pub mod tower;
