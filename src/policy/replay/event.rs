//! One audit event as the replay reads it: the fields it needs, borrowed from the record's bytes
//! (strings without escapes and the raw argument text are not copied). Parsed with serde into
//! this struct rather than into a `serde_json::Value` tree, whose allocations would cost more
//! than replaying the record; fields the replay does not need are skipped without allocating.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::ReplayError;

/// The fields of an event (see `AuditEvent::write_json` for what each kind holds).
#[derive(Debug, Deserialize)]
pub(super) struct Event<'a> {
    #[serde(rename = "event", borrow, default, deserialize_with = "opt_str")]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(rename = "time_unix_nano")]
    pub(super) time: Option<u64>,
    #[serde(
        rename = "tollgate.run.id",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) run: Option<Cow<'a, str>>,
    #[serde(
        rename = "gen_ai.agent.id",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) agent: Option<Cow<'a, str>>,
    #[serde(
        rename = "tollgate.role",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) role: Option<Cow<'a, str>>,
    #[serde(
        rename = "tollgate.task_type",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) task_type: Option<Cow<'a, str>>,
    #[serde(
        rename = "tollgate.trigger",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) trigger: Option<Cow<'a, str>>,
    #[serde(
        rename = "tollgate.compartment",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) compartment: Option<Cow<'a, str>>,
    #[serde(rename = "tollgate.read_only")]
    pub(super) read_only: Option<bool>,
    #[serde(
        rename = "gen_ai.tool.name",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) tool: Option<Cow<'a, str>>,
    #[serde(
        rename = "gen_ai.tool.call.id",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) call_id: Option<Cow<'a, str>>,
    #[serde(rename = "gen_ai.tool.call.arguments", borrow)]
    pub(super) args: Option<&'a RawValue>,
    #[serde(
        rename = "tollgate.decision",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) decision: Option<Cow<'a, str>>,
    #[serde(
        rename = "tollgate.deny.code",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) deny_code: Option<Cow<'a, str>>,
    #[serde(
        rename = "tollgate.rule",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) rule: Option<Cow<'a, str>>,
    #[serde(rename = "tollgate.confidence")]
    pub(super) confidence: Option<f64>,
    #[serde(
        rename = "tollgate.flags",
        borrow,
        default,
        deserialize_with = "opt_strs"
    )]
    pub(super) flags: Option<Vec<Cow<'a, str>>>,
    #[serde(rename = "tollgate.outcome", borrow)]
    pub(super) outcome: Option<RecordedStatus<'a>>,
    #[serde(rename = "gen_ai.usage.input_tokens")]
    pub(super) input_tokens: Option<u64>,
    #[serde(rename = "gen_ai.usage.output_tokens")]
    pub(super) output_tokens: Option<u64>,
    #[serde(rename = "tollgate.cost_micros")]
    pub(super) cost_micros: Option<u64>,
    #[serde(
        rename = "tollgate.kill.action",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) kill_action: Option<Cow<'a, str>>,
    #[serde(
        rename = "tollgate.kill.scope",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) kill_scope: Option<Cow<'a, str>>,
    #[serde(
        rename = "tollgate.kill.target",
        borrow,
        default,
        deserialize_with = "opt_str"
    )]
    pub(super) kill_target: Option<Cow<'a, str>>,
}

/// A string borrowed from the record when it holds no escape. (`#[serde(borrow)]` borrows a
/// `Cow<str>` field only when it is the field's whole type: inside an `Option` or a `Vec` serde
/// would copy every string.)
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

fn opt_str<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

fn opt_strs<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Cow<'a, str>>>, D::Error> {
    Ok(Option::<Vec<Borrowed<'a>>>::deserialize(d)?.map(|v| v.into_iter().map(|b| b.0).collect()))
}

/// `tollgate.outcome`: the status (the error message is not needed: the replay records
/// nothing, and the default classifier counts statuses).
#[derive(Debug, Deserialize)]
pub(super) struct RecordedStatus<'a> {
    #[serde(borrow)]
    pub(super) status: Cow<'a, str>,
}

impl<'a> Event<'a> {
    /// Parses the event bytes of record `seq`. The bytes are checked as UTF-8 once, as a whole,
    /// rather than string by string (`from_slice` validates every key and value it reads).
    pub(super) fn parse(seq: u64, bytes: &'a [u8]) -> Result<Self, ReplayError> {
        let malformed = |reason: String| ReplayError::Malformed {
            seq,
            field: "event",
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| malformed(e.to_string()))?;
        serde_json::from_str(text).map_err(|e| malformed(e.to_string()))
    }
}

/// Only the kind of an event, for an event that [`Event::parse`] refused.
#[derive(Deserialize)]
struct KindOnly<'a> {
    #[serde(rename = "event", borrow)]
    kind: Option<Cow<'a, str>>,
}

/// The event kinds the replay acts on; the fields of any other kind are not its concern.
pub(super) const REPLAYED: [&str; 6] = [
    "run_started",
    "decision",
    "outcome",
    "run_finished",
    "escalation_resumed",
    "kill_switch",
];

/// Whether an event [`Event::parse`] refused is of a kind the replay does not act on (its
/// fields may hold what they like): readable JSON whose `event` is a string outside
/// [`REPLAYED`].
pub(super) fn ignorable(bytes: &[u8]) -> bool {
    serde_json::from_slice::<KindOnly<'_>>(bytes)
        .ok()
        .and_then(|k| k.kind)
        .is_some_and(|k| !REPLAYED.contains(&&*k))
}

/// A field the event must have.
pub(super) fn required<'e, T: ?Sized>(
    seq: u64,
    field: &'static str,
    value: Option<&'e T>,
) -> Result<&'e T, ReplayError> {
    value.ok_or(ReplayError::Malformed {
        seq,
        field,
        reason: "missing".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_borrowed_and_unknown_ones_skipped() {
        let bytes = br#"{"event":"decision","time_unix_nano":5,"tollgate.run.id":"r\u00e9","gen_ai.tool.name":"pay","gen_ai.tool.call.arguments":{"amount": 10},"tollgate.flags":["a"],"tollgate.confidence":null,"something.else":{"x":[1]}}"#;
        let ev = Event::parse(1, bytes).unwrap();
        assert_eq!(ev.kind.as_deref(), Some("decision"));
        assert_eq!(ev.time, Some(5));
        assert_eq!(ev.run.as_deref(), Some("r\u{e9}"));
        assert!(matches!(ev.tool, Some(Cow::Borrowed("pay"))));
        assert_eq!(ev.args.map(RawValue::get), Some(r#"{"amount": 10}"#));
        assert!(matches!(ev.flags.as_deref(), Some([Cow::Borrowed("a")])));
        // A string with an escape is unescaped into a copy.
        assert!(matches!(ev.run, Some(Cow::Owned(_))));
        assert_eq!(ev.confidence, None);
    }

    #[test]
    fn a_field_of_another_shape_is_an_error_unless_the_kind_is_not_replayed() {
        let decision = br#"{"event":"decision","tollgate.flags":"not a list"}"#;
        let err = Event::parse(7, decision).unwrap_err();
        assert!(
            matches!(
                err,
                ReplayError::Malformed {
                    seq: 7,
                    field: "event",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!ignorable(decision));
        assert!(ignorable(
            br#"{"event":"credential_issued","tollgate.flags":"not a list"}"#
        ));
        // Not JSON, or no kind: never ignorable.
        assert!(!ignorable(b"{"));
        assert!(!ignorable(br#"{"tollgate.flags":"x"}"#));
        assert!(!ignorable(br#"{"event":7}"#));
    }

    #[test]
    fn required_names_the_record_and_field() {
        let err = required::<str>(3, "tollgate.run.id", None).unwrap_err();
        assert_eq!(err.to_string(), "record seq 3: `tollgate.run.id`: missing");
    }
}
