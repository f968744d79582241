//! One policy document for a whole deployment.
//!
//! A [`Policy`] is read from one TOML or JSON file that holds everything a deployment decides:
//! who owns it and why ([`Metadata`]), tiers, tools, roles and compartments, escalation rules and
//! approver groups, credential grants, breakers, budgets, rate limits, loop detection, baselines
//! and the audit trail's behaviour. Code binds only what cannot be written down (key material,
//! sinks, clocks; see [`Bindings`]).
//!
//! Reading a document refuses unknown fields, duplicate keys, cross-references to things the
//! document does not define (a grant naming an unknown role, a role given a tool above its
//! clearance, a rule naming an unknown approver group) and values that make no sense; every error
//! names the field's path with its section prefix and, from the text, its line and column.
//!
//! The document's [`PolicyVersion`] is the SHA-256 of its canonical JSON form (see
//! [`Policy::canonical_json`]): every verdict, permit and audit record of a guard built from it
//! carries that version, so any change to a threshold, a budget or a breaker setting is a new
//! version in the trail. Comments, whitespace, key order and TOML-versus-JSON do not change it.
//!
//! ```
//! use tollgate::policy::Policy;
//!
//! let policy = Policy::from_toml(r#"
//!     tiers = ["public", "phi"]
//!
//!     [policy]
//!     name = "clinic-assistant"
//!     owner = "Clinical informatics <informatics@clinic.example>"
//!     purpose = "Answer patients' scheduling questions."
//!     scope = "Outpatient clinic; one patient per task."
//!     liability_owner = "Chief Medical Officer"
//!     review_cadence = "90d"
//!     data_handling = "PHI stays within the patient's compartment."
//!
//!     [tools.lookup_appointments]
//!     effect = "read"
//!     tier = "phi"
//!
//!     [roles.scheduler]
//!     clearance = "phi"
//!     tools = ["lookup_appointments"]
//! "#)?;
//! assert_eq!(policy.document().policy.name, "clinic-assistant");
//!
//! // A cross-reference mistake names the path, line and column.
//! let err = Policy::from_toml(r#"
//!     [policy]
//!     name = "x"
//!     owner = "x"
//!     purpose = "x"
//!     scope = "x"
//!     liability_owner = "x"
//!     review_cadence = "90d"
//!     data_handling = "x"
//!
//!     [roles.scheduler]
//!     tools = ["lookup_appointment"]
//! "#).unwrap_err();
//! assert_eq!(err.path(), Some("roles.scheduler.tools[0]"));
//! assert_eq!(err.location().map(|l| l.line), Some(12));
//! # Ok::<(), tollgate::policy::DocumentError>(())
//! ```

mod bind;
mod diff;
mod document;
mod error;
mod explain;
mod locate;
mod matrix;
mod replay;
mod review;
mod sign;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::agreement::Agreement;
use crate::boundary::{ActionBoundary, PolicyDocument};
use crate::escalation::EscalationGate;
use crate::flow::FlowRules;
use crate::mode::{Mode, Modes};
use crate::rollout::Rollout;
use crate::verdict::PolicyVersion;

pub use bind::{BindError, Bindings};
pub use diff::{Change, ChangeKind, diff};
pub use document::{
    Audit, AuditDurability, BaselineSection, Breakers, Budgets, Compartments, Credentials,
    Document, GrantSpec, Keep, Metadata, ProviderSpec, RedactionMode, Retention, WhenFull,
};
pub use error::DocumentError;
pub use explain::{Explanation, Probe, Stage, StageOutcome};
pub use locate::{Location, locate};
pub use matrix::MatrixFormat;
pub use replay::{
    ChangeCounts, DecisionKind, Replay, ReplayChange, ReplayDecision, ReplayError, ReplayExample,
    ReplayReport, Uncertainty,
};
pub use review::Warning;
pub use sign::{
    ReviewerKey, ReviewerPublicKey, SIGNATURE_FORMAT, Signature, SignatureError, SignatureFile,
    Trust,
};
pub use watch::{PolicyWatcher, WatchOutcome};

/// The two document formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// TOML (needs the `toml` feature, on by default).
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// `"TOML"` or `"JSON"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        }
    }

    /// The format a file's extension implies: `.toml` is TOML, anything else JSON.
    pub fn of_path(path: &Path) -> Format {
        if path.extension().is_some_and(|e| e == "toml") {
            Format::Toml
        } else {
            Format::Json
        }
    }
}

/// Longest TTL a credential grant may set.
const MAX_GRANT_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Most decimals a cost may have (budgets count in millionths).
const COST_DECIMALS: u32 = 6;

/// A validated policy document, compiled into the boundary and escalation gate it describes.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    document: Document,
    /// The text it was read from, for locating warnings.
    source: Option<(String, Format)>,
    canonical: Vec<u8>,
    version: PolicyVersion,
    boundary: ActionBoundary,
    escalation: Option<EscalationGate>,
    flow: Option<FlowRules>,
    modes: Option<Modes>,
    agreement: Option<Agreement>,
    rollout: Option<Rollout>,
}

impl Policy {
    /// Reads a TOML document.
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, DocumentError> {
        Self::parse(text, Format::Toml)
    }

    /// Reads a JSON document. Duplicate keys anywhere are refused.
    pub fn from_json(text: &str) -> Result<Self, DocumentError> {
        Self::parse(text, Format::Json)
    }

    /// Reads a document file: `.toml` as TOML, anything else as JSON.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DocumentError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| DocumentError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, Format::of_path(path))
    }

    /// Reads a document in `format`.
    pub fn parse(text: &str, format: Format) -> Result<Self, DocumentError> {
        let document = parse_document(text, format)?;
        let mut policy = Self::from_document(document).map_err(|e| e.located(text, format))?;
        if let Some(inner) = Arc::get_mut(&mut policy.inner) {
            inner.source = Some((text.to_owned(), format));
        }
        Ok(policy)
    }

    /// Validates and compiles a document built in code (errors carry paths but no locations).
    pub fn from_document(document: Document) -> Result<Self, DocumentError> {
        cross_check(&document)?;
        if let Some(backend) = &document.backend {
            backend.validate()?;
        }
        crate::integrations::mcp::config::check(&document)?;
        let canonical = canonical_json(&document)?;
        let version = version_of(&canonical);
        let (boundary, escalation) = compile_parts(&document, version)?;
        let flow = compile_flow(&document, escalation.as_ref())?;
        let modes = compile_modes(&document, escalation.as_ref())?;
        let agreement = compile_agreement(&document)?;
        let rollout = compile_rollout(&document, escalation.as_ref())?;
        Ok(Policy {
            inner: Arc::new(Inner {
                document,
                source: None,
                canonical,
                version,
                boundary,
                escalation,
                flow,
                modes,
                agreement,
                rollout,
            }),
        })
    }

    /// Where `path` is written in the text the policy was read from (none for a document built
    /// in code).
    pub fn locate(&self, path: &str) -> Option<Location> {
        let (text, format) = self.inner.source.as_ref()?;
        locate(text, *format, path)
    }

    /// The document.
    pub fn document(&self) -> &Document {
        &self.inner.document
    }

    /// The version every decision under this policy carries: SHA-256 over
    /// `"tollgate-policy-v1\n"` followed by [`canonical_json`](Self::canonical_json).
    pub fn version(&self) -> PolicyVersion {
        self.inner.version
    }

    /// The canonical form that is hashed and signed: the document as compact JSON with object
    /// keys in sorted order, optional fields that are absent left out, and durations and amounts
    /// in their normal text form.
    pub fn canonical_json(&self) -> &[u8] {
        &self.inner.canonical
    }

    /// The compiled action boundary (carrying the document's version).
    pub fn boundary(&self) -> &ActionBoundary {
        &self.inner.boundary
    }

    /// The compiled escalation gate, if the document has an `escalation` section.
    pub fn escalation(&self) -> Option<&EscalationGate> {
        self.inner.escalation.as_ref()
    }

    /// The compiled flow rules, if the document has a `flow` section.
    pub fn flow(&self) -> Option<&FlowRules> {
        self.inner.flow.as_ref()
    }

    /// The compiled comparators of the document's `agreement` section (see
    /// [`crate::agreement`]); `None` without one (every tool is then compared exactly:
    /// [`Agreement::exact`]).
    pub fn agreement(&self) -> Option<&Agreement> {
        self.inner.agreement.as_ref()
    }

    /// The compiled `rollout` section with each task type's current stage (see
    /// [`crate::rollout`]); `None` without one.
    pub fn rollout(&self) -> Option<&Rollout> {
        self.inner.rollout.as_ref()
    }

    /// The compiled deployment modes, if the document has a `modes` section.
    pub fn modes(&self) -> Option<&Modes> {
        self.inner.modes.as_ref()
    }
}

/// Compiles the `agreement` section: comparators may name only tools the document defines, and
/// (for a tool that refuses undeclared arguments) only arguments it declares.
pub(crate) fn compile_agreement(document: &Document) -> Result<Option<Agreement>, DocumentError> {
    let Some(section) = &document.agreement else {
        return Ok(None);
    };
    for (tool, spec) in &section.tools {
        let at = format!("agreement.tools.{tool}");
        let Some(def) = document.tools.get(tool) else {
            return Err(DocumentError::unknown(
                at,
                "tool",
                tool,
                document.tools.keys(),
            ));
        };
        if def.allow_unknown_args {
            continue;
        }
        // The first name of each declared argument path (`payment.amount`, `recipients[]`).
        let declared: BTreeSet<&str> = def
            .args
            .keys()
            .map(|k| k.split(['.', '[']).next().unwrap_or(k))
            .collect();
        let paths = spec
            .fields
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| (format!("{at}.fields[{i}]"), p))
            .chain(
                spec.tolerance
                    .keys()
                    .map(|p| (format!("{at}.tolerance.{p}"), p)),
            )
            .chain(
                spec.sets
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("{at}.sets[{i}]"), p)),
            );
        for (path, p) in paths {
            let first = p.split('.').next().unwrap_or(p);
            if !declared.contains(first) {
                return Err(DocumentError::unknown(path, "argument", first, &declared));
            }
        }
    }
    Agreement::compile(section)
        .map(Some)
        .map_err(|e| DocumentError::invalid(e.path, e.reason))
}

/// Compiles the `rollout` section: every task type needs a `[modes]` rule naming it alone (its
/// current stage), and a supervised stage needs someone to ask.
pub(crate) fn compile_rollout(
    document: &Document,
    gate: Option<&EscalationGate>,
) -> Result<Option<Rollout>, DocumentError> {
    let Some(section) = &document.rollout else {
        return Ok(None);
    };
    let rules = document.modes.as_ref().map_or(&[][..], |m| &m.rules[..]);
    let solo = |t: &str| {
        rules.iter().find(|r| {
            r.task_type.as_deref() == Some(t)
                && r.tool.is_none()
                && r.role.is_none()
                && r.agent.is_none()
        })
    };
    for (task, plan) in &section.task_types {
        if solo(task).is_none() {
            let known: BTreeSet<&str> = rules
                .iter()
                .filter_map(|r| r.task_type.as_deref())
                .collect();
            return Err(DocumentError::unknown(
                format!("rollout.task_types.{task}"),
                "task type",
                task,
                known,
            ));
        }
        for (i, stage) in plan.stages.iter().enumerate() {
            if stage.mode == Mode::Supervised
                && gate.and_then(EscalationGate::default_params).is_none()
            {
                return Err(DocumentError::invalid(
                    format!("rollout.task_types.{task}.stages[{i}].mode"),
                    "a supervised stage sends every call to the approval queue, but \
                     `escalation.defaults` names no chain of approvers to ask: add one",
                ));
            }
        }
    }
    Rollout::compile(section, |t| solo(t).map(|r| r.mode))
        .map(Some)
        .map_err(|e| DocumentError::invalid(e.path, e.reason))
}

/// Compiles the `modes` section: rules may name only tools and roles the document defines, and
/// supervised mode needs someone to ask (`escalation.defaults` must name a chain).
pub(crate) fn compile_modes(
    document: &Document,
    gate: Option<&EscalationGate>,
) -> Result<Option<Modes>, DocumentError> {
    let Some(section) = &document.modes else {
        return Ok(None);
    };
    for (i, rule) in section.rules.iter().enumerate() {
        if let Some(tool) = &rule.tool
            && !document.tools.contains_key(tool)
        {
            return Err(DocumentError::unknown(
                format!("modes.rules[{i}].tool"),
                "tool",
                tool,
                document.tools.keys(),
            ));
        }
        if let Some(role) = &rule.role
            && !document.roles.contains_key(role)
        {
            return Err(DocumentError::unknown(
                format!("modes.rules[{i}].role"),
                "role",
                role,
                document.roles.keys(),
            ));
        }
    }
    let modes = Modes::compile(section.clone())
        .map_err(|e| DocumentError::invalid(e.path(), e.reason()))?;
    if let Some(at) = modes.first_use(Mode::Supervised)
        && gate.and_then(EscalationGate::default_params).is_none()
    {
        return Err(DocumentError::invalid(
            at,
            "supervised mode sends every call to the approval queue, but `escalation.defaults` \
             names no chain of approvers to ask: add one",
        ));
    }
    Ok(Some(modes))
}

/// Compiles the `flow` section against the document's tiers and tools. A section whose rules
/// escalate needs someone to ask: the escalation section's `defaults` must name a chain.
pub(crate) fn compile_flow(
    document: &Document,
    gate: Option<&EscalationGate>,
) -> Result<Option<FlowRules>, DocumentError> {
    let Some(section) = &document.flow else {
        return Ok(None);
    };
    let tools: Vec<&str> = document.tools.keys().map(String::as_str).collect();
    // The flow layer reads every argument the boundary reads: within the document's limits.
    let rules = section
        .compile(&document.tiers, &tools)
        .map_err(DocumentError::from_flow)?
        .with_json_limits(crate::call::JsonLimits {
            max_bytes: document.limits.max_bytes,
            max_depth: document.limits.max_depth,
        });
    if let Some(rule) = rules.first_escalating_rule()
        && gate.and_then(EscalationGate::default_params).is_none()
    {
        return Err(DocumentError::invalid(
            rule.as_str(),
            "a violation of this rule escalates to a human, but `escalation.defaults` names no \
             chain of approvers to ask: add one, or set `on_violation` to `deny` or `quarantine`",
        ));
    }
    Ok(Some(rules))
}

/// Compiles the document's boundary (carrying `version`) and escalation gate.
pub(crate) fn compile_parts(
    document: &Document,
    version: PolicyVersion,
) -> Result<(ActionBoundary, Option<EscalationGate>), DocumentError> {
    let mut boundary = ActionBoundary::compile(boundary_document(document))?.with_version(version);
    if let Some(p) = document
        .compartments
        .as_ref()
        .and_then(|c| c.id_pattern.as_deref())
    {
        boundary = boundary.with_compartment_ids(p)?;
    }
    let escalation = match &document.escalation {
        Some(e) => Some(
            EscalationGate::for_boundary(e.clone(), &boundary)
                .map_err(DocumentError::from_escalation)?,
        ),
        None => None,
    };
    Ok((boundary, escalation))
}

/// Parses the text into a [`Document`], with shape errors located.
fn parse_document(text: &str, format: Format) -> Result<Document, DocumentError> {
    match format {
        Format::Json => {
            reject_duplicate_json_keys(text)?;
            let de = &mut serde_json::Deserializer::from_str(text);
            let doc: Document = serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let location = (inner.line() > 0).then(|| Location {
                    line: inner.line(),
                    column: inner.column(),
                });
                shape_error(path, location, strip_position(&inner.to_string()))
            })?;
            Ok(doc)
        }
        #[cfg(feature = "toml")]
        Format::Toml => {
            let de = toml::Deserializer::parse(text).map_err(|e| DocumentError::Syntax {
                format: Format::Toml.name(),
                location: e.span().map(|s| Location::of_offset(text, s.start)),
                message: e.message().trim().to_owned(),
            })?;
            let doc: Document = serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let location = inner.span().map(|s| Location::of_offset(text, s.start));
                shape_error(path, location, inner.message().trim().to_owned())
                    .located(text, Format::Toml)
            })?;
            Ok(doc)
        }
        #[cfg(not(feature = "toml"))]
        Format::Toml => Err(DocumentError::Syntax {
            format: Format::Toml.name(),
            location: None,
            message: "this build has no TOML support (enable the `toml` feature)".into(),
        }),
    }
}

fn shape_error(path: String, location: Option<Location>, message: String) -> DocumentError {
    DocumentError::Shape {
        path: if path.is_empty() { ".".into() } else { path },
        location,
        message,
    }
}

/// serde_json appends " at line L column C" to its messages; the location is kept separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// JSON allows duplicate keys and serde keeps the last, which would let a second `"pay": {...}`
/// replace the first unseen. Walks the whole text once (no size or key-count limit), refusing
/// any object that repeats a key.
fn reject_duplicate_json_keys(text: &str) -> Result<(), DocumentError> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Check;
    impl<'de> DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Check)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = BTreeSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
                }
                map.next_value_seed(Check)?;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let checked = Check.deserialize(&mut de).and_then(|()| de.end());
    checked.map_err(|e| DocumentError::Syntax {
        format: Format::Json.name(),
        location: (e.line() > 0).then(|| Location {
            line: e.line(),
            column: e.column(),
        }),
        message: strip_position(&e.to_string()),
    })?;
    Ok(())
}

/// The boundary's own document, taken from the whole one.
fn boundary_document(doc: &Document) -> PolicyDocument {
    PolicyDocument {
        name: Some(doc.policy.name.clone()),
        tiers: doc.tiers.clone(),
        limits: doc.limits,
        tools: doc.tools.clone(),
        roles: doc.roles.clone(),
        retention: doc
            .audit
            .as_ref()
            .and_then(|a| a.retention.as_ref())
            .map(|r| r.tiers.clone())
            .unwrap_or_default(),
    }
}

fn canonical_json(doc: &Document) -> Result<Vec<u8>, DocumentError> {
    // Through `Value` so every object's keys come out sorted, whatever the struct field order.
    let value = serde_json::to_value(doc)
        .map_err(|e| DocumentError::invalid(".", format!("cannot serialise the document: {e}")))?;
    serde_json::to_vec(&value)
        .map_err(|e| DocumentError::invalid(".", format!("cannot serialise the document: {e}")))
}

fn version_of(canonical: &[u8]) -> PolicyVersion {
    let mut h = Sha256::new();
    h.update(b"tollgate-policy-v1\n");
    h.update(canonical);
    PolicyVersion(h.finalize().into())
}

/// The cross-reference and sense checks the primitives' own compilers do not make (or make
/// without the whole document in view). The boundary and the escalation gate check the rest.
fn cross_check(doc: &Document) -> Result<(), DocumentError> {
    let m = &doc.policy;
    for (field, value) in [
        ("name", &m.name),
        ("owner", &m.owner),
        ("purpose", &m.purpose),
        ("scope", &m.scope),
        ("liability_owner", &m.liability_owner),
        ("data_handling", &m.data_handling),
    ] {
        if value.trim().is_empty() {
            return Err(DocumentError::invalid(
                format!("policy.{field}"),
                "must not be empty: reviewers sign what it says",
            ));
        }
    }
    if m.review_cadence.is_zero() {
        return Err(DocumentError::invalid(
            "policy.review_cadence",
            "must be longer than zero",
        ));
    }

    let tiers: BTreeMap<&str, usize> = doc
        .tiers
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let tool_names = doc.tools.keys();

    // Roles: every listed tool exists and is within the role's clearance.
    for (role, spec) in &doc.roles {
        for (i, tool) in spec.tools.iter().enumerate() {
            let path = format!("roles.{role}.tools[{i}]");
            let Some(t) = doc.tools.get(tool) else {
                return Err(DocumentError::unknown(path, "tool", tool, tool_names));
            };
            let rank = |name: &Option<String>| name.as_deref().and_then(|n| tiers.get(n)).copied();
            if let (Some(tool_tier), Some(clearance)) = (rank(&t.tier), rank(&spec.clearance))
                && tool_tier > clearance
            {
                return Err(DocumentError::AboveClearance {
                    path,
                    location: None,
                    tool: tool.clone(),
                    tier: t.tier.clone().unwrap_or_default(),
                    clearance: spec.clearance.clone().unwrap_or_default(),
                });
            }
        }
    }

    if let Some(c) = &doc.compartments {
        if c.kind.trim().is_empty() {
            return Err(DocumentError::invalid(
                "compartments.kind",
                "must name what one compartment is (e.g. \"patient\")",
            ));
        }
        // The bare pattern must parse on its own, or it could break out of its anchoring.
        if let Some(p) = &c.id_pattern
            && let Err(e) =
                regex::Regex::new(p).and_then(|_| regex::Regex::new(&format!("^(?:{p})$")))
        {
            return Err(DocumentError::invalid(
                "compartments.id_pattern",
                format!("invalid regular expression: {e}"),
            ));
        }
    }

    if let Some(cred) = &doc.credentials {
        for (i, g) in cred.grants.iter().enumerate() {
            let at = |f: &str| format!("credentials.grants[{i}].{f}");
            let Some(role) = doc.roles.get(&g.role) else {
                return Err(DocumentError::unknown(
                    at("role"),
                    "role",
                    &g.role,
                    doc.roles.keys(),
                ));
            };
            if !cred.providers.contains_key(&g.provider) {
                return Err(DocumentError::unknown(
                    at("provider"),
                    "credential provider",
                    &g.provider,
                    cred.providers.keys(),
                ));
            }
            for (j, tool) in g.tools.iter().enumerate() {
                if !doc.tools.contains_key(tool) {
                    return Err(DocumentError::unknown(
                        format!("{}[{j}]", at("tools")),
                        "tool",
                        tool,
                        doc.tools.keys(),
                    ));
                }
                if !role.tools.contains(tool) {
                    return Err(DocumentError::invalid(
                        format!("{}[{j}]", at("tools")),
                        format!(
                            "role `{}` may not call `{tool}`, so it cannot hold credentials for it",
                            g.role
                        ),
                    ));
                }
            }
            if g.tools.is_empty() || g.operations.is_empty() {
                return Err(DocumentError::invalid(
                    at(if g.tools.is_empty() {
                        "tools"
                    } else {
                        "operations"
                    }),
                    "must name at least one",
                ));
            }
            if g.ttl.as_secs() == 0 || g.ttl > MAX_GRANT_TTL || g.ttl.subsec_nanos() != 0 {
                return Err(DocumentError::invalid(
                    at("ttl"),
                    "must be whole seconds, from 1s to 24h (credentials expire on whole seconds)",
                ));
            }
            if g.max_uses == Some(0) {
                return Err(DocumentError::invalid(at("max_uses"), "must be at least 1"));
            }
            let probe = g.resource.replace("{compartment}", "C");
            if probe.contains(['{', '}']) {
                return Err(DocumentError::invalid(
                    at("resource"),
                    "the only placeholder is `{compartment}`",
                ));
            }
            crate::credential::ResourcePattern::parse(&probe)
                .map_err(|e| DocumentError::invalid(at("resource"), e.to_string()))?;
        }
    }

    if let Some(b) = &doc.breakers {
        if b.max_keys == 0 {
            return Err(DocumentError::invalid(
                "breakers.max_keys",
                "must be at least 1",
            ));
        }
        b.config()
            .validate()
            .map_err(|e| DocumentError::invalid(format!("breakers.{}", e.field), e.reason))?;
    }

    if let Some(b) = &doc.budgets {
        for (field, v) in [("max_calls", b.max_calls), ("max_tokens", b.max_tokens)] {
            if v == Some(0) {
                return Err(DocumentError::invalid(
                    format!("budgets.{field}"),
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
        }
        if b.max_duration.is_some_and(|d| d.is_zero()) {
            return Err(DocumentError::invalid(
                "budgets.max_duration",
                "must be longer than zero",
            ));
        }
        for (field, v) in [("max_cost", b.max_cost), ("cost_per_call", b.cost_per_call)] {
            if let Some(m) = v {
                cost_micros(m)
                    .map_err(|r| DocumentError::invalid(format!("budgets.{field}"), r))?;
            }
        }
        if b.max_cost.is_some_and(|m| m.decimal().is_zero()) {
            return Err(DocumentError::invalid(
                "budgets.max_cost",
                "must be above zero (leave it out for no limit)",
            ));
        }
    }

    if let Some(r) = &doc.rate_limits {
        for tool in r.per_tool.keys() {
            if !doc.tools.contains_key(tool) {
                return Err(DocumentError::unknown(
                    format!("rate_limits.per_tool.{tool}"),
                    "tool",
                    tool,
                    doc.tools.keys(),
                ));
            }
        }
        let quotas = r
            .per_agent
            .iter()
            .map(|q| ("rate_limits.per_agent.per".to_owned(), q))
            .chain(
                r.default_per_tool
                    .iter()
                    .map(|q| ("rate_limits.default_per_tool.per".to_owned(), q)),
            )
            .chain(
                r.per_tool
                    .iter()
                    .map(|(t, q)| (format!("rate_limits.per_tool.{t}.per"), q)),
            );
        for (path, q) in quotas {
            if q.per.is_zero() {
                return Err(DocumentError::invalid(path, "must be longer than zero"));
            }
            if let Some(reason) = q.span_error() {
                return Err(DocumentError::invalid(path, reason));
            }
        }
        if r.max_agents == Some(0) {
            return Err(DocumentError::invalid(
                "rate_limits.max_agents",
                "must be at least 1",
            ));
        }
        crate::breaker::RateLimiters::new(r, Arc::new(crate::clock::ManualClock::new()))
            .map_err(|e| DocumentError::invalid(e.field, e.reason))?;
    }

    if let Some(l) = &doc.loops {
        if l.max_repeats == 0 {
            return Err(DocumentError::invalid(
                "loops.max_repeats",
                "must be at least 1: 0 would deny every call",
            ));
        }
        if l.window.is_zero() {
            return Err(DocumentError::invalid(
                "loops.window",
                "must be longer than zero",
            ));
        }
    }

    if let Some(b) = &doc.baseline {
        crate::breaker::Baseline::new(b.config).map_err(|e| {
            DocumentError::invalid(format!("baseline.config.{}", e.field), e.reason)
        })?;
    }

    if let Some(a) = &doc.audit {
        if let AuditDurability::GroupCommit { interval } = a.durability
            && interval.is_zero()
        {
            return Err(DocumentError::invalid(
                "audit.durability.group_commit.interval",
                "must be longer than zero",
            ));
        }
        if let Some(r) = &a.retention {
            for (tier, class) in &r.tiers {
                if !tiers.contains_key(tier.as_str()) {
                    return Err(DocumentError::unknown(
                        format!("audit.retention.tiers.{tier}"),
                        "tier",
                        tier,
                        &doc.tiers,
                    ));
                }
                if !r.keep.contains_key(class) {
                    return Err(DocumentError::unknown(
                        format!("audit.retention.tiers.{tier}"),
                        "retention class",
                        class,
                        r.keep.keys(),
                    ));
                }
            }
            for (class, keep) in &r.keep {
                if *keep == Keep::For(std::time::Duration::ZERO) {
                    return Err(DocumentError::invalid(
                        format!("audit.retention.keep.{class}"),
                        "must be longer than zero (or \"forever\")",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The run budget the document's `[budgets]` section describes (none: no limits). Errors name
/// the field.
pub(crate) fn run_budget(doc: &Document) -> Result<crate::guard::RunBudget, (String, String)> {
    let Some(b) = &doc.budgets else {
        return Ok(crate::guard::RunBudget::default());
    };
    let micros = |m: Option<crate::units::Money>, f: &str| {
        m.map(cost_micros)
            .transpose()
            .map_err(|r| (format!("budgets.{f}"), r))
    };
    Ok(crate::guard::RunBudget {
        max_calls: b.max_calls,
        max_duration: b.max_duration,
        max_tokens: b.max_tokens,
        tokens_per_call: b.tokens_per_call.unwrap_or(0),
        max_cost_micros: micros(b.max_cost, "max_cost")?,
        cost_micros_per_call: micros(b.cost_per_call, "cost_per_call")?.unwrap_or(0),
    })
}

/// A cost in millionths of the currency unit, exactly.
pub(crate) fn cost_micros(m: crate::units::Money) -> Result<u64, String> {
    if m.is_negative() {
        return Err("must not be negative".into());
    }
    let d = m.decimal();
    if d.normalize().scale() > COST_DECIMALS {
        return Err(format!("at most {COST_DECIMALS} decimal places"));
    }
    let micros = d * rust_decimal::Decimal::from(1_000_000u32);
    u64::try_from(micros).map_err(|_| "too large".to_owned())
}
