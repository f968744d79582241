//! A scripted model for rig agents, without network: rig's real OpenAI Chat Completions wire
//! over an HTTP client (rig's `HttpClientExt` trait) that answers each request with the next
//! canned reply and records what it was sent. Shared by `examples/rig_agent.rs` and
//! `tests/integration_rig.rs`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rig_agent::core::http_client::{
    self, DynHttpClient, HttpClientExt, LazyBody, MultipartForm, Request, Response,
    StreamingResponse,
};
use rig_agent::core::providers::openai::OpenAIConfig;
use rig_agent::core::wasm_compat::WasmCompatSend;
use serde_json::{Value, json};

/// One canned reply of the model.
#[derive(Debug, Clone)]
pub enum Turn {
    /// The model calls tools: `(call id, tool name, arguments)`.
    ToolCalls(Vec<(&'static str, &'static str, Value)>),
    /// The model answers with text and ends the run.
    Text(&'static str),
}

impl Turn {
    /// One tool call.
    pub fn call(id: &'static str, tool: &'static str, args: Value) -> Self {
        Turn::ToolCalls(vec![(id, tool, args)])
    }

    /// The Chat Completions response body for this turn.
    fn body(&self, n: usize) -> Value {
        let (message, finish) = match self {
            Turn::ToolCalls(calls) => {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|(id, name, args)| {
                        json!({"id": id, "type": "function",
                               "function": {"name": name, "arguments": args.to_string()}})
                    })
                    .collect();
                (
                    json!({"role": "assistant", "content": null, "tool_calls": calls}),
                    "tool_calls",
                )
            }
            Turn::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        };
        json!({
            "id": format!("chatcmpl-scripted-{n}"),
            "object": "chat.completion",
            "created": 0,
            "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        })
    }
}

#[derive(Default)]
struct State {
    turns: VecDeque<Turn>,
    sent: Vec<Value>,
    served: usize,
}

/// The scripted HTTP client: the transport under rig's OpenAI wire.
#[derive(Clone, Default)]
pub struct ScriptedOpenAi {
    state: Arc<Mutex<State>>,
}

impl ScriptedOpenAi {
    /// A model that answers with `turns`, in order.
    pub fn new(turns: impl IntoIterator<Item = Turn>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                turns: turns.into_iter().collect(),
                ..State::default()
            })),
        }
    }

    /// The rig completion model on this transport.
    pub fn model(
        &self,
    ) -> rig_agent::core::driver::Model<rig_agent::core::providers::openai::wire::Chat> {
        OpenAIConfig::new("sk-scripted-no-network")
            .connect(DynHttpClient::new(self.clone()))
            .chat("scripted")
    }

    /// The request bodies the model was sent, in order.
    pub fn sent(&self) -> Vec<Value> {
        self.state.lock().unwrap().sent.clone()
    }

    /// The tool results (`role: "tool"` messages) of the last request sent.
    pub fn last_tool_results(&self) -> Vec<(String, String)> {
        let sent = self.sent();
        let Some(last) = sent.last() else {
            return Vec::new();
        };
        last["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["role"] == "tool")
            .map(|m| {
                let content = match &m["content"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (m["tool_call_id"].as_str().unwrap_or("").to_owned(), content)
            })
            .collect()
    }
}

fn unsupported(what: &str) -> http_client::Error {
    http_client::Error::instance(std::io::Error::other(format!(
        "the scripted model does not support {what}"
    )))
}

impl HttpClientExt for ScriptedOpenAi {
    fn send<T, U>(
        &self,
        req: Request<T>,
    ) -> impl Future<Output = http_client::Result<Response<LazyBody<U>>>> + WasmCompatSend + 'static
    where
        T: Into<Bytes>,
        T: WasmCompatSend,
        U: From<Bytes>,
        U: WasmCompatSend + 'static,
    {
        let body: Bytes = req.into_body().into();
        let reply = {
            let mut st = self.state.lock().unwrap();
            st.sent
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let n = st.served;
            st.served += 1;
            st.turns.pop_front().map(|t| t.body(n))
        };
        async move {
            let Some(reply) = reply else {
                return Err(unsupported("a request beyond its script"));
            };
            let bytes = Bytes::from(reply.to_string());
            let lazy: LazyBody<U> = Box::pin(async move { Ok(U::from(bytes)) });
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(lazy)
                .map_err(http_client::Error::instance)
        }
    }

    fn send_multipart<U>(
        &self,
        _req: Request<MultipartForm>,
    ) -> impl Future<Output = http_client::Result<Response<LazyBody<U>>>> + WasmCompatSend + 'static
    where
        U: From<Bytes>,
        U: WasmCompatSend + 'static,
    {
        std::future::ready(Err(unsupported("multipart requests")))
    }

    fn send_streaming<T>(
        &self,
        _req: Request<T>,
    ) -> impl Future<Output = http_client::Result<StreamingResponse>> + WasmCompatSend
    where
        T: Into<Bytes> + WasmCompatSend,
    {
        std::future::ready(Err(unsupported("streaming")))
    }
}
