//! Finding the line and column of a field path in the document's text.
//!
//! Errors found after parsing (a cross-reference, a value that makes no sense) know the field's
//! path (`escalation.rules[0].tools[1]`), not where it sits in the file. This module walks the
//! document once more with spans (TOML through `toml`'s spanned parser, JSON through the crate's
//! own strict scanner) and turns the path into a 1-based line and column.
//!
//! Paths are dotted, with `[n]` for array elements. A key may itself contain dots
//! (`args."payment.amount"` in TOML), so at each table the longest run of segments that names a
//! key is taken.

use std::fmt;

use super::Format;

/// A position in the document text: 1-based line and column (the column counts characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text).
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

/// Splits `a.b[2].c` into segments. `.` alone (the root) gives none.
pub(crate) fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        if part.is_empty() {
            continue;
        }
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            match stripped[..end].parse() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => out.push(Segment::Key(&stripped[..end])),
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

/// Where `path` is defined in `text`: the deepest part of the path that exists (so an unknown
/// key still points at its table), or `None` if even the first segment is not found.
pub fn locate(text: &str, format: Format, path: &str) -> Option<Location> {
    let segs = segments(path);
    let offset = match format {
        #[cfg(feature = "toml")]
        Format::Toml => toml_offset(text, &segs),
        #[cfg(not(feature = "toml"))]
        Format::Toml => None,
        Format::Json => json_offset(text, &segs),
    }?;
    Some(Location::of_offset(text, offset))
}

/// Joins `segs[i..j]` with dots when they are all keys.
fn joined(segs: &[Segment<'_>]) -> Option<String> {
    let mut s = String::new();
    for (n, seg) in segs.iter().enumerate() {
        let Segment::Key(k) = seg else { return None };
        if n > 0 {
            s.push('.');
        }
        s.push_str(k);
    }
    Some(s)
}

#[cfg(feature = "toml")]
fn toml_offset(text: &str, segs: &[Segment<'_>]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};

    let root = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = root.get_ref();
    let mut array: Option<&toml::de::DeArray<'_>> = None;
    let mut best: Option<usize> = None;
    let mut i = 0;
    while i < segs.len() {
        let found: Option<(&toml::Spanned<DeValue<'_>>, usize, usize)> = match (&segs[i], array) {
            (Segment::Index(n), Some(arr)) => arr.get(*n).map(|v| (v, v.span().start, 1)),
            (Segment::Key(_), None) => {
                // Longest run of segments that names a key of this table.
                (1..=segs.len() - i).rev().find_map(|len| {
                    let key = joined(&segs[i..i + len])?;
                    table
                        .get_key_value(key.as_str())
                        .map(|(k, v)| (v, k.span().start, len))
                })
            }
            _ => None,
        };
        let Some((value, start, used)) = found else {
            break;
        };
        best = Some(start);
        i += used;
        match value.get_ref() {
            DeValue::Table(t) => {
                table = t;
                array = None;
            }
            DeValue::Array(a) => array = Some(a),
            _ => break,
        }
    }
    best
}

fn json_offset(text: &str, segs: &[Segment<'_>]) -> Option<usize> {
    use crate::call::json::{JsonKind, JsonLimits, RawJson, RawValue};

    let limits = JsonLimits {
        max_bytes: text.len().max(1),
        max_depth: crate::call::json::MAX_DEPTH_CAP,
    };
    let doc = RawJson::parse(text, limits).ok()?;
    let base = text.as_ptr() as usize;
    let offset_of = |s: &str| (s.as_ptr() as usize).saturating_sub(base);
    let mut value: RawValue<'_> = doc.root();
    let mut best = None;
    let mut i = 0;
    while i < segs.len() {
        let found = match (&segs[i], value.kind()) {
            (Segment::Index(n), JsonKind::Array) => value.items().nth(*n).map(|v| {
                let at = offset_of(v.text());
                (v, at, 1)
            }),
            (Segment::Key(_), JsonKind::Object) => (1..=segs.len() - i).rev().find_map(|len| {
                let key = joined(&segs[i..i + len])?;
                value
                    .entries()
                    .find(|(k, _)| k.eq_str(&key))
                    .map(|(k, v)| (v, offset_of(k.raw()).saturating_sub(1), len))
            }),
            _ => None,
        };
        let Some((v, at, used)) = found else { break };
        best = Some(at);
        value = v;
        i += used;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_keys_and_indices() {
        assert_eq!(
            segments("escalation.rules[0].tools[12]"),
            vec![
                Segment::Key("escalation"),
                Segment::Key("rules"),
                Segment::Index(0),
                Segment::Key("tools"),
                Segment::Index(12),
            ]
        );
        assert!(segments(".").is_empty());
    }

    #[cfg(feature = "toml")]
    #[test]
    fn toml_paths_find_their_line_including_dotted_keys_and_arrays() {
        let text = "tiers = [\"a\", \"b\"]\n\n[tools.pay]\neffect = \"write\"\nargs.\"payment.amount\" = { max = 5 }\n\n[[escalation.rules]]\nid = \"r0\"\ntools = [\"pay\", \"nope\"]\n";
        let at = |p: &str| locate(text, Format::Toml, p).map(|l| (l.line, l.column));
        assert_eq!(at("tiers[1]"), Some((1, 15)));
        assert_eq!(at("tools.pay.effect"), Some((4, 1)));
        assert_eq!(at("tools.pay.args.payment.amount.max"), Some((5, 27)));
        assert_eq!(at("escalation.rules[0].tools[1]"), Some((9, 17)));
        // An unknown key points at the deepest part that exists.
        assert_eq!(at("tools.pay.colour"), Some((3, 8)));
        assert_eq!(at("nothing.here"), None);
    }

    #[test]
    fn json_paths_find_their_line() {
        let text = "{\n  \"tools\": {\n    \"pay\": {\"args\": {\"payment.amount\": {\"max\": 5}}}\n  },\n  \"escalation\": {\"rules\": [{\"tools\": [\"pay\", \"nope\"]}]}\n}";
        let at = |p: &str| locate(text, Format::Json, p).map(|l| (l.line, l.column));
        assert_eq!(at("tools.pay"), Some((3, 5)));
        assert_eq!(at("tools.pay.args.payment.amount.max"), Some((3, 41)));
        assert_eq!(at("escalation.rules[0].tools[1]"), Some((5, 46)));
    }

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let text = "ab\nçd\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::of_offset(text, 5),
            Location { line: 2, column: 2 }
        );
        assert_eq!(
            Location::of_offset(text, 999),
            Location { line: 3, column: 1 }
        );
    }
}
