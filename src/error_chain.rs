//! An error with its sources, for messages that must say why: the TLS clients' drivers (reqwest
//! for the MCP gateway's HTTP servers, the PostgreSQL driver) put the cause of a failed
//! handshake in a source, not in their own message ("error performing TLS handshake").

/// `e` and its sources, `: `-separated; a source whose text the message already holds (some
/// layers repeat their source's message in their own) is not repeated.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}
