//! The gateway's client-facing stdio framing: newline-delimited JSON-RPC with a size limit, where
//! everything that is not a well-formed message is answered with a JSON-RPC error and reported,
//! never passed on and never fatal.
//!
//! Hand-written on purpose (over rmcp's `AsyncRwTransport`, which drops oversized and unparsable
//! lines silently): the gateway must answer each of them with a protocol error and leave an
//! audit record, and must never buffer more than the configured limit of one line.

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{
    ClientNotification, JsonRpcMessage, JsonRpcNotification, JsonRpcResponse, ServerResult,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::fast::FastPath;

/// JSON-RPC "Parse error".
pub(crate) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC "Invalid Request".
pub(crate) const INVALID_REQUEST: i64 = -32600;

/// Something a client sent that is not a message the gateway can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolFault {
    /// A line longer than the configured limit (it was discarded without being buffered).
    Oversized {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Not JSON at all.
    Malformed {
        /// The parser's explanation.
        reason: String,
    },
    /// JSON, but not a JSON-RPC 2.0 message MCP defines.
    InvalidMessage {
        /// The message's id, if it had one (as JSON text).
        id: Option<String>,
        /// The parser's explanation.
        reason: String,
    },
}

impl ProtocolFault {
    /// A short machine name (`oversized`, `malformed`, `invalid_message`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProtocolFault::Oversized { .. } => "oversized",
            ProtocolFault::Malformed { .. } => "malformed",
            ProtocolFault::InvalidMessage { .. } => "invalid_message",
        }
    }
}

impl std::fmt::Display for ProtocolFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolFault::Oversized { limit } => {
                write!(f, "message longer than the limit of {limit} bytes")
            }
            ProtocolFault::Malformed { reason } => write!(f, "not JSON: {reason}"),
            ProtocolFault::InvalidMessage { reason, .. } => {
                write!(f, "not a valid JSON-RPC message: {reason}")
            }
        }
    }
}

/// Told about every fault, before the client gets its error answer.
pub(crate) type FaultHook = Arc<dyn Fn(&ProtocolFault) + Send + Sync>;

pub(crate) type Writer = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// A server-side [`Transport`] over a byte stream pair (the gateway's stdin/stdout, or a duplex
/// pipe in tests).
pub(crate) struct GuardedStdio<R> {
    read: BufReader<R>,
    write: Writer,
    limit: usize,
    /// The line being read. Kept across calls: rmcp's service loop polls `receive` in a
    /// `select!` and drops it when another branch wins, so a half-read line must survive.
    line: Vec<u8>,
    /// The line being read is over the limit (its bytes are being skipped).
    oversized: bool,
    /// `line` holds a complete line already handled: cleared when the next one is read.
    line_done: bool,
    /// A fault's answer not yet handed to a writer task (kept across a cancelled `receive`).
    pending_answer: Option<Vec<u8>>,
    /// Bounds the fault answers being written at once (a client that floods faults and does
    /// not read is held back here, as it is by its own pipe).
    answer_slots: Arc<tokio::sync::Semaphore>,
    on_fault: FaultHook,
    /// `tools/call` lines taken off rmcp's typed path (see `fast`), once `initialize` was
    /// answered.
    fast: Option<FastPath>,
    /// Whether the `initialize` answer was sent: before it, every request goes to rmcp, which
    /// refuses what is not allowed before initialisation.
    initialized: bool,
}

impl<R: AsyncRead + Send + Unpin> GuardedStdio<R> {
    pub(crate) fn new(
        read: R,
        write: impl AsyncWrite + Send + Unpin + 'static,
        limit: usize,
        on_fault: FaultHook,
    ) -> Self {
        Self {
            read: BufReader::new(read),
            write: Arc::new(tokio::sync::Mutex::new(Box::new(write))),
            limit,
            line: Vec::new(),
            oversized: false,
            line_done: false,
            pending_answer: None,
            answer_slots: Arc::new(tokio::sync::Semaphore::new(FAULT_ANSWERS_IN_FLIGHT)),
            on_fault,
            fast: None,
            initialized: false,
        }
    }

    /// Serves plain `tools/call` requests through `fast` once `initialize` was answered.
    pub(crate) fn with_fast_path(mut self, fast: FastPath) -> Self {
        self.fast = Some(fast);
        self
    }

    /// Reads one line into `self.line` (without its newline). `Ok(false)` at end of input;
    /// `Err(())` for a line over the limit, which has been consumed and discarded.
    ///
    /// Cancel-safe: the only await is `fill_buf` (which consumes nothing), and the partial line
    /// lives in `self`, so a `receive` dropped mid-line resumes it on the next call.
    async fn read_line(&mut self) -> std::io::Result<Result<bool, ()>> {
        if self.line_done {
            self.line.clear();
            self.oversized = false;
            self.line_done = false;
        }
        loop {
            let buf = self.read.fill_buf().await?;
            if buf.is_empty() {
                // End of input: a last line without newline still counts.
                self.line_done = true;
                return Ok(if self.oversized {
                    Err(())
                } else {
                    Ok(!self.line.is_empty())
                });
            }
            let (chunk, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            if !self.oversized {
                if self.line.len() + chunk.len() > self.limit {
                    self.oversized = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let used = done.unwrap_or(buf.len());
            self.read.consume(used);
            if done.is_some() {
                self.line_done = true;
                return Ok(if self.oversized { Err(()) } else { Ok(true) });
            }
        }
    }

    /// Reports `fault` and leaves its answer to be sent (see [`Self::send_pending_answer`]).
    fn fault(&mut self, fault: &ProtocolFault) {
        self.pending_answer = Some(answer_line(&self.on_fault, fault));
    }

    /// Hands a fault's answer to a writer task, waiting for a slot if too many are being
    /// written. Cancel-safe: the answer stays in `self` until a slot is taken.
    async fn send_pending_answer(&mut self) {
        if self.pending_answer.is_none() {
            return;
        }
        let Ok(slot) = Arc::clone(&self.answer_slots).acquire_owned().await else {
            return;
        };
        let Some(line) = self.pending_answer.take() else {
            return;
        };
        let write = self.write.clone();
        tokio::spawn(async move {
            let mut w = write.lock().await;
            // A client that stopped reading cannot be told; the fault is reported either way.
            let _ = w.write_all(&line).await;
            let _ = w.flush().await;
            drop(slot);
        });
    }
}

/// Fault answers being written at once, at most.
const FAULT_ANSWERS_IN_FLIGHT: usize = 64;

/// Reports `fault` and returns the JSON-RPC error line that answers it.
fn answer_line(on_fault: &FaultHook, fault: &ProtocolFault) -> Vec<u8> {
    on_fault(fault);
    let (code, id) = match fault {
        ProtocolFault::Oversized { .. } => (INVALID_REQUEST, None),
        ProtocolFault::Malformed { .. } => (PARSE_ERROR, None),
        ProtocolFault::InvalidMessage { id, .. } => (INVALID_REQUEST, id.clone()),
    };
    let message: Cow<'_, str> = match fault {
        ProtocolFault::Oversized { .. } => "Invalid Request: message too large".into(),
        ProtocolFault::Malformed { .. } => "Parse error".into(),
        ProtocolFault::InvalidMessage { .. } => "Invalid Request".into(),
    };
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.and_then(|i| serde_json::from_str::<Value>(&i).ok()).unwrap_or(Value::Null),
        "error": { "code": code, "message": message, "data": { "reason": fault.to_string() } },
    });
    let mut line = body.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Classifies a line that did not parse as a message.
fn classify(line: &[u8], err: &serde_json::Error) -> ProtocolFault {
    match serde_json::from_slice::<Value>(line) {
        Err(e) => ProtocolFault::Malformed {
            reason: e.to_string(),
        },
        Ok(v) => {
            // Only ids JSON-RPC allows are echoed back (a string or a number).
            let id = v
                .get("id")
                .filter(|i| i.is_string() || i.is_number())
                .map(Value::to_string);
            ProtocolFault::InvalidMessage {
                id,
                reason: err.to_string(),
            }
        }
    }
}

impl<R: AsyncRead + Send + Unpin> Transport<RoleServer> for GuardedStdio<R> {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let JsonRpcMessage::Response(JsonRpcResponse {
            result: ServerResult::InitializeResult(_),
            ..
        }) = &item
        {
            self.initialized = true;
        }
        let write = self.write.clone();
        async move {
            let mut line = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            line.push(b'\n');
            let mut w = write.lock().await;
            w.write_all(&line).await?;
            w.flush().await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            // rmcp drops this future whenever another branch of its loop wins: every await
            // below keeps its state in `self`, so nothing read is lost and no answer is dropped.
            self.send_pending_answer().await;
            match self.read_line().await {
                Err(_) | Ok(Ok(false)) => {
                    // The client's session ends: its fast-path calls stop now (rmcp stops its
                    // own after its drain).
                    if let Some(fast) = &self.fast {
                        fast.end();
                    }
                    // The last fault's answer still goes out.
                    self.send_pending_answer().await;
                    return None;
                }
                Ok(Err(())) => {
                    let fault = ProtocolFault::Oversized { limit: self.limit };
                    self.fault(&fault);
                }
                Ok(Ok(true)) => {
                    let text = self.line.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    if self.initialized
                        && let Some(fast) = &self.fast
                        && fast.take(text, &self.write)
                    {
                        continue;
                    }
                    match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(text) {
                        Ok(msg) => {
                            if let (
                                Some(fast),
                                JsonRpcMessage::Notification(JsonRpcNotification {
                                    notification: ClientNotification::CancelledNotification(n),
                                    ..
                                }),
                            ) = (&self.fast, &msg)
                                && let Some(id) = &n.params.request_id
                            {
                                // Also passed on: rmcp forgets its own request of that id.
                                fast.cancel(id);
                            }
                            return Some(msg);
                        }
                        Err(e) => {
                            let fault = classify(text, &e);
                            self.fault(&fault);
                        }
                    }
                }
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let write = self.write.clone();
        async move { write.lock().await.flush().await }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    async fn feed(input: &[u8], limit: usize) -> (Vec<String>, Vec<ProtocolFault>, String) {
        let faults = Arc::new(Mutex::new(Vec::new()));
        let hook = {
            let faults = faults.clone();
            Arc::new(move |f: &ProtocolFault| faults.lock().push(f.clone())) as FaultHook
        };
        let (mut out_r, out_w) = tokio::io::duplex(1 << 20);
        let mut t = GuardedStdio::new(input, out_w, limit, hook);
        let mut got = Vec::new();
        while let Some(m) = t.receive().await {
            got.push(serde_json::to_value(&m).unwrap()["method"].to_string());
        }
        drop(t);
        let mut answered = String::new();
        out_r.read_to_string(&mut answered).await.unwrap();
        let faults = faults.lock().clone();
        (got, faults, answered)
    }

    #[tokio::test]
    async fn garbage_between_messages_is_answered_and_reading_goes_on() {
        let input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\nnot json\n{\"jsonrpc\":\"2.0\",\"id\":7,\"nonsense\":true}\n\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}";
        let (got, faults, answered) = feed(input, 1024).await;
        assert_eq!(got, ["\"ping\"", "\"ping\""]);
        assert_eq!(
            faults.iter().map(ProtocolFault::kind).collect::<Vec<_>>(),
            ["malformed", "invalid_message"]
        );
        let lines: Vec<Value> = answered
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["error"]["code"], PARSE_ERROR);
        assert_eq!(lines[0]["id"], Value::Null);
        assert_eq!(lines[1]["error"]["code"], INVALID_REQUEST);
        assert_eq!(lines[1]["id"], 7);
    }

    proptest! {
        /// Whatever the client sends, every non-blank line is either one message or one fault
        /// answered with one JSON-RPC error line, and reading never stops early.
        #[test]
        fn every_line_is_a_message_or_an_answered_fault(
            lines in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..64)
                        .prop_map(|mut v| { v.retain(|b| *b != b'\n'); v }),
                    Just(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec()),
                    Just(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec()),
                    Just(vec![b'x'; 300]),
                ],
                0..12,
            )
        ) {
            let mut input = Vec::new();
            for l in &lines {
                input.extend_from_slice(l);
                input.push(b'\n');
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (got, faults, answered) = rt.block_on(feed(&input, 200));
            let non_blank = lines.iter().filter(|l| !l.trim_ascii().is_empty()).count();
            prop_assert_eq!(got.len() + faults.len(), non_blank);
            let answers: Vec<&str> = answered.lines().collect();
            prop_assert_eq!(answers.len(), faults.len());
            for a in answers {
                let v: Value = serde_json::from_str(a).unwrap();
                prop_assert!(v["error"]["code"].is_i64());
            }
        }
    }

    /// rmcp polls `receive` inside a `select!` and drops it when another branch wins. Here it
    /// is dropped after every poll that does not finish, while the client's lines arrive a few
    /// bytes at a time: no message may be lost or torn, and every fault must be answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receive_dropped_mid_line_or_mid_answer_loses_nothing() {
        let faults = Arc::new(Mutex::new(Vec::new()));
        let hook = {
            let faults = faults.clone();
            Arc::new(move |f: &ProtocolFault| faults.lock().push(f.clone())) as FaultHook
        };
        let (client_w, server_r) = tokio::io::duplex(64);
        let (mut out_r, out_w) = tokio::io::duplex(1 << 20);
        let mut t = GuardedStdio::new(server_r, out_w, 1024, hook);
        let mut input = Vec::new();
        for i in 0..40 {
            match i % 4 {
                0 => input.extend_from_slice(
                    format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"ping\"}}\n").as_bytes(),
                ),
                1 => input.extend_from_slice(b"not json at all\n"),
                2 => input.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":true,\"x\":1}\n"),
                _ => input.extend_from_slice(&[b'x'; 1500]),
            }
            if i % 4 == 3 {
                input.push(b'\n');
            }
        }
        let feeder = tokio::spawn(async move {
            let mut w = client_w;
            for chunk in input.chunks(7) {
                w.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut got = Vec::new();
        loop {
            tokio::select! {
                biased;
                m = t.receive() => match m {
                    Some(m) => got.push(serde_json::to_value(&m).unwrap()["id"].clone()),
                    None => break,
                },
                // Ready on its second poll: `receive` is dropped whenever it had to wait.
                _ = tokio::task::yield_now() => {}
            }
        }
        feeder.await.unwrap();
        drop(t);
        let mut answered = String::new();
        out_r.read_to_string(&mut answered).await.unwrap();
        let ids: Vec<Value> = (0..40).step_by(4).map(|i| Value::from(i as u64)).collect();
        assert_eq!(got, ids);
        let kinds: Vec<&str> = faults.lock().iter().map(ProtocolFault::kind).collect();
        assert_eq!(kinds.len(), 30, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "oversized").count(), 10);
        assert_eq!(answered.lines().count(), 30, "{answered}");
    }

    #[tokio::test]
    async fn oversized_line_is_refused_without_buffering_and_the_next_one_is_read() {
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}\n",
            "x".repeat(10_000)
        );
        let input = [
            big.as_bytes(),
            b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n",
        ]
        .concat();
        let (got, faults, answered) = feed(&input, 512).await;
        assert_eq!(got, ["\"ping\""]);
        assert_eq!(faults, [ProtocolFault::Oversized { limit: 512 }]);
        assert!(answered.contains("message too large"), "{answered}");
    }
}
