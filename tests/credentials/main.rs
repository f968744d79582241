//! Scoped credentials: minting within grants only, every refusal distinct, revocation when the
//! run ends (also of tokens copied out before), the kill switch, binding to the run instance,
//! JWT verification across key rotation and by independent code, and no secret in any output.
//!
//! `revocation.rs`: revocation of copied tokens, the kill switch, binding to the run instance,
//! and what a downstream service checks.

mod revocation;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::clock::{Clock, ManualClock};
use tollgate::credential::token::{SigningKey, TokenVerifier, VerifyError};
use tollgate::credential::{
    CredentialBroker, CredentialError, CredentialGrant, JwtProvider, Operation, RevocationList,
    StaticSecretProvider,
};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

const PLANTED: &str = "sk-live-PLANTED-4f9c2e7a1b";

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool("read_document", ToolSpec::read().allow_unknown_args())
        .tool("file_motion", ToolSpec::irreversible().allow_unknown_args())
        .tool("search", ToolSpec::read())
        .tool("legacy_lookup", ToolSpec::read())
        .role(
            "intake",
            RoleSpec::new().tools(["read_document", "file_motion", "search", "legacy_lookup"]),
        )
        .role("other", RoleSpec::new().tools(["read_document"]))
        .build()
        .unwrap()
}

struct Setup {
    guard: Guard,
    broker: CredentialBroker,
    sink: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    verifier: TokenVerifier,
    jwks: String,
    revocations: RevocationList,
}

fn setup_with(tokens: JwtProvider) -> Setup {
    let verifier = tokens.verifier();
    let jwks = tokens.jwks_json();
    let revocations = tokens.revocation_list().clone();
    let broker = CredentialBroker::builder()
        .provider("docs", tokens)
        .provider(
            "legacy",
            StaticSecretProvider::new(SecretString::from(PLANTED)),
        )
        .grant(
            "intake",
            CredentialGrant::new(
                "docs",
                ["read_document"],
                [Operation::Read],
                "matter/{compartment}/*",
                Duration::from_secs(300),
            )
            .max_uses(3),
        )
        .grant(
            "intake",
            CredentialGrant::new(
                "legacy",
                ["legacy_lookup"],
                [Operation::Read],
                "*",
                Duration::from_secs(60),
            ),
        )
        .build()
        .unwrap();
    let sink = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new());
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .clock(clock.clone())
        .credentials(broker.clone())
        .build()
        .unwrap();
    Setup {
        guard,
        broker,
        sink,
        clock,
        verifier,
        jwks,
        revocations,
    }
}

fn setup() -> Setup {
    setup_with(JwtProvider::new(
        SigningKey::generate("k1").unwrap(),
        "document-service",
    ))
}

fn unix(clock: &ManualClock) -> u64 {
    clock
        .wall()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn allow<'a>(g: &Guard, run: &'a tollgate::Run, call: &ToolCall<'a>) -> tollgate::Permit<'a> {
    match g.check(run, call) {
        Verdict::Allow(p) => p,
        other => panic!("expected allow, got {other:?}"),
    }
}

#[test]
fn minted_token_is_narrow_and_verifies_downstream() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let call = ToolCall::without_args("read_document");
    let p = allow(&s.guard, &run, &call);
    let cred = p.credential("docs", "matter/M-1/*").unwrap();
    assert_eq!(cred.scope().tools, ["read_document"]);
    assert_eq!(cred.scope().operations, [Operation::Read]);
    let token = cred.expose(&p, "matter/M-1/intake.pdf").unwrap();
    let claims = s.verifier.verify(token, unix(&s.clock)).unwrap();
    assert_eq!(claims.tools, ["read_document"]);
    assert_eq!(claims.ops, ["read"]);
    assert_eq!(claims.resource, "matter/M-1/*");
    assert_eq!(claims.run, run.id().as_str());
    assert_eq!(claims.sub, "bot");
    assert_eq!(claims.aud, "document-service");
    assert_eq!(claims.jti, cred.id().as_str());
    assert_eq!(claims.exp, unix(&s.clock) + 300);
    p.complete(Outcome::success()).unwrap();
}

#[test]
fn a_role_cannot_mint_beyond_its_grant() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let call = ToolCall::without_args("read_document");
    let p = allow(&s.guard, &run, &call);
    for resource in [
        "*",
        "matter/*",
        "matter/M-2/*",
        "matter/M-10/*",
        "matter/M-1",
        "matter/M-1/../M-2/*",
    ] {
        let e = p.credential("docs", resource).unwrap_err();
        assert!(
            matches!(
                e,
                CredentialError::NotGranted { .. } | CredentialError::InvalidResource(_)
            ),
            "{resource}: {e:?}"
        );
    }
    assert!(matches!(
        p.credential("vault", "matter/M-1/*"),
        Err(CredentialError::UnknownProvider(_))
    ));
    // a write tool cannot get the read grant's credential, another role gets nothing
    let motion = ToolCall::without_args("file_motion");
    let w = allow(&s.guard, &run, &motion);
    assert!(matches!(
        w.credential("docs", "matter/M-1/*"),
        Err(CredentialError::NotGranted {
            operation: "write",
            ..
        })
    ));
    let other = s
        .guard
        .start_run(RunContext::new("bot", "other").in_compartment("M-1"))
        .unwrap();
    let o = allow(&s.guard, &other, &call);
    assert!(matches!(
        o.credential("docs", "matter/M-1/*"),
        Err(CredentialError::NotGranted { .. })
    ));
    // a run without a compartment cannot use a {compartment} grant
    let unbound = s.guard.start_run(RunContext::new("bot", "intake")).unwrap();
    let u = allow(&s.guard, &unbound, &call);
    assert!(matches!(
        u.credential("docs", "matter/M-1/*"),
        Err(CredentialError::NotGranted { .. })
    ));
}

#[test]
fn every_misuse_is_refused_with_its_own_error() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let read = ToolCall::without_args("read_document");
    let p = allow(&s.guard, &run, &read);
    let cred = p.credential("docs", "matter/M-1/*").unwrap();

    // wrong resource
    assert!(matches!(
        cred.expose(&p, "matter/M-2/x.pdf"),
        Err(CredentialError::WrongResource(_))
    ));
    // wrong tool (a permit for another tool of the same run)
    let search = ToolCall::without_args("search");
    let q = allow(&s.guard, &run, &search);
    assert!(matches!(
        cred.expose(&q, "matter/M-1/x.pdf"),
        Err(CredentialError::WrongTool(_))
    ));
    // wrong run
    let run2 = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let p2 = allow(&s.guard, &run2, &read);
    assert!(matches!(
        cred.expose(&p2, "matter/M-1/x.pdf"),
        Err(CredentialError::WrongRun { .. })
    ));
    // over-used: max_uses = 3
    for _ in 0..3 {
        cred.expose(&p, "matter/M-1/x.pdf").unwrap();
    }
    assert_eq!(
        cred.expose(&p, "matter/M-1/x.pdf").unwrap_err(),
        CredentialError::Exhausted { max: 3 }
    );

    // expired: exactly at the TTL, not before
    let fresh = p.credential("docs", "matter/M-1/*").unwrap();
    s.clock.advance(Duration::from_secs(299));
    assert!(fresh.expose(&p, "matter/M-1/x.pdf").is_ok());
    s.clock.advance(Duration::from_secs(1));
    assert_eq!(
        fresh.expose(&p, "matter/M-1/x.pdf").unwrap_err(),
        CredentialError::Expired
    );

    // revoked
    let late = p.credential("docs", "matter/M-1/*").unwrap();
    run.revoke_credentials().unwrap();
    assert_eq!(
        late.expose(&p, "matter/M-1/x.pdf").unwrap_err(),
        CredentialError::Revoked
    );

    let codes: Vec<String> = s
        .sink
        .events()
        .iter()
        .filter(|e| e["event"] == "credential_refused")
        .map(|e| {
            e["tollgate.credential.refusal"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for code in [
        "wrong_resource",
        "wrong_tool",
        "wrong_run",
        "exhausted",
        "expired",
        "revoked",
    ] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} not audited: {codes:?}"
        );
    }
}

#[test]
fn ending_or_dropping_the_run_revokes_its_credentials() {
    let s = setup();
    let read = ToolCall::without_args("read_document");
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let p = allow(&s.guard, &run, &read);
    let a = p.credential("docs", "matter/M-1/*").unwrap();
    let b = p.credential("legacy", "crm/customers").unwrap_err(); // legacy is for legacy_lookup only
    assert!(matches!(b, CredentialError::NotGranted { .. }));
    p.complete(Outcome::success()).unwrap();
    assert!(!a.is_revoked());
    drop(run);
    assert!(a.is_revoked(), "dropping the run revokes");
    let revoked = s
        .sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "credential_revoked")
        .count();
    assert_eq!(revoked, 1);

    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let p = allow(&s.guard, &run, &read);
    let c = p.credential("docs", "matter/M-1/*").unwrap();
    p.complete(Outcome::success()).unwrap();
    run.finish().unwrap();
    assert!(c.is_revoked(), "finishing the run revokes");
}

#[test]
fn tokens_verify_across_rotation_and_fail_after_the_grace_period() {
    // Rotate every 2 minutes; credentials live 5 minutes; a retired key verifies until the last
    // token it signed expires.
    let s = setup_with(
        JwtProvider::new(SigningKey::generate("k1").unwrap(), "document-service")
            .rotate_every(Duration::from_secs(120)),
    );
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let read = ToolCall::without_args("read_document");
    let p = allow(&s.guard, &run, &read);
    let t0 = unix(&s.clock);
    let first = p.credential("docs", "matter/M-1/*").unwrap(); // starts the rotation schedule
    let first_token = first.expose(&p, "matter/M-1/a").unwrap().to_owned();
    s.clock.advance(Duration::from_secs(121));
    let second = p.credential("docs", "matter/M-1/*").unwrap(); // rotation happens here
    let second_token = second.expose(&p, "matter/M-1/a").unwrap().to_owned();
    let rotations: Vec<_> = s
        .sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "key_rotated")
        .collect();
    assert_eq!(rotations.len(), 1);
    assert_eq!(rotations[0]["tollgate.key.retired"], "k1");
    let kid = |t: &str| {
        let header = t.split('.').next().unwrap();
        let header = base64::Engine::decode(&URL_SAFE_NO_PAD, header).unwrap();
        serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"].clone()
    };
    assert_eq!(kid(&first_token), "k1");
    assert_ne!(kid(&first_token), kid(&second_token), "new key id");
    // after the rotation, the token signed with the retired key still verifies within its TTL
    assert_eq!(
        s.verifier.verify(&first_token, t0 + 200).unwrap().jti,
        first.id().as_str()
    );
    assert!(s.verifier.verify(&second_token, t0 + 200).is_ok());
    // its TTL ends at t0 + 300, and with it the retired key's use
    assert!(matches!(
        s.verifier.verify(&first_token, t0 + 300),
        Err(VerifyError::KeyRetired { .. })
    ));
    assert!(s.verifier.verify(&second_token, t0 + 121 + 299).is_ok());
    assert!(matches!(
        s.verifier.verify(&second_token, t0 + 121 + 300),
        Err(VerifyError::Expired { .. })
    ));
}

#[test]
fn the_secret_appears_in_no_output() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let call = ToolCall::without_args("legacy_lookup");
    let p = allow(&s.guard, &run, &call);
    let cred = p.credential("legacy", "crm/customers/42").unwrap();
    let value = cred.expose(&p, "crm/customers/42").unwrap();
    assert_eq!(value, PLANTED, "the tool gets the real value");
    let docs = ToolCall::without_args("read_document");
    let d = allow(&s.guard, &run, &docs);
    let token_cred = d.credential("docs", "matter/M-1/*").unwrap();
    let token = token_cred.expose(&d, "matter/M-1/x").unwrap().to_owned();
    let _ = cred.expose(&p, "crm/customers/43"); // refused: outside scope, recorded

    let mut outputs = vec![
        format!("{cred:?}"),
        format!("{cred}"),
        serde_json::to_string(&cred).unwrap(),
        format!("{token_cred:?}"),
        format!("{token_cred}"),
        serde_json::to_string(&token_cred).unwrap(),
        format!("{p:?}"),
        format!("{run:?}"),
        format!("{:?}", s.guard),
        format!("{:?}", SecretString::from(PLANTED)),
        format!(
            "{:?}",
            StaticSecretProvider::new(SecretString::from(PLANTED))
        ),
    ];
    p.complete(Outcome::success()).unwrap();
    d.complete(Outcome::success()).unwrap();
    drop(run);
    for e in s.sink.events() {
        outputs.push(e.to_string());
    }
    let joined = outputs.join("\n");
    assert!(joined.contains("credential_issued") && joined.contains("credential_used"));
    assert!(!joined.contains(PLANTED), "planted secret leaked");
    assert!(!joined.contains(&token), "token leaked");
    // nor any long fragment of it
    for w in token.as_bytes().windows(24) {
        assert!(
            !joined.contains(std::str::from_utf8(w).unwrap()),
            "token fragment leaked"
        );
    }
}

#[test]
fn grants_are_validated_with_the_field_named() {
    let make = |g: CredentialGrant| {
        CredentialBroker::builder()
            .provider(
                "docs",
                JwtProvider::new(SigningKey::generate("k").unwrap(), "docs"),
            )
            .grant("r", g)
            .build()
            .unwrap_err()
            .field
    };
    assert_eq!(
        make(CredentialGrant::new(
            "nope",
            ["t"],
            [Operation::Read],
            "a/*",
            Duration::from_secs(60)
        )),
        "grants.r[0].provider"
    );
    assert_eq!(
        make(CredentialGrant::new(
            "docs",
            Vec::<String>::new(),
            [Operation::Read],
            "a/*",
            Duration::from_secs(60)
        )),
        "grants.r[0].tools"
    );
    assert_eq!(
        make(CredentialGrant::new(
            "docs",
            ["t"],
            [],
            "a/*",
            Duration::from_secs(60)
        )),
        "grants.r[0].operations"
    );
    assert_eq!(
        make(CredentialGrant::new(
            "docs",
            ["t"],
            [Operation::Read],
            "a/../b",
            Duration::from_secs(60)
        )),
        "grants.r[0].resource"
    );
    assert_eq!(
        make(CredentialGrant::new(
            "docs",
            ["t"],
            [Operation::Read],
            "a/{user}/*",
            Duration::from_secs(60)
        )),
        "grants.r[0].resource"
    );
    assert_eq!(
        make(CredentialGrant::new(
            "docs",
            ["t"],
            [Operation::Read],
            "a/*",
            Duration::from_secs(0)
        )),
        "grants.r[0].ttl"
    );
    assert_eq!(
        make(CredentialGrant::new(
            "docs",
            ["t"],
            [Operation::Read],
            "a/*",
            Duration::from_secs(90_000)
        )),
        "grants.r[0].ttl"
    );
    // Credentials expire on whole seconds: a fraction is refused, not rounded.
    for ttl in [Duration::from_millis(500), Duration::from_millis(1500)] {
        assert_eq!(
            make(CredentialGrant::new(
                "docs",
                ["t"],
                [Operation::Read],
                "a/*",
                ttl
            )),
            "grants.r[0].ttl",
            "{ttl:?}"
        );
    }
    assert_eq!(
        make(
            CredentialGrant::new(
                "docs",
                ["t"],
                [Operation::Read],
                "a/*",
                Duration::from_secs(60)
            )
            .max_uses(0)
        ),
        "grants.r[0].max_uses"
    );
}

/// A grant's lifetime in a document carries its unit: `300` could be seconds or milliseconds.
#[test]
fn grant_ttl_in_a_document_needs_a_unit() {
    let doc = |ttl: &str| {
        format!(
            r#"{{"grants": {{"r": [{{"provider": "docs", "tools": ["t"], "operations": ["read"],
            "resource": "a/*", {ttl}}}]}}}}"#
        )
    };
    let ok: tollgate::credential::CredentialPolicy =
        serde_json::from_str(&doc(r#""ttl": "5m""#)).unwrap();
    assert_eq!(ok.grants["r"][0].ttl, Duration::from_secs(300));
    let back = serde_json::to_string(&ok).unwrap();
    assert!(back.contains(r#""ttl":"5m""#), "{back}");
    for bad in [r#""ttl": 300"#, r#""ttl": "300""#, r#""ttl_secs": 300"#] {
        assert!(
            serde_json::from_str::<tollgate::credential::CredentialPolicy>(&doc(bad)).is_err(),
            "{bad} accepted"
        );
    }
}

#[test]
fn concurrent_uses_never_exceed_max_uses() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let call = ToolCall::without_args("read_document");
    let p = allow(&s.guard, &run, &call);
    let cred = p.credential("docs", "matter/M-1/*").unwrap();
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                for _ in 0..50 {
                    if cred.expose(&p, "matter/M-1/a").is_ok() {
                        ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(ok.load(std::sync::atomic::Ordering::SeqCst), 3);
}

struct FakeVault {
    revoked: Arc<parking_lot::Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl tollgate::credential::AsyncCredentialProvider for FakeVault {
    async fn mint(
        &self,
        req: &tollgate::credential::MintRequest<'_>,
    ) -> Result<SecretString, tollgate::credential::ProviderError> {
        // Yield once, as a network call would.
        YieldOnce(false).await;
        Ok(SecretString::from(format!("vault-lease-for-{}", req.id)))
    }
    fn revoke(
        &self,
        req: &tollgate::credential::RevokeRequest<'_>,
    ) -> Result<(), tollgate::credential::ProviderError> {
        self.revoked.lock().push(req.id.to_string());
        Ok(())
    }
}

struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = std::task::Waker::from(Arc::new(Noop));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[test]
fn async_providers_mint_through_credential_async_and_are_revoked_at_the_source() {
    let revoked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let vault = FakeVault {
        revoked: Arc::clone(&revoked),
    };
    let broker = CredentialBroker::builder()
        .async_provider("vault", vault)
        .grant(
            "intake",
            CredentialGrant::new(
                "vault",
                ["read_document"],
                [Operation::Read],
                "db/reports/*",
                Duration::from_secs(60),
            ),
        )
        .build()
        .unwrap();
    let guard = Guard::builder(boundary())
        .credentials(broker.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "intake")).unwrap();
    let call = ToolCall::without_args("read_document");
    let p = allow(&guard, &run, &call);
    assert!(matches!(
        p.credential("vault", "db/reports/*"),
        Err(CredentialError::ProviderIsAsync(_))
    ));
    let cred = block_on(p.credential_async("vault", "db/reports/*")).unwrap();
    assert!(
        cred.expose(&p, "db/reports/q4")
            .unwrap()
            .starts_with("vault-lease-for-cred-")
    );
    assert_eq!(broker.live_count(), 1);
    p.complete(Outcome::success()).unwrap();
    drop(run);
    assert_eq!(broker.live_count(), 0);
    assert!(cred.is_revoked());
    assert_eq!(
        *revoked.lock(),
        [cred.id().to_string()],
        "revoked at the source"
    );
}

#[test]
fn on_demand_rotation_is_recorded_and_old_tokens_keep_verifying() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let call = ToolCall::without_args("read_document");
    let p = allow(&s.guard, &run, &call);
    let before = p.credential("docs", "matter/M-1/*").unwrap();
    let old_token = before.expose(&p, "matter/M-1/a").unwrap().to_owned();
    let rotated = s
        .guard
        .rotate_credential_key("docs")
        .unwrap()
        .expect("derived tokens rotate");
    assert_eq!(rotated.retired, "k1");
    assert_eq!(s.guard.rotate_credential_key("legacy").unwrap(), None);
    let event = s
        .sink
        .events()
        .into_iter()
        .find(|e| e["event"] == "key_rotated")
        .unwrap();
    assert_eq!(event["tollgate.key.current"], rotated.current.as_str());
    assert!(event["tollgate.run.id"].is_null(), "a guard-wide event");
    let after = p.credential("docs", "matter/M-1/*").unwrap();
    let new_token = after.expose(&p, "matter/M-1/a").unwrap().to_owned();
    let header = base64::Engine::decode(&URL_SAFE_NO_PAD, new_token.split('.').next().unwrap());
    let header: serde_json::Value = serde_json::from_slice(&header.unwrap()).unwrap();
    assert_eq!(header["kid"], rotated.current.as_str());
    let now = unix(&s.clock);
    assert!(s.verifier.verify(&old_token, now).is_ok());
    assert!(s.verifier.verify(&new_token, now).is_ok());
}
