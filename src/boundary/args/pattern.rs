//! Whole-string patterns of argument rules (`pattern = "INV-[0-9]{6}"`): a fixed-shape test
//! for patterns that are a fixed sequence of byte sets, a dense DFA otherwise, the `regex`
//! crate's engine where neither applies.

use regex::{Regex, RegexBuilder};
use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Largest compiled regex program, in bytes (guards against pathological patterns).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest string a [`Shape`] describes; longer fixed patterns use the DFA.
const MAX_SHAPE_LEN: usize = 64;

/// A pattern that matches exactly the strings of one length whose `i`-th byte is in the `i`-th
/// set: literals, ASCII classes and classes repeated an exact number of times, concatenated
/// (identifiers such as `INV-[0-9]{6}`, `[A-Z]{2}[0-9]{2}`, dates `[0-9]{4}-[0-9]{2}-[0-9]{2}`).
/// Testing a string is one comparison of lengths and one independent bit test per byte, where
/// the DFA's walk is a chain of dependent table loads. Written here because no crate offers it:
/// `regex` and `regex-automata` match literals this way only for whole literal strings.
#[derive(Debug)]
struct Shape {
    /// One 256-bit set per position.
    sets: Box<[[u64; 4]]>,
}

impl Shape {
    /// The shape of `hir` (parsed from the user's pattern, unanchored), if it has one.
    fn of(hir: &Hir) -> Option<Self> {
        let mut sets = Vec::new();
        push(hir, &mut sets)?;
        (!sets.is_empty()).then(|| Self {
            sets: sets.into_boxed_slice(),
        })
    }

    fn is_match(&self, s: &str) -> bool {
        s.len() == self.sets.len()
            && s.bytes()
                .zip(self.sets.iter())
                .all(|(b, set)| set[usize::from(b >> 6)] >> (b & 63) & 1 == 1)
    }
}

/// Appends the sets `hir` stands for; `None` when it is not a fixed sequence of byte sets
/// (alternation, unbounded or ranged repetition, anchors and other look-arounds, classes with
/// characters beyond ASCII, or longer than [`MAX_SHAPE_LEN`]).
fn push(hir: &Hir, sets: &mut Vec<[u64; 4]>) -> Option<()> {
    match hir.kind() {
        HirKind::Literal(lit) => {
            for &b in lit.0.iter() {
                let mut set = [0u64; 4];
                set[usize::from(b >> 6)] |= 1 << (b & 63);
                sets.push(set);
            }
        }
        HirKind::Class(class) => sets.push(ascii_set(class)?),
        HirKind::Repetition(rep) if Some(rep.min) == rep.max => {
            let mut one = Vec::new();
            push(&rep.sub, &mut one)?;
            for _ in 0..rep.min {
                if sets.len() + one.len() > MAX_SHAPE_LEN {
                    return None;
                }
                sets.extend_from_slice(&one);
            }
        }
        HirKind::Capture(cap) => push(&cap.sub, sets)?,
        HirKind::Concat(parts) => {
            for part in parts {
                push(part, sets)?;
            }
        }
        HirKind::Empty => {}
        _ => return None,
    }
    (sets.len() <= MAX_SHAPE_LEN).then_some(())
}

/// A class whose members are all ASCII, as a byte set (an ASCII byte is its character).
fn ascii_set(class: &Class) -> Option<[u64; 4]> {
    let mut set = [0u64; 4];
    let mut add = |lo: u32, hi: u32| -> Option<()> {
        if hi > 0x7f {
            return None;
        }
        for b in lo..=hi {
            set[(b >> 6) as usize] |= 1 << (b & 63);
        }
        Some(())
    };
    match class {
        Class::Unicode(c) => {
            for r in c.ranges() {
                add(u32::from(r.start()), u32::from(r.end()))?;
            }
        }
        Class::Bytes(c) => {
            for r in c.ranges() {
                add(u32::from(r.start()), u32::from(r.end()))?;
            }
        }
    }
    Some(set)
}

/// An anchored (whole-string) pattern. Compiled to a dense DFA when that stays under
/// [`REGEX_SIZE_LIMIT`] (a match is then one table walk over the string, no cache, no lock);
/// otherwise, or for constructs a DFA cannot run (Unicode word boundaries), the `regex` crate's
/// engine is used. Both implement the same syntax; the `regex` build also validates the pattern
/// and gives the error message.
#[derive(Debug)]
pub(crate) struct Matcher {
    /// The pattern's fixed shape, when it has one (tested first; then the DFA is not built).
    shape: Option<Shape>,
    /// The DFA and its anchored start state for "start of text" (computed once).
    dfa: Option<(dense::DFA<Vec<u32>>, StateID)>,
    re: Regex,
}

impl Matcher {
    pub(crate) fn compile(pattern: &str) -> Result<Self, regex::Error> {
        // Parse the pattern on its own first: text such as `a)|(.*` would otherwise close the
        // anchoring group early and turn the wrapped pattern into "anything".
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?;
        let anchored = format!("^(?:{pattern})$");
        let re = RegexBuilder::new(&anchored)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?;
        // Parsed as `regex` parses it (its defaults: Unicode on, no other flag); the regex
        // build above has already accepted it, so a parse error here only means "no shape".
        let shape = regex_syntax::Parser::new()
            .parse(pattern)
            .ok()
            .and_then(|hir| Shape::of(&hir));
        if shape.is_some() {
            return Ok(Self {
                shape,
                dfa: None,
                re,
            });
        }
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    // All-matches semantics: no thread is ever pruned for priority, so the final
                    // state says exactly whether any path matches the whole string.
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(REGEX_SIZE_LIMIT))
                    .determinize_size_limit(Some(REGEX_SIZE_LIMIT)),
            )
            .build(&anchored)
            .ok()
            .and_then(|dfa| {
                let start = dfa
                    .start_state(&start::Config::new().anchored(Anchored::Yes))
                    .ok()?;
                Some((dfa, start))
            });
        Ok(Self {
            shape: None,
            dfa,
            re,
        })
    }

    /// Whole-string match: the shape's test when the pattern has one. The DFA walk is one table lookup per byte; a dead state ends it early;
    /// a quit state (a construct the DFA cannot decide) hands over to the `regex` engine.
    pub(crate) fn is_match(&self, s: &str) -> bool {
        if let Some(shape) = &self.shape {
            return shape.is_match(s);
        }
        if let Some((dfa, start)) = &self.dfa {
            let mut state = *start;
            for &b in s.as_bytes() {
                state = dfa.next_state(state, b);
                if dfa.is_special_state(state) {
                    if dfa.is_dead_state(state) {
                        return false;
                    }
                    if dfa.is_quit_state(state) {
                        return self.re.is_match(s);
                    }
                }
            }
            state = dfa.next_eoi_state(state);
            if dfa.is_quit_state(state) {
                return self.re.is_match(s);
            }
            return dfa.is_match_state(state);
        }
        self.re.is_match(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Patterns and whether they have a shape (those without one must fall back).
    const PATTERNS: &[(&str, bool)] = &[
        ("INV-[0-9]{6}", true),
        ("[A-Z]{2}[0-9]{2}", true),
        ("[0-9]{4}-[0-9]{2}-[0-9]{2}", true),
        ("abc", true),
        ("(?i)ab[c-e]", true),
        ("a(b)c{3}", true),
        ("[[:alpha:]]{2}", true),
        // A literal beyond ASCII is its UTF-8 bytes, each exact.
        ("é{2}", true),
        // Unicode `\d`, `.`, `\w`, a negated class and `(?i)k` (the Kelvin sign) reach beyond
        // ASCII.
        (r"\d{3}x", false),
        (".", false),
        (r"\w{2}", false),
        ("[^a]", false),
        ("(?i)k", false),
        ("a+", false),
        ("a{2,3}", false),
        // The parser turns an alternation of single characters into a class.
        ("a|b", true),
        ("ab|c", false),
        ("^abc$", false),
        (r"\bab", false),
        ("a{65}", false),
        ("", false),
    ];

    #[test]
    fn which_patterns_have_a_shape() {
        for &(p, shaped) in PATTERNS {
            let m = Matcher::compile(p).unwrap();
            assert_eq!(m.shape.is_some(), shaped, "{p}");
        }
    }

    #[test]
    fn examples() {
        let m = Matcher::compile("INV-[0-9]{6}").unwrap();
        assert!(m.shape.is_some());
        assert!(m.is_match("INV-004711"));
        for no in [
            "INV-00471",
            "INV-0047111",
            "inv-004711",
            "INV-00471a",
            "xINV-004711",
            "",
        ] {
            assert!(!m.is_match(no), "{no}");
        }
        let m = Matcher::compile("(?i)ab[c-e]").unwrap();
        assert!(m.is_match("AbD") && m.is_match("abe") && !m.is_match("abf"));
    }

    proptest! {
        /// The shape, the DFA and the `regex` engine agree on every string, for every pattern.
        #[test]
        fn shape_agrees_with_regex(
            s in "[ -~]{0,12}|[0-9A-Za-z-]{0,12}|[éKkK]{0,4}|\\PC{0,6}",
            i in 0usize..100,
        ) {
            let (p, _) = PATTERNS[i % PATTERNS.len()];
            let m = Matcher::compile(p).unwrap();
            let re = Regex::new(&format!("^(?:{p})$")).unwrap();
            prop_assert_eq!(m.is_match(&s), re.is_match(&s), "pattern {} on {:?}", p, s);
        }

        /// Strings built from the shape's own alphabet (so matches are common, not rare).
        #[test]
        fn shape_agrees_on_near_matches(s in "(INV|inv|IN)-[0-9a]{5,7}") {
            let m = Matcher::compile("INV-[0-9]{6}").unwrap();
            let re = Regex::new("^(?:INV-[0-9]{6})$").unwrap();
            prop_assert_eq!(m.is_match(&s), re.is_match(&s), "{:?}", s);
        }
    }
}

#[cfg(test)]
mod engine_tests {
    use super::Matcher;

    #[test]
    fn dfa_and_regex_engines_agree_on_anchored_matches() {
        let patterns = [
            "M-[0-9]{4}",
            "a|b",
            r"[^@\s]+@client\.example",
            r"\d+",
            r"(?i)inv-[a-z]{2}",
            r"\bword\b",
            ".*",
            "",
            "é+",
            "a|ab",
            "(a|ab)(c|bcd)",
            "(?:x*)*y?",
            "[a-z]{2,4}|[0-9]{3}",
        ];
        let inputs = [
            "",
            "M-1001",
            "M-1001\n",
            "xM-1001",
            "a",
            "b",
            "ab",
            "a-b",
            "x@client.example",
            "x@client.example.evil",
            "١٢٣",
            "123",
            "INV-ab",
            "word",
            "a word",
            "ééé",
            "e",
        ];
        for p in patterns {
            let m = Matcher::compile(p).unwrap();
            for i in inputs {
                assert_eq!(m.is_match(i), m.re.is_match(i), "pattern {p:?} input {i:?}");
            }
        }
        assert!(Matcher::compile("M-[0-9]{2,4}").unwrap().dfa.is_some());
    }

    proptest::proptest! {
        #[test]
        fn dfa_walk_agrees_with_the_regex_engine(input in "[a-cM0-9\\-é ]{0,12}", which in 0usize..6) {
            let patterns = ["M-[0-9]{2,4}", "a|ab", "(a|ab)(c|bcd)", "[a-c]*b[a-c]*", "(?i)m-\\d+", "é?[0-9]+ ?"];
            let m = Matcher::compile(patterns[which]).unwrap();
            proptest::prop_assert!(m.dfa.is_some());
            proptest::prop_assert_eq!(m.is_match(&input), m.re.is_match(&input));
        }
    }

    #[test]
    fn patterns_are_anchored() {
        let m = Matcher::compile("a|b").unwrap();
        assert!(m.is_match("a") && m.is_match("b"));
        assert!(!m.is_match("ab") && !m.is_match("xa") && !m.is_match("bx"));
    }
}
