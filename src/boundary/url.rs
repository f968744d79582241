//! "URL host allowlist": a strict check that a tool-call URL argument can only
//! reach an allowed host.
//!
//! # What the rule guarantees
//!
//! [`check_url`] returns `Ok` only for URLs of the plain form
//! `scheme://host[:port][/path][?query][#fragment]` whose host is, without
//! any interpretation, the host a WHATWG, RFC 3986, curl or Python `urllib`
//! parser would connect to, and that host is on the allowlist. Everything
//! those parsers treat differently is refused instead of interpreted: user
//! info (`@` in the authority), percent escapes in the authority, backslashes,
//! whitespace and control characters (WHATWG strips tabs and newlines), any
//! non-ASCII character (hosts must be punycode `xn--`), missing `//`, and
//! every numeric host form except a canonical dotted quad (`2130706433`,
//! `0x7f.1`, `127.1` and `0177.0.0.1` all mean 127.0.0.1 to some parsers).
//!
//! A differential test holds the rule to this against the `url` crate (the WHATWG parser that
//! reqwest connects with): for every URL the rule allows among tens of thousands generated from
//! the forms parsers disagree on (user info, `@`, backslashes, percent escapes, IPv6, IDNA
//! look-alikes such as `\u{3002}`, tabs and newlines, ports, trailing dots), `url` yields the
//! same scheme, the same host (one trailing dot aside: `allowed.com.` is the same DNS name) and
//! the same port, each allowed. The one difference: the rule does not decode punycode, so it
//! may allow an `xn--` label that is not valid punycode; WHATWG refuses such a URL (no
//! connection at all) and parsers that leave ASCII names alone connect to the literal name,
//! which is the allowed one.
//!
//! # What it cannot guarantee
//!
//! It checks the string, not the network: DNS for an allowed name may point
//! anywhere (including private addresses, or change between check and use),
//! and an allowed host may redirect elsewhere. HTTP clients should disable or
//! re-check redirects, and sensitive deployments should pin resolution or
//! filter addresses at connect time. Path, query and fragment are only
//! checked for the forbidden characters above.
//!
//! Checking allocates nothing; compiling a [`UrlPolicy`] does.

/// Longest host name, without the optional trailing dot.
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

#[derive(Debug, Clone)]
enum HostRule {
    /// Lowercase DNS name.
    Exact(String),
    /// Lowercase suffix after `*.`; matches proper subdomains only.
    Wildcard(String),
    /// Canonical dotted quad.
    Ipv4([u8; 4]),
    /// Lowercase bracketed IPv6 literal, compared as text.
    Ipv6(String),
}

/// A compiled URL allowlist: hosts, schemes and optionally ports.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    hosts: Vec<HostRule>,
    schemes: Vec<String>,
    ports: Option<Vec<u16>>,
}

/// Why [`UrlPolicy::new`] refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlPolicyError {
    /// The host list is empty.
    #[error("the host allowlist is empty")]
    NoHosts,
    /// The scheme list is empty.
    #[error("the scheme list is empty")]
    NoSchemes,
    /// `ports` is `Some` but empty.
    #[error("the port list is empty; use no port list to allow any port")]
    NoPorts,
    /// Port 0 was listed.
    #[error("port 0 cannot be allowed")]
    PortZero,
    /// A host entry is empty.
    #[error("a host entry is empty")]
    EmptyHost,
    /// A host entry contains non-ASCII characters.
    #[error("host entry `{0}` is not ASCII; write internationalized names in punycode (`xn--...`)")]
    NonAsciiHost(String),
    /// A host entry is not a valid DNS name.
    #[error(
        "host entry `{0}` is not a valid DNS name (labels of 1-63 `a-z0-9-`, at most 253 chars)"
    )]
    InvalidHost(String),
    /// A host entry has `*` other than as a leading `*.`.
    #[error("host entry `{0}` has a wildcard other than a leading `*.`")]
    BadWildcard(String),
    /// A host entry looks numeric but is not a canonical dotted quad.
    #[error("host entry `{0}` looks numeric but is not a canonical dotted quad like `192.0.2.1`")]
    NonCanonicalIp(String),
    /// A bracketed host entry is not a valid IPv6 address.
    #[error("host entry `{0}` is not a valid bracketed IPv6 address")]
    InvalidIpv6(String),
    /// A scheme entry is not a valid URL scheme.
    #[error("scheme `{0}` is not a valid URL scheme")]
    InvalidScheme(String),
    /// A scheme without a network host (`file`, `javascript`, `data`, ...) or one this rule does
    /// not know how to read.
    #[error("scheme `{0}` is not supported by a host allowlist (use http, https, ws or wss)")]
    UnsupportedScheme(String),
    /// A wildcard directly over a single label (`*.com`), which would admit a whole top-level
    /// domain.
    #[error(
        "host entry `{0}` is a wildcard over a top-level domain; name at least two labels after `*.`"
    )]
    WildcardTooBroad(String),
}

/// Why [`check_url`] refused a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlViolation {
    /// The URL is empty.
    #[error("URL is empty")]
    Empty,
    /// The URL contains a space, tab, CR or LF.
    #[error("URL contains whitespace")]
    Whitespace,
    /// The URL contains another ASCII control character.
    #[error("URL contains a control character")]
    ControlChar,
    /// The URL contains a non-ASCII character.
    #[error("URL contains a non-ASCII character; hosts must be punycode (`xn--`)")]
    NonAscii,
    /// The URL contains a backslash.
    #[error("URL contains a backslash")]
    Backslash,
    /// The URL does not start with `scheme://`.
    #[error("URL is not absolute (`scheme://host` required)")]
    NotAbsolute,
    /// The scheme is not allowed.
    #[error("URL scheme is not allowed")]
    SchemeNotAllowed,
    /// The authority contains `@` (user info).
    #[error("URL contains user info (`@` before the host)")]
    UserInfo,
    /// The authority contains `%`.
    #[error("URL host or port contains a percent escape")]
    PercentInAuthority,
    /// The host is empty.
    #[error("URL host is empty")]
    EmptyHost,
    /// The port is empty, not 1-5 digits, has a leading zero, or is 0 or above 65535.
    #[error("URL port is invalid")]
    InvalidPort,
    /// The host is not a valid DNS name.
    #[error("URL host is not a valid DNS name")]
    InvalidHost,
    /// The host is a numeric form other than a canonical dotted quad.
    #[error("URL host is a non-canonical IP address form")]
    NonCanonicalIp,
    /// The host is an IP literal that is not listed.
    #[error("URL host is an IP address that is not allowed")]
    IpNotAllowed,
    /// The host is not on the allowlist.
    #[error("URL host is not allowed")]
    HostNotAllowed,
    /// The port (explicit or the scheme's default) is not allowed.
    #[error("URL port is not allowed")]
    PortNotAllowed,
}

/// Syntax faults of a host name (shared by entries and URLs).
enum NameFault {
    Invalid,
    NonCanonicalIp,
}

/// What a syntactically valid host turned out to be.
enum HostKind {
    Name,
    Ipv4([u8; 4]),
}

/// Classifies `h` (trailing dot already stripped, any case).
fn classify_host(h: &str) -> Result<HostKind, NameFault> {
    if h.is_empty() || h.len() > MAX_HOST_LEN {
        return Err(NameFault::Invalid);
    }
    let mut numeric_looking = false;
    for label in h.split('.') {
        let b = label.as_bytes();
        if b.is_empty()
            || b.len() > MAX_LABEL_LEN
            || b[0] == b'-'
            || b[b.len() - 1] == b'-'
            || !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        {
            return Err(NameFault::Invalid);
        }
        if b.len() >= 2 && b[0] == b'0' && b[1].eq_ignore_ascii_case(&b'x') {
            numeric_looking = true;
        }
    }
    let last = h.rsplit('.').next().unwrap_or(h);
    if numeric_looking || last.as_bytes()[0].is_ascii_digit() {
        return canonical_ipv4(h)
            .map(HostKind::Ipv4)
            .ok_or(NameFault::NonCanonicalIp);
    }
    Ok(HostKind::Name)
}

/// Parses exactly four decimal octets without leading zeros.
fn canonical_ipv4(h: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut n = 0;
    for label in h.split('.') {
        let b = label.as_bytes();
        if n == 4 || b.is_empty() || b.len() > 3 || (b.len() > 1 && b[0] == b'0') {
            return None;
        }
        let mut v: u16 = 0;
        for c in b {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(c - b'0');
        }
        out[n] = u8::try_from(v).ok()?;
        n += 1;
    }
    (n == 4).then_some(out)
}

fn valid_scheme(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn default_port(scheme: &str) -> Option<u16> {
    const DEFAULTS: &[(&str, u16)] = &[("http", 80), ("https", 443), ("ws", 80), ("wss", 443)];
    DEFAULTS
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(scheme))
        .map(|&(_, p)| p)
}

impl UrlPolicy {
    /// Compiles an allowlist.
    ///
    /// `hosts`: exact hosts (`api.example.com`) or wildcards `*.example.com`
    /// (any subdomain at any depth, not the apex, not `evilexample.com`);
    /// IPv4 canonical dotted quads and bracketed IPv6 literals are allowed as
    /// exact entries only. Entries are lowercased; one trailing dot is
    /// ignored; non-ASCII names must be given in punycode.
    ///
    /// `schemes`: allowed schemes such as `["https"]` (lowercased).
    ///
    /// `ports`: `None` allows any port; `Some(list)` allows only the listed
    /// ports, where a URL without a port uses its scheme's default (http/ws
    /// 80, https/wss 443; other schemes have none and are then refused).
    pub fn new<H: AsRef<str>, S: AsRef<str>>(
        hosts: &[H],
        schemes: &[S],
        ports: Option<&[u16]>,
    ) -> Result<Self, UrlPolicyError> {
        if hosts.is_empty() {
            return Err(UrlPolicyError::NoHosts);
        }
        if schemes.is_empty() {
            return Err(UrlPolicyError::NoSchemes);
        }
        let mut rules = Vec::with_capacity(hosts.len());
        for entry in hosts {
            rules.push(compile_host(entry.as_ref())?);
        }
        let mut compiled_schemes = Vec::with_capacity(schemes.len());
        for s in schemes {
            let s = s.as_ref();
            if !valid_scheme(s) {
                return Err(UrlPolicyError::InvalidScheme(s.to_owned()));
            }
            if !matches!(
                s.to_ascii_lowercase().as_str(),
                "http" | "https" | "ws" | "wss"
            ) {
                return Err(UrlPolicyError::UnsupportedScheme(s.to_owned()));
            }
            compiled_schemes.push(s.to_ascii_lowercase());
        }
        let ports = match ports {
            None => None,
            Some([]) => return Err(UrlPolicyError::NoPorts),
            Some(list) if list.contains(&0) => return Err(UrlPolicyError::PortZero),
            Some(list) => Some(list.to_vec()),
        };
        Ok(Self {
            hosts: rules,
            schemes: compiled_schemes,
            ports,
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.iter().any(|r| match r {
            HostRule::Exact(e) => e.eq_ignore_ascii_case(host),
            HostRule::Wildcard(suffix) => {
                host.len() > suffix.len() + 1
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
            HostRule::Ipv4(_) | HostRule::Ipv6(_) => false,
        })
    }
}

fn compile_host(entry: &str) -> Result<HostRule, UrlPolicyError> {
    if entry.is_empty() {
        return Err(UrlPolicyError::EmptyHost);
    }
    if !entry.is_ascii() {
        return Err(UrlPolicyError::NonAsciiHost(entry.to_owned()));
    }
    let lower = entry.to_ascii_lowercase();
    if let Some(inner) = lower.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        return if ok {
            Ok(HostRule::Ipv6(lower))
        } else {
            Err(UrlPolicyError::InvalidIpv6(entry.to_owned()))
        };
    }
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if name.contains('*') {
        return Err(UrlPolicyError::BadWildcard(entry.to_owned()));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    match classify_host(name) {
        Err(NameFault::Invalid) => Err(UrlPolicyError::InvalidHost(entry.to_owned())),
        Err(NameFault::NonCanonicalIp) => Err(UrlPolicyError::NonCanonicalIp(entry.to_owned())),
        Ok(HostKind::Ipv4(_)) if wildcard => Err(UrlPolicyError::BadWildcard(entry.to_owned())),
        Ok(HostKind::Ipv4(ip)) => Ok(HostRule::Ipv4(ip)),
        Ok(HostKind::Name) if wildcard && !name.contains('.') => {
            Err(UrlPolicyError::WildcardTooBroad(entry.to_owned()))
        }
        Ok(HostKind::Name) if wildcard => Ok(HostRule::Wildcard(name.to_owned())),
        Ok(HostKind::Name) => Ok(HostRule::Exact(name.to_owned())),
    }
}

/// Checks that `input` is a strictly formed absolute URL whose scheme, host
/// and port are allowed by `policy`. See the module documentation for the
/// exact rules and their limits. Never allocates.
pub fn check_url(input: &str, policy: &UrlPolicy) -> Result<(), UrlViolation> {
    if input.is_empty() {
        return Err(UrlViolation::Empty);
    }
    for &b in input.as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => return Err(UrlViolation::Whitespace),
            0..=0x1f | 0x7f => return Err(UrlViolation::ControlChar),
            0x80.. => return Err(UrlViolation::NonAscii),
            b'\\' => return Err(UrlViolation::Backslash),
            _ => {}
        }
    }
    let colon = input.find(':').ok_or(UrlViolation::NotAbsolute)?;
    let scheme = &input[..colon];
    if !valid_scheme(scheme) {
        return Err(UrlViolation::NotAbsolute);
    }
    let rest = input[colon..]
        .strip_prefix("://")
        .ok_or(UrlViolation::NotAbsolute)?;
    if !policy
        .schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
    {
        return Err(UrlViolation::SchemeNotAllowed);
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(UrlViolation::UserInfo);
    }
    if authority.contains('%') {
        return Err(UrlViolation::PercentInAuthority);
    }
    let (host, port) = split_host_port(authority)?;
    if host.is_empty() {
        return Err(UrlViolation::EmptyHost);
    }
    let port = match port {
        Some(p) => Some(parse_port(p)?),
        None => None,
    };
    if host.starts_with('[') {
        let listed = policy
            .hosts
            .iter()
            .any(|r| matches!(r, HostRule::Ipv6(e) if e.eq_ignore_ascii_case(host)));
        if !listed {
            return Err(UrlViolation::IpNotAllowed);
        }
    } else {
        let name = host.strip_suffix('.').unwrap_or(host);
        match classify_host(name) {
            Err(NameFault::Invalid) => return Err(UrlViolation::InvalidHost),
            Err(NameFault::NonCanonicalIp) => return Err(UrlViolation::NonCanonicalIp),
            Ok(HostKind::Ipv4(ip)) => {
                if !policy
                    .hosts
                    .iter()
                    .any(|r| matches!(r, HostRule::Ipv4(e) if *e == ip))
                {
                    return Err(UrlViolation::IpNotAllowed);
                }
            }
            Ok(HostKind::Name) => {
                if !policy.host_allowed(name) {
                    return Err(UrlViolation::HostNotAllowed);
                }
            }
        }
    }
    if let Some(allowed) = &policy.ports {
        let effective = port.or_else(|| default_port(scheme));
        if !effective.is_some_and(|p| allowed.contains(&p)) {
            return Err(UrlViolation::PortNotAllowed);
        }
    }
    Ok(())
}

/// Splits `host[:port]` or `[v6][:port]`; the port string may be empty.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), UrlViolation> {
    if authority.starts_with('[') {
        let close = authority.find(']').ok_or(UrlViolation::IpNotAllowed)?;
        let (host, after) = authority.split_at(close + 1);
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(p))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(UrlViolation::InvalidHost),
        };
    }
    Ok(match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    })
}

/// 1-5 digits, no leading zero, 1..=65535.
fn parse_port(p: &str) -> Result<u16, UrlViolation> {
    let b = p.as_bytes();
    if b.is_empty() || b.len() > 5 || b[0] == b'0' || !b.iter().all(u8::is_ascii_digit) {
        return Err(UrlViolation::InvalidPort);
    }
    let v = b.iter().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
    u16::try_from(v).map_err(|_| UrlViolation::InvalidPort)
}

#[cfg(test)]
mod tests;
