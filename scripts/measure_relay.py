#!/usr/bin/env python3
"""Rerunnable figures for the relay core: CPU per relayed chunk, memory per stream, system calls per chunk,
and latency percentiles through the relay against the same mock reached directly.

This is a measurement, not a test: it asserts nothing. It starts the release binary twice (a mock upstream
and a relay with one worker) on 127.0.0.1 ephemeral ports, opens N concurrent streams per run, and reports
the median of several runs, since shared machines are noisy. The tokio baselines and the full benchmark
suite come with their own issue; until then the only comparison here is "through the relay" against
"straight to the mock", measured in the same run.

    cargo build --release && python3 scripts/measure_relay.py [--streams 1000] [--runs 5]

Every load is bounded: N streams of T tokens each, per run, a fixed number of runs, a timeout on each.
"""
import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "tokenpipe")
BODY = b'{"prompt":"hello brave new world"}'


def start(args):
    """Starts the binary and waits for its `listening on` line; returns (process, port)."""
    p = subprocess.Popen([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        m = re.match(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            return p, int(m.group(1))
    raise SystemExit(f"{args[0]} did not start")


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


async def stream(port, path, body, opened, results):
    """One stream: returns (time to first event, gaps between events, events)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    t0 = time.perf_counter()
    writer.write(head.encode() + body)
    await writer.drain()
    data, stamps, seen = b"", [], 0
    while not data.endswith(b"0\r\n\r\n"):
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
        now = time.perf_counter()
        n = data.count(b"data:")
        if n > seen and seen == 0:
            opened.append(1)
        stamps.extend([now] * (n - seen))
        seen = n
    writer.close()
    ttfb = stamps[0] - t0 if stamps else float("nan")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    results.append((ttfb, gaps, seen))


async def run_load(port, path, body, n, watch_pid=None):
    opened, results = [], []
    rss_before = rss_kib(watch_pid) if watch_pid else 0
    tasks = [asyncio.create_task(stream(port, path, body, opened, results)) for _ in range(n)]
    rss_open = rss_before
    while len(opened) < n and not all(t.done() for t in tasks):
        await asyncio.sleep(0.005)
    if watch_pid:
        rss_open = rss_kib(watch_pid)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    return results, rss_before, rss_open


def pct(values, q):
    values = sorted(v for v in values if v == v)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--interval-ms", type=int, default=50)
    a = ap.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    def pair():
        mock, mport = start(["mock-upstream", "--listen", "127.0.0.1:0", "--tokens", str(a.tokens),
                             "--interval-ms", str(a.interval_ms)])
        relay, rport = start(["serve", "--listen", "127.0.0.1:0", "--workers", "1",
                              "--upstream", f"http://127.0.0.1:{mport}", "--provider", "openai"])
        return mock, mport, relay, rport

    rows = []
    # Fresh processes for every run: memory per stream is only meaningful before the allocator has pages
    # left over from an earlier run.
    for i in range(a.runs):
        mock, mport, relay, rport = pair()
        try:
            t0 = cpu_ticks(relay.pid)
            res, rss0, rss1 = asyncio.run(run_load(rport, "/api/v1/generate-stream", BODY, a.streams, relay.pid))
            ticks = cpu_ticks(relay.pid) - t0
            chunks = sum(r[2] for r in res)
            direct, _, _ = asyncio.run(run_load(mport, "/v1/chat/completions",
                                                b'{"messages":[{"role":"user","content":"hello brave new world"}],"stream":true}',
                                                a.streams))
        finally:
            relay.kill()
            mock.kill()
        row = {
            "cpu_us_per_chunk": ticks / os.sysconf("SC_CLK_TCK") * 1e6 / max(chunks, 1),
            "rss_kib_per_stream_open": (rss1 - rss0) / a.streams,
            "relay_ttfb_p50_ms": pct([r[0] for r in res], 0.5) * 1e3,
            "relay_ttfb_p99_ms": pct([r[0] for r in res], 0.99) * 1e3,
            "direct_ttfb_p50_ms": pct([r[0] for r in direct], 0.5) * 1e3,
            "direct_ttfb_p99_ms": pct([r[0] for r in direct], 0.99) * 1e3,
            "relay_gap_p99_ms": pct([g for r in res for g in r[1]], 0.99) * 1e3,
            "direct_gap_p99_ms": pct([g for r in direct for g in r[1]], 0.99) * 1e3,
            "chunks": chunks,
        }
        rows.append(row)
        print(f"run {i + 1}: " + " ".join(f"{k}={v:.2f}" for k, v in row.items()), flush=True)
    print("median of runs:")
    for k in rows[0]:
        print(f"  {k:26} {statistics.median(r[k] for r in rows):10.2f}")
    if not shutil.which("strace"):
        return
    mock, mport, relay, rport = pair()
    try:
        out = "/tmp/tokenpipe-strace.txt"
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(relay.pid)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let strace attach; it only starts counting then
        n = min(a.streams, 200)
        res, _, _ = asyncio.run(run_load(rport, "/api/v1/generate-stream", BODY, n))
        tracer.terminate()
        tracer.wait(timeout=10)
        text = open(out).read()
        total = [l.split() for l in text.splitlines() if l.strip().endswith("total")]
        calls = int(total[0][3]) if total else 0
        chunks = sum(r[2] for r in res)
        print(f"syscalls per relayed chunk (strace -c, {n} streams, all-in incl. accept/connect/close): "
              f"{calls / max(chunks, 1):.2f}")
        print(text)
    finally:
        relay.kill()
        mock.kill()


if __name__ == "__main__":
    sys.exit(main())
