//! Unit tests of the JWT signer, key ring and verifier.

use super::*;
use secrecy::ExposeSecret;

const NOW: u64 = 1_767_225_600;
const AUD: &str = "docs";

fn key(kid: &str, seed: u8) -> SigningKey {
    SigningKey::from_seed(kid, &[seed; 32]).unwrap()
}

fn claims(iat: u64, ttl: u64) -> TokenClaims {
    TokenClaims {
        iss: DEFAULT_ISSUER.into(),
        sub: "agent-1".into(),
        aud: AUD.into(),
        jti: "cred-abc-1".into(),
        iat,
        nbf: iat,
        exp: iat + ttl,
        run: "run-1".into(),
        role: "intake".into(),
        tools: vec!["read_document".into()],
        ops: vec!["read".into()],
        resource: "matter/M-1/*".into(),
    }
}

fn signer() -> TokenSigner {
    TokenSigner::new(key("k1", 1))
}

fn verifier(s: &TokenSigner) -> TokenVerifier {
    s.verifier(AUD, RevocationList::new())
}

fn sign(s: &TokenSigner, c: &TokenClaims) -> String {
    s.sign(c).unwrap().expose_secret().to_owned()
}

fn segments(t: &str) -> Vec<String> {
    t.split('.').map(str::to_owned).collect()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn signed_token_verifies_and_is_a_standard_eddsa_jwt() {
    let s = signer();
    let c = claims(NOW, 300);
    let t = sign(&s, &c);
    assert_eq!(verifier(&s).verify(&t, NOW), Ok(c.clone()));
    let seg = segments(&t);
    assert_eq!(seg.len(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&seg[0]).unwrap()).unwrap();
    assert_eq!(
        header,
        serde_json::json!({"typ": "JWT", "alg": "EdDSA", "kid": "k1"})
    );
    let body: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&seg[1]).unwrap()).unwrap();
    for claim in ["iss", "sub", "aud", "jti", "iat", "nbf", "exp"] {
        assert!(body.get(claim).is_some(), "{claim} missing");
    }
}

#[test]
fn alg_none_and_hs256_with_the_public_key_are_refused() {
    let s = signer();
    let v = verifier(&s);
    let c = claims(NOW, 300);
    let body = b64(&serde_json::to_vec(&c).unwrap());
    // alg: none, no signature.
    let none = format!(
        "{}.{body}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#)
    );
    assert!(matches!(
        v.verify(&none, NOW),
        Err(VerifyError::Malformed(_))
    ));
    // HS256 keyed with the (public) Ed25519 key bytes: the classic algorithm confusion.
    let public = key("k1", 1).public_key().as_bytes().to_vec();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged =
        jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(&public).unwrap()).unwrap();
    assert_eq!(
        v.verify(&forged, NOW),
        Err(VerifyError::Malformed("algorithm is not EdDSA"))
    );
}

#[test]
fn header_carrying_its_own_key_is_refused() {
    let s = signer();
    let attacker = key("k1", 0xAA);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    header.jwk = Some(attacker.public_key().to_jwk());
    let forged = jsonwebtoken::encode(&header, &claims(NOW, 300), &attacker.encoding).unwrap();
    assert!(matches!(
        verifier(&s).verify(&forged, NOW),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn tampered_claims_and_foreign_keys_are_bad_signatures() {
    let s = signer();
    let v = verifier(&s);
    let t = sign(&s, &claims(NOW, 300));
    let seg = segments(&t);
    let mut wider = claims(NOW, 300);
    wider.resource = "*".into();
    let tampered = format!(
        "{}.{}.{}",
        seg[0],
        b64(&serde_json::to_vec(&wider).unwrap()),
        seg[2]
    );
    assert_eq!(v.verify(&tampered, NOW), Err(VerifyError::BadSignature));
    // Same kid, another private key.
    let attacker = TokenSigner::new(key("k1", 0xAA));
    assert_eq!(
        v.verify(&sign(&attacker, &claims(NOW, 300)), NOW),
        Err(VerifyError::BadSignature)
    );
    // A kid the verifier does not know.
    let other = TokenSigner::new(key("zz", 7));
    assert_eq!(
        v.verify(&sign(&other, &claims(NOW, 300)), NOW),
        Err(VerifyError::UnknownKey("zz".into()))
    );
}

#[test]
fn truncated_or_oversize_tokens_never_verify() {
    let s = signer();
    let v = verifier(&s);
    let t = sign(&s, &claims(NOW, 300));
    for cut in 0..t.len() {
        let e = v.verify(&t[..cut], NOW).unwrap_err();
        assert!(
            matches!(e, VerifyError::Malformed(_) | VerifyError::BadSignature),
            "prefix {cut}: {e:?}"
        );
    }
    for bad in [format!("{t}.x"), format!("{t}."), format!(".{t}")] {
        assert!(v.verify(&bad, NOW).is_err(), "{bad}");
    }
    let mut big = claims(NOW, 300);
    big.resource = "x".repeat(MAX_TOKEN_LEN);
    assert_eq!(
        v.verify(&sign(&s, &big), NOW),
        Err(VerifyError::Malformed("token too long"))
    );
}

#[test]
fn authenticated_claims_with_unknown_fields_are_malformed() {
    let k = key("k1", 1);
    let s = TokenSigner::new(key("k1", 1));
    let mut extra = serde_json::to_value(claims(NOW, 300)).unwrap();
    extra["admin"] = serde_json::Value::Bool(true);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let t = jsonwebtoken::encode(&header, &extra, &k.encoding).unwrap();
    assert_eq!(
        verifier(&s).verify(&t, NOW),
        Err(VerifyError::Malformed("claims are not valid token claims"))
    );
}

#[test]
fn expiry_not_before_audience_and_issuer_are_checked_against_the_callers_clock() {
    let s = signer();
    let v = verifier(&s);
    let c = claims(NOW, 300);
    let t = sign(&s, &c);
    assert!(v.verify(&t, c.exp - 1).is_ok());
    for now in [c.exp, c.exp + 1, u64::MAX] {
        assert_eq!(
            v.verify(&t, now),
            Err(VerifyError::Expired { expired_at: c.exp })
        );
    }
    let early = NOW - CLOCK_SKEW_SECS - 1;
    assert_eq!(
        v.verify(&t, early),
        Err(VerifyError::NotYetValid { not_before: NOW })
    );
    assert!(v.verify(&t, NOW - CLOCK_SKEW_SECS).is_ok());
    let billing = s.verifier("billing", RevocationList::new());
    assert_eq!(
        billing.verify(&t, NOW),
        Err(VerifyError::WrongAudience {
            expected: "billing".into(),
            found: AUD.into()
        })
    );
    let other_issuer = verifier(&s).issuer("someone-else");
    assert!(matches!(
        other_issuer.verify(&t, NOW),
        Err(VerifyError::WrongIssuer { .. })
    ));
}

#[test]
fn revoked_jti_fails_only_after_the_signature_verified() {
    let s = signer();
    let list = RevocationList::new();
    let v = s.verifier(AUD, list.clone());
    let t = sign(&s, &claims(NOW, 300));
    assert!(v.verify(&t, NOW).is_ok());
    list.revoke("cred-abc-1", NOW + 300);
    assert_eq!(
        v.verify(&t, NOW),
        Err(VerifyError::Revoked {
            jti: "cred-abc-1".into()
        })
    );
    // A forgery naming a revoked jti learns nothing: its signature fails first.
    let attacker = TokenSigner::new(key("k1", 0xAA));
    assert_eq!(
        v.verify(&sign(&attacker, &claims(NOW, 300)), NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn retired_key_verifies_until_its_last_token_expires_then_is_dropped() {
    let s = TokenSigner::new(key("k0", 1));
    let v = verifier(&s); // created before the rotation
    let old = sign(&s, &claims(NOW, 1_000));
    let short = sign(&s, &claims(NOW, 10));
    assert_eq!(s.rotate(key("k1", 2), NOW + 5).unwrap(), "k0");
    assert_eq!(s.current_kid(), "k1");
    let new = sign(&s, &claims(NOW + 5, 10_000));
    assert_eq!(
        s.kids(),
        [
            ("k1".to_owned(), None),
            ("k0".to_owned(), Some(NOW + 1_000))
        ]
    );
    assert!(v.verify(&new, NOW + 6).is_ok());
    assert!(v.verify(&old, NOW + 999).is_ok());
    assert!(v.verify(&short, NOW + 6).is_ok());
    assert_eq!(
        v.verify(&old, NOW + 1_000),
        Err(VerifyError::KeyRetired { kid: "k0".into() })
    );
    // A later rotation drops it from the ring (and from the JWKS).
    s.rotate(key("k2", 3), NOW + 1_000).unwrap();
    let kids: Vec<String> = s.kids().into_iter().map(|(k, _)| k).collect();
    assert_eq!(kids, ["k2", "k1"]);
    assert_eq!(s.jwks().keys.len(), 2);
    assert_eq!(
        v.verify(&old, NOW + 1_000),
        Err(VerifyError::UnknownKey("k0".into()))
    );
    assert!(v.verify(&new, NOW + 5_000).is_ok());
}

#[test]
fn rotate_refuses_a_kid_still_in_the_ring() {
    let s = TokenSigner::new(key("k0", 1));
    let _ = sign(&s, &claims(NOW, 300));
    s.rotate(key("k1", 2), NOW).unwrap();
    for dup in ["k0", "k1"] {
        assert!(matches!(
            s.rotate(key(dup, 9), NOW + 1),
            Err(TokenError::DuplicateKeyId(k)) if k == dup
        ));
    }
    assert_eq!(s.current_kid(), "k1");
}

#[test]
fn concurrent_rotate_and_verify_never_fails_a_fresh_token() {
    let s = TokenSigner::new(SigningKey::generate("k0").unwrap());
    std::thread::scope(|scope| {
        let rotator = s.clone();
        scope.spawn(move || {
            for i in 1..=20u64 {
                let k = SigningKey::generate(format!("k{i}")).unwrap();
                rotator.rotate(k, NOW + i).unwrap();
                std::thread::yield_now();
            }
        });
        for _ in 0..2 {
            let signer = s.clone();
            let v = verifier(&s);
            scope.spawn(move || {
                for _ in 0..50 {
                    let c = claims(NOW, 10_000);
                    let t = signer.sign(&c).unwrap();
                    assert_eq!(v.verify(t.expose_secret(), NOW + 50), Ok(c));
                }
            });
        }
    });
    assert_eq!(s.current_kid(), "k20");
}

#[test]
fn jwk_round_trips_and_bad_jwks_are_refused() {
    let k = key("k1", 1);
    let jwk = k.public_key().to_jwk();
    let json = serde_json::to_value(&jwk).unwrap();
    assert_eq!(json["kty"], "OKP");
    assert_eq!(json["crv"], "Ed25519");
    assert_eq!(json["alg"], "EdDSA");
    assert_eq!(json["kid"], "k1");
    assert_eq!(json["use"], "sig");
    assert!(json.get("d").is_none(), "no private part");
    let back = PublicKey::from_jwk(&jwk).unwrap();
    assert_eq!(back.as_bytes(), k.public_key().as_bytes());
    let bad = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json.clone();
        edit(&mut v);
        let jwk: Jwk = serde_json::from_value(v).unwrap();
        PublicKey::from_jwk(&jwk).unwrap_err()
    };
    assert!(matches!(
        bad(&|v| v["x"] = "AAAA".into()),
        TokenError::InvalidJwk { .. }
    ));
    assert!(matches!(
        bad(&|v| v["crv"] = "X25519".into()),
        TokenError::InvalidJwk { .. }
    ));
    assert!(matches!(
        bad(&|v| {
            v.as_object_mut().unwrap().remove("kid");
        }),
        TokenError::InvalidJwk { kid: None, .. }
    ));
    assert!(TokenVerifier::from_jwks("{", AUD).is_err());
    assert!(
        TokenVerifier::from_jwks(r#"{"keys":[{"kty":"oct","k":"AAAA","kid":"h"}]}"#, AUD).is_err()
    );
}

#[test]
fn standalone_verifier_from_jwks_verifies_and_rotation_shows_in_the_export() {
    let s = signer();
    let t = sign(&s, &claims(NOW, 300));
    let jwks = serde_json::to_string(&s.jwks()).unwrap();
    let remote = TokenVerifier::from_jwks(&jwks, AUD).unwrap();
    assert_eq!(remote.verify(&t, NOW), Ok(claims(NOW, 300)));
    s.rotate(key("k2", 2), NOW + 1).unwrap();
    let t2 = sign(&s, &claims(NOW + 1, 300));
    assert_eq!(
        remote.verify(&t2, NOW + 2),
        Err(VerifyError::UnknownKey("k2".into()))
    );
    let polled = serde_json::to_string(&s.jwks()).unwrap();
    let remote = TokenVerifier::from_jwks(&polled, AUD).unwrap();
    assert!(remote.verify(&t2, NOW + 2).is_ok() && remote.verify(&t, NOW + 2).is_ok());
}

#[test]
fn debug_output_never_contains_private_keys_or_token_text() {
    let seed = [0x5Au8; 32];
    let k = SigningKey::from_seed("k1", &seed).unwrap();
    let k_dbg = format!("{k:?}");
    let s = TokenSigner::new(k);
    let token = s.sign(&claims(NOW, 300)).unwrap();
    let text = token.expose_secret();
    let outputs = [
        k_dbg,
        format!("{s:?}"),
        format!("{:?}", verifier(&s)),
        format!("{token:?}"),
    ];
    let seed_b64 = b64(&seed);
    let seed_hex = crate::hex::encode(&seed);
    for out in &outputs {
        assert!(
            !out.contains(&seed_b64) && !out.contains(&seed_hex),
            "{out}"
        );
        assert!(!out.contains("90, 90, 90"), "{out}");
        assert!(!out.contains(text), "{out}");
        assert!(!out.contains(&segments(text)[2]), "{out}");
    }
    assert!(outputs[0].contains("k1") && outputs[0].contains("REDACTED"));
}

#[test]
fn key_ids_are_validated() {
    for bad in ["", "a.b", "a b", &"k".repeat(MAX_KID_LEN + 1)] {
        assert!(matches!(
            SigningKey::from_seed(bad, &[1; 32]),
            Err(TokenError::InvalidKeyId(_))
        ));
    }
    assert_eq!(
        SigningKey::generate("k-1_A").unwrap().kid(),
        "k-1_A",
        "generate"
    );
    assert_ne!(
        SigningKey::generate("a").unwrap().public_key().as_bytes(),
        SigningKey::generate("a").unwrap().public_key().as_bytes()
    );
}

#[test]
fn claims_permit_only_their_tool_operation_and_resources() {
    use crate::credential::Operation;
    let c = claims(NOW, 300);
    assert!(c.permits("read_document", Operation::Read, "matter/M-1/a.pdf"));
    assert!(!c.permits("delete_document", Operation::Read, "matter/M-1/a.pdf"));
    assert!(!c.permits("read_document", Operation::Write, "matter/M-1/a.pdf"));
    for r in [
        "matter/M-2/a.pdf",
        "matter/M-10/a.pdf",
        "matter/M-1/../M-2/a.pdf",
        "matter/M-1/..;/M-2/a.pdf",
        "matter/M-1/..\u{A0}/M-2/a.pdf",
        "matter/M-1",
    ] {
        assert!(!c.permits("read_document", Operation::Read, r), "{r:?}");
    }
}
