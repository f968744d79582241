//! A tower [`Layer`](::tower::Layer) that guards a [`Service`](::tower::Service) whose requests
//! are tool calls (feature `tower`).
//!
//! [`GuardLayer`] wraps any service whose request implements [`ToolRequest`] (the tool's name,
//! its JSON arguments, the [`Run`](crate::Run) it belongs to; [`ToolInvocation`] is a ready-made
//! one). Each request is checked by the guard *before* the inner service sees it:
//!
//! - allowed: the inner service runs under the call's permit; its response completes the permit
//!   (`Ok` success, `Err` failure with the error's text), and an output the response exposes
//!   ([`ToolOutput`]) goes through the run's flow rules first: a quarantined output is replaced
//!   by [`GuardedError::Withheld`], so the model never sees it;
//! - denied: [`GuardedError::Denied`] with the [`Denial`](crate::Denial) (tell the model its
//!   [`agent_message`](crate::Denial::agent_message));
//! - escalated: [`GuardedError::Escalated`] with the approval request (resume with its ticket).
//!
//! The response future owns a [`DetachedPermit`](crate::DetachedPermit): dropping it before the
//! inner service answers records an abandoned outcome. Nothing here spawns or needs a runtime.
//!
//! One file per job, as in tower's own middleware: `layer.rs`, `service.rs`, `future.rs`,
//! `error.rs`, and `request.rs` for the request and response traits.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::json;
//! use tollgate::integrations::tower::{GuardLayer, GuardedError, ToolInvocation};
//! use tollgate::prelude::*;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! let boundary = ActionBoundary::builder()
//!     .tool("add", ToolSpec::read().arg("a", Arg::integer().required()).arg("b", Arg::integer()))
//!     .role("calc", RoleSpec::new().tools(["add"]))
//!     .build()?;
//! let guard = Guard::builder(boundary).build()?;
//! let run = Arc::new(guard.start_run(RunContext::new("calc-bot", "calc"))?);
//!
//! let tools = service_fn(|req: ToolInvocation| async move {
//!     let arg = |k: &str| req.arguments[k].as_i64().unwrap_or(0);
//!     let sum = arg("a") + arg("b");
//!     Ok::<_, std::io::Error>(json!(sum))
//! });
//! let mut service = GuardLayer::new(guard).layer(tools);
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let add = ToolInvocation::new(&run, "add", json!({"a": 2, "b": 3}));
//! let ok = service.ready().await?.call(add).await?;
//! assert_eq!(ok, json!(5));
//! let refused = service.ready().await?.call(ToolInvocation::new(&run, "rm", json!({}))).await;
//! assert!(matches!(refused, Err(GuardedError::Denied(_))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod future;
mod layer;
mod request;
mod service;

pub use error::GuardedError;
pub use future::ResponseFuture;
pub use layer::GuardLayer;
pub use request::{ToolInvocation, ToolOutput, ToolRequest};
pub use service::GuardService;
