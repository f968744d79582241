//! Scoped credentials through the gateway: minted per permitted call under the run's grant,
//! handed to the downstream server in the request, never to the client, and refused for a call
//! no grant covers.
#![cfg(feature = "mcp")]

mod common;

use std::sync::Arc;

use common::node::harness::{self, METADATA, is_error, text};
use parking_lot::Mutex;
use secrecy::SecretString;
use serde_json::json;
use sha2::{Digest, Sha256};
use tollgate::Guard;
use tollgate::audit::MemorySink;
use tollgate::credential::{CredentialProvider, MintRequest, ProviderError};
use tollgate::integrations::mcp::Gateway;
use tollgate::policy::{Bindings, Policy};

/// Mints a fresh random-looking token per call and remembers them.
#[derive(Clone, Default)]
struct Minted(Arc<Mutex<Vec<String>>>);

impl CredentialProvider for Minted {
    fn mint(&self, _req: &MintRequest<'_>) -> Result<SecretString, ProviderError> {
        let mut all = self.0.lock();
        let token = format!("tok-{:016x}", 0x5eed_0000_u64 + all.len() as u64);
        all.push(token.clone());
        Ok(SecretString::from(token))
    }
}

fn policy(grant_tools: &str) -> Option<Policy> {
    let node = common::node::servers()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/fake_server.mjs");
    let text = format!(
        r#"{METADATA}
[tools.whoami]
effect = "read"

[tools.echo]
effect = "read"
args.message = {{ type = "string" }}

[roles.agent]
tools = ["whoami", "echo"]

[credentials.providers.api]
description = "Per-call tokens for the fake server."

[[credentials.grants]]
role = "agent"
provider = "api"
tools = {grant_tools}
operations = ["read"]
resource = "accounts/{{compartment}}/*"
ttl = "5m"

[mcp.connection]
agent = "agent-1"
role = "agent"
compartment = "A-1"

[mcp.servers.fake]
command = "{node}"
args = ["{script}"]
credential = {{ provider = "api", resource = "accounts/{{compartment}}/profile" }}
"#,
        node = node.node.display(),
        script = script.display(),
    );
    Some(Policy::from_toml(&text).expect("policy"))
}

async fn start(p: &Policy) -> (harness::Harness, Minted) {
    let minted = Minted::default();
    let audit = Arc::new(MemorySink::new());
    let guard = Arc::new(
        Guard::from_policy(
            p,
            Bindings::new()
                .audit(audit.clone())
                .provider("api", minted.clone()),
        )
        .expect("guard"),
    );
    let gateway = Arc::new(Gateway::start(p, guard).await.expect("gateway"));
    let (client, served) = harness::connect(&gateway).await;
    (
        harness::Harness {
            gateway,
            audit,
            client,
            served,
        },
        minted,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_gets_a_fresh_credential_per_call_and_the_client_never_sees_it() {
    let Some(p) = policy(r#"["whoami", "echo"]"#) else {
        return;
    };
    let (h, minted) = start(&p).await;
    let a = h.call("whoami", json!({})).await;
    let b = h.call("whoami", json!({})).await;
    assert!(!is_error(&a) && !is_error(&b), "{a:?} {b:?}");
    let tokens = minted.0.lock().clone();
    assert_eq!(tokens.len(), 2, "one credential per call");
    assert_ne!(tokens[0], tokens[1]);
    for (r, token) in [(&a, &tokens[0]), (&b, &tokens[1])] {
        let t = text(r);
        // The server received exactly the minted token (its hash proves it) ...
        let sha: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(t.contains(&format!("sha256={sha}")), "{t}");
        // ... and its echo of the token was cut out before the client saw it.
        assert!(
            !t.contains(token.as_str()),
            "the client saw the credential: {t}"
        );
    }
    // The audit trail records issue and use, never the value.
    let trail = serde_json::to_string(&h.audit.events()).unwrap();
    assert!(!trail.contains(&tokens[0]) && !trail.contains(&tokens[1]));
    assert!(
        trail.contains("credential"),
        "no credential events recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_no_grant_covers_gets_no_credential_and_does_not_run() {
    // The grant covers `whoami` only: `echo` must not run without its credential.
    let Some(p) = policy(r#"["whoami"]"#) else {
        return;
    };
    let (h, minted) = start(&p).await;
    let r = h.call("echo", json!({"message": "x"})).await;
    assert!(is_error(&r));
    assert!(text(&r).contains("no credential"), "{}", text(&r));
    assert!(minted.0.lock().is_empty());
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0]["tollgate.outcome"]["status"], "error");
}
