//! Hot reload of a whole policy document: atomic under load, state carried over, fixed parts
//! and signatures enforced, every reload recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use secrecy::SecretString;
use serde_json::json;
use tollgate::audit::MemorySink;
use tollgate::breaker::State;
use tollgate::clock::ManualClock;
use tollgate::credential::StaticSecretProvider;
use tollgate::escalation::MemoryApprovalStore;
use tollgate::guard::ReloadError;
use tollgate::policy::{Bindings, Policy, ReviewerKey, SignatureFile, Trust};
use tollgate::{DenyCode, Guard, Outcome, RunContext, ToolCall, Verdict};

#[path = "common/tempdir.rs"]
mod tempdir;

const HEADER: &str = r#"
[policy]
name = "payments"
owner = "finance platform"
purpose = "pay supplier invoices"
scope = "accounts payable"
liability_owner = "CFO"
review_cadence = "90d"
data_handling = "no personal data"

[tools.pay]
effect = "irreversible"
args.amount = { type = "number", required = true, min = 0, max = MAX }

[tools.flaky]
effect = "read"

[roles.clerk]
tools = ["pay", "flaky"]

[escalation]
groups.finance = ["fin-1"]
defaults = { timeout = "1h", chain = [{ group = "finance" }] }
approvals = { max_pending = 1000000 }

[[escalation.rules]]
id = "large"
tools = ["pay"]
when.amount = { path = "amount", over = OVER }

[breakers]
key = "tool"
max_keys = 16
window = { calls = 10 }
minimum_calls = 5
failure_rate = 50
wait_in_open = "1h"

[budgets]
max_calls = 400

[audit]
"#;

/// Policy A: amounts up to 100, over 50 to a human. Policy B: up to 200, over 150.
fn policy(max: u32, over: u32) -> Policy {
    let text = HEADER
        .replace("MAX", &max.to_string())
        .replace("OVER", &over.to_string());
    Policy::from_toml(&text).unwrap()
}

fn bindings(sink: Arc<MemorySink>, clock: Arc<ManualClock>) -> Bindings {
    Bindings::new()
        .clock(clock)
        .audit(sink)
        .approvals(Arc::new(MemoryApprovalStore::new()))
}

/// What each policy decides for an amount: the expected verdict kind under that version.
fn expected(max: u32, over: u32, amount: u32) -> &'static str {
    if amount > max {
        "deny"
    } else if amount > over {
        "escalate"
    } else {
        "allow"
    }
}

/// 8 threads check while another reloads 1,000 times between two policies: every verdict is
/// the one its recorded version decides (no call is decided by a mixture of the two), budgets
/// stay exact, a tripped breaker stays open, and every reload is in the audit trail.
#[test]
fn reload_under_load_never_mixes_policies_and_loses_no_state() {
    let (a, b) = (policy(100, 50), policy(200, 150));
    let sink = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new());
    let guard = Guard::from_policy(&a, bindings(sink.clone(), clock.clone())).unwrap();
    let expect = |version, amount| {
        if version == a.version() {
            expected(100, 50, amount)
        } else if version == b.version() {
            expected(200, 150, amount)
        } else {
            panic!("a verdict under an unknown version")
        }
    };

    // Trip the breaker of `flaky` before the storm: the breakers' settings are the same in both
    // policies, so it must stay open through every reload.
    let run0 = guard.start_run(RunContext::new("setup", "clerk")).unwrap();
    for _ in 0..6 {
        if let Verdict::Allow(p) = guard.check(&run0, &ToolCall::new("flaky", "{}")) {
            p.complete(Outcome::error("503")).unwrap();
        }
    }
    assert_eq!(
        guard
            .check(&run0, &ToolCall::new("flaky", "{}"))
            .deny_code(),
        Some(DenyCode::CircuitOpen)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for t in 0..8u32 {
            let (guard, stop, checked) = (&guard, stop.clone(), checked.clone());
            scope.spawn(move || {
                let run = guard
                    .start_run(RunContext::new(format!("agent-{t}"), "clerk"))
                    .unwrap();
                let mut i = 0u32;
                while !stop.load(Ordering::Acquire) || i < 200 {
                    // Amounts on every side of both policies' limits; a run's budget (400 calls)
                    // only counts allowed calls.
                    let amount = [10, 60, 120, 170, 250][(i % 5) as usize];
                    i += 1;
                    let args = json!({ "amount": amount });
                    let verdict = guard.check(&run, &ToolCall::new("pay", &args));
                    let (kind, version) = match &verdict {
                        Verdict::Allow(p) => ("allow", p.policy_version()),
                        Verdict::Escalate(r) => ("escalate", r.policy_version),
                        Verdict::Deny(d) if d.code() == DenyCode::BudgetExhausted => break,
                        Verdict::Deny(d) => ("deny", d.policy_version().unwrap()),
                    };
                    assert_eq!(kind, expect(version, amount), "amount {amount}");
                    if let Verdict::Allow(p) = verdict {
                        p.complete(Outcome::success()).unwrap();
                    }
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for i in 0..1000 {
            let next = if i % 2 == 0 { &b } else { &a };
            guard.reload(next, "load-test").unwrap();
        }
        stop.store(true, Ordering::Release);
    });
    assert!(checked.load(Ordering::Relaxed) >= 8 * 200);

    // Every reload is in the trail, with who reloaded.
    let reloads: Vec<_> = sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "policy_reloaded")
        .collect();
    assert_eq!(reloads.len(), 1000);
    assert!(
        reloads
            .iter()
            .all(|e| e["tollgate.reloaded_by"] == "load-test")
    );
    assert!(
        reloads
            .iter()
            .all(|e| e["tollgate.breakers_reset"] == false)
    );

    // The breaker is still open.
    assert_eq!(
        guard
            .check(&run0, &ToolCall::new("flaky", "{}"))
            .deny_code(),
        Some(DenyCode::CircuitOpen)
    );

    // Budgets carried over exactly: a fresh run makes exactly 400 allowed calls across reloads.
    let run = guard.start_run(RunContext::new("budget", "clerk")).unwrap();
    let mut allowed = 0;
    for i in 0..1000 {
        if i % 50 == 0 {
            guard
                .reload(if i % 100 == 0 { &a } else { &b }, "ops")
                .unwrap();
        }
        match guard.check(&run, &ToolCall::new("pay", r#"{"amount": 10}"#)) {
            Verdict::Allow(p) => {
                allowed += 1;
                p.complete(Outcome::success()).unwrap();
            }
            Verdict::Deny(d) => {
                assert_eq!(d.code(), DenyCode::BudgetExhausted);
                break;
            }
            Verdict::Escalate(_) => panic!("10 never escalates"),
        }
    }
    assert_eq!(allowed, 400);
}

#[test]
fn parts_bound_at_build_time_cannot_change_by_reload() {
    let clinic = include_str!("../examples/policies/clinic.toml");
    let base = Policy::from_toml(clinic).unwrap();
    let guard = Guard::from_policy(
        &base,
        Bindings::new()
            .audit(Arc::new(MemorySink::new()))
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider("ehr", StaticSecretProvider::new(SecretString::from("a")))
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("b")),
            ),
    )
    .unwrap();
    let edit = |from: &str, to: &str| {
        assert!(clinic.contains(from), "{from}");
        Policy::from_toml(&clinic.replacen(from, to, 1)).unwrap()
    };
    for (from, to, part) in [
        ("ttl = \"2m\"", "ttl = \"3m\"", "credentials"),
        (
            "durability = \"every_record\"",
            "durability = \"os_buffered\"",
            "audit",
        ),
        (
            "groups.practice_manager = [\"dana.whitfield\"]",
            "groups.practice_manager = [\"mallory\"]",
            "escalation.groups",
        ),
        (
            "grant_ttl = \"10m\"",
            "grant_ttl = \"1h\"",
            "escalation.approvals",
        ),
    ] {
        let err = guard.reload(&edit(from, to), "ops").unwrap_err();
        assert!(
            matches!(err, ReloadError::Fixed(p) if p == part),
            "{part}: {err}"
        );
    }
    // A boundary-only reload in between does not make the guard forget what it was bound to.
    guard
        .reload_boundary(
            tollgate::ActionBoundary::compile(base.boundary().document().clone()).unwrap(),
            "ops",
        )
        .unwrap();
    assert!(matches!(
        guard.reload(&edit("ttl = \"2m\"", "ttl = \"3m\""), "ops"),
        Err(ReloadError::Fixed("credentials"))
    ));
    // What may change, does.
    let v = guard
        .reload(&edit("max_calls = 60", "max_calls = 61"), "ops")
        .unwrap();
    assert_ne!(v, guard.policy_version());
}

#[test]
fn a_guard_that_requires_signatures_reloads_only_signed_documents() {
    let key = ReviewerKey::generate().unwrap();
    let trust = Trust::new([key.public()], 1).unwrap();
    let (a, b) = (policy(100, 50), policy(100_000, 50_000));
    let mut sigs_a = SignatureFile::default();
    sigs_a.add(key.sign(&a, "Compliance").unwrap());
    let guard = Guard::from_policy(
        &a,
        bindings(Arc::new(MemorySink::new()), Arc::new(ManualClock::new()))
            .require_signed(trust, sigs_a.clone()),
    )
    .unwrap();
    // Unsigned, or signed for another version: refused, and the policy in force stays.
    assert!(matches!(
        guard.reload(&b, "ops"),
        Err(ReloadError::Unsigned(_))
    ));
    assert!(matches!(
        guard.reload_signed(&b, &sigs_a, "ops"),
        Err(ReloadError::Unsigned(_))
    ));
    assert!(matches!(
        guard.reload_boundary(b.boundary().document().clone().try_into_boundary(), "ops"),
        Err(ReloadError::Unsigned(_))
    ));
    assert_eq!(guard.policy_version(), a.version());
    let mut sigs_b = SignatureFile::default();
    sigs_b.add(key.sign(&b, "Compliance").unwrap());
    guard.reload_signed(&b, &sigs_b, "ops").unwrap();
    assert_eq!(guard.policy_version(), b.version());
}

trait IntoBoundary {
    fn try_into_boundary(self) -> tollgate::ActionBoundary;
}

impl IntoBoundary for tollgate::boundary::PolicyDocument {
    fn try_into_boundary(self) -> tollgate::ActionBoundary {
        tollgate::ActionBoundary::compile(self).unwrap()
    }
}

/// A breaker an operator forced open stays open when a reload changes the breakers' settings;
/// the reload records that the other breakers start afresh.
#[test]
fn a_forced_open_breaker_survives_a_settings_change_and_the_reset_is_recorded() {
    let sink = Arc::new(MemorySink::new());
    let a = policy(100, 50);
    let guard =
        Guard::from_policy(&a, bindings(sink.clone(), Arc::new(ManualClock::new()))).unwrap();
    let run = guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    guard
        .check(&run, &ToolCall::new("flaky", "{}"))
        .into_permit()
        .unwrap()
        .complete(Outcome::success())
        .unwrap();
    let breakers = guard.breakers().unwrap();
    breakers.get("", "flaky").unwrap().breaker.force_open();
    let text = HEADER
        .replace("MAX", "100")
        .replace("OVER", "50")
        .replace("failure_rate = 50", "failure_rate = 40");
    guard
        .reload(&Policy::from_toml(&text).unwrap(), "ops")
        .unwrap();
    let now = guard.breakers().unwrap();
    assert_eq!(
        now.get("", "flaky").unwrap().breaker.state(),
        State::ForcedOpen
    );
    assert_eq!(
        guard.check(&run, &ToolCall::new("flaky", "{}")).deny_code(),
        Some(DenyCode::CircuitOpen)
    );
    let reload = sink
        .events()
        .into_iter()
        .find(|e| e["event"] == "policy_reloaded")
        .unwrap();
    assert_eq!(reload["tollgate.breakers_reset"], true);
}

mod watcher {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tollgate::Guard;
    use tollgate::audit::MemorySink;
    use tollgate::breaker::{AlertKind, ChannelAlerts};
    use tollgate::clock::ManualClock;
    use tollgate::escalation::MemoryApprovalStore;
    use tollgate::policy::{Bindings, Policy, PolicyWatcher, WatchOutcome};

    fn text(max: u32) -> String {
        super::HEADER
            .replace("MAX", &max.to_string())
            .replace("OVER", "50")
    }

    /// A changed file is installed and recorded as reloaded by the watcher; an invalid one is
    /// not installed, the policy in force stays, and an alert names the error.
    #[test]
    fn the_watcher_installs_valid_changes_and_keeps_the_old_policy_on_errors() {
        let dir = super::tempdir::temp_dir("watch", "policy");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, text(100)).unwrap();
        let sink = Arc::new(MemorySink::new());
        let (alerts, rx) = ChannelAlerts::new(16);
        let guard = Guard::from_policy(
            &Policy::from_file(&path).unwrap(),
            Bindings::new()
                .clock(Arc::new(ManualClock::new()))
                .audit(sink.clone())
                .alerts(Arc::new(alerts))
                .approvals(Arc::new(MemoryApprovalStore::new())),
        )
        .unwrap();
        let watcher = PolicyWatcher::new(guard.clone(), &path);
        assert_eq!(watcher.check_now(), WatchOutcome::Unchanged);

        std::fs::write(&path, text(200)).unwrap();
        let v200 = Policy::from_toml(&text(200)).unwrap().version();
        assert!(
            matches!(watcher.check_now(), WatchOutcome::Reloaded { current, .. } if current == v200)
        );
        assert_eq!(guard.policy_version(), v200);
        let reload = sink
            .events()
            .into_iter()
            .find(|e| e["event"] == "policy_reloaded")
            .unwrap();
        assert!(
            reload["tollgate.reloaded_by"]
                .as_str()
                .unwrap()
                .starts_with("file-watcher:")
        );

        std::fs::write(&path, text(300).replace("max_keys = 16", "max_key = 16")).unwrap();
        assert!(matches!(watcher.check_now(), WatchOutcome::Rejected(e) if e.contains("max_key")));
        assert_eq!(guard.policy_version(), v200, "the policy in force stays");
        let alert = rx.try_recv().unwrap();
        assert_eq!(alert.kind, AlertKind::PolicyRejected);
        assert!(alert.detail.contains("unknown field"), "{}", alert.detail);
        // Looking again at the same broken file does not alert twice.
        assert_eq!(watcher.check_now(), WatchOutcome::Unchanged);
        assert!(rx.try_recv().is_err());
        drop(watcher);

        // On its own thread: a valid change is picked up within a few intervals.
        let watcher =
            PolicyWatcher::spawn(guard.clone(), &path, Duration::from_millis(10)).unwrap();
        std::fs::write(&path, text(400)).unwrap();
        let v400 = Policy::from_toml(&text(400)).unwrap().version();
        let deadline = Instant::now() + Duration::from_secs(10);
        while guard.policy_version() != v400 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(guard.policy_version(), v400);
        drop(watcher);
    }
}
