"""Serving the cases' models: PyTorch eager vs onnxruntime fp32 vs int8, then Ray Serve end to end.

    casebook bench serving             # both parts, about 8 minutes on 2 shared cores
    casebook bench serving --quick     # tiny models and a short load (a few minutes with Ray start)
    casebook bench serving --no-ray    # only the in-process runtime comparison

Part 1, in process: for each served model that exists in this checkout (the mobile keyboard's
LSTM step and the video ranker; a stand-in MLP, labelled as such, if neither imports) the latency
and throughput of PyTorch eager, onnxruntime fp32 and onnxruntime dynamic int8 at batch 1..64,
with the int8 error against fp32.

Part 2, over the network: three applications on 127.0.0.1, each its own ingress built like a
case's (`shared.serving.make_app`): the no-op floor (`shared.floor`: same ingress, same request
bodies, an answer of the keyboard's size, no model), and the keyboard step as a stateful
deployment (the replica keeps each user's LSTM state, so a keystroke costs one step; PyTorch
eager as the keyboard case serves it, or `--serve-runtime ort`) without and with batching
(`shared.batching.batch_when_free`, or Serve's own `@serve.batch` with `batcher="serve"`). Each
is loaded by a closed loop with N requests in flight (1, 8, 32) over HTTP to the replica's own
server (Serve's direct ingress, what `casebook serve` gives clients), over HTTP through Serve's
proxy, and through a deployment handle; at each point the three variants run alternately,
`--repeats` times. Rows: medians over the repeats of p50/p99, requests/s, mean batch and CPU per
request (the whole process tree), and each as a multiple of the floor's run of the same repeat;
the summary gives batched over unbatched requests/s with its interval
(`shared.bench.paired_ratios`). Per-repeat rows go to `serving_repeats.json`. Compare within one
run: on a shared machine absolute figures move 2-3x between runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from shared.lifecycle import run_folder, torch_threads

NAME = "serving"
SUMMARY = "PyTorch eager vs onnxruntime fp32/int8, then Ray Serve batched vs unbatched under load"


@dataclass
class ServingBenchConfig:
    """Sizes and load of one run."""

    vocab: int = 10_000  # keyboard model: Gboard-sized
    embed: int = 96
    hidden: int = 670
    ranker_items: int = 100_000  # video ranker catalogue
    batches: tuple[int, ...] = (1, 8, 32, 64)
    repeats: int = 30
    min_time_s: float = 0.3
    in_flight: tuple[int, ...] = (1, 8, 32)
    max_requests: int = 400  # per load run
    max_seconds: float = 4.0  # per load run
    serve_repeats: int = 3  # each point's variants run this often, alternated
    max_batch_size: int = 32  # @serve.batch
    batch_wait_s: float = 0.002  # @serve.batch's wait (batcher "serve")
    batcher: str = "free"  # "free": shared.batching.batch_when_free; "serve": @serve.batch
    n_users: int = 1_000  # distinct keyboard sessions in the load


PRESETS = {
    "full": ServingBenchConfig(),
    "quick": ServingBenchConfig(
        vocab=500,
        embed=16,
        hidden=48,
        ranker_items=1_000,
        batches=(1, 8),
        repeats=3,
        min_time_s=0.0,
        in_flight=(1, 8),
        max_requests=30,
        max_seconds=3.0,
        serve_repeats=2,
        max_batch_size=8,
        n_users=20,
    ),
}


# ----------------------------------------------------------------------------- served models


class ServingBenchMLP(nn.Module):
    """Stand-in model used only when no case model imports: (B, 64) -> (B, 1)."""

    def __init__(self, d_in: int = 64, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 1)


@dataclass
class _Served:
    """A model as served: the module, how to make a batch, and its ONNX names."""

    name: str
    module: nn.Module
    make_inputs: Callable[[int], tuple[torch.Tensor, ...]]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    note: str


def _keyboard(cfg: ServingBenchConfig) -> _Served | None:
    try:
        from cases.mobile_keyboard.model import KeyboardLSTM
    except Exception:
        return None
    torch.manual_seed(0)
    model = KeyboardLSTM(cfg.vocab, cfg.embed, cfg.hidden).eval()
    step = _KeyboardStepLogits(model).eval()
    H = cfg.hidden

    def make(b: int):
        g = torch.Generator().manual_seed(b)
        return (
            torch.randint(0, cfg.vocab, (b,), generator=g),
            0.1 * torch.randn(1, b, H, generator=g),
            0.1 * torch.randn(1, b, H, generator=g),
        )

    axes = {n: {0: "batch"} for n in ("token", "logits")}
    axes.update({n: {1: "batch"} for n in ("h", "c", "h_out", "c_out")})
    return _Served(
        "keyboard_lstm_step",
        step,
        make,
        ["token", "h", "c"],
        ["logits", "h_out", "c_out"],
        axes,
        f"cases.mobile_keyboard KeyboardLSTM({cfg.vocab}, {cfg.embed}, {cfg.hidden}), "
        "one step, untrained weights (int8 error on their near-zero "
        "logits overstates it; `bench rnn` measures it on a trained model)",
    )


class _KeyboardStepLogits(nn.Module):
    """(token (B,), h, c) -> (logits (B, V), h, c) through the model's own step()."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token, h, c):
        logits, (h1, c1) = self.model.step(token, (h, c))
        return logits, h1, c1


def _ranker(cfg: ServingBenchConfig) -> _Served | None:
    try:
        from cases.video_recommendation.model import N_DENSE, VideoRecRanker, VideoRecRankerServing
    except Exception:
        return None
    torch.manual_seed(0)
    n_topics = 50
    ranker = VideoRecRanker(cfg.ranker_items, n_topics, slate_size=10).eval()
    serving = VideoRecRankerServing(ranker).eval()

    def make(b: int):
        g = torch.Generator().manual_seed(b)
        return (
            torch.randint(1, cfg.ranker_items + 1, (b,), generator=g),
            torch.randint(1, n_topics + 1, (b,), generator=g),
            torch.randn(b, N_DENSE, generator=g),
        )

    names = ["item", "topic", "dense"]
    axes = {n: {0: "batch"} for n in [*names, "scores"]}
    return _Served(
        "video_ranker",
        serving,
        make,
        names,
        ["scores"],
        axes,
        f"cases.video_recommendation VideoRecRankerServing, {cfg.ranker_items} items; "
        "batch = candidates scored",
    )


def _stand_in() -> _Served:
    torch.manual_seed(0)
    mlp = ServingBenchMLP().eval()

    def make(b: int):
        return (torch.randn(b, 64, generator=torch.Generator().manual_seed(b)),)

    return _Served(
        "stand_in_mlp",
        mlp,
        make,
        ["x"],
        ["y"],
        {"x": {0: "batch"}, "y": {0: "batch"}},
        "STAND-IN MLP (no case model importable)",
    )


# ----------------------------------------------------------------------------- part 1


def _runtime_rows(served: _Served, cfg: ServingBenchConfig, workdir: Path, threads: int):
    from shared.bench import time_fn
    from shared.onnx_utils import export_onnx, make_session, quantize_dynamic_onnx

    fp32 = export_onnx(
        served.module,
        served.make_inputs(4),
        workdir / f"{served.name}.onnx",
        served.input_names,
        served.output_names,
        served.dynamic_axes,
    )
    int8 = quantize_dynamic_onnx(fp32, workdir / f"{served.name}_int8.onnx")
    sessions = {
        "ort_fp32": make_session(fp32, threads=threads),
        "ort_int8": make_session(int8, threads=threads),
    }
    sizes = {
        "eager_fp32": sum(
            p.numel() * p.element_size() for p in served.module.state_dict().values()
        ),
        "ort_fp32": fp32.stat().st_size,
        "ort_int8": int8.stat().st_size,
    }
    rows = []
    for b in cfg.batches:
        inputs = served.make_inputs(b)
        feeds = {n: t.numpy() for n, t in zip(served.input_names, inputs, strict=True)}
        with torch.inference_mode():
            ref = served.module(*inputs)
            ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
            t_eager = time_fn(
                lambda inputs=inputs: served.module(*inputs),
                warmup=3,
                repeats=cfg.repeats,
                min_time_s=cfg.min_time_s,
                items_per_call=b,
            )
        timings = {"eager_fp32": (t_eager, 0.0, 0.0)}
        for label, sess in sessions.items():
            out = sess.run(None, feeds)[0]
            err = float(np.abs(out - ref).max())
            rel = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12))
            t = time_fn(
                lambda sess=sess, feeds=feeds: sess.run(None, feeds),
                warmup=3,
                repeats=cfg.repeats,
                min_time_s=cfg.min_time_s,
                items_per_call=b,
            )
            timings[label] = (t, err, rel)
        for label, (t, err, rel) in timings.items():
            rows.append(
                {
                    "part": "runtime",
                    "model": served.name,
                    "runtime": label,
                    "batch": b,
                    "threads": threads,
                    "p50_ms": t.p50_ms,
                    "p99_ms": t.p99_ms,
                    "items_per_s": t.items_per_s,
                    "x_eager": t_eager.median_s / t.median_s,
                    "model_bytes": sizes[label],
                    "max_abs_err": err,
                    "rel_err": rel,
                }
            )
    return rows


# ----------------------------------------------------------------------------- part 2


class _KeyboardServer:
    """Replica logic (plain class, wrapped into Serve deployments below).

    Keeps each user's (h, c) in memory: a request is {"user_id": str, "token": int} and costs one
    LSTM step, batched with whatever else is waiting when `@serve.batch` is on.
    Answers {"top3": [ids]}.
    """

    def __init__(self, model_path: str, hidden: int, runtime: str = "torch", sizes=None):
        self.runtime = runtime
        if runtime == "ort":
            from shared.onnx_utils import make_session

            self.sess = make_session(model_path, threads=1)  # one core per replica
        else:
            from cases.mobile_keyboard.model import KeyboardLSTM

            torch.set_num_threads(1)  # one core per replica; the proxy and clients share the rest
            self.model = KeyboardLSTM(*sizes).eval()
            self.model.load_state_dict(torch.load(model_path, weights_only=True))
        self.hidden = hidden
        self.vocab = sizes[0] if sizes else None
        self.states: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.n_batches = 0
        self.n_items = 0

    def predict(self, bodies: list[dict]) -> list[dict]:
        b = len(bodies)
        zero = np.zeros(self.hidden, dtype=np.float32)
        h = np.empty((1, b, self.hidden), dtype=np.float32)
        c = np.empty((1, b, self.hidden), dtype=np.float32)
        for i, body in enumerate(bodies):
            h[0, i], c[0, i] = self.states.get(str(body["user_id"]), (zero, zero))
        tokens = np.asarray([int(body["token"]) for body in bodies], dtype=np.int64)
        if self.runtime == "ort":
            logits, h1, c1 = self.sess.run(None, {"token": tokens, "h": h, "c": c})  # (B, V)
        else:
            with torch.inference_mode():
                lg, (th, tc) = self.model.step(
                    torch.from_numpy(tokens), (torch.from_numpy(h), torch.from_numpy(c))
                )
            logits, h1, c1 = lg.numpy(), th.numpy(), tc.numpy()  # (B, V), (1, B, H) x 2
        for i, body in enumerate(bodies):
            self.states[str(body["user_id"])] = (h1[0, i].copy(), c1[0, i].copy())
        top = np.argpartition(-logits, 3, axis=1)[:, :3]  # (B, 3) unordered top-3
        self.n_batches += 1
        self.n_items += b
        return [{"top3": [int(x) for x in row]} for row in top]

    def stats(self) -> dict[str, float]:
        out = {
            "batches": self.n_batches,
            "items": self.n_items,
            "mean_batch": self.n_items / max(self.n_batches, 1),
        }
        self.n_batches = self.n_items = 0
        return out


def _keystroke(body: dict, vocab: int) -> dict:
    """A request body as the replica uses it, or a 422 (bad input never reaches the model)."""
    from fastapi import HTTPException

    try:
        token = body["token"]
        ok = isinstance(token, int) and not isinstance(token, bool) and 0 <= token < vocab
        if not ok or not isinstance(body["user_id"], (str, int)):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        msg = f'invalid request: want {{"user_id": str, "token": int in [0, {vocab})}}'
        raise HTTPException(status_code=422, detail=msg) from None
    return {"user_id": str(body["user_id"]), "token": token}


# The three applications of part 2, each its own ingress (shared.serving.make_app, as the cases
# build theirs) under its own route prefix: the no-op floor (shared.floor), then the keyboard
# step without and with @serve.batch.
VARIANTS = ("floor", "unbatched", "batched")


def _build_deployments(cfg: ServingBenchConfig):
    import sys

    import ray.cloudpickle
    from ray import serve

    from shared.serving import add_health_route, make_app

    # This file is loaded by path (benchmarks/ is not a package), so Ray's workers cannot import
    # it: ship its classes by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    opts = {"num_cpus": 0}  # the 2-core machine: do not let Ray's CPU accounting block placement
    # max_ongoing_requests >= max_batch_size, or batches are silently capped at the default 5;
    # 2x so that one batch fills while another runs.
    ongoing = 2 * cfg.max_batch_size
    apps = {v: make_app(f"bench-kb-{v}", health=False) for v in ("unbatched", "batched")}
    for v, app in apps.items():
        add_health_route(app, lambda v=v: {"app": v})
    un_app, b_app = apps["unbatched"], apps["batched"]

    @serve.deployment(max_ongoing_requests=ongoing, ray_actor_options=opts)
    @serve.ingress(un_app)
    class KeyboardUnbatched(_KeyboardServer):
        @un_app.post("/predict")
        async def predict_http(self, body: dict) -> dict:
            return self.predict([_keystroke(body, self.vocab)])[0]

        async def call(self, body: dict) -> dict:  # the handle path
            return self.predict([body])[0]

    if cfg.batcher == "serve":  # Serve's own: a batch closes batch_wait_s after its first request

        @serve.deployment(max_ongoing_requests=ongoing, ray_actor_options=opts)
        @serve.ingress(b_app)
        class KeyboardBatched(_KeyboardServer):
            @serve.batch(max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_s)
            async def _batched(self, bodies: list[dict]) -> list[dict]:
                return self.predict(bodies)

            @b_app.post("/predict")
            async def predict_http(self, body: dict) -> dict:
                return await self._batched(_keystroke(body, self.vocab))

            async def call(self, body: dict) -> dict:  # the handle path
                return await self._batched(body)

    else:  # shared.batching: a batch closes when the model is free, the model in a thread
        from shared.batching import batch_when_free

        @serve.deployment(max_ongoing_requests=ongoing, ray_actor_options=opts)
        @serve.ingress(b_app)
        class KeyboardBatched(_KeyboardServer):
            @batch_when_free(max_batch_size=cfg.max_batch_size)
            def _batched(self, bodies: list[dict]) -> list[dict]:
                return self.predict(bodies)

            @b_app.post("/predict")
            async def predict_http(self, body: dict) -> dict:
                return await self._batched(_keystroke(body, self.vocab))

            async def call(self, body: dict) -> dict:  # the handle path
                return await self._batched(body)

    return KeyboardUnbatched, KeyboardBatched


def _serve_rows(
    model_path: Path, cfg: ServingBenchConfig, port: int | None, runtime: str, repeats: int
) -> tuple[list[dict], list[dict], dict]:
    """Deploy the floor and both variants on 127.0.0.1 and load them, alternating.

    Returns (rows: the in-process reference and one row per path, variant and in-flight count
    with the medians over repeats; the per-repeat rows; facts for the summary).
    """
    from ray import serve

    from shared.floor import build_floor_app, direct_port_of, start_local_ray_direct
    from shared.serving import stop_local_ray

    # Direct ingress (each app's replica parses HTTP itself, what `casebook serve` gives
    # clients) when Ray starts here; into a running Ray (the tests' session) only the proxy.
    local, direct_ports = start_local_ray_direct(
        "127.0.0.1", port, n_apps=len(VARIANTS), num_cpus=os.cpu_count() or 2
    )
    rng = np.random.default_rng(0)
    payloads = [
        {"user_id": f"u{int(u)}", "token": int(t)}
        for u, t in zip(
            rng.integers(0, cfg.n_users, 4096), rng.integers(0, cfg.vocab, 4096), strict=True
        )
    ]
    sizes = (cfg.vocab, cfg.embed, cfg.hidden)
    rows = _in_process_rows(model_path, cfg, runtime, sizes, payloads)
    unbatched, batched = _build_deployments(cfg)
    answer = {"top3": [cfg.vocab - 1] * 3}  # the keyboard's answer size
    apps = {
        "floor": build_floor_app("/predict", answer, max_ongoing_requests=2 * cfg.max_batch_size),
        "unbatched": unbatched.bind(str(model_path), cfg.hidden, runtime, sizes),
        "batched": batched.bind(str(model_path), cfg.hidden, runtime, sizes),
    }
    targets: dict[str, dict] = {}
    try:
        for v, app in apps.items():  # one at a time: each new ingress takes the next free port
            handle = serve.run(app, name=f"bench-kb-{v}", route_prefix=f"/{v}")
            urls = {"proxy": f"http://127.0.0.1:{local.port}/{v}/predict"}
            dp = direct_port_of("127.0.0.1", direct_ports, f"/{v}") if direct_ports else None
            if dp is not None:
                urls = {"direct": f"http://127.0.0.1:{dp}/{v}/predict", **urls}
                direct_ports = [p for p in direct_ports if p != dp]
            targets[v] = {"handle": handle, "urls": urls}
        paths = [p for p in ("direct", "proxy") if all(p in t["urls"] for t in targets.values())]
        repeat_rows = _load_rows(targets, [*paths, "handle"], payloads, cfg, repeats)
    finally:
        for v in apps:
            try:
                serve.delete(f"bench-kb-{v}")
            except Exception:
                pass
        if local.started_ray:
            stop_local_ray(local)
    rows += _median_rows(repeat_rows)
    base = rows[0]["p50_ms"]
    for r in rows:
        r["overhead_p50_ms"] = r["p50_ms"] - base if r["path"] != "in-process" else None
    return rows, repeat_rows, {"http_path": paths[0], "repeats": repeats}


def _in_process_rows(model_path, cfg, runtime: str, sizes, payloads) -> list[dict]:
    """The reference: the same predict() with no Serve in between, one request and one batch."""
    from shared.bench import time_fn

    with torch_threads(torch.get_num_threads()):  # the server sets 1 thread; restored after
        server = _KeyboardServer(str(model_path), cfg.hidden, runtime, sizes)
        # timed on one thread, like the replica
        t1 = time_fn(lambda: server.predict([payloads[0]]), warmup=5, repeats=200)
        b = cfg.max_batch_size
        tb = time_fn(lambda: server.predict(payloads[:b]), warmup=3, repeats=50, items_per_call=b)
    return [
        {
            "part": "serve",
            "path": "in-process",
            "variant": "unbatched",
            "in_flight": 1,
            "p50_ms": t1.p50_ms,
            "p99_ms": t1.p99_ms,
            "rps": 1e3 / t1.p50_ms,
            "mean_batch": 1.0,
            "errors": 0,
            "n": t1.n,
        },
        {
            "part": "serve",
            "path": "in-process",
            "variant": f"batch {b}",
            "in_flight": b,
            "p50_ms": tb.p50_ms,
            "p99_ms": tb.p99_ms,
            "rps": tb.items_per_s,
            "mean_batch": float(b),
            "errors": 0,
            "n": tb.n,
        },
    ]


def _handle_closed_loop(handle, payloads, concurrency, max_requests, max_seconds) -> dict:
    """Closed loop through a deployment handle's `call` method (shared.loadgen's loop, a handle
    as transport), with the process tree's CPU per request like `shared.floor.measure_http`."""
    from shared.floor import tree_cpu_s
    from shared.loadgen import run_closed_loop

    def send(i: int) -> tuple[str, str | None]:
        try:
            handle.call.remote(payloads[i % len(payloads)]).result(timeout_s=30)
        except Exception as e:  # any failure of the call counts as an error row
            return type(e).__name__, str(e)[:200]
        return "200", None

    cpu0 = tree_cpu_s()
    res = run_closed_loop(send, concurrency, max_requests, max_seconds)
    return {**res.to_dict(), "cpu_ms_per_request": 1e3 * (tree_cpu_s() - cpu0) / max(res.n, 1)}


def _load_rows(targets: dict, paths: list[str], payloads, cfg, repeats: int) -> list[dict]:
    """Every variant under a closed loop at each in-flight count and path, the variants
    alternated (`shared.floor.alternate`) `repeats` times; one row per run."""
    from shared.floor import alternate, measure_http

    for v, t in targets.items():  # warm-up: routes, the replica's first model calls
        url = next(iter(t["urls"].values()))
        measure_http(url, payloads[:8], 2, 16, 10)
        if v != "floor":
            t["handle"].call.remote(payloads[0]).result(timeout_s=30)

    def one(v: str, path: str, n: int) -> dict:
        t = targets[v]
        if v != "floor":
            t["handle"].stats.remote().result(timeout_s=30)  # reset the replica's counters
        if path == "handle":
            if v == "floor":
                floor = t["handle"].options(method_name="noop")
                res = _handle_closed_loop(
                    _Call(floor), payloads, n, cfg.max_requests, cfg.max_seconds
                )
            else:
                res = _handle_closed_loop(
                    t["handle"], payloads, n, cfg.max_requests, cfg.max_seconds
                )
        else:
            res = measure_http(t["urls"][path], payloads, n, cfg.max_requests, cfg.max_seconds)
        mean_batch = 1.0
        if v != "floor":
            mean_batch = t["handle"].stats.remote().result(timeout_s=30)["mean_batch"]
        keys = ("n", "errors", "p50_ms", "p99_ms", "rps", "cpu_ms_per_request")
        return {
            "part": "serve",
            "path": path,
            "variant": v,
            "in_flight": n,
            "mean_batch": mean_batch,
            **{k: res[k] for k in keys},
        }

    rows = []
    for n in cfg.in_flight:
        for path in paths:
            variants = {v: (lambda v=v, p=path, n=n: one(v, p, n)) for v in targets}
            for results in alternate(variants, repeats).values():
                for r, row in enumerate(results):
                    rows.append({**row, "repeat": r})
    return rows


class _Call:
    """A handle whose `call` is another handle method (the floor's `noop`)."""

    def __init__(self, handle):
        self.call = handle


def _median_rows(repeat_rows: list[dict]) -> list[dict]:
    """One row per (path, variant, in flight): the median of each figure over the repeats, and
    the paired multiples of the floor run of the same repeat (p50_x_floor, p99_x_floor,
    cpu_x_floor: medians of the per-repeat ratios)."""
    from shared.bench import paired_ratios

    out = []
    keys = dict.fromkeys((r["path"], r["variant"], r["in_flight"]) for r in repeat_rows)
    for path, v, n in keys:
        mine = [r for r in repeat_rows if (r["path"], r["variant"], r["in_flight"]) == (path, v, n)]
        floor = [
            r
            for r in repeat_rows
            if (r["path"], r["variant"], r["in_flight"]) == (path, "floor", n)
        ]
        row = {"part": "serve", "path": path, "variant": v, "in_flight": n}
        for k in ("p50_ms", "p99_ms", "rps", "mean_batch", "cpu_ms_per_request"):
            row[k] = float(np.median([r[k] for r in mine]))
        row["errors"] = int(sum(r["errors"] for r in mine))
        row["n"] = int(sum(r["n"] for r in mine))
        row["repeats"] = len(mine)
        if floor and v != "floor":
            for k, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("cpu_ms_per_request", "cpu")):
                row[f"{name}_x_floor"] = paired_ratios([r[k] for r in mine], [r[k] for r in floor])[
                    "median"
                ]
        out.append(row)
    return out


# ----------------------------------------------------------------------------- entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Serve part")
    parser.add_argument(
        "--serve-runtime",
        choices=("torch", "ort"),
        default="torch",
        help="what the Serve replica runs: PyTorch eager (as the keyboard case serves) or ORT fp32",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="Serve part: how often each point's variants run, alternated (default 3, quick 2)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="HTTP port for Serve on 127.0.0.1 (default: a free port; pass the "
        "port of an already started Serve instance to reuse it)",
    )


def _find(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def run(args: argparse.Namespace) -> Path:
    """Part 1 and (unless --no-ray) part 2; writes serving.json / .md / .png; returns the JSON."""
    from shared.bench import machine_fingerprint, write_results

    quick = bool(getattr(args, "quick", False))
    cfg = PRESETS["quick" if quick else "full"]
    out = run_folder(f"bench/{NAME}", getattr(args, "out", None))
    t_start = time.perf_counter()
    fp = machine_fingerprint(measure=not quick)
    # One thread for every runtime: as served (one core per replica), and the same for all rows.
    threads = 1
    with torch_threads(threads):
        models = [m for m in (_keyboard(cfg), _ranker(cfg)) if m is not None] or [_stand_in()]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        with torch_threads(threads):
            for served in models:
                rows += _runtime_rows(served, cfg, Path(tmp), threads)
        serve_rows, serve_facts = _serve_part(args, models, cfg, Path(tmp), out)
        rows += serve_rows
    summary = _summarize(rows, models, cfg, serve_facts)
    summary["wall_s"] = time.perf_counter() - t_start

    columns = [
        "part",
        "model",
        "runtime",
        "path",
        "variant",
        "batch",
        "in_flight",
        "p50_ms",
        "p99_ms",
        "items_per_s",
        "rps",
        "x_eager",
        "mean_batch",
        "cpu_ms_per_request",
        "p50_x_floor",
        "p99_x_floor",
        "cpu_x_floor",
        "repeats",
        "overhead_p50_ms",
        "model_bytes",
        "rel_err",
        "errors",
    ]
    path = write_results(out, "serving", rows, summary, columns=columns, fingerprint=fp)
    _plot(rows, out / "serving.png")
    return Path(path)


def _serve_part(
    args, models: list, cfg: ServingBenchConfig, tmp: Path, out: Path
) -> tuple[list[dict], dict]:
    """Part 2 (Ray Serve) on the keyboard step, unless --no-ray; returns (rows, facts).

    The per-repeat rows go to `serving_repeats.json` beside the results."""
    from shared.io import atomic_write_json, to_jsonable

    if getattr(args, "no_ray", False):
        return [], {"serve": "skipped (--no-ray)"}
    kb = next((m for m in models if m.name == "keyboard_lstm_step"), None)
    if kb is None:
        return [], {"serve": "skipped: the keyboard model is not installed"}
    runtime = getattr(args, "serve_runtime", "torch") or "torch"
    if runtime == "ort":
        model_path = tmp / f"{kb.name}.onnx"  # written by the runtime part
    else:
        model_path = tmp / f"{kb.name}.pt"
        torch.save(kb.module.model.state_dict(), model_path)
    port = int(getattr(args, "port", 0) or 0) or None
    repeats = int(getattr(args, "repeats", 0) or 0) or cfg.serve_repeats
    rows, repeat_rows, facts = _serve_rows(model_path, cfg, port, runtime, repeats)
    atomic_write_json(out / "serving_repeats.json", to_jsonable(repeat_rows))
    label = "onnxruntime fp32" if runtime == "ort" else "PyTorch eager, as the case serves it"
    facts["serve"] = f"keyboard step ({label}, 1 thread) in one replica"
    return rows, {**facts, "repeat_rows": repeat_rows}


def _summarize(rows: list[dict], models: list, cfg: ServingBenchConfig, facts: dict) -> dict:
    """The headline ratios: onnxruntime against eager; batched against unbatched serving and
    each variant against the floor, as the median over repeats of the paired per-repeat ratio
    with its interval (`shared.bench.paired_ratios`: bootstrap of the median, min-max below 3
    repeats)."""
    from shared.bench import paired_ratios

    facts = dict(facts)
    repeat_rows = facts.pop("repeat_rows", [])
    summary: dict[str, Any] = {
        "models": {m.name: m.note for m in models},
        **facts,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
    }
    for m in models:
        for b in (1, 32):
            r = _find(rows, part="runtime", model=m.name, runtime="ort_int8", batch=b)
            if r:
                summary[f"{m.name}_ort_int8_x_eager_b{b}"] = r["x_eager"]
            r = _find(rows, part="runtime", model=m.name, runtime="ort_fp32", batch=b)
            if r:
                summary[f"{m.name}_ort_fp32_x_eager_b{b}"] = r["x_eager"]

    def runs(path, variant, n, key):
        mine = [
            r
            for r in repeat_rows
            if (r["path"], r["variant"], r["in_flight"]) == (path, variant, n)
        ]
        return [r[key] for r in sorted(mine, key=lambda r: r["repeat"])]

    top = max(cfg.in_flight)
    paths = dict.fromkeys(r["path"] for r in repeat_rows)
    for path in paths:
        name = "http" if path == facts.get("http_path") else path
        for n in dict.fromkeys((1, top)):
            bt, ub = runs(path, "batched", n, "rps"), runs(path, "unbatched", n, "rps")
            if bt and ub:
                ratio = paired_ratios(bt, ub)
                summary[f"{name}_batched_x_unbatched_rps_at_{n}"] = ratio["median"]
                summary[f"{name}_batched_x_unbatched_rps_at_{n}_interval"] = [
                    ratio["lo"],
                    ratio["hi"],
                ]
        mb = runs(path, "batched", top, "mean_batch")
        if mb:
            summary[f"{name}_batched_mean_batch_at_{top}"] = float(np.median(mb))
        for v, n in dict.fromkeys([("unbatched", 1), ("unbatched", top), ("batched", top)]):
            for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("cpu_ms_per_request", "cpu")):
                case, floor = runs(path, v, n, key), runs(path, "floor", n, key)
                if case and floor:
                    ratio = paired_ratios(case, floor)
                    k = f"{name}_{v}_{label}_x_floor_at_{n}"
                    summary[k] = ratio["median"]
                    summary[f"{k}_interval"] = [ratio["lo"], ratio["hi"]]
        one = _find(rows, part="serve", path=path, variant="unbatched", in_flight=1)
        if one:
            summary[f"{name}_overhead_p50_ms_at_1"] = one["overhead_p50_ms"]
        fl = _find(rows, part="serve", path=path, variant="floor", in_flight=1)
        if fl:
            summary[f"{name}_floor_p50_ms_at_1"] = fl["p50_ms"]
    summary["targets"] = {
        f"http_batched_x_unbatched_rps_at_{top}": ">= 1.5 (median), interval low end >= 1.2",
        f"http_batched_mean_batch_at_{top}": ">= 6",
        "ort_int8_x_eager_b1_and_b32": ">= 1.5",
    }
    return summary


def _plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rt = [r for r in rows if r["part"] == "runtime"]
    sv = [r for r in rows if r["part"] == "serve" and r["path"] != "in-process"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model, runtime in dict.fromkeys((r["model"], r["runtime"]) for r in rt):
        mine = [r for r in rt if r["model"] == model and r["runtime"] == runtime]
        axes[0].plot(
            [r["batch"] for r in mine],
            [r["items_per_s"] for r in mine],
            "o-",
            label=f"{model} {runtime}",
        )
    axes[0].set(
        xscale="log", yscale="log", xlabel="batch", ylabel="items/s (log)", title="in process"
    )
    axes[0].legend(fontsize=7)
    for p, variant in dict.fromkeys((r["path"], r["variant"]) for r in sv):
        mine = [r for r in sv if r["path"] == p and r["variant"] == variant]
        axes[1].plot(
            [r["in_flight"] for r in mine], [r["rps"] for r in mine], "o-", label=f"{p} {variant}"
        )
    axes[1].set(
        xscale="log",
        xlabel="requests in flight",
        ylabel="requests/s",
        title="Ray Serve, keyboard step",
    )
    if sv:
        axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":  # python benchmarks/onnx_serving.py [--quick] [--no-ray]
    p = argparse.ArgumentParser(description=SUMMARY)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    add_arguments(p)
    print(run(p.parse_args()))
