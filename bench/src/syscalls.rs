//! System calls per relayed chunk, counted in runs of their own: `perf stat` at the kernel's tracepoint
//! (every call, at full speed: the figure the target is checked against) and `strace -c -f` (by name,
//! slowed down by ptrace, so only its shape is read).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::loadgen;
use crate::measure::{Bench, Sample, Spec, main_load, prepare};
use crate::peers::Relay;
use crate::procs::Proc;
use crate::sys;

/// A load run under `strace -c -f` attached to every thread of the relay: the system calls by name.
///
/// strace stops the relay at every call (ptrace), so the relay runs several times slower; events then
/// pile up between its reads, and one read or write carries several. The calls per chunk it counts are
/// fewer than at full speed: the breakdown by name shows the shape, and [`perf_run`] the true total.
pub fn strace_run(b: &mut Bench, s: &Spec) -> Sample {
    let mut sample = Sample::new(s);
    let result = (|| -> Result<(), String> {
        let strace = b.tools.strace.clone().ok_or("strace is not installed")?;
        let (relay, tag) = prepare(b, s)?;
        let pid = relay.pid().ok_or("no relay process to trace")?;
        let summary = b.logs.join(format!("{tag}-strace.txt"));
        let mut cmd = Command::new(strace);
        cmd.args(["-c", "-f", "-o"]).arg(&summary);
        for tid in sys::threads(pid).map_err(|e| e.to_string())? {
            cmd.args(["-p", &tid.to_string()]);
        }
        let log = b.logs.join(format!("{tag}-strace.log"));
        let mut tracer = Proc::start("strace", cmd, &[], &log, &log)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while sys::tracer_of(pid) == 0 {
            if tracer.exited().is_some() || Instant::now() > deadline {
                return Err(format!("strace did not attach:\n{}", tracer.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGINT: strace detaches and writes its summary.
        counted_load(
            b,
            s,
            &relay,
            &tag,
            (&mut tracer, Duration::from_secs(20)),
            &mut sample,
        )?;
        let text = std::fs::read_to_string(&summary).map_err(|e| format!("strace summary: {e}"))?;
        sample
            .set_syscalls(parse_strace_summary(&text))
            .ok_or("no total in strace's summary")?;
        drop(relay);
        Ok(())
    })();
    if let Err(e) = result {
        sample.error = Some(e);
    }
    sample
}

/// A load run while `perf stat` counts the relay's system calls at the `raw_syscalls:sys_enter`
/// tracepoint: every call of every thread, counted in the kernel without stopping the process, so the
/// relay runs at its normal pace (unlike under strace, see [`strace_run`]).
pub fn perf_run(b: &mut Bench, s: &Spec) -> Sample {
    let mut sample = Sample::new(s);
    let result = (|| -> Result<(), String> {
        let perf = b
            .tools
            .perf
            .clone()
            .ok_or("perf cannot count system calls here")?;
        let (relay, tag) = prepare(b, s)?;
        let pid = relay.pid().ok_or("no relay process to count")?;
        let counts = b.logs.join(format!("{tag}-perf.csv"));
        let mut cmd = Command::new(&perf.path);
        // -I 100: counts every 100 ms, so that the first line says perf is counting.
        cmd.args([
            "stat",
            "-x",
            ",",
            "-I",
            "100",
            "-e",
            &perf.events.join(","),
            "-o",
        ])
        .arg(&counts)
        .args(["-p", &pid.to_string()]);
        let log = b.logs.join(format!("{tag}-perf.log"));
        let mut counter = Proc::start("perf", cmd, &[], &log, &log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&counts).is_ok_and(|t| t.contains("raw_syscalls")) {
            if counter.exited().is_some() || Instant::now() > deadline {
                return Err(format!(
                    "perf stat did not start counting:\n{}",
                    counter.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGINT: perf stat stops and writes its last interval.
        counted_load(
            b,
            s,
            &relay,
            &tag,
            (&mut counter, Duration::from_secs(10)),
            &mut sample,
        )?;
        let text = std::fs::read_to_string(&counts).map_err(|e| format!("perf's counts: {e}"))?;
        sample
            .set_syscalls(parse_perf_intervals(&text))
            .ok_or("no count in perf's output")?;
        drop(relay);
        Ok(())
    })();
    if let Err(e) = result {
        sample.error = Some(e);
    }
    sample
}

/// The main load of `s` through `relay` while `tracer` counts its calls; then SIGINT to the tracer, which
/// writes its figures, waited for at most the given time. The load's figures go into `sample`.
fn counted_load(
    b: &mut Bench,
    s: &Spec,
    relay: &Relay,
    tag: &str,
    (tracer, within): (&mut Proc, Duration),
    sample: &mut Sample,
) -> Result<(), String> {
    let load = main_load(s, relay);
    let json = b.logs.join(format!("{tag}-load.json"));
    let log = b.logs.join(format!("{tag}-load.log"));
    let proc = load.start(&b.tools.tokenpipe(), "loadgen", &json, &log)?;
    let report = loadgen::finish(proc, &load, &json);
    tracer.signal(libc::SIGINT);
    tracer.wait(within)?;
    sample.note_load(&report?);
    Ok(())
}

/// Calls by system call name (and `total`, from `raw_syscalls:sys_enter`) from `perf stat -x , -I`'s
/// lines, summed over the intervals: `0.100157924,241179,,syscalls:sys_enter_writev,99789519,100.00,,`
/// (`<not counted>` for an event that never fired).
pub fn parse_perf_intervals(text: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(count), Some(event)) = (fields.get(1), fields.get(3)) else {
            continue;
        };
        let name = match event.trim() {
            "raw_syscalls:sys_enter" => "total",
            e => match e.strip_prefix("syscalls:sys_enter_") {
                Some(name) => name,
                None => continue,
            },
        };
        let n = count.trim().parse::<u64>().unwrap_or(0);
        *calls.entry(name.to_string()).or_insert(0) += n;
    }
    calls
}

/// Calls by system call name (and `total`) from `strace -c`'s table:
///
/// ```text
/// % time     seconds  usecs/call     calls    errors syscall
/// ------ ----------- ----------- --------- --------- ----------------
///  41.35    0.120161           5     23040           writev
///  ...
/// 100.00    0.290562           3     77411      3068 total
/// ```
pub fn parse_strace_summary(text: &str) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A row is 4 numbers (5 with errors) then the name.
        if fields.len() < 5 || fields[0].parse::<f64>().is_err() {
            continue;
        }
        let name = fields[fields.len() - 1];
        if let Ok(n) = fields[3].parse::<u64>() {
            *calls.entry(name.to_string()).or_insert(0) += n;
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strace_summary_rows_with_and_without_errors() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n \
                    41.35    0.120161           5     23040           writev\n \
                    30.00    0.090000           3     30000      3000 recvfrom\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    0.290562           3     53040      3000 total\n";
        let calls = parse_strace_summary(text);
        assert_eq!(calls["writev"], 23040);
        assert_eq!(calls["recvfrom"], 30000);
        assert_eq!(calls["total"], 53040);
        assert_eq!(calls.len(), 3);
    }

    #[test]
    fn perf_intervals_are_summed_per_event() {
        let text = "# started on Mon Nov 30 03:00:07 2026\n\n\
                    0.100157924,241179,,raw_syscalls:sys_enter,99789519,100.00,,\n\
                    0.100157924,<not counted>,,syscalls:sys_enter_read,0,100.00,,\n\
                    0.100157924,100,,syscalls:sys_enter_writev,99788057,100.00,,\n\
                    0.200200000,1000,,raw_syscalls:sys_enter,99789519,100.00,,\n\
                    0.200200000,5,,syscalls:sys_enter_writev,99788057,100.00,,\n";
        let calls = parse_perf_intervals(text);
        assert_eq!(calls["total"], 242179);
        assert_eq!(calls["writev"], 105);
        assert_eq!(calls["read"], 0);
    }
}
