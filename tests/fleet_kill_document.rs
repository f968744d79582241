//! The fleet parameters in the policy document: `[backend.kill_switch]` and `[backend.leases]`
//! parse, and a bad value is refused with the field and its line.

use tollgate::backend::lease::{Measure, Per};
use tollgate::policy::Policy;

#[path = "common/tempdir.rs"]
mod tempdir;

const DOC: &str = r#"
[policy]
name = "fleet"
owner = "ops"
purpose = "test"
scope = "test"
liability_owner = "ops"
review_cadence = "90d"
data_handling = "none"

[tools.read]
effect = "read"

[roles.worker]
tools = ["read"]
"#;

#[test]
fn the_kill_switch_and_lease_parameters_are_read_from_the_document() {
    let doc = format!(
        "{DOC}
[backend]
kind = \"postgres\"
url_env = \"TOLLGATE_PG_URL\"

[backend.kill_switch]
poll_interval = \"250ms\"
staleness = \"3s\"

[backend.leases]
lease_timeout = \"30s\"
heartbeat = \"5s\"

[[backend.leases.budgets]]
name = \"agent-daily-calls\"
per = \"agent\"
measure = \"calls\"
limit = 10000
window = \"1d\"
chunk = 50
"
    );
    let p = Policy::from_toml(&doc).unwrap();
    let b = p.document().backend.as_ref().unwrap();
    assert_eq!(b.kill_switch.poll_interval.as_millis(), 250);
    assert_eq!(b.kill_switch.staleness.as_secs(), 3);
    assert_eq!(b.leases.lease_timeout.as_secs(), 30);
    let budget = &b.leases.budgets[0];
    assert_eq!((budget.per, budget.measure), (Per::Agent, Measure::Calls));
    assert_eq!((budget.limit, budget.chunk()), (10_000, 50));
}

#[test]
fn a_staleness_bound_within_one_poll_is_refused_with_its_field() {
    let doc = format!("{DOC}\n[backend.kill_switch]\npoll_interval = \"5s\"\nstaleness = \"2s\"\n");
    let e = Policy::from_toml(&doc).unwrap_err().to_string();
    assert!(e.contains("backend.kill_switch.staleness"), "{e}");
}

#[test]
fn shared_budgets_on_the_files_backend_need_its_shared_directory() {
    let doc = format!(
        "{DOC}\n[[backend.leases.budgets]]\nname = \"b\"\nper = \"fleet\"\nmeasure = \"tokens\"\nlimit = 5\nwindow = \"1m\"\n"
    );
    let p = Policy::from_toml(&doc).unwrap();
    let section = p.document().backend.clone().unwrap();
    let e = tollgate::backend::lease::open(&section, "h")
        .unwrap_err()
        .to_string();
    assert!(e.contains("[backend] dir"), "{e}");
    // With the directory the processes of the host share, the same budgets open.
    // A directory that does not exist yet, inside a temp dir removed on drop (even on panic).
    let tmp = tempdir::temp_dir("leases-doc", "budgets");
    let dir = tmp.path().join("leases");
    let mut section = section;
    section.dir = Some(dir.clone());
    let leases = tollgate::backend::lease::open(&section, "h")
        .unwrap()
        .expect("one budget");
    leases.shutdown().unwrap();
    // An unknown field is a located error, not silently ignored.
    let doc = format!("{DOC}\n[backend.leases]\nheartbeats = \"1s\"\n");
    let e = Policy::from_toml(&doc).unwrap_err().to_string();
    assert!(e.contains("heartbeats"), "{e}");
}
