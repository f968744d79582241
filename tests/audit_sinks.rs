//! Fanout and tracing sinks, and the planted-secret test across every shipped sink.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use tollgate::audit::file::{FileSink, FileSinkConfig};
use tollgate::audit::{AuditError, AuditEvent, AuditSink, Fanout, MemorySink, TracingSink};
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::credential::{CredentialBroker, CredentialGrant, Operation, StaticSecretProvider};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

#[path = "common/tempdir.rs"]
mod tempdir;

/// A minimal `tracing` subscriber that writes every span and event, with all fields, to a string.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut out = self.0.lock().unwrap();
        let _ = write!(out, "SPAN {}", span.metadata().name());
        span.record(&mut Fields(&mut out));
        out.push('\n');
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut out = self.0.lock().unwrap();
        let _ = write!(out, "EVENT {}", event.metadata().level());
        event.record(&mut Fields(&mut out));
        out.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool("crm_lookup", ToolSpec::read().allow_unknown_args())
        .role("r", RoleSpec::new().tools(["crm_lookup"]))
        .build()
        .unwrap()
}

#[test]
fn tracing_sink_emits_execute_tool_spans_with_genai_attributes() {
    let capture = Capture::default();
    let guard = Guard::builder(boundary())
        .audit(Arc::new(TracingSink::new()))
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
        let call = ToolCall::new("crm_lookup", r#"{"id": 1}"#).with_call_id("call_9");
        let Verdict::Allow(p) = guard.check(&run, &call) else {
            panic!()
        };
        p.complete(Outcome::success().with_tokens(10, 5)).unwrap();
        let _ = guard.check(&run, &ToolCall::without_args("nope"));
    });
    let out = capture.0.lock().unwrap().clone();
    assert!(out.contains("SPAN execute_tool"), "{out}");
    assert!(
        out.contains("gen_ai.operation.name=\"execute_tool\""),
        "{out}"
    );
    assert!(out.contains("gen_ai.tool.name=crm_lookup"), "{out}");
    assert!(out.contains("gen_ai.tool.call.id=\"call_9\""), "{out}");
    assert!(out.contains("gen_ai.usage.input_tokens=10"), "{out}");
    assert!(out.contains("EVENT WARN"), "a denial is a warning: {out}");
    assert!(out.contains("unknown_tool"), "{out}");
}

#[derive(Default)]
struct Failing(AtomicBool);

impl AuditSink for Failing {
    fn record(&self, _: &AuditEvent<'_>) -> Result<(), AuditError> {
        if self.0.load(Ordering::SeqCst) {
            Err(AuditError::Refused {
                sink: "failing",
                reason: "down".into(),
            })
        } else {
            Ok(())
        }
    }
    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

#[test]
fn fanout_reaches_every_sink_and_fails_closed_if_one_refuses() {
    let memory = Arc::new(MemorySink::new());
    let failing = Arc::new(Failing::default());
    let fan = Fanout::new(vec![failing.clone(), memory.clone()]);
    let guard = Guard::builder(boundary())
        .audit(Arc::new(fan))
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    assert!(
        guard
            .check(&run, &ToolCall::without_args("crm_lookup"))
            .is_allowed()
    );
    failing.0.store(true, Ordering::SeqCst);
    let before = memory.len();
    let v = guard.check(&run, &ToolCall::without_args("crm_lookup"));
    assert_eq!(v.deny_code(), Some(tollgate::DenyCode::AuditFailed));
    assert!(
        memory.len() > before,
        "the healthy sink still got the event"
    );
}

const PLANTED: &str = "sk-live-PLANTED-SECRET-7c1e9b";

#[test]
fn a_planted_secret_reaches_no_sink() {
    let dir = tempdir::temp_dir("leak", "planted-secret");
    let (file, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    let memory = Arc::new(MemorySink::new());
    let capture = Capture::default();
    let fan = Fanout::new(vec![
        Arc::new(file),
        memory.clone(),
        Arc::new(TracingSink::new()),
    ]);
    let broker = CredentialBroker::builder()
        .provider(
            "crm",
            StaticSecretProvider::new(SecretString::from(PLANTED)),
        )
        .grant(
            "r",
            CredentialGrant::new(
                "crm",
                ["crm_lookup"],
                [Operation::Read],
                "crm/*",
                std::time::Duration::from_secs(60),
            ),
        )
        .build()
        .unwrap();
    let guard = Guard::builder(boundary())
        .audit(Arc::new(fan))
        .credentials(broker)
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
        let call = ToolCall::new("crm_lookup", r#"{"customer": 42}"#);
        let Verdict::Allow(p) = guard.check(&run, &call) else {
            panic!()
        };
        let cred = p.credential("crm", "crm/*").unwrap();
        assert_eq!(cred.expose(&p, "crm/customers/42").unwrap(), PLANTED);
        assert!(cred.expose(&p, "other/1").is_err());
        p.complete(Outcome::success()).unwrap();
        run.finish().unwrap();
    });
    guard.boundary(); // keep the guard alive until here
    let mut everything = capture.0.lock().unwrap().clone();
    for e in memory.events() {
        everything.push_str(&e.to_string());
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        everything.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(everything.contains("credential_used") && everything.contains("credential_revoked"));
    assert!(everything.contains("SPAN execute_tool"));
    assert!(
        !everything.contains(PLANTED),
        "the planted secret leaked into a sink"
    );
}

#[test]
fn tracing_alerts_are_warnings_with_their_context() {
    use tollgate::breaker::TracingAlerts;
    let capture = Capture::default();
    let guard = Guard::builder(boundary())
        .alerts(Arc::new(TracingAlerts))
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || {
        guard
            .suspend_agent(&tollgate::AgentId::new("bot-9"), "ops:dana")
            .unwrap();
    });
    let out = capture.0.lock().unwrap().clone();
    assert!(out.contains("EVENT WARN"), "{out}");
    assert!(out.contains("kind=Suspended"), "{out}");
    assert!(
        out.contains("kill switch: suspend agent bot-9 by ops:dana"),
        "{out}"
    );
}
