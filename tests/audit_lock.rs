//! One writer per audit directory (issue 10, finding 9): a second `FileSink::open` on a
//! directory already open, from this process or from another one, is refused with an error
//! naming the holder, and the log stays openable.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tollgate::audit::file::{self, FileSink, FileSinkConfig, LOCK_FILE};
use tollgate::audit::{AuditError, AuditEvent, AuditSink, EventKind};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("audit-lock", name)
}

fn event(seq: u64) -> AuditEvent<'static> {
    AuditEvent::new(
        seq,
        std::time::SystemTime::now(),
        None,
        None,
        EventKind::RunFinished {
            duration: Duration::ZERO,
        },
    )
}

#[test]
fn a_second_sink_in_the_same_process_is_refused_and_names_this_process() {
    let dir = temp_dir("same-process");
    let (first, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    first.record(&event(1)).unwrap();
    let err = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap_err();
    match &err {
        AuditError::DirectoryLocked { dir: d, holder } => {
            assert_eq!(d, dir.path());
            let holder = holder.as_ref().expect("the holder wrote who it is");
            assert_eq!(holder.pid, std::process::id());
            assert!(holder.is_this_process());
        }
        e => panic!("expected DirectoryLocked, got {e}"),
    }
    let text = err.to_string();
    assert!(text.contains(&std::process::id().to_string()), "{text}");
    // The first sink was not disturbed, and once it is closed the directory opens again.
    first.record(&event(2)).unwrap();
    first.close().unwrap();
    let (again, rec) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    assert_eq!(rec.records, 2);
    again.record(&event(3)).unwrap();
    drop(again);
    assert_eq!(file::verify(dir.path()).unwrap().records, 3);
}

#[test]
fn sinks_racing_to_open_one_directory_leave_exactly_one_writer_and_a_clean_log() {
    let dir = temp_dir("race");
    let opened: Vec<Option<(FileSink, file::Recovery)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| FileSink::open(dir.path(), FileSinkConfig::default()).ok()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<FileSink> = opened.into_iter().flatten().map(|(s, _)| s).collect();
    assert_eq!(winners.len(), 1, "exactly one sink may hold the directory");
    let sink = Arc::new(winners.into_iter().next().unwrap());
    for seq in 1..=10 {
        sink.record(&event(seq)).unwrap();
    }
    drop(sink);
    assert_eq!(file::verify(dir.path()).unwrap().records, 10);
}

const CHILD_DIR: &str = "TOLLGATE_AUDIT_LOCK_CHILD_DIR";
const CHILD_TEST: &str = "another_process_holding_the_directory_is_named_and_its_death_frees_it";

/// The child: opens the sink, says so, records, and waits until its stdin closes (or it is
/// killed).
fn child(dir: &str) {
    let (sink, _) = FileSink::open(dir, FileSinkConfig::default()).expect("child open");
    sink.record(&event(1)).unwrap();
    // Straight to the file descriptor: the test harness captures `println!`.
    let mut out = std::io::stdout().lock();
    writeln!(out, "LOCKED {}", std::process::id()).unwrap();
    out.flush().unwrap();
    drop(out);
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(sink);
}

#[test]
fn another_process_holding_the_directory_is_named_and_its_death_frees_it() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        return child(&dir);
    }
    let dir = temp_dir("cross-process");
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(kid.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { break };
            // The harness may have written `test <name> ... ` on the same line first.
            if let Some((_, pid)) = line.trim().split_once("LOCKED ") {
                let _ = tx.send(pid.parse::<u32>().unwrap());
                break;
            }
        }
    });
    let Ok(pid) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = kid.kill();
        panic!("the child did not report holding the lock");
    };
    assert_eq!(pid, kid.id());
    let lock_text = fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
    assert!(lock_text.contains(&format!("pid={pid}")), "{lock_text}");

    let err = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap_err();
    match &err {
        AuditError::DirectoryLocked { holder, .. } => {
            let holder = holder.as_ref().expect("the child wrote who it is");
            assert_eq!(holder.pid, pid);
            assert!(!holder.is_this_process());
        }
        e => panic!("expected DirectoryLocked, got {e}"),
    }
    assert!(err.to_string().contains(&format!("process {pid}")), "{err}");

    // SIGKILL: the OS releases the lock with the process; the log opens and holds its record.
    kid.kill().unwrap();
    kid.wait().unwrap();
    let (sink, rec) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    assert_eq!(rec.records, 1);
    sink.record(&event(2)).unwrap();
    sink.close().unwrap();
    assert_eq!(file::verify(dir.path()).unwrap().records, 2);
}
