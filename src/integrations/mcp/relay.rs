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
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use super::abandon::Abandon;

/// The prefix of the ids of raw calls.
const ID_PREFIX: &str = "tollgate-";
/// The same after the id's opening quote.
const QUOTED_PREFIX: &str = "\"tollgate-";

/// Bytes kept from the end of a line too long to keep, to find the id of a call it answers
/// (servers on the TypeScript SDK write `id` after `result`).
const TAIL: usize = 128;

/// What a raw call's caller receives: its answer line, or why there is none to read.
type Answer = Result<Vec<u8>, RelayError>;

/// The raw calls waiting for their answer line, by number.
#[derive(Default)]
struct Table {
    calls: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
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
    /// The answer was longer than the limit (in bytes): read to its end and discarded.
    TooLarge(usize),
}

/// The gateway's side of one child process. Dropping it kills the child.
pub(crate) struct Relay {
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    table: Arc<Table>,
    next: AtomicU64,
    /// The server's name in the policy, for the log.
    server: Arc<str>,
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
struct AnswerBody<'a> {
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
    let answer: AnswerBody<'_> = serde_json::from_slice(line)
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

/// How far a raw call's request got onto the child's stdin.
enum Sending {
    /// Not written (or the write failed): the server never saw it.
    Nothing,
    /// Being written, under the stdin lock it holds: `line[..done]` is on the pipe.
    Writing {
        stdin: tokio::sync::OwnedMutexGuard<ChildStdin>,
        line: Vec<u8>,
        done: usize,
    },
    /// Whole on the pipe.
    Sent,
}

/// A raw call waiting for its answer. When its future ends or is dropped (timeout, kill
/// switch, the client gone) it leaves the table; if it is dropped with its request sent (or
/// half sent) and no answer, the server gets `notifications/cancelled` for it (see
/// [`abandon`](super::abandon)).
struct Waiting<'a> {
    relay: &'a Relay,
    n: u64,
    abandon: &'a Abandon<'a>,
    sending: Sending,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // Still in the table: no answer came. The reader takes a call out before it hands its
        // answer on (a late answer then finds nothing and is dropped), and empties the table
        // when the child's stdout ends (no server left to tell).
        let unanswered = self.relay.table.calls.lock().remove(&self.n).is_some();
        let sending = std::mem::replace(&mut self.sending, Sending::Nothing);
        if !unanswered {
            return;
        }
        // A half-written request is finished under the lock it holds: another line written
        // after half of one would garble both. One of which nothing reached the pipe was never
        // seen by the server: it is not sent now just to be cancelled (dropping the lock is all).
        let (held, rest) = match sending {
            Sending::Nothing | Sending::Writing { done: 0, .. } => return,
            Sending::Writing { stdin, line, done } => (Some(stdin), Some((line, done))),
            Sending::Sent => (None, None),
        };
        let reason = self.abandon.reason();
        let mut cancel = Vec::with_capacity(128);
        cancel.extend_from_slice(
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":\"",
        );
        cancel.extend_from_slice(ID_PREFIX.as_bytes());
        cancel.extend_from_slice(itoa::Buffer::new().format(self.n).as_bytes());
        cancel.extend_from_slice(b"\",\"reason\":");
        // A string's serialisation cannot fail.
        let _ = serde_json::to_writer(&mut cancel, &reason);
        cancel.extend_from_slice(b"}}\n");
        let stdin = Arc::clone(&self.relay.stdin);
        let server = Arc::clone(&self.relay.server);
        let n = self.n;
        self.abandon.spawn_send(async move {
            let mut w = match held {
                Some(w) => w,
                None => stdin.lock_owned().await,
            };
            if let Some((line, done)) = rest
                && w.write_all(&line[done..]).await.is_err()
            {
                return;
            }
            let sent = match w.write_all(&cancel).await {
                Ok(()) => w.flush().await,
                Err(e) => Err(e),
            };
            super::abandon::log_sent(&server, format_args!("{ID_PREFIX}{n}"), &reason, sent);
        });
    }
}

impl Relay {
    /// Takes over `child`'s stdin and stdout (both piped) of the server named `server`; a line
    /// from the child longer than `max_line` bytes is discarded (see [`read_bounded`]). Returns
    /// the relay and the pipe end rmcp's client is served on.
    pub(crate) fn new(
        mut child: Child,
        max_line: usize,
        server: &str,
    ) -> std::io::Result<(Self, DuplexStream)> {
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
        let reader = tokio::spawn(read_child(stdout, to_rmcp, Arc::clone(&table), max_line));
        let writer = tokio::spawn(write_rmcp(from_rmcp, Arc::clone(&stdin)));
        Ok((
            Self {
                stdin,
                table,
                next: AtomicU64::new(0),
                server: server.into(),
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
    /// caller bounds it). Dropping the future before the answer forgets the call and sends the
    /// server `notifications/cancelled` for it, with `abandon`'s reason.
    pub(crate) async fn call(
        &self,
        params: &CallToolRequestParams,
        abandon: &Abandon<'_>,
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
        let mut waiting = Waiting {
            relay: self,
            n,
            abandon,
            sending: Sending::Nothing,
        };
        // Set before the table is drained: a call inserted after the drain sees it here.
        if self.is_closed() {
            return Err(RelayError::Closed);
        }
        let stdin = Arc::clone(&self.stdin).lock_owned().await;
        waiting.sending = Sending::Writing {
            stdin,
            line,
            done: 0,
        };
        // Written a piece at a time so that a drop in the middle knows what is left.
        while let Sending::Writing { stdin, line, done } = &mut waiting.sending
            && *done < line.len()
        {
            match stdin.write(&line[*done..]).await {
                Ok(0) | Err(_) => {
                    waiting.sending = Sending::Nothing;
                    return Err(RelayError::Closed);
                }
                Ok(k) => *done += k,
            }
        }
        if let Sending::Writing { stdin, .. } = &mut waiting.sending
            && stdin.flush().await.is_err()
        {
            waiting.sending = Sending::Nothing;
            return Err(RelayError::Closed);
        }
        // Whole on the pipe: the lock goes.
        waiting.sending = Sending::Sent;
        let answer = rx.await.map_err(|_| RelayError::Closed)??;
        result_of(&answer)
    }
}

/// What [`read_bounded`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    /// A whole line (with its newline, unless the input ended without one).
    Line,
    /// A line longer than the limit, read to its end: its first `limit` bytes are in `line`,
    /// its last [`TAIL`] in `tail`.
    TooLong,
    /// The input ended.
    End,
}

/// Reads one line of at most `limit` bytes (its newline not counted) into `line`. A longer
/// line is consumed to its end but not kept beyond its first `limit` and last [`TAIL`] bytes:
/// what a misbehaving or hostile server writes cannot grow the gateway's memory (tokio's
/// `read_until` has no bound; hand-written for that bound).
async fn read_bounded<R: AsyncBufRead + Unpin>(
    read: &mut R,
    line: &mut Vec<u8>,
    tail: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Got> {
    line.clear();
    tail.clear();
    let mut over = false;
    loop {
        let buf = read.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match (over, line.is_empty()) {
                (true, _) => Got::TooLong,
                (false, true) => Got::End,
                (false, false) => Got::Line,
            });
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let content = chunk.len() - usize::from(done);
        if over {
            keep_tail(tail, chunk);
        } else if line.len() + content <= limit {
            line.extend_from_slice(chunk);
        } else {
            line.extend_from_slice(&chunk[..limit - line.len()]);
            keep_tail(tail, chunk);
            over = true;
        }
        let n = chunk.len();
        read.consume(n);
        if done {
            return Ok(if over { Got::TooLong } else { Got::Line });
        }
    }
}

/// Keeps the last [`TAIL`] bytes of what `tail` held followed by `chunk`.
fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    if chunk.len() >= TAIL {
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len() - TAIL..]);
    } else {
        tail.extend_from_slice(chunk);
        let extra = tail.len().saturating_sub(TAIL);
        tail.drain(..extra);
    }
}

/// The number of the raw call a too-long line answers, looked for as `"id":"tollgate-<n>"` in
/// the kept head and tail (the line cannot be parsed: most of it is gone). A nested object
/// with such a key could point at another call to the same server: that call then fails, which
/// the server answering it could have made happen anyway.
fn long_answer_number(head: &[u8], tail: &[u8]) -> Option<u64> {
    [head, tail].into_iter().find_map(|part| {
        memchr::memmem::find_iter(part, QUOTED_PREFIX.as_bytes()).find_map(|at| {
            let before = part[..at].trim_ascii_end().strip_suffix(b":")?;
            before.trim_ascii_end().strip_suffix(b"\"id\"")?;
            let rest = &part[at + QUOTED_PREFIX.len()..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if rest.get(digits) != Some(&b'"') {
                return None;
            }
            std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
        })
    })
}

/// Reads the child's stdout: answers to raw calls go to their callers, every other line to
/// rmcp. A line longer than `max_line` is discarded: the raw call it answers fails with
/// [`RelayError::TooLarge`]; anything else is dropped with a warning (a request of rmcp's it
/// answered times out). At the end (the child exited), pending raw calls fail and rmcp sees its
/// input end.
async fn read_child(
    stdout: ChildStdout,
    mut to_rmcp: tokio::io::WriteHalf<DuplexStream>,
    table: Arc<Table>,
    max_line: usize,
) {
    let mut read = BufReader::new(stdout);
    let mut line = Vec::new();
    let mut tail = Vec::with_capacity(TAIL);
    loop {
        match read_bounded(&mut read, &mut line, &mut tail, max_line).await {
            Ok(Got::End) | Err(_) => break,
            Ok(Got::Line) => {}
            Ok(Got::TooLong) => {
                let n = long_answer_number(&line, &tail);
                tracing::warn!(target: "tollgate::mcp", limit = max_line, call = ?n, "a line from the server is longer than max_server_message_bytes; discarded");
                if let Some(tx) = n.and_then(|n| table.calls.lock().remove(&n)) {
                    let _ = tx.send(Err(RelayError::TooLarge(max_line)));
                }
                // Not kept: a long line must not stay allocated until the next long line.
                line = Vec::new();
                continue;
            }
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if let Some(n) = raw_answer_number(text) {
            match table.calls.lock().remove(&n) {
                Some(tx) => {
                    let _ = tx.send(Ok(text.to_vec()));
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

    /// Reads every line of `input` through a reader whose buffer holds `cap` bytes.
    fn read_all(input: &[u8], cap: usize, limit: usize) -> Vec<(Got, Vec<u8>, Vec<u8>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut read = BufReader::with_capacity(cap, input);
            let (mut line, mut tail) = (Vec::new(), Vec::new());
            let mut out = Vec::new();
            loop {
                let got = read_bounded(&mut read, &mut line, &mut tail, limit)
                    .await
                    .unwrap();
                if got == Got::End {
                    return out;
                }
                out.push((got, line.clone(), tail.clone()));
            }
        })
    }

    #[test]
    fn a_line_over_the_limit_is_consumed_but_only_its_head_and_tail_kept() {
        let long = format!(
            "{{\"result\":\"{}\",\"id\":\"tollgate-42\"}}",
            "x".repeat(5000)
        );
        let input = format!("short\n{long}\nafter\nlast without newline");
        let lines = read_all(input.as_bytes(), 64, 100);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].0, Got::Line);
        assert_eq!(lines[0].1, b"short\n");
        assert_eq!(lines[1].0, Got::TooLong);
        assert_eq!(lines[1].1, &long.as_bytes()[..100]);
        assert_eq!(
            lines[1].2,
            format!("{}\n", &long[long.len() - (TAIL - 1)..]).as_bytes()
        );
        assert_eq!(long_answer_number(&lines[1].1, &lines[1].2), Some(42));
        assert_eq!((lines[2].0, &lines[2].1[..]), (Got::Line, &b"after\n"[..]));
        assert_eq!(
            (lines[3].0, &lines[3].1[..]),
            (Got::Line, &b"last without newline"[..])
        );
        // Exactly at the limit is a line; one byte more is not.
        let at = read_all(
            format!("{}\n{}\n", "a".repeat(100), "b".repeat(101)).as_bytes(),
            7,
            100,
        );
        assert_eq!((at[0].0, at[1].0), (Got::Line, Got::TooLong));
    }

    #[test]
    fn the_id_of_a_long_answer_is_found_only_as_a_gateway_id_key() {
        for (head, tail, want) in [
            (
                &br#"{"jsonrpc":"2.0","id":"tollgate-7","result":{"#[..],
                &b""[..],
                Some(7),
            ),
            (br#"{"jsonrpc":"2.0","id" : "tollgate-8","re"#, b"", Some(8)),
            (
                br#"{"result":{"content":[{"type":"text","text":"xx"#,
                br#"xx"}]},"jsonrpc":"2.0","id":"tollgate-9"}"#,
                Some(9),
            ),
            // inside a string (escaped quotes), not a key named id, or not ours
            (br#"{"result":{"text":"\"id\":\"tollgate-1\""#, b"", None),
            (br#"{"result":{"ref":"tollgate-2","#, b"", None),
            (br#"{"id":"tollgate-x","#, b"", None),
            (br#"{"id":3,"result":"#, b"", None),
        ] {
            assert_eq!(
                long_answer_number(head, tail),
                want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    proptest::proptest! {
        /// Whatever the lines and however the reader's buffer splits them: a line within the
        /// limit comes back whole, a longer one as its first `limit` and last `TAIL` bytes, and
        /// the lines after it are unaffected.
        #[test]
        fn bounded_reading_matches_splitting_by_newline(
            lines in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..300), 1..8),
            cap in 1usize..64,
            limit in 1usize..200,
        ) {
            let lines: Vec<Vec<u8>> = lines
                .into_iter()
                .map(|l| l.into_iter().filter(|&b| b != b'\n').collect())
                .collect();
            let mut input = Vec::new();
            for l in &lines {
                input.extend_from_slice(l);
                input.push(b'\n');
            }
            let got = read_all(&input, cap, limit);
            proptest::prop_assert_eq!(got.len(), lines.len());
            for (l, (kind, head, tail)) in lines.iter().zip(got) {
                let mut whole = l.clone();
                whole.push(b'\n');
                if l.len() <= limit {
                    proptest::prop_assert_eq!(kind, Got::Line);
                    proptest::prop_assert_eq!(head, whole);
                } else {
                    proptest::prop_assert_eq!(kind, Got::TooLong);
                    proptest::prop_assert_eq!(&head[..], &l[..limit]);
                    let keep = TAIL.min(whole.len() - limit);
                    proptest::prop_assert!(tail.len() <= TAIL);
                    proptest::prop_assert_eq!(&whole[whole.len() - tail.len()..], &tail[..]);
                    proptest::prop_assert!(tail.len() >= keep);
                }
            }
        }
    }
}
