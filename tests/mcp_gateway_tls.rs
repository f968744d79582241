//! The gateway in front of a real `https://` downstream MCP server (rmcp's streamable-HTTP server
//! behind tokio-rustls, its CA and certificates generated here with rcgen): a server signed by
//! the document's `ca_file` is listed and called; a certificate that does not verify (unknown
//! CA, another host's name, expired) leaves the server unavailable with the certificate error
//! named, never a fallback to plain http and never a crash; and the document refuses a missing
//! or non-PEM `ca_file` and plain http to a non-loopback host when it is loaded.
#![cfg(feature = "mcp")]

mod common;

use std::path::Path;

use common::node::harness::{self, is_error, text};
use common::tls::{Ca, TlsMcpServer};
use common::tls_gateway::{eventually, load_error, policy_text, start_error};
use serde_json::json;
use tollgate::policy::Policy;

fn ca_line(path: &Path) -> String {
    format!("ca_file = \"{}\"", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_server_signed_by_the_documents_private_ca_is_listed_and_called() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("tollgate test CA");
    let server = TlsMcpServer::start(&ca.server(&["127.0.0.1", "localhost"])).await;
    let ca_file = ca.write(dir.path(), "ca.pem");
    for host in ["127.0.0.1", "localhost"] {
        let text_policy = policy_text(&server.url(host), "10s", &ca_line(&ca_file));
        let policy = Policy::from_toml(&text_policy).expect("policy");
        let h = harness::start(&policy).await;
        // The policy's argument rule applies before the remote server is asked.
        h.assert_only_echo_is_forwarded("over tls").await;
        h.gateway.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_ca_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("the server's CA");
    let other = Ca::new("the CA the document trusts");
    let server = TlsMcpServer::start(&ca.server(&["127.0.0.1"])).await;
    // `ca_file` names another CA: only that one is trusted for this server.
    let text_policy = policy_text(
        &server.url("127.0.0.1"),
        "10s",
        &ca_line(&other.write(dir.path(), "other.pem")),
    );
    let (name, reason) = start_error(&Policy::from_toml(&text_policy).expect("policy")).await;
    assert_eq!(name, "remote");
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    // Without `ca_file`: the operating system's store, which has never heard of this CA either
    // (or, on a machine without one, no root at all: refused too).
    let text_policy = policy_text(&server.url("127.0.0.1"), "10s", "");
    let (_, reason) = start_error(&Policy::from_toml(&text_policy).expect("policy")).await;
    assert!(
        reason.contains("UnknownIssuer") || reason.contains("No CA certificates"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_host_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("tollgate test CA");
    // Signed by the trusted CA, but for another name than the one the URL connects to.
    let server = TlsMcpServer::start(&ca.server(&["elsewhere.example", "10.9.8.7"])).await;
    let ca_file = ca.write(dir.path(), "ca.pem");
    for host in ["127.0.0.1", "localhost"] {
        let text_policy = policy_text(&server.url(host), "10s", &ca_line(&ca_file));
        let (_, reason) = start_error(&Policy::from_toml(&text_policy).expect("policy")).await;
        assert!(reason.contains("not valid for name"), "{host}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("tollgate test CA");
    let expired = ca.server_with(&["127.0.0.1"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let server = TlsMcpServer::start(&expired).await;
    let text_policy = policy_text(
        &server.url("127.0.0.1"),
        "10s",
        &ca_line(&ca.write(dir.path(), "ca.pem")),
    );
    let (_, reason) = start_error(&Policy::from_toml(&text_policy).expect("policy")).await;
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_starts_presenting_an_untrusted_certificate_becomes_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("tollgate test CA");
    let impostor = Ca::new("an impostor's CA");
    let server = TlsMcpServer::start(&ca.server(&["127.0.0.1"])).await;
    let text_policy = policy_text(
        &server.url("127.0.0.1"),
        "10s",
        &ca_line(&ca.write(dir.path(), "ca.pem")),
    );
    let policy = Policy::from_toml(&text_policy).expect("policy");
    let h = harness::start(&policy).await;
    assert_eq!(
        h.text_of("echo", json!({"message": "one"})).await,
        "Echo: one"
    );

    // Every connection and session is dropped; whoever answers on that port now has a
    // certificate the document's CA never signed.
    server.present(&impostor.server(&["127.0.0.1"]));
    let mut last = None;
    eventually("the server is marked down", async || {
        let r = h.call("echo", json!({"message": "two"})).await;
        assert!(is_error(&r), "a call reached an untrusted server: {r:?}");
        last = Some(text(&r));
        h.gateway.is_up("remote") == Some(false)
    })
    .await;
    // Calls now get the unavailable error at once, and the gateway keeps serving.
    let r = h.call("echo", json!({"message": "three"})).await;
    assert!(is_error(&r), "{r:?}");
    assert!(text(&r).contains("unavailable"), "{r:?} (before: {last:?})");
    assert_eq!(h.gateway.is_up("remote"), Some(false));
    assert_eq!(h.gateway.restarts("remote"), Some(0), "never reconnected");
    // Once a reconnection attempt has been refused, calls (and so their audit records) say why.
    eventually("a call names the refused certificate", async || {
        let r = h.call("echo", json!({"message": "why"})).await;
        assert!(is_error(&r), "{r:?}");
        text(&r).contains("TLS certificate refused")
    })
    .await;
    assert!(
        h.events("outcome")
            .iter()
            .any(|e| e.to_string().contains("TLS certificate refused")),
        "the trail records the reason"
    );
    let outcomes = h.events("outcome");
    let failed = outcomes
        .iter()
        .filter(|e| e.to_string().contains("unavailable"))
        .count();
    assert!(
        failed >= 1,
        "the trail records the unavailable calls: {outcomes:?}"
    );

    // The real certificate is back: the restart loop reconnects.
    server.present(&ca.server(&["127.0.0.1"]));
    eventually("the server is reconnected", async || {
        h.gateway.is_up("remote") == Some(true)
    })
    .await;
    assert_eq!(
        h.text_of("echo", json!({"message": "four"})).await,
        "Echo: four"
    );
    assert_eq!(h.gateway.restarts("remote"), Some(1));
    h.gateway.shutdown();
}

#[test]
fn a_missing_unreadable_or_non_pem_ca_file_is_refused_when_the_document_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let url = "https://tickets.internal:8443/mcp";
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "just some text, no certificate\n").unwrap();
    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let unterminated = dir.path().join("unterminated.pem");
    std::fs::write(&unterminated, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    // Read with the client key's bounded reader: something huge is not read into memory.
    let huge = dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'#'; (1 << 20) + 1]).unwrap();
    for (file, says) in [
        (missing.as_path(), "cannot read CA file"),
        (dir.path(), "is not a regular file"),
        (huge.as_path(), "is larger than"),
        (not_pem.as_path(), "no PEM `CERTIFICATE` block"),
        (broken.as_path(), "not a usable CA certificate"),
        (unterminated.as_path(), "not valid PEM"),
    ] {
        let text_policy = policy_text(url, "10s", &ca_line(file));
        let e = load_error(&text_policy);
        assert_eq!(e.path(), Some("mcp.servers.remote.ca_file"), "{e}");
        assert!(e.to_string().contains(says), "{}: {e}", file.display());
        assert!(
            e.to_string().contains(&file.display().to_string()),
            "names the file: {e}"
        );
        // Located in the document's text, like every other document error.
        let line = text_policy
            .lines()
            .position(|l| l.starts_with("ca_file"))
            .unwrap()
            + 1;
        assert_eq!(e.location().map(|l| l.line), Some(line), "{e}");
    }
    // A readable PEM CA is accepted, and so is a bundle of them with text around the blocks.
    let ok = Ca::new("ok").write(dir.path(), "ok.pem");
    Policy::from_toml(&policy_text(url, "10s", &ca_line(&ok))).expect("a valid CA file");
    let bundle = dir.path().join("bundle.pem");
    let text = format!(
        "# the first CA\n{}\n# the second\n{}",
        Ca::new("one").pem,
        Ca::new("two").pem
    );
    std::fs::write(&bundle, text).unwrap();
    Policy::from_toml(&policy_text(url, "10s", &ca_line(&bundle))).expect("a CA bundle");
}

#[test]
fn plain_http_to_a_non_loopback_host_is_refused_unless_allowed() {
    for url in [
        "http://tickets.internal:8080/mcp",
        "http://10.0.0.7/mcp",
        "http://127.0.0.1@evil.example/mcp",
        "http://localhost.evil.example/mcp",
        "http://[::2]:80/mcp",
    ] {
        let e = load_error(&policy_text(url, "10s", ""));
        assert_eq!(e.path(), Some("mcp.servers.remote.url"), "{url}: {e}");
        assert!(e.to_string().contains("allow_plain_http"), "{e}");
        Policy::from_toml(&policy_text(url, "10s", "allow_plain_http = true"))
            .unwrap_or_else(|e| panic!("{url} with allow_plain_http: {e}"));
    }
    for url in [
        "http://127.0.0.1:9/mcp",
        "http://localhost/mcp",
        "http://[::1]:8080/mcp",
        "http://127.8.9.10/mcp",
    ] {
        Policy::from_toml(&policy_text(url, "10s", "")).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    // Settings that would mean nothing are refused rather than ignored.
    let e = load_error(&policy_text(
        "http://127.0.0.1:9/mcp",
        "10s",
        "ca_file = \"ca.pem\"",
    ));
    assert_eq!(e.path(), Some("mcp.servers.remote.ca_file"), "{e}");
    let e = load_error(&policy_text(
        "https://tickets.internal/mcp",
        "10s",
        "allow_plain_http = true",
    ));
    assert_eq!(e.path(), Some("mcp.servers.remote.allow_plain_http"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_url_to_a_plain_http_server_is_refused_never_downgraded() {
    // The same MCP server without TLS: reachable over its http:// URL ...
    let server = TlsMcpServer::start_plain().await;
    let policy =
        Policy::from_toml(&policy_text(&server.plain_url("127.0.0.1"), "10s", "")).unwrap();
    let h = harness::start(&policy).await;
    assert_eq!(
        h.text_of("echo", json!({"message": "plain"})).await,
        "Echo: plain"
    );
    h.gateway.shutdown();
    // ... but an https:// URL to it fails: the gateway never retries the call over http.
    let text_policy = policy_text(&server.url("127.0.0.1"), "10s", "");
    let (name, reason) = start_error(&Policy::from_toml(&text_policy).expect("policy")).await;
    assert_eq!(name, "remote");
    // The TLS error itself is named (a plain-HTTP answer is no TLS record).
    assert!(
        reason.contains("TLS handshake failed") && reason.contains("InvalidContentType"),
        "{reason}"
    );
}
