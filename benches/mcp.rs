//! Added latency of the MCP gateway per `tools/call`, over stdio.
//!
//! Run with `cargo bench --features mcp --bench mcp` (needs Node.js: the downstream server is the
//! dependency-free `tests/mcp/fake_server.mjs`). Two clients call the same server's `echo`:
//! `direct` spawns it and speaks to it over stdio; `gateway` speaks newline-delimited JSON-RPC to
//! an in-process gateway (the same framing as over stdio) that checks the call with the guard
//! and forwards it to its own spawned copy of the server. The difference is the gateway's cost:
//! one more JSON-RPC hop (parse, serialise, write, read) plus `Guard::check` and completing the
//! permit. `guard_check` measures that check alone, so the hop's own cost is the rest.
//!
//! Besides criterion's distribution (on a single-threaded runtime), the bench prints p50 and p99
//! of 3000 sequential calls each way and their difference, on a multi-threaded and on a
//! single-threaded tokio runtime.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::json;
use tollgate::integrations::mcp::Gateway;
use tollgate::policy::{Bindings, Policy};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

const SAMPLES: usize = 3000;

fn node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("node"))
        .find(|c| c.is_file())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/fake_server.mjs")
}

fn policy(node: &Path) -> Policy {
    Policy::from_toml(&format!(
        r#"
[policy]
name = "bench"
owner = "bench"
purpose = "bench"
scope = "bench"
liability_owner = "bench"
review_cadence = "90d"
data_handling = "none"

[tools.echo]
effect = "read"
args.message = {{ type = "string", required = true, max_length = 100 }}

[roles.agent]
tools = ["echo"]

[mcp.connection]
agent = "bench"
role = "agent"

[mcp.servers.fake]
command = "{}"
args = ["{}"]
"#,
        node.display(),
        script().display()
    ))
    .expect("policy")
}

fn params() -> CallToolRequestParams {
    let serde_json::Value::Object(args) = json!({"message": "hello"}) else {
        unreachable!()
    };
    CallToolRequestParams::new("echo").with_arguments(args)
}

async fn direct(node: &Path) -> RunningService<RoleClient, ()> {
    let mut cmd = tokio::process::Command::new(node);
    cmd.arg(script());
    ().serve(TokioChildProcess::new(cmd).expect("spawn"))
        .await
        .expect("initialise")
}

async fn via_gateway(node: &Path) -> (Arc<Gateway>, RunningService<RoleClient, ()>) {
    let p = policy(node);
    let guard = Arc::new(Guard::from_policy(&p, Bindings::new()).expect("guard"));
    let gateway = Arc::new(Gateway::start(&p, guard).await.expect("gateway"));
    let (client_io, gateway_io) = tokio::io::duplex(1 << 16);
    let (r, w) = tokio::io::split(gateway_io);
    let gw = gateway.clone();
    tokio::spawn(async move { gw.serve(r, w).await });
    let client = ().serve(client_io).await.expect("initialise");
    (gateway, client)
}

async fn percentiles(client: &RunningService<RoleClient, ()>) -> (Duration, Duration) {
    let mut t = Vec::with_capacity(SAMPLES);
    for _ in 0..200 {
        client.call_tool(params()).await.expect("warm-up");
    }
    for _ in 0..SAMPLES {
        let start = Instant::now();
        black_box(client.call_tool(params()).await.expect("call"));
        t.push(start.elapsed());
    }
    t.sort();
    (t[SAMPLES / 2], t[SAMPLES * 99 / 100])
}

/// p50 and p99 of both paths on `rt`, printed; returns the clients for criterion.
fn measure(
    rt: &tokio::runtime::Runtime,
    node: &Path,
    flavor: &str,
) -> (
    RunningService<RoleClient, ()>,
    Arc<Gateway>,
    RunningService<RoleClient, ()>,
) {
    let direct = rt.block_on(direct(node));
    let (gateway, via) = rt.block_on(via_gateway(node));
    let (d50, d99) = rt.block_on(percentiles(&direct));
    let (g50, g99) = rt.block_on(percentiles(&via));
    println!(
        "mcp tools/call over stdio ({flavor} runtime), {SAMPLES} sequential calls: direct p50 \
         {d50:?} p99 {d99:?}; via gateway p50 {g50:?} p99 {g99:?}; added p50 {:?} p99 {:?}",
        g50.saturating_sub(d50),
        g99.saturating_sub(d99),
    );
    (direct, gateway, via)
}

fn bench(c: &mut Criterion) {
    let Some(node) = node() else {
        eprintln!("SKIPPED: the mcp bench needs `node` on PATH");
        return;
    };
    // Multi-threaded (what `tollgate mcp` runs) and single-threaded (no cross-thread wake-ups
    // between the hops: closer to the gateway's own CPU cost on a loaded machine).
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (d, gw, v) = measure(&multi, &node, "multi-thread");
    multi.block_on(async {
        let _ = v.cancel().await;
        let _ = d.cancel().await;
        gw.shutdown();
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (direct, gateway, via) = measure(&rt, &node, "current-thread");

    // The guard's own check, as the gateway makes it (parsed arguments, allow, complete).
    let guard = gateway.guard().clone();
    let run = guard
        .start_run(RunContext::new("bench", "agent"))
        .expect("run");
    let args = json!({"message": "hello"});
    let check = || {
        let v = guard.check(&run, &ToolCall::new("echo", &args));
        match v {
            Verdict::Allow(p) => p.complete(Outcome::success()).expect("complete"),
            _ => panic!("denied"),
        }
    };
    let mut checks = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let s = Instant::now();
        check();
        checks.push(s.elapsed());
    }
    checks.sort();
    println!(
        "guard check (allow + complete, no sink): p50 {:?} p99 {:?}",
        checks[SAMPLES / 2],
        checks[SAMPLES * 99 / 100]
    );

    let mut g = c.benchmark_group("mcp");
    g.bench_function("direct_echo", |b| {
        b.iter(|| rt.block_on(direct.call_tool(params())).expect("call"))
    });
    g.bench_function("gateway_echo", |b| {
        b.iter(|| rt.block_on(via.call_tool(params())).expect("call"))
    });
    g.bench_function("guard_check", |b| b.iter(check));
    g.finish();
    drop(run);
    rt.block_on(async {
        let _ = via.cancel().await;
        let _ = direct.cancel().await;
        gateway.shutdown();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
