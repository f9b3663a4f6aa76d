#!/usr/bin/env python3
"""Rerunnable figures for the relay core, for one build of tokenpipe or for two builds side by side.

This is a measurement, not a test: it asserts nothing. Per run and per binary it starts fresh processes
from that binary, a mock upstream and a relay with one worker, on 127.0.0.1 ephemeral ports; opens N
concurrent streams through the relay, then N straight to the mock; and stops both processes. Nothing but
127.0.0.1 is contacted. The report gives the median of several runs, since shared machines are noisy.

    cargo build --release && python3 scripts/measure_relay.py [--streams 1000] [--runs 5]

Before/after a change (build the old revision first, e.g. in a `git worktree`, and copy its binary aside):

    python3 scripts/measure_relay.py --streams 200 --tokens 50 --interval-ms 20 --runs 5 \\
        --compare /tmp/tokenpipe-before

One option on and off, one binary (what recording the per-chunk metrics costs):

    python3 scripts/measure_relay.py --streams 200 --tokens 50 --interval-ms 20 --runs 5 \\
        --compare target/release/tokenpipe --compare-args=--no-metrics

Plain against TLS upstream, one binary:

    python3 scripts/measure_relay.py --upstream-tls-compare --streams 1000 --tokens 20 --interval-ms 50 --runs 5

With --upstream-tls-compare every run measures --bin twice, on fresh processes each time: "plain", the relay
in front of `mock-upstream` with `--upstream http://127.0.0.1:PORT`, and "tls", the relay in front of
`mock-upstream --tls-cert CERT --tls-key KEY` with `--upstream https://localhost:PORT --upstream-ca CA`. The
order alternates (run 1: plain then tls, run 2: tls then plain, ...) and the ratio column is tls/plain of the
medians: what the upstream TLS costs, per figure (> 1.00: TLS uses more, or is slower). The client always
talks plain HTTP to the relay, so only the relay->mock hop differs. The test PKI is made at start with the
`openssl` command line (it must be installed; the script stops otherwise): a CA and a server certificate for
the DNS name `localhost` (ECDSA P-256, or RSA 2048 with --tls-key-type rsa2048) signed by it, in a
temporary directory removed at exit. One stream through each side is tried first (preflight); if the TLS side
cannot relay, the script says why and stops. On the tls side the direct_* load is Python's own TLS
(ssl module, trusting the same CA, checking the name `localhost`) to the TLS mock: the floor of that mock,
and a harder load for the Python client than the relay load, which is plain HTTP on both sides; its
direct_connect_* times include the TLS handshake, direct_handshake_* stays the kernel's TCP handshake. For
that side the CONTROL verdict therefore leaves out the client's loop lag during the direct load (a note gives
it) and keeps the rest: the client's lag in the relay load, and whether the TLS mock kept its pace. The
closing lines give the memory per TLS stream against its budget (--tls-budget-kib, 24 KiB): the median
rss_kib_per_stream of the tls side, each run's figure, and the tls - plain difference (what TLS adds).
strace runs as below when it is installed and works, and is skipped (with a note) otherwise.

With --compare, "after" is --bin (default: target/release/tokenpipe) and "before" is the --compare binary.
Every run measures both, alternating the order (run 1: after then before, run 2: before then after, ...),
so a drift of the machine's load during the session weighs on both alike. The ratio column is
after/before of the medians: below 1.00 means the new build uses less (or is faster), for every figure.

What each figure means:

  chunk              one SSE event received by a client: after HTTP chunked decoding, a block of lines ended
                     by a blank line that holds at least one `data:` line. With the OpenAI mock a stream is
                     --tokens token events + the finish event + `data: [DONE]` (tokens + 2). The request
                     carries "max_tokens" = --tokens, so the mock sends exactly that many tokens.
  cpu_us_per_chunk   user + system CPU of the relay process (all its threads; utime + stime in
                     /proc/PID/stat, clock ticks of 1/SC_CLK_TCK s) read just before and just after the relay
                     load, divided by the chunks the clients received. Ticks are 10 ms granular (at 100 Hz):
                     each run prints the figure's resolution (one tick / chunks); make the load longer
                     (--streams, --tokens) when that is not small against the figure.
  cpu_us_per_chunk_schedstat
                     the same from /proc/PID/task/*/schedstat (time on CPU in ns), a finer cross-check.
  rss_kib_per_stream growth of the relay's anonymous resident memory (RssAnon in /proc/PID/status: heap,
                     stacks; not the binary's code pages, which fault in from the file as new code paths
                     run) from before the load to the moment every stream has received its first event,
                     divided by the streams still open at that moment. Pages are 4 KiB: with 200 streams
                     the figure moves in steps of 0.02 KiB. rss_file_kib_delta gives the file-backed growth
                     (VmRSS = RssAnon + RssFile + RssShmem) over the same interval, for completeness.
  relay_ttfb_*_ms    time from the client's connect to the first event through the relay (p50, p99 over
                     the streams of a run; nearest rank).
  relay_gap_p50_ms   p50 and p99 of the gaps between consecutive events of a stream, over all streams of a run.
  relay_gap_p99_ms
                     With --interval-ms 20 the mock paces events 20 ms apart; the excess is latency added
                     by the relay, the mock and the (Python) client on a shared machine.
  direct_*_ms        the same with the client talking to that binary's mock directly: the floor that the
                     relay's figures should be read against.
  syscalls_per_chunk system calls of the relay process (all threads) under `strace -c -f -p PID`, in
                     separate, shorter runs per binary (--strace-streams, --strace-runs), divided by the chunks
                     of that run; all-in, including accept4, connect and close of every stream. No other figure
                     is taken there. The per-syscall breakdown follows, per chunk, with the calls that failed
                     (EAGAIN mostly) in a column of their own. strace slows the relay down a lot: a relay that
                     falls behind reads and writes several events at once and so makes FEWER calls per chunk,
                     which would flatter whichever binary ran on the busier moment. Each strace run therefore
                     prints the share of events that reached the client bunched (gap < half the interval) and
                     warns above 5%: lower --strace-streams then.
  *_bunched_pct      the same share in the timed runs, as a diagnostic of the figures next to it.

Burst figures (a table of their own, with after - before instead of a ratio, since some are better higher):

  *_sustained_pct    share of streams that were complete (tokens + 2 events, no error) and whose every gap between
                     consecutive events was at most 2x --interval-ms; *_sustained_10x_pct: at most 10x. A stream
                     that failed or ended short is not sustained. relay_* through the relay, direct_* straight to
                     the mock.
  *_connect_*_ms     how long asyncio.open_connection took per stream (p50, p99, max) and how many took over
                     500 ms. All streams are opened at once, on the client loop's first turn, so this includes the
                     client's own queueing: issuing N connects takes one turn of N x ~80 us (burst_issue_ms), and
                     no continuation runs before it ends.
  *_handshake_*_ms   the kernel's handshake time, free of that queueing: from the start of the connect to the
                     SYN-ACK's arrival, read back from TCP_INFO (tcpi_last_ack_recv, ms granular) right after the
                     connect. A listen backlog overflow shows up here as ~1 s (the client's SYN retransmit), and in
                     *_syn_retrans_streams (streams whose SYN was retransmitted, TCP_INFO tcpi_total_retrans) and
                     *_listen_overflows (TcpExt ListenOverflows + ListenDrops of /proc/net/netstat over the load:
                     machine-wide, so other work on the machine counts too). *_retrans_streams: streams that
                     retransmitted anything by their end.
  relay_loop_*       loop health of the relay, started with --loop-warn-ms W and RUST_LOG=warn: iterations of its
                     event loop busy for longer than W (parsed from its warnings, `relay-0: loop iteration busy for
                     12.3 ms handling 57 events (over --loop-warn-ms 20)`) and the largest busy time among them
                     (0: none over W). mock_loop_* the same for the mock, during the relay load and the direct one.
                     The processes' other stderr lines are kept; --verbose prints them after each run.
  *_client_*         the Python client itself, the control: its CPU (share of one core over the load), its own
                     event-loop lag (a probe task that sleeps 10 ms, p99 and max lateness) and burst_issue_ms.
                     Events are time-stamped when the client gets to them, so a client that lags inflates gaps and
                     TTFB. When the direct-to-mock streams are not sustained (< 99%), or the client's loop lag p99
                     exceeds the interval, the output says CONTROL FAILED: the client (one asyncio thread, sharing
                     the CPUs with the mock and the relay) cannot keep up, and the relay's sustained, gap and TTFB
                     figures are bounded by it rather than by the relay.

File descriptors: the script raises its own soft RLIMIT_NOFILE to the hard limit and stops if that is below
2 x --streams + 100; the mock and the relay raise theirs themselves (--max-fds defaults to the hard limit).

Reading a comparison: every figure comes with "+-", half its range over the runs in % of the median. A ratio
whose distance from 1.00 is not clearly larger than those is noise, not a change. Running the same binary
as --bin and --compare shows this machine's noise floor.

Every load is bounded: N streams of T tokens each, a fixed number of runs, a timeout on each load
(--timeout) and on each process start. Streams that fail or time out are counted and reported, not hidden.
--json FILE writes all figures (per run, medians, ratios, strace breakdowns) for machines.
"""
import argparse
import asyncio
import atexit
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
DEFAULT_BIN = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release",
                                            "tokenpipe"))
RELAY_PATH = "/api/v1/generate-stream"
MOCK_PATH = "/v1/chat/completions"
PROMPT = "hello brave new world"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT_S = 10
CHUNK_DEFINITION = ("chunk = one SSE event received by a client (after HTTP chunked decoding, a block ended by a "
                    "blank line holding at least one `data:` line); OpenAI mock: tokens + finish event + [DONE] "
                    "per stream")
# Figures compared between the two binaries in the closing summary, in this order.
SUMMARY = ["cpu_us_per_chunk", "rss_kib_per_stream", "syscalls_per_chunk", "relay_ttfb_p50_ms",
           "relay_ttfb_p99_ms", "relay_gap_p99_ms"]
# The rows of the medians table that get a ratio; the counts after them are there to judge the figures by.
FIGURES = ["cpu_us_per_chunk", "cpu_us_per_chunk_schedstat", "rss_kib_per_stream", "syscalls_per_chunk",
           "relay_ttfb_p50_ms", "relay_ttfb_p99_ms", "relay_gap_p50_ms", "relay_gap_p99_ms", "direct_ttfb_p50_ms",
           "direct_ttfb_p99_ms", "direct_gap_p50_ms", "direct_gap_p99_ms"]
# Figures of the burst, printed in a table of their own: some are better higher (sustained_pct), so they get
# the difference after - before rather than a ratio.
BURST = ["relay_sustained_pct", "relay_sustained_10x_pct", "direct_sustained_pct", "direct_sustained_10x_pct",
         "relay_connect_p50_ms", "relay_connect_p99_ms", "relay_connect_max_ms", "relay_connects_over_500ms",
         "relay_handshake_p50_ms", "relay_handshake_p99_ms", "relay_handshake_max_ms", "relay_handshakes_over_500ms",
         "relay_syn_retrans_streams", "relay_retrans_streams", "relay_listen_overflows",
         "direct_connect_p50_ms", "direct_connect_p99_ms", "direct_connect_max_ms", "direct_connects_over_500ms",
         "direct_handshake_p50_ms", "direct_handshake_p99_ms", "direct_handshake_max_ms",
         "direct_handshakes_over_500ms", "direct_syn_retrans_streams", "direct_retrans_streams",
         "direct_listen_overflows",
         "relay_loop_warns", "relay_loop_busy_max_ms", "mock_loop_warns_relay_load", "mock_loop_busy_max_ms_relay_load",
         "mock_loop_warns_direct", "mock_loop_busy_max_ms_direct",
         "relay_client_cpu_pct", "relay_client_lag_p99_ms", "relay_client_lag_max_ms", "relay_client_burst_issue_ms",
         "direct_client_cpu_pct", "direct_client_lag_p99_ms", "direct_client_lag_max_ms",
         "direct_client_burst_issue_ms", "failed_relay", "failed_direct"]
# Burst figures in the closing summary line.
BURST_SUMMARY = ["relay_sustained_pct", "relay_sustained_10x_pct", "direct_sustained_pct", "direct_sustained_10x_pct",
                 "relay_connect_p99_ms", "relay_connects_over_500ms", "relay_handshakes_over_500ms",
                 "relay_loop_warns", "relay_loop_busy_max_ms"]
# The direct-to-mock control passes when at least this share of its streams is sustained.
CONTROL_SUSTAINED_PCT = 99.0
COUNTS = ["relay_bunched_pct", "direct_bunched_pct", "chunks", "cpu_ticks", "cpu_resolution_us_per_chunk",
          "rss_streams_open", "rss_file_kib_delta", "chunks_per_stream_direct", "short_streams", "failed_streams"]


# ---------------------------------------------------------------------------------------------- processes

LIVE = []  # processes started and not yet stopped, killed at exit whatever happens


def child_env():
    """The environment minus what could change the binaries' behaviour behind the command line's back."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("TOKENPIPE_") and not k.endswith("_API_KEY")}


LOOP_WARN = re.compile(r"loop iteration busy for ([0-9.]+) ms handling (\d+) events")
KEEP_STDERR_LINES = 2000  # other stderr lines kept per process for --verbose; the rest are only counted


class Proc:
    """A started tokenpipe process (RUST_LOG=warn): waits for its `listening on` line, then keeps draining its
    stdout and its stderr on two threads so that it can never block on a full pipe. Stderr lines of the form
    `...: loop iteration busy for 12.3 ms handling 57 events (over --loop-warn-ms 20)` are parsed into
    `loop_warns` [(busy_ms, events)]; every other stderr line goes to `other_err` (for --verbose, and shown if
    the process fails to start). Both are complete once stop() has returned."""

    def __init__(self, binary, args):
        self.args = args
        self.loop_warns = []
        self.other_err = []
        self.other_err_count = 0
        self.p = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  encoding="utf-8", errors="replace", env={**child_env(), "RUST_LOG": "warn"},
                                  stdin=subprocess.DEVNULL)
        LIVE.append(self)
        self.pid = self.p.pid
        self.port = None
        bound = threading.Event()

        def drain():
            for line in self.p.stdout:
                m = re.match(r"listening on https?://127\.0\.0\.1:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    bound.set()
            bound.set()  # EOF: the process has gone

        def drain_err():
            for line in self.p.stderr:
                m = LOOP_WARN.search(line)
                if m:
                    self.loop_warns.append((float(m.group(1)), int(m.group(2))))
                else:
                    self.other_err_count += 1
                    if len(self.other_err) < KEEP_STDERR_LINES:
                        self.other_err.append(line.rstrip("\n"))

        threading.Thread(target=drain, daemon=True).start()
        self.err_thread = threading.Thread(target=drain_err, daemon=True)
        self.err_thread.start()
        if not bound.wait(START_TIMEOUT_S) or self.port is None:
            if self.p.poll() is None:
                self.p.kill()
            self.p.wait()
            self.stop()
            tail = "\n".join(self.other_err[-30:])
            why = "exited" if self.p.returncode is not None and bound.is_set() else f"timed out ({START_TIMEOUT_S} s)"
            raise SystemExit(f"{binary} {args[0]}: {why} before printing `listening on http://127.0.0.1:PORT`\n{tail}")

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.err_thread.join(timeout=5)  # the pipe reaches EOF once the process is gone
        if self in LIVE:
            LIVE.remove(self)

    def loop_summary(self):
        """(iterations over --loop-warn-ms, largest busy time in ms or 0.0 when there was none)."""
        return len(self.loop_warns), max((ms for ms, _ in self.loop_warns), default=0.0)


def stop_all():
    for proc in list(LIVE):
        proc.stop()


# ---------------------------------------------------------------------------------------------- test PKI

TLS_NAME = "localhost"  # the name in the https:// upstream URL and in the server certificate (DNS SAN)
OPENSSL_TIMEOUT_S = 60


class Pki:
    """A CA and a server certificate for DNS name `localhost` signed by it, made with the `openssl` command
    line in a temporary directory that is removed at exit. `key_type`: "p256" (ECDSA P-256) or "rsa2048"."""

    def __init__(self, key_type):
        self.openssl = shutil.which("openssl")
        if not self.openssl:
            raise SystemExit("--upstream-tls-compare: the `openssl` command line is not installed (it makes the "
                             "test CA and the server certificate); install it (e.g. apt-get install openssl) and "
                             "rerun")
        self.key_type = key_type
        self.dir = tempfile.mkdtemp(prefix="tokenpipe-measure-pki-")
        atexit.register(shutil.rmtree, self.dir, True)
        self.ca, ca_key = self.path("ca.pem"), self.path("ca.key")
        self.cert, self.key = self.path("server.pem"), self.path("server.key")
        csr, ext = self.path("server.csr"), self.path("server.ext")
        newkey = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key_type == "p256"
                  else ["-newkey", "rsa:2048"])
        self.run("req", "-x509", "-new", *newkey, "-nodes", "-keyout", ca_key, "-out", self.ca, "-days", "2",
                 "-sha256", "-subj", "/CN=tokenpipe measure_relay test CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash")
        self.run("req", "-new", *newkey, "-nodes", "-keyout", self.key, "-out", csr, "-sha256",
                 "-subj", f"/CN={TLS_NAME}")
        with open(ext, "w") as f:
            f.write(f"basicConstraints=critical,CA:FALSE\n"
                    f"keyUsage=critical,digitalSignature,keyEncipherment\n"
                    f"extendedKeyUsage=serverAuth\n"
                    f"subjectAltName=DNS:{TLS_NAME}\n"
                    f"subjectKeyIdentifier=hash\n"
                    f"authorityKeyIdentifier=keyid\n")
        self.run("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial",
                 "-out", self.cert, "-days", "2", "-sha256", "-extfile", ext)
        self.run("verify", "-CAfile", self.ca, "-verify_hostname", TLS_NAME, self.cert)
        for f in (ca_key, csr, ext):
            os.unlink(f)
        self.version = subprocess.run([self.openssl, "version"], capture_output=True, text=True,
                                      timeout=OPENSSL_TIMEOUT_S).stdout.strip()

    def path(self, name):
        return os.path.join(self.dir, name)

    def run(self, *args):
        try:
            r = subprocess.run([self.openssl, *args], capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S,
                               stdin=subprocess.DEVNULL, cwd=self.dir)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SystemExit(f"openssl {args[0]} failed: {e}")
        if r.returncode != 0:
            raise SystemExit(f"openssl {' '.join(args)} failed (exit {r.returncode}):\n{r.stderr.strip()}")
        return r.stdout

    def describe(self):
        kind = "ECDSA P-256" if self.key_type == "p256" else "RSA 2048"
        return (f"{kind} CA and server certificate (DNS:{TLS_NAME}), SHA-256 signatures, made with {self.version} "
                f"in {self.dir} (removed at exit)")

    def client_context(self):
        """The Python client's TLS context for the direct load to the TLS mock: trusts only the test CA and checks
        the name `localhost`."""
        import ssl
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = True
        return ctx


def mock_args(a, tls=None):
    return ["mock-upstream", "--listen", f"{HOST}:0", "--tokens", str(a.tokens), "--interval-ms",
            str(a.interval_ms), "--format", "openai", "--loop-warn-ms", str(a.loop_warn_ms)] + (
        ["--tls-cert", tls.cert, "--tls-key", tls.key] if tls else [])


def relay_args(mock_port, a, tls=None):
    upstream = f"https://{TLS_NAME}:{mock_port}" if tls else f"http://{HOST}:{mock_port}"
    return ["serve", "--listen", f"{HOST}:0", "--workers", "1", "--upstream", upstream,
            "--provider", "openai", "--loop-warn-ms", str(a.loop_warn_ms)] + (
        ["--upstream-ca", tls.ca] if tls else [])


class Binary(str):
    """A binary's path that carries extra relay options (--relay-args, --compare-args): the same binary can then
    be measured against itself with an option on and off, e.g. --no-metrics."""

    def __new__(cls, path, extra):
        b = super().__new__(cls, path)
        b.extra = extra
        return b


def start_pair(binary, a, tls=None):
    """A fresh mock and a fresh one-worker relay in front of it, both from `binary`; with `tls` (a Pki) the
    mock serves HTTPS and the relay reaches it as https://localhost:PORT, trusting the test CA."""
    mock = Proc(binary, mock_args(a, tls))
    try:
        relay = Proc(binary, relay_args(mock.port, a, tls) + getattr(binary, "extra", []))
    except BaseException:
        mock.stop()
        raise
    return mock, relay


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_ns(pid):
    """Time on CPU of all the process's live threads in ns (schedstat), or None where the kernel has none."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def settle(pid, quiet=0.25, limit=3.0):
    """Waits (at most `limit` s) until the process's count of open files has not changed for `quiet` s, so
    that closing the load's connections is part of what is counted after a load."""
    end, last, since = time.monotonic() + limit, None, time.monotonic()
    while time.monotonic() < end:
        n = len(os.listdir(f"/proc/{pid}/fd"))
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.02)


def rss_kib(pid):
    """(RssAnon, RssFile) of the process in KiB."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("RssAnon:", "RssFile:")):
            fields[line.split(":")[0]] = int(line.split()[1])
    return fields.get("RssAnon", 0), fields.get("RssFile", 0)


# ------------------------------------------------------------------------------------------------ clients

EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, then u32s; tcpi_last_ack_recv (ms since the last ACK
# arrived) is at byte 56, tcpi_total_retrans (segments retransmitted, SYNs included) at byte 100.
TCP_INFO = getattr(socket, "TCP_INFO", 11)
U32 = struct.Struct("=I")


def tcp_info(sock):
    """(total_retrans, last_ack_recv_ms) of a TCP socket, or (None, None) where TCP_INFO is unavailable."""
    try:
        b = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 104)
        return U32.unpack_from(b, 100)[0], U32.unpack_from(b, 56)[0]
    except (OSError, struct.error, AttributeError):
        return None, None


class Stream:
    """What one client saw: when it started to connect, how long asyncio.open_connection took (connect_s, which
    includes the client's own queueing: the continuation runs only when the loop gets to it), when the
    kernel completed the handshake (handshake_s: from the start to the SYN-ACK's arrival, read back from
    TCP_INFO's ms-granular last_ack_recv, free of that queueing), when each event arrived, how many segments
    its socket retransmitted (right after the connect: SYNs; at the end: all), and what went wrong if anything."""

    __slots__ = ("t0", "connect_s", "handshake_s", "stamps", "error", "_buf", "progress", "marked", "syn_retrans",
                 "retrans")

    def __init__(self, progress):
        self.t0 = None
        self.connect_s = None
        self.handshake_s = None
        self.stamps = []
        self.error = None
        self._buf = b""
        self.progress = progress  # shared [count] of streams with a first event or an end
        self.marked = False
        self.syn_retrans = None
        self.retrans = None

    def mark(self):
        if not self.marked:
            self.marked = True
            self.progress[0] += 1

    def feed(self, data, now):
        self._buf += data
        blocks = EVENT_END.split(self._buf)
        self._buf = blocks.pop()
        for block in blocks:
            if any(line.startswith(b"data:") for line in block.splitlines()):
                self.stamps.append(now)
                self.mark()

    def ttfb(self):
        return self.stamps[0] - self.t0 if self.stamps else math.nan

    def gaps(self):
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


class Chunked:
    """Incremental HTTP/1.1 chunked decoder that hands each chunk's payload to a Stream. Data is read in
    blocks of up to 64 KiB, one await per read, not two per chunk: at thousands of streams the client's own
    cost per event decides whether it keeps up."""

    def __init__(self, stream):
        self.s = stream
        self.buf = bytearray()
        self.done = False

    def feed(self, data, now):
        buf = self.buf
        buf += data
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                self.done = True  # trailers, if any, are not read
                break
            end = eol + 2 + size
            if len(buf) < end + 2:
                break
            self.s.feed(bytes(buf[eol + 2:end]), now)
            pos = end + 2
        del buf[:pos]
        return self.done


async def one_stream(port, path, body, s, tls=None):
    """One stream. With `tls` (an ssl.SSLContext) the TCP connect comes first, its handshake is read back from
    TCP_INFO before any TLS record arrives, and then TLS is started on that socket for the name `localhost`:
    connect_s includes the TLS handshake, handshake_s is the kernel's TCP handshake alone."""
    s.t0 = time.perf_counter()
    if tls is None:
        reader, writer = await asyncio.open_connection(HOST, port)
        s.connect_s = time.perf_counter() - s.t0
        sock = writer.get_extra_info("socket")
        s.syn_retrans, last_ack_ms = tcp_info(sock)
        if last_ack_ms is not None:  # nothing but the SYN-ACK has come in yet: the request is not even sent
            s.handshake_s = min(s.connect_s, max(0.0, time.perf_counter() - last_ack_ms / 1e3 - s.t0))
    else:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            raw.setblocking(False)
            await asyncio.get_running_loop().sock_connect(raw, (HOST, port))
            tcp_s = time.perf_counter() - s.t0
            s.syn_retrans, last_ack_ms = tcp_info(raw)
            if last_ack_ms is not None:
                s.handshake_s = min(tcp_s, max(0.0, time.perf_counter() - last_ack_ms / 1e3 - s.t0))
            reader, writer = await asyncio.open_connection(sock=raw, ssl=tls, server_hostname=TLS_NAME)
        except BaseException:
            raw.close()
            raise
        s.connect_s = time.perf_counter() - s.t0
        sock = raw
    try:
        head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        writer.write(head + body)
        await writer.drain()
        buf = b""
        while (end := buf.find(b"\r\n\r\n")) < 0:
            data = await reader.read(65536)
            if not data:
                raise RuntimeError("closed before the response head")
            buf += data
        now = time.perf_counter()
        lines = buf[:end].decode("latin-1").split("\r\n")
        rest = buf[end + 4:]
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            dec = Chunked(s)
            done = dec.feed(rest, now)
            while not done:
                data = await reader.read(65536)
                if not data:
                    raise RuntimeError("closed inside the chunked body")
                done = dec.feed(data, time.perf_counter())
        elif "content-length" in headers:
            left = int(headers["content-length"]) - len(rest)
            s.feed(rest, now)
            while left > 0:
                data = await reader.read(min(left, 65536))
                if not data:
                    raise RuntimeError("closed before Content-Length")
                left -= len(data)
                s.feed(data, time.perf_counter())
        else:
            s.feed(rest, now)
            while data := await reader.read(65536):
                s.feed(data, time.perf_counter())
    finally:
        s.retrans = tcp_info(sock)[0]
        writer.close()


def listen_overflows():
    """System-wide TcpExt ListenOverflows + ListenDrops (/proc/net/netstat): SYNs dropped because a listen
    queue was full, the cause of ~1 s connects (the client's SYN retransmit). (0, 0) if unreadable."""
    try:
        lines = [l.split() for l in open("/proc/net/netstat") if l.startswith("TcpExt:")]
        fields = dict(zip(lines[0][1:], map(int, lines[1][1:])))
        return fields.get("ListenOverflows", 0), fields.get("ListenDrops", 0)
    except (OSError, IndexError, ValueError):
        return 0, 0


async def lag_probe(out, period=0.01):
    """Wakes every `period` s and records how late it woke (s): the client's own event-loop lag. Events are
    time-stamped when the client gets to them, so a lagging client inflates gaps and TTFB by this much."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        out.append(loop.time() - due)


async def run_load(port, path, body, n, timeout, watch_pid=None, tls=None):
    """N concurrent streams, all started at once (a burst: every task opens its connection on the loop's
    first turn) and all within `timeout` seconds. With watch_pid, samples that process's RSS before the load
    and once every stream has had its first event (or failed). Returns the streams, the RSS samples, the
    streams open at the second sample and a dict on the client itself (CPU, loop lag, how long issuing the
    burst took, listen queue overflows on the machine). With `tls` (an ssl.SSLContext) the streams speak TLS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    rss_before = rss_kib(watch_pid) if watch_pid else (0, 0)
    progress = [0]
    streams = [Stream(progress) for _ in range(n)]
    lags = []
    probe = asyncio.create_task(lag_probe(lags))
    over0, cpu0, wall0 = listen_overflows(), time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(one_stream(port, path, body, s, tls)) for s in streams]
    for s, t in zip(streams, tasks):
        t.add_done_callback(lambda _, s=s: s.mark())
    rss_open, open_then = rss_before, 0
    if watch_pid:
        while loop.time() < deadline and progress[0] < n:
            await asyncio.sleep(0.005)
        rss_open = rss_kib(watch_pid)
        open_then = sum(1 for s, t in zip(streams, tasks) if s.stamps and not t.done())
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
    cpu1, wall1, over1 = time.process_time(), time.perf_counter(), listen_overflows()
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    probe.cancel()
    await asyncio.gather(probe, return_exceptions=True)
    for s, t in zip(streams, tasks):
        if t in pending:
            s.error = f"timeout after {timeout} s" + (" (still connecting)" if s.connect_s is None else "")
        elif t.exception() is not None:
            s.error = repr(t.exception())
    starts = [s.t0 for s in streams if s.t0 is not None]
    client = {
        "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0) if wall1 > wall0 else math.nan,
        "wall_s": wall1 - wall0,
        "lag_p99_ms": pct(lags, 0.99) * 1e3,
        "lag_max_ms": max(lags, default=math.nan) * 1e3,
        "burst_issue_ms": (max(starts) - min(starts)) * 1e3 if starts else math.nan,
        "listen_overflows": over1[0] - over0[0],
        "listen_drops": over1[1] - over0[1],
    }
    return streams, rss_before, rss_open, open_then, client


def relay_body(tokens):
    return json.dumps({"prompt": PROMPT, "max_tokens": tokens}).encode()


def direct_body(tokens):
    return json.dumps({"messages": [{"role": "user", "content": PROMPT}], "stream": True,
                       "max_tokens": tokens}).encode()


# ---------------------------------------------------------------------------------------------- figures

def pct(values, q):
    """Nearest-rank percentile, NaNs left out."""
    values = sorted(v for v in values if v == v)
    if not values:
        return math.nan
    return values[max(0, math.ceil(q * len(values)) - 1)]


def median(values):
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else math.nan


def ratio(after, before):
    if after is None or before is None or not before or after != after or before != before:
        return math.nan
    return after / before


def bunched_pct(streams, interval_ms):
    """Share of inter-event gaps shorter than half the mock's interval: events that reached the client
    together although the mock sent them an interval apart, i.e. someone on the way fell behind."""
    gaps = [g for s in streams for g in s.gaps()]
    if interval_ms <= 0 or not gaps:
        return math.nan
    return 100 * sum(1 for g in gaps if g < interval_ms / 2e3) / len(gaps)


def expected_events(a):
    """SSE events of one complete stream from the OpenAI mock: the tokens, the finish event, `data: [DONE]`."""
    return a.tokens + 2


def sustained_pct(streams, expected, interval_ms, factor):
    """Share of streams that were complete (no error, at least `expected` events) and whose every gap between
    consecutive events was at most `factor` x the mock's interval: streams that kept flowing at the pace the
    mock sent them. A stream that failed or ended short counts as not sustained."""
    if interval_ms <= 0 or not streams:
        return math.nan
    limit = factor * interval_ms / 1e3
    ok = sum(1 for s in streams
             if s.error is None and len(s.stamps) >= expected and all(g <= limit for g in s.gaps()))
    return 100 * ok / len(streams)


def connect_figures(prefix, streams):
    """Connect time (asyncio.open_connection) p50/p99/max over the streams whose connect completed, the
    count of connects over 500 ms (a connect that never completed and failed after more than 500 ms
    counts too); the same for the kernel's handshake time (TCP_INFO, without the client's queueing); and the
    count of streams whose SYN was retransmitted (TCP_INFO right after connect)."""
    done = [s.connect_s for s in streams if s.connect_s is not None]
    shake = [s.handshake_s for s in streams if s.handshake_s is not None]
    now = time.perf_counter()
    never = sum(1 for s in streams if s.connect_s is None and s.t0 is not None and s.error is not None
                and now - s.t0 > 0.5)
    return {
        f"{prefix}_connect_p50_ms": pct(done, 0.5) * 1e3,
        f"{prefix}_connect_p99_ms": pct(done, 0.99) * 1e3,
        f"{prefix}_connect_max_ms": max(done, default=math.nan) * 1e3,
        f"{prefix}_connects_over_500ms": sum(1 for c in done if c > 0.5) + never,
        f"{prefix}_handshake_p50_ms": pct(shake, 0.5) * 1e3,
        f"{prefix}_handshake_p99_ms": pct(shake, 0.99) * 1e3,
        f"{prefix}_handshake_max_ms": max(shake, default=math.nan) * 1e3,
        f"{prefix}_handshakes_over_500ms": sum(1 for c in shake if c > 0.5) + never,
        f"{prefix}_syn_retrans_streams": sum(1 for s in streams if s.syn_retrans),
        f"{prefix}_retrans_streams": sum(1 for s in streams if s.retrans),
    }


def measure(binary, a, tls=None):
    """One run of one binary on fresh processes: relay load (CPU, RSS, latency), then the same load direct.
    With `tls` (a Pki) the mock serves HTTPS, the relay reaches it over TLS, and the direct load speaks TLS."""
    mock, relay = start_pair(binary, a, tls)
    try:
        t0, ns0 = cpu_ticks(relay.pid), cpu_ns(relay.pid)
        res, rss0, rss1, open_then, rclient = asyncio.run(run_load(relay.port, RELAY_PATH, relay_body(a.tokens),
                                                                   a.streams, a.timeout, relay.pid))
        settle(relay.pid)
        ticks, ns1 = cpu_ticks(relay.pid) - t0, cpu_ns(relay.pid)
        mock_split = len(mock.loop_warns)  # the mock's loop warnings up to here are the relay load's
        direct, _, _, _, dclient = asyncio.run(run_load(mock.port, MOCK_PATH, direct_body(a.tokens), a.streams,
                                                        a.timeout, tls=tls.client_context() if tls else None))
    finally:
        relay.stop()
        mock.stop()
    chunks = sum(len(s.stamps) for s in res)
    direct_per_stream = median([len(s.stamps) for s in direct if not s.error])
    errors = [s.error for s in res if s.error] + [f"direct: {s.error}" for s in direct if s.error]
    expected = expected_events(a)
    relay_warns, relay_busy = relay.loop_summary()
    mock_relay_load, mock_direct_load = mock.loop_warns[:mock_split], mock.loop_warns[mock_split:]
    row = {
        "cpu_us_per_chunk": ticks / CLK_TCK * 1e6 / chunks if chunks else math.nan,
        "cpu_us_per_chunk_schedstat": (ns1 - ns0) / 1e3 / chunks if chunks and ns0 is not None and ns1 else math.nan,
        "rss_kib_per_stream": (rss1[0] - rss0[0]) / open_then if open_then else math.nan,
        "rss_file_kib_delta": rss1[1] - rss0[1],
        "relay_ttfb_p50_ms": pct([s.ttfb() for s in res], 0.5) * 1e3,
        "relay_ttfb_p99_ms": pct([s.ttfb() for s in res], 0.99) * 1e3,
        "relay_gap_p50_ms": pct([g for s in res for g in s.gaps()], 0.5) * 1e3,
        "relay_gap_p99_ms": pct([g for s in res for g in s.gaps()], 0.99) * 1e3,
        "direct_ttfb_p50_ms": pct([s.ttfb() for s in direct], 0.5) * 1e3,
        "direct_ttfb_p99_ms": pct([s.ttfb() for s in direct], 0.99) * 1e3,
        "direct_gap_p50_ms": pct([g for s in direct for g in s.gaps()], 0.5) * 1e3,
        "direct_gap_p99_ms": pct([g for s in direct for g in s.gaps()], 0.99) * 1e3,
        "relay_bunched_pct": bunched_pct(res, a.interval_ms),
        "direct_bunched_pct": bunched_pct(direct, a.interval_ms),
        "chunks": chunks,
        "cpu_ticks": ticks,
        "cpu_resolution_us_per_chunk": 1e6 / CLK_TCK / chunks if chunks else math.nan,
        "rss_streams_open": open_then,
        "chunks_per_stream_direct": direct_per_stream,
        "short_streams": sum(1 for s in res if len(s.stamps) < direct_per_stream),
        "failed_streams": len(errors),
        "relay_sustained_pct": sustained_pct(res, expected, a.interval_ms, 2),
        "relay_sustained_10x_pct": sustained_pct(res, expected, a.interval_ms, 10),
        "direct_sustained_pct": sustained_pct(direct, expected, a.interval_ms, 2),
        "direct_sustained_10x_pct": sustained_pct(direct, expected, a.interval_ms, 10),
        **connect_figures("relay", res),
        **connect_figures("direct", direct),
        "relay_loop_warns": relay_warns,
        "relay_loop_busy_max_ms": relay_busy,
        "mock_loop_warns_relay_load": len(mock_relay_load),
        "mock_loop_busy_max_ms_relay_load": max((ms for ms, _ in mock_relay_load), default=0.0),
        "mock_loop_warns_direct": len(mock_direct_load),
        "mock_loop_busy_max_ms_direct": max((ms for ms, _ in mock_direct_load), default=0.0),
        "relay_listen_overflows": rclient["listen_overflows"] + rclient["listen_drops"],
        "direct_listen_overflows": dclient["listen_overflows"] + dclient["listen_drops"],
        **{f"relay_client_{k}": v for k, v in rclient.items() if k not in ("listen_overflows", "listen_drops")},
        **{f"direct_client_{k}": v for k, v in dclient.items() if k not in ("listen_overflows", "listen_drops")},
        "errors": sorted(set(errors))[:5],
        "failed_relay": sum(1 for s in res if s.error),
        "failed_direct": sum(1 for s in direct if s.error),
    }
    row["stderr"] = {"relay": relay.other_err, "relay_lines": relay.other_err_count,
                     "mock": mock.other_err, "mock_lines": mock.other_err_count}
    return row


def find_strace(a):
    path = shutil.which("strace")
    if path or not a.install:
        return path
    print("strace is missing; --install given: apt-get install -y strace", flush=True)
    try:
        subprocess.run(["apt-get", "install", "-y", "strace"], timeout=300, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"  apt-get failed: {e}")
    return shutil.which("strace")


def parse_strace_c(text):
    """{syscall: (calls, errors)} from `strace -c` output. The numbers are right-aligned under the header's
    labels, so each cell is read between the end of the previous label and the end of its own: an empty
    `errors` cell is 0, not the next column."""
    lines = text.splitlines()
    header = next((l for l in lines if "calls" in l and "syscall" in l), None)
    if header is None:
        return {}
    ends = {m.group(): m.end() for m in re.finditer(r"\S+", header)}
    calls = (ends["usecs/call"], ends["calls"])
    errors = (ends["calls"], ends["errors"])
    out = {}
    for line in lines[lines.index(header) + 1:]:
        if not line.strip() or line.lstrip().startswith("-"):
            continue
        name = line.split()[-1]
        c, e = line[calls[0]:calls[1]].strip(), line[errors[0]:errors[1]].strip()
        if name != "total" and c.isdigit():
            out[name] = (int(c), int(e) if e.isdigit() else 0)
    return out


def wait_traced(pid, tracer, timeout):
    """True once strace is attached to every thread of `pid` (TracerPid set), False if it failed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and tracer.poll() is None:
        try:
            tracers = [int(re.search(r"TracerPid:\s*(\d+)", open(f"/proc/{pid}/task/{t}/status").read()).group(1))
                       for t in os.listdir(f"/proc/{pid}/task")]
        except (OSError, AttributeError):
            tracers = []
        if tracers and all(tracers):
            return True
        time.sleep(0.05)
    return False


def strace_run(binary, strace, a, tls=None):
    """Syscalls of the relay process alone over a shorter load, per chunk received by the clients."""
    n = a.strace_streams
    mock, relay = start_pair(binary, a, tls)
    fd, out = tempfile.mkstemp(prefix="tokenpipe-strace-", suffix=".txt")
    os.close(fd)
    try:
        tracer = subprocess.Popen([strace, "-c", "-f", "-o", out, "-p", str(relay.pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            if not wait_traced(relay.pid, tracer, 10):
                tracer.kill()
                err = tracer.communicate(timeout=10)[1].strip()
                return {"error": f"strace did not attach: {err[-300:]}"}
            t0 = time.monotonic()
            res, _, _, _, _ = asyncio.run(run_load(relay.port, RELAY_PATH, relay_body(a.tokens), n, a.timeout * 3))
            duration = time.monotonic() - t0
            settle(relay.pid)
        finally:
            if tracer.poll() is None:
                tracer.send_signal(signal.SIGINT)  # detaches and writes the summary
                try:
                    tracer.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    tracer.kill()
                    tracer.wait()
        table = parse_strace_c(open(out).read())
    finally:
        relay.stop()
        mock.stop()
        os.unlink(out)
    chunks = sum(len(s.stamps) for s in res)
    total = sum(c for c, _ in table.values())
    return {
        "streams": n,
        "chunks": chunks,
        "failed_streams": sum(1 for s in res if s.error),
        "duration_s": duration,
        "bunched_pct": bunched_pct(res, a.interval_ms),
        "calls": total,
        "syscalls_per_chunk": total / chunks if chunks else math.nan,
        "per_syscall": {name: {"calls": c, "errors": e, "calls_per_chunk": c / chunks if chunks else math.nan,
                               "errors_per_chunk": e / chunks if chunks else math.nan}
                        for name, (c, e) in sorted(table.items(), key=lambda kv: -kv[1][0])},
    }


def strace_medians(runs):
    """One binary's strace runs folded into medians, per syscall too (a syscall missing from a run counts 0)."""
    names = {n for r in runs for n in r["per_syscall"]}
    per = {n: {k: median([r["per_syscall"].get(n, {}).get(k, 0) for r in runs])
               for k in ("calls_per_chunk", "errors_per_chunk")} for n in names}
    return {
        "runs": runs,
        "syscalls_per_chunk": median([r["syscalls_per_chunk"] for r in runs]),
        "bunched_pct": median([r["bunched_pct"] for r in runs]),
        "per_syscall": dict(sorted(per.items(), key=lambda kv: -kv[1]["calls_per_chunk"])),
    }


# ------------------------------------------------------------------------------------------------- report

def fmt(v, width=10):
    if isinstance(v, float):
        return f"{v:{width}.2f}" if v == v else f"{'n/a':>{width}}"
    return f"{v:>{width}}"


def no_nan(x):
    """NaN (a figure that could not be taken) as JSON null, which every reader understands."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [no_nan(v) for v in x]
    return x


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def raise_fd_limit(streams):
    """Raises this process's soft RLIMIT_NOFILE to its hard limit (the mock and the relay raise their own) and
    fails clearly when that is below 2 x streams + 100. Returns the soft limit in force."""
    need = 2 * streams + 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel refuses more than fs.nr_open
        try:
            target = int(open("/proc/sys/fs/nr_open").read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft == resource.RLIM_INFINITY or soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            print(f"note: could not raise RLIMIT_NOFILE from {soft} to {target}: {e}", file=sys.stderr)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < need:
        raise SystemExit(f"--streams {streams} needs {need} file descriptors in this process (2 x streams + 100), "
                         f"but RLIMIT_NOFILE is {soft} (hard limit {hard}, raised as far as allowed): raise the hard "
                         f"limit (e.g. `ulimit -Hn` as root, or LimitNOFILE) or lower --streams")
    return soft


def read_int(path):
    try:
        return int(open(path).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def control_problems(row, a, tls_side=False):
    """Why the client (the direct-to-mock control, and the client's own loop lag) cannot vouch for the relay's
    burst figures of this row (a run or the medians); empty when it can. On the tls side of
    --upstream-tls-compare the client's lag during the direct load is left out (tls_direct_lag_note says it):
    there the client does N TLS handshakes in Python itself, which the relay load (plain HTTP from the client)
    never asks of it; whether the TLS mock keeps its pace is still judged (direct_sustained_pct)."""
    out = []
    if row.get("direct_sustained_pct", math.nan) < CONTROL_SUSTAINED_PCT:
        out.append(f"only {row['direct_sustained_pct']:.1f}% of the direct-to-mock streams were sustained "
                   f"(<= 2x the interval)")
    if row.get("failed_direct", 0):
        out.append(f"{row['failed_direct']:g} direct-to-mock streams failed")
    for load in ("relay",) if tls_side else ("relay", "direct"):
        lag = row.get(f"{load}_client_lag_p99_ms", math.nan)
        if lag > a.interval_ms:
            out.append(f"the client's own event loop lagged p99 {lag:.0f} ms (max "
                       f"{row.get(f'{load}_client_lag_max_ms', math.nan):.0f} ms) during the {load} load, more than "
                       f"the {a.interval_ms} ms interval (client CPU {row.get(f'{load}_client_cpu_pct', math.nan):.0f}%"
                       f" of one core)")
    return out


def tls_direct_lag_note(row, a):
    """On the tls side: the client's lag during its own (Python) TLS load to the mock, when over the interval."""
    lag = row.get("direct_client_lag_p99_ms", math.nan)
    if not lag > a.interval_ms:
        return ""
    return (f"the client's loop lagged p99 {lag:.0f} ms (max {row.get('direct_client_lag_max_ms', math.nan):.0f} ms) "
            f"during the direct load over Python TLS (client CPU {row.get('direct_client_cpu_pct', math.nan):.0f}% of "
            f"one core): its own TLS handshakes, which the relay load (plain HTTP from the client) does not ask of "
            f"it; direct_ttfb_* and direct_connect_* on the tls side carry that, so they are no floor for the "
            f"relay's TTFB")


def check_binary(path, flag):
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise SystemExit(f"{flag} {path}: no such executable (cargo build --release?)")
    return path


def positive(v):
    n = int(v)
    if n <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return n


def connect_note(r, load):
    """Says when slow open_connection times are the client's own queueing rather than the kernel's (a listen
    backlog overflow makes both slow and retransmits SYNs)."""
    slow, shake = r.get(f"{load}_connects_over_500ms", 0), r.get(f"{load}_handshakes_over_500ms", 0)
    if slow and slow > 2 * shake and not r.get(f"{load}_syn_retrans_streams"):
        return (f"{slow:g} open_connection times over 500 ms, yet {shake:g} kernel handshakes over 500 ms and "
                f"{r.get(f'{load}_syn_retrans_streams', 0):g} SYNs retransmitted: that is the client's queueing "
                f"(issuing the burst took {r.get(f'{load}_client_burst_issue_ms', math.nan):.0f} ms of one loop "
                f"turn), not a listen backlog overflow")
    return ""


def print_burst_run(row, a):
    """The burst figures of one run, under its main line."""
    r = row
    print(f"  sustained (every gap <= 2x / 10x the interval, complete): relay {r['relay_sustained_pct']:.1f}% / "
          f"{r['relay_sustained_10x_pct']:.1f}%, direct {r['direct_sustained_pct']:.1f}% / "
          f"{r['direct_sustained_10x_pct']:.1f}%; failed relay {r['failed_relay']}, direct {r['failed_direct']}")
    for load in ("relay", "direct"):
        print(f"  {load:6} connect (open_connection) p50/p99/max {r[f'{load}_connect_p50_ms']:.1f}/"
              f"{r[f'{load}_connect_p99_ms']:.1f}/{r[f'{load}_connect_max_ms']:.1f} ms, "
              f"{r[f'{load}_connects_over_500ms']} over 500 ms; kernel handshake p50/p99/max "
              f"{r[f'{load}_handshake_p50_ms']:.0f}/{r[f'{load}_handshake_p99_ms']:.0f}/"
              f"{r[f'{load}_handshake_max_ms']:.0f} ms, {r[f'{load}_handshakes_over_500ms']} over 500 ms; SYN "
              f"retransmitted {r[f'{load}_syn_retrans_streams']}, listen overflows (machine) "
              f"{r[f'{load}_listen_overflows']}")
        print(f"  {'':6} client cpu {r[f'{load}_client_cpu_pct']:.0f}% of one core over "
              f"{r[f'{load}_client_wall_s']:.1f} s, own loop lag p99/max {r[f'{load}_client_lag_p99_ms']:.0f}/"
              f"{r[f'{load}_client_lag_max_ms']:.0f} ms, burst issued in {r[f'{load}_client_burst_issue_ms']:.0f} ms")
        note = connect_note(r, load)
        if note:
            print(f"  {'':6} note: {note}")
    busy = (f", largest {r['relay_loop_busy_max_ms']:.1f} ms" if r["relay_loop_warns"] else "")
    print(f"  relay loop: {r['relay_loop_warns']} iterations busy over {a.loop_warn_ms} ms{busy}; mock loop: "
          f"{r['mock_loop_warns_relay_load']} (largest {r['mock_loop_busy_max_ms_relay_load']:.1f} ms) in the relay "
          f"load, {r['mock_loop_warns_direct']} (largest {r['mock_loop_busy_max_ms_direct']:.1f} ms) direct",
          flush=True)


def print_burst_table(rows, medians, labels, a, cmp=None):
    print(f"\nburst, medians of {a.runs} runs (+-: half the range over the runs, in the figure's units"
          + (f"; diff = {cmp[0]} - {cmp[1]}" if cmp else "") + ")")
    print(f"  sustained = complete ({expected_events(a)} events) and every gap <= 2x (10x) --interval-ms "
          f"{a.interval_ms}; connect = asyncio.open_connection (includes the client's queueing"
          + ("; on the tls side's direct load also the TLS handshake" if cmp and "tls" in cmp else "")
          + f"); handshake = the kernel's, from TCP_INFO (ms); loop = iterations busy over --loop-warn-ms "
          f"{a.loop_warn_ms} (busy_max 0: none); client = the Python client itself")
    print(f"  {'figure':34}" + "".join(f"{label:>12}{'+-':>9}" for label in labels)
          + (f"{'diff':>12}" if cmp else ""))
    for k in BURST:
        line = f"  {k:34}"
        for label in labels:
            values = [r[k] for r in rows[label] if r[k] == r[k]]
            half = (max(values) - min(values)) / 2 if len(values) > 1 else math.nan
            line += fmt(float(medians[label].get(k, math.nan)), 12) + fmt(float(half), 9)
        if cmp:
            line += fmt(float(medians[cmp[0]].get(k, math.nan) - medians[cmp[1]].get(k, math.nan)), 12)
        print(line)


def preflight(binary, a, tls, label):
    """One stream through a fresh pair of `label`'s setup before the measured runs: stops the script, saying why,
    when it does not relay a complete stream (e.g. a binary without https:// upstreams on the tls side)."""
    try:
        mock, relay = start_pair(binary, a, tls)
    except SystemExit as e:
        raise SystemExit(f"preflight ({label}): the processes did not start: {e}")
    try:
        res, _, _, _, _ = asyncio.run(run_load(relay.port, RELAY_PATH, relay_body(a.tokens), 1, a.timeout))
    finally:
        relay.stop()
        mock.stop()
    s = res[0]
    if s.error is None and len(s.stamps) >= expected_events(a):
        return
    why = s.error or f"{len(s.stamps)} events instead of {expected_events(a)}"
    tail = "\n".join(f"    relay: {l}" for l in relay.other_err[-20:]) + (
        "\n" if relay.other_err and mock.other_err else "") + "\n".join(f"    mock:  {l}" for l in mock.other_err[-10:])
    raise SystemExit(f"preflight ({label}): one stream through `{' '.join(relay.args)}` failed: {why}\n"
                     f"  the relay's and the mock's stderr (RUST_LOG=warn):\n{tail or '    (nothing)'}")


def print_legend(labels, cmp, rname, a):
    """What the columns and rows of the medians table mean."""
    print("  columns: figure = the row's figure (below); "
          + "; ".join(f"{label} = {SETUP_TEXT.get(label, 'the binary ' + label)}" for label in labels)
          + "; +- = half the range over the runs, in % of the median"
          + (f"; {rname} = ratio of the two medians ({'> 1: TLS costs more or is slower' if cmp[0] == 'tls' else '< 1: after uses less or is faster'})"
             if cmp else ""))
    for k, text in ROW_TEXT:
        if k == "direct_*" and "tls" in labels:
            text += " (tls side: Python's own TLS to the TLS mock, handshakes included)"
        print(f"    {k:30} {text}")


SETUP_TEXT = {
    "plain": "relay -> mock over plain HTTP (--upstream http://127.0.0.1:PORT)",
    "tls": "relay -> mock over TLS (mock --tls-cert/--tls-key, relay --upstream https://localhost:PORT --upstream-ca)",
    "after": "--bin",
    "before": "--compare",
    "bin": "--bin",
}
ROW_TEXT = [
    ("cpu_us_per_chunk", "relay CPU (utime+stime, clock ticks) over the relay load / chunks received, us"),
    ("cpu_us_per_chunk_schedstat", "the same from /proc/PID/task/*/schedstat (ns on CPU), finer"),
    ("rss_kib_per_stream", "relay RssAnon growth (before the load -> every stream has its first event) / streams open "
                           "then, KiB"),
    ("syscalls_per_chunk", "relay syscalls (strace -c -f, all threads, separate shorter runs) / chunks received"),
    ("relay_ttfb_p50/p99_ms", "client's connect -> first event through the relay, p50 / p99 over the streams, ms"),
    ("relay_gap_p50/p99_ms", "gaps between consecutive events of a stream through the relay, p50 / p99, ms"),
    ("direct_*", "the same, the client straight to the mock: the floor"),
    ("*_bunched_pct", "share of gaps < half the interval: someone on the way fell behind and merged events"),
    ("chunks, cpu_ticks", "chunks the clients received through the relay, relay CPU ticks over that load"),
    ("cpu_resolution_us_per_chunk", "one clock tick / chunks: the granularity of cpu_us_per_chunk"),
    ("rss_streams_open", "streams open when the RSS was sampled (the divisor of rss_kib_per_stream)"),
    ("rss_file_kib_delta", "file-backed RSS growth over the same interval (code pages faulting in), KiB"),
    ("chunks_per_stream_direct", "median events per direct stream (tokens + 2 expected)"),
    ("short_streams, failed_streams", "relayed streams with fewer events than direct; streams that failed (both loads)"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=DEFAULT_BIN, help="tokenpipe binary measured (\"after\"); default: %(default)s")
    ap.add_argument("--compare", metavar="PATH", help="second tokenpipe binary (\"before\"), measured in the same runs")
    ap.add_argument("--relay-args", metavar="ARGS", default="",
                    help="extra options for the --bin relay (\"after\"), e.g. to measure one option on and off")
    ap.add_argument("--compare-args", metavar="ARGS", default="",
                    help="extra options for the --compare relay (\"before\"), e.g. --no-metrics")
    ap.add_argument("--upstream-tls-compare", action="store_true",
                    help="measure --bin twice per run, plain http:// upstream and TLS https://localhost upstream "
                         "(test PKI made with openssl), and report tls/plain")
    ap.add_argument("--tls-key-type", choices=["p256", "rsa2048"], default="p256",
                    help="keys of the test PKI of --upstream-tls-compare (default: %(default)s)")
    ap.add_argument("--tls-budget-kib", type=float, default=24.0,
                    help="--upstream-tls-compare: the budget of relay memory per TLS stream that rss_kib_per_stream "
                         "(tls) is held against (default: %(default)s)")
    ap.add_argument("--streams", type=positive, default=1000, help="concurrent streams per load (default: %(default)s)")
    ap.add_argument("--runs", type=positive, default=5, help="runs; medians are reported (default: %(default)s)")
    ap.add_argument("--tokens", type=positive, default=20, help="tokens per stream (default: %(default)s)")
    ap.add_argument("--interval-ms", type=int, default=50, help="mock's pause between events (default: %(default)s)")
    ap.add_argument("--timeout", type=positive, default=60, help="seconds allowed per load (default: %(default)s)")
    ap.add_argument("--strace-streams", type=positive,
                    help="streams of each strace run (default: --streams, at most 50: strace slows the relay "
                         "down, and a relay that falls behind merges events and makes fewer calls per chunk)")
    ap.add_argument("--strace-runs", type=positive, default=1,
                    help="strace runs per binary, order alternating; medians are reported (default: %(default)s)")
    ap.add_argument("--loop-warn-ms", type=positive, default=20,
                    help="passed to the relay and the mock: a loop iteration busy for longer is logged as a warning, "
                         "counted per run (default: %(default)s)")
    ap.add_argument("--verbose", action="store_true",
                    help="after each run, print the relay's and the mock's other stderr lines (RUST_LOG=warn)")
    ap.add_argument("--no-strace", action="store_true", help="skip the syscall count")
    ap.add_argument("--install", action="store_true", help="apt-get install -y strace if it is missing")
    ap.add_argument("--json", metavar="FILE", help="write all figures to FILE as JSON")
    a = ap.parse_args()
    a.strace_streams = a.strace_streams or min(a.streams, 50)
    if a.interval_ms < 0:
        ap.error("--interval-ms must be >= 0")
    if a.upstream_tls_compare and a.compare:
        ap.error("--upstream-tls-compare measures one binary (--bin) against itself over TLS; drop --compare")

    binary = check_binary(a.bin, "--bin")
    pki = None
    if a.upstream_tls_compare:
        pki = Pki(a.tls_key_type)  # before stop_all is registered: at exit the processes stop, then it is removed
        setups = {"plain": (binary, None), "tls": (binary, pki)}
        cmp = ("tls", "plain")
    elif a.compare:
        after = Binary(binary, a.relay_args.split())
        before = Binary(check_binary(a.compare, "--compare"), a.compare_args.split())
        setups = {"after": (after, None), "before": (before, None)}
        cmp = ("after", "before")
    else:
        setups = {"bin": (binary, None)}
        cmp = None
    labels = list(setups)
    rname = f"{cmp[0]}/{cmp[1]}" if cmp else ""

    fd_limit = raise_fd_limit(a.streams)
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    hashes = {label: sha256(path) for label, (path, _) in setups.items()}
    print(f"tokenpipe relay measurement: {a.streams} streams x {a.tokens} tokens x {a.interval_ms} ms interval, "
          f"{a.runs} runs, {os.cpu_count()} CPUs, clock tick {1000 / CLK_TCK:g} ms, load average "
          f"{os.getloadavg()[0]:.2f} (1 min)")
    ports = (lambda r: r[1] - r[0] + 1 if r else None)(
        [int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split()]
        if os.path.exists("/proc/sys/net/ipv4/ip_local_port_range") else None)
    print(f"  client: one asyncio thread, all {a.streams} streams opened at once (a burst), {a.timeout} s per load; "
          f"RLIMIT_NOFILE {fd_limit}; kernel: somaxconn {read_int('/proc/sys/net/core/somaxconn')}, "
          f"tcp_max_syn_backlog {read_int('/proc/sys/net/ipv4/tcp_max_syn_backlog')}, {ports} ephemeral ports")
    if ports and ports < 2 * a.streams:
        print(f"  warning: the relay load needs {2 * a.streams} ephemeral ports at once (client->relay and "
              f"relay->mock), more than the {ports} of ip_local_port_range")
    if pki:
        print(f"  binary {binary}  (sha256 {hashes['tls'][:12]}), measured as two setups per run:")
        try:
            resolved = sorted({ai[4][0] for ai in socket.getaddrinfo(TLS_NAME, None, type=socket.SOCK_STREAM)})
        except OSError as e:
            resolved = [f"unresolved: {e}"]
        print(f"  test PKI: {pki.describe()}; {TLS_NAME} resolves here to {', '.join(resolved)} (the mock listens on "
              f"{HOST} only)")
        for label, (_, tls) in setups.items():
            print(f"  {label:6} {' '.join(mock_args(a, tls))}  +  {' '.join(relay_args('MOCK_PORT', a, tls))}")
    else:
        for label, (path, _) in setups.items():
            extra = " ".join(getattr(path, "extra", []))
            print(f"  {label:6} {path}  (sha256 {hashes[label][:12]})" + (f" with {extra}" if extra else ""))
        if a.compare and hashes["after"] == hashes["before"] and a.relay_args == a.compare_args:
            print("  note: both binaries are identical; the ratios show this machine's noise, not a change")
        print(f"  per run and binary: {' '.join(mock_args(a))}  +  {' '.join(relay_args('MOCK_PORT', a))}")
    print(f"  requests: POST {RELAY_PATH} {relay_body(a.tokens).decode()}   "
          f"(direct: POST {MOCK_PATH} to the mock" + (", over TLS on the tls side" if pki else "") + ")")
    print(f"  {CHUNK_DEFINITION}")
    if cmp:
        print(f"  order alternates: odd runs measure {labels[0]} then {labels[1]}, even runs {labels[1]} then "
              f"{labels[0]}; fresh processes for each")
    if pki:
        for label in labels:
            preflight(setups[label][0], a, setups[label][1], label)
        print(f"  preflight: one stream relayed completely through each of {', '.join(labels)}")
    print(flush=True)

    rows = {label: [] for label in labels}
    for i in range(a.runs):
        order = labels if i % 2 == 0 else labels[::-1]
        for label in order:
            row = measure(setups[label][0], a, setups[label][1])
            rows[label].append(row)
            print(f"run {i + 1} {label:6} cpu_us/chunk={row['cpu_us_per_chunk']:.2f} "
                  f"(resolution {row['cpu_resolution_us_per_chunk']:.2f}: {row['cpu_ticks']} ticks / {row['chunks']} chunks; "
                  f"schedstat {row['cpu_us_per_chunk_schedstat']:.2f}) "
                  f"rss_kib/stream={row['rss_kib_per_stream']:.2f} ({row['rss_streams_open']} open) "
                  f"ttfb p50/p99={row['relay_ttfb_p50_ms']:.2f}/{row['relay_ttfb_p99_ms']:.2f} ms "
                  f"gap p50/p99={row['relay_gap_p50_ms']:.2f}/{row['relay_gap_p99_ms']:.2f} ms | direct ttfb p50/p99="
                  f"{row['direct_ttfb_p50_ms']:.2f}/{row['direct_ttfb_p99_ms']:.2f} "
                  f"gap p50/p99={row['direct_gap_p50_ms']:.2f}/{row['direct_gap_p99_ms']:.2f} ms", flush=True)
            print_burst_run(row, a)
            if row["failed_streams"] or row["short_streams"]:
                print(f"  warning: {row['failed_streams']} streams failed, {row['short_streams']} relayed streams "
                      f"got fewer events than the mock sends directly ({row['chunks_per_stream_direct']:g}); "
                      f"{row['errors']}", flush=True)
            if row["chunks_per_stream_direct"] != expected_events(a):
                print(f"  warning: the direct streams' median is {row['chunks_per_stream_direct']:g} events, not "
                      f"the {expected_events(a)} (tokens + 2) that sustained_pct requires of a complete stream")
            problems = control_problems(row, a, label == "tls")
            if problems:
                print("  control: the client cannot keep up here: " + "; ".join(problems), flush=True)
            note = tls_direct_lag_note(row, a) if label == "tls" else ""
            if note:
                print(f"  note: {note}", flush=True)
            err = row["stderr"]
            if a.verbose:
                for who in ("relay", "mock"):
                    print(f"  {who} stderr, other than loop warnings ({err[who + '_lines']} lines"
                          + (f", first {len(err[who])} shown" if len(err[who]) < err[who + "_lines"] else "") + "):")
                    for line in err[who]:
                        print(f"    {line}")
            elif err["relay_lines"] or err["mock_lines"]:
                print(f"  ({err['relay_lines']} other stderr lines from the relay, {err['mock_lines']} from the mock: "
                      f"--verbose shows them)")

    medians = {label: {k: median([r[k] for r in rows[label]]) for k in FIGURES + COUNTS + BURST
                       if k in rows[label][0]}
               for label in labels}

    straced = {}
    strace = None if a.no_strace else find_strace(a)
    what = "side" if pki else "binary"
    if a.no_strace:
        print("\nsyscalls: skipped (--no-strace)")
    elif not strace:
        print("\nsyscalls: strace is not installed, skipped (rerun with --install to apt-get it)")
    else:
        print(f"\nsyscalls: strace -c -f -p RELAY_PID, relay process only (one worker), {a.strace_runs} run(s) of "
              f"{a.strace_streams} streams x {a.tokens} tokens per {what}; chunks = SSE events the clients received",
              flush=True)
        done = {label: [] for label in labels}
        for i in range(a.strace_runs):
            for label in (labels if i % 2 == 0 else labels[::-1]):
                r = strace_run(setups[label][0], strace, a, setups[label][1])
                if "error" in r:
                    print(f"  {label}: {r['error']}; syscalls skipped")
                    done = {}
                    break
                done[label].append(r)
                print(f"strace run {i + 1} {label:6} {r['calls']} calls / {r['chunks']} chunks = "
                      f"{r['syscalls_per_chunk']:.2f} per chunk, {r['duration_s']:.1f} s, events bunched "
                      f"{r['bunched_pct']:.1f}%" + (f", {r['failed_streams']} streams failed" if r["failed_streams"]
                                                     else ""), flush=True)
                if r["bunched_pct"] > 5:
                    print(f"  warning: under strace more than 5% of the events came bunched (gap < half the "
                          f"interval): the relay fell behind and merged events, which lowers the calls per "
                          f"chunk; lower --strace-streams", flush=True)
            if not done:
                break
        for label, runs in done.items():
            straced[label] = strace_medians(runs)
            medians[label]["syscalls_per_chunk"] = straced[label]["syscalls_per_chunk"]

    print(f"\nmedians of {a.runs} runs (+-: half the range over the runs, in % of the median)"
          + (f"; ratio = {rname} of the medians" if cmp else ""))
    print_legend(labels, cmp, rname, a)
    print(f"  {'figure':30}" + "".join(f"{label:>12}{'+-':>7}" for label in labels)
          + (f"{rname:>14}" if cmp else ""))
    for k in FIGURES + COUNTS:
        if k == "syscalls_per_chunk" and not straced:
            continue
        line = f"  {k:30}"
        for label in labels:
            m = medians[label].get(k, math.nan)
            values = ([r["syscalls_per_chunk"] for r in straced[label]["runs"]] if k == "syscalls_per_chunk"
                      else [r[k] for r in rows[label]])
            values = [v for v in values if v == v]
            half = (max(values) - min(values)) / 2 / m * 100 if len(values) > 1 and m else math.nan
            line += fmt(m, 12) + (f"{half:6.0f}%" if k in FIGURES and half == half else " " * 7)
        if cmp and k in FIGURES:
            line += fmt(ratio(medians[cmp[0]].get(k), medians[cmp[1]].get(k)), 14)
        print(line)
    res_us = median([r["cpu_resolution_us_per_chunk"] for label in labels for r in rows[label]])
    cpu = median([medians[label]["cpu_us_per_chunk"] for label in labels])
    if cpu > 0:
        print(f"  cpu_us_per_chunk is tick-granular: one tick = {res_us:.3f} us/chunk here, "
              f"{100 * res_us / cpu:.1f}% of the figure"
              + ("; lengthen the load (--streams, --tokens) for a finer one" if res_us / cpu > 0.05 else ""))
    else:
        print(f"  cpu_us_per_chunk is below its resolution of one tick = {res_us:.3f} us/chunk here; "
              f"lengthen the load (--streams, --tokens) or read cpu_us_per_chunk_schedstat")

    print_burst_table(rows, medians, labels, a, cmp)

    if straced:
        print(f"\nsyscalls per chunk by syscall, relay process only (strace -c -f, {a.strace_streams} streams x "
              f"{a.tokens} tokens, median of {a.strace_runs} run(s); failed = calls returning an error, "
              f"EAGAIN mostly)")
        names = sorted({n for label in labels for n in straced[label]["per_syscall"]},
                       key=lambda n: -max(straced[label]["per_syscall"].get(n, {}).get("calls_per_chunk", 0)
                                          for label in labels))
        print(f"  {'syscall':18}" + "".join(f"{label:>12}{'(failed)':>10}" for label in labels)
              + (f"{rname:>14}" if cmp else ""))
        for n in names:
            line = f"  {n:18}"
            for label in labels:
                d = straced[label]["per_syscall"].get(n, {"calls_per_chunk": 0.0, "errors_per_chunk": 0.0})
                line += f"{d['calls_per_chunk']:12.3f}{d['errors_per_chunk']:10.3f}"
            if cmp:
                line += fmt(ratio(*(straced[label]["per_syscall"].get(n, {}).get("calls_per_chunk", 0.0)
                                    for label in cmp)), 14)
            print(line)
        print(f"  {'total':18}" + "".join(f"{straced[label]['syscalls_per_chunk']:12.3f}{'':10}" for label in labels)
              + (fmt(ratio(*(straced[label]["syscalls_per_chunk"] for label in cmp)), 14) if cmp else ""))

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (1 min); other work on the machine shows there")
    ratios = {}
    if cmp:
        num, den = cmp
        ratios = {k: ratio(medians[num].get(k), medians[den].get(k)) for k in FIGURES}
        print(f"\n{rname} (medians): " + ", ".join(f"{k} {fmt(ratios.get(k, math.nan), 0)}"
                                               for k in SUMMARY if k != "syscalls_per_chunk" or straced))
        print(f"burst (medians, {num} vs {den}): " + ", ".join(
            f"{k} {fmt(medians[num].get(k, math.nan), 0)} vs {fmt(medians[den].get(k, math.nan), 0)}"
            for k in BURST_SUMMARY))
    else:
        print("\nburst (medians): " + ", ".join(f"{k} {fmt(medians['bin'].get(k, math.nan), 0)}"
                                              for k in BURST_SUMMARY))
    for label in labels:
        problems = control_problems(medians[label], a, label == "tls")
        name = f" ({label})" if cmp else ""
        note = tls_direct_lag_note(medians[label], a) if label == "tls" else ""
        if note:
            print(f"note{name} (medians): {note}")
        for load in ("relay", "direct"):
            note = connect_note(medians[label], load)
            if note:
                print(f"connect{name}, {load} (medians): {note}")
        if problems:
            print(f"CONTROL FAILED{name}: the Python asyncio client (and the mock it shares {os.cpu_count()} CPUs "
                  f"with) cannot keep up with this burst: " + "; ".join(problems) + ". The relay's sustained, gap "
                  f"and TTFB figures are then bounded by the client, not by the relay alone; read them against "
                  f"the direct_* control, or lower --streams / raise --interval-ms.")
        else:
            print(f"control ok{name}: {medians[label]['direct_sustained_pct']:.1f}% of the direct-to-mock streams "
                  f"sustained, client loop lag p99 {medians[label]['relay_client_lag_p99_ms']:.0f} ms (relay load) / "
                  f"{medians[label]['direct_client_lag_p99_ms']:.0f} ms (direct"
                  + (", over Python TLS, not judged" if label == "tls" else "") + "): the client keeps up"
                  + (" with the relay load" if label == "tls" else ""))
    budget = None
    if pki:
        budget = tls_budget(rows, medians, a)
        print(budget["text"])

    if a.json:
        doc = {
            "config": {"streams": a.streams, "runs": a.runs, "tokens": a.tokens, "interval_ms": a.interval_ms,
                       "timeout_s": a.timeout, "loop_warn_ms": a.loop_warn_ms, "rlimit_nofile": fd_limit, "strace_streams": a.strace_streams, "strace_runs": a.strace_runs,
                       "clk_tck": CLK_TCK, "cpus": os.cpu_count(), "chunk_definition": CHUNK_DEFINITION,
                       "mode": "upstream-tls-compare" if pki else ("compare" if a.compare else "single"),
                       "order": (f"alternating: odd runs {labels[0]} then {labels[1]}, even runs {labels[1]} then "
                                 f"{labels[0]}" if cmp else "one binary")},
            "binaries": {label: {"path": path, "sha256": hashes[label], "upstream_tls": tls is not None,
                                 "mock_args": mock_args(a, tls), "relay_args": relay_args("MOCK_PORT", a, tls),
                                 "runs": rows[label], "median": medians[label], "strace": straced.get(label)}
                         for label, (path, tls) in setups.items()},
        }
        if cmp:
            doc[f"ratio_{cmp[0]}_over_{cmp[1]}"] = ratios
        if pki:
            doc["config"]["tls"] = {"key_type": a.tls_key_type, "name": TLS_NAME, "openssl": pki.version}
            doc["tls_memory_budget"] = {k: v for k, v in budget.items() if k != "text"}
        with open(a.json, "w") as f:
            json.dump(no_nan(doc), f, indent=2)
        print(f"\nfigures written to {a.json}")


def tls_budget(rows, medians, a):
    """The memory per TLS stream against --tls-budget-kib: the tls side's median rss_kib_per_stream, each run's,
    and the tls - plain difference of the medians (what the upstream TLS adds per stream)."""
    tls, plain = medians["tls"].get("rss_kib_per_stream", math.nan), medians["plain"].get("rss_kib_per_stream", math.nan)
    runs = [r["rss_kib_per_stream"] for r in rows["tls"]]
    over = [v for v in runs if not v < a.tls_budget_kib]  # NaN counts as over: the figure could not be taken
    if tls != tls:
        verdict = "NOT MEASURED (no stream was open at the sample)"
    elif tls < a.tls_budget_kib:
        verdict = "UNDER the budget" + (f" (median), but {len(over)} of {len(runs)} runs at or over it" if over
                                        else f" in every run (largest {max(runs):.2f} KiB)")
    else:
        verdict = f"OVER the budget ({len(over)} of {len(runs)} runs at or over it)"
    text = (f"\nmemory per TLS stream (relay RssAnon growth / open streams, tls side): median {fmt(tls, 0)} KiB, "
            f"budget {a.tls_budget_kib:g} KiB: {verdict}\n"
            f"  per run: {', '.join(fmt(v, 0) for v in runs)} KiB; plain side median {fmt(plain, 0)} KiB; "
            f"tls - plain {fmt(tls - plain, 0)} KiB per stream (what the upstream TLS adds); "
            f"{medians['tls'].get('rss_streams_open', math.nan):g} streams open at the sample (median), pages of "
            f"4 KiB: steps of {4 / max(1, medians['tls'].get('rss_streams_open') or 1):.3f} KiB")
    return {"text": text, "budget_kib": a.tls_budget_kib, "tls_median_kib": tls, "plain_median_kib": plain,
            "tls_minus_plain_kib": tls - plain, "tls_runs_kib": runs, "runs_at_or_over": len(over),
            "under": bool(tls < a.tls_budget_kib)}

if __name__ == "__main__":
    sys.exit(main())
