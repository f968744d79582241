//! Unit tests of the path rule.

use super::PathViolation as V;
use super::*;
use proptest::prelude::*;

fn policy(root: &str) -> PathPolicy {
    PathPolicy::new(PathRoot::parse(root).unwrap())
}

fn normalize(root: &str) -> PathPolicy {
    let dot_dot = DotDot::Normalize;
    PathPolicy {
        dot_dot,
        ..policy(root)
    }
}

fn ok(p: &PathPolicy, input: &str) {
    assert_eq!(check_path(input, p, Some("alice")), Ok(()), "{input:?}");
}

fn deny(p: &PathPolicy, input: &str, v: V) {
    assert_eq!(check_path(input, p, Some("alice")), Err(v), "{input:?}");
}

/// `inputs` is a space-separated list.
fn ok_all(p: &PathPolicy, inputs: &str) {
    inputs.split(' ').for_each(|i| ok(p, i));
}

/// `inputs` is a space-separated list.
fn deny_all(p: &PathPolicy, inputs: &str, v: V) {
    inputs.split(' ').for_each(|i| deny(p, i, v.clone()));
}

#[test]
fn path_allow_root_itself_and_nested_files() {
    let inputs = "/data/a /data/a/ /data/a/f.txt /data/a/x/y/z.tar.gz";
    ok_all(&policy("/data/a"), inputs);
    ok(&policy("/data/a/"), "/data/a/f");
    ok(&policy("/"), "/etc/anything");
}

#[test]
fn path_allow_duplicate_separators_and_dot_components() {
    let inputs = "/data//a///x /data/./a/./x ./x x/./y/ .";
    ok_all(&policy("/data/a"), inputs);
}

#[test]
fn path_allow_relative_under_root_and_hidden_files() {
    let inputs = "notes.md sub/dir/f .bashrc ..a a..b x/~";
    ok_all(&policy("/data/a"), inputs);
}

#[test]
fn path_allow_compartment_placeholder_match() {
    let p = policy("/home/{compartment}/files");
    assert!(p.root.has_compartment());
    ok_all(&p, "/home/alice/files/x.txt x.txt");
}

#[test]
fn path_allow_unicode_names_and_plain_percent_escapes() {
    let p = policy("/data/a");
    let inputs = "/data/a/Müller.pdf /data/a/M%C3%BCller.pdf /data/%61/x %E6%97%A5";
    ok_all(&p, inputs);
}

#[test]
fn path_allow_normalize_within_root() {
    let inputs = "/data/a/x/../y /data/a/x/.. x/y/../../z";
    ok_all(&normalize("/data/a"), inputs);
}

#[test]
fn path_escape_dotdot_relative_denied() {
    let inputs = "../etc/passwd x/../../etc x/.. ..";
    deny_all(&policy("/data/a"), inputs, V::DotDot);
}

#[test]
fn path_escape_dotdot_inside_absolute_denied() {
    let p = policy("/data/a");
    let inputs = "/data/a/../etc /data/a/x/.. /data/a/ax/../../b";
    deny_all(&p, inputs, V::DotDot);
    deny(&p, "/data/ax/..", V::NotUnderRoot);
}

#[test]
fn path_escape_prefix_sibling_and_outside_absolute_denied() {
    let p = policy("/data/a");
    let inputs = "/data/ab /data/ab/x /data/A/x /etc/passwd /data /";
    deny_all(&p, inputs, V::NotUnderRoot);
}

#[test]
fn path_escape_percent_encoded_dotdot_denied() {
    let p = policy("/data/a");
    let inputs = "%2e%2e%2fetc %2E%2E/etc ..%2fetc .%2e/x /data/a/%2e%2e";
    deny_all(&p, inputs, V::DotDot);
    deny(&p, "/data/a%2f..%2f..%2fetc", V::DotDot);
}

#[test]
fn path_escape_double_encoded_dotdot_denied() {
    let inputs = "%252e%252e/etc %252f %25";
    deny_all(&policy("/data/a"), inputs, V::DoubleEncoding);
}

#[test]
fn path_escape_invalid_percent_sequence_denied() {
    let p = policy("/data/a");
    deny_all(&p, "% %2 x%zz %%32e %g0 %2g", V::InvalidPercentEncoding);
}

#[test]
fn path_escape_overlong_utf8_dot_denied() {
    let p = policy("/data/a");
    let inputs = "%c0%ae%c0%ae/etc %c0%af %e0%80%ae %ff %C3";
    deny_all(&p, inputs, V::InvalidUtf8);
}

#[test]
fn path_escape_backslash_dotdot_denied() {
    let p = policy("/data/a");
    let inputs = r"..\etc \..\etc x\y %5c..%5cetc /data/a/..%5C";
    deny_all(&p, inputs, V::Backslash);
}

#[test]
fn path_escape_nul_and_control_chars_denied() {
    let p = policy("/data/a");
    let inputs = "x%00.txt x\0.txt x\n %0a x\u{7f} %7f x\u{85}y %C2%85 \t";
    deny_all(&p, inputs, V::ControlChar);
}

#[test]
fn path_escape_unicode_lookalike_dots_and_slashes_denied() {
    let p = policy("/data/a");
    // Fullwidth dots, division slash, and fullwidth dots percent-encoded.
    let inputs = "\u{FF0E}\u{FF0E}/etc ..\u{2215}etc %EF%BC%8E%EF%BC%8E/etc";
    deny_all(&p, inputs, V::LookAlike);
    for c in [
        '\u{2024}', '\u{2025}', '\u{FE12}', '\u{FE52}', '\u{2A74}', '\u{00A5}',
    ] {
        deny(&p, &format!("x{c}y"), V::LookAlike);
    }
    // NFKC would turn these into `%2e`, `~/` and `C:`.
    deny_all(
        &p,
        "\u{FF05}2e \u{FF5E}/x C\u{FF1A}x \u{FE30} \u{2100}",
        V::LookAlike,
    );
}

#[test]
fn path_escape_invisible_chars_hiding_dots_denied() {
    let p = policy("/data/a");
    let inputs = "..\u{200B}/etc .\u{FEFF}./etc \u{200D}.. x/..\u{E0001}";
    deny_all(&p, inputs, V::DotsOnly);
    deny(&p, "x.\u{200B}", V::TrailingDotOrSpace);
    deny(&p, "x \u{200C}", V::TrailingDotOrSpace);
    deny_all(&p, "\u{200B}/etc \u{202E}", V::InvisibleComponent);
    deny(&p, "\u{200B}~/x", V::HomeDir);
    deny(&p, "\u{FEFF}C:/x", V::DrivePrefix);
    // Zero-width non-joiner inside a Persian word is legitimate.
    ok(&p, "\u{645}\u{6cc}\u{200C}\u{62e}.txt");
}

#[test]
fn path_escape_tilde_home_denied() {
    let inputs = "~/.ssh/id_rsa ~root/x ~ %7e/x";
    deny_all(&policy("/data/a"), inputs, V::HomeDir);
}

#[test]
fn path_escape_windows_drive_prefix_denied() {
    let p = policy("/data/a");
    deny(&p, r"C:\Windows", V::Backslash);
    deny_all(&p, "C:/Windows c:foo C: z:%2fx", V::DrivePrefix);
}

#[test]
fn path_escape_unc_double_slash_denied() {
    let p = policy("/");
    let inputs = "//server/share ///x /%2fserver %2f%2fserver";
    deny_all(&p, inputs, V::DoubleSlashPrefix);
}

#[test]
fn path_escape_dots_only_component_denied() {
    let inputs = "... /data/a/..../x %2e%2e%2e";
    deny_all(&policy("/data/a"), inputs, V::DotsOnly);
}

#[test]
fn path_escape_trailing_dot_or_space_component_denied() {
    let p = policy("/data/a");
    let inputs = "secret.txt. /data/a/dir./x x%20 /data/a./x";
    deny_all(&p, inputs, V::TrailingDotOrSpace);
    deny(&p, "secret.txt ", V::TrailingDotOrSpace);
}

#[test]
fn path_escape_unicode_white_space_at_component_edges_denied() {
    // A tool that trims or NFKC-normalises turns each of these into `..`, `/etc`, `~` or `C:`.
    let p = policy("/data/a");
    for input in [
        "..\u{A0}/etc",
        "..\u{3000}/etc",
        "..\u{2003}",
        "x/..\u{202F}/y",
        "secret.txt\u{2002}",
        "..\u{A8}",
        "..\u{200B}\u{3000}",
    ] {
        deny(&p, input, V::TrailingDotOrSpace);
    }
    for input in ["\u{2003}/etc/passwd", "\u{3000}", "\u{1680}x"] {
        assert!(check_path(input, &p, None).is_err(), "{input:?}");
    }
    for input in [
        "\u{2003}~/x",
        "\u{3000}C:/x",
        "x/\u{A0}y",
        "\u{200B}\u{2003}..",
    ] {
        deny(&p, input, V::LeadingSpace);
    }
    // White space inside a name is fine.
    ok_all(&p, "a\u{A0}b.txt report\u{3000}2024.pdf");
    ok(&p, "a b/c d.txt");
}

#[test]
fn path_escape_url_shaped_relative_value_denied() {
    let p = policy("/data/a");
    for input in [
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "https://evil.example/x",
        "s3://bucket/key",
        "git+ssh://host/repo",
        "file:/etc/passwd",
        "file%3a///etc/passwd",
        "\u{200B}file:///etc",
        "data:text/plain,x",
    ] {
        deny(&p, input, V::UrlScheme);
    }
    // Further down, or under an absolute path, a colon is part of a name.
    ok_all(&p, "x/file:y /data/a/http:x 1:2.txt");
}

/// What `c` becomes under NFKC, computed independently of the rule's own table.
fn nfkc(c: char) -> String {
    use unicode_normalization::UnicodeNormalization;
    c.to_string().nfkc().collect()
}

#[test]
fn path_escape_every_char_nfkc_folds_into_dot_slash_or_space_refused() {
    // Exhaustive over every Unicode scalar value: whatever NFKC turns into (or makes contain) a
    // dot, a slash, a backslash or white space cannot hide a `..`, an extra component or an edge
    // space from the rule.
    let p = PathPolicy {
        dot_dot: DotDot::Normalize,
        ..policy("/data/a")
    };
    let mut seen = 0;
    for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
        if c.is_ascii() && !c.is_whitespace() {
            continue;
        }
        let n = nfkc(c);
        let dotlike = n.contains(['.', '/', '\\', '\u{3002}']);
        if !dotlike && !n.chars().any(char::is_whitespace) {
            continue;
        }
        seen += 1;
        for input in [
            format!("..{c}"),
            format!("{c}.."),
            format!("x/{c}"),
            format!("x{c}"),
        ] {
            let r = check_path(&input, &p, None);
            assert!(r.is_err(), "U+{:04X} in {input:?} was accepted", c as u32);
        }
        if dotlike {
            let inner = format!("x{c}y");
            assert!(check_path(&inner, &p, None).is_err(), "U+{:04X}", c as u32);
        }
    }
    assert!(seen > 100, "only {seen} characters examined");
}

#[test]
fn path_escape_other_compartment_in_placeholder_denied() {
    let p = policy("/home/{compartment}/files");
    let inputs = "/home/bob/files/x /home/alicex/files /home/{compartment}/files /home/alice";
    deny_all(&p, inputs, V::NotUnderRoot);
}

#[test]
fn path_escape_missing_compartment_fails_closed() {
    let p = policy("/home/{compartment}");
    assert_eq!(check_path("x", &p, None), Err(V::MissingCompartment));
}

#[test]
fn path_escape_malicious_compartment_value_denied() {
    let p = policy("/home/{compartment}");
    let bad = [
        "", ".", "..", "a/b", "a\\b", "%2e%2e", "...", "a.", "a\0", "\u{FF0E}",
    ];
    for c in bad {
        let r = check_path("/home/x", &p, Some(c));
        assert_eq!(r, Err(V::InvalidCompartment), "{c:?}");
    }
    // `..` as compartment must not match a literal `..` either.
    let r = check_path(
        "/home/../etc",
        &normalize("/home/{compartment}"),
        Some(".."),
    );
    assert_eq!(r, Err(V::InvalidCompartment));
}

#[test]
fn path_escape_empty_and_too_long_denied() {
    let p = policy("/data/a");
    deny(&p, "", V::Empty);
    let (len, max) = (4098, 4096);
    deny(&p, &"a/".repeat(2049), V::TooLong { len, max });
    let short = PathPolicy { max_len: 8, ..p };
    deny(&short, "/data/a/x", V::TooLong { len: 9, max: 8 });
}

#[test]
fn path_escape_overlong_component_denied() {
    let p = policy("/data/a");
    deny(&p, &"a".repeat(300), V::ComponentTooLong);
    deny(&p, &"%61".repeat(256), V::ComponentTooLong);
    ok(&p, &"%61".repeat(255));
}

#[test]
fn path_escape_normalize_climb_above_root_denied() {
    let p = normalize("/data/a");
    let inputs = ".. ../x x/../../y /data/a/.. /data/a/x/../../b /data/../data/a";
    deny_all(&p, inputs, V::EscapesRoot);
    deny(&normalize("/"), "/..", V::EscapesRoot);
    deny(&p, "/data/b/../a", V::NotUnderRoot);
}

#[test]
fn path_escape_relative_when_disallowed_denied() {
    let allow_relative = false;
    let p = PathPolicy {
        allow_relative,
        ..policy("/data/a")
    };
    deny_all(&p, "x.txt ./x", V::RelativeNotAllowed);
    ok(&p, "/data/a/x.txt");
}

#[test]
fn path_root_parse_rejects_ambiguous_roots() {
    use PathRootError as E;
    let cases: &[(&str, E)] = &[
        ("", E::NotAbsolute),
        ("data", E::NotAbsolute),
        ("//data", E::EmptyComponent),
        ("/data//a", E::EmptyComponent),
        ("/data/../etc", E::DotComponent),
        ("/data/./a", E::DotComponent),
        ("/data/...", E::DotsOnly),
        ("/data/a.", E::TrailingDotOrSpace),
        ("/data\\a", E::Backslash),
        ("/data/%61", E::Percent),
        ("/data/\n", E::ControlChar),
        ("/data\u{2215}a", E::LookAlike),
        ("/x{compartment}", E::BadPlaceholder),
        ("/{compartmnt}", E::BadPlaceholder),
        ("/{compartment}/{compartment}", E::DuplicatePlaceholder),
    ];
    for (root, e) in cases {
        assert_eq!(PathRoot::parse(root).unwrap_err(), *e, "{root:?}");
    }
    let r: PathRoot = "/srv/{compartment}/".parse().unwrap();
    assert_eq!(r.as_str(), "/srv/{compartment}/");
    assert!(!PathRoot::parse("/").unwrap().has_compartment());
}

#[test]
fn path_violation_display_is_a_sentence() {
    assert_eq!(V::DotDot.to_string(), "path contains a `..` component");
    let msg = "`{compartment}` must be a whole component; root has `{` or `}` elsewhere";
    assert_eq!(PathRootError::BadPlaceholder.to_string(), msg);
}

/// Independent reference: decode into a String, split on '/', resolve.
/// Returns the resolved components, or None if the reference refuses.
fn reference(input: &str, p: &PathPolicy, comp: &str) -> Vec<String> {
    let b = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(h, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).expect("Ok path must decode to UTF-8");
    assert!(!decoded.contains(['%', '\\', '\0']), "{decoded:?}");
    assert!(
        !decoded
            .chars()
            .any(|c| c.is_control() || fold::fold(c).is_some_and(fold::Fold::is_lookalike))
    );
    assert!(!decoded.starts_with("//") && !decoded.starts_with('~'));
    let root = root_components(p, comp);
    let mut stack = if decoded.starts_with('/') {
        Vec::new()
    } else {
        root.clone()
    };
    for c in decoded.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                assert_eq!(p.dot_dot, DotDot::Normalize, "Ok with `..` in Reject mode");
                assert!(stack.len() > root.len(), "`..` climbed above root");
                stack.pop();
            }
            _ => {
                assert!(!c.ends_with(['.', ' ']) && c.len() <= NAME_MAX);
                stack.push(c.to_owned());
            }
        }
    }
    stack
}

fn root_components(p: &PathPolicy, comp: &str) -> Vec<String> {
    p.root.as_str()[1..]
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace(PLACEHOLDER, comp))
        .collect()
}

/// Dangerous pieces, `|`-separated.
fn piece() -> impl Strategy<Value = &'static str> {
    let pieces = concat!(
        "..|.|/|/|%2e|%2E|%2f|%25|%5c|\\|~|A|b|{|}|data|a|ab|alice|bob|",
        "{compartment}| |%|C:|%00|%c0%ae|\u{FF0E}|\u{2215}|%2e%2e|%252e|//|%7e|",
        "...|\u{200B}|\u{FF5E}|%E2%80%8B|%C3%BC|/data/a/|/data/alice/",
    );
    prop::sample::select(pieces.split('|').collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn path_escape_fuzz_ok_never_escapes_root(
        prefix in prop::sample::select(vec!["", "/data/a/", "/data/alice/", "/data/", "/"]),
        pieces in prop::collection::vec(piece(), 0..10),
        root in prop::sample::select(vec!["/data/a", "/data/{compartment}", "/"]),
        normalize_mode in any::<bool>(),
        allow_relative in any::<bool>(),
    ) {
        let input = format!("{prefix}{}", pieces.concat());
        let p = PathPolicy {
            dot_dot: if normalize_mode { DotDot::Normalize } else { DotDot::Reject },
            allow_relative,
            ..policy(root)
        };
        if check_path(&input, &p, Some("alice")).is_ok() {
            let resolved = reference(&input, &p, "alice");
            let root_comps = root_components(&p, "alice");
            prop_assert!(resolved.starts_with(&root_comps), "{input:?} -> {resolved:?}");
            prop_assert!(!resolved.iter().any(|c| c == ".." || c.contains('/')));
            prop_assert!(allow_relative || input.starts_with('/') || input.starts_with("%2f"));
        }
    }
}
