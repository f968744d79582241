//! `ActionBoundary`: the bounded action space of an agent.
//!
//! A boundary is compiled once from a [`PolicyDocument`] (TOML, JSON, or the builder) and is then
//! immutable; share it behind an `Arc` or hand it to a [`Guard`](crate::Guard). It answers one
//! question per call, without allocating on the allow path: *may this role, in this run, call this
//! tool with these arguments?*
//!
//! Default deny, in order:
//!
//! 1. the role must exist;
//! 2. the tool must exist under its **exact** name (byte comparison: `send_email ` with a trailing
//!    space, `Send_Email`, or `sеnd_email` with a Cyrillic `е` are unknown tools);
//! 3. the role must list the tool;
//! 4. the tool's data tier must not exceed the role's clearance;
//! 5. a read-only run or role may not call write or irreversible tools;
//! 6. the arguments must be a JSON object that passes every argument rule (unknown arguments are
//!    denied unless the policy opens them explicitly);
//! 7. a compartmented tool's compartment argument must equal the run's compartment, and a run bound
//!    to no compartment cannot call a compartmented tool at all.
//!
//! Tools the role cannot call are also invisible: [`ActionBoundary::visible_tools`] lists only the
//! tools a role may actually call, so an agent is never shown the rest.
//!
//! ```
//! use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
//! use tollgate::{RunContext, ToolCall, DenyCode};
//!
//! let boundary = ActionBoundary::builder()
//!     .tiers(["public", "confidential"])
//!     .tool("search", ToolSpec::read().tier("public").arg("q", Arg::string().required().max_length(200)))
//!     .tool("wire_funds", ToolSpec::irreversible().tier("confidential")
//!         .arg("amount", Arg::number().required().min(0.01).max(500.0)))
//!     .role("clerk", RoleSpec::new().clearance("public").tools(["search"]))
//!     .build()?;
//!
//! let run = RunContext::new("bot-1", "clerk");
//! assert!(boundary.check(&run, &ToolCall::new("search", r#"{"q":"lease"}"#)).is_ok());
//! let denied = boundary.check(&run, &ToolCall::new("wire_funds", r#"{"amount":10}"#)).unwrap_err();
//! assert_eq!(denied.code(), DenyCode::ToolNotAllowed);
//! assert_eq!(boundary.visible_tools("clerk").map(|t| t.name()).collect::<Vec<_>>(), ["search"]);
//! # Ok::<(), tollgate::boundary::PolicyError>(())
//! ```

mod args;
mod error;
pub(crate) mod hash;
pub mod path;
pub(crate) mod spec;
pub mod url;
pub(crate) mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use error::PolicyError;
pub use spec::{
    Arg, ArgLimits, ArgType, DotDotMode, Effect, PolicyDocument, RoleSpec, Sensitivity, ToolSpec,
};

use crate::audit::AuditMarks;
use crate::call::json::{JsonError, JsonKind, JsonLimits, KeyTable, Members, RawJson};
use crate::call::{Args, RuleId, RunContext, ToolCall};
use crate::verdict::{Denial, DenyCode, PolicyVersion};
use args::{Env, ObjectRules};
use hash::NameTable;
use view::{Indexed, Num, StrView, View};

/// Largest `limits.max_bytes` a policy may set.
const MAX_ARG_BYTES_CAP: usize = 1 << 20;

/// Longest tool name that is even looked up; longer names are unknown tools.
const MAX_TOOL_NAME: usize = 128;

/// What an agent may know about a tool it is allowed to call.
#[derive(Debug)]
pub struct ToolInfo {
    name: Box<str>,
    description: Option<Box<str>>,
    effect: Effect,
    tier: Option<Box<str>>,
}

impl ToolInfo {
    /// The exact tool name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The description from the policy.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// What the tool does to the world.
    pub fn effect(&self) -> Effect {
        self.effect
    }
    /// The tool's data tier, if the policy defines tiers.
    pub fn tier(&self) -> Option<&str> {
        self.tier.as_deref()
    }
}

#[derive(Debug)]
struct Tool {
    info: ToolInfo,
    marks: AuditMarks,
    tier: u16,
    args: ObjectRules,
    compartment: Option<CompartmentArg>,
    rule_allow: RuleId,
    rule_tier: RuleId,
    rule_read_only: RuleId,
}

#[derive(Debug)]
struct CompartmentArg {
    segments: Box<[Box<str>]>,
    display: Box<str>,
    rule: RuleId,
}

#[derive(Debug)]
struct Role {
    clearance: u16,
    read_only: bool,
    /// Bit `i` set = tool `i` is on this role's allowlist.
    tools: Box<[u64]>,
}

impl Role {
    fn allows(&self, tool: usize) -> bool {
        self.tools
            .get(tool / 64)
            .is_some_and(|w| w & (1 << (tool % 64)) != 0)
    }
}

/// A compiled, immutable, default-deny boundary. See the [module docs](self).
#[derive(Debug)]
pub struct ActionBoundary {
    tools: Vec<Tool>,
    tool_index: NameTable,
    roles: Vec<Role>,
    role_index: NameTable,
    limits: JsonLimits,
    version: PolicyVersion,
    document: Arc<PolicyDocument>,
    /// What a run's compartment id must look like (anchored), when the policy says.
    compartment_ids: Option<regex::Regex>,
    rule_unknown_role: RuleId,
    rule_unknown_tool: RuleId,
    rule_malformed: RuleId,
    rule_limits: RuleId,
}

/// Which tool a successful check admitted (an index into the boundary that checked it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    index: u32,
}

impl Admitted {
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }
}

impl ActionBoundary {
    /// Starts a boundary in code. Equivalent to writing a [`PolicyDocument`].
    pub fn builder() -> BoundaryBuilder {
        BoundaryBuilder::default()
    }

    /// The boundary that denies everything (no tools, no roles).
    pub fn deny_all() -> Self {
        Self::compile(PolicyDocument::default()).expect("the empty policy is valid")
    }

    /// Parses and compiles a JSON policy document.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let doc: PolicyDocument =
            serde_path_to_error::deserialize(de).map_err(|e| PolicyError::Parse {
                format: "JSON",
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        Self::compile(doc)
    }

    /// Parses and compiles a TOML policy document.
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let de = toml::Deserializer::parse(text).map_err(|e| PolicyError::Parse {
            format: "TOML",
            field: ".".into(),
            message: e.to_string(),
        })?;
        let doc: PolicyDocument =
            serde_path_to_error::deserialize(de).map_err(|e| PolicyError::Parse {
                format: "TOML",
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        Self::compile(doc)
    }

    /// Reads a policy file: `.toml` as TOML (with the `toml` feature), anything else as JSON.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_owned(),
            source,
        })?;
        #[cfg(feature = "toml")]
        if path.extension().is_some_and(|e| e == "toml") {
            return Self::from_toml(&text);
        }
        Self::from_json(&text)
    }

    /// Validates and compiles a document.
    pub fn compile(doc: PolicyDocument) -> Result<Self, PolicyError> {
        // Tiers.
        let mut tier_rank: BTreeMap<&str, u16> = BTreeMap::new();
        if doc.tiers.len() > usize::from(u16::MAX) {
            return Err(PolicyError::invalid("tiers", "too many tiers"));
        }
        for (i, t) in doc.tiers.iter().enumerate() {
            if t.trim().is_empty() || t.trim() != t {
                return Err(PolicyError::invalid(
                    format!("tiers[{i}]"),
                    "a tier name must be non-empty without surrounding spaces",
                ));
            }
            if tier_rank.insert(t, i as u16).is_some() {
                return Err(PolicyError::invalid(
                    format!("tiers[{i}]"),
                    format!("tier `{t}` is listed twice"),
                ));
            }
        }
        let known = doc.tiers.join(", ");
        let resolve_tier = |field: String, t: &Option<String>| -> Result<u16, PolicyError> {
            match (t, doc.tiers.is_empty()) {
                (None, true) => Ok(0),
                (None, false) => Err(PolicyError::invalid(
                    field,
                    "required because the policy defines tiers",
                )),
                (Some(t), true) => Err(PolicyError::UnknownTier {
                    field,
                    tier: t.clone(),
                    known: "(none defined)".into(),
                }),
                (Some(t), false) => {
                    tier_rank
                        .get(t.as_str())
                        .copied()
                        .ok_or_else(|| PolicyError::UnknownTier {
                            field,
                            tier: t.clone(),
                            known: known.clone(),
                        })
                }
            }
        };
        if doc.limits.max_bytes == 0 || doc.limits.max_depth == 0 {
            return Err(PolicyError::invalid(
                "limits",
                "max_bytes and max_depth must be at least 1",
            ));
        }
        if doc.limits.max_bytes > MAX_ARG_BYTES_CAP {
            return Err(PolicyError::invalid(
                "limits.max_bytes",
                format!(
                    "at most {MAX_ARG_BYTES_CAP} bytes (1 MiB): larger arguments belong in a file or \
                     object store the tool reads, not in a tool call"
                ),
            ));
        }
        if doc.limits.max_depth > crate::call::json::MAX_DEPTH_CAP {
            return Err(PolicyError::invalid(
                "limits.max_depth",
                format!("at most {} is supported", crate::call::json::MAX_DEPTH_CAP),
            ));
        }
        if doc.tools.len() > u32::MAX as usize {
            return Err(PolicyError::invalid("tools", "too many tools"));
        }

        // Retention classes per tier.
        let mut retention: BTreeMap<&str, Arc<str>> = BTreeMap::new();
        for (tier, class) in &doc.retention {
            let field = format!("retention.{tier}");
            if !tier_rank.contains_key(tier.as_str()) {
                return Err(PolicyError::UnknownTier {
                    field,
                    tier: tier.clone(),
                    known: if doc.tiers.is_empty() {
                        "(none defined)".into()
                    } else {
                        known.clone()
                    },
                });
            }
            if class.is_empty()
                || class.len() > 64
                || !class
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(PolicyError::invalid(
                    field,
                    "a retention class is 1-64 characters of letters, digits, `.`, `_` or `-`",
                ));
            }
            retention.insert(tier, class.as_str().into());
        }

        // Tools.
        let mut tools = Vec::with_capacity(doc.tools.len());
        let mut tool_names: Vec<(&str, u32)> = Vec::with_capacity(doc.tools.len());
        let mut folded: BTreeMap<String, &str> = BTreeMap::new();
        for (i, (name, spec)) in doc.tools.iter().enumerate() {
            let field = format!("tools.{name}");
            validate_name(name, "tool").map_err(|r| PolicyError::invalid(&field, r))?;
            if let Some(other) = folded.insert(skeleton(name), name) {
                return Err(PolicyError::ConfusableNames {
                    first: other.to_owned(),
                    second: name.clone(),
                });
            }
            let tier = resolve_tier(format!("{field}.tier"), &spec.tier)?;
            let args = args::compile_object(name, &spec.args, spec.allow_unknown_args)?;
            let compartment = match &spec.compartment_arg {
                None => None,
                Some(p) => Some(compile_compartment_arg(name, p, spec)?),
            };
            // The compartment rule is checked beside the argument rules, where the fast path
            // does not look: a compartmented tool has no fast path at all.
            let args = if compartment.is_some() {
                args.without_fast_path()
            } else {
                args
            };
            let mut redactions = Vec::new();
            for (path, arg) in &spec.args {
                if let Some(class) = arg.redact {
                    let segs = args::parse_arg_path(path)
                        .map_err(|r| PolicyError::invalid(format!("{field}.args.{path}"), r))?;
                    redactions.push((segs, class));
                }
            }
            let marks = AuditMarks::new(
                redactions,
                spec.tier.as_deref().and_then(|t| retention.get(t)).cloned(),
            );
            tools.push(Tool {
                marks,
                info: ToolInfo {
                    name: name.as_str().into(),
                    description: spec.description.as_deref().map(Into::into),
                    effect: spec.effect,
                    tier: spec.tier.as_deref().map(Into::into),
                },
                tier,
                args,
                compartment,
                rule_allow: RuleId::new(format!("{field}.roles")),
                rule_tier: RuleId::new(format!("{field}.tier")),
                rule_read_only: RuleId::new(format!("{field}.effect")),
            });
            tool_names.push((name.as_str(), i as u32));
        }
        let tool_index = NameTable::build(tool_names);

        // Roles.
        let words = tools.len().div_ceil(64);
        let mut roles = Vec::with_capacity(doc.roles.len());
        let mut role_names: Vec<(&str, u32)> = Vec::with_capacity(doc.roles.len());
        // Role names follow the rules of tool names: a role that differs from another only by a
        // look-alike letter, an invisible character, case or a separator would show as the same
        // column in the access matrix a reviewer signs off, with different grants.
        let mut folded_roles: BTreeMap<String, &str> = BTreeMap::new();
        for (name, spec) in &doc.roles {
            let field = format!("roles.{name}");
            validate_name(name, "role").map_err(|r| PolicyError::invalid(&field, r))?;
            if let Some(other) = folded_roles.insert(skeleton(name), name) {
                return Err(PolicyError::invalid(
                    &field,
                    format!(
                        "roles `{other}` and `{name}` differ only in case or separators; rename one \
                         so no reviewer can confuse them"
                    ),
                ));
            }
            let clearance = resolve_tier(format!("{field}.clearance"), &spec.clearance)?;
            let mut bits = vec![0u64; words].into_boxed_slice();
            for (j, t) in spec.tools.iter().enumerate() {
                let Some(idx) = tool_index.get(t.as_str()) else {
                    return Err(PolicyError::UnknownTool {
                        field: format!("{field}.tools[{j}]"),
                        tool: t.clone(),
                    });
                };
                bits[idx as usize / 64] |= 1 << (idx % 64);
            }
            role_names.push((name.as_str(), roles.len() as u32));
            roles.push(Role {
                clearance,
                read_only: spec.read_only,
                tools: bits,
            });
        }
        let role_index = NameTable::build(role_names);

        let canonical = serde_json::to_vec(&doc)
            .map_err(|e| PolicyError::invalid(".", format!("cannot serialise policy: {e}")))?;
        let version = PolicyVersion(Sha256::digest(&canonical).into());

        Ok(Self {
            tools,
            tool_index,
            roles,
            role_index,
            limits: JsonLimits {
                max_bytes: doc.limits.max_bytes,
                max_depth: doc.limits.max_depth,
            },
            version,
            document: Arc::new(doc),
            compartment_ids: None,
            rule_unknown_role: RuleId::new("roles"),
            rule_unknown_tool: RuleId::new("tools"),
            rule_malformed: RuleId::new("arguments.json"),
            rule_limits: RuleId::new("limits"),
        })
    }

    fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(self.role_index.get(name)? as usize)
    }

    /// What audit records of calls to `tool` redact, and their retention class
    /// ([`AuditMarks::none`] for a tool the policy does not define).
    pub fn audit_marks(&self, tool: &str) -> &AuditMarks {
        if tool.len() > MAX_TOOL_NAME {
            return AuditMarks::none();
        }
        match self.tool_index.get(tool) {
            Some(i) => &self.tools[i as usize].marks,
            None => AuditMarks::none(),
        }
    }

    pub(crate) fn marks_of(&self, a: Admitted) -> &AuditMarks {
        &self.tools[a.index()].marks
    }

    /// The content hash of the policy this boundary was compiled from.
    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    /// The same boundary admitting runs only in compartments whose id matches `pattern` (a
    /// regular expression, anchored at both ends): [`Guard::start_run`](crate::Guard::start_run)
    /// refuses any other id. Errors if the pattern does not compile.
    pub fn with_compartment_ids(mut self, pattern: &str) -> Result<Self, PolicyError> {
        let err = |e| PolicyError::Pattern {
            field: "compartments.id_pattern".into(),
            source: Box::new(e),
        };
        // The bare pattern must parse on its own: `P-1)|(.*` would otherwise close the anchoring
        // group and admit anything.
        regex::Regex::new(pattern).map_err(err)?;
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(err)?;
        self.compartment_ids = Some(re);
        Ok(self)
    }

    /// Whether a run may be bound to compartment `id` (always, unless
    /// [`with_compartment_ids`](Self::with_compartment_ids) says otherwise).
    pub fn admits_compartment(&self, id: &str) -> bool {
        self.compartment_ids
            .as_ref()
            .is_none_or(|re| re.is_match(id))
    }

    /// The same boundary carrying `version` instead of its own content hash: used when the
    /// boundary is one part of a larger document (a [`Policy`](crate::policy::Policy)) whose
    /// hash every decision must carry.
    pub fn with_version(mut self, version: PolicyVersion) -> Self {
        self.version = version;
        self
    }

    /// The limits raw JSON arguments are read within (the document's `[limits]`).
    pub(crate) fn json_limits(&self) -> JsonLimits {
        self.limits
    }

    /// The document this boundary was compiled from.
    pub fn document(&self) -> &PolicyDocument {
        &self.document
    }

    /// Number of tools defined.
    pub fn tool_count(&self) -> usize {
        self.tools.len()
    }

    /// Whether a role of this name exists.
    pub fn has_role(&self, role: &str) -> bool {
        self.role(role).is_some()
    }

    /// The tools `role` may call, in name order: allowlisted, within its clearance, and (for a
    /// read-only role) read-only. An unknown role sees nothing.
    pub fn visible_tools<'b>(&'b self, role: &str) -> impl Iterator<Item = &'b ToolInfo> + 'b {
        self.visible_tools_for(role, false)
    }

    /// Like [`visible_tools`](Self::visible_tools), also hiding writes when `read_only` is set
    /// (a read-only run).
    pub fn visible_tools_for<'b>(
        &'b self,
        role: &str,
        read_only: bool,
    ) -> impl Iterator<Item = &'b ToolInfo> + 'b {
        let role = self.role(role);
        self.tools.iter().enumerate().filter_map(move |(i, t)| {
            let r = role?;
            let ro = read_only || r.read_only;
            (r.allows(i) && t.tier <= r.clearance && !(ro && t.info.effect.is_side_effect()))
                .then_some(&t.info)
        })
    }

    /// The tool named exactly `tool`, whoever asks (for a shadow-mode permit of a call the
    /// boundary refused).
    pub(crate) fn admitted_by_name(&self, tool: &str) -> Option<Admitted> {
        if tool.len() > MAX_TOOL_NAME {
            return None;
        }
        self.tool_index.get(tool).map(|index| Admitted { index })
    }

    /// The information an agent may see about an admitted tool.
    pub(crate) fn tool_info(&self, a: Admitted) -> &ToolInfo {
        &self.tools[a.index()].info
    }

    /// Checks one call in one run. `Ok` admits it; `Err` says which rule refused it and why.
    /// The denial carries this boundary's [`version`](Self::version).
    pub fn check(&self, run: &RunContext, call: &ToolCall<'_>) -> Result<Admitted, Denial> {
        self.check_inner(run, call, true)
            .map_err(|d| d.with_version(self.version))
    }

    /// [`check`](Self::check) by the reference path alone (no one-pass fast path for raw
    /// arguments): what the differential tests compare the fast path with.
    #[cfg(test)]
    pub(crate) fn check_reference(
        &self,
        run: &RunContext,
        call: &ToolCall<'_>,
    ) -> Result<Admitted, Denial> {
        self.check_inner(run, call, false)
            .map_err(|d| d.with_version(self.version))
    }

    #[inline(always)]
    fn check_inner(
        &self,
        run: &RunContext,
        call: &ToolCall<'_>,
        fast: bool,
    ) -> Result<Admitted, Denial> {
        let Some(role) = self.role(run.role().as_str()) else {
            return Err(Denial::new(
                DenyCode::UnknownRole,
                self.rule_unknown_role.clone(),
                format!("role `{}` is not defined by the policy", run.role()),
            ));
        };
        let name = call.tool();
        let index = if name.len() <= MAX_TOOL_NAME {
            self.tool_index.get(name)
        } else {
            None
        };
        let Some(index) = index else {
            return Err(Denial::new(
                DenyCode::UnknownTool,
                self.rule_unknown_tool.clone(),
                format!(
                    "no tool is named `{}` (names are matched exactly)",
                    name.escape_debug().take(MAX_TOOL_NAME).collect::<String>()
                ),
            ));
        };
        let i = index as usize;
        let tool = &self.tools[i];
        if !role.allows(i) {
            return Err(Denial::new(
                DenyCode::ToolNotAllowed,
                tool.rule_allow.clone(),
                format!("role `{}` may not call `{name}`", run.role()),
            ));
        }
        if tool.tier > role.clearance {
            return Err(Denial::new(
                DenyCode::ClearanceTooLow,
                tool.rule_tier.clone(),
                format!(
                    "`{name}` touches tier `{}`, above the clearance of role `{}`",
                    tool.info.tier.as_deref().unwrap_or("?"),
                    run.role()
                ),
            ));
        }
        if (role.read_only || run.is_read_only()) && tool.info.effect.is_side_effect() {
            return Err(Denial::new(
                DenyCode::ReadOnly,
                tool.rule_read_only.clone(),
                format!(
                    "`{name}` is a {} tool and the run is read-only",
                    tool.info.effect.as_str()
                ),
            ));
        }
        let env = Env {
            compartment: run.compartment().map(|c| c.as_str()),
        };
        match call.args() {
            Args::None => self.check_args(tool, empty_object(), &env)?,
            Args::Value(v) => {
                self.value_within_limits(v)?;
                self.check_args(tool, v, &env)?;
            }
            Args::Json(text) => {
                // Flat rules (no plan for a compartmented tool), within the limits: one
                // accept-only pass over the bytes. When it cannot admit, the reference path
                // below decides (and says why).
                if fast
                    && text.len() <= self.limits.max_bytes
                    && text.len() <= u32::MAX as usize
                    && self.limits.max_depth.min(crate::call::json::MAX_DEPTH_CAP) >= 1
                    && tool.args.admits_raw(text)
                {
                    return Ok(Admitted { index });
                }
                // The validator records the root object's members as it goes, so the rules read
                // them without scanning the text a second time.
                let mut table = KeyTable::new();
                let doc = RawJson::parse_into(text, self.limits, &mut table)
                    .map_err(|e| self.malformed(e))?;
                let root = Indexed::new(doc.root(), Members::of(text, &table));
                self.check_args(tool, root, &env)?;
            }
        }
        Ok(Admitted { index })
    }

    /// Applies the raw-text limits to already parsed arguments: nesting depth exactly, and size as
    /// a lower bound of the serialised size (string and key bytes plus one byte per value), so a
    /// value that is certainly too large is refused. The walk stops at the depth limit, so even a
    /// programmatically built, arbitrarily deep value cannot overflow the stack.
    fn value_within_limits(&self, v: &serde_json::Value) -> Result<(), Denial> {
        #[derive(PartialEq)]
        enum Over {
            Depth,
            Size,
            Keys,
        }
        struct Tally {
            size: usize,
            keys: usize,
        }
        fn walk(
            v: &serde_json::Value,
            depth: usize,
            limits: JsonLimits,
            t: &mut Tally,
        ) -> Result<(), Over> {
            t.size += 1;
            match v {
                serde_json::Value::String(s) => t.size += s.len() + 1,
                serde_json::Value::Array(a) => {
                    if depth >= limits.max_depth {
                        return Err(Over::Depth);
                    }
                    for x in a {
                        walk(x, depth + 1, limits, t)?;
                    }
                }
                serde_json::Value::Object(m) => {
                    if depth >= limits.max_depth {
                        return Err(Over::Depth);
                    }
                    for (k, x) in m {
                        t.size += k.len() + 3;
                        t.keys += 1;
                        if t.keys > crate::call::json::MAX_KEYS {
                            return Err(Over::Keys);
                        }
                        walk(x, depth + 1, limits, t)?;
                    }
                }
                _ => {}
            }
            if t.size > limits.max_bytes {
                return Err(Over::Size);
            }
            Ok(())
        }
        let mut tally = Tally { size: 0, keys: 0 };
        walk(v, 0, self.limits, &mut tally).map_err(|over| {
            let reason = match over {
                Over::Depth => format!(
                    "arguments: nested deeper than {} levels",
                    self.limits.max_depth
                ),
                Over::Size => format!("arguments: larger than {} bytes", self.limits.max_bytes),
                Over::Keys => format!(
                    "arguments: more than {} object keys",
                    crate::call::json::MAX_KEYS
                ),
            };
            Denial::new(DenyCode::ArgsTooLarge, self.rule_limits.clone(), reason)
        })
    }

    fn malformed(&self, e: JsonError) -> Denial {
        let (code, rule) = match e {
            JsonError::TooLarge { .. }
            | JsonError::TooDeep { .. }
            | JsonError::TooManyKeys { .. } => (DenyCode::ArgsTooLarge, &self.rule_limits),
            _ => (DenyCode::MalformedArgs, &self.rule_malformed),
        };
        Denial::new(code, rule.clone(), format!("arguments: {e}"))
    }

    fn check_args<'a, V: View<'a>>(&self, tool: &Tool, v: V, env: &Env<'_>) -> Result<(), Denial> {
        if v.kind() != JsonKind::Object {
            return Err(Denial::new(
                DenyCode::MalformedArgs,
                self.rule_malformed.clone(),
                format!(
                    "arguments of `{}` must be a JSON object",
                    tool.info.name.escape_debug()
                ),
            ));
        }
        // Compartment first: crossing into another matter is the denial that matters most.
        if let Some(c) = &tool.compartment {
            check_compartment(c, v, env.compartment)?;
        }
        tool.args.check(v, env)
    }
}

/// The arguments of a call made without any: `{}`.
fn empty_object() -> &'static serde_json::Value {
    static EMPTY: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| serde_json::Value::Object(serde_json::Map::new()))
}

fn check_compartment<'a, V: View<'a>>(
    c: &CompartmentArg,
    args: V,
    run_compartment: Option<&str>,
) -> Result<(), Denial> {
    let Some(expected) = run_compartment else {
        return Err(Denial::new(
            DenyCode::CompartmentRequired,
            c.rule.clone(),
            format!(
                "argument `{}` names a compartment but the run is bound to none",
                c.display
            ),
        ));
    };
    let mut v = Some(args);
    for seg in c.segments.iter() {
        v = v.and_then(|x| x.get(seg));
    }
    let matches = match v {
        None => false,
        Some(v) => match (v.as_string(), v.as_num()) {
            (Some(s), _) => s.eq_str(expected),
            (None, Some(Num::I(i))) => int_eq_str(i128::from(i), expected),
            (None, Some(Num::U(u))) => int_eq_str(i128::from(u), expected),
            _ => false,
        },
    };
    if matches {
        Ok(())
    } else {
        Err(Denial::new(
            DenyCode::CrossCompartment,
            c.rule.clone(),
            format!(
                "argument `{}` does not name the run's compartment `{expected}`",
                c.display
            ),
        ))
    }
}

/// Compares an integer with its canonical decimal text without allocating.
fn int_eq_str(mut n: i128, s: &str) -> bool {
    let mut buf = [0u8; 48];
    let mut pos = buf.len();
    let neg = n < 0;
    loop {
        let digit = (n % 10).unsigned_abs() as u8;
        pos -= 1;
        buf[pos] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        pos -= 1;
        buf[pos] = b'-';
    }
    &buf[pos..] == s.as_bytes()
}

/// A tool's or a role's name: 1 to 128 ASCII letters, digits and `_ - . : /`.
fn validate_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOOL_NAME {
        return Err(format!("a {what} name must be 1 to 128 characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
    {
        return Err(format!(
            "a {what} name may use only ASCII letters, digits and `_ - . : /` (no spaces, no \
             invisible characters, no look-alike Unicode)"
        ));
    }
    Ok(())
}

/// What two names that an agent or a reviewer could confuse have in common: case and the
/// separators `- . : /` folded.
fn skeleton(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' | ':' | '/' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn compile_compartment_arg(
    tool: &str,
    path: &str,
    spec: &ToolSpec,
) -> Result<CompartmentArg, PolicyError> {
    let field = format!("tools.{tool}.compartment_arg");
    let segs = args::parse_arg_path(path).map_err(|r| PolicyError::invalid(&field, r))?;
    if segs.iter().any(|(_, items)| *items) {
        return Err(PolicyError::invalid(
            &field,
            "the compartment argument cannot be inside an array",
        ));
    }
    let declared = spec.args.get(path);
    let ok = declared.is_some_and(|a| {
        a.required && matches!(a.ty, Some(ArgType::String) | Some(ArgType::Integer))
    });
    if !ok {
        return Err(PolicyError::invalid(
            field,
            format!(
                "must name an argument declared in tools.{tool}.args with `required = true` and type string or integer"
            ),
        ));
    }
    Ok(CompartmentArg {
        segments: segs.iter().map(|(s, _)| Box::<str>::from(*s)).collect(),
        display: path.into(),
        rule: RuleId::new(format!("tools.{tool}.compartment_arg")),
    })
}

/// Assembles a [`PolicyDocument`] in code; [`build`](Self::build) validates and compiles it.
#[derive(Debug, Clone, Default)]
pub struct BoundaryBuilder {
    doc: PolicyDocument,
}

impl BoundaryBuilder {
    /// Names the policy (part of its version hash).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.doc.name = Some(name.into());
        self
    }

    /// Defines the data tiers, least to most sensitive.
    pub fn tiers<S: Into<String>>(mut self, tiers: impl IntoIterator<Item = S>) -> Self {
        self.doc.tiers = tiers.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the raw-argument limits.
    pub fn limits(mut self, limits: ArgLimits) -> Self {
        self.doc.limits = limits;
        self
    }

    /// Defines a tool.
    pub fn tool(mut self, name: impl Into<String>, spec: ToolSpec) -> Self {
        self.doc.tools.insert(name.into(), spec);
        self
    }

    /// Defines a role.
    pub fn role(mut self, name: impl Into<String>, spec: RoleSpec) -> Self {
        self.doc.roles.insert(name.into(), spec);
        self
    }

    /// The document assembled so far.
    pub fn document(&self) -> &PolicyDocument {
        &self.doc
    }

    /// Validates and compiles.
    pub fn build(self) -> Result<ActionBoundary, PolicyError> {
        ActionBoundary::compile(self.doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_eq_str_matches_canonical_decimal_only() {
        assert!(int_eq_str(0, "0"));
        assert!(int_eq_str(1234, "1234"));
        assert!(int_eq_str(-56, "-56"));
        assert!(int_eq_str(i128::from(u64::MAX), "18446744073709551615"));
        assert!(!int_eq_str(1234, "01234"));
        assert!(!int_eq_str(1234, "1234 "));
        assert!(!int_eq_str(-1, "1"));
    }

    #[test]
    fn tool_names_are_restricted_at_compile_time() {
        for bad in ["", "send email", "sеnd_email", "a\u{200b}b", "x\n"] {
            let r = ActionBoundary::builder()
                .tool(bad, ToolSpec::read())
                .build();
            assert!(matches!(r, Err(PolicyError::Invalid { .. })), "{bad:?}");
        }
        let r = ActionBoundary::builder()
            .tool("send_email", ToolSpec::write())
            .tool("Send_Email", ToolSpec::write())
            .build();
        assert!(matches!(r, Err(PolicyError::ConfusableNames { .. })));
    }
}
