//! A log that is not what was recorded: a forged record is refused, naming it; an event that
//! does not parse stops the replay even when the forger recomputed the chain around it.

use super::*;

/// Lowers the recorded payment of 400 (so that it would pass B's limit of 300) in place;
/// returns the forged record's seq and line.
pub(super) fn forge_payment(dir: &Path) -> (u64, u64) {
    let seg = dir.join("audit-000001.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(r#"amount\":400"#) || l.contains(r#""amount":400"#))
        .expect("the payment of 400 is in the log");
    let seq = serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap();
    let forged = line
        .replacen(r#"amount\":400"#, r#"amount\":200"#, 1)
        .replacen(r#""amount":400"#, r#""amount":200"#, 1);
    assert_ne!(forged, line);
    std::fs::write(&seg, text.replacen(line, &forged, 1)).unwrap();
    (seq, i as u64 + 1)
}

#[test]
fn tampered_log_fails_the_replay_naming_the_record() {
    let dir = temp_dir("tampered");
    record_session(dir.path());
    let (seq, line) = forge_payment(dir.path());

    let err = policy(&B, "").replay(dir.path()).run().unwrap_err();
    let ReplayError::Log(e) = &err else {
        panic!("a log error: {err}");
    };
    let at = e.location().expect("the bad record is located");
    assert_eq!((at.seq, at.line), (Some(seq), line), "{err}");
    assert!(at.file.ends_with("audit-000001.jsonl"), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("line {line} ")) && msg.contains(&format!("seq {seq}:")),
        "{msg}"
    );
    assert!(msg.contains("record modified"), "{msg}");

    // Without verification the forged record is replayed as it now reads: one fewer block.
    let blind = policy(&B, "")
        .replay(dir.path())
        .verify(false)
        .run()
        .unwrap();
    assert!(!blind.verified);
    assert_eq!(blind.changes.would_block, 3);
}

/// Rewrites a one-segment log as a forger without a checkpoint key can: `edit` changes events
/// (by seq and kind), and every hash is recomputed, so the chain holds.
fn rechain(dir: &Path, mut edit: impl FnMut(u64, &str, &mut String)) {
    use sha2::{Digest, Sha256};
    let seg = dir.join("audit-000001.jsonl");
    let text = std::fs::read_to_string(&seg).unwrap();
    let mut out = String::new();
    let mut prev = "0".repeat(64);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        let kind = v["event"]["event"].as_str().unwrap().to_owned();
        let start = line.find(",\"event\":").unwrap() + 9;
        let mut event = line[start..line.len() - 1].to_owned();
        edit(seq, &kind, &mut event);
        let mut h = Sha256::new();
        h.update(format!("{prev}\n{seq}\n{event}").as_bytes());
        let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!(
            "{{\"seq\":{seq},\"prev\":\"{prev}\",\"hash\":\"{hash}\",\"event\":{event}}}\n"
        ));
        prev = hash;
    }
    std::fs::write(&seg, out).unwrap();
}

#[test]
fn an_event_that_does_not_parse_stops_the_replay_even_on_a_sound_chain() {
    // The records' JSON syntax is checked by the replay's own parse of each event (not a
    // second time while verifying): an event that does not parse is an error naming it,
    // whatever its kind, and never skipped.
    let dir = temp_dir("syntax");
    record_session(dir.path());
    let before = policy(&B, "").replay(dir.path()).run().unwrap();
    let kinds = std::cell::RefCell::new(Vec::new());
    rechain(dir.path(), |seq, kind, _| {
        kinds.borrow_mut().push((seq, kind.to_owned()))
    });
    let kinds = kinds.into_inner();
    let first = |k: &str| kinds.iter().find(|(_, x)| x == k).unwrap().0;
    // A kind the replay does not act on.
    let (other, other_kind) = kinds
        .iter()
        .find(|(_, k)| k.starts_with("escalation_") && k != "escalation_resumed")
        .cloned()
        .expect("the session escalates once");
    // The rechained log replays as before.
    assert_eq!(
        policy(&B, "").replay(dir.path()).run().unwrap().changes,
        before.changes
    );

    for (target, kind) in [
        (first("decision"), "decision".to_owned()),
        (other, other_kind),
    ] {
        let copy = temp_dir("syntax-copy");
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        }
        // `"event":"<kind>",` loses its closing quote: not JSON any more.
        rechain(copy.path(), |seq, _, event| {
            if seq == target {
                *event = event.replacen(&format!("\"{kind}\","), &format!("\"{kind},"), 1);
            }
        });
        assert!(
            tollgate::audit::file::verify(copy.path()).is_err(),
            "verify refuses it too"
        );
        let err = policy(&B, "").replay(copy.path()).run().unwrap_err();
        assert!(
            matches!(err, ReplayError::Malformed { seq, field: "event", .. } if seq == target),
            "{kind}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("record seq {target}: ")),
            "{err}"
        );
    }

    // Sound JSON of an unexpected shape in a kind the replay does not act on is not its
    // concern; in a kind it acts on, it is an error.
    rechain(dir.path(), |seq, _, event| {
        if seq == other {
            *event = event.replacen("{", r#"{"tollgate.flags":"not a list","#, 1);
        }
    });
    let report = policy(&B, "").replay(dir.path()).run().unwrap();
    assert_eq!(report.changes, before.changes);
    let target = first("decision");
    rechain(dir.path(), |seq, _, event| {
        if seq == target {
            *event = event.replacen("{", r#"{"tollgate.flags":"not a list","#, 1);
        }
    });
    let err = policy(&B, "").replay(dir.path()).run().unwrap_err();
    assert!(
        matches!(err, ReplayError::Malformed { seq, .. } if seq == target),
        "{err}"
    );
}
