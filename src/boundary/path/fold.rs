//! One classification of the characters that some tool between the check and the file system (or
//! the service behind a resource string) may trim, normalise or fold into a space, a dot, a slash,
//! a backslash, `%`, `:`, `~`, or a character that ends a path segment (`?`, `#`, `;`).
//!
//! Shared by the "path under a root" rule ([`super::check_path`]) and by credential resource
//! patterns (`ResourcePattern::covers`), so both refuse the same disguises:
//!
//! * **White space**: every Unicode `White_Space` code point (what [`char::is_whitespace`]
//!   tests), plus the characters whose NFKC form contains white space (spacing diacritics such as
//!   `¨` U+00A8, which NFKC turns into a space and a combining mark). Tools trim these, so they
//!   are refused at the start and at the end of a path component or resource segment, exactly
//!   like an ASCII space at the end.
//! * **Look-alikes**: characters whose NFKC form contains `.` (or the ideographic full stop
//!   U+3002, which IDNA maps to `.`), `/`, `\`, `%`, `:` or `~`, such as the fullwidth `．`, the
//!   one- and two-dot leaders `․` `‥`, `︒` or the small full stop `﹒`; plus the characters
//!   Windows "best fit" code-page conversion turns into `\` or `/`, and the slash and backslash
//!   confusables without a decomposition. They are refused anywhere.
//! * **Segment ends**: characters whose NFKC form contains `?`, `#` or `;` (the fullwidth `？`,
//!   the small `﹖`, the Greek question mark `;` U+037E, ...). A URL parser ends the path at `?`
//!   and `#`, and servlet containers end a path segment at `;`, so a tool that normalises
//!   `..？x` and then parses it sees the segment `..`. Resource patterns refuse them anywhere;
//!   the path rule, which reads a POSIX path where `?` is an ordinary character, does not.
//!
//! The NFKC part of the table is not hand-picked: the test
//! `fold_table_matches_nfkc_of_every_code_point` normalises every Unicode scalar value with the
//! `unicode-normalization` crate and fails if the table misses a character or lists one NFKC does
//! not justify. Looking a character up never allocates.

/// What a character may turn into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    /// White space, or a character NFKC turns into something containing white space.
    Space,
    /// `.` (including the ideographic full stop that IDNA maps to `.`).
    Dot,
    /// `/`.
    Slash,
    /// `\`.
    Backslash,
    /// `%`.
    Percent,
    /// `:`.
    Colon,
    /// `~`.
    Tilde,
    /// `?`, `#` or `;`: what ends a URL path (query, fragment) or a servlet path segment
    /// (parameters).
    Delimiter,
}

impl Fold {
    /// A look-alike of `.`, `/`, `\`, `%`, `:` or `~`: refused anywhere, not only at an edge,
    /// by both the path rule and resource patterns. (Not [`Fold::Space`], refused at edges, nor
    /// [`Fold::Delimiter`], which only resource patterns refuse.)
    pub(crate) fn is_lookalike(self) -> bool {
        !matches!(self, Fold::Space | Fold::Delimiter)
    }
}

use Fold::{Backslash, Colon, Delimiter, Dot, Percent, Slash, Space, Tilde};

/// Every non-ASCII scalar value whose NFKC form contains `.`, U+3002, `/`, `\`, `%`, `:`, `~`,
/// `?`, `#`, `;` or white space, as sorted, disjoint, inclusive ranges. When a form contains
/// several, the first in that order names the class. Generated from NFKC (Unicode 16) and
/// checked against it by the test named in the module documentation.
const NFKC: &[(char, char, Fold)] = &[
    ('\u{0085}', '\u{0085}', Space),     // NEXT LINE (White_Space)
    ('\u{00A0}', '\u{00A0}', Space),     // NO-BREAK SPACE
    ('\u{00A8}', '\u{00A8}', Space),     // DIAERESIS: space + U+0308
    ('\u{00AF}', '\u{00AF}', Space),     // MACRON: space + U+0304
    ('\u{00B4}', '\u{00B4}', Space),     // ACUTE ACCENT: space + U+0301
    ('\u{00B8}', '\u{00B8}', Space),     // CEDILLA: space + U+0327
    ('\u{02D8}', '\u{02DD}', Space),     // BREVE .. DOUBLE ACUTE ACCENT
    ('\u{037A}', '\u{037A}', Space),     // GREEK YPOGEGRAMMENI
    ('\u{037E}', '\u{037E}', Delimiter), // GREEK QUESTION MARK: `;`
    ('\u{0384}', '\u{0385}', Space),     // GREEK TONOS, DIALYTIKA TONOS
    ('\u{1680}', '\u{1680}', Space),     // OGHAM SPACE MARK
    ('\u{1FBD}', '\u{1FBD}', Space),     // GREEK KORONIS
    ('\u{1FBF}', '\u{1FC1}', Space),     // GREEK PSILI .. DIALYTIKA AND PERISPOMENI
    ('\u{1FCD}', '\u{1FCF}', Space),     // GREEK PSILI AND VARIA ..
    ('\u{1FDD}', '\u{1FDF}', Space),     // GREEK DASIA AND VARIA ..
    ('\u{1FED}', '\u{1FEE}', Space),     // GREEK DIALYTIKA AND VARIA, .. AND OXIA
    ('\u{1FFD}', '\u{1FFE}', Space),     // GREEK OXIA, DASIA
    ('\u{2000}', '\u{200A}', Space),     // EN QUAD .. HAIR SPACE
    ('\u{2017}', '\u{2017}', Space),     // DOUBLE LOW LINE: space + U+0333
    ('\u{2024}', '\u{2026}', Dot),       // ONE DOT LEADER, TWO DOT LEADER, HORIZONTAL ELLIPSIS
    ('\u{2028}', '\u{2029}', Space),     // LINE SEPARATOR, PARAGRAPH SEPARATOR
    ('\u{202F}', '\u{202F}', Space),     // NARROW NO-BREAK SPACE
    ('\u{203E}', '\u{203E}', Space),     // OVERLINE: space + U+0305
    ('\u{2047}', '\u{2049}', Delimiter), // DOUBLE QUESTION MARK, `?!`, `!?`
    ('\u{205F}', '\u{205F}', Space),     // MEDIUM MATHEMATICAL SPACE
    ('\u{2100}', '\u{2101}', Slash),     // ACCOUNT OF, ADDRESSED TO THE SUBJECT: `a/c`, `a/s`
    ('\u{2105}', '\u{2106}', Slash),     // CARE OF, CADA UNA: `c/o`, `c/u`
    ('\u{2488}', '\u{249B}', Dot),       // DIGIT ONE FULL STOP .. NUMBER TWENTY FULL STOP: `1.`
    ('\u{2A74}', '\u{2A74}', Colon),     // DOUBLE COLON EQUAL: `::=`
    ('\u{3000}', '\u{3000}', Space),     // IDEOGRAPHIC SPACE
    ('\u{3002}', '\u{3002}', Dot),       // IDEOGRAPHIC FULL STOP (IDNA maps it to `.`)
    ('\u{309B}', '\u{309C}', Space),     // KATAKANA-HIRAGANA (SEMI-)VOICED SOUND MARK
    ('\u{33C2}', '\u{33C2}', Dot),       // SQUARE AM: `a.m.`
    ('\u{33C7}', '\u{33C7}', Dot),       // SQUARE CO: `Co.`
    ('\u{33D8}', '\u{33D8}', Dot),       // SQUARE PM: `p.m.`
    ('\u{FC5E}', '\u{FC63}', Space),     // ARABIC LIGATURE SHADDA WITH DAMMATAN ISOLATED FORM ..
    ('\u{FDFA}', '\u{FDFB}', Space),     // ARABIC LIGATURE SALLALLAHOU .., JALLAJALALOUHOU
    ('\u{FE12}', '\u{FE12}', Dot),       // PRESENTATION FORM FOR VERTICAL IDEOGRAPHIC FULL STOP
    ('\u{FE13}', '\u{FE13}', Colon),     // PRESENTATION FORM FOR VERTICAL COLON
    ('\u{FE14}', '\u{FE14}', Delimiter), // PRESENTATION FORM FOR VERTICAL SEMICOLON
    ('\u{FE16}', '\u{FE16}', Delimiter), // PRESENTATION FORM FOR VERTICAL QUESTION MARK
    ('\u{FE19}', '\u{FE19}', Dot),       // PRESENTATION FORM FOR VERTICAL HORIZONTAL ELLIPSIS
    ('\u{FE30}', '\u{FE30}', Dot),       // PRESENTATION FORM FOR VERTICAL TWO DOT LEADER
    ('\u{FE49}', '\u{FE4C}', Space),     // DASHED OVERLINE .. DOUBLE WAVY OVERLINE
    ('\u{FE52}', '\u{FE52}', Dot),       // SMALL FULL STOP
    ('\u{FE54}', '\u{FE54}', Delimiter), // SMALL SEMICOLON
    ('\u{FE55}', '\u{FE55}', Colon),     // SMALL COLON
    ('\u{FE56}', '\u{FE56}', Delimiter), // SMALL QUESTION MARK
    ('\u{FE5F}', '\u{FE5F}', Delimiter), // SMALL NUMBER SIGN
    ('\u{FE68}', '\u{FE68}', Backslash), // SMALL REVERSE SOLIDUS
    ('\u{FE6A}', '\u{FE6A}', Percent),   // SMALL PERCENT SIGN
    ('\u{FE70}', '\u{FE70}', Space),     // ARABIC FATHATAN ISOLATED FORM
    ('\u{FE72}', '\u{FE72}', Space),     // ARABIC DAMMATAN ISOLATED FORM
    ('\u{FE74}', '\u{FE74}', Space),     // ARABIC KASRATAN ISOLATED FORM
    ('\u{FE76}', '\u{FE76}', Space),     // ARABIC FATHA ISOLATED FORM
    ('\u{FE78}', '\u{FE78}', Space),     // ARABIC DAMMA ISOLATED FORM
    ('\u{FE7A}', '\u{FE7A}', Space),     // ARABIC KASRA ISOLATED FORM
    ('\u{FE7C}', '\u{FE7C}', Space),     // ARABIC SHADDA ISOLATED FORM
    ('\u{FE7E}', '\u{FE7E}', Space),     // ARABIC SUKUN ISOLATED FORM
    ('\u{FF03}', '\u{FF03}', Delimiter), // FULLWIDTH NUMBER SIGN
    ('\u{FF05}', '\u{FF05}', Percent),   // FULLWIDTH PERCENT SIGN
    ('\u{FF0E}', '\u{FF0E}', Dot),       // FULLWIDTH FULL STOP
    ('\u{FF0F}', '\u{FF0F}', Slash),     // FULLWIDTH SOLIDUS
    ('\u{FF1A}', '\u{FF1A}', Colon),     // FULLWIDTH COLON
    ('\u{FF1B}', '\u{FF1B}', Delimiter), // FULLWIDTH SEMICOLON
    ('\u{FF1F}', '\u{FF1F}', Delimiter), // FULLWIDTH QUESTION MARK
    ('\u{FF3C}', '\u{FF3C}', Backslash), // FULLWIDTH REVERSE SOLIDUS
    ('\u{FF5E}', '\u{FF5E}', Tilde),     // FULLWIDTH TILDE
    ('\u{FF61}', '\u{FF61}', Dot),       // HALFWIDTH IDEOGRAPHIC FULL STOP
    ('\u{FFE3}', '\u{FFE3}', Space),     // FULLWIDTH MACRON: space + U+0304
    ('\u{1F100}', '\u{1F100}', Dot),     // DIGIT ZERO FULL STOP: `0.`
];

/// Characters without an NFKC decomposition that other conversions turn into `/` or `\`, or
/// that render as one: Windows "best fit" code pages (932 maps `¥` to `\`, 949 maps `₩` to `\`)
/// and the slash confusables. Sorted, disjoint, inclusive ranges.
const BEST_FIT: &[(char, char, Fold)] = &[
    ('\u{00A5}', '\u{00A5}', Backslash), // YEN SIGN
    ('\u{2044}', '\u{2044}', Slash),     // FRACTION SLASH
    ('\u{20A9}', '\u{20A9}', Backslash), // WON SIGN
    ('\u{2215}', '\u{2215}', Slash),     // DIVISION SLASH
    ('\u{2216}', '\u{2216}', Backslash), // SET MINUS
    ('\u{29F8}', '\u{29F8}', Slash),     // BIG SOLIDUS
    ('\u{29F9}', '\u{29F9}', Backslash), // BIG REVERSE SOLIDUS
];

fn lookup(c: char, table: &[(char, char, Fold)]) -> Option<Fold> {
    let i = table.partition_point(|&(_, hi, _)| hi < c);
    table
        .get(i)
        .filter(|&&(lo, _, _)| lo <= c)
        .map(|&(_, _, f)| f)
}

/// What `c` may turn into, if anything other than itself. ASCII characters fold to nothing but
/// white space (the space, tab and the other ASCII white space are [`Fold::Space`]).
pub(crate) fn fold(c: char) -> Option<Fold> {
    if c.is_whitespace() {
        return Some(Space);
    }
    if c.is_ascii() {
        return None;
    }
    lookup(c, NFKC).or_else(|| lookup(c, BEST_FIT))
}

/// Unicode default-ignorable code points (zero-width, joiners, bidi controls, variation
/// selectors, tags). Some software strips them, so edge and dot checks look through them:
/// `..\u{200B}` counts as `..`. Inclusive ranges.
const IGNORABLES: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFF8}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

/// Whether `c` is default-ignorable (see [`IGNORABLES`]).
pub(crate) fn is_ignorable(c: char) -> bool {
    !c.is_ascii() && IGNORABLES.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// The characters of `s` that are not default-ignorable.
pub(crate) fn visible(s: &str) -> impl DoubleEndedIterator<Item = char> + Clone + '_ {
    s.chars().filter(|&c| !is_ignorable(c))
}

/// What is wrong with one component or segment, judged by the shared classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeFault {
    /// A character that folds into `.`, `/`, `\`, `%`, `:` or `~` (anywhere).
    LookAlike,
    /// Nothing but invisible characters.
    Invisible,
    /// Only dots (ignoring invisible characters).
    DotsOnly,
    /// Starts with white space or a character that folds into it.
    LeadingSpace,
    /// Ends with white space or a character that folds into it.
    TrailingSpace,
}

/// The checks every component or segment shares: no look-alike anywhere, something visible,
/// not only dots, no white space (of any kind) at either edge. Invisible characters are looked
/// through, so stripping them later cannot create `..` or an edge space.
pub(crate) fn edge_fault(s: &str) -> Option<EdgeFault> {
    if s.is_ascii() {
        // The common case, without the Unicode tables: nothing ASCII is a look-alike or
        // invisible, and only ASCII white space folds to space.
        let b = s.as_bytes();
        return match (b.first(), b.last()) {
            (None, _) | (_, None) => Some(EdgeFault::Invisible),
            _ if b.iter().all(|&c| c == b'.') => Some(EdgeFault::DotsOnly),
            (Some(f), _) if f.is_ascii_whitespace() || *f == 0x0B => Some(EdgeFault::LeadingSpace),
            (_, Some(l)) if l.is_ascii_whitespace() || *l == 0x0B => Some(EdgeFault::TrailingSpace),
            _ => None,
        };
    }
    if s.chars().any(|c| fold(c).is_some_and(Fold::is_lookalike)) {
        return Some(EdgeFault::LookAlike);
    }
    let mut v = visible(s);
    let Some(first) = v.next() else {
        return Some(EdgeFault::Invisible);
    };
    if visible(s).all(|c| c == '.') {
        return Some(EdgeFault::DotsOnly);
    }
    let last = v.next_back().unwrap_or(first);
    if fold(first) == Some(Space) {
        return Some(EdgeFault::LeadingSpace);
    }
    if fold(last) == Some(Space) {
        return Some(EdgeFault::TrailingSpace);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::UnicodeNormalization;

    /// The class NFKC alone gives `c` (the generator of the [`NFKC`] table).
    fn nfkc_class(c: char) -> Option<Fold> {
        let n: String = c.to_string().nfkc().collect();
        let classes = [
            (Dot, &['.', '\u{3002}'][..]),
            (Slash, &['/'][..]),
            (Backslash, &['\\'][..]),
            (Percent, &['%'][..]),
            (Colon, &[':'][..]),
            (Tilde, &['~'][..]),
            (Delimiter, &['?', '#', ';'][..]),
        ];
        for (class, chars) in classes {
            if n.contains(chars) {
                return Some(class);
            }
        }
        (c.is_whitespace() || n.chars().any(char::is_whitespace)).then_some(Space)
    }

    #[test]
    fn fold_table_matches_nfkc_of_every_code_point() {
        let mut checked = 0;
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            if c.is_ascii() {
                continue;
            }
            let expected = nfkc_class(c);
            assert_eq!(lookup(c, NFKC), expected, "U+{:04X}", c as u32);
            if let Some(e) = expected {
                assert_eq!(fold(c), Some(e), "U+{:04X}", c as u32);
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} characters fold");
    }

    #[test]
    fn best_fit_entries_have_no_nfkc_folding_and_tables_are_sorted() {
        for &(lo, hi, _) in BEST_FIT {
            for c in lo..=hi {
                assert_eq!(nfkc_class(c), None, "U+{:04X} belongs in NFKC", c as u32);
            }
        }
        for table in [NFKC, BEST_FIT] {
            for w in table.windows(2) {
                assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:?}");
            }
        }
    }

    #[test]
    fn every_white_space_code_point_folds_to_space() {
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            if c.is_whitespace() {
                assert_eq!(fold(c), Some(Space), "U+{:04X}", c as u32);
            }
        }
        assert_eq!(fold(' '), Some(Space));
        assert_eq!(fold('a'), None);
        assert_eq!(fold('.'), None, "a real dot is not a look-alike");
    }

    /// The general path of [`edge_fault`], without the ASCII shortcut.
    fn edge_fault_slow(s: &str) -> Option<EdgeFault> {
        if s.chars().any(|c| fold(c).is_some_and(Fold::is_lookalike)) {
            return Some(EdgeFault::LookAlike);
        }
        let v: Vec<char> = visible(s).collect();
        match (v.first(), v.last()) {
            (None, _) | (_, None) => Some(EdgeFault::Invisible),
            _ if v.iter().all(|&c| c == '.') => Some(EdgeFault::DotsOnly),
            (Some(&f), _) if fold(f) == Some(Space) => Some(EdgeFault::LeadingSpace),
            (_, Some(&l)) if fold(l) == Some(Space) => Some(EdgeFault::TrailingSpace),
            _ => None,
        }
    }

    proptest::proptest! {
        #[test]
        fn ascii_shortcut_agrees_with_the_general_path(s in "[ -~\t\n\x0b\x0c\r]{0,12}") {
            proptest::prop_assert_eq!(edge_fault(&s), edge_fault_slow(&s), "{:?}", s);
        }
    }

    #[test]
    fn edge_faults_see_through_invisible_characters() {
        assert_eq!(edge_fault("..\u{200B}"), Some(EdgeFault::DotsOnly));
        assert_eq!(edge_fault("..\u{A0}"), Some(EdgeFault::TrailingSpace));
        assert_eq!(edge_fault("\u{2003}.."), Some(EdgeFault::LeadingSpace));
        assert_eq!(edge_fault("x \u{200C}"), Some(EdgeFault::TrailingSpace));
        assert_eq!(edge_fault("\u{FF0E}\u{FF0E}"), Some(EdgeFault::LookAlike));
        assert_eq!(edge_fault("\u{200B}"), Some(EdgeFault::Invisible));
        assert_eq!(edge_fault("a b.txt"), None);
        assert_eq!(edge_fault("Müller.pdf"), None);
    }
}
