//! What the benchmark reads from the kernel: a process's CPU time and memory from `/proc`, the descriptor
//! limit, and the machine it runs on.
//!
//! CPU time comes two ways, and they measure the same thing. The kernel keeps each thread's exact run
//! time in nanoseconds (`sum_exec_runtime`); `/proc/PID/task/TID/schedstat` shows it per thread, and
//! `/proc/PID/stat`'s `utime + stime` shows the whole process's (threads that exited included), split
//! into user and system time and rounded to clock ticks (10 ms at `USER_HZ` 100). A relayed chunk costs
//! microseconds, so the benchmark divides the nanosecond figure and keeps the tick figure as a check: they
//! agree to within a tick unless a thread came and went during the run.

use std::fs;
use std::io;

/// CPU time used so far by a process, all of its threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// `utime + stime` of `/proc/PID/stat`, in nanoseconds (whole clock ticks).
    pub ticks_ns: u64,
    /// The sum of every live thread's `/proc/PID/task/TID/schedstat` run time, in nanoseconds.
    pub sched_ns: u64,
}

impl Cpu {
    /// The CPU time of `pid` now.
    pub fn of(pid: u32) -> io::Result<Cpu> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name, in parentheses, may hold spaces: the fields start after the last ')'.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| io::Error::other("no ')' in /proc/PID/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field 3 of proc(5) (the state) is fields[0]; utime is field 14, stime field 15.
        let tick = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
        let ticks = tick(11) + tick(12);
        let ticks_ns = ticks * 1_000_000_000 / clock_ticks_per_second();

        let mut sched_ns = 0;
        for task in fs::read_dir(format!("/proc/{pid}/task"))? {
            let path = task?.path().join("schedstat");
            // A thread may exit between the listing and the read: it simply no longer counts.
            if let Ok(text) = fs::read_to_string(path) {
                sched_ns += text
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(Cpu { ticks_ns, sched_ns })
    }

    /// The CPU time used between `earlier` and `self`.
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            ticks_ns: self.ticks_ns.saturating_sub(earlier.ticks_ns),
            sched_ns: self.sched_ns.saturating_sub(earlier.sched_ns),
        }
    }
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Memory figures of `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Anonymous resident memory: heap, stacks, buffers. Not the binary's code pages (`RssFile`), which
    /// fault in from the file as new code paths run and are shared with every other copy of the program.
    pub rss_anon_kib: u64,
    /// The peak of the whole resident set (`VmHWM`) since the process started.
    pub hwm_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> io::Result<Memory> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_anon_kib: field("RssAnon:"),
            hwm_kib: field("VmHWM:"),
        })
    }
}

/// The thread ids of a process (`/proc/PID/task`), for `strace -p`, which attaches to the threads it
/// is given and, with `-f`, to those created later: not to the ones already there.
pub fn threads(pid: u32) -> io::Result<Vec<u32>> {
    let mut tids = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = task?.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

/// The `TracerPid` of a process: nonzero once a tracer (strace) is attached.
pub fn tracer_of(pid: u32) -> u32 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Raises this process's soft descriptor limit to its hard limit, and returns the new limit. Every child
/// inherits it (and `procs` sets it again in each child before `exec`, for nginx's sake: with
/// `master_process off` nginx never applies its own `worker_rlimit_nofile`).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write/read the struct we own; no other preconditions.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn usable_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills the one we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// The machine, for the report: CPU model, cores, kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub fd_limit: u64,
}

impl Machine {
    pub fn describe(fd_limit: u64) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let memory_gib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        Machine {
            cpu_model,
            cpus: usable_cpus().len(),
            kernel,
            memory_gib,
            fd_limit,
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`): how busy the machine was, other work included.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `YYYYMMDD-HHMMSS` in UTC, for the output directory's name (no date crate for one line).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
