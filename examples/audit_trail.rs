//! A short agent session recorded into a hash-chained file sink: the log verifies, a tampered
//! copy is caught at the record that was changed, a copy whose tail was cut off is caught by the
//! witness kept in another directory, and a secret argument never reaches the disk (not even
//! when the tool quotes it in its error). Run with `cargo run --example audit_trail`.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tollgate::audit::file::{
    self, DirWitness, Durability, FileSink, FileSinkConfig, VerifyOptions, WitnessConfig,
};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::breaker::TracingAlerts;
use tollgate::{Guard, Outcome, RunContext, ToolCall};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Removed when `tmp` drops (also on an early return or a panic); `close` below reports a
    // failure.
    let tmp = tempfile::Builder::new()
        .prefix("tollgate-audit-trail-")
        .tempdir()?;
    let root = tmp.path();
    let dir = root.join("audit");
    // The witness lives outside the audit directory (ideally on another volume or host).
    std::fs::create_dir_all(root.join("witness"))?;
    let witness = DirWitness::new(root.join("witness").join("head.json"));

    // 1. A session: a lookup, a denied attempt outside the matter, a filing with an API key.
    let boundary = ActionBoundary::builder()
        .tiers(["internal", "privileged"])
        .tool(
            "search_matter",
            ToolSpec::read()
                .tier("privileged")
                .arg("matter_id", Arg::string().required().pattern("M-[0-9]{4}"))
                .arg("query", Arg::string().required().sensitive()),
        )
        .tool(
            "file_with_court",
            ToolSpec::irreversible()
                .tier("privileged")
                .arg("matter_id", Arg::string().required())
                .arg("api_key", Arg::string().required().secret()),
        )
        .role(
            "paralegal",
            RoleSpec::new()
                .clearance("privileged")
                .tools(["search_matter", "file_with_court"]),
        )
        .build()?;
    let (sink, _) = FileSink::open(
        &dir,
        FileSinkConfig::default()
            .durability(Durability::EveryRecord)
            .witness(WitnessConfig::new(Arc::new(witness.clone())))
            .alerts(Arc::new(TracingAlerts)),
    )?;
    let sink = Arc::new(sink);
    let guard = Guard::builder(boundary).audit(sink.clone()).build()?;
    let run = guard.start_run(
        RunContext::new("intake-agent", "paralegal")
            .triggered_by("attorney:r.diaz")
            .in_compartment("M-1042"),
    )?;
    let search = json!({ "matter_id": "M-1042", "query": "settlement terms with Acme" });
    let permit = guard
        .check(&run, &ToolCall::new("search_matter", &search))
        .into_permit()?;
    permit.complete(Outcome::success().with_tokens(900, 120))?;
    let outside = json!({ "matter_id": "other-matter", "query": "x" });
    let denied = guard.check(&run, &ToolCall::new("search_matter", &outside));
    println!(
        "denied: {}",
        denied.denial().map(|d| d.reason()).unwrap_or("?")
    );
    drop(denied);
    run.note_reasoning("the filing deadline is today; filing the prepared motion")?;
    let filing = json!({ "matter_id": "M-1042", "api_key": "sk-live-PLANTED-0042" });
    // The court's API refuses the key, and the tool's error quotes it: the record will not.
    let refused: Result<(), _> = guard.execute(
        &run,
        &ToolCall::new("file_with_court", &filing),
        |_permit| Err("court API: key sk-live-PLANTED-0042 is not authorised for M-1042"),
    );
    assert!(refused.is_err());
    println!("filing: refused by the court API; its error is recorded without the key");
    run.finish()?;
    drop(guard);
    drop(sink); // flushes and closes the writer

    // 2. The log verifies.
    let report = file::verify(&dir)?;
    println!(
        "verify: {} records in {} segment(s), head {}",
        report.records,
        report.segments,
        &report.head_hash[..16]
    );
    let text = read_all(&dir)?;
    assert!(!text.contains("PLANTED"), "a secret reached the disk");
    assert!(!text.contains("Acme"), "a sensitive value reached the disk");
    println!("the API key and the search query are redacted on disk");
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line)?;
        let event = record["event"].to_string();
        let cut = event
            .char_indices()
            .nth(160)
            .map_or(event.len(), |(i, _)| i);
        println!("  #{} {}", record["seq"], &event[..cut]);
    }

    // 3. Tamper with a copy: turn the recorded denial into an allow.
    let copy = root.join("tampered");
    copy_dir(&dir, &copy)?;
    let segment = first_segment(&copy)?;
    let original = std::fs::read_to_string(&segment)?;
    let forged = original.replacen(
        "\"tollgate.decision\":\"deny\"",
        "\"tollgate.decision\":\"allow\"",
        1,
    );
    assert_ne!(original, forged);
    std::fs::write(&segment, forged)?;
    match file::verify(&copy) {
        Ok(_) => panic!("tampering went unnoticed"),
        Err(e) => println!("tampered copy: {e}"),
    }

    // 4. Cut the last record off another copy: the chain alone cannot tell, the witness can.
    let cut = root.join("cut");
    copy_dir(&dir, &cut)?;
    let segment = first_segment(&cut)?;
    let text = std::fs::read_to_string(&segment)?;
    let keep = text.trim_end().rfind('\n').map_or(0, |i| i + 1);
    std::fs::write(&segment, &text[..keep])?;
    let shorter = file::verify(&cut)?;
    println!("cut copy, chain only: ok, {} records", shorter.records);
    match file::verify_with(&cut, &VerifyOptions::new().witness(&witness)?) {
        Ok(_) => panic!("the cut went unnoticed"),
        Err(e) => println!("cut copy, with the witness: {e}"),
    }
    tmp.close()?;
    Ok(())
}

fn segments(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut v: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    Ok(v)
}

fn first_segment(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    segments(dir)?
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("no segment"))
}

fn read_all(dir: &Path) -> std::io::Result<String> {
    let mut s = String::new();
    for p in segments(dir)? {
        s.push_str(&std::fs::read_to_string(p)?);
    }
    Ok(s)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
