//! Text normalisation, tokens and structured values: the one definition of "the same value" that
//! both the index (at observe time) and the lookups (at check time) use, so a value copied from a
//! tool output matches however the model re-typed it.
//!
//! Normal form:
//! - Unicode NFKC (the `unicode-normalization` crate): full-width, ligature and compatibility
//!   forms fold to their plain letters (`ＡＢＣ` is `abc`, `ﬁ` is `fi`);
//! - invisible format characters (zero-width space and joiners, bidi controls, soft hyphen, BOM)
//!   and control characters are dropped, so an attacker cannot split a value with them;
//! - lower case (full Unicode `to_lowercase`);
//! - every run of whitespace is one space, none at either end;
//! - numbers in one canonical form: thousands separators removed, trailing fraction zeros
//!   removed (`1,000.00` and `1000` are both `1000`; `98.70` is `98.7`).
//!
//! Structured values (e-mail addresses, URLs, IBANs, international phone numbers, paths) are
//! found in normalised text by regular expressions and reduced to a canonical form (an IBAN
//! without spaces, a URL without scheme, `www.` or trailing slash, a phone number as `+` and
//! digits), so `https://www.Example.com/` and `example.com` are one value.

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// Kinds of structured values recognised inside text.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PartKind {
    /// An e-mail address.
    Email,
    /// A URL (with a scheme, starting with `www.`, or a bare domain with a common top-level
    /// domain).
    Url,
    /// An IBAN (with or without the 4-character grouping spaces).
    Iban,
    /// An international phone number (`+` and at least 7 digits).
    Phone,
    /// An absolute or home-relative path with at least two segments.
    Path,
    /// An identifier-like token: at least 4 characters with at least one digit (codes, account
    /// and document numbers, passport numbers).
    Identifier,
}

impl PartKind {
    /// The kind's name as written in policies.
    pub fn name(self) -> &'static str {
        match self {
            PartKind::Email => "email",
            PartKind::Url => "url",
            PartKind::Iban => "iban",
            PartKind::Phone => "phone",
            PartKind::Path => "path",
            PartKind::Identifier => "identifier",
        }
    }
}

/// Characters dropped before anything else: they are invisible and only serve to split a value.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
    ) || (c.is_control() && !c.is_whitespace())
}

/// Appends the normal form of `s` to `out` (see the module docs).
pub(crate) fn normalize_into(s: &str, out: &mut String) {
    let start = out.len();
    let mut pending_space = false;
    let mut has_number = false;
    if s.is_ascii() {
        // ASCII is its own NFKC form: skip the decomposition machinery (the lookup hot path).
        for &b in s.as_bytes() {
            if b.is_ascii_whitespace() || b == 0x0b {
                pending_space = out.len() > start;
                continue;
            }
            if b.is_ascii_control() {
                continue;
            }
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            has_number |= b.is_ascii_digit();
            out.push(char::from(b.to_ascii_lowercase()));
        }
        if has_number {
            canonical_numbers(out, start);
        }
        return;
    }
    for c in s.nfkc() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() {
            pending_space = out.len() > start;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if c.is_ascii() {
            has_number |= c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    if has_number {
        canonical_numbers(out, start);
    }
}

/// The normal form of `s` as a new string.
pub(crate) fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    normalize_into(s, &mut out);
    out
}

/// Rewrites every number in `out[start..]` to its canonical form, in place.
fn canonical_numbers(out: &mut String, start: usize) {
    let bytes = out.as_bytes();
    let mut i = start;
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    while i < bytes.len() {
        let b = bytes[i];
        let prev_ok = i == start || {
            let p = bytes[i - 1];
            !(p.is_ascii_alphanumeric() || p == b'.' || p == b',' || p >= 0x80)
        };
        if b.is_ascii_digit() && prev_ok {
            let mut j = i;
            while j < bytes.len()
                && (bytes[j].is_ascii_digit() || bytes[j] == b'.' || bytes[j] == b',')
            {
                j += 1;
            }
            let mut end = j;
            while end > i && (bytes[end - 1] == b'.' || bytes[end - 1] == b',') {
                end -= 1;
            }
            // A number glued to letters (`3gs`, `v1.20a`) is an identifier, not a number.
            let next_ok =
                end == bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] >= 0x80);
            if next_ok
                && let Some(c) = canonical_number(&out[i..end])
                && c != out[i..end]
            {
                edits.push((i, end, c));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    for (a, b, c) in edits.into_iter().rev() {
        out.replace_range(a..b, &c);
    }
}

/// `Some(canonical)` if `s` is a plain number (`123`, `123.45`, `1,234,567.80`).
fn canonical_number(s: &str) -> Option<String> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if let Some(f) = frac
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let digits: String = if int.contains(',') {
        let mut groups = int.split(',');
        let first = groups.next()?;
        if first.is_empty() || first.len() > 3 || !first.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut d = first.to_owned();
        for g in groups {
            if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            d.push_str(g);
        }
        d
    } else {
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        int.to_owned()
    };
    let mut out = digits;
    if let Some(f) = frac {
        let f = f.trim_end_matches('0');
        if !f.is_empty() {
            out.push('.');
            out.push_str(f);
        }
    }
    Some(out)
}

/// The text of a JSON number in the canonical number form (`98.70` and `98.7` are `98.7`,
/// `1000.0` is `1000`).
pub(crate) fn number_text(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => canonical_number(&format!("{f}")).unwrap_or_else(|| format!("{f}")),
        None => n.to_string(),
    }
}

/// Calls `f(start, end)` for each token of normalised text: a maximal run of alphanumeric
/// characters, where a `.` between two digits stays inside (numbers are one token).
pub(crate) fn for_each_token(s: &str, mut f: impl FnMut(usize, usize)) {
    let mut start: Option<usize> = None;
    let mut iter = s.char_indices().peekable();
    let mut prev_digit = false;
    while let Some((i, c)) = iter.next() {
        let inner_dot = c == '.'
            && prev_digit
            && start.is_some()
            && iter.peek().is_some_and(|(_, n)| n.is_ascii_digit());
        if c.is_alphanumeric() || inner_dot {
            if start.is_none() {
                start = Some(i);
            }
        } else if let Some(st) = start.take() {
            f(st, i);
        }
        prev_digit = c.is_ascii_digit();
    }
    if let Some(st) = start {
        f(st, s.len());
    }
}

static PARTS: LazyLock<Regex> = LazyLock::new(|| {
    // Order matters (leftmost-first): an e-mail before a URL (its domain would match a bare
    // domain), a URL before a path (a URL has a path inside).
    Regex::new(concat!(
        r"(?P<email>(?:mailto:)?[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,})",
        r"|(?P<url>(?:https?://|www\.)[^\s<>\x22'`()\[\]{}|\\^]+",
        r"|\b[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|co|info|biz|app|dev|ai|me|us|eu|uk|de|ch|fr|it|es|nl|edu|gov|xyz|site|online|page|link|shop)\b(?:/[^\s<>\x22'`()\[\]{}|\\^]*)?)",
        r"|(?P<iban>\b[a-z]{2}[0-9]{2}(?:[a-z0-9]{10,30}|(?: [a-z0-9]{4}){2,7}(?: [a-z0-9]{1,3})?)\b)",
        r"|(?P<phone>\+[0-9][0-9 ().-]{5,18}[0-9])",
        r"|(?P<path>(?:~|\.{1,2})?/[a-z0-9._-]+(?:/[a-z0-9._-]+)+/?)",
    ))
    .expect("the structured-value pattern is valid")
});

/// Calls `f(kind, canonical)` for each structured value in normalised text.
pub(crate) fn for_each_part(s: &str, mut f: impl FnMut(PartKind, &str)) {
    if !s
        .bytes()
        .any(|b| matches!(b, b'@' | b'.' | b'/' | b'+') || b.is_ascii_digit())
    {
        return;
    }
    let mut buf = String::new();
    for caps in PARTS.captures_iter(s) {
        let (kind, m) = if let Some(m) = caps.name("email") {
            (PartKind::Email, m)
        } else if let Some(m) = caps.name("url") {
            (PartKind::Url, m)
        } else if let Some(m) = caps.name("iban") {
            (PartKind::Iban, m)
        } else if let Some(m) = caps.name("phone") {
            (PartKind::Phone, m)
        } else if let Some(m) = caps.name("path") {
            (PartKind::Path, m)
        } else {
            continue;
        };
        buf.clear();
        canonical_part(kind, m.as_str(), &mut buf);
        if !buf.is_empty() {
            f(kind, &buf);
        }
    }
}

/// The canonical form of one structured value (already normalised text).
pub(crate) fn canonical_part(kind: PartKind, s: &str, out: &mut String) {
    let trim = |s: &str| {
        s.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '\'', '"'])
            .to_owned()
    };
    match kind {
        PartKind::Email => out.push_str(&trim(s.strip_prefix("mailto:").unwrap_or(s))),
        PartKind::Url => {
            let mut u = s;
            for p in ["https://", "http://"] {
                if let Some(r) = u.strip_prefix(p) {
                    u = r;
                }
            }
            u = u.strip_prefix("www.").unwrap_or(u);
            let t = trim(u);
            out.push_str(t.trim_end_matches('/'));
        }
        PartKind::Iban => out.extend(s.chars().filter(|c| !c.is_whitespace())),
        PartKind::Phone => {
            out.push('+');
            out.extend(s.chars().filter(char::is_ascii_digit));
        }
        PartKind::Path => out.push_str(s.trim_end_matches('/')),
        PartKind::Identifier => out.push_str(s),
    }
}

/// Per-kind anchored forms of [`PARTS`], for whole values (a cheap byte test picks the few that
/// can apply, so a lookup runs at most one or two small anchored automata).
static WHOLE: LazyLock<[(PartKind, Regex); 5]> = LazyLock::new(|| {
    let r =
        |p: &str| Regex::new(&format!("^(?:{p})$")).expect("the whole-value patterns are valid");
    [
        (
            PartKind::Email,
            r(r"(?:mailto:)?[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}"),
        ),
        (
            PartKind::Url,
            r(
                r"(?:https?://|www\.)[^\s<>\x22'`()\[\]{}|\\^]+|[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|co|info|biz|app|dev|ai|me|us|eu|uk|de|ch|fr|it|es|nl|edu|gov|xyz|site|online|page|link|shop)(?:/[^\s<>\x22'`()\[\]{}|\\^]*)?",
            ),
        ),
        (
            PartKind::Iban,
            r(r"[a-z]{2}[0-9]{2}(?:[a-z0-9]{10,30}|(?: [a-z0-9]{4}){2,7}(?: [a-z0-9]{1,3})?)"),
        ),
        (PartKind::Phone, r(r"\+[0-9][0-9 ().-]{5,18}[0-9]")),
        (
            PartKind::Path,
            r(r"(?:~|\.{1,2})?/[a-z0-9._-]+(?:/[a-z0-9._-]+)+/?"),
        ),
    ]
});

/// If the whole normalised value is one structured value, its kind and canonical form.
pub(crate) fn whole_part(s: &str) -> Option<(PartKind, String)> {
    let b = s.as_bytes();
    if b.len() < 5 || b.len() > 2048 {
        return None;
    }
    let maybe = |k: PartKind| match k {
        PartKind::Email => b.contains(&b'@'),
        PartKind::Url => b.contains(&b'.') && !b.contains(&b' ') && !b.contains(&b'@'),
        PartKind::Iban => {
            b[0].is_ascii_lowercase()
                && b[1].is_ascii_lowercase()
                && b[2].is_ascii_digit()
                && b[3].is_ascii_digit()
        }
        PartKind::Phone => b[0] == b'+',
        PartKind::Path => b.contains(&b'/'),
        PartKind::Identifier => false,
    };
    if maybe(PartKind::Iban) && is_iban(b) {
        let mut out = String::new();
        canonical_part(PartKind::Iban, s, &mut out);
        return Some((PartKind::Iban, out));
    }
    let (kind, _) = WHOLE
        .iter()
        .find(|(k, re)| *k != PartKind::Iban && maybe(*k) && re.is_match(s))?;
    let mut out = String::new();
    canonical_part(*kind, s, &mut out);
    Some((*kind, out))
}

/// The IBAN shape of [`PARTS`] checked by hand for whole values (the most common checked
/// argument in payments; a regex costs several times more here): two letters, two digits, then
/// 10 to 30 letters or digits, or groups of four separated by single spaces.
fn is_iban(b: &[u8]) -> bool {
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let rest = &b[4..];
    if !rest.contains(&b' ') {
        return (10..=30).contains(&rest.len()) && rest.iter().all(alnum);
    }
    let Some(rest) = rest.strip_prefix(b" ") else {
        return false;
    };
    let groups: Vec<&[u8]> = rest.split(|c| *c == b' ').collect();
    let (last, full) = groups
        .split_last()
        .expect("split yields at least one group");
    let full_ok = full.iter().all(|g| g.len() == 4 && g.iter().all(alnum));
    if last.len() == 4 && last.iter().all(alnum) {
        full_ok && (2..=7).contains(&(full.len() + 1))
    } else {
        full_ok
            && (2..=7).contains(&full.len())
            && (1..=3).contains(&last.len())
            && last.iter().all(alnum)
    }
}

/// Whether a token is identifier-like (see [`PartKind::Identifier`]).
pub(crate) fn is_identifier(tok: &str) -> bool {
    tok.len() >= 4 && tok.bytes().any(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn case_width_and_invisible_characters_fold() {
        assert_eq!(normalize("  ＡＢＣ\u{200B}Def \t\n ghi "), "abcdef ghi");
        assert_eq!(normalize("ﬁle"), "file");
        assert_eq!(normalize("US13\u{200D}3000"), "us133000");
    }

    #[test]
    fn numbers_have_one_form() {
        assert_eq!(normalize("Total: 1,000.00 EUR"), "total: 1000 eur");
        assert_eq!(normalize("98.70."), "98.7.");
        assert_eq!(normalize("10.0.0.1 and 1,2,3"), "10.0.0.1 and 1,2,3");
        assert_eq!(normalize("iPhone 3GS"), "iphone 3gs");
        assert_eq!(normalize("007"), "007");
        let n: serde_json::Number = serde_json::from_str("98.70").unwrap();
        assert_eq!(number_text(&n), "98.7");
        let n: serde_json::Number = serde_json::from_str("1000.0").unwrap();
        assert_eq!(number_text(&n), "1000");
    }

    #[test]
    fn tokens_keep_decimal_numbers_whole() {
        let s = normalize("pay 98.70 to Bob, ref A-12.");
        let mut toks = vec![];
        for_each_token(&s, |a, b| toks.push(s[a..b].to_owned()));
        assert_eq!(toks, ["pay", "98.7", "to", "bob", "ref", "a", "12"]);
    }

    #[test]
    fn structured_values_are_found_and_canonical() {
        let s = normalize(
            "Mail Mark.Black@Example.com, see https://www.Secure-Site.com/Login/ or pay \
             GB29 NWBK 6016 1331 9268 19; call +41 (44) 123-4567; file ~/docs/plan.txt",
        );
        let mut parts = vec![];
        for_each_part(&s, |k, c| parts.push((k, c.to_owned())));
        assert_eq!(
            parts,
            [
                (PartKind::Email, "mark.black@example.com".to_owned()),
                (PartKind::Url, "secure-site.com/login".to_owned()),
                (PartKind::Iban, "gb29nwbk60161331926819".to_owned()),
                (PartKind::Phone, "+41441234567".to_owned()),
                (PartKind::Path, "~/docs/plan.txt".to_owned()),
            ]
        );
        assert_eq!(
            whole_part(&normalize("http://www.true-informations.com")),
            Some((PartKind::Url, "true-informations.com".to_owned()))
        );
        assert_eq!(whole_part(&normalize("hello world")), None);
    }

    #[test]
    fn hand_checked_iban_agrees_with_the_pattern() {
        for v in [
            "gb29nwbk60161331926819",
            "gb29 nwbk 6016 1331 9268 19",
            "de89 3704 0044 0532 0130 00",
            "gb29 nwbk",
            "gb29nwbk",
            "gb29 nwbk 6016 1331 9268 1999",
            "gb29  nwbk 6016 1331",
            "us133000000121212121212",
        ] {
            let by_regex = WHOLE[2].1.is_match(v);
            assert_eq!(is_iban(v.as_bytes()), by_regex, "{v}");
        }
    }

    proptest! {
        #[test]
        fn hand_checked_iban_agrees_with_the_pattern_on_any_input(v in "[a-z]{2}[0-9]{2}[a-z0-9 ]{0,36}") {
            prop_assert_eq!(is_iban(v.as_bytes()), WHOLE[2].1.is_match(&v));
        }

        #[test]
        fn normalisation_is_idempotent(s in "\\PC{0,64}") {
            let once = normalize(&s);
            prop_assert_eq!(normalize(&once), once.clone());
        }

        #[test]
        fn thousands_separators_never_change_a_number(n in 0u64..10_000_000_000, cents in 0u32..100) {
            let plain = format!("{n}.{cents:02}");
            let mut grouped = String::new();
            let digits = n.to_string();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 { grouped.push(','); }
                grouped.push(c);
            }
            grouped.push_str(&format!(".{cents:02}"));
            prop_assert_eq!(normalize(&plain), normalize(&grouped));
        }
    }
}
