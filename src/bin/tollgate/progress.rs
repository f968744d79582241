//! A progress line on standard error for long reads of an audit log.
//!
//! Written here rather than with a progress-bar crate: the line is one `format!`, the brief is
//! "shown only on a terminal, unless forced", and `indicatif` (the usual choice) draws nothing to
//! a target that is not a terminal, which is exactly what a test or a CI log forcing it needs.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use parking_lot::Mutex;
use tollgate::audit::file::Progress;

/// When to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum When {
    /// When standard error is a terminal (and, for `query`, standard output is not one, so that
    /// records and the progress line do not interleave).
    Auto,
    /// Always, also to a pipe or file: one line per update instead of a line redrawn in place.
    Always,
    /// Never.
    Never,
}

/// The progress options of a command that reads a whole log.
#[derive(Debug, Clone, Args)]
pub(crate) struct ProgressArgs {
    /// Show progress on standard error: records and bytes read, rate, segment N of M.
    ///
    /// `auto` shows it when standard error is a terminal (for `query`, only when standard output
    /// is not one too), redrawn in place and cleared at the end; nothing is written otherwise,
    /// so scripts see clean output. `always` also writes it to a pipe or file, one line per
    /// update.
    #[arg(
        long = "progress",
        value_enum,
        value_name = "WHEN",
        env = "TOLLGATE_PROGRESS",
        default_value_t = When::Auto
    )]
    pub(crate) when: When,
    /// How often the progress line is updated (a duration with a unit: 250ms, 1s, 10s).
    ///
    /// Nothing is shown for a read that ends sooner.
    #[arg(
        long = "progress-interval",
        value_name = "DURATION",
        env = "TOLLGATE_PROGRESS_INTERVAL",
        default_value = "250ms",
        value_parser = tollgate::units::parse_duration
    )]
    pub(crate) interval: Duration,
}

/// How the line is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Redrawn in place (`\r`, erase to the end of the line), erased at the end.
    InPlace,
    /// One line per update (a pipe or a file).
    Lines,
}

struct State {
    /// When the next update is due.
    due: Instant,
    /// Whether an in-place line is on the screen.
    drawn: bool,
}

/// Draws a throttled progress line on standard error.
pub(crate) struct Meter {
    verb: &'static str,
    style: Style,
    start: Instant,
    interval: Duration,
    state: Mutex<State>,
}

impl Meter {
    /// A meter for `verb` ("verify", "query"), or `None` if progress is not to be shown.
    /// `stdout_is_output`: the command writes its results to standard output as it goes, so
    /// `auto` stays quiet when that is a terminal too.
    pub(crate) fn new(
        verb: &'static str,
        args: &ProgressArgs,
        stdout_is_output: bool,
    ) -> Option<Arc<Self>> {
        let stderr_tty = io::stderr().is_terminal();
        let show = match args.when {
            When::Never => false,
            When::Always => true,
            When::Auto => stderr_tty && !(stdout_is_output && io::stdout().is_terminal()),
        };
        let start = Instant::now();
        show.then(|| {
            Arc::new(Self {
                verb,
                style: if stderr_tty {
                    Style::InPlace
                } else {
                    Style::Lines
                },
                start,
                interval: args.interval,
                state: Mutex::new(State {
                    due: start + args.interval,
                    drawn: false,
                }),
            })
        })
    }

    /// Called after each record: draws the line when an update is due.
    pub(crate) fn update(&self, p: &Progress) {
        let now = Instant::now();
        let mut state = self.state.lock();
        if now < state.due {
            return;
        }
        state.due = now + self.interval;
        let line = line(self.verb, p, now.duration_since(self.start));
        let mut err = io::stderr().lock();
        // A progress line that cannot be written is not worth failing the command for.
        let _ = match self.style {
            Style::InPlace => write!(err, "\r{line}\x1b[K"),
            Style::Lines => writeln!(err, "{line}"),
        };
        let _ = err.flush();
        state.drawn = self.style == Style::InPlace;
    }

    /// Erases an in-place line, before the command prints its result.
    pub(crate) fn finish(&self) {
        let mut state = self.state.lock();
        if std::mem::take(&mut state.drawn) {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
        // No update after the result.
        state.due = Instant::now() + Duration::from_secs(365 * 86_400);
    }
}

/// `verify: segment 3/12, 1234567 records, 512.3 MiB of 2.0 GiB (25%), 98.1 MiB/s`: short enough
/// for an 80-column terminal, where a wrapped line could not be redrawn in place.
fn line(verb: &str, p: &Progress, elapsed: Duration) -> String {
    let mut s = format!(
        "{verb}: segment {}/{}, {} records, {}",
        p.segment,
        p.segments,
        p.records,
        bytes(p.bytes)
    );
    if let Some(percent) = (u128::from(p.bytes) * 100).checked_div(u128::from(p.total_bytes)) {
        let percent = percent.min(100);
        s.push_str(&format!(" of {} ({percent}%)", bytes(p.total_bytes)));
    }
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        s.push_str(&format!(", {}/s", bytes((p.bytes as f64 / secs) as u64)));
    }
    s
}

/// Bytes in binary units with one decimal (`512 B`, `4.0 KiB`, `98.1 MiB`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_written_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(100 * 1024 * 1024), "100.0 MiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn the_line_names_segment_records_bytes_share_and_rate() {
        let mut p = Progress::default();
        p.records = 1_234_567;
        p.bytes = 512 * 1024 * 1024;
        p.total_bytes = 2048 * 1024 * 1024;
        p.segment = 3;
        p.segments = 12;
        let l = line("verify", &p, Duration::from_secs(4));
        assert_eq!(
            l,
            "verify: segment 3/12, 1234567 records, 512.0 MiB of 2.0 GiB (25%), 128.0 MiB/s"
        );
        assert!(l.len() <= 80, "{l}");
        // A log that grew past its size at the start never shows more than 100%.
        let mut grown = p;
        grown.bytes = 3000;
        grown.total_bytes = 1000;
        assert!(line("query", &grown, Duration::ZERO).contains("(100%)"));
    }
}
