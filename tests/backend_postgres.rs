//! The PostgreSQL backend's plumbing: the document's `[backend]` section, connecting, schemas.
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::pg::{fresh_backend, pg_url};
use tollgate::backend::postgres::{BackendError, PgBackend};
use tollgate::policy::Policy;

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
fn the_backend_section_names_an_environment_variable_never_the_secret() {
    let doc =
        format!("{DOC}\n[backend]\nkind = \"postgres\"\nurl_env = \"postgresql://u:pw@db/x\"\n");
    let e = Policy::from_toml(&doc).unwrap_err().to_string();
    assert!(e.contains("backend.url_env"), "{e}");
    assert!(e.contains("line"), "located: {e}");

    let doc = format!(
        "{DOC}\n[backend]\nkind = \"postgres\"\nurl_env = \"TG_TEST_UNSET_VAR\"\nschema = \"Bad-Name\"\n"
    );
    let e = Policy::from_toml(&doc).unwrap_err().to_string();
    assert!(e.contains("backend.schema"), "{e}");

    let doc = format!("{DOC}\n[backend]\nkind = \"postgres\"\nurl_env = \"TG_TEST_UNSET_VAR\"\n");
    let policy = Policy::from_toml(&doc).unwrap();
    let section = policy.document().backend.as_ref().unwrap();
    match PgBackend::from_section(section) {
        Err(BackendError::MissingUrl { var }) => assert_eq!(var, "TG_TEST_UNSET_VAR"),
        other => panic!("expected MissingUrl, got {other:?}"),
    }
}

#[test]
fn a_bad_connection_string_is_refused_without_repeating_it() {
    let e = PgBackend::from_url(
        "host=h port=notaport password=hunter2",
        "s",
        Duration::from_secs(1),
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn an_unreachable_database_is_an_error_not_a_hang() {
    // A port nothing listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = PgBackend::from_url(
        &format!("host=127.0.0.1 port={port} user=postgres"),
        "s",
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(matches!(b.connect(), Err(BackendError::Connect(_))));
}

#[test]
fn connecting_creates_the_schema_even_when_hosts_race() {
    let Some(backend) = fresh_backend("race") else {
        return;
    };
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let b = backend.clone();
            std::thread::spawn(move || b.connect().map(|_| ()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().expect("every racing host connects");
    }
    let mut c = backend.connect().unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[&backend.schema()],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert!(pg_url().is_some());
}
