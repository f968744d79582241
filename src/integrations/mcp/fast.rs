//! The client side's fast path for `tools/call` over stdio: a request line is read with a
//! borrowed struct (`id`, `params.name`, `params.arguments`), decided and forwarded by the same
//! [`Session::call`] the typed path runs, and answered with the client's id, without going
//! through rmcp's typed JSON-RPC model and its service loop.
//!
//! Why (measured with callgrind, `benches/mcp.rs` probe): rmcp parses every request through
//! untagged enums (serde buffers the message and builds an error string for each variant that
//! does not match), spawns a handler task and per-send tasks, and serialises the answer through
//! the same enums: most of the gateway's added cost per call. Here one parse reads the fields
//! the gateway uses, one task runs the call, and the answer is written directly.
//!
//! Only the plain shape takes this path: exactly `jsonrpc: "2.0"`, an integer or plain string
//! `id`, `method: "tools/call"`, `params` with a string `name` and an optional object
//! `arguments`, and at most a `_meta` holding a `progressToken` (rmcp's client sends one on every
//! request; the gateway sends no progress, on either path), nothing else (rmcp validates a
//! request's own protocol metadata), and only once the `initialize` answer was sent. Anything
//! else, including every malformed `tools/call`, goes to rmcp unchanged, so it gets the same
//! answer as before by construction.
//!
//! A call stops like a typed-path one: when the client cancels it (its `notifications/cancelled`)
//! and when the client's session ends ([`FastPath::end`], at the end of its input). It is then
//! not forwarded if it was not yet, else abandoned downstream (the server sent
//! `notifications/cancelled`), recorded as what stopped it, and not answered. The session's end
//! waits for its calls (see [`Session::ended`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, NumberOrString};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::cancel::Stop;
use super::framing::Writer;
use super::session::Session;

/// The only request shape the fast path takes (any other field: the typed path).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    #[serde(borrow)]
    jsonrpc: &'a str,
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow)]
    params: Params<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    arguments: Option<JsonObject>,
    #[serde(default, borrow, rename = "_meta")]
    meta: Present<'a>,
}

/// The request metadata the fast path takes: a progress token at most (which the gateway,
/// like its typed path, does not use: it sends no progress). rmcp's client sets one on every
/// request; any other key (a request's own protocol version, client info ...) is rmcp's to
/// validate, so such requests take the typed path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta<'a> {
    #[serde(default, borrow, rename = "progressToken")]
    progress_token: Present<'a>,
}

/// A field's raw JSON if present, `null` included (an `Option` would read `null` as absent,
/// and rmcp may read it differently than absent).
#[derive(Default)]
struct Present<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|r| Present(Some(r)))
    }
}

/// Whether `meta` (the `_meta` of a call's params, if any) is one the fast path takes.
fn meta_is_plain(meta: &Present<'_>) -> bool {
    let Some(raw) = meta.0 else {
        return true;
    };
    let Ok(meta) = serde_json::from_str::<Meta<'_>>(raw.get()) else {
        return false;
    };
    // A progress token is a string or an integer.
    meta.progress_token.0.is_none_or(|t| key_of(t).is_some())
}

/// A request's id as the in-flight table keys it: its JSON text (an integer in canonical form,
/// or a string without escapes, so equal ids have equal text).
type Key = Box<str>;

/// The key of `id` and the call id the guard records (a string's content, a number's text,
/// as the typed path derives it), if the id is one the fast path takes.
fn key_of(id: &RawValue) -> Option<(Key, String)> {
    let text = id.get();
    if text.starts_with('"') {
        // Borrowing fails on escapes: such ids take the typed path.
        let s: &str = serde_json::from_str(text).ok()?;
        Some((text.into(), s.to_owned()))
    } else {
        let n: i64 = text.parse().ok()?;
        (n.to_string() == text).then(|| (text.into(), text.to_owned()))
    }
}

/// The in-flight table's key of an id rmcp parsed (from a `notifications/cancelled`).
pub(crate) fn key_of_request_id(id: &NumberOrString) -> Option<Key> {
    match id {
        NumberOrString::Number(n) => Some(n.to_string().into()),
        NumberOrString::String(s) => serde_json::to_string(&**s).ok().map(Into::into),
    }
}

/// The plain `tools/call` in `line`, if it is one: its in-flight key, its call id, its params.
fn parse(line: &[u8]) -> Option<(Key, String, CallToolRequestParams)> {
    // Cheap filter first: every other message skips the borrowed parse.
    memchr::memmem::find(line, b"\"tools/call\"")?;
    let req = serde_json::from_slice::<Request<'_>>(line).ok()?;
    if req.jsonrpc != "2.0" || req.method != "tools/call" {
        return None;
    }
    if !meta_is_plain(&req.params.meta) {
        return None;
    }
    let (key, call_id) = key_of(req.id)?;
    let mut params = CallToolRequestParams::new(req.params.name.into_owned());
    params.arguments = req.params.arguments;
    Some((key, call_id, params))
}

/// The JSON-RPC answer line carrying `result` for the request `key` (the same JSON rmcp writes
/// for a `tools/call` answer), or `None` if the result cannot be serialised (as rmcp's
/// transport, such an answer is not sent).
fn answer_line(key: &str, result: &CallToolResult) -> Option<Vec<u8>> {
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    line.extend_from_slice(key.as_bytes());
    line.extend_from_slice(b",\"result\":");
    if let Err(e) = serde_json::to_writer(&mut line, result) {
        tracing::error!(target: "tollgate::mcp", error = %e, "a tool result could not be serialised; not answered");
        return None;
    }
    line.extend_from_slice(b"}\n");
    Some(line)
}

/// The fast path of one connection.
pub(crate) struct FastPath {
    calls: Arc<Calls>,
}

/// What a connection's fast-path calls share (one `Arc` per call's task, not one per field).
struct Calls {
    session: Session,
    /// Fast-path calls not answered yet, by id, each with the token its call watches. The
    /// client's cancellation removes the entry and cancels the token: the call stops (not
    /// forwarded, or abandoned downstream; its permit completed as cancelled by the client, as
    /// on the typed path) and is not answered, as rmcp does for a cancelled request.
    in_flight: Mutex<HashMap<Key, CancellationToken>>,
    /// Cancelled when the client's session ends (its input ended): every call still in flight
    /// stops as the client's cancellation stops it, but recorded as the session's end (as rmcp
    /// stops the typed path's calls then), and none is answered any more.
    ended: CancellationToken,
}

impl FastPath {
    /// The fast path of `session`, whose end `ended` says.
    pub(crate) fn new(session: Session, ended: CancellationToken) -> Self {
        Self {
            calls: Arc::new(Calls {
                session,
                in_flight: Mutex::default(),
                ended,
            }),
        }
    }

    /// Takes `line` if it is a plain `tools/call` (see the module's documentation): starts
    /// the call on its own task, which writes the answer to `write`. `false`: not taken, the
    /// typed path reads it.
    pub(crate) fn take(&self, line: &[u8], write: &Writer) -> bool {
        let Some((key, call_id, params)) = parse(line) else {
            return false;
        };
        // A client reusing the id of a call still in flight (a protocol error on its part):
        // a cancellation of that id then stops the later call only; the first of the two to
        // end is answered, as before.
        let cancelled = CancellationToken::new();
        self.calls
            .in_flight
            .lock()
            .insert(key.clone(), cancelled.clone());
        let calls = Arc::clone(&self.calls);
        let write = Arc::clone(write);
        // Counted from here: the session's end waits for this call.
        let tracked = calls.session.track();
        tokio::spawn(async move {
            let _tracked = tracked;
            let stop = Stop::fast(&cancelled, &calls.ended);
            let result = Box::pin(calls.session.call(params, &call_id, &stop)).await;
            if calls.in_flight.lock().remove(&key).is_none() {
                tracing::debug!(target: "tollgate::mcp", id = %key, "dropping the answer to a cancelled call");
                return;
            }
            if calls.ended.is_cancelled() {
                tracing::debug!(target: "tollgate::mcp", id = %key, "the session ended: the call is not answered");
                return;
            }
            let Some(line) = answer_line(&key, &result) else {
                return;
            };
            let mut w = write.lock().await;
            // A client that stopped reading cannot be told; the call was recorded either way.
            let _ = w.write_all(&line).await;
            let _ = w.flush().await;
        });
        true
    }

    /// The client's session ended (its input ended, or the service stopped): every call in
    /// flight stops now (not forwarded if it was not yet, else abandoned downstream, recorded
    /// as the session's end) and is not answered.
    pub(crate) fn end(&self) {
        self.calls.ended.cancel();
    }

    /// The client cancelled the request `id`: if it is a fast-path call in flight, it is
    /// stopped and will not be answered. Any other id (unknown, already answered, or a typed
    /// path request, which rmcp cancels itself) is ignored.
    pub(crate) fn cancel(&self, id: &NumberOrString) {
        let token = key_of_request_id(id).and_then(|key| self.calls.in_flight.lock().remove(&key));
        match token {
            Some(t) => t.cancel(),
            None => {
                tracing::debug!(target: "tollgate::mcp", request_id = %id, "notifications/cancelled for no fast-path call in flight; ignored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_tools_call_takes_the_fast_path() {
        let taken = |l: &str| parse(l.as_bytes()).map(|(k, id, p)| (k, id, p.name, p.arguments));
        let (key, id, name, args) = taken(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"m":"x"}}}"#,
        )
        .unwrap();
        assert_eq!((&*key, id.as_str(), &*name), ("3", "3", "echo"));
        assert_eq!(args.unwrap()["m"], "x");
        let (_, _, name, args) =
            taken(r#"{"params":{"name":"a\"b"},"method":"tools/call","id":"x","jsonrpc":"2.0"}"#)
                .unwrap();
        assert_eq!((&*name, args), ("a\"b", None));
        // Everything else is rmcp's to answer, exactly as before.
        for line in [
            // malformed calls
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":"boom"}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"1.0","id":4,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":4,"id":5,"method":"tools/call","params":{"name":"echo"}}"#,
            // what rmcp validates or the gateway does not use
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","_meta":null}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":null}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":1.5}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":1,"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":1,"progressToken":2}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","task":{}}}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo"},"x":1}"#,
            // other methods, even mentioning tools/call
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"cursor":"\"tools/call\""}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4,"reason":"\"tools/call\""}}"#,
        ] {
            assert!(taken(line).is_none(), "{line}");
        }
    }

    fn raw(t: &str) -> Box<RawValue> {
        RawValue::from_string(t.to_owned()).unwrap()
    }

    /// The fast path's answer must be what the typed path wrote for the same result and id.
    #[test]
    fn the_answer_line_is_rmcps_answer_for_the_same_result() {
        use rmcp::model::{ContentBlock, ServerJsonRpcMessage, ServerResult};
        let mut result = CallToolResult::error(vec![ContentBlock::text("a \"b\"\nc ü")]);
        result.structured_content = Some(serde_json::json!({"x": [1, null, "y"]}));
        for (key, id) in [
            ("7", NumberOrString::Number(7)),
            ("\"r-1\"", NumberOrString::String("r-1".into())),
        ] {
            let ours = answer_line(key, &result).unwrap();
            assert_eq!(ours.last(), Some(&b'\n'));
            let theirs = serde_json::to_vec(&ServerJsonRpcMessage::response(
                ServerResult::CallToolResult(result.clone()),
                id,
            ))
            .unwrap();
            let ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
            let theirs: serde_json::Value = serde_json::from_slice(&theirs).unwrap();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn only_ids_with_one_spelling_are_keyed_and_a_cancellation_finds_them() {
        assert_eq!(key_of(&raw("42")), Some(("42".into(), "42".to_owned())));
        assert_eq!(
            key_of(&raw("\"a-1\"")),
            Some(("\"a-1\"".into(), "a-1".to_owned()))
        );
        // Spellings rmcp reads differently (or not at all) take the typed path.
        for t in [
            "-0",
            "1.0",
            "1e3",
            "\"\\u0061\"",
            "null",
            "true",
            "[1]",
            "99999999999999999999",
        ] {
            assert_eq!(key_of(&raw(t)), None, "{t}");
        }
        let cancelled: NumberOrString = serde_json::from_str("\"\\u0061\"").unwrap();
        assert_eq!(
            key_of_request_id(&cancelled),
            key_of(&raw("\"a\"")).map(|k| k.0)
        );
        let cancelled: NumberOrString = serde_json::from_str("7").unwrap();
        assert_eq!(
            key_of_request_id(&cancelled),
            key_of(&raw("7")).map(|k| k.0)
        );
    }
}
