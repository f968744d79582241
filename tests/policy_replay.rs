//! `Policy::replay`: a real log written by a guard under policy A (a session of allowed, denied,
//! escalated and resumed calls, outcomes, a kill switch, loop detection across time), replayed
//! under candidates: exact counts and examples per change, the log's own policy changing
//! nothing, budgets that bind only through recorded outcomes, outcomes matched to the right
//! call, runs the candidate refuses, and a tampered log refused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate::audit::AuditSink;
use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
use tollgate::clock::ManualClock;
use tollgate::escalation::{Approver, Decision, MemoryApprovalStore};
use tollgate::policy::{
    Bindings, DecisionKind, Policy, Probe, ReplayChange, ReplayError, ReplayExample, ReplayReport,
};
use tollgate::{DenyCode, Guard, Outcome, Run, RunContext, ToolCall, Verdict};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("replay", name)
}

/// What differs between the policies of these tests.
struct Knobs {
    search_max: u32,
    pay_max: u32,
    body_max: u32,
    clerk_tools: &'static str,
    role: &'static str,
    record_pattern: &'static str,
    extra: &'static str,
}

const A: Knobs = Knobs {
    search_max: 100,
    pay_max: 1000,
    body_max: 200,
    clerk_tools: r#""search", "read_record", "send_email", "pay", "delete_record""#,
    role: "clerk",
    record_pattern: "R-[0-9]+",
    extra: "",
};

/// A tightened payment limit, a removed tool, a new escalation rule, a loosened search limit.
const B: Knobs = Knobs {
    search_max: 500,
    pay_max: 300,
    body_max: 200,
    clerk_tools: r#""search", "read_record", "send_email", "pay""#,
    role: "clerk",
    record_pattern: "R-[0-9]+",
    extra: r#"
[[escalation.rules]]
id = "unsure-email"
reason = "An e-mail the agent is unsure of goes to a human."
tools = ["send_email"]
when.confidence = { below = 0.5 }
"#,
};

fn policy(k: &Knobs, tail: &str) -> Policy {
    Policy::from_toml(&policy_text(k, tail)).unwrap()
}

fn policy_text(k: &Knobs, tail: &str) -> String {
    format!(
        r#"
tiers = ["public", "internal", "phi"]

[policy]
name = "replay-test"
owner = "platform"
purpose = "test replays"
scope = "tests"
liability_owner = "CTO"
review_cadence = "90d"
data_handling = "test data only"

[tools.search]
effect = "read"
tier = "public"
args.q = {{ type = "string", required = true, max_length = {search_max} }}

[tools.read_record]
effect = "read"
tier = "phi"
args.id = {{ type = "string", required = true, pattern = "{record_pattern}" }}

[tools.send_email]
effect = "write"
tier = "internal"
args.to = {{ type = "string", required = true }}
args.body = {{ type = "string", required = true, max_length = {body_max}, redact = "sensitive" }}

[tools.pay]
effect = "irreversible"
tier = "internal"
args.amount = {{ type = "number", required = true, min = 0, max = {pay_max} }}

[tools.delete_record]
effect = "irreversible"
tier = "phi"
args.id = {{ type = "string", required = true, pattern = "R-[0-9]+" }}

[roles.{role}]
clearance = "phi"
tools = [{tools}]

[escalation]
groups.finance = ["alice"]
defaults = {{ timeout = "1h", on_timeout = "deny", chain = [{{ group = "finance" }}] }}

[[escalation.rules]]
id = "pay-over-500"
reason = "Large payments need finance."
tools = ["pay"]
when.amount = {{ path = "amount", over = 500 }}
{extra}
[loops]
max_repeats = 2
window = "60s"

[audit]
durability = "os_buffered"
{tail}
"#,
        search_max = k.search_max,
        pay_max = k.pay_max,
        body_max = k.body_max,
        role = k.role,
        record_pattern = k.record_pattern,
        tools = k.clerk_tools,
        extra = k.extra,
    )
}

/// A guard under `policy` writing to a file sink in `dir`, on a manual clock.
struct Recorder {
    guard: Guard,
    clock: Arc<ManualClock>,
    sink: Arc<FileSink>,
}

impl Recorder {
    fn new(dir: &Path, policy: &Policy) -> Self {
        let (sink, _) = FileSink::open(
            dir,
            FileSinkConfig::default().durability(Durability::OsBuffered),
        )
        .unwrap();
        let sink = Arc::new(sink);
        let clock = Arc::new(ManualClock::new());
        let guard = policy
            .guard(
                Bindings::new()
                    .audit(sink.clone())
                    .clock(clock.clone())
                    .approvals(Arc::new(MemoryApprovalStore::new())),
            )
            .unwrap();
        Recorder { guard, clock, sink }
    }

    fn run(&self, id: &str) -> Run {
        self.clock.advance(Duration::from_secs(1));
        self.guard
            .start_run_with_id(
                RunContext::new("bot", "clerk"),
                Some(tollgate::RunId::new(id)),
            )
            .unwrap()
    }

    fn allow(&self, run: &Run, call: ToolCall<'_>, outcome: Outcome) {
        self.clock.advance(Duration::from_secs(1));
        match self.guard.check(run, &call) {
            Verdict::Allow(p) => p.complete(outcome).unwrap(),
            v => panic!("{} should be allowed under A: {v:?}", call.tool()),
        }
    }

    fn deny(&self, run: &Run, call: ToolCall<'_>, code: DenyCode) {
        self.clock.advance(Duration::from_secs(1));
        assert_eq!(self.guard.check(run, &call).deny_code(), Some(code));
    }

    fn close(self) {
        self.sink.flush().unwrap();
        drop(self.guard);
        drop(self.sink);
    }
}

/// The session under A. Decisions, and what B makes of them:
///
/// run r1: search short (unchanged), search 200 chars (denied too long; B: would allow), pay 100
/// (unchanged), pay 400 (B: would block), pay 800 (escalated; B: would block), its resumption
/// after approval (allowed; B: would block, resumed), delete R-1 (B: would block, tool
/// removed), delete "bad" (denied by pattern; B: deny reason changed), e-mail at confidence
/// 0.3 and at 0.9 (their bodies are redacted in the log: uncertain; on the placeholders B
/// escalates the first and allows the second), read_record without call id (unchanged);
/// run r2: search, search while the run is suspended (denied), search after resume: unchanged;
/// run r3: the same search twice, a third time (loop), and again after the window: unchanged.
fn record_session(dir: &Path) {
    let r = Recorder::new(dir, &policy(&A, ""));
    let ok = || Outcome::success().with_tokens(10, 5);

    let r1 = r.run("r1");
    r.allow(
        &r1,
        ToolCall::new("search", r#"{"q":"hello"}"#).with_call_id("c1"),
        ok(),
    );
    let long = format!(r#"{{"q":"{}"}}"#, "a".repeat(200));
    r.deny(
        &r1,
        ToolCall::new("search", long.as_str()).with_call_id("c2"),
        DenyCode::ArgumentTooLong,
    );
    r.allow(
        &r1,
        ToolCall::new("pay", r#"{"amount":100}"#).with_call_id("c3"),
        ok(),
    );
    r.allow(
        &r1,
        ToolCall::new("pay", r#"{"amount":400}"#).with_call_id("c4"),
        ok(),
    );
    let big = ToolCall::new("pay", r#"{"amount":800}"#).with_call_id("c5");
    r.clock.advance(Duration::from_secs(1));
    let request = match r.guard.check(&r1, &big) {
        Verdict::Escalate(req) => req,
        v => panic!("pay 800 should escalate under A: {v:?}"),
    };
    r.clock.advance(Duration::from_secs(30));
    r.guard
        .approvals()
        .unwrap()
        .decide(
            &request.id,
            &Approver::new("alice"),
            Decision::Approve,
            "ok",
        )
        .unwrap();
    match r.guard.resume(&r1, &big, &request.ticket()) {
        Verdict::Allow(p) => p.complete(ok()).unwrap(),
        v => panic!("the approved payment should resume: {v:?}"),
    }
    r.allow(
        &r1,
        ToolCall::new("delete_record", r#"{"id":"R-1"}"#).with_call_id("c6"),
        ok(),
    );
    r.deny(
        &r1,
        ToolCall::new("delete_record", r#"{"id":"bad"}"#).with_call_id("c7"),
        DenyCode::ArgumentPattern,
    );
    let email = r#"{"to":"ops@example.com","body":"the quarterly numbers"}"#;
    r.allow(
        &r1,
        ToolCall::new("send_email", email)
            .with_call_id("c8")
            .with_confidence(0.3),
        ok(),
    );
    r.allow(
        &r1,
        ToolCall::new("send_email", email)
            .with_call_id("c9")
            .with_confidence(0.9),
        ok(),
    );
    r.allow(&r1, ToolCall::new("read_record", r#"{"id":"R-2"}"#), ok());
    r1.finish().unwrap();

    let r2 = r.run("r2");
    r.allow(&r2, ToolCall::new("search", r#"{"q":"one"}"#), ok());
    r.guard.suspend_run(&r2, "ops").unwrap();
    r.deny(
        &r2,
        ToolCall::new("search", r#"{"q":"two"}"#),
        DenyCode::Suspended,
    );
    r.guard.resume_run(&r2, "ops").unwrap();
    r.allow(&r2, ToolCall::new("search", r#"{"q":"three"}"#), ok());
    r2.finish().unwrap();

    let r3 = r.run("r3");
    let same = r#"{"q":"same"}"#;
    r.allow(&r3, ToolCall::new("search", same), ok());
    r.allow(&r3, ToolCall::new("search", same), ok());
    r.deny(&r3, ToolCall::new("search", same), DenyCode::LoopDetected);
    r.clock.advance(Duration::from_secs(120));
    r.allow(&r3, ToolCall::new("search", same), ok());
    r3.finish().unwrap();
    r.close();
}

fn codes(e: &ReplayExample) -> (String, Option<String>, String, Option<String>, bool, bool) {
    (
        e.old.decision.as_str().to_owned(),
        e.old.code.clone(),
        e.new.decision.as_str().to_owned(),
        e.new.code.clone(),
        e.uncertain.is_some(),
        e.resumed,
    )
}

fn ex(
    old: &str,
    old_code: Option<&str>,
    new: &str,
    new_code: Option<&str>,
    uncertain: bool,
    resumed: bool,
) -> (String, Option<String>, String, Option<String>, bool, bool) {
    (
        old.to_owned(),
        old_code.map(str::to_owned),
        new.to_owned(),
        new_code.map(str::to_owned),
        uncertain,
        resumed,
    )
}

fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn tightened_and_loosened_candidate_reports_each_change_with_examples() {
    let dir = temp_dir("b");
    record_session(dir.path());
    let before = dir_bytes(dir.path());
    let candidate = policy(&B, "");
    let report = candidate.replay(dir.path()).run().unwrap();

    assert!(report.verified);
    assert_eq!(report.candidate_version, candidate.version());
    assert_eq!((report.runs, report.decisions), (3, 18));
    let c = report.changes;
    assert_eq!(
        (
            c.would_block,
            c.would_allow,
            c.would_escalate,
            c.deny_reason_changed,
            c.unchanged
        ),
        (4, 1, 0, 1, 10),
        "{report}"
    );
    // The two e-mails' bodies are redacted in the log: counted apart, by what the candidate
    // made of the placeholders, and in no change count.
    assert_eq!(report.uncertain.total(), 2);
    assert_eq!(report.uncertain.would_escalate, 1);
    assert_eq!(report.uncertain.unchanged, 1);
    assert_eq!(
        report.changes.total() + report.uncertain.total() + report.skipped,
        report.decisions
    );
    assert_eq!(report.resumed, 1);
    assert_eq!(
        (
            report.skipped,
            report.refused_runs,
            report.unmatched_outcomes
        ),
        (0, 0, 0)
    );

    let tools: Vec<(&str, u64, u64, u64, u64)> = report
        .per_tool
        .iter()
        .map(|(t, c)| {
            (
                t.as_str(),
                c.would_block,
                c.would_allow,
                c.would_escalate,
                c.deny_reason_changed,
            )
        })
        .collect();
    assert_eq!(
        tools,
        [
            ("delete_record", 1, 0, 0, 1),
            ("pay", 3, 0, 0, 0),
            ("search", 0, 1, 0, 0),
        ]
    );

    let blocked: Vec<_> = report
        .examples_of(ReplayChange::WouldBlock)
        .iter()
        .map(|e| (e.tool.as_str(), e.call_id.as_deref(), codes(e)))
        .collect();
    let range = Some("argument_out_of_range");
    assert_eq!(
        blocked,
        [
            (
                "pay",
                Some("c4"),
                ex("allow", None, "deny", range, false, false)
            ),
            (
                "pay",
                Some("c5"),
                ex("escalate", None, "deny", range, false, false)
            ),
            (
                "pay",
                Some("c5"),
                ex("allow", None, "deny", range, false, true)
            ),
            (
                "delete_record",
                Some("c6"),
                ex(
                    "allow",
                    None,
                    "deny",
                    Some("tool_not_allowed"),
                    false,
                    false
                )
            ),
        ]
    );
    let escalated_then = &report.examples_of(ReplayChange::WouldBlock)[1];
    assert_eq!(escalated_then.old.rule.as_deref(), Some("pay-over-500"));
    assert_eq!(escalated_then.run, "r1");

    let allowed = &report.examples_of(ReplayChange::WouldAllow);
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0].call_id.as_deref(), Some("c2"));
    assert_eq!(
        codes(&allowed[0]),
        ex(
            "deny",
            Some("argument_too_long"),
            "allow",
            None,
            false,
            false
        )
    );

    assert!(report.examples_of(ReplayChange::WouldEscalate).is_empty());
    let uncertain: Vec<_> = report
        .uncertain_examples
        .iter()
        .map(|e| (e.call_id.as_deref(), codes(e)))
        .collect();
    assert_eq!(
        uncertain,
        [
            (Some("c8"), ex("allow", None, "escalate", None, true, false)),
            (Some("c9"), ex("allow", None, "allow", None, true, false)),
        ]
    );
    assert_eq!(
        report.uncertain_examples[0].new.rule.as_deref(),
        Some("unsure-email")
    );
    // No certain example is marked uncertain.
    assert!(
        report
            .examples
            .values()
            .flatten()
            .all(|e| e.uncertain.is_none() && e.tool != "send_email")
    );

    let reason = &report.examples_of(ReplayChange::DenyReasonChanged);
    assert_eq!(reason.len(), 1);
    assert_eq!(
        codes(&reason[0]),
        ex(
            "deny",
            Some("argument_pattern"),
            "deny",
            Some("tool_not_allowed"),
            false,
            false
        )
    );
    assert!(report.examples_of(ReplayChange::Unchanged).is_empty());
    // Examples are in log order.
    let seqs: Vec<u64> = report
        .examples_of(ReplayChange::WouldBlock)
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // The summary says the same.
    let text = report.to_string();
    assert!(
        text.contains("would block                       4"),
        "{text}"
    );
    assert!(
        text.contains("would escalate                    0            1"),
        "{text}"
    );
    assert!(
        text.contains(
            "total: 6 of 18 decisions would change; 2 more cannot be determined, 1 of them \
             changed without what the log lacks"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "UNCERTAIN (first 2 of 2), not counted as changes:\n  2 with redacted or omitted \
             arguments: "
        ),
        "{text}"
    );
    assert!(!text.contains("[flow]"), "{text}");
    assert!(
        text.contains("send_email (call c8): allow -> escalate [unsure-email] (on placeholders)"),
        "{text}"
    );

    // The replay wrote nothing: the log is byte for byte what it was.
    assert_eq!(dir_bytes(dir.path()), before);

    // Fewer examples when asked.
    let one = candidate.replay(dir.path()).examples(1).run().unwrap();
    assert_eq!(one.examples_of(ReplayChange::WouldBlock).len(), 1);
    assert_eq!(one.changes, report.changes);
}

#[test]
fn replaying_a_log_under_its_own_policy_changes_nothing() {
    // Loop windows, the kill switch, the escalation and its resumption all come out as they
    // were: the clock follows the records, kill-switch records are replayed, and a resumed
    // call is not sent to the gate again.
    let dir = temp_dir("same");
    record_session(dir.path());
    let report = policy(&A, "").replay(dir.path()).run().unwrap();
    assert_eq!(report.decisions, 18);
    // The two e-mails with redacted bodies are uncertain even here: the same decision on the
    // placeholders is no proof of the same decision on the values.
    assert_eq!(report.changes.unchanged, 16, "{report}");
    assert_eq!(report.uncertain.unchanged, 2, "{report}");
    assert_eq!(report.uncertain.changed(), 0, "{report}");
    assert_eq!(report.changed(), 0);
    assert_eq!(report.resumed, 1);
    assert!(report.per_tool.is_empty());
    assert_eq!(report.unmatched_outcomes, 0);
}

#[test]
fn token_budget_that_binds_only_through_recorded_outcomes_is_replayed() {
    // Under A there is no token budget; each call reports 300 tokens. The candidate allows
    // 1000 tokens and reserves 100 per call: the fifth call finds 1200 used, which only the
    // recorded outcomes can tell.
    let dir = temp_dir("tokens");
    let r = Recorder::new(dir.path(), &policy(&A, ""));
    let run = r.run("t1");
    for i in 0..5 {
        let args = format!(r#"{{"q":"question {i}"}}"#);
        r.allow(
            &run,
            ToolCall::new("search", args.as_str()),
            Outcome::success().with_tokens(200, 100),
        );
    }
    run.finish().unwrap();
    r.close();

    let candidate = policy(
        &A,
        "\n[budgets]\nmax_tokens = 1000\ntokens_per_call = 100\n",
    );
    let report = candidate.replay(dir.path()).run().unwrap();
    assert_eq!(report.decisions, 5);
    assert_eq!(report.changes.would_block, 1, "{report}");
    assert_eq!(report.changes.unchanged, 4);
    let e = &report.examples_of(ReplayChange::WouldBlock)[0];
    assert_eq!(e.new.code.as_deref(), Some("budget_exhausted"));
    assert_eq!(e.new.rule.as_deref(), Some("guard.budget.max_tokens"));

    // With room for the whole session, nothing changes.
    let roomy = policy(
        &A,
        "\n[budgets]\nmax_tokens = 1500\ntokens_per_call = 100\n",
    );
    assert_eq!(roomy.replay(dir.path()).run().unwrap().changed(), 0);
}

#[test]
fn outcome_of_a_call_the_candidate_denies_does_not_complete_another_call() {
    // Two calls of one tool without call ids, both running at once under A; the candidate
    // denies the first. Its outcome (900 tokens) must be consumed as the first call's, not
    // charged to the second (10 tokens), or the candidate's 500-token budget would deny the
    // third call.
    let dir = temp_dir("fifo");
    let r = Recorder::new(dir.path(), &policy(&A, ""));
    let run = r.run("f1");
    let first = ToolCall::new("read_record", r#"{"id":"R-9"}"#);
    let second = ToolCall::new("read_record", r#"{"id":"R-1"}"#);
    let p1 = r.guard.check(&run, &first).into_permit().unwrap();
    let p2 = r.guard.check(&run, &second).into_permit().unwrap();
    r.clock.advance(Duration::from_secs(1));
    p1.complete(Outcome::success().with_tokens(800, 100))
        .unwrap();
    p2.complete(Outcome::success().with_tokens(5, 5)).unwrap();
    r.allow(
        &run,
        ToolCall::new("read_record", r#"{"id":"R-2"}"#),
        Outcome::success(),
    );
    run.finish().unwrap();
    r.close();

    let narrower = Knobs {
        record_pattern: "R-[0-8]",
        ..A
    };
    let candidate = policy(&narrower, "\n[budgets]\nmax_tokens = 500\n");
    let report = candidate.replay(dir.path()).run().unwrap();
    assert_eq!(report.decisions, 3);
    assert_eq!(report.changes.would_block, 1, "{report}");
    assert_eq!(report.changes.unchanged, 2, "{report}");
    assert_eq!(
        report.examples_of(ReplayChange::WouldBlock)[0]
            .new
            .code
            .as_deref(),
        Some("argument_pattern")
    );
    assert_eq!(report.unmatched_outcomes, 0);
}

#[test]
fn run_the_candidate_cannot_start_counts_its_calls_as_denied() {
    let dir = temp_dir("refused");
    record_session(dir.path());
    let renamed = Knobs {
        role: "assistant",
        ..A
    };
    let report = policy(&renamed, "").replay(dir.path()).run().unwrap();
    assert_eq!(report.refused_runs, 3);
    assert_eq!(report.decisions, 18);
    // Every call allowed or escalated then is blocked; the denials change their reason.
    assert_eq!(report.changes.would_block, 14, "{report}");
    assert_eq!(report.changes.deny_reason_changed, 4, "{report}");
    // A call refused before its arguments are read is decided for certain, redacted or not.
    assert_eq!(report.uncertain.total(), 0, "{report}");
    let e = &report.examples_of(ReplayChange::WouldBlock)[0];
    assert_eq!(e.new.decision, DecisionKind::Deny);
    assert_eq!(e.new.code.as_deref(), Some("unknown_role"));
    assert_eq!(e.new.rule.as_deref(), Some("roles.clerk"));
}

#[test]
fn calls_the_candidates_flow_rules_check_are_uncertain() {
    // The candidate adds a flow rule: a search query must come from the user or a trusted
    // source. Where the recorded queries came from is not in the log, so every search that
    // reaches the flow stage is uncertain; the two searches an earlier stage denies (too long,
    // the loop) and the one during the suspension stay certain.
    let dir = temp_dir("flow");
    record_session(dir.path());
    let flow = r#"
[flow]
default_output = { integrity = "untrusted", tier = "internal" }
[flow.tools.search.args.q]
accepts = ["user", "trusted"]
on_violation = "escalate"
"#;
    let candidate = policy(&A, flow);
    let report = candidate.replay(dir.path()).run().unwrap();
    assert_eq!(report.decisions, 18);
    // Searches: 9 in all; 6 allowed before the flow stage, 3 denied before it.
    assert_eq!(report.uncertain_flow, 6, "{report}");
    assert_eq!(report.uncertain_redacted, 2, "{report}");
    assert_eq!(report.uncertain.total(), 8, "{report}");
    assert_eq!(report.changes.total(), 10, "{report}");
    assert_eq!(report.changed(), 0, "{report}");
    let searches: Vec<_> = report
        .uncertain_examples
        .iter()
        .filter(|e| e.tool == "search")
        .map(|e| e.uncertain.unwrap())
        .collect();
    assert!(!searches.is_empty());
    assert!(
        searches
            .iter()
            .all(|u| u.flow_provenance && !u.redacted_arguments)
    );
    let text = report.to_string();
    assert!(
        text.contains("  6 checked by the candidate's [flow] rules: "),
        "{text}"
    );
    assert!(
        text.contains("run r1 search (call c1): allow -> allow (flow rules not applied)"),
        "{text}"
    );

    // Without the flow rule the same searches are certain.
    let plain = policy(&A, "").replay(dir.path()).run().unwrap();
    assert_eq!(plain.uncertain_flow, 0);
    assert_eq!(plain.changes.total(), 16);
}

#[test]
fn the_candidates_modes_act_on_its_decisions_as_the_guard_would() {
    // B, with payments shadowed, record deletions turned into recommendations and record reads
    // supervised. Shadow runs pay 400 and the escalated pay 800 that B alone would block;
    // recommend turns the deletion B blocks (tool removed) into a recommendation; supervised
    // sends the record read to a human.
    let dir = temp_dir("modes");
    record_session(dir.path());
    let modes = r#"
[modes]
rules = [
  { tool = "pay", mode = "shadow" },
  { tool = "delete_record", mode = "recommend" },
  { tool = "read_record", mode = "supervised" },
]
"#;
    let report = policy(&B, modes).replay(dir.path()).run().unwrap();
    let c = report.changes;
    assert_eq!(
        (
            c.would_block,
            c.would_allow,
            c.would_escalate,
            c.deny_reason_changed,
            c.unchanged
        ),
        (1, 2, 1, 1, 11),
        "{report}"
    );
    assert_eq!(report.uncertain.total(), 2, "{report}");
    let pick = |change: ReplayChange| -> Vec<(String, Option<String>, Option<String>)> {
        report
            .examples_of(change)
            .iter()
            .map(|e| (e.tool.clone(), e.new.code.clone(), e.new.rule.clone()))
            .collect()
    };
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        pick(ReplayChange::WouldBlock),
        [(
            "delete_record".to_owned(),
            s("recommended"),
            s("modes.rules[1]")
        )]
    );
    assert_eq!(
        pick(ReplayChange::DenyReasonChanged),
        [(
            "delete_record".to_owned(),
            s("recommended"),
            s("modes.rules[1]")
        )]
    );
    assert_eq!(
        pick(ReplayChange::WouldEscalate),
        [("read_record".to_owned(), None, s("modes.rules[2]"))]
    );
    let allowed: Vec<_> = report
        .examples_of(ReplayChange::WouldAllow)
        .iter()
        .map(|e| (e.tool.as_str(), e.old.decision))
        .collect();
    assert_eq!(
        allowed,
        [
            ("search", DecisionKind::Deny),
            ("pay", DecisionKind::Escalate)
        ]
    );
    assert_eq!(report.unmatched_outcomes, 0, "{report}");
}

#[test]
fn redacted_arguments_are_uncertain_never_guessed() {
    // The candidate limits e-mail bodies to 20 characters. The recorded bodies are the
    // placeholder `[REDACTED:sensitive]` (20 characters: it passes); the agent's real body,
    // "the quarterly numbers", has 21 and is refused. Counting the placeholder's result would
    // report the e-mails as unchanged: they are uncertain instead.
    let dir = temp_dir("redacted");
    record_session(dir.path());
    let candidate = policy(&Knobs { body_max: 20, ..A }, "");
    let verdict = |body: &str| {
        let args = format!(r#"{{"to":"ops@example.com","body":"{body}"}}"#);
        candidate
            .explain(&Probe::new("clerk", "send_email", &args))
            .verdict
    };
    assert_eq!(
        verdict("the quarterly numbers"),
        "deny:argument_too_long",
        "the real value is refused"
    );
    assert_eq!(
        verdict("[REDACTED:sensitive]"),
        "allow",
        "the placeholder passes"
    );

    let report = candidate.replay(dir.path()).run().unwrap();
    assert_eq!(report.decisions, 18);
    assert_eq!(report.changes.total(), 16, "{report}");
    assert_eq!(report.changed(), 0, "{report}");
    assert_eq!(report.uncertain.total(), 2, "{report}");
    assert_eq!(report.uncertain.unchanged, 2, "{report}");
    let tools: Vec<_> = report
        .uncertain_examples
        .iter()
        .map(|e| {
            let u = e.uncertain.unwrap();
            (
                e.tool.as_str(),
                e.call_id.as_deref(),
                u.redacted_arguments,
                u.flow_provenance,
            )
        })
        .collect();
    assert_eq!(
        tools,
        [
            ("send_email", Some("c8"), true, false),
            ("send_email", Some("c9"), true, false)
        ]
    );
    assert_eq!((report.uncertain_redacted, report.uncertain_flow), (2, 0));
    assert!(report.per_tool.is_empty());

    // Under a limit the placeholder fails too, still uncertain: never a would-block.
    let tighter = policy(&Knobs { body_max: 10, ..A }, "");
    let report = tighter.replay(dir.path()).run().unwrap();
    assert_eq!(report.changes.would_block, 0, "{report}");
    assert_eq!(report.uncertain.would_block, 2, "{report}");
    assert!(report.examples_of(ReplayChange::WouldBlock).is_empty());
}

#[test]
fn progress_is_reported_and_the_report_serialises() {
    let dir = temp_dir("progress");
    record_session(dir.path());
    let seen = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let (s, c) = (seen.clone(), calls.clone());
    let report: ReplayReport = policy(&B, "")
        .replay(dir.path())
        .progress(move |p| {
            s.store(p.records, Ordering::Relaxed);
            c.fetch_add(1, Ordering::Relaxed);
        })
        .run()
        .unwrap();
    // Called once per record, the last time with all of them.
    assert_eq!(seen.load(Ordering::Relaxed), report.records);
    assert_eq!(calls.load(Ordering::Relaxed), report.records);
    assert!(report.records > report.decisions);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["changes"]["would_block"], 4);
    assert_eq!(json["uncertain_examples"][0]["new"]["rule"], "unsure-email");
    assert_eq!(json["uncertain"]["would_escalate"], 1);
    assert_eq!(json["uncertain_examples"][0]["call_id"], "c8");
    assert_eq!(
        json["uncertain_examples"][0]["uncertain"]["redacted_arguments"],
        true
    );
    assert_eq!(json["uncertain_redacted"], 2);
    assert!(json["elapsed_secs"].is_f64());
}

#[path = "policy_replay/log_integrity.rs"]
mod log_integrity;

/// `tollgate policy replay`, run as a real process.
#[cfg(feature = "cli")]
#[path = "policy_replay/cli.rs"]
mod cli;
