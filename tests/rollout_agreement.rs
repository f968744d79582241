//! Agreement between recommend-mode recommendations and what humans did (issue 14, part 2):
//! the statistics against hand-computed values, the comparators, the `[agreement]` section of a
//! policy document, the report built from a real guard's hash-chained audit log, and
//! `tollgate rollout report` end to end (its HTML page rendered in headless Chromium).
#![cfg(feature = "toml")]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::{Value, json};
use tollgate::agreement::stats::{brier, wilson};
use tollgate::agreement::{
    Agreement, AgreementError, AgreementReport, AgreementSection, ComparatorSpec, Comparison,
    DifferenceKind, Tolerance,
};
use tollgate::audit::file::{FileSink, FileSinkConfig};
use tollgate::audit::query::Query;
use tollgate::mode::HumanAction;
use tollgate::policy::{Bindings, Policy};
use tollgate::{RunContext, ToolCall};

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    common::tempdir::temp_dir("rollout", name)
}

fn close(a: f64, b: f64, eps: f64) -> bool {
    (a - b).abs() < eps
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Wilson 95% intervals as published (e.g. Newcombe 1998, table I; any statistics package):
/// checked to four decimals.
#[test]
fn wilson_interval_matches_known_values() {
    let cases: [(u64, u64, f64, f64); 6] = [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
        (81, 263, 0.2553, 0.3662),
        (1, 1, 0.2065, 1.0),
    ];
    for (k, n, lo, hi) in cases {
        let (l, h) = wilson(k, n).unwrap();
        assert!(
            close(l, lo, 5e-5) && close(h, hi, 5e-5),
            "{k}/{n}: [{l:.5}, {h:.5}], expected [{lo}, {hi}]"
        );
    }
    assert_eq!(wilson(0, 0), None, "no cases, no interval");
    // More successes than trials is read as all of them, never outside [0, 1].
    assert_eq!(wilson(12, 10), wilson(10, 10));
}

#[test]
fn brier_score_matches_hand_computed_values() {
    assert_eq!(brier([]), None);
    assert_eq!(brier([(1.0, true), (0.0, false)]), Some(0.0));
    assert_eq!(brier([(0.0, true), (1.0, false)]), Some(1.0));
    assert_eq!(brier([(0.5, true), (0.5, false), (0.5, true)]), Some(0.25));
    // (0.1² + 0.8² + 0.3²) / 3 = (0.01 + 0.64 + 0.09) / 3
    let b = brier([(0.9, true), (0.8, false), (0.7, true)]).unwrap();
    assert!(close(b, 0.74 / 3.0, 1e-12), "{b}");
}

// ---------------------------------------------------------------------------------------------
// Comparators

fn refund_agreement() -> Agreement {
    let mut s = AgreementSection::default();
    s.tools.insert(
        "refund".into(),
        ComparatorSpec::fields(["invoice", "amount", "codes", "payee.iban"])
            .tolerance("amount", Tolerance::absolute(5.0))
            .set("codes"),
    );
    s.tools.insert(
        "transfer".into(),
        ComparatorSpec::default().tolerance("amount", Tolerance::relative(0.1)),
    );
    Agreement::compile(&s).unwrap()
}

fn kinds(c: &Comparison) -> Vec<(String, DifferenceKind)> {
    c.differences()
        .iter()
        .map(|d| (d.path.clone(), d.kind))
        .collect()
}

#[test]
fn tolerance_is_inclusive_absolute_or_relative_to_the_human() {
    let a = refund_agreement();
    let rec = json!({"invoice": 7, "amount": 40});
    for (human, agrees) in [(45.0, true), (35.0, true), (45.01, false), (34.9, false)] {
        let c = a.compare(
            "refund",
            &rec,
            Some("refund"),
            Some(&json!({"invoice": 7, "amount": human})),
        );
        assert_eq!(c.agrees(), agrees, "40 vs {human}: {c:?}");
        if !agrees {
            assert_eq!(
                kinds(&c),
                [("amount".into(), DifferenceKind::OutsideTolerance)]
            );
            assert_eq!(c.differences()[0].recommended, Some(json!(40)));
            assert_eq!(c.differences()[0].human, Some(json!(human)));
        }
    }
    // Relative: 10% of the human's 200 is 20.
    let rec = json!({"to": "acme", "amount": 180});
    let agrees = |h: f64| {
        a.compare(
            "transfer",
            &rec,
            Some("transfer"),
            Some(&json!({"to": "acme", "amount": h})),
        )
        .agrees()
    };
    assert!(agrees(200.0));
    assert!(!agrees(201.0));
    assert!(agrees(163.7)); // 16.3 <= 16.37
    // Exact elsewhere in the tool: `to` still has to match.
    let c = a.compare(
        "transfer",
        &rec,
        Some("transfer"),
        Some(&json!({"to": "acme2", "amount": 180})),
    );
    assert_eq!(kinds(&c), [("to".into(), DifferenceKind::Differs)]);
    // Both bounds given: either suffices.
    let t = Tolerance {
        absolute: Some(1.0),
        relative: Some(0.5),
    };
    assert!(t.admits(10.0, 11.0) && t.admits(3.0, 6.0) && !t.admits(2.0, 6.0));
    // A tolerance on a value that is not a number compares it exactly.
    let c = a.compare(
        "refund",
        &json!({"invoice": 7, "amount": "40"}),
        Some("refund"),
        Some(&json!({"invoice": 7, "amount": "41"})),
    );
    assert_eq!(kinds(&c), [("amount".into(), DifferenceKind::Differs)]);
}

#[test]
fn sets_ignore_order_and_repetition_but_not_content() {
    let a = refund_agreement();
    let rec = json!({"invoice": 1, "amount": 1, "codes": ["a", "b", {"x": 1}]});
    let same = json!({"invoice": 1, "amount": 1, "codes": [{"x": 1.0}, "b", "a", "a"]});
    assert!(
        a.compare("refund", &rec, Some("refund"), Some(&same))
            .agrees()
    );
    let other = json!({"invoice": 1, "amount": 1, "codes": ["a", "b"]});
    let c = a.compare("refund", &rec, Some("refund"), Some(&other));
    assert_eq!(kinds(&c), [("codes".into(), DifferenceKind::SetDiffers)]);
    // Without `sets`, order matters (exact comparison of the array).
    let exact = Agreement::exact();
    let c = exact.compare(
        "refund",
        &json!({"codes": ["a", "b"]}),
        Some("refund"),
        Some(&json!({"codes": ["b", "a"]})),
    );
    assert_eq!(kinds(&c), [("codes".into(), DifferenceKind::Differs)]);
}

#[test]
fn fields_compare_only_the_paths_named_and_say_what_is_missing_or_extra() {
    let a = refund_agreement();
    let rec =
        json!({"invoice": 7, "amount": 40, "memo": "agent", "payee": {"iban": "X1", "name": "A"}});
    // memo and payee.name are not compared.
    let human =
        json!({"invoice": 7, "amount": 40, "memo": "human", "payee": {"iban": "X1", "name": "B"}});
    assert!(
        a.compare("refund", &rec, Some("refund"), Some(&human))
            .agrees()
    );
    // The recommendation gave codes the human did not use (extra); the human gave an iban the
    // recommendation lacked (missing); the invoice differs.
    let rec = json!({"invoice": 7, "amount": 40, "codes": ["a"]});
    let human = json!({"invoice": 8, "amount": 40, "payee": {"iban": "X1"}});
    let c = a.compare("refund", &rec, Some("refund"), Some(&human));
    assert_eq!(
        kinds(&c),
        [
            ("invoice".into(), DifferenceKind::Differs),
            ("codes".into(), DifferenceKind::Extra),
            ("payee.iban".into(), DifferenceKind::Missing),
        ]
    );
}

#[test]
fn exact_compares_every_argument_by_value_and_reports_nested_paths() {
    let a = Agreement::exact();
    let rec = json!({"id": 7, "filter": {"from": "2024", "to": "2025"}});
    // Key order and 7 vs 7.0 do not matter.
    let same = json!({"filter": {"to": "2025", "from": "2024"}, "id": 7.0});
    assert!(
        a.compare("lookup", &rec, Some("lookup"), Some(&same))
            .agrees()
    );
    let human = json!({"id": 7, "filter": {"from": "2023"}, "page": 2});
    let c = a.compare("lookup", &rec, Some("lookup"), Some(&human));
    assert_eq!(
        kinds(&c),
        [
            ("filter.from".into(), DifferenceKind::Differs),
            ("filter.to".into(), DifferenceKind::Extra),
            ("page".into(), DifferenceKind::Missing),
        ]
    );
    // Arguments that are not objects (an unparseable-arguments placeholder) compare whole.
    let c = a.compare(
        "lookup",
        &json!("x"),
        Some("lookup"),
        Some(&json!({"id": 1})),
    );
    assert_eq!(kinds(&c), [("(arguments)".into(), DifferenceKind::Differs)]);
    // No human arguments are compared as {}.
    let c = a.compare("lookup", &json!({}), Some("lookup"), None);
    assert!(c.agrees());
}

#[test]
fn another_tool_or_no_action_is_a_disagreement_whatever_the_arguments() {
    let a = refund_agreement();
    let args = json!({"invoice": 7, "amount": 40});
    assert_eq!(
        a.compare("refund", &args, Some("note"), Some(&args)),
        Comparison::OtherTool {
            human: "note".into()
        }
    );
    assert_eq!(a.compare("refund", &args, None, None), Comparison::NoAction);
    assert!(
        a.compare("refund", &args, Some("refund"), Some(&args))
            .agrees()
    );
}

// ---------------------------------------------------------------------------------------------
// The policy document's [agreement] section

const AGREEMENT: &str = r#"
[agreement]
bins = 10
[agreement.tools.refund]
fields = ["invoice", "amount", "codes"]
tolerance.amount = { absolute = 5 }
sets = ["codes"]
[agreement.tools.lookup_invoice]
exact = true
"#;

/// A clinic's billing desk in recommend mode: the agent recommends, a clerk does the work.
fn billing(agreement: &str) -> String {
    format!(
        r#"
[policy]
name = "clinic-billing"
owner = "billing team"
purpose = "refund patients' overpayments"
scope = "the clinic's own invoices"
liability_owner = "practice manager"
review_cadence = "90d"
data_handling = "card tokens are never recorded"

[tools.lookup_invoice]
effect = "read"
args.id = {{ type = "integer", required = true, min = 1 }}
args.page = {{ type = "integer" }}
[tools.refund]
effect = "irreversible"
args.invoice = {{ type = "integer", required = true, min = 1 }}
args.amount = {{ type = "number", required = true, min = 0, max = 500 }}
args.codes = {{ type = "array" }}
args.memo = {{ type = "string" }}
args.card_token = {{ type = "string", redact = "secret" }}
[tools.note]
effect = "write"
args.text = {{ type = "string", required = true }}

[roles.clerk]
tools = ["lookup_invoice", "refund", "note"]

[modes]
default = "recommend"
{agreement}
"#
    )
}

#[test]
fn the_agreement_section_compiles_is_versioned_and_its_mistakes_are_located() {
    let with = Policy::from_toml(&billing(AGREEMENT)).unwrap();
    let without = Policy::from_toml(&billing("")).unwrap();
    assert!(with.agreement().is_some() && without.agreement().is_none());
    assert_ne!(
        with.version(),
        without.version(),
        "comparators are part of the version"
    );
    let canonical = String::from_utf8(with.canonical_json().to_vec()).unwrap();
    assert!(
        canonical.contains(r#""agreement":{"bins":10,"tools":{"lookup_invoice":{"exact":true}"#),
        "{canonical}"
    );
    assert!(!String::from_utf8_lossy(without.canonical_json()).contains("agreement"));
    assert_eq!(with.agreement().unwrap().bins(), 10);

    let bad = [
        // (section, path, reason fragment)
        (
            "[agreement.tools.refnd]\nexact = true",
            "agreement.tools.refnd",
            "refnd",
        ),
        (
            "[agreement.tools.refund]\nfields = [\"invoice\", \"amout\"]",
            "agreement.tools.refund.fields[1]",
            "amout",
        ),
        (
            "[agreement.tools.refund]\nfields = [\"invoice\"]\ntolerance.amount = { absolute = 5 }",
            "agreement.tools.refund.tolerance.amount",
            "never be compared",
        ),
        (
            "[agreement.tools.refund]\ntolerance.amount = { absolute = -1 }",
            "agreement.tools.refund.tolerance.amount.absolute",
            "zero or more",
        ),
        (
            "[agreement.tools.refund]\ntolerance.amount = {}",
            "agreement.tools.refund.tolerance.amount",
            "absolute",
        ),
        (
            "[agreement.tools.refund]\nexact = true\nsets = [\"codes\"]",
            "agreement.tools.refund.exact",
            "exact",
        ),
        (
            "[agreement.tools.refund]\nsets = [\"codes\"]\ntolerance.codes = { absolute = 1 }",
            "agreement.tools.refund.sets[0]",
            "tolerance",
        ),
        (
            "[agreement.tools.refund]\nfields = []",
            "agreement.tools.refund.fields",
            "no field",
        ),
        ("[agreement]\nbins = 0", "agreement.bins", "between 1"),
    ];
    for (section, path, reason) in bad {
        let text = billing(section);
        let err = Policy::from_toml(&text).expect_err(section);
        assert_eq!(err.path(), Some(path), "{section}: {err}");
        assert!(err.to_string().contains(reason), "{section}: {err}");
        let line = err.location().map(|l| l.line).expect("located");
        let at = text.lines().nth(line - 1).unwrap();
        assert!(
            at.contains("agreement")
                || at.contains("fields")
                || at.contains("tolerance")
                || at.contains("sets")
                || at.contains("exact")
                || at.contains("bins"),
            "{section}: line {line} is {at:?}"
        );
    }
    // Unknown keys are refused like everywhere else in the document.
    assert!(Policy::from_toml(&billing("[agreement.tools.refund]\nfuzzy = true")).is_err());
}

// ---------------------------------------------------------------------------------------------
// The report from a real guard's audit log

/// Runs the scenario through a guard in recommend mode writing to a FileSink in `dir`, and
/// returns the policy text. Expected figures are in `the_report_counts_exactly`.
fn scenario(dir: &Path) -> String {
    let text = billing(AGREEMENT);
    let policy = Policy::from_toml(&text).unwrap();
    let (sink, _) = FileSink::open(dir, FileSinkConfig::default()).unwrap();
    let sink = Arc::new(sink);
    let guard = policy.guard(Bindings::new().audit(sink.clone())).unwrap();
    let billing_run = guard
        .start_run(RunContext::new("billing-agent", "clerk").for_task("refunds"))
        .unwrap();
    let lookup_run = guard
        .start_run(RunContext::new("billing-agent", "clerk").for_task("lookups"))
        .unwrap();

    let recommend = |run: &tollgate::Run, tool: &str, args: Value, confidence: Option<f32>| {
        let text = args.to_string();
        let mut call = ToolCall::new(tool, text.as_str());
        if let Some(c) = confidence {
            call = call.with_confidence(c);
        }
        let v = guard.check(run, &call);
        assert!(!v.is_allowed(), "recommend mode never allows");
        v.recommendation().expect("a recommendation").id.to_string()
    };
    let r = &billing_run;
    // 1. agrees: amount within 5, codes the same set, memo not compared, card token secret.
    let r1 = recommend(
        r,
        "refund",
        json!({"invoice": 7, "amount": 40, "codes": ["A1", "B2"], "memo": "overpaid", "card_token": "tok_4242"}),
        Some(0.9),
    );
    // 2. disagrees: amount outside tolerance.
    let r2 = recommend(
        r,
        "refund",
        json!({"invoice": 8, "amount": 40, "codes": ["A1"]}),
        Some(0.8),
    );
    // 3. disagrees: the clerk wrote a note instead.
    let r3 = recommend(r, "refund", json!({"invoice": 9, "amount": 20}), Some(0.7));
    // 4. unanswered.
    let _r4 = recommend(r, "refund", json!({"invoice": 10, "amount": 10}), Some(0.6));
    // 5. disagrees: another set of codes.
    let r5 = recommend(
        r,
        "refund",
        json!({"invoice": 11, "amount": 10, "codes": ["A1"]}),
        Some(0.3),
    );
    let l = &lookup_run;
    // 6. agrees: 7 and 7.0 are the same id.
    let r6 = recommend(l, "lookup_invoice", json!({"id": 7}), Some(0.95));
    // 7. disagrees: the clerk did nothing; the agent gave no confidence.
    let r7 = recommend(l, "lookup_invoice", json!({"id": 8}), None);
    // 8. disagrees: the clerk also asked for page 2.
    let r8 = recommend(l, "lookup_invoice", json!({"id": 9}), Some(0.5));

    let act = |run: &tollgate::Run, id: &str, a: HumanAction| {
        guard.record_human_action(run, id, a).unwrap()
    };
    act(
        r,
        &r1,
        HumanAction::call(
            "refund",
            json!({"invoice": 7, "amount": 43, "codes": ["B2", "A1"], "memo": "refund less fee", "card_token": "tok_4242"}),
        ),
    );
    act(
        r,
        &r2,
        HumanAction::call(
            "refund",
            json!({"invoice": 8, "amount": 60, "codes": ["A1"]}),
        )
        .note("the fee was refundable too"),
    );
    act(
        r,
        &r3,
        HumanAction::call("note", json!({"text": "patient asked for credit instead"})),
    );
    act(
        r,
        &r5,
        HumanAction::call(
            "refund",
            json!({"invoice": 11, "amount": 10, "codes": ["A1", "C3"]}),
        ),
    );
    act(
        l,
        &r6,
        HumanAction::call("lookup_invoice", json!({"id": 7.0})),
    );
    act(l, &r7, HumanAction::nothing().note("already looked up"));
    act(
        l,
        &r8,
        HumanAction::call("lookup_invoice", json!({"id": 9, "page": 2})),
    );
    billing_run.finish().unwrap();
    lookup_run.finish().unwrap();
    drop(guard);
    Arc::into_inner(sink)
        .expect("the guard released the sink")
        .close()
        .unwrap();
    text
}

fn report_of(dir: &Path, policy: &Policy) -> AgreementReport {
    AgreementReport::from_log(dir, policy.agreement().unwrap(), Query::new()).unwrap()
}

#[test]
fn the_report_counts_exactly() {
    let dir = temp_dir("e2e");
    let policy = Policy::from_toml(&scenario(dir.path())).unwrap();
    let r = report_of(dir.path(), &policy);

    assert_eq!(r.recommendations, 8);
    assert_eq!(r.orphan_actions, 0);
    assert_eq!(
        (r.overall.cases, r.overall.agreements, r.overall.unanswered),
        (7, 2, 1)
    );
    let groups: Vec<_> = r
        .groups
        .iter()
        .map(|g| {
            (
                g.task_type.as_deref().unwrap(),
                g.tool.as_str(),
                g.figures.cases,
                g.figures.agreements,
                g.figures.unanswered,
            )
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("lookups", "lookup_invoice", 3, 1, 0),
            ("refunds", "refund", 4, 1, 1)
        ]
    );
    // 1 of 3 and 1 of 4, with their Wilson intervals.
    let refunds = &r.groups[1].figures;
    assert_eq!(refunds.rate, Some(0.25));
    assert_eq!(
        (refunds.lower, refunds.upper),
        (wilson(1, 4).map(|w| w.0), wilson(1, 4).map(|w| w.1))
    );
    assert!(
        close(refunds.lower.unwrap(), 0.0456, 1e-4) && close(refunds.upper.unwrap(), 0.6994, 1e-4)
    );

    let catalogue: Vec<_> = r
        .catalogue
        .iter()
        .map(|c| {
            (
                c.tool.as_str(),
                c.kind.as_str(),
                c.detail.as_deref(),
                c.count,
            )
        })
        .collect();
    assert_eq!(
        catalogue,
        [
            ("lookup_invoice", "missing", Some("page"), 1),
            ("lookup_invoice", "no_action", None, 1),
            ("refund", "other_tool", Some("note"), 1),
            ("refund", "outside_tolerance", Some("amount"), 1),
            ("refund", "set_differs", Some("codes"), 1),
        ]
    );
    assert_eq!(r.disagreements.len(), 5);
    let two = &r.disagreements[0];
    assert_eq!(two.tool, "refund");
    assert_eq!(two.task_type.as_deref(), Some("refunds"));
    assert_eq!(two.note.as_deref(), Some("the fee was refundable too"));
    assert_eq!(two.confidence, Some(0.8));
    let d = &two.comparison.differences()[0];
    assert_eq!(
        (d.recommended.clone(), d.human.clone()),
        (Some(json!(40)), Some(json!(60)))
    );

    // Calibration: six answered cases with a confidence, one without.
    let c = &r.calibration;
    assert_eq!((c.cases, c.without_confidence), (6, 1));
    // (0.1² + 0.8² + 0.7² + 0.3² + 0.05² + 0.5²) / 6
    let expected = (0.01 + 0.64 + 0.49 + 0.09 + 0.0025 + 0.25) / 6.0;
    assert!(
        close(c.brier.unwrap(), expected, 1e-6),
        "{:?} vs {expected}",
        c.brier
    );
    let filled: Vec<_> = c
        .bins
        .iter()
        .filter(|b| b.cases > 0)
        .map(|b| (b.from, b.cases, b.agreements))
        .collect();
    assert_eq!(filled.len(), 5);
    assert_eq!(filled[4], (0.9, 2, 2));
    assert!(close(c.bins[9].mean_confidence.unwrap(), 0.925, 1e-6));
    assert_eq!(c.bins.len(), 10);
    // The timeline covers every answered case.
    assert_eq!(
        r.timeline
            .points
            .iter()
            .map(|p| p.figures.cases)
            .sum::<u64>(),
        7
    );

    // The card token never reaches the report: the records hold it redacted, and the two
    // placeholders agree (case 1 agreed).
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("tok_4242"));
}

#[test]
fn a_tampered_log_gives_no_report() {
    let dir = temp_dir("tampered");
    let policy = Policy::from_toml(&scenario(dir.path())).unwrap();
    let seg = dir.path().join("audit-000001.jsonl");
    let text = fs::read_to_string(&seg).unwrap();
    assert!(text.contains(r#""amount":60"#));
    fs::write(&seg, text.replacen(r#""amount":60"#, r#""amount":41"#, 1)).unwrap();
    let err = AgreementReport::from_log(dir.path(), policy.agreement().unwrap(), Query::new())
        .unwrap_err();
    assert!(matches!(err, AgreementError::Log(_)), "{err}");
}

#[test]
fn few_cases_are_kept_in_detail_but_every_one_is_counted() {
    let dir = temp_dir("cap");
    let policy = Policy::from_toml(&scenario(dir.path())).unwrap();
    let agreement = policy.agreement().unwrap();
    let mut b = tollgate::agreement::ReportBuilder::new(agreement).max_cases(2);
    for rec in Query::new().open(dir.path()).unwrap() {
        b.push(&rec.unwrap().event);
    }
    let r = b.finish();
    assert_eq!((r.disagreements.len(), r.disagreements_omitted), (2, 3));
    assert_eq!(r.catalogue.iter().map(|c| c.count).sum::<u64>(), 5);
    // A human action whose recommendation is not in what was read is an orphan, not a case.
    let mut b = tollgate::agreement::ReportBuilder::new(agreement);
    b.push(&json!({"event": "human_action", "tollgate.run.id": "r", "tollgate.recommendation.id": "rec-r-1", "gen_ai.tool.name": "refund"}));
    let r = b.finish();
    assert_eq!((r.orphan_actions, r.overall.cases), (1, 0));
}

// ---------------------------------------------------------------------------------------------
// The command line

fn tollgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env_remove("TOLLGATE_PROGRESS")
        .output()
        .unwrap()
}

#[test]
fn rollout_report_prints_text_json_and_html() {
    let dir = temp_dir("cli");
    let log = dir.path().join("audit");
    let policy_text = scenario(&log);
    let policy_file = dir.path().join("billing.toml");
    fs::write(&policy_file, &policy_text).unwrap();
    let (log_s, pol_s) = (log.to_str().unwrap(), policy_file.to_str().unwrap());

    let out = tollgate(&["rollout", "report", "--log", log_s, "--policy", pol_s]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    println!("{text}");
    assert!(
        text.starts_with("Agreement: 8 recommendations, 7 answered by a human, 1 unanswered"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("refunds"))
        .expect("a refunds row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "refunds", "refund", "4", "1", "25.0%", "[4.6%,", "69.9%]", "1"
        ]
    );
    assert!(
        text.contains("refund          outside_tolerance  amount"),
        "{text}"
    );
    assert!(
        text.contains(
            "outside tolerance: recommended 40, human 60; note: \"the fee was refundable too\""
        ),
        "{text}"
    );
    assert!(text.contains("Brier score 0.2471"), "{text}");
    assert!(
        out.stderr.is_empty(),
        "no progress off a terminal: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = tollgate(&[
        "rollout", "report", "--log", log_s, "--policy", pol_s, "--format", "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["overall"]["cases"], 7);
    assert_eq!(v["overall"]["agreements"], 2);
    assert_eq!(v["overall"]["unanswered"], 1);
    assert_eq!(v["groups"][1]["tool"], "refund");
    assert_eq!(v["catalogue"].as_array().unwrap().len(), 5);

    // Progress forced to a pipe: one line per update, on standard error.
    let out = tollgate(&[
        "rollout",
        "report",
        "--log",
        log_s,
        "--policy",
        pol_s,
        "--progress",
        "always",
        "--progress-interval",
        "1ms",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.is_empty() || err.lines().all(|l| l.starts_with("report: segment 1/1, ")),
        "{err}"
    );

    // A log that does not exist, and a policy that does not compile, fail with status 1.
    let out = tollgate(&[
        "rollout",
        "report",
        "--log",
        "/nonexistent/tollgate",
        "--policy",
        pol_s,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, billing("[agreement.tools.refnd]\nexact = true")).unwrap();
    let out = tollgate(&[
        "rollout",
        "report",
        "--log",
        log_s,
        "--policy",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("agreement.tools.refnd"));

    // HTML, then rendered in headless Chromium.
    let page = dir.path().join("agreement.html");
    let out = tollgate(&[
        "rollout",
        "report",
        "--log",
        log_s,
        "--policy",
        pol_s,
        "--format",
        "html",
        "--out",
        page.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let html = fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external resource"
    );
    render_in_chromium(dir.path(), &page);
}

fn render_in_chromium(dir: &Path, page: &Path) {
    let Some(dom) = common::dump_dom(page, dir) else {
        return;
    };
    assert!(
        dom.contains("<title>Agreement report: clinic-billing</title>"),
        "{dom}"
    );
    assert!(dom.contains(r#"data-task="refunds" data-tool="refund""#));
    assert!(dom.contains(r#"data-task="lookups" data-tool="lookup_invoice""#));
    // The reliability diagram: the diagonal and one circle per filled bin (five).
    let svg = dom
        .split(r#"<svg id="reliability""#)
        .nth(1)
        .expect("the reliability diagram");
    let svg = svg.split("</svg>").next().unwrap();
    assert!(svg.contains(r#"class="diagonal""#));
    assert_eq!(svg.matches(r#"class="bin""#).count(), 5);
    let timeline = dom
        .split(r#"<svg id="timeline""#)
        .nth(1)
        .expect("the timeline");
    let timeline = timeline.split("</svg>").next().unwrap();
    let cases: u64 = timeline
        .split(r#"class="point""#)
        .skip(1)
        .map(|p| {
            let n = p.split("data-cases=\"").nth(1).unwrap();
            n[..n.find('"').unwrap()].parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(cases, 7, "every answered case is on the timeline");
    assert!(dom.contains("the human used another tool: note"));

    let shot = dir.join("agreement.png");
    common::headless_chromium(
        page,
        &dir.join("profile2"),
        &[
            "--window-size=1100,1400".to_owned(),
            format!("--screenshot={}", shot.display()),
        ],
    )
    .expect("chromium was found for the DOM above");
    let png = fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("TOLLGATE_KEEP_SCREENSHOT") {
        fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn rollout_report_prints_a_markdown_evidence_report() {
    let dir = temp_dir("md");
    let log = dir.path().join("audit");
    let policy_text = scenario(&log);
    let (log_s, dir_s) = (log.to_str().unwrap(), dir.path().to_str().unwrap());

    // Without [rollout]: agreement, calibration and catalogue, and a line saying so.
    let plain = format!("{dir_s}/plain.toml");
    fs::write(&plain, &policy_text).unwrap();
    let out = tollgate(&[
        "rollout", "report", "--log", log_s, "--policy", &plain, "--format", "md",
    ]);
    assert!(out.status.success(), "{out:?}");
    let md = String::from_utf8(out.stdout).unwrap();
    println!("{md}");
    let version = Policy::from_toml(&policy_text)
        .unwrap()
        .version()
        .to_string();
    for line in [
        "# Evidence report: clinic-billing".to_owned(),
        format!("- Policy version: {version}"),
        "- Recommendations: 8 (7 answered by a human, 1 unanswered)".to_owned(),
        "| refunds | refund | 4 | 1 | 25.0% | 4.6% to 69.9% | 1 |".to_owned(),
        "- Brier score: 0.2471".to_owned(),
        "5 disagreements in 5 kinds.".to_owned(),
        "The policy has no `[rollout]` section.".to_owned(),
    ] {
        assert!(md.lines().any(|l| l == line), "missing {line:?} in\n{md}");
    }
    assert!(
        md.lines()
            .any(|l| l.starts_with("| refund | outside_tolerance | amount | ")),
        "{md}"
    );
    assert!(md.contains("| confidence | cases | agreed | mean confidence | observed agreement |"));

    // With [rollout]: every criterion's required and actual figure per task type.
    let staged = format!("{dir_s}/staged.toml");
    // The rollout's task type must be one the modes name.
    let policy_text = policy_text.replace(
        "default = \"recommend\"\n",
        "default = \"recommend\"\nrules = [{ task_type = \"refunds\", mode = \"recommend\" }]\n",
    );
    fs::write(
        &staged,
        format!(
            "{policy_text}\n[rollout]\n[rollout.task_types.refunds]\nstages = [\n  \
             {{ mode = \"recommend\", promote = {{ min_cases = 5, min_agreement_lower_bound = 0.4 }} }},\n  \
             {{ mode = \"autonomous\" }},\n]\n"
        ),
    )
    .unwrap();
    let out = tollgate(&[
        "rollout", "report", "--log", log_s, "--policy", &staged, "--format", "md",
    ]);
    assert!(out.status.success(), "{out:?}");
    let md = String::from_utf8(out.stdout).unwrap();
    println!("{md}");
    assert!(
        md.lines()
            .any(|l| l == "### refunds: stage 1 of 2 (recommend), next autonomous"),
        "{md}"
    );
    for line in [
        "17 records used.",
        "| min_cases | >= 5 | 4 | no |",
        "| min_agreement_lower_bound | >= 0.4 | 0.0456 | no |",
    ] {
        assert!(md.lines().any(|l| l == line), "missing {line:?} in\n{md}");
    }
}
