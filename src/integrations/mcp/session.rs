//! One client connection: one [`Run`], `tools/list` filtered by the run's role, every
//! `tools/call` decided by the guard before it reaches a downstream server.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelledNotificationParam,
    ContentBlock, Implementation, ListToolsResult, PaginatedRequestParams, ResourceContents,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::Shared;
use super::abandon::Abandon;
use super::cancel::{Cause, ClientCancels, Stop};
use super::pending::Pending;
use crate::audit::SecretFinder;
use crate::escalation::{ApprovalRequest, RequestState};
use crate::flow::Output;
use crate::{Delivery, Outcome, Permit, Run, ToolCall, Verdict};

/// The MCP server side of one client connection (cloned for the stdio fast path: the clones
/// share the run and its pending calls).
#[derive(Clone)]
pub(crate) struct Session {
    shared: Arc<Shared>,
    run: Arc<Run>,
    pending: Arc<Pending>,
    /// The typed-path calls in flight, each with the token that says its client cancelled it
    /// (rmcp's own token of a call also fires when the session ends: see `cancel`).
    client_cancels: Arc<ClientCancels>,
    /// The calls in flight, and the `notifications/cancelled` being sent for the ones stopped:
    /// what the end of a stdio session waits for ([`Session::ended`]).
    calls: TaskTracker,
}

/// How long the end of a stdio session waits for its stopped calls to be recorded and their
/// servers told (they take a task switch, a typed-path call rmcp stopped [`CLIENT_CANCEL_GRACE`]
/// more, plus the notification's write); only a call stuck elsewhere (an audit sink or a
/// credential provider that does not answer, a server that does not read its notification) waits
/// it out, and is then left to the runtime's shutdown.
///
/// [`CLIENT_CANCEL_GRACE`]: super::cancel::CLIENT_CANCEL_GRACE
const SESSION_END_WAIT: Duration = Duration::from_secs(5);

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, run: Arc<Run>) -> Self {
        Self {
            shared,
            run,
            pending: Arc::default(),
            client_cancels: Arc::default(),
            calls: TaskTracker::new(),
        }
    }

    /// Counts a call in flight until the token is dropped (taken before the call's task is
    /// spawned, so a session that ends meanwhile waits for it).
    pub(crate) fn track(&self) -> TaskTrackerToken {
        self.calls.token()
    }

    /// The client's session ended and its calls in flight were told to stop: waits (at most
    /// [`SESSION_END_WAIT`]) until they are done, recorded, and their servers sent
    /// `notifications/cancelled`. `tollgate mcp` closes its servers and exits right after.
    pub(crate) async fn ended(&self) {
        self.calls.close();
        if tokio::time::timeout(SESSION_END_WAIT, self.calls.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                target: "tollgate::mcp",
                calls = self.calls.len(),
                "the session ended with calls still running after {SESSION_END_WAIT:?}; not waited for"
            );
        }
    }
}

/// A tool error result with one text block.
fn tool_error(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// The answer to a call that was stopped: built for the types' sake, never sent (the client
/// is not answered for a request it cancelled: rmcp drops the typed path's answer, the fast
/// path writes none; nor over a session that ended).
fn stopped_answer(cause: Cause) -> CallToolResult {
    tool_error(cause.outcome())
}

/// Completes the permit of a call that was stopped, recorded as what happened: its audit
/// outcome is an error saying the client cancelled it, or that the client's session ended.
fn stopped(permit: Permit<'_>, cause: Cause) -> CallToolResult {
    let _ = permit.complete(Outcome::error(cause.outcome()));
    stopped_answer(cause)
}

/// How a forwarded call's wait ended.
enum Ended<T> {
    /// The server answered (or the call failed, or passed the call timeout).
    Done(T),
    /// The kill switch stopped the run.
    Killed,
    /// The client cancelled its request, or its session ended.
    Stopped(Cause),
}

/// The answer to an escalated call the gateway does not wait for (any longer).
fn pending_answer(request: &ApprovalRequest) -> CallToolResult {
    let mut r = tool_error(format!(
        "approval pending (id {}): a human must approve this call. Retry the same call with the \
         same arguments once it is approved; it then runs exactly once.",
        request.id
    ));
    r.structured_content = Some(json!({
        "tollgate": { "status": "approval_pending", "approval_id": request.id.to_string() }
    }));
    r
}

/// Feeds everything written to it into a SHA-256 and counts the bytes: the result is hashed
/// while it is serialised, without building its JSON text first.
struct HashWriter {
    hash: Sha256,
    len: usize,
}

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hash.update(buf);
        self.len += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A digest of a result for the audit trail: which output it was, without its content (the
/// content may carry data above the trail's tier). The same bytes as hashing
/// `serde_json::to_vec(&result.content)` followed by the structured content's JSON text.
fn digest(result: &CallToolResult) -> String {
    let mut w = HashWriter {
        hash: Sha256::new(),
        len: 0,
    };
    if serde_json::to_writer(&mut w, &result.content).is_err() {
        // Content that cannot be serialised is hashed as nothing, as before (never reached
        // for content that came in as JSON).
        w = HashWriter {
            hash: Sha256::new(),
            len: 0,
        };
    }
    let content_bytes = w.len;
    if let Some(s) = &result.structured_content {
        // `Value`'s serialisation cannot fail.
        let _ = serde_json::to_writer(&mut w, s);
    }
    format!(
        "sha256:{} ({content_bytes} content bytes)",
        crate::hex::encode(&w.hash.finalize())
    )
}

/// Replaces every occurrence of `secret` in a result (every string of its content, structured
/// content and metadata, and every object key) with a placeholder: a server that echoes its
/// credential must not hand it to the client. The secret is found the way the audit trail finds
/// it ([`SecretFinder`]: as given, percent-encoded, JSON-escaped, in any mixture). A result that
/// cannot be rewritten is replaced by an error.
fn scrub(result: CallToolResult, secret: &str) -> CallToolResult {
    if secret.is_empty() {
        return result;
    }
    let withheld = || tool_error("the result could not be checked for credentials and is withheld");
    let Ok(mut value) = serde_json::to_value(&result) else {
        return withheld();
    };
    if !scrub_value(&mut value, &SecretFinder::new(&[secret])) {
        return result;
    }
    serde_json::from_value(value).unwrap_or_else(|_| withheld())
}

/// Scrubs every string and object key in `value` in place; whether anything changed.
fn scrub_value(value: &mut Value, finder: &SecretFinder<'_>) -> bool {
    match value {
        Value::String(s) => match finder.scrub(s) {
            Some(clean) => {
                *s = clean;
                true
            }
            None => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| scrub_value(v, finder) | changed),
        Value::Object(map) => {
            let renamed: Vec<(String, String)> = map
                .keys()
                .filter_map(|k| finder.scrub(k).map(|clean| (k.clone(), clean)))
                .collect();
            let mut changed = !renamed.is_empty();
            for (old, clean) in renamed {
                if let Some(v) = map.remove(&old) {
                    map.insert(clean, v);
                }
            }
            for v in map.values_mut() {
                changed |= scrub_value(v, finder);
            }
            changed
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A text for the client with the call's credential cut out (a downstream error message may
/// quote the request it refused).
fn scrub_text(text: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => SecretFinder::new(&[s]).scrub(&text).unwrap_or(text),
        _ => text,
    }
}

/// The texts of one content block the flow index must see: every textual part of it. A text
/// block's text; an embedded resource's text (a blob is opaque: its URI only, the output is still
/// labelled); a resource link's URI, name, title and description; an image or audio block has no
/// text. Any block's `_meta` as JSON text, and a block of a kind this code does not know as its
/// whole JSON text (fail closed: unknown content is indexed, never skipped).
fn observe<'r>(block: &'r ContentBlock, texts: &mut Vec<Cow<'r, str>>) {
    let meta = match block {
        ContentBlock::Text(t) => {
            texts.push(Cow::Borrowed(t.text.as_str()));
            t.meta.as_ref()
        }
        ContentBlock::Resource(r) => {
            match &r.resource {
                ResourceContents::TextResourceContents {
                    uri, text, meta, ..
                } => {
                    texts.push(Cow::Borrowed(uri.as_str()));
                    texts.push(Cow::Borrowed(text.as_str()));
                    if let Some(m) = meta {
                        texts.push(json(m));
                    }
                }
                ResourceContents::BlobResourceContents { uri, meta, .. } => {
                    texts.push(Cow::Borrowed(uri.as_str()));
                    if let Some(m) = meta {
                        texts.push(json(m));
                    }
                }
                other => texts.push(json(other)),
            }
            r.meta.as_ref()
        }
        ContentBlock::ResourceLink(l) => {
            texts.push(Cow::Borrowed(l.uri.as_str()));
            texts.push(Cow::Borrowed(l.name.as_str()));
            texts.extend(l.title.as_deref().map(Cow::Borrowed));
            texts.extend(l.description.as_deref().map(Cow::Borrowed));
            l.meta.as_ref()
        }
        ContentBlock::Image(i) => i.meta.as_ref(),
        ContentBlock::Audio(a) => a.meta.as_ref(),
        other => {
            texts.push(json(other));
            None
        }
    };
    if let Some(m) = meta {
        texts.push(json(m));
    }
}

/// A value as JSON text for the flow index (a value that cannot be serialised is indexed as a
/// marker text rather than skipped).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> Cow<'static, str> {
    Cow::Owned(
        serde_json::to_string(value)
            .unwrap_or_else(|_| "[content that could not be serialised]".to_owned()),
    )
}

/// First text block of a result, bounded, for an error outcome's message.
fn first_text(result: &CallToolResult) -> String {
    let t = result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.as_str()))
        .unwrap_or("tool reported an error");
    t.chars().take(500).collect()
}

impl Session {
    /// Decides, and if allowed forwards, one call (the typed path's `call_tool` and the stdio
    /// fast path both run this). `stop` fires when the client cancels its request
    /// (`notifications/cancelled`) or when the client's session ends: the call is then not
    /// forwarded if it was not yet, and abandoned (the server told, the permit completed as
    /// stopped, saying which of the two) if it was. Its answer is then not for the client.
    pub(crate) async fn call(
        &self,
        request: CallToolRequestParams,
        call_id: &str,
        stop: &Stop<'_>,
    ) -> CallToolResult {
        let shared = &*self.shared;
        let guard = &*shared.guard;
        let run: &Run = &self.run;
        let name: &str = &request.name;
        // A copy: the permit borrows the arguments the guard saw until it is completed, after
        // the forwarded call (which owns its own).
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let call = ToolCall::new(name, &args).with_call_id(call_id);

        // A retry of a call answered "pending": resume it if approved, answer pending again if
        // nobody decided yet; anything else goes through the guard as a new call.
        let hash = guard.approvals().and_then(|q| q.args_hash(&args).ok());
        let resumed = match hash.as_ref().and_then(|h| self.pending.take(name, h)) {
            Some(req) => {
                let state = guard
                    .approvals()
                    .and_then(|q| q.status(&req.id).ok())
                    .map(|s| s.state);
                match state {
                    Some(RequestState::Pending) => {
                        return Box::pin(self.await_escalation(
                            run,
                            &call,
                            req,
                            hash,
                            request.arguments,
                            stop,
                        ))
                        .await;
                    }
                    _ => Some(guard.resume(run, &call, &req.ticket())),
                }
            }
            None => None,
        };
        let verdict = match resumed {
            Some(v) => v,
            None => guard.check(run, &call),
        };
        let permit = match verdict {
            Verdict::Allow(p) => p,
            Verdict::Deny(d) => return tool_error(d.agent_message()),
            Verdict::Escalate(req) => {
                return Box::pin(self.await_escalation(
                    run,
                    &call,
                    *req,
                    hash,
                    request.arguments,
                    stop,
                ))
                .await;
            }
        };
        self.forward(permit, name, request.arguments, stop).await
    }

    /// Waits for an escalated call's approval up to the configured time; answers "pending"
    /// (and remembers the call for its retry) if it is still undecided by then.
    ///
    /// A call the client cancels (before or while it waits), or whose session ends meanwhile,
    /// is not forwarded, whatever the approver decides, and not remembered: its approval request
    /// stays in the queue, and the same call sent again is a new call that needs its own
    /// approval (a grant given for a call its client withdrew does not run a later one).
    async fn await_escalation(
        &self,
        run: &Run,
        call: &ToolCall<'_>,
        req: ApprovalRequest,
        hash: Option<crate::escalation::ArgsHash>,
        arguments: Option<rmcp::model::JsonObject>,
        stop: &Stop<'_>,
    ) -> CallToolResult {
        let guard = &*self.shared.guard;
        let wait = self.shared.section.escalation_wait();
        if stop.is_stopped() {
            return self.forget_stopped(&req, stop.cause().await);
        }
        if !wait.is_zero() {
            // Biased: a cancellation already seen wins over an approval ready at the same time.
            let waited = tokio::select! {
                biased;
                () = stop.stopped() => return self.forget_stopped(&req, stop.cause().await),
                w = tokio::time::timeout(wait, guard.wait_and_resume(run, call, &req)) => w,
            };
            if let Ok(verdict) = waited {
                return match verdict {
                    Verdict::Allow(p) => self.forward(p, call.tool(), arguments, stop).await,
                    Verdict::Deny(d) => tool_error(d.agent_message()),
                    // A resumed call is not escalated again; if it were, it is pending anew.
                    Verdict::Escalate(r) => {
                        self.remember(call.tool(), hash, (*r).clone());
                        pending_answer(&r)
                    }
                };
            }
        }
        let answer = pending_answer(&req);
        self.remember(call.tool(), hash, req);
        answer
    }

    /// A call stopped while it was escalated (the client cancelled it, or its session ended):
    /// nothing forwarded, nothing remembered for a retry.
    fn forget_stopped(&self, req: &ApprovalRequest, cause: Cause) -> CallToolResult {
        tracing::info!(
            target: "tollgate::mcp",
            approval_id = %req.id,
            reason = cause.abandon_reason(),
            "a call waiting for approval was stopped; it will not be forwarded"
        );
        stopped_answer(cause)
    }

    fn remember(
        &self,
        tool: &str,
        hash: Option<crate::escalation::ArgsHash>,
        req: ApprovalRequest,
    ) {
        if let Some(h) = hash {
            self.pending.insert(tool, h, req);
        }
    }

    /// Runs a permitted call on its downstream server and completes the permit with the result.
    /// A call stopped (the client cancelled it, or its session ended) before it was sent is not
    /// sent; one stopped while the server runs it is abandoned (the server gets
    /// `notifications/cancelled`). Either way the permit is completed as stopped, saying why.
    async fn forward(
        &self,
        permit: Permit<'_>,
        name: &str,
        arguments: Option<rmcp::model::JsonObject>,
        stop: &Stop<'_>,
    ) -> CallToolResult {
        if stop.is_stopped() {
            return stopped(permit, stop.cause().await);
        }
        let Some((server, theirs)) = self.shared.route(name) else {
            // Permitted by the policy but served by no downstream server (or it is down and
            // never listed its tools).
            let _ = permit.complete(Outcome::error(
                "no downstream MCP server provides this tool",
            ));
            return tool_error("tool not available");
        };
        // The server's credential, minted under this permit: in the request, never in the answer.
        let mut secret: Option<String> = None;
        let mut meta = None;
        let _credential = match server.credential() {
            None => None,
            Some(spec) => {
                let run = permit.run();
                let resource = spec.resource_for(run.context().compartment().map(|c| c.as_str()));
                let minted = match permit.credential_async(&spec.provider, &resource).await {
                    Ok(c) => c,
                    Err(e) => {
                        let msg = format!("no credential for this call: {e}");
                        let _ = permit.complete(Outcome::error(msg.clone()));
                        return tool_error(msg);
                    }
                };
                match minted.expose(&permit, &resource) {
                    Ok(value) => {
                        let mut m = rmcp::model::RequestMetaObject::new();
                        m.0.insert(spec.meta_key().to_owned(), Value::String(value.to_owned()));
                        meta = Some(m);
                        secret = Some(value.to_owned());
                    }
                    Err(e) => {
                        let msg = format!("no credential for this call: {e}");
                        let _ = permit.complete(Outcome::error(msg.clone()));
                        return tool_error(msg);
                    }
                }
                Some(minted)
            }
        };
        if stop.is_stopped() {
            // Stopped while its credential was minted: not sent.
            return stopped(permit, stop.cause().await);
        }
        let cancel = permit.cancellation();
        // Bounded by the call timeout and stopped by the kill switch, both looked at on the
        // gateway's shared tick (see `ticker`: no timer of its own per call). The first look is
        // one tick in: the guard looked at the switch when it decided, and `forwarded` (polled
        // first) has sent the request before a first tick could come. A call given up on is
        // dropped with its reason set: the server is sent `notifications/cancelled` for it (see
        // `abandon`). The client's own cancellation, or its session's end, ends the wait at once
        // (the token wakes this task; telling the two apart may take `cancel`'s short grace),
        // with the same notification to the server, its reason saying which.
        let deadline = tokio::time::Instant::now() + server.call_timeout();
        let ticking = self.shared.ticker.register();
        let abandon = Abandon::new(&self.calls);
        let ended = {
            // Dropped at the end of this block: a call given up on is gone before its outcome.
            let mut forwarded = std::pin::pin!(server.call(&theirs, arguments, meta, &abandon));
            let mut stopping = std::pin::pin!(stop.stopped());
            loop {
                tokio::select! {
                    biased;
                    r = &mut forwarded => break Ended::Done(r),
                    () = &mut stopping => {
                        let cause = stop.cause().await;
                        abandon.stopped(cause);
                        break Ended::Stopped(cause);
                    }
                    () = ticking.next() => {
                        if cancel.is_cancelled() {
                            abandon.killed();
                            break Ended::Killed;
                        }
                        if tokio::time::Instant::now() >= deadline {
                            abandon.timed_out(server.call_timeout());
                            break Ended::Done(Err(server.timed_out()));
                        }
                    }
                }
            }
        };
        drop(ticking);
        let result = match ended {
            Ended::Done(r) => r,
            Ended::Killed => {
                let _ = permit.complete(Outcome::error("cancelled: the kill switch holds the run"));
                return tool_error("suspended: the call was stopped by the kill switch");
            }
            Ended::Stopped(cause) => {
                tracing::info!(target: "tollgate::mcp", reason = cause.abandon_reason(), "a forwarded call was stopped");
                return stopped(permit, cause);
            }
        };
        let result = match result {
            Ok(r) => match &secret {
                Some(secret) => scrub(r, secret),
                None => r,
            },
            Err(e) => {
                // The trail scrubs the run's secrets itself; the client's copy is scrubbed here.
                let msg = e.to_string();
                let _ = permit.complete(Outcome::error(msg.clone()));
                return tool_error(scrub_text(msg, secret.as_deref()));
            }
        };
        // The result is an output the model reads: through the flow index first.
        let delivery = self.deliver(&permit, &result);
        let outcome = if result.is_error == Some(true) {
            Outcome::error(first_text(&result))
        } else {
            Outcome::success()
        }
        .with_output(digest(&result));
        let recorded = permit.complete(outcome);
        match (delivery, recorded) {
            (Ok(Delivery::Show), Ok(())) => result,
            (Ok(Delivery::Withhold(text)), Ok(())) => tool_error(text),
            // Not recorded, or not indexed: the model must not see what the trail lacks.
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "audit refused a tool result; withheld");
                tool_error("the result could not be recorded and is withheld")
            }
        }
    }

    fn deliver(
        &self,
        permit: &Permit<'_>,
        result: &CallToolResult,
    ) -> Result<Delivery, crate::audit::AuditError> {
        if let Some(s) = &result.structured_content {
            let d = permit.deliver(Output::Json(s))?;
            if d != Delivery::Show {
                return Ok(d);
            }
        }
        let mut texts: Vec<Cow<'_, str>> = Vec::with_capacity(result.content.len());
        for block in &result.content {
            observe(block, &mut texts);
        }
        // The result's own `_meta` reaches the client too.
        if let Some(meta) = &result.meta {
            texts.push(json(meta));
        }
        if texts.is_empty() && result.structured_content.is_some() {
            return Ok(Delivery::Show);
        }
        // Even an output with no text at all (an image) is delivered: it is in the index, labelled.
        permit.deliver(Output::Text(&texts.join("\n")))
    }
}

impl ServerHandler for Session {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Tools behind a tollgate gateway: each call is checked against a policy; a \
                 refused call answers with the reason, a call needing approval with its id.",
        )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Told when the tools this client may see change.
        self.shared
            .clients
            .register(context.peer, &self.shared, &self.run);
    }

    async fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        _context: NotificationContext<RoleServer>,
    ) {
        // rmcp has cancelled the request's `ct` already (if it is a typed-path request in
        // flight); this says it was the client's doing, not its session's end.
        if let Some(id) = &notification.request_id {
            self.client_cancels.cancel(id);
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools = self.shared.listing(&self.run);
        self.shared.clients.listed(&self.run, &tools);
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let id: Cow<'_, str> = match serde_json::to_value(&context.id) {
            Ok(Value::String(s)) => s.into(),
            Ok(v) => v.to_string().into(),
            Err(_) => "".into(),
        };
        // Boxed: rmcp spawns this handler's future as a task and moves it several times on the
        // way (and tokio copies it again when it completes); the whole call's state machine
        // inline made those copies the largest per-call cost of the gateway (measured with
        // callgrind: ~110k instructions of memcpy per call). On the heap it is moved once.
        // rmcp cancels `context.ct` when the client's `notifications/cancelled` names this
        // request (and then drops the answer), and when the session ends with the call running;
        // `client` is cancelled in the first case only (by `on_cancelled`), so the record says
        // which happened.
        let client = self.client_cancels.watch(context.id.clone());
        let stop = Stop::by_rmcp(&context.ct, client.token());
        // The end of a stdio session waits for this call once rmcp stopped it, so that it is
        // recorded and its server told before `tollgate mcp` closes its servers and exits.
        let _tracked = self.track();
        Ok(CallToolResponse::Complete(
            Box::pin(self.call(request, &id, &stop)).await,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit record names a result by this digest; hashing while serialising must give the
    /// same value as hashing the serialised content and then the structured content's text, or
    /// records written before and after this change would disagree about the same output.
    #[test]
    fn streamed_result_digest_matches_the_serialised_bytes() {
        let mut result = CallToolResult::success(vec![
            ContentBlock::text("first \"quoted\" line\nsecond"),
            ContentBlock::text("ünïcode"),
        ]);
        result.structured_content = Some(json!({"b": [1, 2.5, null], "a": {"x": "y"}}));
        let content = serde_json::to_vec(&result.content).unwrap();
        let mut h = Sha256::new();
        h.update(&content);
        h.update(
            result
                .structured_content
                .as_ref()
                .unwrap()
                .to_string()
                .as_bytes(),
        );
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            digest(&result),
            format!("sha256:{hex} ({} content bytes)", content.len())
        );
        let plain = CallToolResult::success(vec![ContentBlock::text("x")]);
        let bytes = serde_json::to_vec(&plain.content).unwrap();
        let hex: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest(&plain),
            format!("sha256:{hex} ({} content bytes)", bytes.len())
        );
    }
}
