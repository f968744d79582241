//! Criterion benches for information-flow control. Run with `cargo bench --bench flow`.
//! Group `flow`, in a run whose context has seen ~100 KB of tool outputs (a user prompt, 40
//! outputs of ~2.5 KB, trusted and untrusted, with IBANs, e-mail addresses and URLs inside):
//! - `check_3_whole_args_raw_json`: `send_money` with 3 checked whole-value arguments
//!   (recipient, amount, subject), raw JSON arguments. Divide by 3 for the cost added per
//!   checked argument.
//! - `check_parts_body_raw_json`: a 130-byte free-text note checked by parts (a URL and an
//!   e-mail address found and looked up): linear in the text's length.
//! - `check_1_arg_value`: one whole-value lookup (`recipient`), parsed arguments.
//! - `check_unruled_tool`: a tool without flow rules (the cost every other call pays).
//! - `observe_100kb`: building the whole run's index from scratch (observe time).
//! - `guard_3_args_with_flow` / `guard_3_args_no_flow`: the `check_3_whole_args_raw_json` call
//!   through a whole `Guard` (check + complete) built from one document with and without its
//!   `[flow]` section, in a run fed the same ~100 KB: the difference is the flow stage's cost.
//!
//! The index's memory for the 100 KB run is printed once (`memory per run`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tollgate::flow::{FlowPolicy, FlowRules, FlowTracker, Output};
use tollgate::policy::{Bindings, Policy};
use tollgate::{Args, Guard, Outcome, Run, RunContext, ToolCall};

const POLICY: &str = r#"
[tools.read_document]
integrity = "untrusted"
tier = "internal"

[tools.get_transactions]
integrity = "trusted"
tier = "confidential"
fields."*.subject" = { integrity = "untrusted" }

[tools.send_money.args.recipient]
accepts = ["user", "trusted"]

[tools.send_money.args.amount]
accepts = ["user", "trusted", "unseen"]

[tools.send_money.args.subject]
accepts = ["user", "trusted", "unseen"]

[tools.send_money.args.note]
accepts = ["user", "trusted", "unseen"]
match = "parts"
"#;

fn rules() -> FlowRules {
    let tiers = [
        "public".to_owned(),
        "internal".to_owned(),
        "confidential".to_owned(),
    ];
    FlowPolicy::from_toml(POLICY)
        .expect("bench policy parses")
        .compile(
            &tiers,
            &[
                "read_document",
                "get_transactions",
                "send_money",
                "get_balance",
            ],
        )
        .expect("bench policy compiles")
}

const WORDS: &[&str] = &[
    "invoice",
    "payment",
    "quarterly",
    "report",
    "meeting",
    "schedule",
    "the",
    "of",
    "and",
    "account",
    "transfer",
    "reference",
    "customer",
    "delivery",
    "contract",
    "renewal",
    "notice",
    "please",
    "review",
    "attached",
    "balance",
    "statement",
    "update",
    "team",
    "project",
];

const PROMPT: &str = "Please pay the December invoice from Acme, 1250.00, to GB29NWBK60161331926819 and summarise the rest.";

/// A run that has seen about 100 KB of outputs.
fn seen_100kb(rules: &FlowRules) -> FlowTracker {
    let mut t = rules.tracker();
    t.observe_prompt(PROMPT);
    feed_100kb(|tool, args, out| {
        rules.observe_output(&mut t, tool, args, out);
    });
    t
}

/// Hands about 100 KB of tool outputs (documents and transaction lists) to `observe`.
fn feed_100kb(mut observe: impl FnMut(&str, Args<'_>, Output<'_>)) {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut total = 0;
    let mut i = 0;
    while total < 100_000 {
        if i % 2 == 0 {
            let mut text = String::new();
            while text.len() < 2500 {
                let w = WORDS[(next() % WORDS.len() as u64) as usize];
                text.push_str(w);
                text.push(' ');
                if next() % 40 == 0 {
                    text.push_str(&format!("DE{:020} ", next() % 10u64.pow(18)));
                }
                if next() % 60 == 0 {
                    text.push_str(&format!(
                        "contact{}@partner{}.example.com ",
                        next() % 1000,
                        next() % 50
                    ));
                }
                if next() % 60 == 0 {
                    text.push_str(&format!(
                        "https://www.site{}.example.org/page/{} ",
                        next() % 100,
                        next() % 1000
                    ));
                }
            }
            total += text.len();
            let args = json!({"path": format!("doc-{i}.txt")});
            observe("read_document", Args::Value(&args), Output::Text(&text));
        } else {
            let rows: Vec<_> = (0..20)
                .map(|k| {
                    json!({"id": i * 100 + k, "amount": (next() % 100_000) as f64 / 100.0,
                       "recipient": format!("CH{:019}", next() % 10u64.pow(18)),
                       "sender": "me", "subject": format!("{} {}", WORDS[k % WORDS.len()], next() % 9999),
                       "date": "2022-03-07"})
                })
                .collect();
            let v = json!(rows);
            total += v.to_string().len();
            observe("get_transactions", Args::None, Output::Json(&v));
        }
        i += 1;
    }
}

/// The same tools as a whole policy document, with or without the `[flow]` section.
fn document(with_flow: bool) -> Policy {
    let mut doc = String::from(
        r#"
tiers = ["public", "internal", "confidential"]
[policy]
name = "flow bench"
owner = "bench"
purpose = "measure the flow stage inside the guard"
scope = "bench"
liability_owner = "bench"
review_cadence = "90d"
data_handling = "none"
[tools.read_document]
effect = "read"
tier = "internal"
args.path = { type = "string", max_length = 100 }
[tools.get_transactions]
effect = "read"
tier = "confidential"
[tools.get_balance]
effect = "read"
tier = "confidential"
[tools.send_money]
effect = "irreversible"
tier = "confidential"
args.recipient = { type = "string", required = true, max_length = 34 }
args.amount = { type = "number", required = true, min = 0 }
args.subject = { type = "string", max_length = 200 }
args.note = { type = "string", max_length = 2000 }
[roles.payer]
clearance = "confidential"
tools = ["read_document", "get_transactions", "get_balance", "send_money"]
"#,
    );
    if with_flow {
        doc.push_str("[flow]\non_violation = \"deny\"\n");
        doc.push_str(&POLICY.replace("[tools.", "[flow.tools."));
    }
    Policy::from_toml(&doc).expect("bench document is valid")
}

/// A guard from `document(with_flow)` and a run that has seen the same ~100 KB.
fn guard_run(with_flow: bool) -> (Guard, Run) {
    let guard = document(with_flow).guard(Bindings::new()).expect("binds");
    let run = guard
        .start_run(RunContext::new("bench", "payer"))
        .expect("role exists");
    run.observe_prompt(PROMPT).expect("no sink");
    feed_100kb(|tool, args, out| {
        run.observe_output(tool, args, out).expect("no sink");
    });
    (guard, run)
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    let tracker = seen_100kb(&rules);
    eprintln!(
        "flow bench: memory per run {} bytes for {} bytes of normalised text ({} texts observed)",
        tracker.memory_bytes(),
        tracker.indexed_bytes(),
        tracker.observed()
    );
    let mut g = c.benchmark_group("flow");
    let raw = r#"{"recipient":"GB29NWBK60161331926819","amount":1250.00,"subject":"December invoice Acme"}"#;
    g.bench_function("check_3_whole_args_raw_json", |b| {
        b.iter(|| black_box(rules.check(&tracker, "send_money", Args::Json(black_box(raw)))))
    });
    let note = r#"{"note":"Paid the December invoice, see https://www.site7.example.org/page/12 and mail contact1@partner2.example.com"}"#;
    g.bench_function("check_parts_body_raw_json", |b| {
        b.iter(|| black_box(rules.check(&tracker, "send_money", Args::Json(black_box(note)))))
    });
    let one = json!({"recipient": "GB29NWBK60161331926819"});
    g.bench_function("check_1_arg_value", |b| {
        b.iter(|| black_box(rules.check(&tracker, "send_money", Args::Value(black_box(&one)))))
    });
    g.bench_function("check_unruled_tool", |b| {
        b.iter(|| black_box(rules.check(&tracker, "get_balance", Args::Json(black_box("{}")))))
    });
    // The same call through a whole guard, with and without the `[flow]` section: the
    // difference is what the flow stage adds to check + complete.
    for (name, with_flow) in [
        ("guard_3_args_with_flow", true),
        ("guard_3_args_no_flow", false),
    ] {
        let (guard, run) = guard_run(with_flow);
        eprintln!(
            "flow bench: {name}: run index memory {} bytes ({} bytes of text)",
            run.flow_memory_bytes(),
            run.flow_indexed_bytes()
        );
        let call = ToolCall::new("send_money", raw);
        let v = guard.check(&run, &call);
        assert!(v.is_allowed(), "{name}: the bench call is allowed: {v:?}");
        drop(v);
        g.bench_function(name, |b| {
            b.iter(|| {
                let permit = guard
                    .check(&run, black_box(&call))
                    .into_permit()
                    .expect("allowed");
                permit.complete(Outcome::success()).expect("no sink");
            })
        });
    }
    g.sample_size(10);
    g.bench_function("observe_100kb", |b| {
        b.iter(|| black_box(seen_100kb(&rules)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
