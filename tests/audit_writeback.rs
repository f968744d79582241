//! The file sink's early writeback (`FileSinkConfig::writeback_bytes`): under `OsBuffered` and
//! `GroupCommit` the writer starts the live segment's writeback every so many written bytes, in
//! consecutive ranges that begin again at zero in each new segment, so the fsync that closes a
//! segment no longer waits for the whole of it; under `EveryRecord`, or with zero, it never
//! does; and the log it leaves (its pages dropped from the cache once written) reads back and
//! verifies whole.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use tollgate::audit::file::{Durability, FileSink, FileSinkConfig, verify};
use tollgate::audit::{AuditEvent, AuditSink, EventKind};
use tollgate::{AgentId, RunContext, RunId};

#[path = "common/tempdir.rs"]
mod tempdir;

const THRESHOLD: u64 = 16 * 1024;
const SEGMENT: u64 = 256 * 1024;
const RECORDS: u64 = 6_000;

/// Writes `RECORDS` events of ~300 bytes each through a sink with `cfg`, flushes, and returns
/// the writeback ranges the writer started.
fn write_log(dir: &Path, cfg: FileSinkConfig) -> Vec<(u64, u64)> {
    let (sink, _) = FileSink::open(dir, cfg).unwrap();
    sink.faults().record_writebacks();
    let run = RunId::new("run-writeback");
    let agent = AgentId::new("agent-writeback");
    let context = RunContext::new("agent-writeback", "r".repeat(160).as_str());
    for seq in 1..=RECORDS {
        sink.record(&AuditEvent::new(
            seq,
            SystemTime::now(),
            Some(&run),
            Some(&agent),
            EventKind::RunStarted { context: &context },
        ))
        .unwrap();
    }
    sink.flush().unwrap();
    let ranges = sink.faults().writebacks();
    sink.close().unwrap();
    ranges
}

fn segment_lengths(dir: &Path) -> Vec<u64> {
    let mut segments: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    segments
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .collect()
}

#[test]
fn os_buffered_starts_writeback_in_consecutive_ranges_per_segment() {
    let dir = tempdir::temp_dir("writeback", "os-buffered");
    let cfg = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .max_segment_bytes(SEGMENT)
        .writeback_bytes(THRESHOLD);
    let ranges = write_log(dir.path(), cfg);
    let lengths = segment_lengths(dir.path());
    assert!(lengths.len() >= 4, "segments: {lengths:?}");

    // Split the ranges into runs, one per segment: each run starts at offset 0 and continues
    // exactly where the one before ended.
    let mut runs: Vec<Vec<(u64, u64)>> = Vec::new();
    for &(from, to) in &ranges {
        assert!(
            to - from >= THRESHOLD,
            "range {from}..{to} under the threshold"
        );
        match runs.last_mut() {
            Some(run) if from != 0 => {
                assert_eq!(
                    run.last().unwrap().1,
                    from,
                    "a gap or overlap before {from}"
                );
                run.push((from, to));
            }
            _ => {
                assert_eq!(
                    from, 0,
                    "a segment's first writeback starts at offset {from}"
                );
                runs.push(vec![(from, to)]);
            }
        }
    }
    // Every segment past THRESHOLD bytes had its writeback started, never beyond its end, and
    // all but its last bytes (less than a threshold plus one write of the writer) are covered.
    let big: Vec<u64> = lengths
        .iter()
        .copied()
        .filter(|&l| l >= 2 * THRESHOLD)
        .collect();
    assert!(
        runs.len() >= big.len() - 1,
        "runs {} for segments {lengths:?}",
        runs.len()
    );
    for (run, len) in runs.iter().zip(&lengths) {
        let end = run.last().unwrap().1;
        assert!(
            end <= *len,
            "writeback to {end} past the segment's {len} bytes"
        );
        assert!(
            len - end < THRESHOLD + SEGMENT / 2,
            "only {end} of {len} bytes had their writeback started"
        );
    }

    // The pages dropped from the cache read back from disk: the whole chain verifies.
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.records, RECORDS);
    assert_eq!(report.segments, lengths.len() as u64);
}

#[test]
fn group_commit_starts_writeback_too() {
    let dir = tempdir::temp_dir("writeback", "group-commit");
    let cfg = FileSinkConfig::default()
        .durability(Durability::GroupCommit { interval_ms: 50 })
        .writeback_bytes(THRESHOLD);
    let ranges = write_log(dir.path(), cfg);
    assert!(!ranges.is_empty());
    assert_eq!(ranges[0].0, 0);
    assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
    assert_eq!(verify(dir.path()).unwrap().records, RECORDS);
}

#[test]
fn every_record_and_zero_start_none() {
    for (name, cfg) in [
        (
            "every-record",
            FileSinkConfig::default()
                .durability(Durability::EveryRecord)
                .writeback_bytes(THRESHOLD),
        ),
        (
            "zero",
            FileSinkConfig::default()
                .durability(Durability::OsBuffered)
                .writeback_bytes(0),
        ),
    ] {
        let dir = tempdir::temp_dir("writeback", name);
        let ranges = write_log(dir.path(), cfg);
        assert_eq!(ranges, vec![], "{name}");
        assert_eq!(verify(dir.path()).unwrap().records, RECORDS, "{name}");
    }
}

#[test]
fn default_is_four_mebibytes() {
    assert_eq!(FileSinkConfig::default().writeback_bytes, 4 * 1024 * 1024);
}

/// Disk bytes allocated to `path` (its blocks), which a reservation makes larger than its length.
#[cfg(target_os = "linux")]
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks() * 512
}

#[cfg(target_os = "linux")]
#[test]
fn segments_reserve_their_size_without_changing_their_length() {
    const MAX: u64 = 1024 * 1024;
    // Whether this file system reserves at all (tmpfs, ext4, xfs and btrfs do).
    let probe_dir = tempdir::temp_dir("writeback", "probe");
    let probe = fs::File::create(probe_dir.path().join("probe")).unwrap();
    let supported =
        rustix::fs::fallocate(&probe, rustix::fs::FallocateFlags::KEEP_SIZE, 0, MAX).is_ok();

    for preallocate in [true, false] {
        let dir = tempdir::temp_dir("writeback", &format!("prealloc-{preallocate}"));
        let cfg = FileSinkConfig::default()
            .durability(Durability::OsBuffered)
            .max_segment_bytes(MAX)
            .preallocate_segments(preallocate);
        write_log(dir.path(), cfg);
        let mut segments: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        segments.sort();
        assert!(segments.len() >= 2, "{segments:?}");
        // The live (last) segment holds less than MAX; a rotated one was reserved when created.
        let live = segments.last().unwrap();
        let len = fs::metadata(live).unwrap().len();
        assert!(len < MAX, "live segment {len} bytes");
        let reserved = allocated(live);
        if preallocate && supported {
            assert!(
                reserved >= MAX,
                "live segment: {reserved} bytes allocated for {len}"
            );
        } else {
            assert!(
                reserved < MAX,
                "preallocate {preallocate}, supported {supported}: {reserved} bytes allocated"
            );
        }
        // Lengths are what was written: the chain reads back whole.
        assert_eq!(verify(dir.path()).unwrap().records, RECORDS);
    }
    // The segment `open` creates (or continues as the live one) is reserved too.
    if supported {
        let dir = tempdir::temp_dir("writeback", "prealloc-reopen");
        let cfg = FileSinkConfig::default()
            .durability(Durability::OsBuffered)
            .max_segment_bytes(64 * MAX);
        let (sink, _) = FileSink::open(dir.path(), cfg.clone()).unwrap();
        sink.close().unwrap();
        let first = dir.path().join("audit-000001.jsonl");
        assert!(allocated(&first) >= 64 * MAX, "{} bytes", allocated(&first));
        assert_eq!(fs::metadata(&first).unwrap().len(), 0);
    }
}

const CRASH_DIR: &str = "TOLLGATE_WRITEBACK_CRASH_DIR";
const CRASH_TAG: &str = "TOLLGATE_WRITEBACK_CRASH_TAG";
const CRASH_TEST: &str = "killed_writers_leave_a_log_that_verifies_and_keeps_what_it_held";

/// Small segments and a small writeback step, so kills land around rotations, reservations and
/// writebacks.
fn crash_config() -> FileSinkConfig {
    FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .max_segment_bytes(32 * 1024)
        .writeback_bytes(4 * 1024)
        .write_delay(std::time::Duration::ZERO)
}

/// The child: records events until killed, printing each id once `record` returned.
fn crash_child(dir: &str, tag: &str) {
    use std::io::Write;
    let (sink, _) = FileSink::open(dir, crash_config()).expect("child open");
    let run = RunId::new("run-crash");
    let agent = AgentId::new("agent-crash");
    for i in 0..u64::MAX {
        let id = format!("{tag}-{i}");
        let context = RunContext::new("agent-crash", id.as_str());
        sink.record(&AuditEvent::new(
            i + 1,
            SystemTime::now(),
            Some(&run),
            Some(&agent),
            EventKind::RunStarted { context: &context },
        ))
        .expect("record");
        let mut out = std::io::stdout().lock();
        if writeln!(out, "ACK {id}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// The role names (our ids) of the records in the log.
fn ids_in(dir: &Path) -> Vec<String> {
    let mut segments: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|p| {
            fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter_map(|r| r["event"]["tollgate.role"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// OS-buffered writers with early writeback and preallocated segments, killed (SIGKILL) at
/// random points: each recovery verifies, nothing the log held before a kill is lost or
/// duplicated by the next run, and only acknowledged events are in it (an OS-buffered sink may
/// lose its queue to a process crash, not what it had written).
#[test]
fn killed_writers_leave_a_log_that_verifies_and_keeps_what_it_held() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    if let (Ok(dir), Ok(tag)) = (std::env::var(CRASH_DIR), std::env::var(CRASH_TAG)) {
        crash_child(&dir, &tag);
        return;
    }
    let dir = tempdir::temp_dir("writeback", "crash");
    let exe = std::env::current_exe().unwrap();
    let mut acked = std::collections::HashSet::new();
    let mut held: Vec<String> = Vec::new();
    for run in 0..12u64 {
        // 300 to 1,400 acknowledged events per run: several segments and writebacks each.
        let target = 300 + (run * 97 % 11) as usize * 100;
        let mut child = Command::new(&exe)
            .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
            .env(CRASH_DIR, dir.path())
            .env(CRASH_TAG, format!("r{run}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut n = 0;
        while n < target {
            match lines.next() {
                Some(Ok(line)) => {
                    // libtest may print its "test ... " prefix on the first line.
                    if let Some((_, id)) = line.split_once("ACK ") {
                        acked.insert(id.to_owned());
                        n += 1;
                    }
                }
                other => {
                    let _ = child.kill();
                    panic!("run {run}: child stopped after {n} acks: {other:?}");
                }
            }
        }
        child.kill().unwrap(); // SIGKILL, mid-stream
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some((_, id)) = line.split_once("ACK ") {
                acked.insert(id.to_owned());
            }
        }

        let (sink, _) = FileSink::open(dir.path(), crash_config())
            .unwrap_or_else(|e| panic!("run {run}: recovery failed: {e}"));
        drop(sink);
        let report = verify(dir.path()).unwrap_or_else(|e| panic!("run {run}: verify failed: {e}"));
        let ids = ids_in(dir.path());
        assert_eq!(report.records as usize, ids.len(), "run {run}");
        // A killed OS-buffered writer may not have written any of its run's events yet (they
        // wait in its queue), but nothing already in the log may go.
        assert!(ids.len() >= held.len(), "run {run}: the log lost records");
        assert_eq!(
            ids[..held.len()],
            held[..],
            "run {run}: earlier records changed"
        );
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "run {run}: a record appears twice");
        for id in &ids {
            assert!(acked.contains(id), "run {run}: {id} was never acknowledged");
        }
        held = ids;
    }
    let report = verify(dir.path()).unwrap();
    assert!(report.segments >= 10, "{} segments", report.segments);
    eprintln!(
        "writeback crash test: 12 kills, {} acknowledged, {} in the log, {} segments",
        acked.len(),
        report.records,
        report.segments
    );
}
