"""Ray Serve app: `POST /suggest` (three replies, or none) and `POST /compose` (next words).

    curl -s 127.0.0.1:8000/suggest -H 'content-type: application/json' \
         -d '{"message": "Can we meet tomorrow at 3pm?", "k": 3}'
    -> {"suggestions": [{"text": "Sounds good, see you then.", "score": 0.62}, ...],
        "triggered": true, "trigger_score": 0.91, "version": "v0001"}
    curl -s 127.0.0.1:8000/compose -H 'content-type: application/json' \
         -d '{"message": "Can we meet tomorrow at 3pm?", "prefix": "sounds go"}'
    -> {"completion": "od", "version": "v0001"}

One replica holds the ONNX message tower, the faiss index of the response set and the compose
model; `/suggest` requests are batched with `@serve.batch` (one ONNX call per batch). The
registry's champion is loaded with sha256 verification; `/reload` refuses a corrupt champion and
keeps serving the last good one. Bad input (empty, oversized, wrong types, k out of range,
binary) gets a 4xx with a one-line message. Each /suggest batch feeds the live monitor
(`shared.monitor`: message length, non-ASCII share, best reply cosine, trigger probability
against the training reference); `GET /status` shows its figures and alarms.
"""

# No `from __future__ import annotations`: Ray pickles the deployment class by value, and FastAPI
# must see the real request types on the handlers.
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from .predictor import SmartReplyPredictor

LOADER = SmartReplyPredictor.load  # what serving loads (the drills' promotion check uses it)
MAX_MESSAGE_CHARS = 5000  # an email body longer than this is pasted text; the tower reads 64 pieces
MAX_PREFIX_CHARS = 500
MAX_K = 5
MAX_CONTEXT = 10  # earlier mails accepted per request


def _printable(v: str, name: str) -> str:
    if any((ord(ch) < 32 and ch not in "\t\n\r") or ch == "\ufffd" for ch in v):
        raise ValueError(f"{name} contains control or binary characters")
    return v


class SuggestRequest(BaseModel):
    """An incoming email (its cleaned body) and how many suggestions to return."""

    # The example is the good request `casebook drill` and the OpenAPI page start from.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"message": "Can we meet tomorrow at 10?", "k": 3}]},
    )

    message: StrictStr = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    k: StrictInt = Field(default=3, ge=1, le=MAX_K)
    # Earlier mails of the thread, oldest first (optional; the tower reads the artifact's
    # `context_turns` newest of them, as in training).
    context: list[StrictStr] = Field(default_factory=list, max_length=MAX_CONTEXT)

    @field_validator("message")
    @classmethod
    def _check(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message is empty")
        return _printable(v, "message")

    @field_validator("context")
    @classmethod
    def _check_context(cls, v: list[str]) -> list[str]:
        for c in v:
            if len(c) > MAX_MESSAGE_CHARS:
                raise ValueError(f"a context mail is longer than {MAX_MESSAGE_CHARS} characters")
            _printable(c, "context")
        return v


class ComposeRequest(BaseModel):
    """The incoming email and what the user has typed of the reply so far."""

    # The example is the good request `casebook drill` and the OpenAPI page start from.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"message": "Can we meet tomorrow at 10?", "prefix": "Sure"}]
        },
    )

    message: StrictStr = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    prefix: StrictStr = Field(default="", max_length=MAX_PREFIX_CHARS)

    @field_validator("message", "prefix")
    @classmethod
    def _check(cls, v: str, info: Any) -> str:
        if info.field_name == "message" and not v.strip():
            raise ValueError("message is empty")
        return _printable(v, info.field_name)


def build_app(artifact: str | Path, num_cpus: float = 1.0, max_batch_size: int = 16) -> Any:
    """A bound Ray Serve application around SmartReplyPredictor (artifact folder or registry)."""
    from ray import serve

    from shared.serving import ReloadableModel, make_app, standard_routes

    app = make_app("email-smart-reply")

    @serve.deployment(
        # max_ongoing_requests >= max_batch_size, or batches are silently capped at 5.
        max_ongoing_requests=2 * max_batch_size,
        ray_actor_options={"num_cpus": num_cpus},
    )
    @serve.ingress(app)
    @standard_routes(app)  # /version, /reload (409 when it fails), /status (with the monitor)
    class SmartReplyServer:
        def __init__(self, root: str):
            # monitor=: a live Monitor against the artifact's monitor_reference.json (none for
            # older artifacts); the golden check runs on every load.
            self.model = ReloadableModel(root, LOADER, monitor="email-smart-reply")

        @app.post("/suggest")
        async def suggest(self, req: SuggestRequest) -> dict:
            out = await self.batched(req.model_dump())
            return {**out, "version": self.model.version}

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=0.002)
        async def batched(self, reqs: list[dict]) -> list[dict]:
            import asyncio

            answers = self.model.get().suggest_batch(reqs)
            # The monitor after the answers go out: every 50 observations its check (PSI and
            # KS of five series) took up to 25 ms in process under load (/tmp/h1/obs.py).
            # observe never raises; /status shows the verdict.
            asyncio.get_running_loop().call_soon(self.model.observe, reqs, answers)
            return answers

        # async: a keystroke is one cached numpy LSTM step (well under a millisecond), cheaper
        # than the hand-off to Serve's thread pool that a plain `def` gets.
        @app.post("/compose")
        async def compose(self, req: ComposeRequest) -> dict:
            out = self.model.get().compose_batch([req.model_dump()])[0]
            return {**out, "version": self.model.version}

    return SmartReplyServer.bind(str(artifact))


LOAD_IN_FLIGHT = 8  # the target: 8 requests in flight
LOAD_REQUESTS = 2000  # per route, after LOAD_WARMUP requests
LOAD_WARMUP = 100
LOAD_SECONDS = 40.0
TARGETS = {"suggest": ("p99_ms", 50.0), "compose": ("p95_ms", 100.0)}


def load_test(artifact: Path, report, seed: int = 0) -> dict:
    """HTTP latency of /suggest and /compose on a local Ray Serve app, 8 requests in flight.

    Deploys `build_app(artifact)` on 127.0.0.1 (direct ingress: the replica's own HTTP server,
    as `casebook serve` runs it), sends LOAD_WARMUP requests, then a bounded closed loop
    (`shared.loadgen.closed_loop`) per route over messages and typed prefixes from the
    artifact's response set. Returns the rows it adds to the report's `serving_latency` table.
    """
    import time

    import numpy as np
    from ray import serve

    from shared.loadgen import closed_loop
    from shared.serving import free_port, start_local_ray, stop_local_ray, wait_for_http

    rng = np.random.default_rng(seed)
    opening = (
        "Can we meet tomorrow at 3pm?",
        "Thanks so much for the report!",
        "Could you send me the slides by Friday?",
        "Is the demo still on?",
        "Sorry, I can't make it today.",
        "Have you had a chance to look at the contract?",
    )
    msgs = [str(rng.choice(opening)) for _ in range(256)]
    suggest = [{"message": m, "k": 3} for m in msgs]
    compose = [
        {"message": m, "prefix": p}
        for m, p in zip(
            msgs, ("sounds go", "thank", "sure, i'll ", "yes", "no w", "i "), strict=False
        )
    ]  # noqa: E501
    t0 = time.perf_counter()
    port, direct = free_port(), free_port()
    local = start_local_ray("127.0.0.1", port, direct_ingress_port=direct, num_cpus=2)
    rows = {}
    try:
        serve.run(build_app(str(artifact), num_cpus=1), name="email-smart-reply", route_prefix="/")
        p = (
            local.direct_port
            if local.direct_port and wait_for_http(f"http://127.0.0.1:{local.direct_port}/health")
            else port
        )  # noqa: E501
        for route, payloads in (("suggest", suggest), ("compose", compose)):
            url = f"http://127.0.0.1:{p}/{route}"
            closed_loop(url, payloads, LOAD_IN_FLIGHT, LOAD_WARMUP, 60.0)
            res = closed_loop(url, payloads, LOAD_IN_FLIGHT, LOAD_REQUESTS, LOAD_SECONDS)
            metric, target = TARGETS[route]
            rows[f"/{route}"] = {
                "p50_ms": res.p50_ms,
                "p95_ms": res.p95_ms,
                "p99_ms": res.p99_ms,
                "rps": res.rps,
                "requests": res.n,
                "errors": res.errors,
                "target": f"{metric} <= {target:g}",
                "met": bool(getattr(res, metric) <= target),
            }
            print(
                f"  load test /{route}: p50 {res.p50_ms:.1f} ms, p95 {res.p95_ms:.1f} ms, "
                f"p99 {res.p99_ms:.1f} ms, {res.rps:.0f}/s, {res.errors} errors",
                flush=True,
            )
    finally:
        stop_local_ray(local)
    report.table(
        "serving_latency",
        rows,
        note=f"HTTP on 127.0.0.1, {LOAD_IN_FLIGHT} requests in "
        f"flight (closed loop), {LOAD_WARMUP} warm-up requests, one replica (1 CPU), "
        "the served artifact; measured on the shared 2-core machine under other jobs' "
        "load, so these are upper bounds.",
    )
    report.timing("load_test_s", time.perf_counter() - t0)
    return rows
