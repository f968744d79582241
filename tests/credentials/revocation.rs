//! Revocation that revokes: tokens copied out before the run ended or the kill switch was thrown
//! fail verification afterwards, in process at once and downstream after a poll; credentials are
//! bound to the run instance and agent; the exported keys verify through independent code.

use super::*;

fn mint_token(s: &Setup, run: &tollgate::Run) -> (tollgate::credential::ScopedCredential, String) {
    let call = ToolCall::without_args("read_document");
    let p = allow(&s.guard, run, &call);
    let cred = p.credential("docs", "matter/M-1/*").unwrap();
    let token = cred.expose(&p, "matter/M-1/a.pdf").unwrap().to_owned();
    p.complete(Outcome::success()).unwrap();
    (cred, token)
}

#[test]
fn token_copied_before_run_finish_fails_verification_after_it() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let (cred, copied) = mint_token(&s, &run);
    let now = unix(&s.clock);
    assert!(s.verifier.verify(&copied, now).is_ok());
    run.finish().unwrap();
    // In process the bound is zero: as soon as `finish` returns, the token fails, although it
    // is validly signed and 300 s from expiry.
    assert_eq!(
        s.verifier.verify(&copied, now),
        Err(VerifyError::Revoked {
            jti: cred.id().to_string()
        })
    );
    assert!(cred.is_revoked());
}

#[test]
fn token_copied_before_the_run_is_dropped_fails_verification_after_it() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let (_cred, copied) = mint_token(&s, &run);
    drop(run);
    assert!(matches!(
        s.verifier.verify(&copied, unix(&s.clock)),
        Err(VerifyError::Revoked { .. })
    ));
}

#[test]
fn downstream_service_refuses_revoked_token_after_polling_the_export() {
    // A service elsewhere holds only the JWKS and polls the revocation export.
    let s = setup();
    let remote_revoked = RevocationList::new();
    let remote = TokenVerifier::from_jwks(&s.jwks, "document-service")
        .unwrap()
        .with_revocations(remote_revoked.clone());
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let (cred, copied) = mint_token(&s, &run);
    let now = unix(&s.clock);
    remote_revoked
        .merge_json(&s.revocations.export_json(now))
        .unwrap();
    let claims = remote.verify(&copied, now).expect("nothing revoked yet");
    assert!(claims.permits("read_document", Operation::Read, "matter/M-1/a.pdf"));
    assert!(!claims.permits("read_document", Operation::Read, "matter/M-2/a.pdf"));
    run.finish().unwrap();
    // Until its next poll the service still accepts the token: the downstream bound is the
    // polling interval. After the poll it refuses it.
    assert!(remote.verify(&copied, now).is_ok());
    let export = s.revocations.export_json(now);
    assert!(export.contains(cred.id().as_str()));
    remote_revoked.merge_json(&export).unwrap();
    assert!(matches!(
        remote.verify(&copied, now),
        Err(VerifyError::Revoked { .. })
    ));
    // Once the token has expired, the entry leaves the export.
    let later = now + 300;
    assert!(
        !s.revocations
            .export_json(later)
            .contains(cred.id().as_str())
    );
}

#[test]
fn kill_switch_stops_minting_and_release_of_credentials_at_once() {
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let call = ToolCall::without_args("read_document");
    let p = allow(&s.guard, &run, &call);
    let cred = p.credential("docs", "matter/M-1/*").unwrap();
    s.guard.suspend_run(&run, "oncall").unwrap();
    assert_eq!(
        cred.expose(&p, "matter/M-1/a.pdf").unwrap_err(),
        CredentialError::Suspended("run")
    );
    assert_eq!(
        p.credential("docs", "matter/M-1/*").unwrap_err(),
        CredentialError::Suspended("run")
    );
    s.guard.resume_run(&run, "oncall").unwrap();
    s.guard.suspend_agent(&"bot".into(), "oncall").unwrap();
    assert_eq!(
        cred.expose(&p, "matter/M-1/a.pdf").unwrap_err(),
        CredentialError::Suspended("agent")
    );
    s.guard.resume_agent(&"bot".into(), "oncall").unwrap();
    s.guard.suspend_all("oncall").unwrap();
    assert_eq!(
        cred.expose(&p, "matter/M-1/a.pdf").unwrap_err(),
        CredentialError::Suspended("global")
    );
    let refusals = s
        .sink
        .events()
        .into_iter()
        .filter(|e| e["tollgate.credential.refusal"] == "suspended")
        .count();
    assert_eq!(refusals, 4, "every refusal is audited");
    p.complete(Outcome::success()).unwrap();
}

#[test]
fn kill_switch_revocation_makes_copied_tokens_fail_verification() {
    // What the guard's suspend_agent / suspend_all call on the broker: every credential of the
    // agent (or of everything) is revoked, and tokens copied out before fail verification.
    let s = setup();
    let bot = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let other = s
        .guard
        .start_run(RunContext::new("other-bot", "intake").in_compartment("M-1"))
        .unwrap();
    let (bot_cred, bot_token) = mint_token(&s, &bot);
    let (other_cred, other_token) = mint_token(&s, &other);
    let now = unix(&s.clock);
    let revoked = s.broker.revoke_agent(&"bot".into(), now);
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].id, *bot_cred.id());
    assert_eq!(revoked[0].run_instance, bot.instance());
    assert!(matches!(
        s.verifier.verify(&bot_token, now),
        Err(VerifyError::Revoked { .. })
    ));
    assert!(
        s.verifier.verify(&other_token, now).is_ok(),
        "other agents keep theirs"
    );
    let all = s.broker.revoke_all(now);
    assert_eq!(all.len(), 1);
    assert!(other_cred.is_revoked() && bot_cred.is_revoked());
    assert!(matches!(
        s.verifier.verify(&other_token, now),
        Err(VerifyError::Revoked { .. })
    ));
    assert_eq!(s.broker.live_count(), 0);
    // Ending the runs later revokes nothing twice.
    drop(bot);
    drop(other);
    let revoked_events = s
        .sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "credential_revoked")
        .count();
    assert_eq!(revoked_events, 0, "the caller of revoke_* records those");
}

#[test]
fn credential_of_ended_run_is_refused_for_a_new_run_reusing_its_id() {
    let s = setup();
    let call = ToolCall::without_args("read_document");
    let ctx = RunContext::new("bot", "intake").in_compartment("M-1");
    let a = s
        .guard
        .start_run_with_id(ctx.clone(), Some("run-X".into()))
        .unwrap();
    let pa = allow(&s.guard, &a, &call);
    let cred = pa.credential("docs", "matter/M-1/*").unwrap();
    let token = cred.expose(&pa, "matter/M-1/a.pdf").unwrap().to_owned();
    pa.complete(Outcome::success()).unwrap();
    let a_instance = a.instance();
    a.finish().unwrap();
    assert!(cred.is_revoked(), "revoked with run A");
    // Run B reuses the id X; same agent, same role, same compartment.
    let b = s
        .guard
        .start_run_with_id(ctx, Some("run-X".into()))
        .unwrap();
    assert_ne!(b.instance(), a_instance);
    let pb = allow(&s.guard, &b, &call);
    let e = cred.expose(&pb, "matter/M-1/a.pdf").unwrap_err();
    assert_eq!(
        e,
        CredentialError::WrongRun {
            credential_run: "run-X".into(),
            credential_instance: a_instance,
            permit_run: "run-X".into(),
            permit_instance: b.instance(),
        }
    );
    assert!(matches!(
        s.verifier.verify(&token, unix(&s.clock)),
        Err(VerifyError::Revoked { .. })
    ));
    // B's own credential is B's, and ending B does not touch A's (already revoked) one twice.
    let fresh = pb.credential("docs", "matter/M-1/*").unwrap();
    assert!(fresh.expose(&pb, "matter/M-1/a.pdf").is_ok());
    pb.complete(Outcome::success()).unwrap();
    b.finish().unwrap();
    assert!(fresh.is_revoked());
    let revoked: Vec<String> = s
        .sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "credential_revoked")
        .map(|e| e["tollgate.credential.id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(revoked, [cred.id().to_string(), fresh.id().to_string()]);
}

#[test]
fn credential_held_by_a_live_run_is_refused_for_another_run_of_another_agent() {
    let s = setup();
    let call = ToolCall::without_args("read_document");
    let a = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let rogue = s
        .guard
        .start_run(RunContext::new("rogue", "intake").in_compartment("M-1"))
        .unwrap();
    let pa = allow(&s.guard, &a, &call);
    let cred = pa.credential("docs", "matter/M-1/*").unwrap();
    let pr = allow(&s.guard, &rogue, &call);
    assert!(matches!(
        cred.expose(&pr, "matter/M-1/a.pdf"),
        Err(CredentialError::WrongRun { .. })
    ));
    // Ending the rogue's run does not revoke A's credential.
    pr.complete(Outcome::success()).unwrap();
    rogue.finish().unwrap();
    assert!(!cred.is_revoked());
    assert!(cred.expose(&pa, "matter/M-1/a.pdf").is_ok());
    pa.complete(Outcome::success()).unwrap();
}

#[test]
fn exported_jwk_verifies_a_token_through_an_independent_ed25519_path() {
    // What a service in another language does with the JWKS: base64url-decode the key's `x`, the
    // token's signature, and verify Ed25519 over the JWS signing input `header.payload`, with no
    // tollgate and no jsonwebtoken code involved.
    use base64::Engine;
    use ed25519_dalek::{Signature, VerifyingKey};
    let s = setup();
    let run = s
        .guard
        .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
        .unwrap();
    let (cred, token) = mint_token(&s, &run);
    let jwks: serde_json::Value = serde_json::from_str(&s.jwks).unwrap();
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (&jwk["kty"], &jwk["crv"], &jwk["alg"]),
        (
            &serde_json::json!("OKP"),
            &serde_json::json!("Ed25519"),
            &serde_json::json!("EdDSA")
        )
    );
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let signature = Signature::from_slice(&signature).unwrap();
    key.verify_strict(signing_input.as_bytes(), &signature)
        .unwrap();
    let (header, payload) = signing_input.split_once('.').unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["kid"], jwk["kid"]);
    assert_eq!(header["alg"], "EdDSA");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["jti"], cred.id().as_str());
    assert_eq!(claims["aud"], "document-service");
    // A single flipped bit of the signing input fails the same independent check.
    let mut tampered = signing_input.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(key.verify_strict(&tampered, &signature).is_err());
}

#[test]
fn credential_ids_are_unique_across_brokers() {
    // jti is what downstream revocation lists match on: two brokers (two processes) must never
    // mint the same id, or revoking one would revoke (or fail to revoke) the other.
    let a = setup();
    let b = setup();
    let ra = a
        .guard
        .start_run_with_id(
            RunContext::new("bot", "intake").in_compartment("M-1"),
            Some("r".into()),
        )
        .unwrap();
    let rb = b
        .guard
        .start_run_with_id(
            RunContext::new("bot", "intake").in_compartment("M-1"),
            Some("r".into()),
        )
        .unwrap();
    let (ca, _) = mint_token(&a, &ra);
    let (cb, _) = mint_token(&b, &rb);
    assert_ne!(ca.id(), cb.id());
    assert!(ca.id().as_str().starts_with("cred-"));
}

/// A JWT provider that throws the kill switch while it mints, and keeps a copy of what it minted
/// (as a leaky provider or a compromised tool would).
struct SuspendsWhileMinting {
    inner: JwtProvider,
    guard: Arc<std::sync::OnceLock<Guard>>,
    minted: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl tollgate::credential::CredentialProvider for SuspendsWhileMinting {
    fn mint(
        &self,
        req: &tollgate::credential::MintRequest<'_>,
    ) -> Result<SecretString, tollgate::credential::ProviderError> {
        use secrecy::ExposeSecret;
        self.guard.get().unwrap().suspend_all("oncall").unwrap();
        let token = self.inner.mint(req)?;
        self.minted.lock().push(token.expose_secret().to_owned());
        Ok(token)
    }
    fn revoke(
        &self,
        req: &tollgate::credential::RevokeRequest<'_>,
    ) -> Result<(), tollgate::credential::ProviderError> {
        self.inner.revoke(req)
    }
}

#[test]
fn kill_switch_thrown_while_minting_revokes_the_fresh_credential() {
    let inner = JwtProvider::new(SigningKey::generate("k1").unwrap(), "docs");
    let verifier = inner.verifier();
    let cell = Arc::new(std::sync::OnceLock::new());
    let minted = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let broker = CredentialBroker::builder()
        .provider(
            "docs",
            SuspendsWhileMinting {
                inner,
                guard: Arc::clone(&cell),
                minted: Arc::clone(&minted),
            },
        )
        .grant(
            "intake",
            CredentialGrant::new(
                "docs",
                ["read_document"],
                [Operation::Read],
                "m/*",
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
    assert!(cell.set(guard).is_ok());
    let guard = cell.get().unwrap();
    let run = guard.start_run(RunContext::new("bot", "intake")).unwrap();
    let call = ToolCall::without_args("read_document");
    let p = allow(guard, &run, &call);
    assert_eq!(
        p.credential("docs", "m/*").unwrap_err(),
        CredentialError::Suspended("global")
    );
    let leaked = minted.lock().pop().expect("the provider minted");
    assert!(matches!(
        verifier.verify(&leaked, unix(&clock)),
        Err(VerifyError::Revoked { .. })
    ));
    assert_eq!(broker.live_count(), 0);
    let events = sink.events();
    assert!(events.iter().any(|e| e["event"] == "credential_revoked"));
    assert!(
        events
            .iter()
            .any(|e| e["tollgate.credential.refusal"] == "suspended")
    );
    assert!(!events.iter().any(|e| e["event"] == "credential_issued"));
    p.complete(Outcome::success()).unwrap();
}

/// Finding: a token copied before the kill switch still verified afterwards. The switch (run,
/// agent or global) now revokes the suspended runs' credentials, so a copied token fails
/// verification in process at once, is on the exported revocation list, and is recorded.
#[test]
fn token_copied_before_the_kill_switch_fails_verification_after_it() {
    for scope in ["run", "agent", "global"] {
        let s = setup();
        let run = s
            .guard
            .start_run(RunContext::new("bot", "intake").in_compartment("M-1"))
            .unwrap();
        let (cred, copied) = mint_token(&s, &run);
        assert!(s.verifier.verify(&copied, unix(&s.clock)).is_ok());
        match scope {
            "run" => s.guard.suspend_run(&run, "oncall").unwrap(),
            "agent" => s.guard.suspend_agent(&"bot".into(), "oncall").unwrap(),
            _ => s.guard.suspend_all("oncall").unwrap(),
        }
        assert!(cred.is_revoked(), "{scope}");
        assert_eq!(
            s.verifier.verify(&copied, unix(&s.clock)),
            Err(VerifyError::Revoked {
                jti: cred.id().to_string()
            }),
            "{scope}"
        );
        assert!(
            s.revocations
                .export_json(unix(&s.clock))
                .contains(cred.id().as_str()),
            "{scope}"
        );
        assert!(
            s.sink
                .events()
                .iter()
                .any(|e| e["event"] == "credential_revoked"
                    && e["tollgate.credential.id"] == cred.id().as_str()),
            "{scope}"
        );
        // Resuming does not bring the credential back.
        match scope {
            "run" => s.guard.resume_run(&run, "oncall").unwrap(),
            "agent" => s.guard.resume_agent(&"bot".into(), "oncall").unwrap(),
            _ => s.guard.resume_all("oncall").unwrap(),
        }
        assert!(
            s.verifier.verify(&copied, unix(&s.clock)).is_err(),
            "{scope}"
        );
    }
}
