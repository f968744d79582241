//! What a guarded service's requests and responses must tell the guard.

use std::sync::Arc;

use serde_json::Value;

use crate::call::Args;
use crate::flow::Output;
use crate::guard::Run;

/// A request that is one tool call: the guard reads its tool name, arguments and run.
pub trait ToolRequest {
    /// The tool's name (compared byte for byte with the policy's).
    fn tool_name(&self) -> &str;
    /// The call's arguments (a JSON object, parsed or as text).
    fn arguments(&self) -> Args<'_>;
    /// The run the call belongs to (a run of the layer's guard).
    fn run(&self) -> &Arc<Run>;
    /// The framework's id for the call, recorded with the decision and the outcome.
    fn call_id(&self) -> Option<&str> {
        None
    }
}

/// What of a response is the tool's output, for the run's flow rules (labels, quarantine).
/// Implemented for the usual response types; implement it for your own (return `None` when the
/// response carries nothing the model will read).
pub trait ToolOutput {
    /// The output the model will read, if any.
    fn tool_output(&self) -> Option<Output<'_>>;
}

impl ToolOutput for Value {
    fn tool_output(&self) -> Option<Output<'_>> {
        Some(Output::Json(self))
    }
}

impl ToolOutput for String {
    fn tool_output(&self) -> Option<Output<'_>> {
        Some(Output::Text(self))
    }
}

impl ToolOutput for () {
    fn tool_output(&self) -> Option<Output<'_>> {
        None
    }
}

/// A ready-made tool-call request: tool name, JSON arguments, run and optional call id.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ToolInvocation {
    /// The run the call belongs to.
    pub run: Arc<Run>,
    /// The tool's name.
    pub tool: String,
    /// The arguments.
    pub arguments: Value,
    /// The framework's id for the call.
    pub call_id: Option<String>,
}

impl ToolInvocation {
    /// A call of `tool` with `arguments` in `run`.
    pub fn new(run: &Arc<Run>, tool: impl Into<String>, arguments: Value) -> Self {
        Self {
            run: Arc::clone(run),
            tool: tool.into(),
            arguments,
            call_id: None,
        }
    }

    /// Sets the framework's call id.
    pub fn with_call_id(mut self, id: impl Into<String>) -> Self {
        self.call_id = Some(id.into());
        self
    }
}

impl ToolRequest for ToolInvocation {
    fn tool_name(&self) -> &str {
        &self.tool
    }

    fn arguments(&self) -> Args<'_> {
        Args::Value(&self.arguments)
    }

    fn run(&self) -> &Arc<Run> {
        &self.run
    }

    fn call_id(&self) -> Option<&str> {
        self.call_id.as_deref()
    }
}
