//! An agent gets a token (a JWT signed with Ed25519) for one matter's documents, uses it, is
//! refused with it on another matter, and sees it revoked when the run ends: the document
//! service, which holds only public keys, refuses the token from then on, even a copy taken
//! before. Run with `cargo run --example scoped_credentials`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::credential::token::SigningKey;
use tollgate::credential::{CredentialBroker, CredentialGrant, JwtProvider, Operation};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let boundary = ActionBoundary::builder()
        .tool(
            "read_document",
            ToolSpec::read()
                .compartment_arg("matter_id")
                .arg("matter_id", Arg::string().required())
                .arg("path", Arg::string().required()),
        )
        .role("intake_agent", RoleSpec::new().tools(["read_document"]))
        .build()?;

    // The document service holds the verifier: public keys only, and the revocation list. A
    // service in another language would load `tokens.jwks_json()` into its JWT library instead
    // and poll `tokens.revocation_list().export_json(now)`.
    let tokens = JwtProvider::new(SigningKey::generate("docs-2026-11")?, "document-service");
    let document_service = tokens.verifier();
    println!("JWKS     {}", tokens.jwks_json());
    let broker = CredentialBroker::builder()
        .provider("documents", tokens)
        .grant(
            "intake_agent",
            CredentialGrant::new(
                "documents",
                ["read_document"],
                [Operation::Read],
                "matter/{compartment}/*",
                Duration::from_secs(300),
            )
            .max_uses(20),
        )
        .build()?;
    let audit = Arc::new(MemorySink::new());
    let guard = Guard::builder(boundary)
        .audit(audit.clone())
        .credentials(broker)
        .build()?;

    let run =
        guard.start_run(RunContext::new("intake-bot", "intake_agent").in_compartment("M-1001"))?;
    let args = r#"{"matter_id": "M-1001", "path": "intake/questionnaire.pdf"}"#;
    let call = ToolCall::new("read_document", args);
    let Verdict::Allow(permit) = guard.check(&run, &call) else {
        return Err("the call should be allowed".into());
    };

    // 1. A token for this matter's documents only, valid 5 minutes.
    let cred = permit.credential("documents", "matter/M-1001/*")?;
    println!("issued   {cred}");

    // 2. The tool uses it; the document service verifies it.
    let token = cred.expose(&permit, "matter/M-1001/intake/questionnaire.pdf")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = document_service.verify(token, now)?;
    println!(
        "verified by the document service: jti {} sub {} resource {} tools {:?} exp {}",
        claims.jti, claims.sub, claims.resource, claims.tools, claims.exp
    );
    let copied = token.to_owned(); // what a misbehaving tool might keep

    // 3. The same credential on another matter: refused.
    match cred.expose(&permit, "matter/M-2002/settlement.pdf") {
        Err(e) => println!("refused  {e}"),
        Ok(_) => return Err("another matter must be refused".into()),
    }
    // ... and a wider credential cannot even be minted.
    match permit.credential("documents", "matter/*") {
        Err(e) => println!("refused  {e}"),
        Ok(_) => return Err("a wider scope must be refused".into()),
    }
    permit.complete(Outcome::success())?;

    // 4. The run ends: its credentials are revoked, with no cleanup code.
    run.finish()?;
    println!("revoked after the run ended: {}", cred.is_revoked());
    match document_service.verify(&copied, now) {
        Err(e) => println!("refused  the copied token: {e}"),
        Ok(_) => return Err("a revoked token must not verify".into()),
    }

    println!("\naudit trail (credential events):");
    for e in audit.events().iter().filter(|e| {
        e["event"]
            .as_str()
            .is_some_and(|k| k.starts_with("credential"))
    }) {
        println!("  {e}");
    }
    Ok(())
}
