//! Regression test for finding 11 of the attacker review after issue 10: the credential events
//! of a tool (issued, used, refused, revoked at the run's end or by the kill switch) carry the
//! tool's retention class, as its decision does, so retention keeps them as long.

mod review_credentials {
    use std::sync::Arc;

    use secrecy::SecretString;
    use serde_json::{Value, json};
    use tollgate::audit::MemorySink;
    use tollgate::clock::ManualClock;
    use tollgate::credential::StaticSecretProvider;
    use tollgate::escalation::MemoryApprovalStore;
    use tollgate::policy::{Bindings, Policy};
    use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

    const CLINIC: &str = include_str!("../examples/policies/clinic.toml");

    fn clinic_guard(sink: Arc<MemorySink>) -> Guard {
        let policy = Policy::from_toml(CLINIC).unwrap();
        let bindings = Bindings::new()
            .clock(Arc::new(ManualClock::new()))
            .audit(sink)
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider(
                "ehr",
                StaticSecretProvider::new(SecretString::from("ehr-token-1234")),
            )
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("b")),
            );
        Guard::from_policy(&policy, bindings).unwrap()
    }

    /// The `event` names of `events` that start with `credential_`, with their retention class.
    fn credential_events(events: &[Value]) -> Vec<(String, Option<String>)> {
        events
            .iter()
            .filter_map(|e| {
                let name = e["event"].as_str()?;
                name.starts_with("credential_").then(|| {
                    (
                        name.to_owned(),
                        e.get("tollgate.retention")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    )
                })
            })
            .collect()
    }

    fn hipaa(names: &[&str]) -> Vec<(String, Option<String>)> {
        names
            .iter()
            .map(|n| (n.to_string(), Some("hipaa".to_owned())))
            .collect()
    }

    /// The reviewer's attack: `lookup_appointments` is in the `phi` tier (class `hipaa`, kept 6
    /// years); its decision carried the class but its `credential_issued` and `credential_used`
    /// events carried none, so retention kept them 1 year (`default`). Now every credential
    /// event of the tool carries it: issued, used, refused (a resource outside the patient's
    /// scope), and the revocation when the run ends, which comes after the permit is gone.
    #[test]
    fn credential_events_of_a_phi_tool_keep_its_retention_class() {
        let sink = Arc::new(MemorySink::new());
        let guard = clinic_guard(sink.clone());
        let run = guard
            .start_run(RunContext::new("desk-1", "front_desk_agent").in_compartment("P-000123"))
            .unwrap();
        let args = json!({"patient_id": "P-000123"});
        let Verdict::Allow(p) = guard.check(&run, &ToolCall::new("lookup_appointments", &args))
        else {
            panic!("lookup_appointments is allowed in the patient's compartment")
        };
        let cred = p.credential("ehr", "fhir/Patient/P-000123/*").unwrap();
        assert_eq!(
            cred.expose(&p, "fhir/Patient/P-000123/Appointment")
                .unwrap(),
            "ehr-token-1234"
        );
        assert!(
            cred.expose(&p, "fhir/Patient/P-999999/Appointment")
                .is_err()
        );
        p.complete(Outcome::success()).unwrap();
        run.finish().unwrap();

        let events = sink.events();
        let decision = events.iter().find(|e| e["event"] == "decision").unwrap();
        assert_eq!(decision["tollgate.retention"], "hipaa");
        assert_eq!(
            credential_events(&events),
            hipaa(&[
                "credential_issued",
                "credential_used",
                "credential_refused",
                "credential_revoked",
            ])
        );
    }

    /// A refusal before anything is minted (a resource outside the grant) and the kill switch's
    /// revocation (recorded without a run, after the permit and possibly a reload) carry the
    /// class too; a tool of another tier carries its own class, not the PHI one.
    #[test]
    fn refused_mints_and_kill_switch_revocations_keep_the_tools_retention_class() {
        let sink = Arc::new(MemorySink::new());
        let guard = clinic_guard(sink.clone());
        let run = guard
            .start_run(RunContext::new("desk-1", "front_desk_agent").in_compartment("P-000123"))
            .unwrap();
        let args = json!({"patient_id": "P-000123", "section": "allergies"});
        let p = guard
            .check(&run, &ToolCall::new("read_chart_summary", &args))
            .into_permit()
            .unwrap();
        assert!(p.credential("ehr", "fhir/Patient/P-999999/x").is_err());
        let _cred = p
            .credential("ehr", "fhir/Patient/P-000123/AllergyIntolerance")
            .unwrap();
        p.complete(Outcome::success()).unwrap();
        guard.suspend_all("oncall").unwrap();

        assert_eq!(
            credential_events(&sink.events()),
            hipaa(&[
                "credential_refused",
                "credential_issued",
                "credential_revoked"
            ])
        );

        // A tool of the `internal` tier (class `standard`): its refusal carries `standard`.
        guard.resume_all("oncall").unwrap();
        let before = sink.events().len();
        let url = json!({"url": "https://directory.ortho-group.example/dr-lee"});
        let p = guard
            .check(&run, &ToolCall::new("fetch_partner_directory", &url))
            .into_permit()
            .unwrap();
        assert!(p.credential("ehr", "fhir/Patient/P-000123/x").is_err());
        p.complete(Outcome::success()).unwrap();
        assert_eq!(
            credential_events(&sink.events()[before..]),
            [("credential_refused".to_owned(), Some("standard".to_owned()))]
        );
        run.finish().unwrap();
    }
}
