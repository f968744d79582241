//! The records of a log as raw event bytes, checked as a [`Query`](crate::audit::query::Query)
//! checks them, for readers inside the crate that parse events themselves (policy replay parses
//! each event into a borrowed struct; building a `serde_json::Value` tree per record would cost
//! it more than the whole replay of the record).
//!
//! One check is the reader's: the event's JSON syntax. A reader of these records parses every
//! event in full anyway, so checking its syntax here too would parse each event twice (it cost
//! a replay about a sixth of its time). **A reader must treat an event it cannot parse as a
//! malformed record, never skip it.** Everything else is checked here: the frame, the seq, the
//! link to the previous record, the hash, the event's depth, the sink's own records and, when
//! verifying, the whole chain at the end.

use std::path::{Path, PathBuf};

use super::record::{event_depth_ok, parse_frame};
use super::{
    ChainCheck, CheckpointKey, LogReader, ProgressHook, ProgressTracker, TailPolicy, VerifyError,
    VerifyReport, check_is_dir, list_segments,
};

/// Streams a log's records in order, one line in memory at a time.
pub(crate) struct RawRecords {
    reader: LogReader,
    /// The segments, for the end-of-log check (the reader's own list is borrowed by its line).
    segments: Vec<(u64, PathBuf)>,
    check: Option<ChainCheck>,
    progress: Option<ProgressTracker>,
    done: bool,
}

impl RawRecords {
    /// Opens the log in `dir`; with `verify`, every record is checked against the chain (and
    /// checkpoint MACs with `keys`) as it is read, as a query verifying while reading does
    /// (but for the event's JSON syntax, see the [module docs](self)): the first error ends the
    /// stream, and a missing prefix is only known at the end.
    pub(crate) fn open(
        dir: &Path,
        verify: bool,
        keys: Vec<CheckpointKey>,
        progress: Option<ProgressHook>,
    ) -> Result<Self, VerifyError> {
        check_is_dir(dir)?;
        let segments = list_segments(dir)?;
        Ok(Self {
            progress: progress.map(|hook| ProgressTracker::new(hook, &segments)),
            reader: LogReader::new(segments.clone(), TailPolicy::Report),
            segments,
            check: verify.then(|| ChainCheck::new(keys).leaving_syntax_to_reader()),
            done: false,
        })
    }

    /// The next record's seq and event bytes; `None` at the end (after which, when verifying,
    /// the whole log has been verified). An error ends the stream: treat the log as tampered as
    /// a whole. The event's JSON syntax is not checked: parse it, and treat an event that does
    /// not parse as malformed.
    pub(crate) fn next_event(&mut self) -> Result<Option<(u64, &[u8])>, VerifyError> {
        if self.done {
            return Ok(None);
        }
        // Stays set unless a record comes out: an error or the end ends the stream.
        self.done = true;
        let Some(line) = self.reader.next_line()? else {
            if let Some(check) = &self.check {
                let _: VerifyReport = check.finish(&self.segments)?;
            }
            return Ok(None);
        };
        let (seq, event) = match &mut self.check {
            Some(check) => {
                let c = check.check(&line)?;
                (c.seq, c.event)
            }
            None => {
                let frame = parse_frame(line.content).map_err(|u| VerifyError::Malformed {
                    at: line.location(u.seq),
                    reason: u.reason,
                })?;
                event_depth_ok(frame.event).map_err(|reason| VerifyError::Malformed {
                    at: line.location(Some(frame.seq)),
                    reason,
                })?;
                (frame.seq, frame.event)
            }
        };
        if let Some(t) = &mut self.progress {
            t.line(&line);
        }
        self.done = false;
        Ok(Some((seq, event)))
    }
}
