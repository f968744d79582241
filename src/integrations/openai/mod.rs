//! OpenAI-style tool calls (feature `openai`): check the `tool_calls` of an assistant message
//! through the guard as frameworks hold them, and build the `role: "tool"` messages that answer
//! them.
//!
//! The Chat Completions format (also used by most OpenAI-compatible servers and agent
//! frameworks) carries each call as
//! `{"id": "call_1", "type": "function", "function": {"name": "...", "arguments": "<JSON text>"}}`.
//! The `arguments` text goes to the guard as it is ([`Args::Json`]): the guard's strict scanner
//! reads it without building a tree, and refuses broken JSON, duplicate keys and oversized or
//! too-deep text. Such a call becomes a typed [`ToolCallError::MalformedArguments`] (recorded
//! by the guard as a denial), never a panic and never a run. Some servers send `arguments` as a
//! JSON object instead of a string; that is accepted too ([`Arguments::Value`]).
//!
//! Every call of a message gets an answer: [`ToolCallOutcome::message`] is the `role: "tool"`
//! message for a call that did not run (the denial's agent-safe text, or the pending approval),
//! and [`finish`] delivers a permitted call's output through the run's flow rules, records its
//! outcome and builds its message.
//!
//! ```
//! use serde_json::json;
//! use tollgate::integrations::openai::{self, ToolCallOutcome};
//! use tollgate::prelude::*;
//!
//! let boundary = ActionBoundary::builder()
//!     .tool("get_weather", ToolSpec::read().arg("city", Arg::string().required().max_length(80)))
//!     .role("assistant", RoleSpec::new().tools(["get_weather"]))
//!     .build()?;
//! let guard = Guard::builder(boundary).build()?;
//! let run = guard.start_run(RunContext::new("travel-bot", "assistant"))?;
//!
//! // The assistant message as the framework received it.
//! let message = json!({
//!     "role": "assistant",
//!     "content": null,
//!     "tool_calls": [
//!         {"id": "call_1", "type": "function",
//!          "function": {"name": "get_weather", "arguments": "{\"city\": \"Lyon\"}"}},
//!         {"id": "call_2", "type": "function",
//!          "function": {"name": "delete_account", "arguments": "{}"}}
//!     ]
//! });
//! let calls = openai::tool_calls(&message)?;
//! let mut replies = Vec::new();
//! for (call, outcome) in calls.iter().zip(openai::check_all(&guard, &run, &calls)) {
//!     match outcome {
//!         Ok(ToolCallOutcome::Allowed(permit)) => {
//!             let output = format!("sunny in {}", "Lyon"); // run the tool here
//!             replies.push(openai::finish(permit, call, Ok(&output))?);
//!         }
//!         Ok(other) => replies.extend(other.message(call)),
//!         Err(e) => replies.push(openai::ToolMessage::new(&call.id, e.agent_message())),
//!     }
//! }
//! assert_eq!(replies[0].to_value(),
//!            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny in Lyon"}));
//! assert_eq!(replies[1].content, "tool not available");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::ToolCallError;

use crate::audit::AuditError;
use crate::call::{Args, ToolCall};
use crate::flow::Output;
use crate::guard::{Delivery, Guard, Permit, Run};
use crate::verdict::{ApprovalRequest, Denial, DenyCode, Outcome, Verdict};

/// One tool call as the Chat Completions API and frameworks hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiToolCall {
    /// The call's id, which the `role: "tool"` answer must repeat.
    pub id: String,
    /// The kind of call: `function` is the only one checked.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// The function named and its arguments.
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

/// The `function` member of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The tool's name (compared byte for byte with the policy's tool names).
    pub name: String,
    /// The arguments: JSON text (the standard form) or, from some servers, a JSON value.
    #[serde(default)]
    pub arguments: Arguments,
}

/// The `arguments` of a function call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Arguments {
    /// JSON text, as the Chat Completions API sends it. An empty (or all-blank) text means "no
    /// arguments", as some servers send it for tools without parameters.
    Json(String),
    /// An already parsed value (some OpenAI-compatible servers send an object).
    Value(Value),
}

impl Default for Arguments {
    fn default() -> Self {
        Arguments::Json(String::new())
    }
}

impl Arguments {
    /// The arguments as the guard reads them, borrowed.
    pub fn as_args(&self) -> Args<'_> {
        match self {
            Arguments::Json(t) if t.trim().is_empty() => Args::None,
            Arguments::Json(t) => Args::Json(t),
            Arguments::Value(v) => Args::Value(v),
        }
    }
}

impl OpenAiToolCall {
    /// A function call of `name` with `arguments` JSON text.
    pub fn function(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: function_type(),
            function: FunctionCall {
                name: name.into(),
                arguments: Arguments::Json(arguments.into()),
            },
        }
    }

    /// Reads one tool call from its JSON value.
    pub fn from_value(value: &Value) -> Result<Self, ToolCallError> {
        Self::deserialize(value).map_err(|e| ToolCallError::Shape {
            where_: "tool call".into(),
            reason: e.to_string(),
        })
    }

    /// The call as the guard checks it: tool name, arguments and call id, all borrowed.
    pub fn as_tool_call(&self) -> ToolCall<'_> {
        ToolCall::new(&self.function.name, self.function.arguments.as_args()).with_call_id(&self.id)
    }
}

/// Reads the `tool_calls` of an assistant message (`{"role": "assistant", "tool_calls": [...]}`);
/// a message without tool calls (absent or `null`) has none. A malformed entry is an error
/// naming its index, so no call of the message is silently dropped.
pub fn tool_calls(message: &Value) -> Result<Vec<OpenAiToolCall>, ToolCallError> {
    let Some(obj) = message.as_object() else {
        return Err(ToolCallError::Shape {
            where_: "message".into(),
            reason: "is not a JSON object".into(),
        });
    };
    let list = match obj.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(ToolCallError::Shape {
                where_: "tool_calls".into(),
                reason: "is not an array".into(),
            });
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            OpenAiToolCall::deserialize(v).map_err(|e| ToolCallError::Shape {
                where_: format!("tool_calls[{i}]"),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The guard's answer for one tool call.
#[derive(Debug)]
#[must_use = "a permitted call must be run and finished; the others must be answered"]
#[non_exhaustive]
pub enum ToolCallOutcome<'a> {
    /// Run the tool under this permit, then [`finish`] it.
    Allowed(Permit<'a>),
    /// Do not run it; tell the model [`Denial::agent_message`].
    Denied(Denial),
    /// A human must decide first: the request waits in the guard's approval queue (resume with
    /// its ticket, or wait with [`Guard::wait_and_resume_blocking`]).
    Escalated(Box<ApprovalRequest>),
}

impl ToolCallOutcome<'_> {
    /// `true` for [`ToolCallOutcome::Allowed`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, ToolCallOutcome::Allowed(_))
    }

    /// The text to give the model for a call that did not run: the denial's agent-safe message,
    /// or a note that the call waits for approval `id`. `None` for an allowed call.
    pub fn agent_message(&self) -> Option<Cow<'_, str>> {
        match self {
            ToolCallOutcome::Allowed(_) => None,
            ToolCallOutcome::Denied(d) => Some(d.agent_message()),
            ToolCallOutcome::Escalated(r) => Some(Cow::Owned(format!(
                "not executed yet: the call waits for human approval (request {})",
                r.id
            ))),
        }
    }

    /// The `role: "tool"` message answering `call` when it did not run (see
    /// [`agent_message`](Self::agent_message)); `None` for an allowed call, whose message
    /// [`finish`] builds from the tool's output.
    pub fn message(&self, call: &OpenAiToolCall) -> Option<ToolMessage> {
        self.agent_message()
            .map(|text| ToolMessage::new(&call.id, text))
    }
}

/// Checks one tool call through the guard. A call whose arguments are not one valid JSON object
/// is [`ToolCallError::MalformedArguments`] (the guard records the denial); a call of another
/// type than `function` is [`ToolCallError::UnsupportedType`] and is not checked.
pub fn check<'a>(
    guard: &Guard,
    run: &'a Run,
    call: &'a OpenAiToolCall,
) -> Result<ToolCallOutcome<'a>, ToolCallError> {
    check_at(guard, run, call, 0)
}

fn check_at<'a>(
    guard: &Guard,
    run: &'a Run,
    call: &'a OpenAiToolCall,
    index: usize,
) -> Result<ToolCallOutcome<'a>, ToolCallError> {
    if call.kind != "function" {
        return Err(ToolCallError::UnsupportedType {
            index,
            id: call.id.clone(),
            kind: call.kind.clone(),
        });
    }
    match guard.check(run, &call.as_tool_call()) {
        Verdict::Allow(p) => Ok(ToolCallOutcome::Allowed(p)),
        Verdict::Escalate(r) => Ok(ToolCallOutcome::Escalated(r)),
        Verdict::Deny(d)
            if matches!(d.code(), DenyCode::MalformedArgs | DenyCode::ArgsTooLarge) =>
        {
            Err(ToolCallError::MalformedArguments {
                id: call.id.clone(),
                tool: call.function.name.clone(),
                denial: Box::new(d),
            })
        }
        Verdict::Deny(d) => Ok(ToolCallOutcome::Denied(d)),
    }
}

/// Checks every call of an assistant message, in order: one result per call, so each one can be
/// answered. The calls are checked one after the other (budgets, loop detection and rate limits
/// count each).
pub fn check_all<'a>(
    guard: &Guard,
    run: &'a Run,
    calls: &'a [OpenAiToolCall],
) -> Vec<Result<ToolCallOutcome<'a>, ToolCallError>> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| check_at(guard, run, c, i))
        .collect()
}

/// Finishes a permitted call: its output (or its error text) goes through the run's flow rules
/// ([`Permit::deliver`]), the outcome is recorded (`Ok` success, `Err` error), and the
/// `role: "tool"` message carries what the model may see: the output, or the placeholder a flow
/// rule puts in its place. Returns the audit error if the outcome cannot be recorded.
pub fn finish(
    permit: Permit<'_>,
    call: &OpenAiToolCall,
    result: Result<&str, &str>,
) -> Result<ToolMessage, AuditError> {
    let text = match result {
        Ok(t) | Err(t) => t,
    };
    let delivery = permit.deliver(Output::Text(text))?;
    let outcome = match result {
        Ok(_) => Outcome::success(),
        Err(e) => Outcome::error(e.to_owned()),
    };
    permit.complete(outcome)?;
    let content = match delivery {
        Delivery::Show => text.to_owned(),
        Delivery::Withhold(placeholder) => placeholder,
    };
    Ok(ToolMessage::new(&call.id, content))
}

/// A `role: "tool"` message: the answer to one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolMessage {
    /// The id of the call it answers.
    pub tool_call_id: String,
    /// What the model reads.
    pub content: String,
}

impl ToolMessage {
    /// The answer `content` to call `tool_call_id`.
    pub fn new(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: tool_call_id.into(),
            content: content.into(),
        }
    }

    /// The message as JSON: `{"role": "tool", "tool_call_id": ..., "content": ...}`.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "role": "tool",
            "tool_call_id": self.tool_call_id,
            "content": self.content,
        })
    }
}

impl Serialize for ToolMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ToolMessage", 3)?;
        st.serialize_field("role", "tool")?;
        st.serialize_field("tool_call_id", &self.tool_call_id)?;
        st.serialize_field("content", &self.content)?;
        st.end()
    }
}
