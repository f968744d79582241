//! Regression tests for findings 3, 5, 12 and 14 of the attacker review after issue 10. Each
//! reproduces the attack of `review/tests/attack_review.rs` and sees it stopped.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::Value;
use tollgate::audit::{CREDENTIAL_PLACEHOLDER, MemorySink};
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::clock::ManualClock;
use tollgate::credential::{
    CredentialBroker, CredentialError, CredentialGrant, JwtProvider, Operation, ResourcePattern,
    StaticSecretProvider,
};
use tollgate::policy::{Bindings, Policy};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

#[path = "common/tempdir.rs"]
mod tempdir;

// ---------------------------------------------------------------------------------------------
// Finding 5: a `..?` or `..#` segment takes a resource outside its credential scope.

/// The reviewer's attack: `…/A-1/..?owner=A-2` was covered by `…/A-1/*` while every URL parser
/// resolves it to `/v1/accounts/`. Now `covers`, `expose` and the downstream
/// `TokenClaims::permits` all refuse it, in every form of the segment end.
#[test]
fn resource_dot_dot_before_query_or_fragment_no_longer_escapes_the_scope() {
    let scope = ResourcePattern::parse("https://api.bank.example/v1/accounts/A-1/*").unwrap();
    for r in [
        "https://api.bank.example/v1/accounts/A-1/..?x",
        "https://api.bank.example/v1/accounts/A-1/..#x",
        "https://api.bank.example/v1/accounts/A-1/..?owner=A-2",
        "https://api.bank.example/v1/accounts/A-1/.?x",
        "https://api.bank.example/v1/accounts/A-1/..%3Fowner=A-2",
        "https://api.bank.example/v1/accounts/A-1/..\u{FF1F}owner=A-2",
        "https://api.bank.example/v1/accounts/A-1/..\u{FE5F}x",
        "https://api.bank.example/v1/accounts/A-1/..\u{200B}?x",
        "https://api.bank.example/v1/accounts/A-1/..\u{E9}",
    ] {
        // What the reviewer showed: the URL parser does not read it as below the prefix.
        if let Ok(u) = url::Url::parse(r)
            && !r.contains('%')
            && r.is_ascii()
        {
            let below = u.path().starts_with("/v1/accounts/A-1/")
                && u.path().len() > "/v1/accounts/A-1/".len();
            assert!(!below, "{r} -> {}", u.path());
        }
        assert!(!scope.covers(r), "{r} is still covered");
        assert!(ResourcePattern::validate_resource(r).is_err(), "{r}");
    }
    // Ordinary queries and fragments below the prefix are still covered.
    assert!(scope.covers("https://api.bank.example/v1/accounts/A-1/tx?limit=10#top"));

    // Through a real permit: `expose` refuses the escaping resource, and a token minted for the
    // scope does not permit it downstream.
    let tokens = JwtProvider::new(
        tollgate::credential::token::SigningKey::generate("k1").unwrap(),
        "bank",
    );
    let verifier = tokens.verifier();
    let broker = CredentialBroker::builder()
        .provider("bank", tokens)
        .grant(
            "agent",
            CredentialGrant::new(
                "bank",
                ["fetch"],
                [Operation::Read],
                "https://api.bank.example/v1/accounts/{compartment}/*",
                Duration::from_secs(60),
            ),
        )
        .build()
        .unwrap();
    let guard = Guard::builder(fetch_boundary())
        .credentials(broker)
        .build()
        .unwrap();
    let run = guard
        .start_run(RunContext::new("bot", "agent").in_compartment("A-1"))
        .unwrap();
    let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("fetch")) else {
        panic!("fetch is allowed")
    };
    let cred = p
        .credential("bank", "https://api.bank.example/v1/accounts/A-1/*")
        .unwrap();
    let evil = "https://api.bank.example/v1/accounts/A-1/..?owner=A-2";
    assert!(matches!(
        cred.expose(&p, evil),
        Err(CredentialError::WrongResource(_))
    ));
    let good = "https://api.bank.example/v1/accounts/A-1/tx";
    let token = cred.expose(&p, good).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = verifier.verify(token, now).unwrap();
    assert!(claims.permits("fetch", Operation::Read, good));
    assert!(!claims.permits("fetch", Operation::Read, evil));
    assert!(!claims.permits(
        "fetch",
        Operation::Read,
        "https://api.bank.example/v1/accounts/A-1/..#x"
    ));
    p.complete(Outcome::success()).unwrap();
}

fn fetch_boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool("fetch", ToolSpec::read())
        .role("agent", RoleSpec::new().tools(["fetch"]))
        .build()
        .unwrap()
}

/// A compartment id is substituted into `{compartment}` grant patterns. One that ends a segment
/// for some parser (`A-1;x` is `A-1` to a servlet container, `A-1#` and `A-1?` are `A-1` to a
/// URL parser, a non-ASCII character is `?` after a lossy conversion) would reach compartment
/// `A-1`'s resources: it never matches a grant.
#[test]
fn compartment_holding_a_segment_end_never_fills_a_grant() {
    let broker = CredentialBroker::builder()
        .provider(
            "docs",
            StaticSecretProvider::new(SecretString::from("k-0123456789")),
        )
        .grant(
            "agent",
            CredentialGrant::new(
                "docs",
                ["fetch"],
                [Operation::Read],
                "matter/{compartment}",
                Duration::from_secs(60),
            ),
        )
        .build()
        .unwrap();
    let b = fetch_boundary();
    let guard = Guard::builder(b).credentials(broker).build().unwrap();
    for (compartment, granted) in [
        ("A-1", true),
        ("A-1;x", false),
        ("A-1?", false),
        ("A-1#", false),
        ("A-1\u{E9}", false),
    ] {
        let run = guard
            .start_run(RunContext::new("bot", "agent").in_compartment(compartment))
            .unwrap();
        let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("fetch")) else {
            panic!("fetch is allowed")
        };
        let r = p.credential("docs", &format!("matter/{compartment}"));
        assert_eq!(r.is_ok(), granted, "{compartment:?}: {r:?}");
        p.complete(Outcome::success()).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 12: `TracingSink` writes unbounded error messages.

/// The reviewer's attack: an 8 MiB tool error reached the `tracing` subscriber whole (and so did
/// an agent-chosen call id, agent id or run id of any size). Now every field is bounded as the
/// file sink bounds it, and the placeholder says what was left out.
#[test]
fn tracing_sink_8_mib_error_message_is_bounded() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Default)]
    struct Longest(AtomicUsize, Mutex<Vec<String>>);
    struct V<'a>(&'a Longest);
    impl Visit for V<'_> {
        fn record_debug(&mut self, f: &Field, value: &dyn std::fmt::Debug) {
            let text = format!("{value:?}");
            self.0.0.fetch_max(text.len(), Ordering::Relaxed);
            if f.name() == "tollgate.outcome" {
                self.0.1.lock().unwrap().push(text);
            }
        }
    }
    impl Subscriber for &'static Longest {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, a: &Attributes<'_>) -> Id {
            a.record(&mut V(self));
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            e.record(&mut V(self));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    let big = "x".repeat(8 << 20);
    let longest: &'static Longest = Box::leak(Box::default());
    tracing::subscriber::with_default(longest, || {
        let b = ActionBoundary::builder()
            .tool("t", ToolSpec::read())
            .role("r", RoleSpec::new().tools(["t"]))
            .build()
            .unwrap();
        let guard = Guard::builder(b)
            .audit(Arc::new(tollgate::audit::TracingSink::new()))
            .build()
            .unwrap();
        let run = guard.start_run(RunContext::new(big.as_str(), "r")).unwrap();
        let call = ToolCall::without_args("t").with_call_id(&big);
        let r = guard.execute(&run, &call, |_| Err::<(), _>(big.clone()));
        assert!(r.is_err());
    });
    let longest_field = longest.0.load(Ordering::Relaxed);
    assert!(
        longest_field <= tollgate::audit::values::DEFAULT_MAX_VALUE_BYTES * 2,
        "a field of {longest_field} bytes reached the subscriber"
    );
    let outcomes = longest.1.lock().unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    let outcome: Value = serde_json::from_str(&outcomes[0]).unwrap();
    assert_eq!(outcome["status"], "error");
    assert_eq!(outcome["message"]["tollgate.omitted"], "too_large");
    assert_eq!(outcome["message"]["bytes"], 8 << 20);
}

// ---------------------------------------------------------------------------------------------
// Finding 14: argument bounds are f64 and can round.

const DOC_HEAD: &str = r#"
[policy]
name = "x"
owner = "x"
purpose = "x"
scope = "x"
liability_owner = "x"
review_cadence = "90d"
data_handling = "x"
"#;

/// The reviewer's attack: `max = 9007199254740995` was stored as 9007199254740996, and that
/// value was allowed. Now the document is refused at compile time, naming the field.
#[test]
fn argument_bound_a_double_rounds_up_is_refused_naming_the_field() {
    for (bound, field) in [
        ("max = 9007199254740995", "max"),
        ("min = -9007199254740995", "min"),
        ("max = 9007199254740993", "max"),
        ("max = 12345678901234567", "max"),
        ("min = 0.12345678901234567", "min"),
        ("max = 9007199254740991.5", "max"),
    ] {
        let text = format!(
            "{DOC_HEAD}\n[tools.transfer]\neffect = \"write\"\nargs.units = {{ type = \"number\", required = true, {bound} }}\n[roles.agent]\ntools = [\"transfer\"]\n"
        );
        let e = Policy::from_toml(&text)
            .map(|p| Guard::from_policy(&p, Bindings::new()).map(drop))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{bound} accepted"));
        assert!(
            e.contains(&format!("tools.transfer.args.units.{field}")),
            "{bound}: {e}"
        );
    }
    // The bound the reviewer wrote, minus what a double cannot hold, is fine and exact.
    let text = format!(
        "{DOC_HEAD}\n[tools.transfer]\neffect = \"write\"\nargs.units = {{ type = \"integer\", required = true, max = 999999999999999 }}\n[roles.agent]\ntools = [\"transfer\"]\n"
    );
    let guard = Guard::from_policy(&Policy::from_toml(&text).unwrap(), Bindings::new()).unwrap();
    let run = guard.start_run(RunContext::new("bot", "agent")).unwrap();
    for (units, allowed) in [
        ("999999999999999", true),
        ("1000000000000000", false),
        ("9007199254740996", false),
    ] {
        let args = format!(r#"{{"units": {units}}}"#);
        let v = guard.check(&run, &ToolCall::new("transfer", args.as_str()));
        assert_eq!(v.is_allowed(), allowed, "{units}: {v:?}");
        if let Verdict::Allow(p) = v {
            p.complete(Outcome::success()).unwrap();
        }
    }
}

/// A bound as a document writes it: an integer literal, or a decimal float literal.
#[derive(Debug, Clone)]
struct Bound {
    text: String,
    /// The value written.
    written: Decimal,
    /// A float literal with more than 15 significant digits: the parser keeps only its double,
    /// so it is refused or read as that double's shortest decimal (see `bound_is_exact`).
    float_beyond_15_digits: bool,
    /// At most 15 significant digits and, if integral, below 2^53: must be accepted.
    representable: bool,
}

fn significant_digits(d: Decimal) -> u32 {
    let m = d.normalize().mantissa().unsigned_abs();
    if m == 0 { 0 } else { m.ilog10() + 1 }
}

fn bound() -> impl Strategy<Value = Bound> {
    const TWO_53: i64 = 1 << 53;
    let integer = prop_oneof![
        -1000i64..1000,
        (TWO_53 - 40)..(TWO_53 + 40),
        (-TWO_53 - 40)..(-TWO_53 + 40),
        999_999_999_999_000i64..1_000_000_000_001_000,
        any::<i64>(),
    ]
    .prop_map(|i| {
        let written = Decimal::from(i);
        Bound {
            text: i.to_string(),
            written,
            float_beyond_15_digits: false,
            representable: i.unsigned_abs() < 1 << 53 && significant_digits(written) <= 15,
        }
    });
    let float = (
        prop_oneof![
            1i64..1000,
            1i64..1_000_000_000_000_000,
            1i64..100_000_000_000_000_000
        ],
        0u32..=12,
        any::<bool>(),
    )
        .prop_map(|(m, scale, negative)| {
            let mut written = Decimal::new(m, scale);
            written.set_sign_negative(negative);
            let mut text = written.to_string();
            if !text.contains('.') {
                text.push_str(".0");
            }
            let digits = significant_digits(written);
            Bound {
                representable: digits <= 15
                    && (written.fract() != Decimal::ZERO
                        || written.abs() < Decimal::from(9_007_199_254_740_992i64)),
                float_beyond_15_digits: digits > 15,
                text,
                written,
            }
        });
    prop_oneof![integer, float]
}

/// Arguments near `b`: on it, one unit or a tiny step either side, as integer and float
/// literals with few and with many digits.
fn arguments(b: Decimal) -> Vec<String> {
    let mut steps = vec![Decimal::ZERO, Decimal::ONE, Decimal::NEGATIVE_ONE];
    for k in [1u32, 5, 14, 15, 16, 17, 20] {
        steps.push(Decimal::new(1, k));
        steps.push(-Decimal::new(1, k));
    }
    let mut out = Vec::new();
    for s in steps {
        let Some(a) = b.checked_add(s) else { continue };
        let text = a.to_string();
        if text.contains('.') {
            out.push(text);
        } else {
            out.push(format!("{text}.0"));
            out.push(text);
        }
    }
    out
}

fn literal_digits(text: &str) -> u32 {
    Decimal::from_str_exact(text).map_or(99, significant_digits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Bounds against exact decimal comparison (rust_decimal). A bound is refused at compile
    /// time, or every argument is judged as its exact decimal value compares with the bound as
    /// written: never allowed beyond it, and never denied within it when the argument is an
    /// integer or has at most 15 significant digits (more digits fail closed at the bound).
    /// Bounds of at most 15 significant digits (integral ones below 2^53) are always accepted.
    /// (A float literal bound of more than 15 significant digits reaches the boundary as a
    /// double only: accepted, it is read as that double's shortest decimal.)
    #[test]
    fn argument_bounds_compare_like_exact_decimals(b in bound(), is_max in any::<bool>()) {
        let key = if is_max { "max" } else { "min" };
        let doc = format!(
            "[tools.t]\neffect = \"read\"\nargs.n = {{ type = \"number\", {key} = {} }}\n[roles.r]\ntools = [\"t\"]\n",
            b.text
        );
        let compiled = ActionBoundary::from_toml(&doc);
        let boundary = match compiled {
            Err(e) => {
                prop_assert!(!b.representable, "{} refused: {}", b.text, e);
                prop_assert_eq!(e.field(), Some(&*format!("tools.t.args.n.{key}")));
                return Ok(());
            }
            Ok(boundary) => boundary,
        };
        // What the boundary compares with: the bound as written, except for a float literal of
        // more than 15 digits, of which only the double reached it.
        let meant = if b.float_beyond_15_digits {
            let double: f64 = b.text.parse().unwrap();
            Decimal::from_str(&double.to_string()).unwrap()
        } else {
            b.written
        };
        let ctx = RunContext::new("a", "r");
        for a in arguments(meant) {
            let exact = Decimal::from_str_exact(&a).unwrap();
            let within = if is_max { exact <= meant } else { exact >= meant };
            let args = format!(r#"{{"n":{a}}}"#);
            // Raw JSON text.
            let raw_allowed = boundary.check(&ctx, &ToolCall::new("t", args.as_str())).is_ok();
            prop_assert!(!raw_allowed || within, "bound {} {}: {} allowed", key, b.text, a);
            let plain = !a.contains('.') || literal_digits(&a) <= 15;
            if plain {
                prop_assert!(raw_allowed || !within, "bound {} {}: {} denied", key, b.text, a);
            }
            // A parsed value: a double stands for its shortest decimal.
            let v: Value = serde_json::from_str(&args).unwrap();
            let n = &v["n"];
            let value_exact = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Decimal::from(i),
                (None, Some(u)) => Decimal::from(u),
                _ => Decimal::from_str(&n.as_f64().unwrap().to_string()).unwrap(),
            };
            let value_within = if is_max { value_exact <= meant } else { value_exact >= meant };
            let value_allowed = boundary.check(&ctx, &ToolCall::new("t", &v)).is_ok();
            prop_assert_eq!(value_allowed, value_within, "bound {} {}: value {}", key, b.text, n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 3: a credential the guard minted reaches the audit log.

const API_KEY: &str = "sk-live-PLANTED+9a8b/7c6d=5e";

fn lookup_guard(sink: Arc<MemorySink>) -> Guard {
    let broker = CredentialBroker::builder()
        .provider(
            "legacy",
            StaticSecretProvider::new(SecretString::from(API_KEY)),
        )
        .grant(
            "agent",
            CredentialGrant::new(
                "legacy",
                ["lookup"],
                [Operation::Read],
                "*",
                Duration::from_secs(600),
            ),
        )
        .build()
        .unwrap();
    let b = ActionBoundary::builder()
        .tool("lookup", ToolSpec::read())
        .role("agent", RoleSpec::new().tools(["lookup"]))
        .build()
        .unwrap();
    Guard::builder(b)
        .audit(sink)
        .clock(Arc::new(ManualClock::new()))
        .credentials(broker)
        .build()
        .unwrap()
}

/// The forms a tool's texts quote the key in: as given, URL-encoded (both hex cases, Python's
/// `quote` leaving `/` alone), JSON-escaped.
fn quotings() -> Vec<String> {
    vec![
        API_KEY.to_owned(),
        "sk-live-PLANTED%2B9a8b%2F7c6d%3D5e".to_owned(),
        "sk-live-PLANTED%2b9a8b/7c6d%3d5e".to_owned(),
        "sk-live-PLANTED\\u002b9a8b\\/7c6d\\u003D5e".to_owned(),
    ]
}

fn assert_no_key(sink: &MemorySink) {
    let log = serde_json::to_string(&sink.events()).unwrap();
    for q in quotings() {
        assert!(!log.contains(&q), "{q} reached the audit log: {log}");
    }
    assert!(
        !log.contains("PLANTED"),
        "a piece of the key reached the log: {log}"
    );
}

/// The reviewer's attack: the tool's HTTP error quotes its request URL with the key the guard
/// minted and exposed for it. Now the key is cut out of the error message and the output, in
/// every form, before any sink sees the outcome.
#[test]
fn minted_credential_value_in_tool_error_never_reaches_the_audit_log() {
    let sink = Arc::new(MemorySink::new());
    let guard = lookup_guard(sink.clone());
    let run = guard.start_run(RunContext::new("bot", "agent")).unwrap();
    for q in quotings() {
        let r: Result<(), _> = guard.execute(&run, &ToolCall::without_args("lookup"), |permit| {
            let cred = permit.credential("legacy", "customers/42").unwrap();
            let key = cred.expose(permit, "customers/42").unwrap();
            assert_eq!(key, API_KEY);
            Err(format!(
                "GET https://legacy.example/customers/42?api_key={q}: 401 Unauthorized"
            ))
        });
        assert!(r.is_err());
    }
    // The output too.
    let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("lookup")) else {
        panic!("lookup is allowed")
    };
    let cred = p.credential("legacy", "customers/43").unwrap();
    let key = cred.expose(&p, "customers/43").unwrap().to_owned();
    let body =
        serde_json::json!({"request": {"headers": {"Authorization": format!("Bearer {key}")}}});
    p.complete(Outcome::success().with_output(body.to_string()))
        .unwrap();
    assert_no_key(&sink);
    let outcomes: Vec<Value> = sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "outcome")
        .collect();
    assert_eq!(outcomes.len(), 5);
    for o in &outcomes[..4] {
        let m = o["tollgate.outcome"]["message"].as_str().unwrap();
        assert_eq!(
            m,
            format!(
                "GET https://legacy.example/customers/42?api_key={CREDENTIAL_PLACEHOLDER}: 401 Unauthorized"
            )
        );
    }
    assert!(
        outcomes[4]["tollgate.output"]
            .as_str()
            .unwrap()
            .contains(&format!("Bearer {CREDENTIAL_PLACEHOLDER}"))
    );
}

/// A detached permit that completes after its run ended (and the credential was revoked), a
/// permit completing after the kill switch revoked the credential, and a later call of the same
/// run quoting a key an earlier permit was handed: the key is cut out of all of them.
#[test]
fn minted_credential_value_is_scrubbed_after_revocation_detachment_and_in_later_calls() {
    let sink = Arc::new(MemorySink::new());
    let guard = lookup_guard(sink.clone());

    // Detached, completed after the run finished.
    let run = guard.start_run(RunContext::new("bot", "agent")).unwrap();
    let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("lookup")) else {
        panic!("lookup is allowed")
    };
    let cred = p.credential("legacy", "customers/1").unwrap();
    let key = cred.expose(&p, "customers/1").unwrap().to_owned();
    let detached = p.detach();
    drop(cred);
    run.finish().unwrap();
    detached
        .complete(Outcome::error(format!("timeout calling ?key={key}")))
        .unwrap();

    // Completed after the kill switch revoked the credential.
    let run = guard.start_run(RunContext::new("bot", "agent")).unwrap();
    let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("lookup")) else {
        panic!("lookup is allowed")
    };
    let cred = p.credential("legacy", "customers/2").unwrap();
    let key = cred.expose(&p, "customers/2").unwrap().to_owned();
    guard.suspend_run(&run, "oncall").unwrap();
    assert!(cred.is_revoked());
    p.complete(Outcome::error(format!("cancelled: ?key={key}")))
        .unwrap();
    guard.resume_run(&run, "oncall").unwrap();

    // Handed to one permit, quoted by a later call of the same run.
    let run = guard.start_run(RunContext::new("bot", "agent")).unwrap();
    let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("lookup")) else {
        panic!("lookup is allowed")
    };
    let cred = p.credential("legacy", "customers/3").unwrap();
    let key = cred.expose(&p, "customers/3").unwrap().to_owned();
    p.complete(Outcome::success()).unwrap();
    let r: Result<(), _> = guard.execute(&run, &ToolCall::without_args("lookup"), |_| {
        Err(format!("cached key {key} rejected"))
    });
    assert!(r.is_err());

    assert_no_key(&sink);
    let messages: Vec<String> = sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "outcome")
        .filter_map(|e| e["tollgate.outcome"]["message"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        messages,
        [
            format!("timeout calling ?key={CREDENTIAL_PLACEHOLDER}"),
            format!("cancelled: ?key={CREDENTIAL_PLACEHOLDER}"),
            format!("cached key {CREDENTIAL_PLACEHOLDER} rejected"),
        ]
    );
}

/// Every shipped sink: the file sink and the tracing sink never see the key either (the scrub
/// happens before recording, not in a sink).
#[test]
fn minted_credential_value_in_tool_error_reaches_no_shipped_sink() {
    use tollgate::audit::file::{FileSink, FileSinkConfig};
    let dir = tempdir::temp_dir("review-misc", "shipped-sinks");
    let (file, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    let file = Arc::new(file);
    let memory = Arc::new(MemorySink::new());
    let fan = tollgate::audit::Fanout::new(vec![
        file.clone(),
        memory.clone(),
        Arc::new(tollgate::audit::TracingSink::new()),
    ]);
    let broker = CredentialBroker::builder()
        .provider(
            "legacy",
            StaticSecretProvider::new(SecretString::from(API_KEY)),
        )
        .grant(
            "agent",
            CredentialGrant::new(
                "legacy",
                ["lookup"],
                [Operation::Read],
                "*",
                Duration::from_secs(600),
            ),
        )
        .build()
        .unwrap();
    let b = ActionBoundary::builder()
        .tool("lookup", ToolSpec::read())
        .role("agent", RoleSpec::new().tools(["lookup"]))
        .build()
        .unwrap();
    let guard = Guard::builder(b)
        .audit(Arc::new(fan))
        .credentials(broker)
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "agent")).unwrap();
    let r: Result<(), _> = guard.execute(&run, &ToolCall::without_args("lookup"), |permit| {
        let cred = permit.credential("legacy", "customers/42").unwrap();
        let key = cred.expose(permit, "customers/42").unwrap();
        Err(format!("GET /customers/42?api_key={key}: 401"))
    });
    assert!(r.is_err());
    run.finish().unwrap();
    tollgate::audit::AuditSink::flush(&*file).unwrap();
    assert_no_key(&memory);
    let mut on_disk = String::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            on_disk.push_str(&text);
        }
    }
    assert!(
        on_disk.contains(CREDENTIAL_PLACEHOLDER),
        "the outcome is on disk"
    );
    assert!(!on_disk.contains("PLANTED"), "the key is on disk");
}
