//! tollgate, agentmesh 4 and cedar-policy 4 on the same decisions, in one criterion run
//! (issue 12).
//!
//! The decision: agent `agent-7`, role `clerk`, proposes `pay_invoice` with the raw JSON
//! arguments `{"invoice":"INV-004711","amount":1250.5,"currency":"EUR"}`. The role may call ten
//! tools, `pay_invoice` last in the list. Three argument rules: `amount` a number in
//! [0.01, 10000], `currency` one of USD/EUR/GBP, `invoice` matching `INV-[0-9]{6}`.
//!
//! Scenarios (criterion groups), each with one function per engine:
//! - `allowlist`: may the role call the tool? No arguments looked at.
//! - `allowlist_args`: the same plus the three argument rules, from the raw JSON text.
//! - `audited`: the decision as a deployment runs it, recording it.
//! - `audited_after_100k`: the same, measured after 100 000 records are already in the log.
//! - `extra`: reference rows (tollgate's guard with every runtime primitive and no sink;
//!   agentmesh's governance call alone, the figure issue 12 quotes).
//!
//! What each engine does per scenario is written next to its code and in
//! `/work/notes/peerbench.md`; where an engine cannot express a rule, the comment says so.
//! After the run, `main` prints the medians and the ratios from criterion's own estimates
//! (`<criterion dir>/<group>/<engine>/new/estimates.json` written by this run).
//!
//! Run with `cd benches/peers && cargo bench`.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
use tollgate::boundary::ActionBoundary;
use tollgate::policy::{Bindings, Policy};
use tollgate::{Guard, Outcome, Run, RunContext, ToolCall, Verdict};

#[path = "../../shared/peer_document.rs"]
mod peer_document;
use peer_document::{AGENT, RAW, ROLE, TOOL, TOOLS, tollgate_document};

/// Records already in the log for `audited_after_100k`.
const PREFILL: u64 = 100_000;
/// agentmesh's "fresh" regime: a new client (empty in-memory log) every this many calls,
/// outside the timing. Its log holds at most 100 000 entries and evicts by `Vec::drain`.
const FRESH_EVERY: u64 = 10_000;

const SCENARIOS: [&str; 4] = [
    "allowlist",
    "allowlist_args",
    "audited",
    "audited_after_100k",
];
const PEERS: [&str; 2] = ["agentmesh", "cedar"];

// ---------------------------------------------------------------------------------------------
// tollgate

/// The document without runtime sections or audit (read [`Policy::boundary`] from it).
fn tollgate_policy(args: bool) -> Policy {
    Policy::from_toml(&tollgate_document(args, false, false)).expect("document")
}

fn check_and_complete(guard: &Guard, run: &Run, call: &ToolCall<'_>) -> bool {
    match guard.check(run, call) {
        Verdict::Allow(p) => p.complete(Outcome::success()).is_ok(),
        Verdict::Escalate(_) | Verdict::Deny(_) => false,
    }
}

/// A guard from the full document with a `FileSink` (OS-buffered) in `dir`.
fn tollgate_audited(dir: &Path) -> (Guard, Arc<FileSink>) {
    let policy = Policy::from_toml(&tollgate_document(true, true, true)).expect("document");
    let cfg = FileSinkConfig::default().durability(Durability::OsBuffered);
    let (sink, _) = FileSink::open(dir, cfg).expect("file sink");
    let sink = Arc::new(sink);
    let guard = Guard::from_policy(&policy, Bindings::new().audit(sink.clone())).expect("guard");
    (guard, sink)
}

// ---------------------------------------------------------------------------------------------
// cedar-policy 4

struct Cedar {
    authorizer: cedar_policy::Authorizer,
    allowlist: cedar_policy::PolicySet,
    bounded: cedar_policy::PolicySet,
    entities: cedar_policy::Entities,
    principal: cedar_policy::EntityUid,
    action: cedar_policy::EntityUid,
    resource: cedar_policy::EntityUid,
}

impl Cedar {
    fn new() -> Self {
        use cedar_policy::{Entities, Entity, EntityUid, PolicySet};
        use std::collections::HashSet;
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        let role = uid(&format!("Role::\"{ROLE}\""));
        let principal = uid(&format!("Agent::\"{AGENT}\""));
        let entities = Entities::from_entities(
            [
                Entity::new_no_attrs(role.clone(), HashSet::new()),
                Entity::new_no_attrs(principal.clone(), HashSet::from([role])),
            ],
            None,
        )
        .expect("entities");
        let actions = |tools: &[&str]| {
            tools
                .iter()
                .map(|t| format!("Action::\"{t}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Allowlist only: the role may call its ten tools.
        let allowlist = PolicySet::from_str(&format!(
            "permit(principal in Role::\"{ROLE}\", action in [{}], resource);",
            actions(&TOOLS)
        ))
        .expect("policies");
        // With the argument rules on `pay_invoice`. Cedar has no regular expressions: `like
        // "INV-*"` is the closest it has to `INV-[0-9]{6}` (weaker: any suffix passes). No
        // floats either: the amount is a `decimal` (built from the JSON number below).
        let bounded = PolicySet::from_str(&format!(
            r#"permit(principal in Role::"{ROLE}", action in [{}], resource);
permit(principal in Role::"{ROLE}", action == Action::"{TOOL}", resource)
when {{
    context has invoice && context has amount && context has currency &&
    context.invoice like "INV-*" &&
    context.amount.greaterThanOrEqual(decimal("0.01")) &&
    context.amount.lessThanOrEqual(decimal("10000.0")) &&
    ["USD", "EUR", "GBP"].contains(context.currency)
}};"#,
            actions(&TOOLS[..TOOLS.len() - 1])
        ))
        .expect("policies");
        Cedar {
            authorizer: cedar_policy::Authorizer::new(),
            allowlist,
            bounded,
            entities,
            principal,
            action: uid(&format!("Action::\"{TOOL}\"")),
            resource: uid("Service::\"payments\""),
        }
    }

    fn decide(&self, policies: &cedar_policy::PolicySet, context: cedar_policy::Context) -> bool {
        let request = cedar_policy::Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            context,
            None,
        )
        .expect("request");
        self.authorizer
            .is_authorized(&request, policies, &self.entities)
            .decision()
            == cedar_policy::Decision::Allow
    }

    fn allowlist(&self) -> bool {
        self.decide(&self.allowlist, cedar_policy::Context::empty())
    }

    /// The raw JSON parsed, each value turned into a Cedar value (numbers with a fraction into
    /// `decimal`, Cedar having no floats), the context built, then `is_authorized`.
    fn with_args(&self, raw: &str) -> bool {
        match cedar_context(raw) {
            Some(ctx) => self.decide(&self.bounded, ctx),
            None => false,
        }
    }
}

fn cedar_context(raw: &str) -> Option<cedar_policy::Context> {
    use cedar_policy::RestrictedExpression as X;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw).ok()?;
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in map {
        let x = match v {
            serde_json::Value::String(s) => X::new_string(s),
            serde_json::Value::Bool(b) => X::new_bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => X::new_long(i),
                None => X::new_decimal(format!("{:.4}", n.as_f64()?)),
            },
            // Nested values are not needed for this decision.
            _ => return None,
        };
        pairs.push((k, x));
    }
    cedar_policy::Context::from_pairs(pairs).ok()
}

/// Cedar's audited equivalent: the decision, then one JSON line (time, principal, action,
/// decision, the raw arguments) appended to a 64 KiB-buffered file behind a mutex. No hash
/// chain, one line per call (tollgate writes two chained records: decision and outcome).
struct CedarLog {
    out: Mutex<BufWriter<File>>,
}

impl CedarLog {
    fn open(path: &Path) -> Self {
        CedarLog {
            out: Mutex::new(BufWriter::with_capacity(
                1 << 16,
                File::create(path).expect("log file"),
            )),
        }
    }

    fn decide_and_log(&self, cedar: &Cedar, raw: &str) -> bool {
        let allowed = cedar.with_args(raw);
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(
            out,
            r#"{{"ts":{ts},"principal":"{AGENT}","action":"{TOOL}","decision":"{}","args":{raw}}}"#,
            if allowed { "allow" } else { "deny" }
        )
        .is_ok()
            && allowed
    }
}

// ---------------------------------------------------------------------------------------------
// agentmesh 4

/// The capability policy: the agent's ten tools (agentmesh has no roles: a client is one agent
/// and its policy is that agent's; the role's list becomes the agent's list).
fn agentmesh_yaml() -> String {
    let list = TOOLS
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "version: \"1.0\"\nagent: {AGENT}\npolicies:\n  - name: {ROLE}-tools\n    type: capability\n    allowed_actions: [{list}]\n"
    )
}

fn agentmesh_client() -> agentmesh::AgentMeshClient {
    agentmesh::AgentMeshClient::with_options(
        AGENT,
        agentmesh::ClientOptions {
            policy_yaml: Some(agentmesh_yaml()),
            ..Default::default()
        },
    )
    .expect("agentmesh client")
}

/// agentmesh's argument rules. Its governance call's `conditions` only test equality or set
/// membership, so the bounds and the pattern go through its `PolicyEvaluator` (trust-policy
/// conditions: `lt`, `gt`, `not_in`, `matches`), first match by priority, default deny. It
/// cannot say "required": a missing or non-numeric `amount` or a missing `currency` matches no
/// deny rule (weaker than the other two engines).
fn agentmesh_arg_rules() -> agentmesh::PolicyEvaluator {
    use agentmesh::{
        ConditionOperator as Op, TrustCondition, TrustDefaults, TrustPolicy, TrustRule,
    };
    use serde_json::json;
    let rule = |name: &str, field: &str, operator, value, action: &str, priority| TrustRule {
        name: name.into(),
        description: None,
        condition: TrustCondition {
            field: field.into(),
            operator,
            value,
        },
        action: action.into(),
        priority,
    };
    agentmesh::PolicyEvaluator::new(vec![TrustPolicy {
        name: "pay-invoice-args".into(),
        version: "1.0".into(),
        description: None,
        rules: vec![
            rule("amount-min", "amount", Op::Lt, json!(0.01), "deny", 1),
            rule("amount-max", "amount", Op::Gt, json!(10000), "deny", 2),
            rule(
                "currency",
                "currency",
                Op::NotIn,
                json!(["USD", "EUR", "GBP"]),
                "deny",
                3,
            ),
            rule(
                "invoice",
                "invoice",
                Op::Matches,
                json!("^INV-[0-9]{6}$"),
                "allow",
                4,
            ),
        ],
        defaults: TrustDefaults::default(),
    }])
}

fn agentmesh_args_ok(rules: &agentmesh::PolicyEvaluator, raw: &str) -> bool {
    match serde_json::from_str::<HashMap<String, serde_json::Value>>(raw) {
        Ok(ctx) => rules.evaluate(&ctx).action == "allow",
        Err(_) => false,
    }
}

/// The audited agentmesh call: the argument rules, then `execute_with_governance` (its policy
/// evaluation, its in-memory hash-chained `AuditLogger` entry, its trust update).
fn agentmesh_audited(
    client: &agentmesh::AgentMeshClient,
    rules: &agentmesh::PolicyEvaluator,
    raw: &str,
) -> bool {
    agentmesh_args_ok(rules, raw) && client.execute_with_governance(TOOL, None).allowed
}

/// Times `iters` calls of `f` on clients that never hold more than `FRESH_EVERY` entries: a new
/// client is made (outside the timing) every `FRESH_EVERY` calls.
/// `ok`, asserted: every benched call must be allowed (a file sink on a full disk fails, and
/// the guard then refuses every call in a fraction of an audited call's time: a figure of
/// refusals would pass for a fast pipeline).
#[inline(always)]
fn allowed(ok: bool) -> bool {
    assert!(
        ok,
        "a benched call was refused: the figure would be a refusal's"
    );
    ok
}

fn agentmesh_fresh(iters: u64, f: impl Fn(&agentmesh::AgentMeshClient) -> bool) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let client = agentmesh_client();
        let n = (iters - done).min(FRESH_EVERY);
        let t = Instant::now();
        for _ in 0..n {
            black_box(allowed(f(black_box(&client))));
        }
        total += t.elapsed();
        done += n;
    }
    total
}

// ---------------------------------------------------------------------------------------------
// The scenarios

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("tollgate-peers-{}", std::process::id()))
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = scratch().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
}

fn allowlist(c: &mut Criterion) {
    let mut g = c.benchmark_group("allowlist");
    configure(&mut g);
    // tollgate: `ActionBoundary::check` of an argument-less call to a tool without rules.
    let policy = tollgate_policy(false);
    let b: &ActionBoundary = policy.boundary();
    let ctx = RunContext::new(AGENT, ROLE);
    let call = ToolCall::without_args(TOOL);
    assert!(b.check(&ctx, &call).is_ok());
    g.bench_function("tollgate", |bench| {
        bench.iter(|| allowed(black_box(b).check(&ctx, black_box(&call)).is_ok()))
    });
    // cedar: `Request::new` (empty context) + `is_authorized` against the one permit.
    let cedar = Cedar::new();
    assert!(cedar.allowlist());
    g.bench_function("cedar", |bench| {
        bench.iter(|| allowed(black_box(&cedar).allowlist()))
    });
    // agentmesh: `PolicyEngine::evaluate` of the action, no context (the capability rule).
    let client = agentmesh_client();
    assert!(client.policy.evaluate(TOOL, None).is_allowed());
    g.bench_function("agentmesh", |bench| {
        bench.iter(|| {
            allowed(
                black_box(&client)
                    .policy
                    .evaluate(black_box(TOOL), None)
                    .is_allowed(),
            )
        })
    });
    g.finish();
}

fn allowlist_args(c: &mut Criterion) {
    let mut g = c.benchmark_group("allowlist_args");
    configure(&mut g);
    // tollgate: `ActionBoundary::check` with the raw JSON text (strict validation included).
    let policy = tollgate_policy(true);
    let b: &ActionBoundary = policy.boundary();
    let ctx = RunContext::new(AGENT, ROLE);
    let call = ToolCall::new(TOOL, RAW);
    assert!(b.check(&ctx, &call).is_ok());
    assert!(
        b.check(
            &ctx,
            &ToolCall::new(TOOL, r#"{"invoice":"INV-1","amount":1,"currency":"EUR"}"#)
        )
        .is_err()
    );
    g.bench_function("tollgate", |bench| {
        bench.iter(|| allowed(black_box(b).check(&ctx, black_box(&call)).is_ok()))
    });
    // cedar: JSON parsed into a context + `is_authorized` against the two permits.
    let cedar = Cedar::new();
    assert!(cedar.with_args(RAW));
    assert!(!cedar.with_args(r#"{"invoice":"INV-004711","amount":10000.5,"currency":"EUR"}"#));
    g.bench_function("cedar", |bench| {
        bench.iter(|| allowed(black_box(&cedar).with_args(black_box(RAW))))
    });
    // agentmesh: `PolicyEngine::evaluate` + JSON parsed into a map + `PolicyEvaluator::evaluate`.
    let client = agentmesh_client();
    let rules = agentmesh_arg_rules();
    let both = |raw: &str| {
        client.policy.evaluate(TOOL, None).is_allowed() && agentmesh_args_ok(&rules, raw)
    };
    assert!(both(RAW));
    assert!(!both(
        r#"{"invoice":"INV-004711","amount":10000.5,"currency":"EUR"}"#
    ));
    assert!(!both(r#"{"invoice":"INV-1","amount":1,"currency":"EUR"}"#));
    g.bench_function("agentmesh", |bench| {
        bench.iter(|| allowed(both(black_box(RAW))))
    });
    g.finish();
}

fn audited(c: &mut Criterion) {
    let mut g = c.benchmark_group("audited");
    configure(&mut g);
    // tollgate: `Guard::check` + `Permit::complete` (two hash-chained records) with breakers,
    // budget and rate limits on, `FileSink` OS-buffered; sustained (the log grows as it runs,
    // the caller is paced by the writer once the queue fills).
    {
        let dir = fresh_dir("tollgate-audited");
        let (guard, sink) = tollgate_audited(&dir);
        let run = guard.start_run(RunContext::new(AGENT, ROLE)).expect("run");
        let call = ToolCall::new(TOOL, RAW);
        assert!(check_and_complete(&guard, &run, &call));
        g.bench_function("tollgate", |bench| {
            bench.iter(|| {
                allowed(check_and_complete(
                    black_box(&guard),
                    &run,
                    black_box(&call),
                ))
            })
        });
        drop(run);
        drop(guard);
        drop(sink);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // cedar: the `allowlist_args` decision + one JSON line into a buffered file; sustained.
    {
        let dir = fresh_dir("cedar-audited");
        let cedar = Cedar::new();
        let log = CedarLog::open(&dir.join("decisions.jsonl"));
        assert!(log.decide_and_log(&cedar, RAW));
        g.bench_function("cedar", |bench| {
            bench.iter(|| allowed(log.decide_and_log(black_box(&cedar), black_box(RAW))))
        });
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // agentmesh: the argument rules + `execute_with_governance` (in-memory audit), fresh: a new
    // client every 10 000 calls so its log stays far below its 100 000-entry cap.
    let rules = agentmesh_arg_rules();
    assert!(agentmesh_audited(&agentmesh_client(), &rules, RAW));
    g.bench_function("agentmesh", |bench| {
        bench.iter_custom(|iters| {
            agentmesh_fresh(iters, |client| {
                agentmesh_audited(client, &rules, black_box(RAW))
            })
        })
    });
    g.finish();
}

fn audited_after_100k(c: &mut Criterion) {
    let mut g = c.benchmark_group("audited_after_100k");
    configure(&mut g);
    // tollgate: as `audited`, after 50 000 check + complete (100 000 records) through the same
    // guard, flushed.
    {
        let dir = fresh_dir("tollgate-100k");
        let (guard, sink) = tollgate_audited(&dir);
        let run = guard.start_run(RunContext::new(AGENT, ROLE)).expect("run");
        let call = ToolCall::new(TOOL, RAW);
        for _ in 0..PREFILL / 2 {
            assert!(check_and_complete(&guard, &run, &call));
        }
        tollgate::audit::AuditSink::flush(&*sink).expect("flush");
        g.bench_function("tollgate", |bench| {
            bench.iter(|| {
                allowed(check_and_complete(
                    black_box(&guard),
                    &run,
                    black_box(&call),
                ))
            })
        });
        drop(run);
        drop(guard);
        drop(sink);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // cedar: as `audited`, after 100 000 lines written and flushed.
    {
        let dir = fresh_dir("cedar-100k");
        let cedar = Cedar::new();
        let log = CedarLog::open(&dir.join("decisions.jsonl"));
        for _ in 0..PREFILL {
            assert!(log.decide_and_log(&cedar, RAW));
        }
        log.out.lock().expect("log").flush().expect("flush");
        g.bench_function("cedar", |bench| {
            bench.iter(|| allowed(log.decide_and_log(black_box(&cedar), black_box(RAW))))
        });
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
    // agentmesh: as `audited`, on one client after 100 000 governance calls (its log at its
    // default cap: each further entry evicts the oldest).
    {
        let client = agentmesh_client();
        let rules = agentmesh_arg_rules();
        for _ in 0..PREFILL {
            assert!(agentmesh_audited(&client, &rules, RAW));
        }
        assert_eq!(client.audit.entries().len() as u64, PREFILL);
        // Each call costs hundreds of microseconds here: fewer samples.
        g.sample_size(10);
        g.bench_function("agentmesh", |bench| {
            bench.iter(|| {
                allowed(agentmesh_audited(
                    black_box(&client),
                    &rules,
                    black_box(RAW),
                ))
            })
        });
    }
    g.finish();
}

fn extra(c: &mut Criterion) {
    let mut g = c.benchmark_group("extra");
    configure(&mut g);
    // tollgate's guard with breakers, budget and rate limits and no audit sink: check +
    // complete, raw JSON (issue 12's "unaudited, every runtime primitive on" target).
    let policy = Policy::from_toml(&tollgate_document(true, true, false)).expect("document");
    let guard = Guard::from_policy(&policy, Bindings::new()).expect("guard");
    let run = guard.start_run(RunContext::new(AGENT, ROLE)).expect("run");
    let call = ToolCall::new(TOOL, RAW);
    assert!(check_and_complete(&guard, &run, &call));
    g.bench_function("tollgate_guard_unaudited", |bench| {
        bench.iter(|| {
            allowed(check_and_complete(
                black_box(&guard),
                &run,
                black_box(&call),
            ))
        })
    });
    // agentmesh's governance call alone (allowlist, in-memory audit, no argument rules), fresh:
    // the figure issue 12 quotes.
    g.bench_function("agentmesh_governance_only", |bench| {
        bench.iter_custom(|iters| {
            agentmesh_fresh(iters, |client| {
                client
                    .execute_with_governance(black_box(TOOL), None)
                    .allowed
            })
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// The summary

/// Where criterion writes (its own rule: `CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`,
/// else `target/criterion` of the package, the bench's working directory).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    PathBuf::from("target").join("criterion")
}

/// The median (ns) criterion estimated for `group/name` in this run (`None` if it did not run
/// now: no estimate, or one older than `since`).
fn median(group: &str, name: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(name)
        .join("new")
        .join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn summary(since: SystemTime) {
    let cell = |m: Option<f64>| m.map_or_else(|| "not run".to_owned(), human);
    println!("\nPeer bench: criterion medians from this run, ns per decision");
    println!(
        "| scenario | tollgate | agentmesh 4 | cedar-policy 4 | agentmesh ÷ tollgate | cedar ÷ tollgate |"
    );
    println!("|---|---|---|---|---|---|");
    for s in SCENARIOS {
        let t = median(s, "tollgate", since);
        let mut row = format!("| {s} | {} |", cell(t));
        for p in PEERS {
            row.push_str(&format!(" {} |", cell(median(s, p, since))));
        }
        for p in PEERS {
            let r = match (t, median(s, p, since)) {
                (Some(t), Some(p)) if t > 0.0 => format!("{:.2}x", p / t),
                _ => "-".to_owned(),
            };
            row.push_str(&format!(" {r} |"));
        }
        println!("{row}");
    }
    println!("(a ratio above 1 means tollgate took less time than the peer)");
    for name in ["tollgate_guard_unaudited", "agentmesh_governance_only"] {
        println!("extra/{name}: {}", cell(median("extra", name, since)));
    }
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    allowlist(&mut c);
    allowlist_args(&mut c);
    audited(&mut c);
    audited_after_100k(&mut c);
    extra(&mut c);
    c.final_summary();
    let _ = std::fs::remove_dir_all(scratch());
    summary(since);
}
