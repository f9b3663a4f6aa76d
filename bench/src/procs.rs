//! Child processes: started pinned to CPUs with their output in a log file, and stopped on every way out.
//!
//! Three nets make sure no relay, mock or load generator outlives the benchmark:
//! - [`Proc`]'s `Drop` stops its process (SIGTERM, then SIGKILL after [`STOP_GRACE`]): a normal return,
//!   an early `?` and a panic's unwinding all pass through it;
//! - [`stop_all_on_signals`]: Ctrl-C, SIGTERM or SIGHUP kill every child still running, then exit;
//! - each child gets `PR_SET_PDEATHSIG`: if the benchmark itself is killed with SIGKILL, the kernel sends
//!   its children SIGKILL. (It fires when the *thread* that spawned the child ends, so every child is
//!   spawned from the main thread.)
//!
//! Each child is set up between `fork` and `exec` ([`CommandExt::pre_exec`]): pinned to its CPUs with
//! `sched_setaffinity` (what `taskset -c` does), and its descriptor limit raised to the hard limit.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// The pids of the children started and not yet reaped, for the signal handler.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A started child process.
pub struct Proc {
    pub name: String,
    child: Child,
    /// Where its stderr (and, for servers, its stdout) goes.
    pub log: PathBuf,
    reaped: bool,
}

impl Proc {
    /// Starts `cmd` on `cpus` (all CPUs if empty), stdout to `stdout` and stderr to `log` (the same file
    /// if they are equal).
    pub fn start(
        name: &str,
        mut cmd: Command,
        cpus: &[usize],
        stdout: &Path,
        log: &Path,
    ) -> Result<Proc, String> {
        let err =
            File::create(log).map_err(|e| format!("{name}: create {}: {e}", log.display()))?;
        let out = if stdout == log {
            err.try_clone()
        } else {
            File::create(stdout)
        }
        .map_err(|e| format!("{name}: create {}: {e}", stdout.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        quiet_environment(&mut cmd);
        let cpus = cpus.to_vec();
        // SAFETY: the closure runs in the child between fork and exec; it makes only async-signal-safe
        // system calls (prctl, sched_setaffinity, getrlimit, setrlimit) and allocates nothing (the
        // Vec was built before the fork).
        unsafe {
            cmd.pre_exec(move || set_up_child(&cpus));
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child.id());
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (and then reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.forget();
                Some(status)
            }
            _ => None,
        }
    }

    /// Waits for the process to exit by itself, at most `timeout`; past it the process is killed and
    /// this is an error.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Err(format!(
            "{} did not finish within {:.0} s: killed",
            self.name,
            timeout.as_secs_f64()
        ))
    }

    /// Sends a signal (SIGINT to make strace print its summary and detach).
    pub fn signal(&self, signal: i32) {
        if !self.reaped {
            // SAFETY: kill(2) on our own unreaped child's pid: the pid cannot have been reused.
            unsafe {
                libc::kill(self.child.id() as i32, signal);
            }
        }
    }

    /// The port a server printed as `listening on http://127.0.0.1:PORT` (tokenpipe, its mock and the
    /// Rust peers do), waiting at most `timeout`.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<u16, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let port = log.lines().find_map(|line| {
                let at = line.find("listening on http")?;
                let addr = line[at..].split("://").nth(1)?;
                addr.trim().rsplit(':').next()?.parse().ok()
            });
            if let Some(port) = port {
                return Ok(port);
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{} exited ({status}) before listening:\n{}",
                    self.name,
                    tail(&log)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} printed no 'listening on' line in {timeout:?}:\n{}",
                    self.name,
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        self.forget();
    }

    fn forget(&mut self) {
        self.reaped = true;
        let pid = self.child.id();
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != pid);
    }
}

impl Drop for Proc {
    /// SIGTERM, then SIGKILL if it is still there after [`STOP_GRACE`].
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }
}

/// The last 20 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The children's environment: nothing that could change a relay's behaviour behind the command line's
/// back (tokenpipe's TOKENPIPE_* options, provider keys), and warnings only in the logs.
fn quiet_environment(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("TOKENPIPE_") || key.ends_with("_API_KEY") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUST_LOG", "warn");
}

/// In the child, before `exec`: die with the parent, run on `cpus`, and may open as many descriptors as
/// the hard limit allows.
fn set_up_child(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: plain system calls on this (child) process with arguments we own; see `Proc::start`.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(io::Error::last_os_error());
        }
        if !cpus.is_empty() {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &cpu in cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    Ok(())
}

/// On Ctrl-C, SIGTERM or SIGHUP: kill every child still running, then exit with 130. A thread of its
/// own waits for the signals, so the main thread may be anywhere (sleeping, waiting for a child).
pub fn stop_all_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("warning: cannot handle signals ({e}); Ctrl-C may leave children behind");
            return;
        }
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let pids = LIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
            eprintln!(
                "\nsignal {signal}: stopping {} child process(es)",
                pids.len()
            );
            for &pid in &pids {
                // SAFETY: kill(2); a pid in LIVE is a child not yet reaped, so it is still ours.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            std::process::exit(130);
        }
    });
}

/// A port free on 127.0.0.1 right now, for the peers that cannot report the one the kernel picked
/// (nginx, uvicorn). Another process could take it before the peer binds: the peer then fails to start,
/// which the benchmark reports.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
