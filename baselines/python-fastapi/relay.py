"""python-fastapi relay: the Python design tokenpipe replaces, as a benchmark peer.

FastAPI on uvicorn (uvloop event loop, httptools parser, one worker process), with one shared
httpx.AsyncClient whose pool keeps connections to the upstream alive between requests. The route
POST /api/v1/generate-stream reads the JSON body, builds the same OpenAI streamed chat request as
tokenpipe (see openai_body below, and baselines/shared/generate.rs for the Rust twin), sends it, and
returns a StreamingResponse over the upstream's `aiter_raw()`: each piece httpx reads from the upstream
is written to the client as one chunk as soon as it arrives, nothing is buffered or re-encoded.

Run by hand (after `pip install -r requirements.txt` in a virtual environment):

    python relay.py --listen 127.0.0.1:8083 --upstream http://127.0.0.1:9090

Choices that match tokenpipe rather than the defaults: at most 64 idle upstream connections, closed
after 30 s idle (tokenpipe's --upstream-max-conns, --upstream-idle-timeout) and no cap on open ones (the
default cap of 100 would queue streams inside httpx); a 120 s read timeout (tokenpipe's
--stream-idle-timeout); no proxy from the environment; no access log (tokenpipe logs no request at
info); the listen backlog as large as the kernel allows (tokenpipe's default). What it does not do:
retries, an SSE error event when the upstream breaks mid-stream (the response just ends early: uvicorn
closes the connection without the last chunk), deadlines other than httpx's timeouts.
"""

import argparse
import json
import sys

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

# tokenpipe's model for OpenAI when the client names none.
DEFAULT_MODEL = "gpt-4o-mini"
# tokenpipe's --max-body-bytes default.
MAX_BODY_BYTES = 1 << 20
ACCEPTED = ("prompt", "messages", "system", "model", "temperature", "top_p", "stop", "max_tokens")
USER_AGENT = "python-fastapi-relay/0.1.0"
STREAM_HEADERS = {
    # Set by hand: Starlette's media_type would add "; charset=utf-8", which tokenpipe does not send.
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


class Refusal(Exception):
    """A request we answer with an error status and {"error":{"code":...,"message":...}}."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self):
        body = {"error": {"code": self.code, "message": self.message}}
        return Response(json.dumps(body, separators=(",", ":")), self.status, media_type="application/json")


def _number(value, name, top):
    # bool is an int in Python; JSON true is not a number.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= top:
        raise Refusal(400, "invalid_request", f"field `{name}` must be a number from 0 to {top}")
    return float(value) + 0.0  # tokenpipe writes 1 as 1.0 and -0.0 as 0.0


def _text(value, name):
    if not isinstance(value, str):
        raise Refusal(400, "invalid_request", f"field `{name}` must be a string")
    if not value.strip():
        raise Refusal(400, "empty_prompt", f"field `{name}` must be a non-empty string")
    return value


def openai_body(raw):
    """The client's body as the bytes of tokenpipe's upstream request body, or a Refusal."""
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise Refusal(400, "invalid_json", f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise Refusal(400, "invalid_request", "request body must be a JSON object")
    unknown = [k for k in body if k not in ACCEPTED]
    if unknown:
        raise Refusal(400, "unknown_field", f"unknown field `{unknown[0]}`; accepted: {', '.join(ACCEPTED)}")
    prompt, messages = body.get("prompt"), body.get("messages")
    if prompt is None and messages is None:
        raise Refusal(400, "missing_prompt", "field `prompt` (or `messages`) is missing")
    if prompt is not None and messages is not None:
        raise Refusal(400, "invalid_request", "fields `prompt` and `messages` cannot both be given")
    if prompt is not None:
        turns = [{"role": "user", "content": _text(prompt, "prompt")}]
    else:
        if not isinstance(messages, list):
            raise Refusal(400, "invalid_request", "field `messages` must be an array")
        turns = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or set(m) - {"role", "content"}:
                raise Refusal(400, "invalid_request", f"messages[{i}] must be {{role, content}}")
            if m.get("role") not in ("user", "assistant", "system"):
                raise Refusal(400, "invalid_request", f"messages[{i}].role must be user, assistant or system")
            turns.append({"role": m["role"], "content": _text(m.get("content"), f"messages[{i}].content")})
        if all(t["role"] == "system" for t in turns):
            raise Refusal(400, "empty_prompt", "field `messages` must hold a user or assistant message")
    system, model = body.get("system"), body.get("model")
    if not isinstance(system, (str, type(None))) or not isinstance(model, (str, type(None))):
        raise Refusal(400, "invalid_request", "fields `system` and `model` must be strings")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise Refusal(400, "invalid_request", "field `stop` must be a non-empty string or up to 4 of them")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or not 1 <= max_tokens <= 1_000_000):
        raise Refusal(400, "invalid_request", "field `max_tokens` must be an integer from 1 to 1000000")

    # The same fields in the same order as tokenpipe's OpenAiBody; optional ones only when given.
    out = {
        "model": model if model is not None else DEFAULT_MODEL,
        "messages": ([{"role": "system", "content": system}] if system and system.strip() else []) + turns,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for name, value in (
        ("temperature", _number(body.get("temperature"), "temperature", 2)),
        ("top_p", _number(body.get("top_p"), "top_p", 1)),
        ("stop", stop or None),
        ("max_tokens", max_tokens),
    ):
        if value is not None:
            out[name] = value
    # serde_json's compact form: no spaces, non-ASCII text as UTF-8 rather than \u escapes.
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


def build_app(upstream):
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=30.0),
        timeout=httpx.Timeout(120.0, connect=10.0),
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )
    # httpx adds these to every request; tokenpipe sends neither (and an upstream that compressed its
    # events would break aiter_raw's byte-for-byte relay, since the encoding header is not passed on).
    del client.headers["accept-encoding"]
    del client.headers["connection"]
    chat_url = f"{upstream}/v1/chat/completions"

    @app.get("/healthz")
    async def healthz():
        return Response('{"status":"ok"}', media_type="application/json")

    @app.post("/api/v1/generate-stream")
    async def generate(request: Request):
        raw = bytearray()
        async for piece in request.stream():
            raw += piece
            if len(raw) > MAX_BODY_BYTES:  # checked as it comes, so a huge body is never held whole
                return Refusal(413, "body_too_large", "request body too large").response()
        try:
            body = openai_body(raw)
        except Refusal as refusal:
            return refusal.response()
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        try:
            upstream_response = await client.send(
                client.build_request("POST", chat_url, content=body, headers=headers), stream=True
            )
        except httpx.HTTPError as e:
            return Refusal(502, "upstream_failed", f"upstream request failed: {e!r}").response()
        if not upstream_response.is_success:
            await upstream_response.aclose()
            message = f"upstream answered {upstream_response.status_code}"
            return Refusal(502, "upstream_status", message).response()

        async def relay():
            # try/finally: the upstream connection goes back to the pool (or is closed) also when the
            # client leaves mid-stream and Starlette closes this generator.
            try:
                async for piece in upstream_response.aiter_raw():
                    yield piece
            finally:
                await upstream_response.aclose()

        return StreamingResponse(relay(), headers=STREAM_HEADERS)

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT, e.g. 127.0.0.1:8083")
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT of the upstream")
    parser.add_argument("--workers", type=int, default=1, help="must be 1: one process, one event loop")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not args.upstream.startswith("http://") or args.workers != 1:
        parser.error("--listen HOST:PORT, --upstream http://HOST:PORT, --workers 1")
    print(f"starting on http://{args.listen} (ready when GET /healthz answers)", flush=True)
    uvicorn.run(
        build_app(args.upstream.rstrip("/")),
        host=host,
        port=int(port),
        loop="uvloop",
        http="httptools",
        workers=1,
        backlog=65535,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    sys.exit(main())
