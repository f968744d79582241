//! Reviewing one policy document: reviewer signatures (required by the guard, interoperable with
//! openssl), reviewer warnings that point at what deserves a second look, `diff` reporting
//! permissions and thresholds rather than text, `explain` dry-running every stage, and a review
//! finding on compartment patterns and tier order. Parsing, errors and binding are in
//! `policy_one_document.rs`.

#[path = "common/clinic_policy.rs"]
mod clinic_policy;
mod common;

use clinic_policy::{CLINIC, clinic, edited, err_of, line_of};
use tollgate::policy::Policy;

mod signatures {
    use std::process::Command;
    use std::sync::Arc;

    use base64::Engine as _;
    use tollgate::audit::MemorySink;
    use tollgate::escalation::MemoryApprovalStore;
    use tollgate::policy::{
        BindError, Bindings, Policy, ReviewerKey, ReviewerPublicKey, SignatureFile, Trust,
    };

    fn policy() -> Policy {
        Policy::from_toml(super::CLINIC).unwrap()
    }

    fn bindings() -> Bindings {
        use secrecy::SecretString;
        use tollgate::credential::StaticSecretProvider;
        Bindings::new()
            .audit(Arc::new(MemorySink::new()))
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider("ehr", StaticSecretProvider::new(SecretString::from("a")))
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("b")),
            )
    }

    #[test]
    fn a_guard_refuses_a_document_without_enough_reviewer_signatures() {
        let legal = ReviewerKey::generate().unwrap();
        let compliance = ReviewerKey::generate().unwrap();
        let trust = Trust::new([legal.public(), compliance.public()], 2).unwrap();
        let p = policy();
        let mut sigs = SignatureFile::default();
        sigs.add(legal.sign(&p, "Legal").unwrap());
        let err = tollgate::Guard::from_policy(
            &p,
            bindings().require_signed(trust.clone(), sigs.clone()),
        )
        .unwrap_err();
        assert!(matches!(err, BindError::Unsigned(_)), "{err}");

        sigs.add(compliance.sign(&p, "Compliance").unwrap());
        assert!(
            tollgate::Guard::from_policy(
                &p,
                bindings().require_signed(trust.clone(), sigs.clone())
            )
            .is_ok()
        );

        // Signatures do not carry over to a changed document.
        let changed =
            Policy::from_toml(&super::edited("max_calls = 60", "max_calls = 600")).unwrap();
        assert!(matches!(
            tollgate::Guard::from_policy(&changed, bindings().require_signed(trust, sigs)),
            Err(BindError::Unsigned(_))
        ));
    }

    /// Keys are the PEM files `openssl genpkey -algorithm ed25519` writes, and signatures are
    /// plain Ed25519 over a documented text, so a reviewer's own tooling can check them.
    #[test]
    fn signatures_interoperate_with_openssl() {
        if super::common::external_tool(&["openssl"]).is_none() {
            return;
        }
        let tmp = super::common::tempdir::temp_dir("sig", "openssl");
        let dir = tmp.path();
        let key_path = dir.join("reviewer.pem");
        let out = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key_path)
            .output()
            .expect("openssl is installed (CI installs it)");
        assert!(out.status.success(), "{out:?}");
        let key = ReviewerKey::from_file(&key_path).unwrap();
        let pub_path = dir.join("reviewer.pub.pem");
        let out = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key_path)
            .arg("-out")
            .arg(&pub_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let public = ReviewerPublicKey::from_file(&pub_path).unwrap();
        assert_eq!(public, key.public());

        let p = policy();
        let sig = key.sign(&p, "Dana Reviewer").unwrap();
        let msg = format!("tollgate-policy-signature-v1:{}:Dana Reviewer", p.version());
        std::fs::write(dir.join("msg"), &msg).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&sig.signature)
            .unwrap();
        std::fs::write(dir.join("sig"), raw).unwrap();
        let out = Command::new("openssl")
            .args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
            .arg(&pub_path)
            .arg("-in")
            .arg(dir.join("msg"))
            .arg("-sigfile")
            .arg(dir.join("sig"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl rejected the signature: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn reviewer_warnings_point_at_what_deserves_a_second_look() {
    let codes = |p: &Policy| {
        p.warnings()
            .iter()
            .map(|w| (w.code, w.path.clone()))
            .collect::<Vec<_>>()
    };
    // The clinic's front desk may call every tool: worth a look, not an error.
    let base = clinic();
    assert_eq!(
        codes(&base),
        vec![(
            "role_with_every_tool",
            "roles.front_desk_agent.tools".to_owned()
        )]
    );
    let w = &base.warnings()[0];
    assert_eq!(
        w.location.unwrap().line,
        line_of(
            CLINIC,
            "tools = [\"search_clinic_faq\", \"lookup_appointments\""
        )
    );

    // Each other warning, provoked by one edit.
    for (from, to, code, path) in [
        (
            "tools = [\"issue_refund\"]\nwhen",
            "tools = [\"draft_referral_email\"]\nwhen",
            "irreversible_without_escalation",
            "tools.issue_refund",
        ),
        (
            "read_only = true\ntools = [\"search_clinic_faq\", \"lookup_appointments\", \"read_chart_summary\"]",
            "read_only = true\ntools = [\"search_clinic_faq\", \"lookup_appointments\", \"draft_referral_email\"]",
            "write_tool_in_read_only_role",
            "roles.auditor.tools[2]",
        ),
        (
            "internal = \"standard\", ",
            "",
            "tier_without_retention_class",
            "tiers",
        ),
        (
            "ttl = \"5m\"",
            "ttl = \"2h\"",
            "long_credential_ttl",
            "credentials.grants[0].ttl",
        ),
        // A misspelt path: `issue_refund` has no `refund.amout`, so every refund escalates.
        (
            "path = \"refund.amount\", over = 100",
            "path = \"refund.amout\", over = 100",
            "escalation_path_not_declared",
            "escalation.rules[0].when",
        ),
    ] {
        let p = Policy::from_toml(&edited(from, to)).unwrap();
        let found = codes(&p);
        assert!(
            found.contains(&(code, path.to_owned())),
            "{code} at {path} not in {found:?}"
        );
        assert!(p.warnings().iter().all(|w| w.location.is_some()));
    }
}

/// Two grants for the same role, provider and resource: a change to the second is reported
/// (pairing by identity compared both new grants with the first old one and lost it).
#[test]
fn diff_reports_a_change_to_a_second_grant_of_the_same_identity() {
    use tollgate::policy::diff;
    let grant = "[[credentials.grants]]\nrole = \"front_desk_agent\"\nprovider = \"payments\"\n\
                 tools = [\"issue_refund\"]\noperations = [\"write\"]\n\
                 resource = \"refunds/{compartment}/*\"\n";
    let second = |ttl: &str| {
        edited(
            "ttl = \"2m\"\nmax_uses = 1\n",
            &format!("ttl = \"2m\"\nmax_uses = 1\n\n{grant}ttl = \"{ttl}\"\nmax_uses = 1\n"),
        )
    };
    let (old, new) = (second("1m"), second("2m"));
    let (old, new) = match (Policy::from_toml(&old), Policy::from_toml(&new)) {
        (Ok(o), Ok(n)) => (o, n),
        // Refusing such a document outright would be as good.
        (o, n) => panic!(
            "documents with a repeated grant: {:?} / {:?}",
            o.err(),
            n.err()
        ),
    };
    let changes = diff(&old, &new);
    assert!(
        changes
            .iter()
            .any(|c| c.path.contains("credentials.grants") && c.path.ends_with("ttl")),
        "{changes:#?}"
    );
}

#[test]
fn diff_reports_permissions_and_thresholds_not_text() {
    use tollgate::policy::{ChangeKind, diff};
    let old = clinic();
    // Reformatting is no change at all.
    let same = Policy::from_toml(&CLINIC.replace(" = ", " =  ")).unwrap();
    assert!(diff(&old, &same).is_empty());

    let text = CLINIC
        .replacen(
            "clearance = \"public\"\ntools = [\"search_clinic_faq\"]",
            "clearance = \"internal\"\ntools = [\"search_clinic_faq\", \"fetch_partner_directory\"]",
            1,
        )
        .replacen(
            "read_only = true\ntools = [\"search_clinic_faq\", \"lookup_appointments\", \"read_chart_summary\"]",
            "read_only = true\ntools = [\"search_clinic_faq\", \"lookup_appointments\"]",
            1,
        )
        .replacen("over = 100", "over = 250", 1)
        .replacen("max_calls = 60", "max_calls = 80", 1)
        .replacen("failure_rate = 50", "failure_rate = 40", 1)
        .replacen(
            "[[escalation.rules]]\nid = \"low-confidence-referral\"",
            "[[escalation.rules]]\nid = \"low-confidence-referral-v2\"",
            1,
        );
    let new = Policy::from_toml(&text).unwrap();
    let changes = diff(&old, &new);
    let has =
        |kind: ChangeKind, path: &str| changes.iter().any(|c| c.kind == kind && c.path == path);
    assert!(
        has(
            ChangeKind::Gained,
            "roles.faq_bot x tools.fetch_partner_directory"
        ),
        "{changes:#?}"
    );
    assert!(has(
        ChangeKind::Lost,
        "roles.auditor x tools.read_chart_summary"
    ));
    assert!(has(ChangeKind::Changed, "roles.faq_bot.clearance"));
    assert!(has(
        ChangeKind::Changed,
        "escalation.rules[refund-over-100].when.amount.over"
    ));
    assert!(has(ChangeKind::Changed, "budgets.max_calls"));
    assert!(has(ChangeKind::Changed, "breakers.failure_rate"));
    assert!(has(
        ChangeKind::Added,
        "escalation.rules[low-confidence-referral-v2]"
    ));
    assert!(has(
        ChangeKind::Removed,
        "escalation.rules[low-confidence-referral]"
    ));
    let budget = changes
        .iter()
        .find(|c| c.path == "budgets.max_calls")
        .unwrap();
    assert_eq!(budget.to_string(), "changed  budgets.max_calls: 60 -> 80");
    // Nothing about role tool lists appears except as permissions; the version changed.
    assert!(
        !changes
            .iter()
            .any(|c| c.path.ends_with(".tools") && c.path.starts_with("roles."))
    );
    assert_ne!(old.version(), new.version());
    // The metadata did not change, so nothing under `policy` is reported.
    assert!(
        !changes.iter().any(|c| c.path.starts_with("policy")),
        "{changes:#?}"
    );
}

#[test]
fn explain_dry_runs_every_stage_and_names_the_deciding_rule() {
    use tollgate::policy::{Probe, StageOutcome};
    let p = clinic();
    let stage = |e: &tollgate::policy::Explanation, name: &str| {
        e.stages
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no stage {name}"))
            .clone()
    };

    // A refund over the threshold: allowed by the boundary, sent to a human by rule.
    let refund = r#"{"patient_id":"P-000123","invoice_id":"INV-00001234","refund":{"amount":250,"currency":"USD"},"card_token":"tok_1"}"#;
    let mut probe = Probe::new("front_desk_agent", "issue_refund", refund);
    probe.compartment = Some("P-000123");
    let e = p.explain(&probe);
    assert_eq!(stage(&e, "boundary").outcome, StageOutcome::Pass);
    let esc = stage(&e, "escalation");
    assert_eq!(esc.outcome, StageOutcome::Escalate);
    assert_eq!(esc.rule.as_deref(), Some("refund-over-100"));
    assert_eq!(e.verdict, "escalate");
    assert_eq!(e.rule.as_deref(), Some("refund-over-100"));
    assert!(stage(&e, "credentials").detail.contains("`payments`"));
    assert_eq!(e.policy_version, p.version().to_string());
    let text = e.to_string();
    assert!(
        text.contains("verdict: escalate [refund-over-100]"),
        "{text}"
    );

    // A small refund: allowed.
    let small = refund.replace("250", "40");
    let mut probe = Probe::new("front_desk_agent", "issue_refund", &small);
    probe.compartment = Some("P-000123");
    assert_eq!(p.explain(&probe).verdict, "allow");

    // The FAQ bot reaching for PHI: the boundary denies, and names the rule.
    let e = p.explain(&Probe::new(
        "faq_bot",
        "lookup_appointments",
        r#"{"patient_id":"P-000123"}"#,
    ));
    assert_eq!(stage(&e, "boundary").outcome, StageOutcome::Deny);
    assert!(e.verdict.starts_with("deny:"), "{}", e.verdict);
    assert_eq!(stage(&e, "escalation").outcome, StageOutcome::Skip);

    // A referral with low confidence escalates; with high confidence it passes.
    let referral = r#"{"patient_id":"P-000123","to":"dr.lee@cardiology-partners.example","subject":"Referral","body":"..."}"#;
    let mut probe = Probe::new("front_desk_agent", "draft_referral_email", referral);
    probe.compartment = Some("P-000123");
    probe.confidence = Some(0.5);
    assert_eq!(p.explain(&probe).verdict, "escalate");
    probe.confidence = Some(0.95);
    assert_eq!(p.explain(&probe).verdict, "allow");
}

/// Review finding: a compartment id pattern could close its anchoring group
/// (`P-[0-9]{6})|(.*`) and admit any id; and a tier reordering was invisible to `diff`.
#[test]
fn compartment_patterns_cannot_escape_their_anchors_and_tier_order_is_diffed() {
    let e = err_of(&edited(
        "id_pattern = \"P-[0-9]{6}\"",
        "id_pattern = \"P-[0-9]{6})|(.*\"",
    ));
    assert_eq!(e.path(), Some("compartments.id_pattern"), "{e}");
    assert!(
        tollgate::ActionBoundary::builder()
            .build()
            .unwrap()
            .with_compartment_ids("P-1)|(.*")
            .is_err()
    );

    let swapped = Policy::from_toml(&edited(
        "tiers = [\"public\", \"internal\", \"phi\"]",
        "tiers = [\"public\", \"phi\", \"internal\"]",
    ));
    // Swapping tiers puts `phi` below `internal`: the document still compiles only if every
    // role's clearance admits its tools, so compare what diff says about the lists.
    if let Ok(swapped) = swapped {
        let changes = tollgate::policy::diff(&clinic(), &swapped);
        assert!(
            changes
                .iter()
                .any(|c| c.path == "tiers" && c.kind == tollgate::policy::ChangeKind::Changed),
            "{changes:#?}"
        );
    }
    let reordered = "tiers = [\"a\", \"b\"]\n[policy]\nname = \"x\"\nowner = \"x\"\npurpose = \"x\"\nscope = \"x\"\nliability_owner = \"x\"\nreview_cadence = \"1d\"\ndata_handling = \"x\"\n";
    let a = Policy::from_toml(reordered).unwrap();
    let b = Policy::from_toml(&reordered.replace("[\"a\", \"b\"]", "[\"b\", \"a\"]")).unwrap();
    let changes = tollgate::policy::diff(&a, &b);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0].path, "tiers");
    assert_eq!(
        changes[0].to_string(),
        r#"changed  tiers: ["a","b"] -> ["b","a"]"#
    );
}
