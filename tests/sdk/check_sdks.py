#!/usr/bin/env python3
"""The providers' official Python SDKs against tokenpipe: the mock reached directly, and the relay in front of it.

Starts one `tokenpipe mock-upstream` and three relays (`--provider openai|gemini|anthropic`, each with a fake
key of its own in its environment, and the SDKs' key as its one client key), all on 127.0.0.1, then, for each
provider, runs the same SDK calls twice: (a) with the SDK's base URL pointing at the mock, (b) pointing at the
relay. Nothing else about the client changes. It checks that

* streamed and non-streamed answers are identical both ways and not empty (streams: the same chunks, in order);
* the SDK's own credential (a distinctive fake key) never reaches the upstream through a relay, and the
  relay's key does, in the provider's header (read back from the mock's `GET /debug/requests`);
* an upstream 429 (the mock's fault hook, header `x-mock-status: 429`) reaches the SDK through the relay as
  its rate-limit error, with `retry-after: 7` (SDK retries disabled);
* the relay takes the SDK's key where the SDK puts it (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`)
  as its client key (`--client-key`, here `TOKENPIPE_CLIENT_KEYS`): every relayed call above depends on it;
  and an SDK with a wrong key gets a 401, which it raises as its authentication error, and nothing of that
  request reaches the upstream.

Each result is one line starting with PASS, FAIL or NOTE (NOTE: information, not a check); the last line is
`N passed, N failed`, and the exit status is non-zero on any failure. Only loopback is used. Every SDK call has a timeout, a watchdog bounds
the whole run, and the processes started are killed at exit, on failure too.

Usage: python3 tests/sdk/check_sdks.py [--bin target/debug/tokenpipe] [--timeout 10] [--deadline 100]
(tests/sdk/run.sh sets up a virtualenv with the pinned SDKs and runs this.)
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The credential given to every SDK client: the relays' client key, which must never reach the upstream.
CLIENT_SECRET = "client-secret-must-not-leak"
# A key the relays do not know: the SDK must get a 401 and raise its authentication error.
WRONG_SECRET = "wrong-client-secret-0000"
# The error each SDK raises for a 401.
AUTH_ERRORS = {"openai": "AuthenticationError", "anthropic": "AuthenticationError", "gemini": "ClientError"}
# The keys the relays inject, one per provider, and the header each provider's upstream expects it in.
RELAY_KEYS = {
    "openai": ("OPENAI_API_KEY", "sk-relay-key", "authorization", "Bearer sk-relay-key"),
    "anthropic": ("ANTHROPIC_API_KEY", "sk-ant-relay-key", "x-api-key", "sk-ant-relay-key"),
    "gemini": ("GEMINI_API_KEY", "gemini-relay-key", "x-goog-api-key", "gemini-relay-key"),
}
# A header every SDK client sends, so that the mock's request log tells which way a request came.
ROUTE_HEADER = "x-sdkcheck-route"
PROMPT = "hello brave new world"
MOCK_TOKENS = 8
MOCK_INTERVAL_MS = 5

# Variables that would change what the SDKs or the binaries do behind the test's back.
SCRUBBED_PREFIXES = ("TOKENPIPE_", "OPENAI_", "ANTHROPIC_", "GOOGLE_", "GEMINI_")
SCRUBBED_EXACT = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}


def scrubbed_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(SCRUBBED_PREFIXES) and k not in SCRUBBED_EXACT
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# ---------------------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A tokenpipe process: started, its `listening on` address read, killed at exit."""

    started: list["Proc"] = []

    def __init__(self, name: str, args: list[str], env: dict[str, str], startup_timeout: float):
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+b")
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            start_new_session=True,  # its own process group: killed as one, and not by a stray terminal signal
        )
        Proc.started.append(self)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:  # keeps reading stdout so that the child never blocks on a full pipe
            for raw in self.popen.stdout:
                lines.put(raw.decode("utf-8", "replace"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + startup_timeout
        self.addr = None
        while self.addr is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{name}: no 'listening on' line within {startup_timeout}s{self.tail()}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{name}: exited ({self.popen.wait()}) before listening{self.tail()}")
            m = re.search(r"listening on http://(127\.0\.0\.1:\d+)", line)
            if m:
                self.addr = m.group(1)
        self.url = f"http://{self.addr}"

    def tail(self, limit: int = 3000) -> str:
        try:
            self.log.seek(0)
            text = self.log.read().decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - best effort, for a failure message
            return ""
        return f"\n--- {self.name} stderr (last {limit} chars) ---\n{text[-limit:]}" if text.strip() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=3)

    @classmethod
    def kill_all(cls) -> None:
        for p in cls.started:
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - keep killing the others
                pass


def get_json(url: str, timeout: float):
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # only ever 127.0.0.1
        return json.load(resp)


# ---------------------------------------------------------------------------------------------------------
# Results


class Results:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.lock = threading.Lock()
        self.stopped = False  # set by the watchdog: nothing more is printed after its verdict

    def line(self, text: str) -> None:
        with self.lock:
            if not self.stopped:
                print(text, flush=True)

    def ok(self, name: str, detail: str = "") -> None:
        self.passed += 1
        self.line(f"PASS {name}" + (f": {detail}" if detail else ""))

    def fail(self, name: str, detail: str) -> None:
        self.failed += 1
        self.line(f"FAIL {name}: {detail}")

    def check(self, name: str, good: bool, detail: str) -> bool:
        (self.ok if good else self.fail)(name, detail)
        return good

    def run(self, name: str, fn):
        """Runs `fn`; an exception is a FAIL of `name`. Returns fn's value, or None."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a FAIL line
            self.fail(name, f"{type(exc).__name__}: {exc}".replace("\n", " ")[:600])
            if os.environ.get("SDKCHECK_TRACEBACK"):
                traceback.print_exc()
            return None


def short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------
# The SDK calls, one set per provider. Each `calls` function takes a base URL and a route label and returns
# {check name: callable returning (chunks or None, text)}, so the same calls run against mock and relay.


def openai_calls(base: str, route: str, timeout: float, api_key: str = CLIENT_SECRET):
    import openai

    client = openai.OpenAI(
        base_url=f"{base}/v1",
        api_key=api_key,
        max_retries=0,
        timeout=timeout,
        default_headers={ROUTE_HEADER: route},
    )
    messages = [{"role": "user", "content": PROMPT}]

    def chat_stream():
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
        chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
        return chunks, "".join(chunks)

    def chat_whole():
        r = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        return None, r.choices[0].message.content

    def responses_stream():
        with client.responses.stream(model="gpt-4o-mini", input=PROMPT) as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
        if "".join(deltas) != final.output_text:
            raise AssertionError(f"deltas {''.join(deltas)!r} != final output_text {final.output_text!r}")
        return deltas, final.output_text

    def responses_whole():
        r = client.responses.create(model="gpt-4o-mini", input=PROMPT)
        return None, r.output_text

    def models():
        return None, ",".join(m.id for m in client.models.list())

    def rate_limited(stream: bool):
        def call():
            try:
                r = client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=messages,
                    stream=stream,
                    extra_headers={"x-mock-status": "429"},
                )
                if stream:
                    list(r)
            except openai.RateLimitError as err:
                return err.status_code, err.response.headers.get("retry-after"), type(err).__name__
            raise AssertionError("no error raised")

        return call

    return (
        {
            "chat.completions.create(stream=True)": chat_stream,
            "chat.completions.create()": chat_whole,
            "responses.stream()": responses_stream,
            "responses.create()": responses_whole,
            "models.list()": models,
        },
        {
            "chat.completions.create() 429": rate_limited(False),
            "chat.completions.create(stream=True) 429": rate_limited(True),
        },
        "RateLimitError",
    )


def anthropic_calls(base: str, route: str, timeout: float, api_key: str = CLIENT_SECRET):
    import anthropic

    client = anthropic.Anthropic(
        base_url=base,
        api_key=api_key,
        max_retries=0,
        timeout=timeout,
        default_headers={ROUTE_HEADER: route},
    )
    messages = [{"role": "user", "content": PROMPT}]

    def stream_text():
        with client.messages.stream(model="claude-mock", max_tokens=64, messages=messages) as stream:
            chunks = list(stream.text_stream)
            final = stream.get_final_message()
        if "".join(chunks) != final.content[0].text:
            raise AssertionError(f"text_stream {''.join(chunks)!r} != final message {final.content[0].text!r}")
        return chunks, "".join(chunks)

    def whole():
        m = client.messages.create(model="claude-mock", max_tokens=64, messages=messages)
        return None, "".join(b.text for b in m.content if b.type == "text")

    def models():
        return None, ",".join(m.id for m in client.models.list())

    def rate_limited(stream: bool):
        def call():
            try:
                if stream:
                    with client.messages.stream(
                        model="claude-mock",
                        max_tokens=64,
                        messages=messages,
                        extra_headers={"x-mock-status": "429"},
                    ) as s:
                        list(s.text_stream)
                else:
                    client.messages.create(
                        model="claude-mock",
                        max_tokens=64,
                        messages=messages,
                        extra_headers={"x-mock-status": "429"},
                    )
            except anthropic.RateLimitError as err:
                return err.status_code, err.response.headers.get("retry-after"), type(err).__name__
            raise AssertionError("no error raised")

        return call

    return (
        {
            "messages.stream() text_stream": stream_text,
            "messages.create()": whole,
            "models.list()": models,
        },
        {
            "messages.create() 429": rate_limited(False),
            "messages.stream() 429": rate_limited(True),
        },
        "RateLimitError",
    )


def gemini_client(base: str, route: str, timeout: float, api_version: str | None, api_key: str = CLIENT_SECRET):
    from google import genai
    from google.genai import types

    options = types.HttpOptions(
        base_url=base,
        timeout=int(timeout * 1000),  # milliseconds
        headers={ROUTE_HEADER: route},
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    if api_version:
        options.api_version = api_version
    return genai.Client(api_key=api_key, http_options=options)


# google-genai's default API version (`v1` in recent releases); the relay passes `/v1` and `/v1beta` through, so
# the client is left at its default: only the base URL differs between the direct and the relayed runs.
GEMINI_API_VERSION = None


def gemini_calls(base: str, route: str, timeout: float, api_key: str = CLIENT_SECRET):
    from google.genai import errors

    client = gemini_client(base, route, timeout, GEMINI_API_VERSION, api_key)

    def stream():
        chunks = [c.text or "" for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)]
        return chunks, "".join(chunks)

    def whole():
        return None, client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT).text

    def models():
        return None, ",".join(m.name for m in client.models.list())

    def rate_limited(streamed: bool):
        def call():
            from google.genai import types

            faulty = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"x-mock-status": "429"}))
            try:
                if streamed:
                    list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT, config=faulty))
                else:
                    client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=faulty)
            except errors.ClientError as err:
                retry_after = err.response.headers.get("retry-after") if err.response is not None else None
                return err.code, retry_after, f"ClientError({err.status})"
            raise AssertionError("no error raised")

        return call

    return (
        {
            "models.generate_content_stream()": stream,
            "models.generate_content()": whole,
            "models.list()": models,
        },
        {
            "models.generate_content() 429": rate_limited(False),
            "models.generate_content_stream() 429": rate_limited(True),
        },
        "ClientError(RESOURCE_EXHAUSTED)",
    )


# ---------------------------------------------------------------------------------------------------------


def check_provider(provider: str, sdk_version: str, calls, mock: Proc, relay: Proc, res: Results, timeout: float):
    tag = f"{provider} (SDK {sdk_version})"
    before = res.run(f"{tag} read /debug/requests", lambda: get_json(f"{mock.url}/debug/requests", timeout))
    seen = before["total"] if before else 0

    direct_calls, _, _ = calls(mock.url, "direct", timeout)
    relay_calls, relay_faults, error_name = calls(relay.url, "relay", timeout)
    for name, direct_fn in direct_calls.items():
        direct = res.run(f"{tag} {name} [mock]", direct_fn)
        relayed = res.run(f"{tag} {name} [relay]", relay_calls[name])
        if direct is None or relayed is None:
            continue
        (d_chunks, d_text), (r_chunks, r_text) = direct, relayed
        what = f"{tag} {name}: mock == relay"
        if not d_text:
            res.fail(what, f"empty text from the mock ({short(d_text)})")
        elif d_chunks is not None and (d_chunks != r_chunks or len(d_chunks) < 2):
            res.fail(what, f"chunks differ or too few: mock {short(d_chunks)} relay {short(r_chunks)}")
        else:
            detail = short(d_text, 60) + (f" in {len(d_chunks)} chunks" if d_chunks is not None else "")
            res.check(what, d_text == r_text, detail if d_text == r_text else f"mock {short(d_text)} relay {short(r_text)}")

    for name, fn in relay_faults.items():
        got = res.run(f"{tag} {name} [relay]", fn)
        if got is not None:
            want = (429, "7", error_name)
            res.check(f"{tag} {name} through the relay -> {error_name}, retry-after 7", got == want,
                      f"status {got[0]}, retry-after {got[1]!r}, {got[2]}" + ("" if got == want else f" (wanted {want})"))

    # A wrong key: the relay answers 401 and the SDK raises its authentication error, streamed or not.
    wrong_calls, _, _ = calls(relay.url, "relay-wrong-key", timeout, api_key=WRONG_SECRET)
    for name in list(wrong_calls)[:2]:
        got = res.run(f"{tag} {name} with a wrong key [relay]", lambda: auth_failure(wrong_calls[name]))
        if got is not None:
            want = (401, AUTH_ERRORS[provider])
            res.check(f"{tag} {name} with a wrong key -> 401 {want[1]}", got == want,
                      f"status {got[0]}, {got[1]}" + ("" if got == want else f" (wanted {want})"))

    # What reached the upstream: the SDK's key only on the direct requests, the relay's key on the relayed ones.
    log = res.run(f"{tag} read /debug/requests", lambda: get_json(f"{mock.url}/debug/requests", timeout))
    if log is None:
        return
    fresh = [r for r in log["requests"] if r["seq"] > seen]
    if log["total"] - seen > len(fresh):
        res.fail(f"{tag} request log", f"{log['total'] - seen} requests but only {len(fresh)} kept: raise KEPT or split")
        return

    def header(r, name):
        return [v for n, v in r["headers"] if n.lower() == name]

    def route_of(r):
        return (header(r, ROUTE_HEADER) or ["?"])[0]

    relayed = [r for r in fresh if route_of(r) == "relay"]
    direct = [r for r in fresh if route_of(r) == "direct"]
    refused = [f"{r['method']} {r['path']}" for r in fresh if route_of(r) == "relay-wrong-key"]
    res.check(f"{tag} a request with a wrong key never reaches the upstream", not refused,
              "none did" if not refused else f"{refused} did")
    _, relay_key, key_header, key_value = RELAY_KEYS[provider]
    leaks = [
        f"{r['method']} {r['path']}"
        for r in relayed
        if CLIENT_SECRET in json.dumps([r["headers"], r["query"], r["body"]])
    ]
    res.check(f"{tag} SDK credential never reaches the upstream through the relay", bool(relayed) and not leaks,
              f"{len(relayed)} relayed requests checked" if not leaks else f"leaked in {leaks}")
    wrong_key = [
        f"{r['method']} {r['path']} {key_header}={header(r, key_header)}"
        for r in relayed
        if header(r, key_header) != [key_value]
    ]
    res.check(f"{tag} relay's key reaches the upstream as {key_header}", bool(relayed) and not wrong_key,
              f"on all {len(relayed)} relayed requests" if not wrong_key else f"not on {wrong_key}")
    # The control: the direct requests do carry the SDK's key, so the leak check above can see one.
    seen_direct = sum(CLIENT_SECRET in json.dumps(r["headers"]) for r in direct)
    names = sorted({n.lower() for r in direct for n, v in r["headers"] if CLIENT_SECRET in v})
    res.check(f"{tag} (control) SDK credential seen on the direct requests", bool(direct) and seen_direct == len(direct),
              f"{seen_direct}/{len(direct)}, in {names}")
    relay_key_direct = [r["path"] for r in direct if relay_key in json.dumps(r["headers"])]
    res.check(f"{tag} (control) relay's key absent from the direct requests", not relay_key_direct,
              "absent" if not relay_key_direct else f"present on {relay_key_direct}")


def check_metrics(provider: str, relay: Proc, res: Results, timeout: float):
    """The relay's GET /metrics, read by the Prometheus project's own Python parser: it parses, every family
    says what it is, histograms are cumulative and end at their count, and the SDK calls just made show up
    in the request counter and, read from the streams' own usage fields, in the token counter."""
    from prometheus_client.parser import text_string_to_metric_families

    tag = f"{provider} GET /metrics"

    def scrape():
        with urllib.request.urlopen(f"{relay.url}/metrics", timeout=timeout) as r:
            ctype = r.headers.get("Content-Type", "")
            return ctype, r.read().decode()

    got = res.run(f"{tag} answers", scrape)
    if got is None:
        return
    ctype, text = got
    res.check(f"{tag} is Prometheus text 0.0.4", ctype.startswith("text/plain; version=0.0.4"), ctype)
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # noqa: BLE001 - the parser's verdict is the check
        res.fail(f"{tag} parses with prometheus_client", f"{type(exc).__name__}: {exc}")
        return
    res.check(f"{tag} parses with prometheus_client", len(families) > 20, f"{len(families)} families")
    bad = [f.name for f in families if not f.documentation or f.type not in ("counter", "gauge", "histogram")]
    res.check(f"{tag} every family has HELP and a TYPE", not bad, "all do" if not bad else f"not {bad}")
    broken = []
    for f in (f for f in families if f.type == "histogram"):
        series = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
        for key, h in series.items():
            values = [v for _, v in sorted(h["buckets"])]
            if values != sorted(values) or not values or values[-1] != h["count"]:
                broken.append(f"{f.name}{dict(key)}")
    res.check(f"{tag} histograms are cumulative and end at their count", not broken,
              "all are" if not broken else f"not {broken[:3]}")

    def total(name, **labels):
        return sum(s.value for f in families for s in f.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    served = total("tokenpipe_http_requests_total", route="passthrough", status="200")
    res.check(f"{tag} counts the SDK calls", served >= 2, f"{served:.0f} pass-through requests answered 200")
    out = total("gen_ai_client_token_usage_total", gen_ai_token_type="output")
    res.check(f"{tag} counts the tokens the streams reported", out > 0, f"{out:.0f} output tokens")


def auth_failure(call):
    """Runs an SDK call that must fail; returns (HTTP status, exception class name) of its error."""
    try:
        call()
    except Exception as err:  # noqa: BLE001 - each SDK has its own error classes
        status = getattr(err, "status_code", None) or getattr(err, "code", None)
        return status, type(err).__name__
    raise AssertionError("no error raised")


def gemini_default_version_note(mock: Proc, relay: Proc, timeout: float) -> str:
    """What google-genai does with its default api_version through the relay (informational, not a check)."""
    from google.genai import errors

    client = gemini_client(relay.url, "note", timeout, None)
    version = client._api_client._http_options.api_version
    try:
        client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT)
        outcome = "works"
    except errors.APIError as err:
        outcome = f"HTTP {err.code} from the relay"
    except Exception as exc:  # noqa: BLE001
        outcome = f"{type(exc).__name__}: {exc}"
    used = "the default" if GEMINI_API_VERSION is None else repr(GEMINI_API_VERSION)
    return (f"NOTE google-genai's default api_version is {version!r}: POST /{version}/models/...:generateContent "
          f"through the relay: {outcome}; the checks use {used}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(REPO / "target/debug/tokenpipe"), help="the tokenpipe binary")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds for each SDK call")
    ap.add_argument("--deadline", type=float, default=100.0, help="seconds for the whole run (watchdog)")
    args = ap.parse_args()

    started = time.monotonic()
    # Drop variables the SDKs would read (base URLs, keys, API versions, Vertex mode, proxies).
    for k in list(os.environ):
        if k.startswith(SCRUBBED_PREFIXES) or k in SCRUBBED_EXACT:
            del os.environ[k]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

    atexit.register(Proc.kill_all)

    def on_signal(signum, _frame):
        raise SystemExit(f"FAIL interrupted by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    res = Results()

    def watchdog():
        with res.lock:
            res.stopped = True
            print(f"FAIL watchdog: the run took longer than {args.deadline}s; killing everything", flush=True)
            for p in Proc.started:
                tail = p.tail()
                if tail:
                    print(tail, flush=True)
            Proc.kill_all()
            print(f"{res.passed} passed, {res.failed + 1} failed", flush=True)
            os._exit(3)

    timer = threading.Timer(args.deadline, watchdog)
    timer.daemon = True
    timer.start()

    binary = Path(args.bin)
    if not binary.is_absolute():
        binary = Path.cwd() / binary
    if not os.access(binary, os.X_OK):
        print(f"FAIL no executable tokenpipe binary at {binary} (cargo build, or --bin)", flush=True)
        print("0 passed, 1 failed", flush=True)
        return 2

    import anthropic
    import google.genai
    import openai

    versions = {"openai": openai.__version__, "anthropic": anthropic.__version__, "gemini": google.genai.__version__}
    print(f"python {sys.version.split()[0]}; openai {versions['openai']}, anthropic {versions['anthropic']}, "
          f"google-genai {versions['gemini']}; binary {binary}", flush=True)

    env = scrubbed_env()
    env.setdefault("RUST_LOG", "warn")
    try:
        mock = Proc("mock", [str(binary), "mock-upstream", "--listen", "127.0.0.1:0", "--tokens", str(MOCK_TOKENS),
                             "--interval-ms", str(MOCK_INTERVAL_MS)], env, args.timeout)
        relays = {}
        for provider, (var, key, _, _) in RELAY_KEYS.items():
            relays[provider] = Proc(
                f"relay-{provider}",
                [str(binary), "--upstream", mock.url, "--provider", provider, "--workers", "1",
                 "--listen", "127.0.0.1:0"],
                # The client key in the environment, not on the command line (which `ps` shows).
                {**env, var: key, "TOKENPIPE_CLIENT_KEYS": CLIENT_SECRET},
                args.timeout,
            )
        res.line(f"started: mock {mock.url}; relays " + ", ".join(f"{p} {r.url}" for p, r in relays.items()))

        for provider, calls in (("openai", openai_calls), ("anthropic", anthropic_calls), ("gemini", gemini_calls)):
            check_provider(provider, versions[provider], calls, mock, relays[provider], res, args.timeout)
            check_metrics(provider, relays[provider], res, args.timeout)
        res.line(gemini_default_version_note(mock, relays["gemini"], args.timeout))

        for p in [mock, *relays.values()]:
            res.check(f"{p.name} still running at the end", p.alive(), "alive" if p.alive() else f"exited {p.popen.poll()}")
        if res.failed:
            for p in [mock, *relays.values()]:
                tail = p.tail()
                if tail:
                    res.line(tail)
    except Exception as exc:  # noqa: BLE001 - a set-up failure is a FAIL too
        res.fail("set-up", f"{type(exc).__name__}: {exc}")
    finally:
        timer.cancel()
        Proc.kill_all()

    res.line(f"sdk checks took {time.monotonic() - started:.1f}s")
    res.line(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
