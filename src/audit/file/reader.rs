//! Reading a log's segments line by line in bounded memory.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::MAX_LINE_BYTES;
use super::chain::{Chain, ChainCheck, PendingDrop, Span};
use super::checkpoint::CheckpointKey;
use super::record::{Hex64, chain_hash, parse_seq};
use super::verify::{Location, ProgressHook, ProgressTracker, VerifyError, VerifyReport};
use super::vouch;
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
        if let Some((name, index)) = name.to_str().and_then(|n| Some((n, segment_index(n)?))) {
            // `audit-0000001.jsonl` and `audit-000001.jsonl` would both be segment 1: only the
            // writer's own spelling is a segment, and the last number is never one.
            let canonical = segment_name(index);
            if name != canonical || index == u64::MAX {
                return Err(VerifyError::SegmentName {
                    path: entry.path(),
                    expected: canonical,
                });
            }
            segments.push((index, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|s| s.0);
    for pair in segments.windows(2) {
        // No overflow: u64::MAX was refused above.
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

/// Lines and about as many bytes read ahead of the chain's checks, per vouching thread (at
/// least two): large enough that starting the threads for a batch (tens of µs each) is a small
/// part of vouching for it (~1 ms per thread), small enough to stay in memory twice.
const BATCH_LINES_PER_THREAD: usize = 2048;
const BATCH_BYTES_PER_THREAD: usize = 2 << 20;

/// The lines and bytes of one batch for `threads` vouching threads.
fn batch_size(threads: usize) -> (usize, usize) {
    let t = threads.max(2);
    (BATCH_LINES_PER_THREAD * t, BATCH_BYTES_PER_THREAD * t)
}

/// The file of segment `index` among `segments` (sorted by number, as listed).
fn segment_path(segments: &[(u64, PathBuf)], index: u64) -> &Path {
    let at = segments.partition_point(|s| s.0 < index);
    &segments[at].1
}

/// One line of a [`Batch`], without its content.
struct Held {
    /// Its segment's number (the reader's segments give its file).
    segment: u64,
    line: u64,
    offset: u64,
}

/// Lines read ahead, copied out of the reader's buffer: their bytes, where each one is, and
/// whether each vouched for itself.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    held: Vec<Held>,
    vouched: Vec<std::sync::atomic::AtomicBool>,
}

impl Batch {
    /// Reads the next batch of lines; `Ok(true)` when the log has no more, `Err` when reading
    /// failed after the lines read into the batch.
    fn fill(
        &mut self,
        reader: &mut LogReader,
        (max_lines, max_bytes): (usize, usize),
    ) -> Result<bool, VerifyError> {
        self.data.clear();
        self.ranges.clear();
        self.held.clear();
        while self.held.len() < max_lines && self.data.len() < max_bytes {
            let line = match reader.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(true),
                Err(e) => return Err(e),
            };
            let start = self.data.len();
            self.data.extend_from_slice(line.content);
            self.ranges.push((start, self.data.len()));
            self.held.push(Held {
                segment: line.segment,
                line: line.line,
                offset: line.offset,
            });
        }
        Ok(false)
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
    let threads = vouch::threads();
    walk_in_batches(
        dir,
        policy,
        keys,
        witness,
        progress,
        threads,
        batch_size(threads),
    )
}

/// [`walk`] with `threads` vouching threads and batches of at most `size` (lines, bytes).
fn walk_in_batches(
    dir: &Path,
    policy: TailPolicy,
    keys: Vec<CheckpointKey>,
    witness: Option<WitnessedHead>,
    progress: Option<&ProgressHook>,
    threads: usize,
    size: (usize, usize),
) -> Result<Walk, VerifyError> {
    let segments = list_segments(dir)?;
    let mut tracker = progress.map(|hook| ProgressTracker::new(hook.clone(), &segments));
    let mut reader = LogReader::new(segments, policy);
    let mut check = ChainCheck::new(keys).expecting(witness)?;
    // Lines are read from the file once into a batch, vouched for on several threads (see `vouch`) while
    // this thread reads the next batch, then chained in order on this thread.
    let (mut batch, mut ahead) = (Batch::default(), Batch::default());
    let mut ended = batch.fill(&mut reader, size);
    loop {
        let last = !matches!(ended, Ok(false));
        let Batch {
            data,
            ranges,
            vouched,
            ..
        } = &mut batch;
        let ahead_ended = vouch::vouch_while(data, ranges, threads, vouched, || {
            (!last).then(|| ahead.fill(&mut reader, size))
        });
        for (i, held) in batch.held.iter().enumerate() {
            let line = Line {
                content: &batch.data[batch.ranges[i].0..batch.ranges[i].1],
                file: segment_path(&reader.segments, held.segment),
                segment: held.segment,
                line: held.line,
                offset: held.offset,
            };
            let vouched = batch
                .vouched
                .get(i)
                .is_some_and(|v| v.load(std::sync::atomic::Ordering::Relaxed));
            check.check_vouched(&line, vouched)?;
            if let Some(t) = &mut tracker {
                t.line(&line);
            }
        }
        // A read error comes after the lines read before it, as it would one line at a time.
        ended?;
        match ahead_ended {
            Some(next) => {
                std::mem::swap(&mut batch, &mut ahead);
                ended = next;
            }
            None => break,
        }
    }
    let torn = settle_torn(&mut reader, &check)?;
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

/// The torn write to cut off the end of the log, if the reader held back an incomplete last
/// line that is one (see [`is_torn_write`]): file, offset, length. Any other incomplete last
/// line is damage.
fn settle_torn(
    reader: &mut LogReader,
    check: &ChainCheck,
) -> Result<Option<(PathBuf, u64, u64)>, VerifyError> {
    match reader.torn.take() {
        None => Ok(None),
        Some(t) if is_torn_write(&t.content, check.chain.next_seq, &check.chain.prev) => {
            Ok(Some((t.at.file.clone(), t.at.offset, t.len)))
        }
        Some(t) => Err(VerifyError::Malformed {
            at: t.at,
            reason: format!(
                "the last line ({} bytes, no newline) is not the beginning of record {}: this \
                 is damage, not a torn write, and nothing was cut (inspect it; \
                 `FileSink::repair` / `tollgate audit repair` removes it with a declaration)",
                t.len, check.chain.next_seq
            ),
        }),
    }
}

/// Whether an incomplete last line is what a crash leaves of the record the writer was
/// appending: a strict beginning of `{"seq":<next>,"prev":"<prev>","hash":"<64 hex>","event":`
/// followed by a beginning of the event's JSON, all of it bytes the writer emits (no control
/// characters: its JSON has none, so a zeroed or garbled block is not mistaken for one). When
/// the event's JSON is whole, only the record's closing `}` may follow it, and the line's hash
/// must be the chain's hash of that event: a crash cuts bytes off, it does not change them.
/// Anything else at the end of the log is damage, which recovery must not cut silently.
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
    let tail: &[u8] = b"\",\"event\":";
    let n = rest.len().min(tail.len());
    if rest[..n] != tail[..n] {
        return false;
    }
    let event = &rest[n..];
    let Some(&first) = event.first() else {
        // Cut before the event (or inside the hash, leaving `rest` short).
        return true;
    };
    if first != b'{' {
        return false;
    }
    let mut values =
        serde_json::Deserializer::from_slice(event).into_iter::<serde::de::IgnoredAny>();
    match values.next() {
        Some(Ok(_)) => {}
        // Cut inside the event: every beginning of the writer's JSON ends this way.
        Some(Err(e)) if e.is_eof() => return true,
        _ => return false,
    }
    let end = values.byte_offset();
    if !matches!(&event[end..], b"" | b"}") {
        return false;
    }
    let digits = &content[head.len()..head.len() + 64];
    *digits == chain_hash(prev, next_seq, &event[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk as it was before batches: one line at a time, every hash computed in order.
    fn walk_one_at_a_time(dir: &Path, policy: TailPolicy) -> Result<String, VerifyError> {
        let mut reader = LogReader::new(list_segments(dir)?, policy);
        let mut check = ChainCheck::new(Vec::new());
        while let Some(line) = reader.next_line()? {
            check.check(&line)?;
        }
        let torn = settle_torn(&mut reader, &check)?;
        let report = check.finish(&reader.segments)?;
        Ok(format!("{report:?} torn {torn:?}"))
    }

    fn walk_batched(dir: &Path, policy: TailPolicy) -> Result<String, VerifyError> {
        let w = walk(dir, policy, Vec::new(), None, None)?;
        Ok(format!("{:?} torn {:?}", w.report, w.torn))
    }

    /// Damage anywhere in a log of several batches and segments (the batch's first and last
    /// lines, a segment's, the log's last) is reported exactly as one line at a time reports
    /// it: same error, same file, line and seq; an undamaged log gives the same report.
    #[test]
    fn batched_vouching_reports_exactly_what_one_line_at_a_time_reports() {
        // The batch this machine's walk reads, so the damage below lands on its edges.
        let (batch_lines, _) = batch_size(vouch::threads());
        let dir = write_log(
            batch_lines as u64 * 2 + 500,
            256 * 1024 * batch_lines as u64 / 4096,
            |i| format!("step {i} \"quoted\" é"),
        );
        let segments = list_segments(dir.path()).unwrap();
        assert!(segments.len() > 3, "{} segments", segments.len());
        for policy in [TailPolicy::Report, TailPolicy::Repair] {
            assert_eq!(
                walk_batched(dir.path(), policy).unwrap(),
                walk_one_at_a_time(dir.path(), policy).unwrap()
            );
        }
        let all: Vec<(PathBuf, Vec<u8>)> = segments
            .iter()
            .map(|(_, p)| (p.clone(), std::fs::read(p).unwrap()))
            .collect();
        // Line numbers across the log where damage goes, counted from 0.
        let total: usize = all
            .iter()
            .map(|(_, d)| d.split(|&b| b == b'\n').count() - 1)
            .sum();
        let first_of_second_segment = all[0].1.split(|&b| b == b'\n').count() - 1;
        let targets = [
            0,
            1,
            batch_lines - 1,
            batch_lines,
            batch_lines + 1,
            2 * batch_lines,
            first_of_second_segment - 1,
            first_of_second_segment,
            total - 1,
        ];
        // Ways to damage the target line: a changed event byte (valid JSON, bad hash), an
        // event that is no longer JSON with a hash to match, a broken frame, the line removed.
        for target in targets {
            for damage in 0..4 {
                let mut remaining = target;
                let mut damaged = all.clone();
                for (_, data) in &mut damaged {
                    let lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
                    if remaining >= lines.len() {
                        remaining -= lines.len();
                        continue;
                    }
                    let mut out = Vec::new();
                    for (n, line) in lines.iter().enumerate() {
                        if n != remaining {
                            out.extend_from_slice(line);
                            continue;
                        }
                        match damage {
                            0 => {
                                let mut l = line.to_vec();
                                let at = l.windows(4).position(|w| w == b"step").unwrap();
                                l[at] = b'S';
                                out.extend_from_slice(&l);
                            }
                            1 => {
                                let frame = super::super::record::parse_frame(
                                    line.strip_suffix(b"\n").unwrap(),
                                )
                                .ok()
                                .unwrap();
                                let event = &frame.event[..frame.event.len() - 1];
                                let prev = frame.prev;
                                let hash = super::super::record::chain_hash(prev, frame.seq, event);
                                super::super::record::append_record(
                                    &mut out, frame.seq, prev, &hash, event,
                                );
                            }
                            2 => out.extend_from_slice(&line[1..]),
                            _ => {}
                        }
                    }
                    *data = out;
                    break;
                }
                for (path, data) in &damaged {
                    std::fs::write(path, data).unwrap();
                }
                for policy in [TailPolicy::Report, TailPolicy::Repair] {
                    let batched = walk_batched(dir.path(), policy).map_err(|e| e.to_string());
                    let single = walk_one_at_a_time(dir.path(), policy).map_err(|e| e.to_string());
                    // Removing the last record leaves a valid shorter log: only a witness
                    // tells (see `witness`); everything else is damage.
                    let undetectable = target == total - 1 && damage == 3;
                    assert_eq!(
                        batched.is_err(),
                        !undetectable,
                        "line {target}, damage {damage}: {batched:?}"
                    );
                    assert_eq!(batched, single, "line {target}, damage {damage}");
                }
            }
        }
        for (path, data) in &all {
            std::fs::write(path, data).unwrap();
        }
        assert!(walk_batched(dir.path(), TailPolicy::Report).is_ok());
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "audit-000001.jsonl");
        assert_eq!(segment_index("audit-000001.jsonl"), Some(1));
        assert_eq!(segment_index(&segment_name(1_234_567)), Some(1_234_567));
        assert_eq!(segment_index("audit-1.jsonl"), None);
        assert_eq!(segment_index("audit-000001.jsonl.tmp"), None);
        assert_eq!(segment_index("audit-00000x.jsonl"), None);
    }

    /// A file named like a segment but spelled otherwise than the writer spells it (it would
    /// alias another number), or numbered u64::MAX (no number after it), is refused by name.
    #[test]
    fn aliased_or_last_segment_names_are_refused() {
        for names in [
            &["audit-000001.jsonl", "audit-0000001.jsonl"][..],
            &[
                "audit-18446744073709551615.jsonl",
                "audit-018446744073709551615.jsonl",
            ],
            &["audit-18446744073709551615.jsonl"],
        ] {
            let dir = tempfile::tempdir().unwrap();
            for n in names {
                std::fs::write(dir.path().join(n), b"").unwrap();
            }
            let err = list_segments(dir.path()).unwrap_err();
            assert!(
                matches!(err, VerifyError::SegmentName { .. }),
                "{names:?}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-000001.jsonl"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    }

    /// Hand-made records whose seq numbers would overflow `seq + 1` are refused with an error,
    /// not a panic (debug) or a wrapped seq (release).
    #[test]
    fn the_largest_seq_numbers_are_refused_not_overflowed() {
        use super::super::record::{GENESIS_HEX, test_line as line};
        // A lone record numbered u64::MAX (a log that retention made start late).
        let dir = tempfile::tempdir().unwrap();
        let (l, _) = line(u64::MAX, &[b'a'; 64], br#"{"event":"x"}"#);
        std::fs::write(dir.path().join(segment_name(2)), l).unwrap();
        let err = crate::audit::file::verify(dir.path()).unwrap_err();
        assert!(matches!(err, VerifyError::Malformed { .. }), "{err}");
        // Repair declarations whose seqs would wrap.
        let repair = |after: u64, through: u64| {
            format!(
                r#"{{"event":"repair","time_unix_nano":0,"tollgate.repair.after_seq":{after},"tollgate.repair.removed_through_seq":{through},"tollgate.repair.removed_first_seq":null,"tollgate.repair.removed_last_seq":null,"tollgate.repair.removed_lines":1,"tollgate.repair.removed_bytes":1,"tollgate.repair.removed_sha256":"00","tollgate.repair.cut_at":"audit-000001.jsonl:0","tollgate.repair.saved_as":"x","tollgate.repair.reason":"r"}}"#
            )
        };
        for (after, through) in [(u64::MAX, 1), (1, u64::MAX)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, h1) = line(1, &GENESIS_HEX, br#"{"event":"x"}"#);
            let (l2, _) = line(2, &h1, repair(after, through).as_bytes());
            log.extend_from_slice(&l2);
            std::fs::write(dir.path().join(segment_name(1)), log).unwrap();
            let err = crate::audit::file::verify(dir.path()).unwrap_err();
            assert!(
                matches!(err, VerifyError::SeqGap { .. }),
                "{after} {through}: {err}"
            );
        }
    }

    /// Every way a crash can cut the record being appended is a torn write; a whole event with
    /// a wrong hash, or anything after the record's end, is not.
    #[test]
    fn torn_writes_are_cut_records_and_nothing_else() {
        use super::super::record::{GENESIS_HEX, test_line};
        let event =
            r#"{"seq":7,"event":"reasoning","tollgate.reasoning":"a \"b\" é \u00e9 [1, {}]"}"#
                .as_bytes();
        let prev = GENESIS_HEX;
        let (mut line, hash) = test_line(7, &prev, event);
        assert_eq!(line.pop(), Some(b'\n'));
        for cut in 1..=line.len() {
            assert!(
                is_torn_write(&line[..cut], 7, &prev),
                "{}",
                String::from_utf8_lossy(&line[..cut])
            );
        }
        // Another seq or prev: not the record being appended.
        assert!(!is_torn_write(&line, 8, &prev));
        assert!(!is_torn_write(&line[..20], 7, &hash));
        // The whole event with one byte changed: the hash shows it was not a crash.
        let changed: Vec<u8> = String::from_utf8(line.clone())
            .unwrap()
            .replacen("reasoning\"", "reasonin9\"", 1)
            .into_bytes();
        assert_ne!(changed, line);
        assert!(!is_torn_write(&changed, 7, &prev));
        assert!(!is_torn_write(&changed[..changed.len() - 1], 7, &prev));
        // Bytes after the record's end, or a second record run on.
        for extra in [&b" "[..], b"}", b" {\"seq\":8}", b"x"] {
            let mut more = line.clone();
            more.extend_from_slice(extra);
            assert!(!is_torn_write(&more, 7, &prev), "{extra:?}");
        }
        // Not JSON where the event starts, or broken JSON inside it.
        let head = line.len() - event.len() - 1;
        let mut bad = line[..head].to_vec();
        bad.extend_from_slice(b"[1,");
        assert!(!is_torn_write(&bad, 7, &prev));
        let mut bad = line[..head].to_vec();
        bad.extend_from_slice(br#"{"a":tx"#);
        assert!(!is_torn_write(&bad, 7, &prev));
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

    /// A small log: 40 records in segments of about 1 KiB.
    fn small_log() -> tempfile::TempDir {
        write_log(40, 1024, |i| format!("n{i}"))
    }

    /// A log of `records` reasoning records (`text(i)` each) in segments of about
    /// `segment_bytes`.
    fn write_log(
        records: u64,
        segment_bytes: u64,
        text: impl Fn(u64) -> String,
    ) -> tempfile::TempDir {
        use crate::audit::file::{Durability, FileSink, FileSinkConfig};
        use crate::audit::{AuditEvent, AuditSink, EventKind};
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig::default()
            .durability(Durability::OsBuffered)
            .max_segment_bytes(segment_bytes);
        let (sink, _) = FileSink::open(dir.path(), config).unwrap();
        for i in 0..records {
            let text = text(i);
            let event = AuditEvent::new(
                0,
                std::time::UNIX_EPOCH,
                None,
                None,
                EventKind::Reasoning { text: &text },
            );
            sink.record(&event).unwrap();
        }
        sink.close().unwrap();
        dir
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any batch size, any thread count, a byte anywhere in the log changed, removed or
        /// doubled: the batched walk reports exactly what one line at a time reports.
        #[test]
        fn any_batch_size_reports_what_one_line_at_a_time_reports(
            lines in 1usize..7,
            bytes in 1usize..900,
            threads in 1usize..4,
            segment_pick in 0usize..1000,
            at_pick in 0usize..100_000,
            how in 0u8..4,
            tail in proptest::bool::ANY,
        ) {
            let dir = small_log();
            let segments = list_segments(dir.path()).unwrap();
            let (_, path) = &segments[segment_pick % segments.len()];
            let mut data = std::fs::read(path).unwrap();
            let at = at_pick % data.len();
            match how {
                0 => data[at] ^= 0x20,
                1 => { data.remove(at); }
                2 => data.insert(at, data[at]),
                _ => {}
            }
            std::fs::write(path, &data).unwrap();
            let policy = if tail { TailPolicy::Repair } else { TailPolicy::Report };
            let batched = walk_in_batches(
                dir.path(), policy, Vec::new(), None, None, threads, (lines, bytes),
            )
            .map(|w| format!("{:?} torn {:?}", w.report, w.torn))
            .map_err(|e| e.to_string());
            let single = walk_one_at_a_time(dir.path(), policy).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(batched, single);
        }
    }
}
