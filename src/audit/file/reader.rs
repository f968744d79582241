//! Reading a log's segments line by line in bounded memory.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::MAX_LINE_BYTES;
use super::chain::{Chain, ChainCheck, PendingDrop, Span};
use super::checkpoint::CheckpointKey;
use super::record::{Hex64, parse_seq};
use super::verify::{Location, ProgressHook, ProgressTracker, VerifyError, VerifyReport};
use super::witness::WitnessedHead;

// ------------------------------------------------------------------------------------------------
// Reading the segments line by line
// ------------------------------------------------------------------------------------------------

pub(super) fn segment_name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

pub(super) fn segment_index(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, in order. Numbering must run without gaps; it starts at 1, or later
/// once retention has dropped the oldest segments.
pub(in crate::audit) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        if let Some(index) = name.to_str().and_then(segment_index) {
            segments.push((index, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|s| s.0);
    for pair in segments.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(VerifyError::MissingSegment {
                expected: dir.join(segment_name(pair[0].0 + 1)),
            });
        }
    }
    Ok(segments)
}

/// What to do with a damaged last line of the last segment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::audit) enum TailPolicy {
    /// Report it as an error (verify, query).
    Report,
    /// Hand an incomplete last line (no newline) to the caller as a possible torn write
    /// (recovery); the caller decides whether it is one (see [`is_torn_write`]).
    Repair,
}

pub(super) enum LineRead {
    Eof,
    Line {
        /// Bytes consumed, newline included.
        consumed: u64,
        /// Ended with a newline.
        complete: bool,
        /// Longer than [`MAX_LINE_BYTES`]; its content was skipped and `buf` is partial.
        too_long: bool,
    },
}

/// Reads one line into `buf` (cleared first), holding at most [`MAX_LINE_BYTES`] in memory.
pub(super) fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    buf.clear();
    let n = io::Read::take(&mut *r, MAX_LINE_BYTES as u64).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() == Some(&b'\n') {
        return Ok(LineRead::Line {
            consumed: n as u64,
            complete: true,
            too_long: false,
        });
    }
    if n < MAX_LINE_BYTES {
        return Ok(LineRead::Line {
            consumed: n as u64,
            complete: false,
            too_long: false,
        });
    }
    // Too long: skip to the end of the line without keeping it.
    let mut consumed = n as u64;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(LineRead::Line {
                consumed,
                complete: false,
                too_long: true,
            });
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            r.consume(i + 1);
            consumed += i as u64 + 1;
            return Ok(LineRead::Line {
                consumed,
                complete: true,
                too_long: true,
            });
        }
        let len = avail.len();
        r.consume(len);
        consumed += len as u64;
    }
}

/// One complete line of a segment, without its newline.
pub(in crate::audit) struct Line<'a> {
    pub(in crate::audit) content: &'a [u8],
    pub(in crate::audit) file: &'a Path,
    pub(in crate::audit) segment: u64,
    pub(in crate::audit) line: u64,
    pub(in crate::audit) offset: u64,
}

impl Line<'_> {
    pub(in crate::audit) fn location(&self, seq: Option<u64>) -> Location {
        Location {
            file: self.file.to_owned(),
            line: self.line,
            offset: self.offset,
            seq,
        }
    }
}

pub(super) struct OpenSegment {
    /// Position in [`LogReader::segments`].
    pub(super) pos: usize,
    pub(super) reader: BufReader<File>,
    pub(super) offset: u64,
    pub(super) line: u64,
}

/// Streams the lines of a log's segments in order, holding one line (at most
/// [`MAX_LINE_BYTES`]) in memory.
pub(in crate::audit) struct LogReader {
    pub(super) segments: Vec<(u64, PathBuf)>,
    pub(super) next: usize,
    pub(super) open: Option<OpenSegment>,
    pub(super) buf: Vec<u8>,
    pub(super) tail: TailPolicy,
    /// An incomplete last line found under [`TailPolicy::Repair`].
    pub(super) torn: Option<TornCandidate>,
}

/// An incomplete last line: a torn write if it is the beginning of the next record.
pub(super) struct TornCandidate {
    pub(super) at: Location,
    /// Its length in bytes (to the end of the file).
    pub(super) len: u64,
    pub(super) content: Vec<u8>,
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("segments", &self.segments.len())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    pub(in crate::audit) fn new(segments: Vec<(u64, PathBuf)>, tail: TailPolicy) -> Self {
        Self {
            segments,
            next: 0,
            open: None,
            buf: Vec::new(),
            tail,
            torn: None,
        }
    }

    pub(in crate::audit) fn segments(&self) -> &[(u64, PathBuf)] {
        &self.segments
    }

    /// The next line, `None` at the end of the last segment.
    pub(in crate::audit) fn next_line(&mut self) -> Result<Option<Line<'_>>, VerifyError> {
        loop {
            let Some(seg) = self.open.as_mut() else {
                let Some((_, path)) = self.segments.get(self.next) else {
                    return Ok(None);
                };
                let file = File::open(path).map_err(|source| VerifyError::Io {
                    path: path.clone(),
                    source,
                })?;
                self.open = Some(OpenSegment {
                    pos: self.next,
                    reader: BufReader::with_capacity(64 * 1024, file),
                    offset: 0,
                    line: 0,
                });
                self.next += 1;
                continue;
            };
            let (index, path) = &self.segments[seg.pos];
            let io_err = |source| VerifyError::Io {
                path: path.clone(),
                source,
            };
            let (consumed, complete, too_long) =
                match read_line(&mut seg.reader, &mut self.buf).map_err(io_err)? {
                    LineRead::Eof => {
                        self.open = None;
                        continue;
                    }
                    LineRead::Line {
                        consumed,
                        complete,
                        too_long,
                    } => (consumed, complete, too_long),
                };
            seg.line += 1;
            let offset = seg.offset;
            let at_eof = seg.reader.fill_buf().map_err(io_err)?.is_empty();
            let final_line = seg.pos + 1 == self.segments.len() && at_eof;
            let content = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let line = Line {
                content,
                file: path,
                segment: *index,
                line: seg.line,
                offset,
            };
            if final_line && self.tail == TailPolicy::Repair && !complete && !too_long {
                self.torn = Some(TornCandidate {
                    at: line.location(parse_seq(content).map(|s| s.0)),
                    len: consumed,
                    content: content.to_vec(),
                });
                self.open = None;
                self.next = self.segments.len();
                return Ok(None);
            }
            if !complete {
                return Err(VerifyError::Truncated {
                    at: line.location(parse_seq(content).map(|s| s.0)),
                });
            }
            if too_long {
                return Err(VerifyError::Malformed {
                    at: line.location(parse_seq(content).map(|s| s.0)),
                    reason: format!("line longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            seg.offset += consumed;
            return Ok(Some(line));
        }
    }
}

pub(super) struct Walk {
    pub(super) segments: Vec<(u64, PathBuf)>,
    pub(super) chain: Chain,
    pub(super) spans: Vec<Span>,
    pub(super) report: VerifyReport,
    pub(super) pending_drop: Option<PendingDrop>,
    /// A torn write to cut off the end of the last segment: file, offset, length.
    pub(super) torn: Option<(PathBuf, u64, u64)>,
}

/// Reads and checks the whole log. Under [`TailPolicy::Repair`] an incomplete last line that
/// [`is_torn_write`] is returned for cutting; any other incomplete or damaged line is an error.
/// `progress` is told after each record checked.
pub(super) fn walk(
    dir: &Path,
    policy: TailPolicy,
    keys: Vec<CheckpointKey>,
    witness: Option<WitnessedHead>,
    progress: Option<&ProgressHook>,
) -> Result<Walk, VerifyError> {
    let segments = list_segments(dir)?;
    let mut tracker = progress.map(|hook| ProgressTracker::new(hook.clone(), &segments));
    let mut reader = LogReader::new(segments, policy);
    let mut check = ChainCheck::new(keys).expecting(witness)?;
    while let Some(line) = reader.next_line()? {
        check.check(&line)?;
        if let Some(t) = &mut tracker {
            t.line(&line);
        }
    }
    let torn = match reader.torn.take() {
        None => None,
        Some(t) if is_torn_write(&t.content, check.chain.next_seq, &check.chain.prev) => {
            Some((t.at.file.clone(), t.at.offset, t.len))
        }
        Some(t) => {
            return Err(VerifyError::Malformed {
                at: t.at,
                reason: format!(
                    "the last line ({} bytes, no newline) is not the beginning of record {}: this \
                     is damage, not a torn write, and nothing was cut (inspect it; \
                     `FileSink::repair` / `tollgate audit repair` removes it with a declaration)",
                    t.len, check.chain.next_seq
                ),
            });
        }
    };
    let report = check.finish(&reader.segments)?;
    Ok(Walk {
        segments: reader.segments,
        pending_drop: check.pending_drop(),
        chain: check.chain,
        spans: check.spans,
        report,
        torn,
    })
}

/// Whether an incomplete last line is what a crash leaves of the record the writer was
/// appending: a strict beginning of `{"seq":<next>,"prev":"<prev>","hash":"<64 hex>","event":{`
/// followed by event bytes, all of them bytes the writer emits (no control characters: its JSON
/// has none, so a zeroed or garbled block is not mistaken for one). Anything else at the end of
/// the log is damage, which recovery must not cut silently.
pub(super) fn is_torn_write(content: &[u8], next_seq: u64, prev: &Hex64) -> bool {
    if content.is_empty() || content.iter().any(|&b| b < 0x20) {
        return false;
    }
    let mut head = format!("{{\"seq\":{next_seq},\"prev\":\"").into_bytes();
    head.extend_from_slice(prev);
    head.extend_from_slice(b"\",\"hash\":\"");
    let n = content.len().min(head.len());
    if content[..n] != head[..n] {
        return false;
    }
    let rest = &content[n..];
    let hex = rest.len().min(64);
    if !rest[..hex]
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return false;
    }
    let rest = &rest[hex..];
    let tail: &[u8] = b"\",\"event\":{";
    let n = rest.len().min(tail.len());
    rest[..n] == tail[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "audit-000001.jsonl");
        assert_eq!(segment_index("audit-000001.jsonl"), Some(1));
        assert_eq!(segment_index(&segment_name(1_234_567)), Some(1_234_567));
        assert_eq!(segment_index("audit-1.jsonl"), None);
        assert_eq!(segment_index("audit-000001.jsonl.tmp"), None);
        assert_eq!(segment_index("audit-00000x.jsonl"), None);
    }

    #[test]
    fn overlong_lines_are_skipped_in_bounded_memory() {
        let mut data = vec![b'x'; MAX_LINE_BYTES + 10];
        data.push(b'\n');
        data.extend_from_slice(b"next\n");
        let mut r = BufReader::new(&data[..]);
        let mut buf = Vec::new();
        match read_line(&mut r, &mut buf).unwrap() {
            LineRead::Line {
                consumed,
                complete,
                too_long,
            } => {
                assert_eq!(consumed, MAX_LINE_BYTES as u64 + 11);
                assert!(complete && too_long);
            }
            LineRead::Eof => panic!(),
        }
        assert!(buf.len() <= MAX_LINE_BYTES);
        assert!(matches!(
            read_line(&mut r, &mut buf).unwrap(),
            LineRead::Line { consumed: 5, .. }
        ));
        assert!(matches!(
            read_line(&mut r, &mut buf).unwrap(),
            LineRead::Eof
        ));
    }
}
