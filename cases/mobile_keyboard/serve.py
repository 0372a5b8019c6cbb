"""Ray Serve app for the keyboard demo: `POST /suggest`, and the standard routes every case has
(`/health`, `/version`, `/reload`, `/status`; shared.serving).

    curl -s 127.0.0.1:8000/suggest -H 'content-type: application/json' \
         -d '{"context": "see you at the", "prefix": "sta"}'
    -> {"completions": [...], "next_words": [...], "corrections": [...], "context_tokens": 4}

On a phone this runs in-process; the server exists for the demo and for load tests. Bad input
(empty, oversized, binary, wrong types, unknown fields) gets a 4xx with a one-line message.
"""

# No `from __future__ import annotations` here: Ray pickles the deployment class by value, and
# FastAPI must see the real SuggestRequest type on the handler, not a string it cannot resolve.
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from .predictor import KeyboardPredictor

LOADER = KeyboardPredictor.load  # what serving loads (the drills' in-process promotion check)
PAGE = Path(__file__).with_name("page") / "index.html"  # GET /: try the API in a browser
MAX_CONTEXT_CHARS = 2000
MAX_PREFIX_CHARS = 48


def _printable(v: str | None, name: str) -> str | None:
    if v is not None and any((ord(ch) < 32 and ch not in "\t\n\r") or ch == "\ufffd" for ch in v):
        raise ValueError(f"{name} contains control or binary characters")
    return v


class SuggestRequest(BaseModel):
    """One keystroke: the text before the current word, and the letters typed of the word."""

    # The example is the good request `casebook drill` and the OpenAPI page start from.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"context": "see you at the", "prefix": "sta"}]},
    )

    context: StrictStr = Field(default="", max_length=MAX_CONTEXT_CHARS)
    prefix: StrictStr = Field(default="", max_length=MAX_PREFIX_CHARS)
    user_id: StrictStr | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")

    @field_validator("context", "prefix")
    @classmethod
    def _no_binary(cls, v: str, info: Any) -> str:
        return _printable(v, info.field_name)

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.context.strip() and not self.prefix.strip():
            raise ValueError("context and prefix are both empty; send at least one of them")
        if self.prefix.strip() and " " in self.prefix.strip():
            raise ValueError("prefix is the current word only; put earlier words in context")
        return self


def _observe(server: Any, reqs: list[dict], answers: list[dict]) -> None:
    server.model.observe(reqs, answers)  # the monitor's window; never raises


def build_app(artifact: str | Path, num_cpus: float = 1.0, max_batch_size: int = 16) -> Any:
    """A bound Ray Serve application around KeyboardPredictor (artifact folder or registry)."""
    from ray import serve

    from shared.batching import batch_when_free
    from shared.serving import ReloadableModel, make_app, standard_routes

    app = make_app("mobile-keyboard", page=PAGE)

    @serve.deployment(
        # max_ongoing_requests >= max_batch_size, or batches are silently capped at 5.
        max_ongoing_requests=2 * max_batch_size,
        ray_actor_options={"num_cpus": num_cpus},
    )
    @serve.ingress(app)
    @standard_routes(app)  # /version (the artifact's hash), /reload (409 when it fails), /status
    class KeyboardServer:
        def __init__(self, root: str):
            # The golden check on every load, the live monitor on /status (shared.golden).
            self.model = ReloadableModel(root, KeyboardPredictor.load, monitor="mobile-keyboard")

        @app.post("/suggest")
        async def suggest(self, req: SuggestRequest) -> dict:
            return await self.batched(req.model_dump())

        # The model runs in a worker thread while the event loop parses the next requests; a
        # batch closes when the model is free (shared.batching; issue 18). The monitor's
        # window is fed on the loop after the answers are out (it is not thread-safe).
        @batch_when_free(max_batch_size=max_batch_size, after=_observe)
        def batched(self, reqs: list[dict]) -> list[dict]:
            return self.model.get().suggest_batch(reqs)

        def status_info(self) -> dict:
            return {"shipped": self.model.get().config.get("shipped")}

    return KeyboardServer.bind(str(artifact))


# --- HTTP load test against the no-op floor (issue 18)

CASE = "mobile-keyboard"
LOAD_IN_FLIGHT = 8
LOAD_REQUESTS, LOAD_SECONDS = 600, 20.0  # one measured run stops at whichever comes first
LOAD_REPEATS = 3  # runs of the app and of the floor, alternated
LOAD_WARMUP = 100


def load_payloads(artifact: str | Path, n: int = 512, seed: int = 0) -> list[dict]:
    """Keystrokes to load the app with: the artifact's golden requests (sentences of held-out
    text cut at every word, with the letters typed so far), shuffled, `n` of them; an
    artifact folder or a registry (its champion)."""
    import numpy as np

    from shared.artifacts import MANIFEST, Registry
    from shared.errors import CasebookError
    from shared.golden import read_golden

    root = Path(artifact)
    folder = root if (root / MANIFEST).is_file() else Registry(root).resolve("champion")
    golden = read_golden(folder)
    if not golden or not golden.get("requests"):
        raise CasebookError(f"{folder}: no golden requests to load the app with")
    reqs = list(golden["requests"])
    order = np.random.default_rng(seed).permutation(len(reqs))
    return [reqs[i] for i in order][:n]


def load_test(artifact: str | Path, report: Any = None, seed: int = 0) -> dict:
    """POST /suggest through the Ray Serve app on 127.0.0.1 beside the no-op floor, alternated
    in one run (`shared.floor.load_test_with_floor`: direct ingress, LOAD_IN_FLIGHT in flight,
    LOAD_REPEATS runs of up to LOAD_REQUESTS requests each for the app and for the floor, the
    same request bodies, the floor answering a body of the app's answer size). Adds the table
    `serving_latency_http` and a section to `report` (a `shared.report.RunReport`) if given;
    returns `load_test_with_floor`'s result."""
    import time

    from shared.floor import describe_against_floor, load_test_with_floor

    t0 = time.perf_counter()
    result = load_test_with_floor(
        build_app(str(artifact), num_cpus=1.0),
        {"/suggest": load_payloads(artifact, seed=seed)},
        name=CASE,
        in_flight=LOAD_IN_FLIGHT,
        requests=LOAD_REQUESTS,
        seconds=LOAD_SECONDS,
        repeats=LOAD_REPEATS,
        warmup=LOAD_WARMUP,
    )
    line = describe_against_floor("/suggest", result)
    print(f"  load test {line}", flush=True)
    if report is not None:
        report.table(
            "serving_latency_http",
            result["rows"],
            note=f"POST /suggest on a local Ray (2 CPUs), one replica (1 CPU), {LOAD_IN_FLIGHT} "
            f"in flight (closed loop) after {LOAD_WARMUP} warm-up requests, the artifact's golden "
            f"keystrokes. Medians over {LOAD_REPEATS} runs of up to {LOAD_REQUESTS} requests, the "
            "app and the no-op floor (`shared.floor`: the same ingress, request bodies and "
            f"answer size, no model) alternated, {result['path']} ingress. `*_x_floor`: the app "
            "over the floor, median of the per-run ratios (range beside). `cpu_ms_per_request`: "
            "CPU time of the whole stack (load generator, Ray, replicas) per request.",
        )
        report.section("Serving load test (HTTP, Ray Serve, against the no-op floor)", line)
        report.extra["serving_latency_http"] = result
        report.timing("load_test_s", time.perf_counter() - t0)
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m cases.mobile_keyboard.serve ARTIFACT --out DIR`: the load test alone, on an
    artifact folder or a registry (e.g. runs/mobile-keyboard/registry), written as a report."""
    import argparse

    from shared.report import RunReport

    parser = argparse.ArgumentParser(prog="python -m cases.mobile_keyboard.serve")
    parser.add_argument("artifact", type=Path, help="artifact folder or registry")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = RunReport(CASE, "load test", "-", args.seed, args.out)
    load_test(args.artifact, report, args.seed)
    print(f"wrote {report.write()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
