"""Ray Serve app: `POST /suggest` (three replies, or none) and `POST /compose` (next words).

    curl -s 127.0.0.1:8000/suggest -H 'content-type: application/json' \
         -d '{"message": "Can we meet tomorrow at 3pm?", "k": 3}'
    -> {"suggestions": [{"text": "Sounds good, see you then.", "score": 0.62}, ...],
        "triggered": true, "trigger_score": 0.91, "version": "v0001"}
    curl -s 127.0.0.1:8000/compose -H 'content-type: application/json' \
         -d '{"message": "Can we meet tomorrow at 3pm?", "prefix": "sounds go"}'
    -> {"completion": "od", "version": "v0001"}

One replica holds the ONNX message tower, the faiss index of the response set and the compose
model; `/suggest` requests are batched with `shared.batching.batch_when_free` (one ONNX call per
batch, in a worker thread; the next batch forms while it runs). The
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
PAGE = Path(__file__).with_name("page") / "index.html"  # GET /: try the API in a browser
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


def _observe(server: Any, reqs: list[dict], answers: list[dict]) -> None:
    server.model.observe(reqs, answers)


def build_app(artifact: str | Path, num_cpus: float = 1.0, max_batch_size: int = 16) -> Any:
    """A bound Ray Serve application around SmartReplyPredictor (artifact folder or registry)."""
    from ray import serve

    from shared.batching import batch_when_free
    from shared.serving import ReloadableModel, make_app, standard_routes

    app = make_app("email-smart-reply", page=PAGE)

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

        # The monitor after the answers go out, on the event loop (it is not thread-safe):
        # every 50 observations its check (PSI and KS of five series) took up to 25 ms in
        # process under load. observe never raises; /status shows the verdict.
        @batch_when_free(max_batch_size=max_batch_size, after=_observe)
        def batched(self, reqs: list[dict]) -> list[dict]:
            return self.model.get().suggest_batch(reqs)

        # async: a keystroke is one cached numpy LSTM step (well under a millisecond), cheaper
        # than the hand-off to Serve's thread pool that a plain `def` gets.
        @app.post("/compose")
        async def compose(self, req: ComposeRequest) -> dict:
            out = self.model.get().compose_batch([req.model_dump()])[0]
            return {**out, "version": self.model.version}

    return SmartReplyServer.bind(str(artifact))


LOAD_IN_FLIGHT = 8  # the target: 8 requests in flight
LOAD_REQUESTS = 600  # per run and route, after LOAD_WARMUP requests
LOAD_WARMUP = 100
LOAD_SECONDS = 20.0
LOAD_REPEATS = 3  # runs of the app and of the no-op floor per route, alternated (issue 18)
TARGETS = {"suggest": ("p99_ms", 50.0), "compose": ("p95_ms", 100.0)}


def load_test(artifact: Path, report, seed: int = 0) -> dict:
    """HTTP latency of /suggest and /compose on a local Ray Serve app, 8 requests in flight,
    beside the no-op floor alternated in one run (issue 18).

    `shared.floor.load_test_with_floor` deploys `build_app(artifact)` and the floor on 127.0.0.1
    (direct ingress: the replica's own HTTP server, as `casebook serve` runs it); per route,
    over messages and typed prefixes: LOAD_WARMUP requests, then LOAD_REPEATS closed-loop runs
    of up to LOAD_REQUESTS requests each for the app and for the floor (the same request
    bodies; the floor answers a body of the app's answer size), alternated. Returns the rows it
    adds to the report's `serving_latency` table (medians over the runs, multiples of the
    floor, and each route's target).
    """
    import time

    import numpy as np

    from shared.floor import describe_against_floor, load_test_with_floor

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
    result = load_test_with_floor(
        build_app(str(artifact), num_cpus=1),
        {"/suggest": suggest, "/compose": compose},
        name="email-smart-reply",
        in_flight=LOAD_IN_FLIGHT,
        requests=LOAD_REQUESTS,
        seconds=LOAD_SECONDS,
        repeats=LOAD_REPEATS,
        warmup=LOAD_WARMUP,
    )
    rows = result["rows"]
    lines = []
    for route, (metric, target) in TARGETS.items():
        row = rows[f"/{route}"]
        row.update(target=f"{metric} <= {target:g}", met=bool(row[metric] <= target))
        lines.append(describe_against_floor(f"/{route}", result))
        print(f"  load test {lines[-1]}", flush=True)
    report.table(
        "serving_latency",
        rows,
        note=f"HTTP on 127.0.0.1, {LOAD_IN_FLIGHT} requests in flight (closed loop), "
        f"{LOAD_WARMUP} warm-up requests, one replica (1 CPU), the served artifact; medians "
        f"over {LOAD_REPEATS} runs of up to {LOAD_REQUESTS} requests per route, the app and the "
        "no-op floor (`shared.floor`: the same ingress, request bodies and answer size, no "
        f"model) alternated, {result['path']} ingress. `*_x_floor`: the app over the floor, "
        "median of the per-run ratios (range beside); `cpu_ms_per_request`: the whole stack's "
        "CPU per request. On the shared 2-core machine the absolute figures are upper bounds "
        "that swing with other jobs' load; the multiples much less.",
    )
    report.section(
        "Serving load test (HTTP, Ray Serve, against the no-op floor)", "\n\n".join(lines)
    )
    report.extra["serving_latency"] = result
    report.timing("load_test_s", time.perf_counter() - t0)
    return rows
