//! The gateway in front of the real `@modelcontextprotocol/server-filesystem` (from npm): reads
//! inside the root are allowed, writes are hidden and denied for a read-only role, and path
//! escapes are denied by the guard before the server sees them.
#![cfg(feature = "mcp")]

mod common;

use common::node::harness::{self, METADATA, is_error, text};
use serde_json::json;
use tollgate::policy::Policy;

fn policy(bin: &std::path::Path, root: &std::path::Path) -> Policy {
    let root = root.display();
    let text = format!(
        r#"{METADATA}
[tools.read_text_file]
effect = "read"
args.path = {{ type = "string", required = true, path_under = "{root}" }}
args.head = {{ type = "integer" }}
args.tail = {{ type = "integer" }}

[tools.list_directory]
effect = "read"
args.path = {{ type = "string", required = true, path_under = "{root}" }}

[tools.write_file]
effect = "write"
args.path = {{ type = "string", required = true, path_under = "{root}" }}
args.content = {{ type = "string", required = true }}

[roles.reader]
tools = ["read_text_file", "list_directory"]

[roles.editor]
tools = ["read_text_file", "list_directory", "write_file"]

[mcp.connection]
agent = "desktop"
role = "reader"

[mcp.servers.fs]
command = "{bin}"
args = ["{root}"]
"#,
        bin = bin.display()
    );
    Policy::from_toml(&text).expect("policy")
}

struct Fixture {
    /// The scratch directory holding `root` and `outside`, removed on drop.
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let base = common::tempdir::temp_dir("mcp-fs", name);
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("notes.txt"), "hello from inside the root").unwrap();
    std::fs::write(outside.join("secret.txt"), "TOP SECRET outside the root").unwrap();
    // Canonical paths: the server compares against its resolved root.
    let root = root.canonicalize().unwrap();
    let outside = outside.canonicalize().unwrap();
    Fixture {
        _dir: base,
        root,
        outside,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_inside_the_root_are_allowed_and_reach_the_server() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let fx = fixture("read");
    let h = harness::start(&policy(&node.bin("mcp-server-filesystem"), &fx.root)).await;
    let path = fx.root.join("notes.txt");
    let r = h
        .call("read_text_file", json!({"path": path.to_str().unwrap()}))
        .await;
    assert!(!is_error(&r), "{r:?}");
    assert_eq!(text(&r), "hello from inside the root");
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["gen_ai.tool.name"], "read_text_file");
    // The trail keeps a digest of the result, not the file's content.
    let recorded = outcomes[0].to_string();
    assert!(!recorded.contains("hello from inside"), "{recorded}");
    assert!(recorded.contains("sha256:"), "{recorded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_tools_are_hidden_from_a_read_only_role_and_denied_like_unknown_tools() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let fx = fixture("write");
    let h = harness::start(&policy(&node.bin("mcp-server-filesystem"), &fx.root)).await;
    assert_eq!(h.tool_names().await, ["list_directory", "read_text_file"]);
    let target = fx.root.join("new.txt");
    let write = h
        .call(
            "write_file",
            json!({"path": target.to_str().unwrap(), "content": "x"}),
        )
        .await;
    let unknown = h.call("delete_everything", json!({})).await;
    // Tools the server has but the policy does not name are not offered either.
    let unlisted = h
        .call("move_file", json!({"source": "a", "destination": "b"}))
        .await;
    assert!(is_error(&write) && is_error(&unknown) && is_error(&unlisted));
    // A hidden tool and a tool that does not exist get the same answer.
    assert_eq!(text(&write), text(&unknown));
    assert_eq!(text(&unlisted), text(&unknown));
    assert!(!target.exists(), "the write reached the server");
    assert!(h.events("outcome").is_empty(), "no call was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_escapes_are_denied_before_the_server_sees_them() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let fx = fixture("escape");
    let h = harness::start(&policy(&node.bin("mcp-server-filesystem"), &fx.root)).await;
    let root = fx.root.display().to_string();
    let secret = fx.outside.join("secret.txt");
    let escapes = [
        format!("{root}/../outside/secret.txt"),
        format!("{root}/%2e%2e/outside/secret.txt"),
        secret.display().to_string(),
        format!("file://{}", secret.display()),
        "~/secret.txt".to_owned(),
        format!("{root}/..\u{a0}/outside/secret.txt"),
        format!("{root}//../outside/secret.txt"),
        format!("{root}\\..\\outside\\secret.txt"),
    ];
    for path in &escapes {
        let r = h.call("read_text_file", json!({"path": path})).await;
        assert!(is_error(&r), "{path} was not refused: {r:?}");
        assert!(!text(&r).contains("TOP SECRET"), "{path} leaked");
    }
    let decisions = h.events("decision");
    assert_eq!(decisions.len(), escapes.len());
    for d in &decisions {
        assert_eq!(d["tollgate.decision"], "deny", "{d}");
    }
    assert!(
        h.events("outcome").is_empty(),
        "an escape reached the server"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_out_of_the_root_passes_the_lexical_check_and_the_server_still_refuses_it() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let fx = fixture("symlink");
    std::os::unix::fs::symlink(&fx.outside, fx.root.join("link")).unwrap();
    let h = harness::start(&policy(&node.bin("mcp-server-filesystem"), &fx.root)).await;
    let path = fx.root.join("link").join("secret.txt");
    let r = h
        .call("read_text_file", json!({"path": path.to_str().unwrap()}))
        .await;
    // The guard cannot see links (its rule is lexical); the server resolves them and refuses.
    // Either way the secret never reaches the client, and the trail has the failed outcome.
    assert!(is_error(&r), "{r:?}");
    assert!(!text(&r).contains("TOP SECRET"));
    let outcomes = h.events("outcome");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        outcomes[0]["tollgate.outcome"]["status"], "error",
        "{}",
        outcomes[0]
    );
}
