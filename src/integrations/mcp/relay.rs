//! A downstream stdio server whose pipes the gateway owns: forwarded `tools/call` requests are
//! written raw on the child's stdin under a gateway-owned id (`"tollgate-<n>"`, a string: rmcp's
//! own ids are numbers) and their answers routed back by that id, while everything else (the
//! `initialize` handshake, `tools/list`, notifications such as `tools/list_changed`, requests
//! from the server) still goes through rmcp's client, which reads and writes its side of an
//! in-memory pipe exactly as it would the child's.
//!
//! Why (measured with callgrind, `benches/mcp.rs` probe): a call through rmcp's `Peer` is a
//! typed round trip: the request serialised through rmcp's model, a send task, and the answer
//! parsed through untagged enums (serde buffers it and builds an error string for each variant
//! that does not match) before the result is read. Here the request is written directly and only
//! the answer's `result` is parsed, once, as a [`CallToolResult`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::oneshot;

/// The prefix of the ids of raw calls.
const ID_PREFIX: &str = "tollgate-";

/// The raw calls waiting for their answer line, by number.
#[derive(Default)]
struct Table {
    calls: Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    /// Set when the child's stdout ended: no answer will come.
    closed: AtomicBool,
}

/// Why a raw call has no result.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RelayError {
    /// The child's pipes closed (it exited or crashed) before the answer came.
    Closed,
    /// The server answered with a JSON-RPC error, or with something that is not a tool result.
    Refused(String),
}

/// The gateway's side of one child process. Dropping it kills the child.
pub(crate) struct Relay {
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    table: Arc<Table>,
    next: AtomicU64,
    /// Spawned with `kill_on_drop`.
    _child: Child,
    tasks: [tokio::task::AbortHandle; 2],
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The head of a line from the child: whether it is an answer to a raw call.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<IgnoredAny>,
}

/// An answer to a raw call.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

/// The number of a raw call's answer line, if `line` is one (an answer, not a request, whose
/// id is a gateway-owned one).
fn raw_answer_number(line: &[u8]) -> Option<u64> {
    // Cheap filter first: rmcp's traffic skips the parse.
    memchr::memmem::find(line, ID_PREFIX.as_bytes())?;
    let head: Head<'_> = serde_json::from_slice(line).ok()?;
    if head.method.is_some() {
        return None;
    }
    let id: &str = serde_json::from_str(head.id?.get()).ok()?;
    id.strip_prefix(ID_PREFIX)?.parse().ok()
}

/// The result of a raw call's answer line.
fn result_of(line: &[u8]) -> Result<CallToolResult, RelayError> {
    let answer: Answer<'_> = serde_json::from_slice(line)
        .map_err(|e| RelayError::Refused(format!("unexpected response: {e}")))?;
    match (answer.result, answer.error) {
        (_, Some(e)) => Err(RelayError::Refused(e.message)),
        (Some(r), None) => serde_json::from_str(r.get())
            .map_err(|e| RelayError::Refused(format!("unexpected response: {e}"))),
        (None, None) => Err(RelayError::Refused(
            "unexpected response: neither result nor error".to_owned(),
        )),
    }
}

/// Removes a raw call from the table when its future ends or is dropped (timeout, kill).
struct Waiting<'a> {
    table: &'a Table,
    n: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.table.calls.lock().remove(&self.n);
    }
}

impl Relay {
    /// Takes over `child`'s stdin and stdout (both piped). Returns the relay and the pipe end
    /// rmcp's client is served on.
    pub(crate) fn new(mut child: Child) -> std::io::Result<(Self, DuplexStream)> {
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the child's stdin is not piped"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the child's stdout is not piped"))?;
        let (ours, rmcps) = tokio::io::duplex(1 << 16);
        let (from_rmcp, to_rmcp) = tokio::io::split(ours);
        let stdin = Arc::new(tokio::sync::Mutex::new(stdin));
        let table = Arc::new(Table::default());
        let reader = tokio::spawn(read_child(stdout, to_rmcp, Arc::clone(&table)));
        let writer = tokio::spawn(write_rmcp(from_rmcp, Arc::clone(&stdin)));
        Ok((
            Self {
                stdin,
                table,
                next: AtomicU64::new(0),
                _child: child,
                tasks: [reader.abort_handle(), writer.abort_handle()],
            },
            rmcps,
        ))
    }

    /// Whether the child's stdout ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.table.closed.load(Ordering::Acquire)
    }

    /// Sends `params` as a `tools/call` request and waits for its answer (unbounded: the
    /// caller bounds it; dropping the future forgets the call).
    pub(crate) async fn call(
        &self,
        params: &CallToolRequestParams,
    ) -> Result<CallToolResult, RelayError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut line = Vec::with_capacity(128);
        line.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":\"");
        line.extend_from_slice(ID_PREFIX.as_bytes());
        line.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        line.extend_from_slice(b"\",\"method\":\"tools/call\",\"params\":");
        serde_json::to_writer(&mut line, params)
            .map_err(|e| RelayError::Refused(format!("the request cannot be sent: {e}")))?;
        line.extend_from_slice(b"}\n");
        let (tx, rx) = oneshot::channel();
        self.table.calls.lock().insert(n, tx);
        let _waiting = Waiting {
            table: &self.table,
            n,
        };
        // Set before the table is drained: a call inserted after the drain sees it here.
        if self.is_closed() {
            return Err(RelayError::Closed);
        }
        {
            let mut w = self.stdin.lock().await;
            w.write_all(&line).await.map_err(|_| RelayError::Closed)?;
            w.flush().await.map_err(|_| RelayError::Closed)?;
        }
        let answer = rx.await.map_err(|_| RelayError::Closed)?;
        result_of(&answer)
    }
}

/// Reads the child's stdout: answers to raw calls go to their callers, every other line to
/// rmcp. At the end (the child exited), pending raw calls fail and rmcp sees its input end.
async fn read_child(
    stdout: ChildStdout,
    mut to_rmcp: tokio::io::WriteHalf<DuplexStream>,
    table: Arc<Table>,
) {
    let mut read = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if let Some(n) = raw_answer_number(text) {
            match table.calls.lock().remove(&n) {
                Some(tx) => {
                    let _ = tx.send(text.to_vec());
                }
                // Its caller gave up (timeout, kill switch) or never existed: as rmcp does
                // with an answer to no pending request, dropped.
                None => {
                    tracing::debug!(target: "tollgate::mcp", id = n, "answer to no pending call dropped");
                }
            }
            continue;
        }
        if to_rmcp.write_all(&line).await.is_err() {
            // rmcp's client is gone (the connection is being dropped).
            break;
        }
        if !line.ends_with(b"\n") {
            let _ = to_rmcp.write_all(b"\n").await;
        }
    }
    table.closed.store(true, Ordering::Release);
    table.calls.lock().clear();
    let _ = to_rmcp.shutdown().await;
}

/// Copies rmcp's requests and notifications to the child's stdin, one whole line at a time
/// (raw calls write theirs between them under the same lock).
async fn write_rmcp(
    from_rmcp: tokio::io::ReadHalf<DuplexStream>,
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
) {
    let mut read = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut w = stdin.lock().await;
        if w.write_all(&line).await.is_err() || w.flush().await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_with_a_gateway_id_are_routed_to_raw_calls() {
        assert_eq!(
            raw_answer_number(br#"{"jsonrpc":"2.0","id":"tollgate-17","result":{"content":[]}}"#),
            Some(17)
        );
        for line in [
            // rmcp's own ids, requests and notifications from the server
            r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#,
            r#"{"jsonrpc":"2.0","id":"tollgate-3","method":"roots/list"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"tollgate-1"}}"#,
            // not ours, or not JSON
            r#"{"jsonrpc":"2.0","id":"tollgate-x","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"other-tollgate-1","result":{}}"#,
            "tollgate-1 is not json",
        ] {
            assert_eq!(raw_answer_number(line.as_bytes()), None, "{line}");
        }
    }

    #[test]
    fn an_answer_is_a_result_an_error_or_refused() {
        let ok = result_of(
            br#"{"jsonrpc":"2.0","id":"tollgate-1","result":{"content":[{"type":"text","text":"hi"}]}}"#,
        )
        .unwrap();
        assert_eq!(ok.content[0].as_text().unwrap().text, "hi");
        assert_eq!(
            result_of(br#"{"jsonrpc":"2.0","id":"tollgate-1","error":{"code":-32602,"message":"unknown tool"}}"#),
            Err(RelayError::Refused("unknown tool".to_owned()))
        );
        for bad in [
            &br#"{"jsonrpc":"2.0","id":"tollgate-1"}"#[..],
            br#"{"jsonrpc":"2.0","id":"tollgate-1","result":{"content":"nope"}}"#,
        ] {
            assert!(
                matches!(result_of(bad), Err(RelayError::Refused(m)) if m.starts_with("unexpected response")),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
