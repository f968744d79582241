//! Protocol coverage against the real `@modelcontextprotocol/server-everything` (from npm):
//! text, structured and image results pass through; argument rules apply before the server;
//! the built `tollgate mcp` binary serves a client over stdio.
#![cfg(feature = "mcp")]

mod common;

use common::node::harness::{self, METADATA, is_error, text};
use serde_json::json;
use tollgate::policy::Policy;

fn document(bin: &std::path::Path) -> String {
    format!(
        r#"{METADATA}
[tools.echo]
effect = "read"
args.message = {{ type = "string", required = true, max_length = 200 }}

[tools.get-sum]
effect = "read"
args.a = {{ type = "number", required = true }}
args.b = {{ type = "number", required = true }}

[tools.get-structured-content]
effect = "read"
args.location = {{ type = "string", required = true, enum = ["New York", "Chicago"] }}

[tools.get-tiny-image]
effect = "read"

[tools.get-env]
effect = "read"

[roles.agent]
tools = ["echo", "get-sum", "get-structured-content", "get-tiny-image"]

[mcp.connection]
agent = "agent-1"
role = "agent"

[mcp.servers.everything]
command = "{bin}"
args = ["stdio"]
"#,
        bin = bin.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_structured_and_image_results_pass_through_and_argument_rules_apply_first() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let p = Policy::from_toml(&document(&node.bin("mcp-server-everything"))).unwrap();
    let h = harness::start(&p).await;
    // get-env is in the policy but not the role's: hidden (it would print the environment).
    assert_eq!(
        h.tool_names().await,
        [
            "echo",
            "get-structured-content",
            "get-sum",
            "get-tiny-image"
        ]
    );

    assert!(
        h.text_of("echo", json!({"message": "hello"}))
            .await
            .contains("hello")
    );
    assert!(
        h.text_of("get-sum", json!({"a": 2, "b": 3}))
            .await
            .contains('5')
    );

    let s = h
        .call("get-structured-content", json!({"location": "Chicago"}))
        .await;
    assert!(!is_error(&s), "{s:?}");
    assert!(s.structured_content.is_some(), "{s:?}");

    let img = h.call("get-tiny-image", json!({})).await;
    assert!(!is_error(&img));
    assert!(
        img.content.iter().any(|c| c.as_image().is_some()),
        "{img:?}"
    );

    // Argument rules are the guard's, before the server: a wrong type, an enum miss, a long
    // message, a hidden tool.
    let before = h.events("outcome").len();
    for (tool, args) in [
        ("get-sum", json!({"a": "2", "b": 3})),
        ("get-structured-content", json!({"location": "Los Angeles"})),
        ("echo", json!({"message": "x".repeat(201)})),
        ("get-env", json!({})),
    ] {
        let r = h.call(tool, args).await;
        assert!(is_error(&r), "{tool} was not refused");
    }
    assert_eq!(
        h.events("outcome").len(),
        before,
        "a refused call reached the server"
    );
    let hidden = h.call("get-env", json!({})).await;
    let unknown = h.call("no-such-tool", json!({})).await;
    assert_eq!(text(&hidden), text(&unknown));
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tollgate_mcp_binary_serves_a_client_over_stdio() {
    use rmcp::ServiceExt;
    use rmcp::transport::TokioChildProcess;

    let Some(node) = common::node::servers() else {
        return;
    };
    let tmp = common::tempdir::temp_dir("mcp-cli", "stdio");
    let dir = tmp.path();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, document(&node.bin("mcp-server-everything"))).unwrap();

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("mcp").arg("--no-audit").arg("--policy").arg(&file);
    let client = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
    let info = client.peer().peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("tollgate")
    );
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 4);
    let r = harness::call(&client, "echo", json!({"message": "via the binary"})).await;
    assert!(text(&r).contains("via the binary"), "{r:?}");
    let denied = harness::call(&client, "get-env", json!({})).await;
    assert!(is_error(&denied));
    client.cancel().await.unwrap();
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tollgate_kill_stops_a_running_tollgate_mcp_and_resume_lifts_it() {
    use rmcp::ServiceExt;
    use rmcp::transport::TokioChildProcess;

    let Some(node) = common::node::servers() else {
        return;
    };
    let tmp = common::tempdir::temp_dir("mcp-kill", "suspend-resume");
    let dir = tmp.path();
    let file = dir.join("gateway.toml");
    let doc = format!(
        "{}\n[backend]\nkind = \"files\"\n[backend.kill_switch]\ndir = \"{}\"\npoll_interval = \"20ms\"\nstaleness = \"2s\"\n",
        document(&node.bin("mcp-server-everything")),
        dir.join("switch").display()
    );
    std::fs::write(&file, doc).unwrap();
    let kill = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("kill")
            .args(args)
            .arg("--policy")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tollgate kill {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The switch's state file exists before the gateway starts (a missing one is not read as
    // "nothing suspended").
    kill(&["resume", "--all", "--by", "ops"]);

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("mcp").arg("--no-audit").arg("--policy").arg(&file);
    let client = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
    let r = harness::call(&client, "echo", json!({"message": "before"})).await;
    assert!(text(&r).contains("before"), "{r:?}");

    kill(&["suspend", "--all", "--by", "ops", "--reason", "incident 42"]);
    let start = std::time::Instant::now();
    loop {
        let r = harness::call(&client, "echo", json!({"message": "during"})).await;
        if is_error(&r) {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the gateway still runs calls 10 s after tollgate kill"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    kill(&["resume", "--all", "--by", "ops"]);
    let start = std::time::Instant::now();
    loop {
        let r = harness::call(&client, "echo", json!({"message": "after"})).await;
        if !is_error(&r) {
            assert!(text(&r).contains("after"), "{r:?}");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the gateway still refuses calls 10 s after the resume"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    client.cancel().await.unwrap();
}

#[cfg(feature = "cli")]
#[test]
fn the_official_typescript_sdk_client_drives_the_gateway() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let tmp = common::tempdir::temp_dir("mcp-ts", "sdk-client");
    let dir = tmp.path();
    let file = dir.join("gateway.toml");
    std::fs::write(&file, document(&node.bin("mcp-server-everything"))).unwrap();
    // Next to the installed node_modules, so the script's imports resolve.
    let script = node.dir.join("ts_client.mjs");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/ts_client.mjs"),
        &script,
    )
    .unwrap();
    let out = std::process::Command::new(&node.node)
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(seen["server"]["name"], "tollgate");
    assert_eq!(
        seen["tools"],
        json!([
            "echo",
            "get-structured-content",
            "get-sum",
            "get-tiny-image"
        ])
    );
    assert!(
        seen["echo"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("from typescript"),
        "{seen}"
    );
    assert_eq!(seen["hidden"]["isError"], true);
    assert_eq!(seen["hidden"]["content"][0]["text"], "tool not available");
}
