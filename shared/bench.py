"""The benchmark protocol: a timing harness, peak memory, a machine fingerprint, results files.

    timing = time_fn(lambda: model(x), warmup=3, repeats=20, items_per_call=len(x))
    fp = machine_fingerprint()            # cores, versions, measured GFLOP/s and GB/s (cached)
    write_results(out_dir, "rnn", rows, {"peak_gflops": fp["matmul_gflops"]})

Compare timings only within one run on one machine; the fingerprint's measured matmul GFLOP/s is
the reference for roofline fractions (achieved FLOP/s / measured peak).
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.cohorts import bootstrap_ci
from shared.io import atomic_write_json, atomic_write_text, to_jsonable


@dataclass
class Timing:
    """Wall-clock statistics of repeated calls (times in ms except `median_s`)."""

    median_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    n: int
    items_per_s: float  # items_per_call / median_s
    min_ms: float = float("nan")
    max_ms: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_fn(
    fn: Callable[[], Any],
    warmup: int = 3,
    repeats: int = 20,
    min_time_s: float = 0.0,
    items_per_call: int = 1,
    max_repeats: int = 100_000,
) -> Timing:
    """Time `fn()` after `warmup` untimed calls.

    Calls are timed one by one with `time.perf_counter` until at least `repeats` calls AND
    `min_time_s` seconds of timed calls have been made (never more than `max_repeats`).
    Percentiles are numpy's linear-interpolation percentiles of the per-call times.
    Code that runs on an accelerator must synchronise inside `fn`.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(max(0, warmup)):
        fn()
    times: list[float] = []
    total = 0.0
    while len(times) < max_repeats and (len(times) < repeats or total < min_time_s):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    a = np.asarray(times) * 1e3  # (n,) ms
    p50, p95, p99 = (float(v) for v in np.percentile(a, [50, 95, 99]))
    median_s = p50 / 1e3
    return Timing(
        median_s=median_s,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        mean_ms=float(a.mean()),
        n=len(times),
        items_per_s=items_per_call / median_s if median_s > 0 else math.inf,
        min_ms=float(a.min()),
        max_ms=float(a.max()),
    )


def paired_ratios(
    num: Sequence[float],
    den: Sequence[float],
    n_boot: int = 2000,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """The ratio num[r] / den[r] of each repeat r (measured alternately in one run), summarised.

    Returns {"median", "min", "max", "lo", "hi", "n", "values"}: the median of the per-repeat
    ratios, their range, and a percentile-bootstrap `level` interval of that median (resampling
    repeats; with n < 3 the interval is the range). Repeats whose ratio is not finite (a zero or
    NaN denominator) are left out; with none left every figure is NaN.
    """
    if len(num) != len(den):
        raise ValueError("num and den need one value per repeat")
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.asarray(num, dtype=np.float64) / np.asarray(den, dtype=np.float64)  # (k,)
    r = r[np.isfinite(r)]
    if r.size == 0:
        nan = float("nan")
        return {"median": nan, "min": nan, "max": nan, "lo": nan, "hi": nan, "n": 0, "values": []}
    lo, hi = float(r.min()), float(r.max())
    if r.size >= 3:
        _, lo, hi = bootstrap_ci(r, np.median, n_boot, alpha=1 - level, seed=seed)
    return {
        "median": float(np.median(r)),
        "min": float(r.min()),
        "max": float(r.max()),
        "lo": lo,
        "hi": hi,
        "n": int(r.size),
        "values": [float(v) for v in r],
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def measure_matmul_gflops(n: int | None = None, repeats: int = 5) -> dict[str, Any]:
    """Peak fp32 matmul throughput with torch at its current thread count.

    FLOPs = 2 n^3 per (n x n) @ (n x n); GFLOP/s from the fastest of `repeats` timed calls.
    With `n=None` the size is 2048 if a 1024 matmul takes under 20 ms (a fast machine, where
    2048 gets closer to peak), else 1024 (keeps the measurement near a second on slow ones).
    """
    import torch

    if n is None:
        a = torch.randn(1024, 1024)
        torch.mm(a, a)  # first call pays for thread-pool start-up
        n = 2048 if time_fn(lambda: torch.mm(a, a), warmup=0, repeats=2).min_ms < 20 else 1024
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = torch.empty(n, n)
    best = time_fn(lambda: torch.mm(a, b, out=out), warmup=1, repeats=repeats).min_ms
    return {
        "matmul_gflops": round(2 * n**3 / (best / 1e3) / 1e9, 1),
        "matmul_size": n,
        "matmul_threads": torch.get_num_threads(),
    }


def measure_memcpy_gbps(mib: int = 256, repeats: int = 3) -> float:
    """Copy bandwidth of a large tensor copy, GB/s counting bytes read + written (STREAM Copy)."""
    import torch

    src = torch.ones(mib * 1024 * 1024 // 4)  # float32
    dst = torch.empty_like(src)
    best = time_fn(lambda: dst.copy_(src), warmup=1, repeats=repeats).min_ms
    return round(2 * src.numel() * 4 / (best / 1e3) / 1e9, 1)


_FINGERPRINT_CACHE: dict[str, Any] = {}


def machine_fingerprint(measure: bool = True) -> dict[str, Any]:
    """Where the numbers came from: hardware, thread count, versions and measured peaks.

    Keys: cpu_model, cores (usable by this process), cores_logical, threads (torch intra-op),
    python, platform, torch, onnxruntime, numpy, cuda (device name or None), matmul_gflops,
    matmul_size, matmul_threads, memcpy_gbps. The measured keys are None with `measure=False`.
    Measurement (one to a few seconds) is done once per process and cached.
    """
    import torch

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    fp: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores": _cores(),
        "cores_logical": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "numpy": np.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "matmul_gflops": None,
        "matmul_size": None,
        "matmul_threads": None,
        "memcpy_gbps": None,
    }
    if measure and not _FINGERPRINT_CACHE:
        _FINGERPRINT_CACHE.update(measure_matmul_gflops())
        _FINGERPRINT_CACHE["memcpy_gbps"] = measure_memcpy_gbps()
    if measure or _FINGERPRINT_CACHE:
        fp.update(_FINGERPRINT_CACHE)
    return fp


def _cell(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return "n/a"
    if isinstance(x, int) or (abs(x) >= 1000 and float(x).is_integer()):
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def markdown_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of `rows` (dicts); columns default to every key, first seen first."""
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def write_results(
    out_dir: str | os.PathLike,
    name: str,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    columns: list[str] | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Path:
    """Write `<name>.json` and `<name>.md` atomically into `out_dir`; return the JSON path.

    JSON: {"name", "rows", "summary", "fingerprint"} (NaN/inf become null). `fingerprint`
    defaults to `machine_fingerprint()` (measured, cached per process).
    """
    out_dir = Path(out_dir)
    fp = machine_fingerprint() if fingerprint is None else fingerprint
    doc = to_jsonable({"name": name, "rows": rows, "summary": summary, "fingerprint": fp})
    path = atomic_write_json(out_dir / f"{name}.json", doc)
    summary_lines = "\n".join(f"- {k}: {_cell(v)}" for k, v in doc["summary"].items())
    machine = (
        f"{fp.get('cpu_model')}, {fp.get('cores')} cores, torch {fp.get('torch')} "
        f"({fp.get('threads')} threads), onnxruntime {fp.get('onnxruntime')}"
    )
    if fp.get("matmul_gflops") is not None:
        machine += (
            f"; measured fp32 matmul {fp['matmul_gflops']} GFLOP/s "
            f"(n={fp.get('matmul_size')}, {fp.get('matmul_threads')} threads), "
            f"copy {fp.get('memcpy_gbps')} GB/s"
        )
    md = (
        f"# Benchmark `{name}`\n\n{markdown_rows(doc['rows'], columns)}\n\n"
        f"## Summary\n\n{summary_lines or '(none)'}\n\n## Machine\n\n{machine}\n"
    )
    atomic_write_text(out_dir / f"{name}.md", md)
    return path
