//! The policy document: what tools exist, what they touch, which roles may call them with which
//! arguments. Written by hand in TOML or JSON (compliance staff can read and sign it) or assembled in
//! code with the builder methods below; both routes go through the same validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Deserialises a map, refusing a key that appears twice. JSON allows duplicate keys and serde
/// keeps the last one, which would let a second `"pay": {...}` silently replace the first; TOML
/// refuses them itself. Shared with the escalation policy's maps.
pub(crate) fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);

    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map with unique keys")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// Deserialises `enum` values as `serde_json::Value`s, refusing a number that is not finite:
/// `Value` would turn TOML's `nan` or `inf` into `null`, and the rule would then admit `null`,
/// a value nobody wrote.
fn finite_values<'de, D>(d: D) -> Result<Option<Vec<Value>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::{Error, MapAccess, SeqAccess, Visitor};

    struct Finite(Value);
    struct FiniteVisitor;

    impl<'de> Visitor<'de> for FiniteVisitor {
        type Value = Finite;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Finite, E> {
            Ok(Finite(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Finite, E> {
            Ok(Finite(Value::from(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Finite, E> {
            Ok(Finite(Value::from(v)))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Finite, E> {
            serde_json::Number::from_f64(v)
                .map(|n| Finite(Value::Number(n)))
                .ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not a finite number: no JSON value can equal it"
                    ))
                })
        }
        fn visit_str<E>(self, v: &str) -> Result<Finite, E> {
            Ok(Finite(Value::String(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Finite, E> {
            Ok(Finite(Value::String(v)))
        }
        fn visit_unit<E>(self) -> Result<Finite, E> {
            Ok(Finite(Value::Null))
        }
        fn visit_none<E>(self) -> Result<Finite, E> {
            Ok(Finite(Value::Null))
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Finite, D2::Error> {
            Finite::deserialize(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Finite, A::Error> {
            let mut out = Vec::new();
            while let Some(Finite(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Finite(Value::Array(out)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Finite, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some((k, Finite(v))) = map.next_entry::<String, Finite>()? {
                out.insert(k, v);
            }
            Ok(Finite(Value::Object(out)))
        }
    }

    impl<'de> Deserialize<'de> for Finite {
        fn deserialize<D2: serde::Deserializer<'de>>(d: D2) -> Result<Self, D2::Error> {
            d.deserialize_any(FiniteVisitor)
        }
    }

    let values: Option<Vec<Finite>> = Option::deserialize(d)?;
    Ok(values.map(|v| v.into_iter().map(|Finite(v)| v).collect()))
}

/// What a tool does to the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Reads data; no side effect.
    Read,
    /// Changes state in a way that can be undone.
    Write,
    /// Changes state in a way that cannot be undone (payments, sent messages, deletions, filings).
    Irreversible,
}

impl Effect {
    /// The effect's name as written in policy documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Irreversible => "irreversible",
        }
    }

    /// `true` for [`Effect::Write`] and [`Effect::Irreversible`].
    pub fn is_side_effect(self) -> bool {
        !matches!(self, Effect::Read)
    }
}

/// JSON type an argument must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgType {
    /// A JSON string.
    String,
    /// A JSON number without fractional part (`3`, `3.0`, `-7`).
    Integer,
    /// Any finite JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// `null`.
    Null,
}

impl ArgType {
    /// The type's name as written in policy documents.
    pub fn as_str(self) -> &'static str {
        match self {
            ArgType::String => "string",
            ArgType::Integer => "integer",
            ArgType::Number => "number",
            ArgType::Boolean => "boolean",
            ArgType::Object => "object",
            ArgType::Array => "array",
            ArgType::Null => "null",
        }
    }
}

/// How a path rule treats `..` components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DotDotMode {
    /// Any `..` component is a denial (default: lexical `..` handling is unsound with symlinks).
    #[default]
    Reject,
    /// `..` is resolved lexically; climbing above the root is a denial.
    Normalize,
}

/// Size limits on raw JSON arguments, applied before any rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArgLimits {
    /// Largest accepted raw JSON argument text, in bytes (default 65 536).
    pub max_bytes: usize,
    /// Deepest accepted nesting of arrays and objects (default 32).
    pub max_depth: usize,
}

impl Default for ArgLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_depth: 32,
        }
    }
}

/// A whole boundary policy: tiers, tools, roles. Deserialize it from TOML or JSON, or assemble it
/// with [`ActionBoundary::builder`](crate::boundary::ActionBoundary::builder).
///
/// Unknown fields anywhere are rejected, so a typo (`requried = true`) is an error, not a silently
/// ignored rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// A human label for the policy (e.g. `"intake-policy 2026-11"`); part of the version hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Data tiers from least to most sensitive, e.g. `["public", "internal", "confidential", "privileged"]`.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Limits on raw argument text.
    #[serde(default)]
    pub limits: ArgLimits,
    /// Every tool that exists, by exact name.
    #[serde(default, deserialize_with = "unique_keys")]
    pub tools: BTreeMap<String, ToolSpec>,
    /// Every role, by name.
    #[serde(default, deserialize_with = "unique_keys")]
    pub roles: BTreeMap<String, RoleSpec>,
    /// The retention class of each data tier's audit records, by tier name (e.g.
    /// `privileged = "legal_hold"`). Records of tools in a tier not listed here, and records that
    /// concern no tool, carry no class (retention treats them as class `default`).
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub retention: BTreeMap<String, String>,
}

/// One tool: its effect, its data tier and the rules its arguments must satisfy.
///
/// ```
/// use tollgate::boundary::{Arg, ToolSpec};
///
/// let spec = ToolSpec::irreversible()
///     .tier("confidential")
///     .description("Send an e-mail to a client")
///     .arg("to", Arg::string().required().max_length(254).pattern(r"[^@\s]+@client\.example"))
///     .arg("payment.amount", Arg::number().min(0.0).max(1_000.0));
/// assert_eq!(spec.args.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// What the tool does to the world.
    pub effect: Effect,
    /// The data tier the tool touches; required when the policy defines tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Shown to agents that may see the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The argument (a path such as `matter_id` or `client.patient_id`) naming the compartment the
    /// call touches. It must be declared in `args` with `required = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartment_arg: Option<String>,
    /// Accept top-level arguments that no rule declares (default `false`: they are denied).
    #[serde(default)]
    pub allow_unknown_args: bool,
    /// Rules per argument, keyed by path: `amount`, `payment.amount`, `recipients[]` (each element).
    #[serde(default, deserialize_with = "unique_keys")]
    pub args: BTreeMap<String, Arg>,
}

impl ToolSpec {
    /// A tool with the given effect and no arguments.
    pub fn new(effect: Effect) -> Self {
        Self {
            effect,
            tier: None,
            description: None,
            compartment_arg: None,
            allow_unknown_args: false,
            args: BTreeMap::new(),
        }
    }

    /// A read-only tool.
    pub fn read() -> Self {
        Self::new(Effect::Read)
    }

    /// A tool with reversible side effects.
    pub fn write() -> Self {
        Self::new(Effect::Write)
    }

    /// A tool whose effects cannot be undone.
    pub fn irreversible() -> Self {
        Self::new(Effect::Irreversible)
    }

    /// Sets the data tier.
    pub fn tier(mut self, tier: impl Into<String>) -> Self {
        self.tier = Some(tier.into());
        self
    }

    /// Sets the description shown to agents.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Names the argument that carries the compartment.
    pub fn compartment_arg(mut self, path: impl Into<String>) -> Self {
        self.compartment_arg = Some(path.into());
        self
    }

    /// Accepts undeclared top-level arguments (off by default).
    pub fn allow_unknown_args(mut self) -> Self {
        self.allow_unknown_args = true;
        self
    }

    /// Adds the rule for the argument at `path`.
    pub fn arg(mut self, path: impl Into<String>, rule: Arg) -> Self {
        self.args.insert(path.into(), rule);
        self
    }
}

/// The rules one argument must satisfy. Every constraint that applies to one JSON type implies that
/// type (`max_length` implies `string`, `min` implies `number`, ...).
///
/// ```
/// use tollgate::boundary::Arg;
///
/// let amount = Arg::number().required().min(0.01).max(10_000.0);
/// let path = Arg::string().required().path_under("/matters/{compartment}");
/// let url = Arg::string().url_hosts(["api.courts.example", "*.lexis.example"]);
/// let level = Arg::string().one_of(["low", "normal", "high"]);
/// # let _ = (amount, path, url, level);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arg {
    /// The JSON type the value must have.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<ArgType>,
    /// The argument must be present.
    #[serde(default)]
    pub required: bool,
    /// The argument must be absent.
    #[serde(default)]
    pub forbidden: bool,
    /// The value must equal one of these scalars.
    #[serde(
        rename = "enum",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "finite_values"
    )]
    pub one_of: Option<Vec<Value>>,
    /// Inclusive lower bound for a number. Like `max`, it must be compared exactly, or the
    /// boundary refuses to compile: at most 15 significant digits, and below 2^53
    /// (9007199254740992) in magnitude if integral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Inclusive upper bound for a number (same rules as `min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Longest accepted string, in Unicode scalar values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Regular expression the *whole* string must match (it is anchored for you).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The string is a file path that must lie under this root (absolute; one component may be
    /// `{compartment}`, which matches only the run's compartment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_under: Option<String>,
    /// How `path_under` treats `..` (default: reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot_dot: Option<DotDotMode>,
    /// Whether a relative path is accepted, as if resolved under the root (default `false`: a tool
    /// resolves a relative path against its own working directory, not against the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_relative: Option<bool>,
    /// The string is a URL whose host must be one of these (`*.example.com` = any subdomain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_hosts: Option<Vec<String>>,
    /// Schemes accepted by the URL rule (default `["https"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_schemes: Option<Vec<String>>,
    /// Ports accepted by the URL rule (default: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_ports: Option<Vec<u16>>,
    /// Most elements an array may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    /// For an object argument: accept keys no rule declares (default `false`).
    #[serde(default)]
    pub allow_unknown_fields: bool,
    /// How audit records treat the value: `secret` (never written anywhere) or `sensitive`
    /// (replaced as each sink's [`Redaction`](crate::audit::Redaction) says). Unmarked values
    /// are recorded as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact: Option<Sensitivity>,
}

impl Arg {
    /// A rule with no constraint yet (any JSON value).
    pub fn any() -> Self {
        Self::default()
    }

    fn typed(ty: ArgType) -> Self {
        Self {
            ty: Some(ty),
            ..Self::default()
        }
    }

    /// Must be a string.
    pub fn string() -> Self {
        Self::typed(ArgType::String)
    }

    /// Must be an integer.
    pub fn integer() -> Self {
        Self::typed(ArgType::Integer)
    }

    /// Must be a number.
    pub fn number() -> Self {
        Self::typed(ArgType::Number)
    }

    /// Must be a boolean.
    pub fn boolean() -> Self {
        Self::typed(ArgType::Boolean)
    }

    /// Must be an object.
    pub fn object() -> Self {
        Self::typed(ArgType::Object)
    }

    /// Must be an array.
    pub fn array() -> Self {
        Self::typed(ArgType::Array)
    }

    /// Must be present.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Must be absent.
    pub fn forbidden() -> Self {
        Self {
            forbidden: true,
            ..Self::default()
        }
    }

    /// Must equal one of `values`.
    pub fn one_of<V: Into<Value>>(mut self, values: impl IntoIterator<Item = V>) -> Self {
        self.one_of = Some(values.into_iter().map(Into::into).collect());
        self
    }

    /// Inclusive lower bound.
    pub fn min(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }

    /// Inclusive upper bound.
    pub fn max(mut self, max: f64) -> Self {
        self.max = Some(max);
        self
    }

    /// Longest accepted string, in Unicode scalar values.
    pub fn max_length(mut self, n: usize) -> Self {
        self.max_length = Some(n);
        self
    }

    /// Regular expression the whole string must match.
    pub fn pattern(mut self, re: impl Into<String>) -> Self {
        self.pattern = Some(re.into());
        self
    }

    /// File path that must stay under `root`.
    pub fn path_under(mut self, root: impl Into<String>) -> Self {
        self.path_under = Some(root.into());
        self
    }

    /// How the path rule treats `..`.
    pub fn dot_dot(mut self, mode: DotDotMode) -> Self {
        self.dot_dot = Some(mode);
        self
    }

    /// Whether relative paths are accepted (resolved under the root).
    pub fn allow_relative(mut self, allow: bool) -> Self {
        self.allow_relative = Some(allow);
        self
    }

    /// URL whose host must be in `hosts`.
    pub fn url_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.url_hosts = Some(hosts.into_iter().map(Into::into).collect());
        self
    }

    /// Schemes accepted by the URL rule.
    pub fn url_schemes<S: Into<String>>(mut self, schemes: impl IntoIterator<Item = S>) -> Self {
        self.url_schemes = Some(schemes.into_iter().map(Into::into).collect());
        self
    }

    /// Ports accepted by the URL rule.
    pub fn url_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.url_ports = Some(ports.into_iter().collect());
        self
    }

    /// Most elements an array may have.
    pub fn max_items(mut self, n: usize) -> Self {
        self.max_items = Some(n);
        self
    }

    /// Accept undeclared keys inside this object.
    pub fn allow_unknown_fields(mut self) -> Self {
        self.allow_unknown_fields = true;
        self
    }

    /// The value is a secret (password, API key, card number): no audit sink ever writes it, and
    /// denial reasons leave it out.
    pub fn secret(mut self) -> Self {
        self.redact = Some(Sensitivity::Secret);
        self
    }

    /// The value is sensitive (PHI, privileged material): audit sinks write a placeholder or a
    /// keyed hash instead, as each sink's [`Redaction`](crate::audit::Redaction) says, and denial
    /// reasons leave it out.
    pub fn sensitive(mut self) -> Self {
        self.redact = Some(Sensitivity::Sensitive);
        self
    }
}

/// How audit records treat an argument's value (see [`Arg::redact`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// Never written by any sink.
    Secret,
    /// Written as a placeholder or a keyed hash, per sink.
    Sensitive,
}

/// One role: its clearance, the tools it may call, and whether it is confined to reads.
///
/// ```
/// use tollgate::boundary::RoleSpec;
///
/// let auditor = RoleSpec::new().clearance("confidential").tools(["search_case_law", "read_document"]).read_only();
/// assert!(auditor.read_only);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// The most sensitive tier this role may touch; required when the policy defines tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clearance: Option<String>,
    /// The tools this role may see and call (exact names). Everything else is denied. The
    /// allowlist and the clearance are independent controls: a listed tool whose tier is above the
    /// clearance stays hidden and denied.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Validation / sandbox role: write and irreversible tools are denied and hidden.
    #[serde(default)]
    pub read_only: bool,
}

impl RoleSpec {
    /// A role that may call nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the clearance tier.
    pub fn clearance(mut self, tier: impl Into<String>) -> Self {
        self.clearance = Some(tier.into());
        self
    }

    /// Allows these tools.
    pub fn tools<S: Into<String>>(mut self, tools: impl IntoIterator<Item = S>) -> Self {
        self.tools.extend(tools.into_iter().map(Into::into));
        self
    }

    /// Confines the role to read-only tools.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
}
