//! The records of a log as raw event bytes, checked exactly as a [`Query`](crate::audit::query::Query)
//! checks them, for readers inside the crate that parse events themselves (policy replay parses
//! each event into a borrowed struct; building a `serde_json::Value` tree per record would cost
//! it more than the whole replay of the record).

use std::path::{Path, PathBuf};

use super::{
    ChainCheck, CheckpointKey, LogReader, ProgressHook, ProgressTracker, TailPolicy, VerifyError,
    VerifyReport, check_is_dir, list_segments, split_record,
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
    /// checkpoint MACs with `keys`) as it is read, exactly as a query verifying while reading
    /// does: the first error ends the stream, and a missing prefix is only known at the end.
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
            check: verify.then(|| ChainCheck::new(keys)),
            done: false,
        })
    }

    /// The next record's seq and event bytes; `None` at the end (after which, when verifying,
    /// the whole log has been verified). An error ends the stream: treat the log as tampered as
    /// a whole.
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
                let (seq, _, event) = split_record(&line)?;
                (seq, event)
            }
        };
        if let Some(t) = &mut self.progress {
            t.line(&line);
        }
        self.done = false;
        Ok(Some((seq, event)))
    }
}
