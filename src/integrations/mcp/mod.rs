//! The MCP gateway: an MCP server to the agent's client and an MCP client to the downstream
//! servers of the policy's `[mcp]` section, with every `tools/call` decided by a [`Guard`].
//!
//! - one client connection is one [`Run`](crate::Run), acting as the section's `connection`;
//! - `tools/list` shows only the tools the run's role may call ([`Guard::visible_tools`]), under
//!   their policy names;
//! - `tools/call` builds a [`ToolCall`](crate::ToolCall) from the JSON arguments and checks it:
//!   a denial is a tool error carrying [`Denial::agent_message`](crate::Denial::agent_message)
//!   (an unknown and a hidden tool get the same answer); an escalation waits up to
//!   `escalation_wait` for the approval, then answers with the pending approval id, and the
//!   same call retried with the same arguments resumes it once approved, exactly once; an
//!   allowed call is forwarded, its result delivered to the run's flow index
//!   ([`Permit::deliver`](crate::Permit::deliver)) and its permit completed (the audit trail
//!   gets the result's digest, not its content);
//! - malformed, invalid and oversized JSON-RPC messages are answered with JSON-RPC errors and
//!   counted, never fatal; a downstream call that takes longer than `call_timeout` fails; a
//!   crashed downstream server is restarted with exponential backoff while its failures reach
//!   the guard's breakers through the permits' outcomes; a forwarded call the gateway gives up
//!   on (timeout, kill switch), the client cancels (its own `notifications/cancelled`) or whose
//!   client's session ends (stdin closed) is cancelled downstream with
//!   `notifications/cancelled`, and one stopped before it was forwarded is never forwarded;
//! - the kill switch ([`Guard::suspend_all`] and friends) refuses new calls and stops in-flight
//!   ones: the gateway keeps its guard reachable through `Gateway::guard`.
//!
//! - over streamable HTTP (`Gateway::bind_http`), each session acts as the identity its
//!   bearer token names in `[[mcp.tokens]]` (the document holds the tokens' SHA-256 digests, not
//!   the tokens); a request without a known token gets `401`, a request with another token on a
//!   session `403`, both recorded in the audit trail.
//!
//! The configuration types ([`McpSection`] and the rest of [`config`]) are always compiled; the
//! gateway itself needs the `mcp` feature.

pub mod config;

#[cfg(feature = "mcp")]
mod abandon;
#[cfg(feature = "mcp")]
mod cancel;
#[cfg(feature = "mcp")]
mod downstream;
#[cfg(feature = "mcp")]
mod fast;
#[cfg(feature = "mcp")]
mod framing;
#[cfg(feature = "mcp")]
mod gateway;
#[cfg(feature = "mcp")]
mod header_credential;
#[cfg(feature = "mcp")]
mod http;
#[cfg(feature = "mcp")]
mod pending;
#[cfg(feature = "mcp")]
mod relay;
#[cfg(feature = "mcp")]
mod session;
#[cfg(feature = "mcp")]
mod ticker;
#[cfg(feature = "mcp")]
mod tls;

pub use config::{Connection, CredentialSpec, McpSection, ServerSpec, TokenSpec, TransportKind};
#[cfg(feature = "mcp")]
pub use downstream::DownstreamError;
#[cfg(feature = "mcp")]
pub use framing::ProtocolFault;
#[cfg(feature = "mcp")]
pub use gateway::{Gateway, GatewayError};
#[cfg(feature = "mcp")]
pub use http::{HttpListener, MCP_PATH};

#[cfg(doc)]
use crate::Guard;
#[cfg(feature = "mcp")]
use gateway::Shared;
