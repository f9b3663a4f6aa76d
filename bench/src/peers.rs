//! The relays compared, how each is started in front of the mock, and the tools the benchmark installs
//! (nginx, the Python peer's packages, strace) or skips with a message.
//!
//! `baselines/README.md` says what each peer is and how it was made to match tokenpipe's settings.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::http;
use crate::procs::{self, Proc};

/// A relay of the comparison, or `Direct`: the load generator talking to the mock itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    Tokenpipe,
    TokioHyper,
    AxumReqwest,
    Nginx,
    PythonFastapi,
    Floor,
    Direct,
}

impl Peer {
    /// The relays, in the order of the tables.
    pub const RELAYS: [Peer; 6] = [
        Peer::Tokenpipe,
        Peer::TokioHyper,
        Peer::AxumReqwest,
        Peer::Nginx,
        Peer::PythonFastapi,
        Peer::Floor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Tokenpipe => "tokenpipe",
            Peer::TokioHyper => "tokio-hyper",
            Peer::AxumReqwest => "axum-reqwest",
            Peer::Nginx => "nginx",
            Peer::PythonFastapi => "python-fastapi",
            Peer::Floor => "floor",
            Peer::Direct => "direct",
        }
    }

    pub fn from_name(name: &str) -> Option<Peer> {
        Peer::RELAYS
            .into_iter()
            .chain([Peer::Direct])
            .find(|p| p.name() == name)
    }

    /// Whether it serves tokenpipe's route, `POST /api/v1/generate-stream` with `{"prompt": ...}`. The
    /// floor translates nothing and the mock is the upstream: both are sent the request tokenpipe sends
    /// upstream, to `/v1/chat/completions`.
    pub fn translates(self) -> bool {
        !matches!(self, Peer::Floor | Peer::Direct)
    }

    /// Whether it takes `--workers N`.
    pub fn has_workers(self) -> bool {
        matches!(self, Peer::Tokenpipe | Peer::TokioHyper | Peer::AxumReqwest)
    }
}

/// The prompt of every request.
const PROMPT: &str = "hello brave new world";

/// The request body for `peer`, asking for `max_tokens` tokens: tokenpipe's simple body, or, for the floor
/// and the mock, the exact body tokenpipe sends upstream for it (baselines/README.md).
pub fn body(peer: Peer, max_tokens: u32) -> String {
    if peer.translates() {
        format!(r#"{{"prompt":"{PROMPT}","max_tokens":{max_tokens}}}"#)
    } else {
        format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{PROMPT}"}}],"stream":true,"stream_options":{{"include_usage":true}},"max_tokens":{max_tokens}}}"#
        )
    }
}

/// The path `peer` is asked.
pub fn path(peer: Peer) -> &'static str {
    if peer.translates() {
        "/api/v1/generate-stream"
    } else {
        "/v1/chat/completions"
    }
}

/// Where the programs are, and which optional peers and tools could be set up.
#[derive(Debug, Clone)]
pub struct Tools {
    pub root: PathBuf,
    /// target/release: tokenpipe and the Rust peers.
    pub bin: PathBuf,
    pub python: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub strace: Option<PathBuf>,
    /// perf, if it can count the system call tracepoints here.
    pub perf: Option<Perf>,
    /// What was skipped, and why.
    pub skipped: Vec<String>,
}

impl Tools {
    pub fn tokenpipe(&self) -> PathBuf {
        self.bin.join("tokenpipe")
    }

    /// Whether `peer` can run here.
    pub fn has(&self, peer: Peer) -> bool {
        match peer {
            Peer::Nginx => self.nginx.is_some(),
            Peer::PythonFastapi => self.python.is_some(),
            _ => true,
        }
    }
}

/// The upstream the relays stand in front of.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` (the name in the test certificate).
    pub url: String,
    pub port: u16,
    /// The test CA, for an https upstream.
    pub ca: Option<PathBuf>,
}

/// A relay running in front of the mock (or, for `Direct`, the mock itself, with no process of its own).
pub struct Relay {
    pub peer: Peer,
    pub port: u16,
    pub proc: Option<Proc>,
}

impl Relay {
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The URL the load generator asks.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path(self.peer))
    }
}

/// Starts `peer` in front of `upstream` with `workers` workers on `cpus`; its log (and nginx's files) go
/// under `dir`, named with `tag`.
pub fn start(
    peer: Peer,
    tools: &Tools,
    upstream: &Upstream,
    workers: usize,
    cpus: &[usize],
    dir: &Path,
    tag: &str,
) -> Result<Relay, String> {
    let log = dir.join(format!("{tag}.log"));
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let ready = Duration::from_secs(20);
    let (proc, port) = match peer {
        Peer::Direct => {
            return Ok(Relay {
                peer,
                port: upstream.port,
                proc: None,
            });
        }
        Peer::Tokenpipe => {
            let mut cmd = Command::new(tools.tokenpipe());
            cmd.args(["--listen", &listen(0), "--workers", &workers.to_string()])
                .args(["--upstream", &upstream.url, "--provider", "openai"])
                // The peers keep no access log (baselines/README.md): neither does tokenpipe here.
                .args(["--access-log", "off", "--drain-timeout", "1s"]);
            if let Some(ca) = &upstream.ca {
                cmd.arg("--upstream-ca").arg(ca);
            }
            let mut proc = Proc::start(peer.name(), cmd, cpus, &log, &log)?;
            let port = proc.wait_listening(ready)?;
            (proc, port)
        }
        Peer::TokioHyper | Peer::AxumReqwest | Peer::Floor => {
            let program = match peer {
                Peer::TokioHyper => "tokio-hyper-relay",
                Peer::AxumReqwest => "axum-reqwest-relay",
                _ => "floor-relay",
            };
            if upstream.ca.is_some() {
                return Err(format!("{}: takes only http:// upstreams", peer.name()));
            }
            let mut cmd = Command::new(tools.bin.join(program));
            cmd.args(["--listen", &listen(0), "--upstream", &upstream.url]);
            if peer.has_workers() {
                cmd.args(["--workers", &workers.to_string()]);
            }
            let mut proc = Proc::start(peer.name(), cmd, cpus, &log, &log)?;
            let port = proc.wait_listening(ready)?;
            (proc, port)
        }
        Peer::PythonFastapi => {
            let python = tools.python.as_ref().ok_or("python-fastapi: not set up")?;
            let port = procs::free_port().map_err(|e| e.to_string())?;
            let mut cmd = Command::new(python);
            cmd.arg(tools.root.join("baselines/python-fastapi/relay.py"))
                .args(["--listen", &listen(port), "--upstream", &upstream.url]);
            let mut proc = Proc::start(peer.name(), cmd, cpus, &log, &log)?;
            http::wait_healthy(&mut proc, port, ready)?;
            (proc, port)
        }
        Peer::Nginx => {
            let nginx = tools.nginx.as_ref().ok_or("nginx: not installed")?;
            let port = procs::free_port().map_err(|e| e.to_string())?;
            let prefix = dir.join(format!("{tag}-nginx"));
            std::fs::create_dir_all(&prefix).map_err(|e| e.to_string())?;
            let template =
                std::fs::read_to_string(tools.root.join("baselines/nginx/nginx.conf.template"))
                    .map_err(|e| format!("nginx.conf.template: {e}"))?;
            let conf = template
                .replace("@PREFIX@", &prefix.display().to_string())
                .replace("@LISTEN_PORT@", &port.to_string())
                .replace("@UPSTREAM_PORT@", &upstream.port.to_string());
            let conf_path = prefix.join("nginx.conf");
            std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
            let mut cmd = Command::new(nginx);
            // -e stderr: no default error log file is opened before the configuration is read.
            cmd.arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf_path)
                .args(["-e", "stderr"]);
            let mut proc = Proc::start(peer.name(), cmd, cpus, &log, &log)?;
            http::wait_healthy(&mut proc, port, ready)?;
            (proc, port)
        }
    };
    Ok(Relay {
        peer,
        port,
        proc: Some(proc),
    })
}

/// Finds the optional peers and tools, installing what the package registries offer when that is
/// possible (Debian's packages as root; the Python packages into a virtual environment under target/),
/// and says what it skipped.
pub fn set_up(root: &Path, bin: &Path, logs: &Path, count_syscalls: bool) -> Tools {
    let mut skipped = Vec::new();
    let nginx = find("nginx").or_else(|| {
        apt_install("nginx-light", logs)
            .map_err(|e| skipped.push(format!("nginx: {e}")))
            .ok()
            .and_then(|()| find("nginx"))
    });
    let python = python_venv(root, logs)
        .map_err(|e| skipped.push(format!("python-fastapi: {e}")))
        .ok();
    let strace = if count_syscalls {
        find("strace").or_else(|| {
            apt_install("strace", logs)
                .map_err(|e| skipped.push(format!("system calls per chunk (strace): {e}")))
                .ok()
                .and_then(|()| find("strace"))
        })
    } else {
        None
    };
    // perf is not installed by the benchmark: Debian's linux-perf must match the running kernel.
    let perf = if count_syscalls {
        let perf = find("perf").and_then(|perf| {
            let counts = |events: &str| {
                Command::new(&perf)
                    .args(["stat", "-x", ",", "-e", events, "true"])
                    .output()
                    .is_ok_and(|o| {
                        o.status.success()
                            && String::from_utf8_lossy(&o.stderr).contains("raw_syscalls")
                    })
            };
            let by_name = perf_events(true);
            if counts(&by_name.join(",")) {
                Some(Perf {
                    path: perf,
                    events: by_name,
                })
            } else if counts(&perf_events(false).join(",")) {
                Some(Perf {
                    path: perf,
                    events: perf_events(false),
                })
            } else {
                None
            }
        });
        if perf.is_none() {
            skipped.push(
                "system calls counted at full speed (perf stat -e raw_syscalls:sys_enter): perf is missing \
                 or cannot read tracepoints here; only strace's slowed-down count is given"
                    .to_string(),
            );
        }
        perf
    } else {
        None
    };
    Tools {
        root: root.to_path_buf(),
        bin: bin.to_path_buf(),
        python,
        nginx,
        strace,
        perf,
        skipped,
    }
}

/// perf, and the tracepoints it counts: `raw_syscalls:sys_enter` (every call), and where the kernel has
/// them, one per system call a relay makes in its stream path.
#[derive(Debug, Clone)]
pub struct Perf {
    pub path: PathBuf,
    pub events: Vec<String>,
}

/// The calls counted by name: what the relays use to read, write, wait and connect (strace's tables
/// name these), and `getpid`, which uvloop calls often.
const CALLS: [&str; 19] = [
    "recvfrom",
    "read",
    "recvmsg",
    "writev",
    "write",
    "sendto",
    "sendmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "accept4",
    "close",
    "setsockopt",
    "getsockopt",
    "connect",
    "socket",
    "shutdown",
    "futex",
    "getpid",
];

fn perf_events(by_name: bool) -> Vec<String> {
    let mut events = vec!["raw_syscalls:sys_enter".to_string()];
    if by_name {
        events.extend(CALLS.iter().map(|c| format!("syscalls:sys_enter_{c}")));
    }
    events
}

/// A program on PATH, or in the sbin directories (nginx lives in /usr/sbin, not on every user's PATH).
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs a setup command to its end, at most `timeout`, its output in `log`.
fn run(name: &str, cmd: Command, log: &Path, timeout: Duration) -> Result<(), String> {
    let mut proc = Proc::start(name, cmd, &[], log, log)?;
    let status = proc.wait(timeout)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{name} failed ({status}); its output:\n{}",
            proc.log_tail()
        ))
    }
}

/// `apt-get install -y PACKAGE` (after `apt-get update` if the first try fails), only as root.
fn apt_install(package: &str, logs: &Path) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "not installed, and not root to `apt-get install -y {package}`"
        ));
    }
    if find("apt-get").is_none() {
        return Err("not installed, and no apt-get here".to_string());
    }
    println!("installing {package} (apt-get)...");
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    let log = logs.join(format!("apt-{package}.log"));
    let minutes = Duration::from_secs(300);
    if run("apt-get install", install(), &log, minutes).is_ok() {
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.arg("update");
    run(
        "apt-get update",
        update,
        &logs.join("apt-update.log"),
        minutes,
    )?;
    run("apt-get install", install(), &log, minutes)
}

/// The Python peer's interpreter: target/baselines-venv (the one `baselines/smoke.sh` looks for), made and
/// filled from `baselines/python-fastapi/requirements.txt` if its packages cannot be imported yet.
fn python_venv(root: &Path, logs: &Path) -> Result<PathBuf, String> {
    let venv = root.join("target/baselines-venv");
    let python = venv.join("bin/python");
    let imports = || {
        Command::new(&python)
            .args(["-c", "import fastapi, uvicorn, uvloop, httpx, httptools"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if imports() {
        return Ok(python);
    }
    let python3 = find("python3").ok_or("no python3 on PATH")?;
    println!(
        "setting up the Python peer's packages in {} (pip)...",
        venv.display()
    );
    let minutes = Duration::from_secs(300);
    if !python.is_file() {
        let mut cmd = Command::new(python3);
        cmd.args(["-m", "venv"]).arg(&venv);
        run("python3 -m venv", cmd, &logs.join("venv.log"), minutes).map_err(|e| {
            format!("cannot make a virtual environment (Debian: python3-venv): {e}")
        })?;
    }
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(root.join("baselines/python-fastapi/requirements.txt"));
    run("pip install", pip, &logs.join("pip.log"), minutes)?;
    if imports() {
        Ok(python)
    } else {
        Err("its packages were installed but cannot be imported".to_string())
    }
}
