//! Unit tests of the URL rule, and a differential test against the `url` crate.

use super::*;
use proptest::prelude::*;

const HOSTS: &[&str] = &[
    "allowed.com",
    "*.example.com",
    "api.other.org.",
    "192.0.2.10",
    "[2001:db8::1]",
];

fn policy() -> UrlPolicy {
    UrlPolicy::new(HOSTS, &["https"], None).unwrap()
}

fn ok(p: &UrlPolicy, url: &str) {
    assert_eq!(check_url(url, p), Ok(()), "{url:?}");
}

fn deny(p: &UrlPolicy, url: &str, v: UrlViolation) {
    assert_eq!(check_url(url, p), Err(v), "{url:?}");
}

#[test]
fn url_allow_exact_and_wildcard_subdomain() {
    let p = policy();
    for url in [
        "https://allowed.com",
        "https://allowed.com/",
        "https://a.example.com/x",
        "https://a.b.example.com",
        "https://api.other.org/",
        "https://xn--mller-kva.example.com/",
    ] {
        ok(&p, url);
    }
}

#[test]
fn url_allow_uppercase_scheme_host_and_trailing_dot() {
    let p = policy();
    for url in [
        "HTTPS://ALLOWED.COM/",
        "hTTps://Allowed.Com",
        "https://allowed.com./x",
        "https://A.Example.COM.",
    ] {
        ok(&p, url);
    }
}

#[test]
fn url_allow_path_query_fragment_and_ports() {
    let p = policy();
    ok(&p, "https://allowed.com:8443/a/b?q=1&r=%20#frag");
    ok(&p, "https://allowed.com?x=@evil.com");
    ok(&p, "https://allowed.com#@evil.com");
    let ports = UrlPolicy::new(&["allowed.com"], &["https", "http"], Some(&[443, 8080])).unwrap();
    ok(&ports, "https://allowed.com/");
    ok(&ports, "https://allowed.com:443/");
    ok(&ports, "http://allowed.com:8080/");
}

#[test]
fn url_allow_listed_ip_literals() {
    let p = UrlPolicy::new(HOSTS, &["http", "https"], None).unwrap();
    ok(&p, "http://192.0.2.10/");
    ok(&p, "http://192.0.2.10.:80/");
    ok(&p, "https://[2001:DB8::1]:443/x");
}

#[test]
fn url_escape_userinfo_at_sign_denied() {
    let p = policy();
    for url in [
        "https://allowed.com@evil.com",
        "https://user:pass@allowed.com",
        "https://@allowed.com",
        "https://allowed.com:443@evil.com/",
        "https://a@b@allowed.com",
    ] {
        deny(&p, url, UrlViolation::UserInfo);
    }
}

#[test]
fn url_escape_delimiter_before_at_sign_denied() {
    let p = policy();
    for url in [
        "https://evil.com#@allowed.com",
        "https://evil.com?@allowed.com",
        "https://evil.com/allowed.com",
        "https://evil.com/@allowed.com",
    ] {
        deny(&p, url, UrlViolation::HostNotAllowed);
    }
}

#[test]
fn url_escape_lookalike_hostnames_denied() {
    let p = policy();
    for url in [
        "https://allowed.com.evil.com",
        "https://evilallowed.com",
        "https://example.com.evil.com",
        "https://evilexample.com",
        "https://allowed.co",
        "https://other.org",
    ] {
        deny(&p, url, UrlViolation::HostNotAllowed);
    }
}

#[test]
fn url_escape_wildcard_apex_denied() {
    deny(
        &policy(),
        "https://example.com/",
        UrlViolation::HostNotAllowed,
    );
    deny(
        &policy(),
        "https://.example.com/",
        UrlViolation::InvalidHost,
    );
}

#[test]
fn url_escape_backslash_denied() {
    let p = policy();
    deny(
        &p,
        "https://evil.com\\@allowed.com",
        UrlViolation::Backslash,
    );
    deny(&p, "https:\\\\allowed.com", UrlViolation::Backslash);
}

#[test]
fn url_escape_percent_in_authority_denied() {
    let p = policy();
    for url in [
        "https://allowed.com%2f@evil.com",
        "https://%61llowed.com",
        "https://allowed.com%2f.evil.com",
        "https://[2001:db8::1%25eth0]/",
    ] {
        assert!(check_url(url, &p).is_err(), "{url:?}");
    }
    deny(
        &p,
        "https://%61llowed.com",
        UrlViolation::PercentInAuthority,
    );
    deny(
        &p,
        "https://allowed.com%2f.evil.com",
        UrlViolation::PercentInAuthority,
    );
}

#[test]
fn url_escape_not_absolute_denied() {
    let p = UrlPolicy::new(HOSTS, &["https"], None).unwrap();
    for url in [
        "//allowed.com",
        "javascript:alert(1)",
        "mailto:a@allowed.com",
        "allowed.com",
        "https:allowed.com",
        "https:/allowed.com",
        "://allowed.com",
        "1https://allowed.com",
        "/path?x=https://allowed.com",
    ] {
        deny(&p, url, UrlViolation::NotAbsolute);
    }
}

#[test]
fn url_escape_scheme_not_allowed_denied() {
    let p = policy();
    for url in [
        "file:///etc/passwd",
        "http://allowed.com",
        "ftp://allowed.com",
        "gopher://allowed.com:70/",
    ] {
        deny(&p, url, UrlViolation::SchemeNotAllowed);
    }
}

#[test]
fn url_escape_whitespace_and_control_denied() {
    let p = policy();
    for url in [
        "https://allo\twed.com",
        "https://allowed.com\n.evil.com",
        "https://evil.com\r\n",
        " https://allowed.com",
        "https://allowed.com ",
        "https://allowed.com/a b",
    ] {
        deny(&p, url, UrlViolation::Whitespace);
    }
    deny(
        &p,
        "https://allowed.com\0.evil.com",
        UrlViolation::ControlChar,
    );
    deny(&p, "https://allowed.com/\u{7f}", UrlViolation::ControlChar);
}

#[test]
fn url_escape_non_ascii_homograph_denied() {
    let p = policy();
    // Cyrillic U+0430 in place of Latin `a`.
    deny(&p, "https://\u{430}llowed.com", UrlViolation::NonAscii);
    deny(&p, "https://allowed\u{3002}com", UrlViolation::NonAscii);
    deny(
        &p,
        "https://allowed.com\u{FF0F}@evil.com",
        UrlViolation::NonAscii,
    );
}

#[test]
fn url_escape_numeric_ip_forms_denied() {
    let p = UrlPolicy::new(&["127.0.0.1", "allowed.com"], &["http"], None).unwrap();
    for url in [
        "http://2130706433",
        "http://0x7f.0.0.1",
        "http://0x7f000001",
        "http://127.1",
        "http://017700000001",
        "http://0177.0.0.1",
        "http://127.0.0.01",
        "http://127.0.0.1.1",
        "http://256.0.0.1",
        "http://0x7f.allowed.com",
        "http://allowed.1com",
    ] {
        deny(&p, url, UrlViolation::NonCanonicalIp);
    }
    ok(&p, "http://127.0.0.1/");
    deny(&p, "http://127.0.0.2/", UrlViolation::IpNotAllowed);
}

#[test]
fn url_escape_ipv6_literal_denied() {
    let p = policy();
    for url in [
        "https://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://[2001:db8:0::1]/",
        "https://[2001:db8::1",
    ] {
        deny(&p, url, UrlViolation::IpNotAllowed);
    }
    deny(&p, "https://[2001:db8::1]x/", UrlViolation::InvalidHost);
}

#[test]
fn url_escape_port_not_allowed_denied() {
    let p = UrlPolicy::new(&["allowed.com"], &["https", "ws"], Some(&[443])).unwrap();
    deny(
        &p,
        "https://allowed.com:8443/",
        UrlViolation::PortNotAllowed,
    );
    deny(&p, "ws://allowed.com/", UrlViolation::PortNotAllowed);
}

#[test]
fn policy_refuses_hostless_schemes_and_tld_wildcards() {
    for scheme in ["file", "javascript", "data", "mailto", "ftp"] {
        assert_eq!(
            UrlPolicy::new(&["allowed.com"], &[scheme], None).unwrap_err(),
            UrlPolicyError::UnsupportedScheme(scheme.into())
        );
    }
    assert_eq!(
        UrlPolicy::new(&["*.com"], &["https"], None).unwrap_err(),
        UrlPolicyError::WildcardTooBroad("*.com".into())
    );
    assert!(UrlPolicy::new(&["*.example.com"], &["https"], None).is_ok());
}

#[test]
fn url_escape_invalid_port_denied() {
    let p = policy();
    for url in [
        "https://allowed.com:99999",
        "https://allowed.com:65536/",
        "https://allowed.com:123456",
        "https://allowed.com:/",
        "https://allowed.com:",
        "https://allowed.com:0",
        "https://allowed.com:0443",
        "https://allowed.com:44a",
        "https://allowed.com:443:80",
        "https://allowed.com:+443",
    ] {
        deny(&p, url, UrlViolation::InvalidPort);
    }
}

#[test]
fn url_escape_empty_or_malformed_host_denied() {
    let p = policy();
    deny(&p, "", UrlViolation::Empty);
    deny(&p, "https://", UrlViolation::EmptyHost);
    deny(&p, "https:///evil.com", UrlViolation::EmptyHost);
    deny(&p, "https://:443/", UrlViolation::EmptyHost);
    for url in [
        "https://allowed.com;evil.com",
        "https://allowed_com",
        "https://allowed..com",
        "https://allowed.com..",
        "https://-allowed.com",
        "https://allowed-.com",
        "https://allowed.com,evil.com",
        "https://*.example.com",
    ] {
        deny(&p, url, UrlViolation::InvalidHost);
    }
    let long = format!("https://{}.example.com", "a".repeat(64));
    deny(&p, &long, UrlViolation::InvalidHost);
    let long = format!("https://{}example.com", "a.".repeat(124));
    deny(&p, &long, UrlViolation::InvalidHost);
}

#[test]
fn url_policy_rejects_bad_entries() {
    use UrlPolicyError as E;
    let cases: &[(&str, E)] = &[
        ("", E::EmptyHost),
        (
            "\u{430}llowed.com",
            E::NonAsciiHost("\u{430}llowed.com".into()),
        ),
        ("bad_host", E::InvalidHost("bad_host".into())),
        ("a..b", E::InvalidHost("a..b".into())),
        ("*example.com", E::BadWildcard("*example.com".into())),
        ("a.*.com", E::BadWildcard("a.*.com".into())),
        ("*.*.com", E::BadWildcard("*.*.com".into())),
        ("*.1.2.3.4", E::BadWildcard("*.1.2.3.4".into())),
        ("127.1", E::NonCanonicalIp("127.1".into())),
        ("0x7f.0.0.1", E::NonCanonicalIp("0x7f.0.0.1".into())),
        ("[::1", E::InvalidIpv6("[::1".into())),
        ("[fe80::1%eth0]", E::InvalidIpv6("[fe80::1%eth0]".into())),
    ];
    for (h, e) in cases {
        assert_eq!(
            UrlPolicy::new(&[h], &["https"], None).unwrap_err(),
            *e,
            "{h:?}"
        );
    }
    let none: &[&str] = &[];
    assert_eq!(
        UrlPolicy::new(none, &["https"], None).unwrap_err(),
        E::NoHosts
    );
    assert_eq!(
        UrlPolicy::new(&["a.com"], none, None).unwrap_err(),
        E::NoSchemes
    );
    assert_eq!(
        UrlPolicy::new(&["a.com"], &["ht tp"], None).unwrap_err(),
        E::InvalidScheme("ht tp".into())
    );
    assert_eq!(
        UrlPolicy::new(&["a.com"], &["https"], Some(&[])).unwrap_err(),
        E::NoPorts
    );
    assert_eq!(
        UrlPolicy::new(&["a.com"], &["https"], Some(&[0])).unwrap_err(),
        E::PortZero
    );
    assert!(
        E::NonAsciiHost("é.com".into())
            .to_string()
            .contains("punycode"),
        "error must tell the user to use punycode"
    );
    // Uppercase entries and schemes are lowercased.
    let p = UrlPolicy::new(&["ALLOWED.com"], &["HTTPS"], None).unwrap();
    ok(&p, "https://allowed.COM");
}

#[test]
fn url_violation_display_is_a_sentence() {
    assert_eq!(
        UrlViolation::UserInfo.to_string(),
        "URL contains user info (`@` before the host)"
    );
    assert_eq!(
        UrlViolation::HostNotAllowed.to_string(),
        "URL host is not allowed"
    );
}

/// Independent reference: RFC 3986 appendix B style split (with WHATWG's
/// `\` treated as a delimiter), host after the last `@`, port after the
/// last `:` outside brackets, lowercased, one trailing dot removed.
fn reference_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let hostport = authority.rsplit('@').next()?;
    let host = if hostport.starts_with('[') {
        &hostport[..=hostport.find(']')?]
    } else {
        hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
    };
    let host = host.to_ascii_lowercase();
    Some(host.strip_suffix('.').map(str::to_owned).unwrap_or(host))
}

fn reference_allowed(host: &str) -> bool {
    [
        "allowed.com",
        "api.other.org",
        "192.0.2.10",
        "[2001:db8::1]",
    ]
    .contains(&host)
        || (host.ends_with(".example.com") && host.len() > ".example.com".len())
}

/// Dangerous pieces, `|`-separated.
fn host_piece() -> impl Strategy<Value = &'static str> {
    let pieces = concat!(
        "allowed.com|allowed.com|allowed.com|a.|a.|b.|.example.com|",
        ".example.com|evil.com|example.com|a.|a.b.|.|@|:|%2f|%40|[2001:db8::1]|",
        "[::1]|192.0.2.10|0x7f|127.1|user|xn--|-|*|\u{430}|ALLOWED.COM|",
        ".example.com|evil|\\| |\t|api.other.org|other.org",
    );
    prop::sample::select(pieces.split('|').collect::<Vec<_>>())
}

/// Dangerous pieces, `|`-separated.
fn tail_piece() -> impl Strategy<Value = &'static str> {
    let pieces = concat!(
        "|/|?|#|@|@evil.com|/allowed.com|:443|:|:99999|.|%2f|\\|evil.com|//|[|",
        "]|:8443",
    );
    prop::sample::select(pieces.split('|').collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]
    #[test]
    fn url_escape_fuzz_ok_only_for_allowed_hosts(
        scheme in prop::sample::select(vec![
            "https://", "https://", "https://", "HTTPS://", "http://", "//", "https:",
            "https:///", "",
        ]),
        pre in prop_oneof![Just(vec![]), prop::collection::vec(host_piece(), 1..3)],
        core in prop::sample::select(vec![
            "allowed.com", "a.example.com", "x.y.example.com", "ALLOWED.COM.", "192.0.2.10",
            "[2001:db8::1]", "api.other.org", "example.com", "evilallowed.com", "",
        ]),
        post in prop_oneof![Just(vec![]), prop::collection::vec(host_piece(), 1..3)],
        tail in prop::collection::vec(tail_piece(), 0..4),
    ) {
        let url = format!("{scheme}{}{core}{}{}", pre.concat(), post.concat(), tail.concat());
        let p = policy();
        if check_url(&url, &p).is_ok() {
            prop_assert!(url.is_ascii() && !url.contains(['\\', ' ', '\t', '\n']));
            let host = reference_host(&url);
            prop_assert!(host.as_deref().is_some_and(reference_allowed), "{url:?} -> {host:?}");
            let after_scheme = url.split_once("://").unwrap().1;
            let authority = after_scheme.split(['/', '?', '#']).next().unwrap();
            prop_assert!(!authority.contains(['@', '%']), "{url:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Differential test against the `url` crate (WHATWG URL, what reqwest connects to).

/// The policy the differential test runs against: every scheme the rule supports, a port list.
fn differential_policy(ports: Option<&[u16]>) -> UrlPolicy {
    UrlPolicy::new(HOSTS, &["https", "http", "ws", "wss"], ports).unwrap()
}

/// Whether `host`, as the `url` crate serialises it, is one the differential policy names:
/// written independently of the rule (IPv6 compared as addresses, one trailing dot ignored,
/// since `allowed.com.` is the same DNS name as `allowed.com`).
fn whatwg_host_allowed(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            ["allowed.com", "api.other.org"].contains(&d)
                || (d.ends_with(".example.com") && d.len() > ".example.com".len())
        }
        url::Host::Ipv4(a) => *a == std::net::Ipv4Addr::new(192, 0, 2, 10),
        url::Host::Ipv6(a) => *a == "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap(),
    }
}

/// Pieces of URLs, `|`-separated: the forms on which parsers are known to disagree.
fn url_piece() -> impl Strategy<Value = &'static str> {
    let pieces = concat!(
        "allowed.com|allowed.com|a.example.com|x.y.example.com|api.other.org|ALLOWED.COM|",
        "allowed.com.|192.0.2.10|192.0.2.10.|[2001:db8::1]|[2001:DB8::1]|[2001:db8:0::1]|",
        "[::ffff:192.0.2.10]|evil.com|example.com|@|user@|user:pass@|allowed.com@|:|",
        ":443|:8443|:80|:0443|:65536|:1|/|//|\\|?|#|%2e|%2f|%40|%61|%25|\t|\n|\r| |",
        "\u{3002}|\u{FF0E}|\u{FF41}|\u{430}|\u{200B}|\u{AD}|xn--mller-kva|xn--|.|..|",
        "0x7f|127.1|0|-|[|]|;|,|*|_|~",
    );
    prop::sample::select(pieces.split('|').collect::<Vec<_>>())
}

fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "https://",
        "https://",
        "https://",
        "http://",
        "ws://",
        "wss://",
        "HTTPS://",
        "https:",
        "https:/",
        "https:\\\\",
        "https:///",
        "",
    ]);
    let host = prop::sample::select(vec![
        "allowed.com",
        "a.example.com",
        "api.other.org.",
        "192.0.2.10",
        "[2001:db8::1]",
        "",
    ]);
    (
        scheme,
        prop::collection::vec(url_piece(), 0..3),
        host,
        prop::collection::vec(url_piece(), 0..4),
    )
        .prop_map(|(s, pre, h, post)| format!("{s}{}{h}{}", pre.concat(), post.concat()))
}

#[test]
fn url_rule_agrees_with_whatwg_parser_on_every_allowed_url() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let ports: &[u16] = &[80, 443, 8443];
    let policies = [differential_policy(None), differential_policy(Some(ports))];
    let mut runner = TestRunner::new(Config::with_cases(30_000));
    let allowed = std::cell::Cell::new(0u32);
    let result = runner.run(&url_like(), |input| {
        for (i, policy) in policies.iter().enumerate() {
            if check_url(&input, policy).is_err() {
                continue;
            }
            allowed.set(allowed.get() + 1);
            // Whatever the rule allows, the WHATWG parser reads as the same scheme, host and
            // port: an allowed scheme, an allowed host and, with a port list, an allowed port.
            let parsed = match url::Url::parse(&input) {
                Ok(parsed) => parsed,
                // The one refusal allowed: an `xn--` label that is not valid punycode. The rule
                // does not decode punycode; WHATWG then connects nowhere, and parsers that do not
                // apply IDNA to ASCII names connect to the literal (allowed) name.
                Err(url::ParseError::IdnaError) if input.to_ascii_lowercase().contains("xn--") => {
                    continue;
                }
                Err(e) => return Err(TestCaseError::fail(format!("{input:?} allowed, url: {e}"))),
            };
            let scheme = parsed.scheme();
            prop_assert!(
                ["https", "http", "ws", "wss"].contains(&scheme),
                "{input:?}"
            );
            prop_assert_eq!(
                scheme,
                input.split_once(':').unwrap().0.to_ascii_lowercase()
            );
            let host = parsed.host();
            prop_assert!(
                host.as_ref().is_some_and(whatwg_host_allowed),
                "{input:?} -> {host:?}"
            );
            // The same host as the RFC 3986 reading of the text.
            let text_host = reference_host(&input).unwrap();
            let whatwg_host = parsed.host_str().unwrap().to_ascii_lowercase();
            let whatwg_host = whatwg_host.strip_suffix('.').unwrap_or(&whatwg_host);
            if !text_host.starts_with('[') {
                prop_assert_eq!(whatwg_host, text_host.as_str(), "{:?}", input);
            }
            let port = parsed.port_or_known_default();
            let authority = input.split_once("://").unwrap().1;
            let authority = authority.split(['/', '?', '#']).next().unwrap();
            let after_host = authority.rsplit_once(']').map_or(authority, |(_, p)| p);
            let explicit = after_host
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok());
            let default = default_port(scheme);
            prop_assert_eq!(port, explicit.or(default), "{:?}", input);
            if i == 1 {
                prop_assert!(port.is_some_and(|p| ports.contains(&p)), "{input:?}");
            }
        }
        Ok(())
    });
    result.unwrap();
    // The generator must reach the allow path often enough for the comparison to mean anything.
    assert!(allowed.get() > 2_000, "only {} allowed URLs", allowed.get());
}

#[test]
fn url_known_parser_differentials_are_refused() {
    // Each of these reaches another host (or is not the literal text) under some parser.
    let p = differential_policy(None);
    for input in [
        "https://allowed.com\u{3002}evil.com/", // IDNA maps U+3002 to `.`
        "https://\u{FF41}llowed.com/",          // fullwidth `a`, IDNA maps it to `a`
        "https://allowed.com\t.evil.com/",      // WHATWG strips tabs
        "https://allowed.com\n/",               // ... and newlines
        "https://allowed.com\\@evil.com/",      // `\` is `/` to WHATWG, not to RFC 3986
        "https:\\\\allowed.com/",               // WHATWG reads `\\` as `//`
        "https:allowed.com/",                   // WHATWG adds the missing `//`
        "https:///allowed.com/",                // ... or drops a third `/`
        "https://evil.com:443@allowed.com/",    // userinfo
        "https://allowed.com%2eevil.com/",      // percent-decoded hosts
        "https://0x7f.0.0.1/",                  // WHATWG IPv4 forms
        "https://allowed.com:0443/",            // leading zero ports
        "https://allowed.com./x\u{00A0}",       // non-ASCII anywhere
    ] {
        assert!(check_url(input, &p).is_err(), "{input:?}");
    }
}
