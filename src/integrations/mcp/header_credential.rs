//! Per-call credentials in an HTTP header, for streamable-HTTP downstream servers that
//! authenticate requests by header (`Authorization: Bearer ...`, `X-Api-Key: ...`) rather than
//! by the request's `_meta`.
//!
//! The session mints the credential under the call's permit and puts it in the forwarded
//! request's `_meta` as for every server; this wrapper of rmcp's HTTP client then lifts it out
//! of the `tools/call` request it is about to POST and sends it as the configured header of that
//! one request instead. So the credential is scoped exactly as before (one permit, one call),
//! never sits in the transport's fixed configuration, and is never in the body the server
//! reads. Every other request (`initialize`, `tools/list`, notifications, the event stream)
//! carries no credential.

use std::collections::HashMap;
use std::sync::Arc;

use futures_core::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;

/// Where the lifted credential goes.
#[derive(Clone)]
enum Target {
    /// `Authorization: Bearer <credential>` (rmcp's own bearer-token parameter).
    Bearer,
    /// `<name>: <credential>`.
    Header(HeaderName),
}

/// An rmcp HTTP client that moves the per-call credential from a `tools/call` request's `_meta`
/// into a header of that request.
#[derive(Clone)]
pub(crate) struct HeaderCredential<C> {
    inner: C,
    meta_key: Arc<str>,
    target: Target,
}

impl<C: StreamableHttpClient> HeaderCredential<C> {
    /// Wraps `inner`: the value at `meta_key` of a call's `_meta` goes to header `header`
    /// (`Authorization` as a bearer token). `header` is validated with the document.
    pub(crate) fn new(inner: C, meta_key: &str, header: &str) -> Result<Self, String> {
        let target = if header.eq_ignore_ascii_case("authorization") {
            Target::Bearer
        } else {
            Target::Header(
                HeaderName::from_bytes(header.as_bytes())
                    .map_err(|e| format!("`{header}` is not an HTTP header name: {e}"))?,
            )
        };
        Ok(Self {
            inner,
            meta_key: meta_key.into(),
            target,
        })
    }

    /// Takes the credential out of `message` (if it is a `tools/call` carrying one) and puts it
    /// where [`Target`] says. A credential that cannot be a header value stops the request
    /// (neither sent in the header nor left in the body).
    fn lift(
        &self,
        message: &mut ClientJsonRpcMessage,
        auth: &mut Option<String>,
        headers: &mut HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<C::Error>> {
        let JsonRpcMessage::Request(request) = message else {
            return Ok(());
        };
        let ClientRequest::CallToolRequest(call) = &mut request.request else {
            return Ok(());
        };
        let Some(meta) = call.params.meta.as_mut() else {
            return Ok(());
        };
        let Some(value) = meta.0.remove(self.meta_key.as_ref()) else {
            return Ok(());
        };
        if meta.0.is_empty() {
            call.params.meta = None;
        }
        let serde_json::Value::String(secret) = value else {
            return Err(refused("the credential is not a string"));
        };
        match &self.target {
            Target::Bearer => *auth = Some(secret),
            Target::Header(name) => {
                let mut value = HeaderValue::from_str(&secret)
                    .map_err(|_| refused("the credential is not a valid HTTP header value"))?;
                value.set_sensitive(true);
                headers.insert(name.clone(), value);
            }
        }
        Ok(())
    }
}

fn refused<E: std::error::Error + Send + Sync + 'static>(
    why: &'static str,
) -> StreamableHttpError<E> {
    StreamableHttpError::UnexpectedServerResponse(format!("request not sent: {why}").into())
}

impl<C: StreamableHttpClient + Sync> StreamableHttpClient for HeaderCredential<C> {
    type Error = C::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        mut message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        mut auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.lift(&mut message, &mut auth_header, &mut custom_headers)?;
        self.inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        mut message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        mut auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.lift(&mut message, &mut auth_header, &mut custom_headers)?;
        self.inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        mut message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        mut auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.lift(&mut message, &mut auth_header, &mut custom_headers)?;
        self.inner
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}
