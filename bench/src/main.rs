//! `tokenpipe-bench compare [--quick]`: tokenpipe side by side with its peers (issue 9), in one command.
//!
//! ```sh
//! cargo run --release -p tokenpipe-bench -- compare           # the full run, about 15 minutes on 2 cores
//! cargo run --release -p tokenpipe-bench -- compare --quick   # about a minute
//! ```
//!
//! It builds tokenpipe and the Rust peers, installs the others where it can (`peers::set_up`), starts
//! tokenpipe's mock upstream pinned to a core of its own, and runs every relay in turn under the same load
//! from `tokenpipe loadgen`, at each concurrency level, several times with the relays' order rotated
//! (`plan`, `measure`). It writes every run's figures (`raw.json`), a Markdown table (`results.md`, also
//! printed) and SVG charts into `target/bench/<timestamp>/`, and checks the targets of issue 9
//! (`report`). `docs/benchmarks.md` explains the choices and shows the latest results.
//!
//! Only 127.0.0.1 is ever contacted; every load is bounded in count and time; every process it starts is
//! stopped on the way out, Ctrl-C included (`procs`).

mod charts;
mod http;
mod loadgen;
mod measure;
mod peers;
mod pki;
mod plan;
mod procs;
mod report;
mod rows;
mod sys;
mod syscalls;
mod targets;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use measure::{Bench, Sample, Spec};
use peers::Peer;
use plan::{Level, Plan};

const USAGE: &str = "\
usage: tokenpipe-bench compare [--quick] [--runs N] [--relays NAME,...] [--phases NAME,...] [--no-build]

  --quick           about a minute: 1 and 100 streams, one run, no system call counts, no TLS, no
                    --workers 2
  --runs N          repetitions of every measurement (default 3; quick: 1)
  --relays LIST     only these (tokenpipe, tokio-hyper, axum-reqwest, nginx, python-fastapi, floor)
  --phases LIST     only these parts (ttfe, load, workers-2, tls, syscalls); the report covers what ran
  --no-build        use the binaries in target/release as they are

Writes target/bench/<timestamp>/: raw.json, results.md, *.svg, logs/.";

struct Options {
    quick: bool,
    runs: Option<usize>,
    relays: Option<Vec<Peer>>,
    phases: Option<Vec<String>>,
    build: bool,
}

/// The parts of a run, in the order they run.
const PHASES: [&str; 5] = ["ttfe", "load", "workers-2", "tls", "syscalls"];

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("compare") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            std::process::exit(0);
        }
        _ => return Err(USAGE.to_string()),
    }
    let mut o = Options {
        quick: false,
        runs: None,
        relays: None,
        phases: None,
        build: true,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--no-build" => o.build = false,
            "--runs" => {
                let n = args.next().and_then(|n| n.parse().ok()).filter(|&n| n >= 1);
                o.runs = Some(n.ok_or("--runs needs a whole number, at least 1")?);
            }
            "--relays" => {
                let list = args.next().ok_or("--relays needs a list")?;
                let peers = list
                    .split(',')
                    .map(|name| {
                        Peer::from_name(name.trim()).ok_or(format!("--relays: no relay {name:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                o.relays = Some(peers);
            }
            "--phases" => {
                let list = args.next().ok_or("--phases needs a list")?;
                let phases: Vec<String> = list.split(',').map(|p| p.trim().to_string()).collect();
                if let Some(bad) = phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
                    return Err(format!(
                        "--phases: no phase {bad:?} (one of {})",
                        PHASES.join(", ")
                    ));
                }
                o.phases = Some(phases);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    match parse_args().and_then(compare) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn compare(o: Options) -> Result<(), String> {
    procs::stop_all_on_signals();
    let began = Instant::now();
    // bench/ sits in the workspace root; the binaries are next to this one (target/release).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .to_path_buf();
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .ok_or("no directory of this binary")?
        .to_path_buf();
    if o.build {
        build(&root)?;
    }
    let fd_limit = sys::raise_fd_limit();
    let out = root.join("target/bench").join(sys::timestamp());
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;

    let plan = Plan::new(o.quick, o.runs, fd_limit, &sys::usable_cpus());
    let phase = |name: &str| {
        o.phases
            .as_ref()
            .is_none_or(|only| only.iter().any(|p| p == name))
    };
    let tools = peers::set_up(
        &root,
        &bin,
        &logs,
        phase("syscalls") && !plan.syscalls.is_empty(),
    );
    let machine = sys::Machine::describe(fd_limit);
    let relays: Vec<Peer> = Peer::RELAYS
        .into_iter()
        .filter(|p| tools.has(*p))
        .filter(|p| o.relays.as_ref().is_none_or(|only| only.contains(p)))
        .collect();
    let mut skipped = tools.skipped.clone();
    if phase("tls") && !plan.tls.is_empty() {
        skipped.push(
            "TLS upstream for tokio-hyper and axum-reqwest: the baselines take only http:// upstreams \
             (baselines/shared/args.rs), so the TLS scenario is tokenpipe plain against tokenpipe TLS"
                .to_string(),
        );
    }
    if phase("syscalls") && !plan.syscalls.is_empty() && tools.strace.is_none() {
        skipped.push("system calls by name (strace -c -f): strace is not available".to_string());
    }

    println!(
        "machine: {} ({} CPUs), kernel {}, {:.0} GiB, descriptor limit {}; load average now {:.2}",
        machine.cpu_model,
        machine.cpus,
        machine.kernel,
        machine.memory_gib,
        fd_limit,
        sys::load_average()
    );
    println!(
        "pinning: relay on CPU {:?} (two workers: {:?}), mock on {:?}, loadgen on {:?}",
        plan.layout.relay, plan.layout.relay_two, plan.layout.mock, plan.layout.loadgen
    );
    for l in &plan.levels {
        println!(
            "level {:>5} streams: {} tokens every {} ms ({} events/s); {}",
            l.streams,
            l.tokens,
            l.interval_ms,
            l.streams * 1000 / l.interval_ms.max(1),
            if l.streams <= 1 {
                format!("one stream after the other for {} ms", l.steady_ms)
            } else {
                format!(
                    "{:.0} starts/s for {} ms, all in flight for the last {} ms",
                    l.rate(),
                    l.starts_ms(),
                    l.steady_ms
                )
            }
        );
    }
    for s in &skipped {
        println!("skip: {s}");
    }
    println!(
        "relays: {}; {} run(s) each; about {:.0} minutes; output in {}\n",
        names(&relays),
        plan.runs,
        plan.estimate_s(relays.len()) / 60.0,
        out.display()
    );

    let mut b = Bench::new(tools, plan, logs);
    let mut samples: Vec<Sample> = Vec::new();
    type Phase = fn(&mut Bench, &[Peer], &mut Vec<Sample>);
    let phases: [(&str, Phase); 5] = [
        ("ttfe", run_ttfe),
        ("load", run_levels),
        ("workers-2", run_workers_two),
        ("tls", run_tls),
        ("syscalls", run_syscalls),
    ];
    for (name, run) in phases {
        if phase(name) {
            let (started, before) = (Instant::now(), samples.len());
            run(&mut b, &relays, &mut samples);
            if samples.len() > before {
                println!("({name}: {:.0} s)", started.elapsed().as_secs_f64());
            }
        }
    }

    let summary = report::Summary::new(&samples, b.plan.largest());
    let elapsed = began.elapsed();
    let raw = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine,
        "plan": b.plan,
        "skipped": skipped,
        "elapsed_s": elapsed.as_secs_f64(),
        "load_average": {
            "min": samples.iter().map(|s| s.load_average).fold(f64::INFINITY, f64::min),
            "median": report::Stat::of(samples.iter().map(|s| s.load_average)).map(|s| s.median),
            "max": samples.iter().map(|s| s.load_average).fold(0.0, f64::max),
        },
        "summary": summary,
        "runs": samples,
    });
    let write = |name: &str, text: String| {
        std::fs::write(out.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write(
        "raw.json",
        serde_json::to_string_pretty(&raw).map_err(|e| e.to_string())?,
    )?;
    let md = summary.markdown();
    write("results.md", md.clone())?;
    charts::draw_all(&out, &summary.rows, b.plan.largest())?;

    println!("\n{md}");
    for s in &skipped {
        println!("skipped: {s}");
    }
    println!(
        "\ndone in {:.0} s; load average during the runs {:.2}-{:.2}; written to {}",
        elapsed.as_secs_f64(),
        raw["load_average"]["min"].as_f64().unwrap_or(f64::NAN),
        raw["load_average"]["max"].as_f64().unwrap_or(f64::NAN),
        out.display()
    );
    Ok(())
}

/// `cargo build --release` of tokenpipe and the Rust peers (at most 30 minutes).
fn build(root: &Path) -> Result<(), String> {
    println!("building tokenpipe and the Rust peers (release)...");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--quiet"])
        .args([
            "-p",
            "tokenpipe",
            "-p",
            "tokio-hyper-relay",
            "-p",
            "axum-reqwest-relay",
            "-p",
            "floor-relay",
        ])
        .spawn()
        .map_err(|e| format!("cargo build: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("cargo build failed ({status})"))
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("cargo build took over 30 minutes: stopped".to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(peers: &[Peer]) -> String {
    peers
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `items` rotated left by `by`: run r starts with the r-th relay, so that no relay always runs first
/// (on a warm cache) or last (after the others' sockets linger in TIME_WAIT).
fn rotated<T: Copy>(items: &[T], by: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let n = v.len();
        v.rotate_left(by % n);
    }
    v
}

/// Prints one line for a finished run, and keeps it.
fn keep(samples: &mut Vec<Sample>, s: Sample) {
    let opt = |v: Option<f64>, unit: &str| v.map_or(String::new(), |v| format!(" {v:.2}{unit}"));
    let us = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    match &s.error {
        Some(e) => println!(
            "  {:<15} {:>5} {:<15} run {}: FAILED: {}",
            s.scenario,
            s.streams,
            s.peer,
            s.run + 1,
            e.lines().next().unwrap_or("")
        ),
        None => println!(
            "  {:<15} {:>5} {:<15} run {}:{}{}{} ttfe p50/p99 {}/{} µs; {}/{} sustained, {} failed",
            s.scenario,
            s.streams,
            s.peer,
            s.run + 1,
            opt(s.cpu_us_per_chunk, " µs/chunk"),
            opt(s.kib_per_stream.filter(|_| s.streams > 1), " KiB/stream"),
            opt(
                s.syscalls_per_chunk.or(s.own_syscalls_per_chunk),
                " syscalls/chunk"
            ),
            us(s.ttfe_p50_us),
            us(s.ttfe_p99_us),
            s.sustained,
            s.started,
            s.failed
        ),
    }
    samples.push(s);
}

/// Time to first event at one stream: all on one core, then on separate cores; direct runs included.
fn run_ttfe(b: &mut Bench, relays: &[Peer], samples: &mut Vec<Sample>) {
    println!(
        "time to first event at one stream ({} streams one after the other):",
        b.plan.ttfe_streams
    );
    let layout = b.plan.layout.clone();
    let level = Level {
        streams: 1,
        interval_ms: 0,
        tokens: 1,
        steady_ms: 0,
    };
    let mut peers = relays.to_vec();
    peers.push(Peer::Direct);
    for (scenario, relay_cpus, mock_cpus, loadgen_cpus) in [
        (
            "ttfe-one-core",
            &layout.one_core,
            &layout.one_core,
            &layout.one_core,
        ),
        (
            "ttfe-two-cores",
            &layout.relay,
            &layout.mock,
            &layout.loadgen,
        ),
    ] {
        let mock = match measure::start_mock(b, 0, 1, mock_cpus, None) {
            Ok(m) => m,
            Err(e) => {
                println!("  {scenario}: the mock did not start: {e}");
                continue;
            }
        };
        for run in 0..b.plan.runs {
            for peer in rotated(&peers, run) {
                let spec = Spec {
                    scenario,
                    peer,
                    level,
                    run,
                    workers: 1,
                    relay_cpus,
                    loadgen_cpus,
                    upstream: &mock.upstream,
                };
                let s = measure::ttfe_run(b, &spec);
                keep(samples, s);
            }
        }
    }
}

/// The main comparison: every level, one worker each, direct runs included.
fn run_levels(b: &mut Bench, relays: &[Peer], samples: &mut Vec<Sample>) {
    let layout = b.plan.layout.clone();
    let mut peers = relays.to_vec();
    peers.push(Peer::Direct);
    for level in b.plan.levels.clone() {
        println!("\n{} streams, one worker:", level.streams);
        run_level(b, &peers, level, "load", 1, &layout.relay, samples);
    }
}

/// Every peer at one level, `runs` times in rotated order, against one mock.
fn run_level(
    b: &mut Bench,
    peers: &[Peer],
    level: Level,
    scenario: &'static str,
    workers: usize,
    relay_cpus: &[usize],
    samples: &mut Vec<Sample>,
) {
    let layout = b.plan.layout.clone();
    let mock = match measure::start_mock(b, level.interval_ms, level.tokens, &layout.mock, None) {
        Ok(m) => m,
        Err(e) => {
            println!("  the mock did not start: {e}");
            return;
        }
    };
    for run in 0..b.plan.runs {
        for peer in rotated(peers, run) {
            let spec = Spec {
                scenario,
                peer,
                level,
                run,
                workers,
                relay_cpus,
                loadgen_cpus: &layout.loadgen,
                upstream: &mock.upstream,
            };
            let s = measure::load_run(b, &spec);
            keep(samples, s);
        }
    }
}

/// `--workers 2`: tokenpipe against the multi-threaded tokio peers, on both cores.
fn run_workers_two(b: &mut Bench, relays: &[Peer], samples: &mut Vec<Sample>) {
    let layout = b.plan.layout.clone();
    let peers: Vec<Peer> = relays.iter().copied().filter(|p| p.has_workers()).collect();
    for level in b.plan.workers_two.clone() {
        println!("\n{} streams, two workers:", level.streams);
        run_level(b, &peers, level, "workers-2", 2, &layout.relay_two, samples);
    }
}

/// tokenpipe in front of the mock over TLS, against the same over plain TCP, alternating.
fn run_tls(b: &mut Bench, relays: &[Peer], samples: &mut Vec<Sample>) {
    if b.plan.tls.is_empty() || !relays.contains(&Peer::Tokenpipe) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tokenpipe-bench-pki-{}", std::process::id()));
    let pki = match pki::Pki::new(&dir) {
        Ok(pki) => pki,
        Err(e) => {
            println!("\nTLS upstream: skipped: {e}");
            return;
        }
    };
    let layout = b.plan.layout.clone();
    for level in b.plan.tls.clone() {
        println!(
            "\n{} streams, tokenpipe with a plain and a TLS upstream:",
            level.streams
        );
        let plain = measure::start_mock(b, level.interval_ms, level.tokens, &layout.mock, None);
        let tls = measure::start_mock(b, level.interval_ms, level.tokens, &layout.mock, Some(&pki));
        let (plain, tls) = match (plain, tls) {
            (Ok(p), Ok(t)) => (p, t),
            (Err(e), _) | (_, Err(e)) => {
                println!("  a mock did not start: {e}");
                continue;
            }
        };
        let sides = [
            ("upstream-plain", &plain.upstream),
            ("upstream-tls", &tls.upstream),
        ];
        for run in 0..b.plan.runs {
            for (scenario, upstream) in rotated(&sides, run) {
                let spec = Spec {
                    scenario,
                    peer: Peer::Tokenpipe,
                    level,
                    run,
                    workers: 1,
                    relay_cpus: &layout.relay,
                    loadgen_cpus: &layout.loadgen,
                    upstream,
                };
                let s = measure::load_run(b, &spec);
                keep(samples, s);
            }
        }
    }
}

/// System calls per chunk: one run counted by perf (the total, at full speed), one under strace (by
/// name, slowed down), per relay and level.
fn run_syscalls(b: &mut Bench, relays: &[Peer], samples: &mut Vec<Sample>) {
    if b.tools.strace.is_none() && b.tools.perf.is_none() {
        return;
    }
    let layout = b.plan.layout.clone();
    for runs in b.plan.syscalls.clone() {
        let level = runs.level;
        println!("\n{} streams, system calls counted:", level.streams);
        let mock = match measure::start_mock(b, level.interval_ms, level.tokens, &layout.mock, None)
        {
            Ok(m) => m,
            Err(e) => {
                println!("  the mock did not start: {e}");
                continue;
            }
        };
        for peer in relays {
            let tools = [
                (
                    "syscalls",
                    b.tools.perf.is_some() && runs.perf.contains(peer),
                ),
                (
                    "strace",
                    b.tools.strace.is_some() && runs.strace.contains(peer),
                ),
            ];
            for (scenario, wanted) in tools {
                if !wanted {
                    continue;
                }
                let spec = Spec {
                    scenario,
                    peer: *peer,
                    level,
                    run: 0,
                    workers: 1,
                    relay_cpus: &layout.relay,
                    loadgen_cpus: &layout.loadgen,
                    upstream: &mock.upstream,
                };
                let s = if scenario == "syscalls" {
                    syscalls::perf_run(b, &spec)
                } else {
                    syscalls::strace_run(b, &spec)
                };
                keep(samples, s);
            }
        }
    }
}
