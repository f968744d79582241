//! What can go wrong reading or checking OpenAI-style tool calls.

use std::borrow::Cow;

use crate::verdict::Denial;

/// Why an OpenAI-style tool call could not be read or checked. None of these lets the call run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolCallError {
    /// The assistant message or a tool call in it does not have the expected shape.
    #[error("tool call {where_}: {reason}")]
    Shape {
        /// Where: `tool_calls[2].function.name`, `tool_calls`, ...
        where_: String,
        /// What was wrong.
        reason: String,
    },
    /// The tool call is of a type other than `function` (e.g. `custom`); only function calls
    /// are checked (fail closed: an unknown kind of call is not run).
    #[error(
        "tool call `{id}` at tool_calls[{index}] has type `{kind}`; only `function` is supported"
    )]
    UnsupportedType {
        /// Its position in `tool_calls` (0 for a single call).
        index: usize,
        /// Its id.
        id: String,
        /// Its `type`.
        kind: String,
    },
    /// The call's `arguments` are not one valid JSON object (broken JSON, duplicate keys, too
    /// large or deep for the policy). The guard denied and recorded it; the model should be
    /// asked to send the call again.
    #[error("tool call `{id}` of `{tool}` has malformed arguments: {}", denial.reason())]
    MalformedArguments {
        /// The call's id.
        id: String,
        /// The tool it named.
        tool: String,
        /// The guard's (recorded) denial, which says where the text is broken.
        denial: Box<Denial>,
    },
}

impl ToolCallError {
    /// What to tell the model in the `role: "tool"` message for this call. It names no tool the
    /// agent may not see and no detail of the policy.
    pub fn agent_message(&self) -> Cow<'static, str> {
        match self {
            ToolCallError::MalformedArguments { .. } => Cow::Borrowed(
                "not executed: the arguments are not a valid JSON object; send the call again \
                 with valid JSON arguments",
            ),
            ToolCallError::UnsupportedType { .. } => {
                Cow::Borrowed("not executed: only function tool calls are supported")
            }
            ToolCallError::Shape { .. } => Cow::Borrowed("not executed: malformed tool call"),
        }
    }
}
