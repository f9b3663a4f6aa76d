#!/usr/bin/env python3
"""Rerunnable figures for the relay core, for one build of tokenpipe or for two builds side by side.

This is a measurement, not a test: it asserts nothing. Per run and per binary it starts fresh processes
from that binary, a mock upstream and a relay with one worker, on 127.0.0.1 ephemeral ports; opens N
concurrent streams through the relay, then N straight to the mock; and stops both processes. Nothing but
127.0.0.1 is contacted. The report gives the median of several runs, since shared machines are noisy.

    cargo build --release && python3 scripts/measure_relay.py [--streams 1000] [--runs 5]

Before/after a change (build the old revision elsewhere first, e.g. into /work/before/tokenpipe):

    python3 scripts/measure_relay.py --streams 200 --tokens 50 --interval-ms 20 --runs 5 \\
        --compare /work/before/tokenpipe

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
  relay_gap_p99_ms   p99 of the gaps between consecutive events of a stream, over all streams of a run.
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
import statistics
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
           "relay_ttfb_p50_ms", "relay_ttfb_p99_ms", "relay_gap_p99_ms", "direct_ttfb_p50_ms", "direct_ttfb_p99_ms",
           "direct_gap_p99_ms"]
COUNTS = ["relay_bunched_pct", "direct_bunched_pct", "chunks", "cpu_ticks", "cpu_resolution_us_per_chunk",
          "rss_streams_open", "rss_file_kib_delta", "chunks_per_stream_direct", "short_streams", "failed_streams"]


# ---------------------------------------------------------------------------------------------- processes

LIVE = []  # processes started and not yet stopped, killed at exit whatever happens


def child_env():
    """The environment minus what could change the binaries' behaviour behind the command line's back."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("TOKENPIPE_") and not k.endswith("_API_KEY")}


class Proc:
    """A started tokenpipe process: waits for its `listening on` line, then keeps draining its stdout so that
    it can never block on a full pipe. Its stderr goes to a temporary file, shown if it fails to start."""

    def __init__(self, binary, args):
        self.args = args
        self.err = tempfile.TemporaryFile()
        self.p = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stderr=self.err, text=True,
                                  env=child_env(), stdin=subprocess.DEVNULL)
        LIVE.append(self)
        self.pid = self.p.pid
        self.port = None
        bound = threading.Event()

        def drain():
            for line in self.p.stdout:
                m = re.match(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    bound.set()
            bound.set()  # EOF: the process has gone

        threading.Thread(target=drain, daemon=True).start()
        if not bound.wait(START_TIMEOUT_S) or self.port is None:
            if self.p.poll() is None:
                self.p.kill()
            self.p.wait()
            self.err.seek(0)
            tail = self.err.read().decode(errors="replace")[-2000:]
            self.stop()
            why = "exited" if self.p.returncode is not None and bound.is_set() else f"timed out ({START_TIMEOUT_S} s)"
            raise SystemExit(f"{binary} {args[0]}: {why} before printing `listening on http://127.0.0.1:PORT`\n{tail}")

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.err.close()
        if self in LIVE:
            LIVE.remove(self)


def stop_all():
    for proc in list(LIVE):
        proc.stop()


def mock_args(a):
    return ["mock-upstream", "--listen", f"{HOST}:0", "--tokens", str(a.tokens), "--interval-ms",
            str(a.interval_ms), "--format", "openai"]


def relay_args(mock_port):
    return ["serve", "--listen", f"{HOST}:0", "--workers", "1", "--upstream", f"http://{HOST}:{mock_port}",
            "--provider", "openai"]


def start_pair(binary, a):
    """A fresh mock and a fresh one-worker relay in front of it, both from `binary`."""
    mock = Proc(binary, mock_args(a))
    try:
        relay = Proc(binary, relay_args(mock.port))
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


class Stream:
    """What one client saw: when it connected, when each event arrived, and what went wrong if anything."""

    def __init__(self):
        self.t0 = None
        self.stamps = []
        self.error = None
        self._buf = b""

    def feed(self, data, now):
        self._buf += data
        blocks = EVENT_END.split(self._buf)
        self._buf = blocks.pop()
        for block in blocks:
            if any(line.startswith(b"data:") for line in block.splitlines()):
                self.stamps.append(now)

    def ttfb(self):
        return self.stamps[0] - self.t0 if self.stamps else math.nan

    def gaps(self):
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]


async def one_stream(port, path, body, s):
    s.t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        writer.write(head + body)
        await writer.drain()
        lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                s.feed(data[:-2], time.perf_counter())
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                data = await reader.read(min(left, 65536))
                if not data:
                    raise RuntimeError("closed before Content-Length")
                left -= len(data)
                s.feed(data, time.perf_counter())
        else:
            while data := await reader.read(65536):
                s.feed(data, time.perf_counter())
    finally:
        writer.close()


async def run_load(port, path, body, n, timeout, watch_pid=None):
    """N concurrent streams, all within `timeout` seconds. With watch_pid, samples that process's RSS before
    the load and once every stream has had its first event (or failed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    rss_before = rss_kib(watch_pid) if watch_pid else (0, 0)
    streams = [Stream() for _ in range(n)]
    tasks = [asyncio.create_task(one_stream(port, path, body, s)) for s in streams]
    rss_open, open_then = rss_before, 0
    if watch_pid:
        while loop.time() < deadline and not all(s.stamps or t.done() for s, t in zip(streams, tasks)):
            await asyncio.sleep(0.005)
        rss_open = rss_kib(watch_pid)
        open_then = sum(1 for s, t in zip(streams, tasks) if s.stamps and not t.done())
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for s, t in zip(streams, tasks):
        if t in pending:
            s.error = f"timeout after {timeout} s"
        elif t.exception() is not None:
            s.error = repr(t.exception())
    return streams, rss_before, rss_open, open_then


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


def measure(binary, a):
    """One run of one binary on fresh processes: relay load (CPU, RSS, latency), then the same load direct."""
    mock, relay = start_pair(binary, a)
    try:
        t0, ns0 = cpu_ticks(relay.pid), cpu_ns(relay.pid)
        res, rss0, rss1, open_then = asyncio.run(run_load(relay.port, RELAY_PATH, relay_body(a.tokens),
                                                          a.streams, a.timeout, relay.pid))
        settle(relay.pid)
        ticks, ns1 = cpu_ticks(relay.pid) - t0, cpu_ns(relay.pid)
        direct, _, _, _ = asyncio.run(run_load(mock.port, MOCK_PATH, direct_body(a.tokens), a.streams, a.timeout))
    finally:
        relay.stop()
        mock.stop()
    chunks = sum(len(s.stamps) for s in res)
    direct_per_stream = median([len(s.stamps) for s in direct if not s.error])
    errors = [s.error for s in res if s.error] + [f"direct: {s.error}" for s in direct if s.error]
    return {
        "cpu_us_per_chunk": ticks / CLK_TCK * 1e6 / chunks if chunks else math.nan,
        "cpu_us_per_chunk_schedstat": (ns1 - ns0) / 1e3 / chunks if chunks and ns0 is not None and ns1 else math.nan,
        "rss_kib_per_stream": (rss1[0] - rss0[0]) / open_then if open_then else math.nan,
        "rss_file_kib_delta": rss1[1] - rss0[1],
        "relay_ttfb_p50_ms": pct([s.ttfb() for s in res], 0.5) * 1e3,
        "relay_ttfb_p99_ms": pct([s.ttfb() for s in res], 0.99) * 1e3,
        "relay_gap_p99_ms": pct([g for s in res for g in s.gaps()], 0.99) * 1e3,
        "direct_ttfb_p50_ms": pct([s.ttfb() for s in direct], 0.5) * 1e3,
        "direct_ttfb_p99_ms": pct([s.ttfb() for s in direct], 0.99) * 1e3,
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
        "errors": sorted(set(errors))[:5],
    }


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


def strace_run(binary, strace, a):
    """Syscalls of the relay process alone over a shorter load, per chunk received by the clients."""
    n = a.strace_streams
    mock, relay = start_pair(binary, a)
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
            res, _, _, _ = asyncio.run(run_load(relay.port, RELAY_PATH, relay_body(a.tokens), n, a.timeout * 3))
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=DEFAULT_BIN, help="tokenpipe binary measured (\"after\"); default: %(default)s")
    ap.add_argument("--compare", metavar="PATH", help="second tokenpipe binary (\"before\"), measured in the same runs")
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
    ap.add_argument("--no-strace", action="store_true", help="skip the syscall count")
    ap.add_argument("--install", action="store_true", help="apt-get install -y strace if it is missing")
    ap.add_argument("--json", metavar="FILE", help="write all figures to FILE as JSON")
    a = ap.parse_args()
    a.strace_streams = a.strace_streams or min(a.streams, 50)
    if a.interval_ms < 0:
        ap.error("--interval-ms must be >= 0")

    binaries = {"after": check_binary(a.bin, "--bin")}
    if a.compare:
        binaries["before"] = check_binary(a.compare, "--compare")
    else:
        binaries = {"bin": binaries["after"]}
    labels = list(binaries)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < a.streams + 64:
        raise SystemExit(f"--streams {a.streams} needs more file descriptors than the hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    hashes = {label: sha256(path) for label, path in binaries.items()}
    print(f"tokenpipe relay measurement: {a.streams} streams x {a.tokens} tokens x {a.interval_ms} ms interval, "
          f"{a.runs} runs, {os.cpu_count()} CPUs, clock tick {1000 / CLK_TCK:g} ms, load average "
          f"{os.getloadavg()[0]:.2f} (1 min)")
    for label, path in binaries.items():
        print(f"  {label:6} {path}  (sha256 {hashes[label][:12]})")
    if a.compare and hashes["after"] == hashes["before"]:
        print("  note: both binaries are identical; the ratios show this machine's noise, not a change")
    print(f"  per run and binary: {' '.join(mock_args(a))}  +  {' '.join(relay_args('MOCK_PORT'))}")
    print(f"  requests: POST {RELAY_PATH} {relay_body(a.tokens).decode()}   "
          f"(direct: POST {MOCK_PATH} to the mock)")
    print(f"  {CHUNK_DEFINITION}")
    if a.compare:
        print("  order alternates: odd runs measure after then before, even runs before then after")
    print(flush=True)

    rows = {label: [] for label in labels}
    for i in range(a.runs):
        order = labels if i % 2 == 0 else labels[::-1]
        for label in order:
            row = measure(binaries[label], a)
            rows[label].append(row)
            print(f"run {i + 1} {label:6} cpu_us/chunk={row['cpu_us_per_chunk']:.2f} "
                  f"(resolution {row['cpu_resolution_us_per_chunk']:.2f}: {row['cpu_ticks']} ticks / {row['chunks']} chunks; "
                  f"schedstat {row['cpu_us_per_chunk_schedstat']:.2f}) "
                  f"rss_kib/stream={row['rss_kib_per_stream']:.2f} ({row['rss_streams_open']} open) "
                  f"ttfb p50/p99={row['relay_ttfb_p50_ms']:.2f}/{row['relay_ttfb_p99_ms']:.2f} ms "
                  f"gap p99={row['relay_gap_p99_ms']:.2f} ms | direct ttfb p50/p99="
                  f"{row['direct_ttfb_p50_ms']:.2f}/{row['direct_ttfb_p99_ms']:.2f} "
                  f"gap p99={row['direct_gap_p99_ms']:.2f} ms", flush=True)
            if row["failed_streams"] or row["short_streams"]:
                print(f"  warning: {row['failed_streams']} streams failed, {row['short_streams']} relayed streams "
                      f"got fewer events than the mock sends directly ({row['chunks_per_stream_direct']:g}); "
                      f"{row['errors']}", flush=True)

    medians = {label: {k: median([r[k] for r in rows[label]]) for k in FIGURES + COUNTS if k in rows[label][0]}
               for label in labels}

    straced = {}
    strace = None if a.no_strace else find_strace(a)
    if a.no_strace:
        print("\nsyscalls: skipped (--no-strace)")
    elif not strace:
        print("\nsyscalls: strace is not installed, skipped (rerun with --install to apt-get it)")
    else:
        print(f"\nsyscalls: strace -c -f -p RELAY_PID, relay process only (one worker), {a.strace_runs} run(s) of "
              f"{a.strace_streams} streams x {a.tokens} tokens per binary; chunks = SSE events the clients received",
              flush=True)
        done = {label: [] for label in labels}
        for i in range(a.strace_runs):
            for label in (labels if i % 2 == 0 else labels[::-1]):
                r = strace_run(binaries[label], strace, a)
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
          + ("; ratio = after/before, < 1 means after uses less" if a.compare else ""))
    print(f"  {'figure':30}" + "".join(f"{label:>12}{'+-':>7}" for label in labels)
          + (f"{'after/before':>14}" if a.compare else ""))
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
        if a.compare and k in FIGURES:
            line += fmt(ratio(medians["after"].get(k), medians["before"].get(k)), 14)
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

    if straced:
        print(f"\nsyscalls per chunk by syscall, relay process only (strace -c -f, {a.strace_streams} streams x "
              f"{a.tokens} tokens, median of {a.strace_runs} run(s); failed = calls returning an error, "
              f"EAGAIN mostly)")
        names = sorted({n for label in labels for n in straced[label]["per_syscall"]},
                       key=lambda n: -max(straced[label]["per_syscall"].get(n, {}).get("calls_per_chunk", 0)
                                          for label in labels))
        print(f"  {'syscall':18}" + "".join(f"{label:>12}{'(failed)':>10}" for label in labels)
              + (f"{'after/before':>14}" if a.compare else ""))
        for n in names:
            line = f"  {n:18}"
            for label in labels:
                d = straced[label]["per_syscall"].get(n, {"calls_per_chunk": 0.0, "errors_per_chunk": 0.0})
                line += f"{d['calls_per_chunk']:12.3f}{d['errors_per_chunk']:10.3f}"
            if a.compare:
                line += fmt(ratio(*(straced[label]["per_syscall"].get(n, {}).get("calls_per_chunk", 0.0)
                                    for label in labels)), 14)
            print(line)
        print(f"  {'total':18}" + "".join(f"{straced[label]['syscalls_per_chunk']:12.3f}{'':10}" for label in labels)
              + (fmt(ratio(*(straced[label]["syscalls_per_chunk"] for label in labels)), 14) if a.compare else ""))

    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} (1 min); other work on the machine shows there")
    ratios = {}
    if a.compare:
        ratios = {k: ratio(medians["after"].get(k), medians["before"].get(k)) for k in FIGURES}
        print("\nafter/before (medians): " + ", ".join(f"{k} {fmt(ratios.get(k, math.nan), 0)}" for k in SUMMARY))

    if a.json:
        doc = {
            "config": {"streams": a.streams, "runs": a.runs, "tokens": a.tokens, "interval_ms": a.interval_ms,
                       "timeout_s": a.timeout, "strace_streams": a.strace_streams, "strace_runs": a.strace_runs,
                       "clk_tck": CLK_TCK, "cpus": os.cpu_count(), "chunk_definition": CHUNK_DEFINITION,
                       "order": "alternating: odd runs after then before, even runs before then after"},
            "binaries": {label: {"path": path, "sha256": hashes[label], "runs": rows[label],
                                 "median": medians[label], "strace": straced.get(label)}
                         for label, path in binaries.items()},
            "ratio_after_over_before": ratios,
        }
        with open(a.json, "w") as f:
            json.dump(no_nan(doc), f, indent=2)
        print(f"\nfigures written to {a.json}")


if __name__ == "__main__":
    sys.exit(main())
