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
//! single-threaded tokio runtime. Without criterion, `TOLLGATE_MCP_PROBE=pair` measures both
//! paths interleaved (p50/p99 of the added latency under the same load) and
//! `TOLLGATE_MCP_PROBE=direct|gateway` counts per call (see [`probe`]). With
//! `TOLLGATE_MCP_PROBE_GATEWAY=process` (build with `--features mcp,cli`) the probes' gateway is
//! `tollgate mcp --policy FILE` as its own process over real pipes, as a desktop client runs it.

#[path = "shared/cpu.rs"]
mod cpu;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
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
    Policy::from_toml(&policy_text(node)).expect("policy")
}

fn policy_text(node: &Path) -> String {
    format!(
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
    )
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

/// The gateway as its own process: the `tollgate` binary's `mcp` command on a policy file.
async fn via_gateway_process(node: &Path) -> RunningService<RoleClient, ()> {
    let Some(bin) = option_env!("CARGO_BIN_EXE_tollgate") else {
        panic!("TOLLGATE_MCP_PROBE_GATEWAY=process needs the binary: add `--features mcp,cli`");
    };
    let file = std::env::temp_dir().join(format!("tollgate-mcp-bench-{}.toml", std::process::id()));
    std::fs::write(&file, policy_text(node)).expect("policy file");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("mcp").arg("--policy").arg(&file);
    let client = ().serve(TokioChildProcess::new(cmd).expect("spawn")).await.expect("initialise");
    // Read at start: no longer needed.
    let _ = std::fs::remove_file(&file);
    client
}

/// The probes' gateway: in process (default) or `TOLLGATE_MCP_PROBE_GATEWAY=process`.
async fn probe_gateway(node: &Path) -> (Option<Arc<Gateway>>, RunningService<RoleClient, ()>) {
    match std::env::var("TOLLGATE_MCP_PROBE_GATEWAY").as_deref() {
        Ok("process") => (None, via_gateway_process(node).await),
        _ => {
            let (g, c) = via_gateway(node).await;
            (Some(g), c)
        }
    }
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

/// Voluntary and involuntary context switches of every thread of this process so far.
fn context_switches() -> (u64, u64) {
    let mut total = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    for t in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let n = |l: &str| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if line.starts_with("voluntary_ctxt_switches") {
                total.0 += n(line).unwrap_or(0);
            } else if line.starts_with("nonvoluntary_ctxt_switches") {
                total.1 += n(line).unwrap_or(0);
            }
        }
    }
    total
}

/// The sequential calls a probe measures: kept out of line so that callgrind can collect only
/// them (`--toggle-collect='*probe_calls*'`; on the current-thread runtime every task the calls
/// wake runs inside this `block_on`).
#[inline(never)]
fn probe_calls(rt: &tokio::runtime::Runtime, client: &RunningService<RoleClient, ()>, n: usize) {
    rt.block_on(async {
        for _ in 0..n {
            black_box(client.call_tool(params()).await.expect("call"));
        }
    });
}

/// The probes' settings from the environment: the runtime flavour
/// (`TOLLGATE_MCP_PROBE_RT=current|multi`), the number of calls (`TOLLGATE_MCP_PROBE_CALLS`,
/// else `default_calls`) and the runtime itself.
fn probe_setup(default_calls: usize) -> (String, usize, tokio::runtime::Runtime) {
    let flavor = std::env::var("TOLLGATE_MCP_PROBE_RT").unwrap_or_else(|_| "current".into());
    let calls: usize = std::env::var("TOLLGATE_MCP_PROBE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_calls);
    let mut builder = match flavor.as_str() {
        "multi" => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    if flavor == "multi" {
        builder.worker_threads(2);
    }
    let rt = builder.enable_all().build().expect("runtime");
    (flavor, calls, rt)
}

/// Deterministic per-call counts instead of wall-clock times (which are noise on a loaded
/// machine): `TOLLGATE_MCP_PROBE=direct|gateway` (`TOLLGATE_MCP_PROBE_RT=current|multi`,
/// `TOLLGATE_MCP_PROBE_CALLS=N`, default 2000) makes N calls one way after a warm-up and prints
/// the context switches of this process per call. Run it under `strace -c -f` or
/// `valgrind --tool=callgrind --toggle-collect='*probe_calls*'` for syscalls and instructions.
fn probe(mode: &str) {
    let node = node().expect("the probe needs `node` on PATH");
    let (flavor, calls, rt) = probe_setup(2000);
    let (client, gateway) = match mode {
        "direct" => (rt.block_on(direct(&node)), None),
        _ => {
            let (g, c) = rt.block_on(probe_gateway(&node));
            (c, g)
        }
    };
    probe_calls(&rt, &client, 200);
    let (v0, n0) = context_switches();
    let start = Instant::now();
    probe_calls(&rt, &client, calls);
    let elapsed = start.elapsed();
    let (v1, n1) = context_switches();
    let per = |x: u64| x as f64 / calls.max(1) as f64;
    println!(
        "probe {mode} ({flavor} runtime), {calls} calls: {:.2} voluntary + {:.2} involuntary \
         context switches per call (this process); mean {:?} per call",
        per(v1 - v0),
        per(n1 - n0),
        elapsed / calls.max(1) as u32,
    );
    rt.block_on(async {
        let _ = client.cancel().await;
        if let Some(g) = gateway {
            g.shutdown();
        }
    });
}

/// Wall-clock latency of both paths on one runtime, interleaved so that both see the same load:
/// `TOLLGATE_MCP_PROBE=pair` (`TOLLGATE_MCP_PROBE_RT`, `TOLLGATE_MCP_PROBE_CALLS=N`: N calls each
/// way, in alternating blocks of 100) prints p50 and p99 of each and of the difference.
fn pair() {
    let node = node().expect("the probe needs `node` on PATH");
    let (flavor, calls, rt) = probe_setup(5000);
    let direct = rt.block_on(direct(&node));
    let (gateway, via) = rt.block_on(probe_gateway(&node));
    let place = if gateway.is_some() {
        "in process"
    } else {
        "own process"
    };
    probe_calls(&rt, &direct, 200);
    probe_calls(&rt, &via, 200);
    let timed = |client: &RunningService<RoleClient, ()>, n: usize, into: &mut Vec<Duration>| {
        rt.block_on(async {
            for _ in 0..n {
                let start = Instant::now();
                black_box(client.call_tool(params()).await.expect("call"));
                into.push(start.elapsed());
            }
        })
    };
    // The gateway process's own CPU time over its calls (its threads' schedstat, in ns): what
    // it costs the machine per call, whatever the scheduler's delays on a loaded machine.
    // For scale: the directly called server's (node's) own CPU time over the direct calls.
    let gateway_pid = gateway.is_none().then(|| child_named("tollgate")).flatten();
    let server_pid = child_named("node");
    let (mut gateway_cpu, mut server_cpu) = (0, 0);
    let (mut d, mut g) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    while d.len() < calls {
        let n = 100.min(calls - d.len());
        let before = server_pid.map_or(0, cpu_ns);
        timed(&direct, n, &mut d);
        server_cpu += server_pid.map_or(0, cpu_ns) - before;
        let before = gateway_pid.map_or(0, cpu_ns);
        timed(&via, n, &mut g);
        gateway_cpu += gateway_pid.map_or(0, cpu_ns) - before;
    }
    d.sort();
    g.sort();
    let at = |v: &[Duration], q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    println!(
        "pair ({flavor} runtime, gateway {place}), {calls} calls each way in alternating blocks \
         of 100: direct p50 {:?} p99 {:?}; via gateway p50 {:?} p99 {:?}; added p50 {:?} p99 {:?}",
        at(&d, 50),
        at(&d, 99),
        at(&g, 50),
        at(&g, 99),
        at(&g, 50).saturating_sub(at(&d, 50)),
        at(&g, 99).saturating_sub(at(&d, 99)),
    );
    if gateway_pid.is_some() {
        println!(
            "CPU time per call (all threads): gateway process {:?}; the directly called server \
             (node) {:?}",
            Duration::from_nanos(gateway_cpu / calls.max(1) as u64),
            Duration::from_nanos(server_cpu / calls.max(1) as u64)
        );
    }
    rt.block_on(async {
        let _ = via.cancel().await;
        let _ = direct.cancel().await;
        if let Some(g) = gateway {
            g.shutdown();
        }
    });
}

/// The pid of this process's child whose command is `name` (Linux `/proc`).
fn child_named(name: &str) -> Option<u32> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
}

/// CPU time (ns) of every thread of process `pid` so far (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    cpu::threads_ns(Path::new(&format!("/proc/{pid}/task")), |_| true)
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(mode) = std::env::var("TOLLGATE_MCP_PROBE") {
        match mode.as_str() {
            "pair" => pair(),
            _ => probe(&mode),
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
