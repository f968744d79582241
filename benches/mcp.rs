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
//!
//! `TOLLGATE_MCP_PROBE_GATEWAY=relay` puts instead a process that does no MCP work at all between
//! the client and the server: this bench binary run again (`TOLLGATE_MCP_RELAY` set, checked
//! first in `main`) spawns its own copy of the server and copies bytes both ways on two blocking
//! threads ([`relay_main`]: each complete line written at once, one `read` and one `write` per
//! message; `std::io::copy`, which moves pipe to pipe with one `splice` per message, was tried
//! and was 1–2 µs slower at p50 in five of six interleaved runs). It is the floor of any gateway
//! run as its own process: the pipe transfers and wake-ups of one more hop, no parsing.
//! The variable also takes a comma-separated list (`inprocess`, `relay`, `process`) or `all`
//! (`relay,process`): `pair` then measures direct and every named gateway interleaved in one run
//! and prints each one's added latency over direct, the tollgate process's over the relay (the
//! gateway's own cost beyond a bare process hop) and every process's CPU time per call, e.g.
//!
//! ```text
//! cargo bench --features mcp,cli --bench mcp --no-run   # prints the binary's path
//! TOLLGATE_MCP_PROBE=pair TOLLGATE_MCP_PROBE_GATEWAY=all target/release/deps/mcp-HASH
//! ```

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
    direct_with_pid(node).await.0
}

/// An rmcp client of the process `cmd` starts, over its stdin and stdout, and that process's pid.
async fn spawn_client(
    cmd: tokio::process::Command,
) -> (RunningService<RoleClient, ()>, Option<u32>) {
    let transport = TokioChildProcess::new(cmd).expect("spawn");
    let pid = transport.id();
    (().serve(transport).await.expect("initialise"), pid)
}

/// The server called directly, and its pid.
async fn direct_with_pid(node: &Path) -> (RunningService<RoleClient, ()>, Option<u32>) {
    let mut cmd = tokio::process::Command::new(node);
    cmd.arg(script());
    spawn_client(cmd).await
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

/// The gateway as its own process: the `tollgate` binary's `mcp` command on a policy file; with
/// the process's pid.
async fn via_gateway_process(node: &Path) -> (RunningService<RoleClient, ()>, Option<u32>) {
    let Some(bin) = option_env!("CARGO_BIN_EXE_tollgate") else {
        panic!("TOLLGATE_MCP_PROBE_GATEWAY=process needs the binary: add `--features mcp,cli`");
    };
    let file = tempfile::Builder::new()
        .prefix("tollgate-mcp-bench-")
        .suffix(".toml")
        .tempfile()
        .expect("policy file");
    std::fs::write(file.path(), policy_text(node)).expect("policy file");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("mcp")
        .arg("--no-audit")
        .arg("--policy")
        .arg(file.path());
    let client = spawn_client(cmd).await;
    // Read at start: no longer needed.
    drop(file);
    client
}

/// Set in the environment of this bench binary run as a relay.
const RELAY_ENV: &str = "TOLLGATE_MCP_RELAY";

/// A process hop that does no MCP work: this bench binary run again as a relay
/// ([`relay_main`]) between the client and its own spawned copy of the server; with its pid.
async fn via_relay(node: &Path) -> (RunningService<RoleClient, ()>, Option<u32>) {
    let exe = std::env::current_exe().expect("this bench's own executable");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.env(RELAY_ENV, "1").arg(node).arg(script());
    spawn_client(cmd).await
}

/// The gateway a probe puts between the client and the server (`TOLLGATE_MCP_PROBE_GATEWAY`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hop {
    /// The gateway in this process, over an in-memory duplex (default, or `inprocess`).
    InProcess,
    /// The bare relay process, no MCP work (`relay`).
    Relay,
    /// `tollgate mcp` as its own process (`process`).
    Process,
}

impl Hop {
    fn label(self) -> &'static str {
        match self {
            Hop::InProcess => "gateway in process",
            Hop::Relay => "relay",
            Hop::Process => "tollgate process",
        }
    }
}

/// The hops `TOLLGATE_MCP_PROBE_GATEWAY` names: unset is the in-process gateway; else a
/// comma-separated list of `inprocess`, `relay` and `process`, or `all` for `relay,process`.
fn hops() -> Vec<Hop> {
    let Ok(v) = std::env::var("TOLLGATE_MCP_PROBE_GATEWAY") else {
        return vec![Hop::InProcess];
    };
    let v = if v == "all" {
        "relay,process".into()
    } else {
        v
    };
    v.split(',')
        .map(|h| match h.trim() {
            "inprocess" => Hop::InProcess,
            "relay" => Hop::Relay,
            "process" => Hop::Process,
            other => panic!(
                "TOLLGATE_MCP_PROBE_GATEWAY: unknown `{other}` (inprocess, relay, process, all)"
            ),
        })
        .collect()
}

/// A client through `hop`: the in-process gateway (to shut down at the end) or the pid of the
/// process between the client and the server.
async fn through(
    hop: Hop,
    node: &Path,
) -> (
    RunningService<RoleClient, ()>,
    Option<Arc<Gateway>>,
    Option<u32>,
) {
    match hop {
        Hop::InProcess => {
            let (g, c) = via_gateway(node).await;
            (c, Some(g), None)
        }
        Hop::Relay => {
            let (c, pid) = via_relay(node).await;
            (c, None, pid)
        }
        Hop::Process => {
            let (c, pid) = via_gateway_process(node).await;
            (c, None, pid)
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
    let (client, gateway, what) = match mode {
        "direct" => (rt.block_on(direct(&node)), None, "no gateway"),
        _ => {
            let [hop] = hops()[..] else {
                panic!("TOLLGATE_MCP_PROBE={mode} measures one gateway: name one only");
            };
            let (c, g, _) = rt.block_on(through(hop, &node));
            (c, g, hop.label())
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
        "probe {mode} ({what}, {flavor} runtime), {calls} calls: {:.2} voluntary + {:.2} \
         involuntary \
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

/// One way of calling the server in [`pair`], with its samples and CPU time.
struct Route {
    label: &'static str,
    client: RunningService<RoleClient, ()>,
    /// The in-process gateway, shut down at the end.
    gateway: Option<Arc<Gateway>>,
    /// The process the client speaks to (the server itself, the relay or `tollgate mcp`).
    pid: Option<u32>,
    /// The server behind that process when it is not the server itself.
    server_pid: Option<u32>,
    times: Vec<Duration>,
    /// CPU time (ns, all threads) of `pid` and of `server_pid` over this route's calls.
    cpu: u64,
    server_cpu: u64,
}

/// Wall-clock latency of the direct path and of each gateway `TOLLGATE_MCP_PROBE_GATEWAY`
/// names ([`hops`]) on one runtime, interleaved so that all see the same load:
/// `TOLLGATE_MCP_PROBE=pair` (`TOLLGATE_MCP_PROBE_RT`, `TOLLGATE_MCP_PROBE_CALLS=N`: N calls each
/// way, in blocks of 100, one block per way per round, the round's first way rotating) prints
/// p50 and p99 of each way, each gateway's added p50 and p99 over direct, the tollgate process's
/// over the relay when both run, and the CPU time per call of every process on a route.
fn pair() {
    let node = node().expect("the probe needs `node` on PATH");
    let (flavor, calls, rt) = probe_setup(5000);
    let route = |label, client, gateway, pid: Option<u32>, server_pid| Route {
        label,
        client,
        gateway,
        pid,
        server_pid,
        times: Vec::with_capacity(calls),
        cpu: 0,
        server_cpu: 0,
    };
    let (client, pid) = rt.block_on(direct_with_pid(&node));
    let mut routes = vec![route("direct", client, None, pid, None)];
    for hop in hops() {
        let (client, gateway, pid) = rt.block_on(through(hop, &node));
        // The server the relay or `tollgate mcp` spawned; the in-process gateway's is a child
        // of this process, not told apart from the direct one: not measured.
        let server_pid = pid.and_then(|p| child_named(&p.to_string(), "node"));
        routes.push(route(hop.label(), client, gateway, pid, server_pid));
    }
    for r in &routes {
        probe_calls(&rt, &r.client, 200);
    }
    let timed = |client: &RunningService<RoleClient, ()>, n: usize, into: &mut Vec<Duration>| {
        rt.block_on(async {
            for _ in 0..n {
                let start = Instant::now();
                black_box(client.call_tool(params()).await.expect("call"));
                into.push(start.elapsed());
            }
        })
    };
    // Each process's own CPU time over its route's calls (its threads' schedstat, in ns): what
    // it costs the machine per call, whatever the scheduler's delays on a loaded machine.
    let mut round = 0;
    while routes[0].times.len() < calls {
        let n = 100.min(calls - routes[0].times.len());
        let k = routes.len();
        for i in 0..k {
            let r = &mut routes[(round + i) % k];
            let cpu = |p: Option<u32>| p.map_or(0, cpu_ns);
            let (before, server_before) = (cpu(r.pid), cpu(r.server_pid));
            timed(&r.client, n, &mut r.times);
            r.cpu += cpu(r.pid) - before;
            r.server_cpu += cpu(r.server_pid) - server_before;
        }
        round += 1;
    }
    let at = |v: &[Duration], q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    for r in &mut routes {
        r.times.sort();
    }
    let ways = routes
        .iter()
        .map(|r| {
            format!(
                "{} p50 {:?} p99 {:?}",
                r.label,
                at(&r.times, 50),
                at(&r.times, 99)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    println!("pair ({flavor} runtime), {calls} calls each way in rotating blocks of 100: {ways}");
    let over = |a: &Route, b: &Route| {
        format!(
            "{} over {}: added p50 {} p99 {}",
            a.label,
            b.label,
            signed(at(&a.times, 50), at(&b.times, 50)),
            signed(at(&a.times, 99), at(&b.times, 99)),
        )
    };
    for r in &routes[1..] {
        println!("{}", over(r, &routes[0]));
    }
    let find = |label| routes.iter().find(|r| r.label == label);
    if let (Some(t), Some(r)) = (find(Hop::Process.label()), find(Hop::Relay.label())) {
        println!("{}", over(t, r));
    }
    let per = |ns: u64| Duration::from_nanos(ns / calls.max(1) as u64);
    let cpu = routes
        .iter()
        .filter(|r| r.pid.is_some())
        .map(|r| match r.server_pid {
            Some(_) => format!(
                "{} {:?} (its server {:?})",
                r.label,
                per(r.cpu),
                per(r.server_cpu)
            ),
            None => format!("{} {:?}", r.label, per(r.cpu)),
        })
        .collect::<Vec<_>>()
        .join("; ");
    println!("CPU time per call (all threads of each process; direct: the server, node): {cpu}");
    rt.block_on(async {
        for r in routes {
            let _ = r.client.cancel().await;
            if let Some(g) = r.gateway {
                g.shutdown();
            }
        }
    });
}

/// `a - b`, negative where `b` is the longer (`-1.2µs`).
fn signed(a: Duration, b: Duration) -> String {
    if a >= b {
        format!("{:?}", a - b)
    } else {
        format!("-{:?}", b - a)
    }
}

/// The pid of the child whose command is `name` of process `parent` (a pid, or `self`; Linux
/// `/proc`).
fn child_named(parent: &str, name: &str) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).ok()?;
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

/// This binary as the bare relay of `TOLLGATE_MCP_PROBE_GATEWAY=relay`: spawns the command its
/// arguments name and copies bytes from its stdin to the command's and from the command's stdout
/// to its own, on two blocking threads, until either side ends; nothing is parsed: a line at a
/// time through a buffer, written as soon as it is complete.
fn relay_main() -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    fn lines(from: &mut impl BufRead, to: &mut impl Write) -> std::io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            if from.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            to.write_all(&line)?;
            to.flush()?;
        }
    }
    let mut args = std::env::args_os().skip(1);
    let program = args
        .next()
        .ok_or_else(|| std::io::Error::other("the relay needs a command to spawn"))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let (Some(mut to_server), Some(from_server)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("the server's pipes"));
    };
    // Ends at the client's end of input; dropping the server's stdin then ends the server.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = lines(&mut stdin, &mut to_server);
    });
    let mut stdout = std::io::stdout().lock();
    let copied = lines(&mut BufReader::new(from_server), &mut stdout);
    let _ = child.kill();
    child.wait()?;
    copied
}

fn main() {
    if std::env::var_os(RELAY_ENV).is_some() {
        if let Err(e) = relay_main() {
            eprintln!("relay: {e}");
            std::process::exit(1);
        }
        return;
    }
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
