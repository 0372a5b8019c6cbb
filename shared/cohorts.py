"""Slice (cohort) evaluation with bootstrap confidence intervals, and error analysis.

A headline metric hides the users it fails: new users, rare items, long messages. Each cohort is a
boolean mask over the evaluation examples; each metric is a per-example value (hit or miss, loss,
reciprocal rank) whose cohort mean gets a percentile-bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shared.report import format_number

# Rows of bootstrap indices drawn at once; bounds memory to about 8 * _CHUNK_CELLS bytes.
_CHUNK_CELLS = 4_000_000


def bootstrap_ci(
    values,
    stat: Callable = np.mean,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap: (stat(values), alpha/2 quantile, 1 - alpha/2 quantile).

    Draws n_boot resamples of len(values) with replacement and takes the quantiles of
    stat over them. `stat` is called as stat(sample, axis=1) on a (B, n) block when it
    accepts `axis` (fast for np.mean, np.median), else once per resample. NaN values are
    dropped first. An empty input gives (nan, nan, nan); a single value v gives (v, v, v).

    Raises:
        ValueError: n_boot < 1 or alpha not in (0, 1).
    """
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci needs n_boot >= 1 and 0 < alpha < 1, got {n_boot}, {alpha}")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    point = float(stat(v))
    if len(v) == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // len(v))
    stats = []
    for lo in range(0, n_boot, rows):
        idx = rng.integers(0, len(v), size=(min(rows, n_boot - lo), len(v)))  # (B, n)
        sample = v[idx]
        try:
            out = np.asarray(stat(sample, axis=1), dtype=np.float64)
        except TypeError:
            out = None
        if out is None or out.shape != (len(sample),):
            out = np.array([stat(s) for s in sample], dtype=np.float64)
        stats.append(out)
    boot = np.concatenate(stats)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return point, float(low), float(high)


def ratio_ci(
    numer, denom, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Paired percentile bootstrap of mean(numer) / mean(denom): (point, low, high).

    numer[i] and denom[i] are two models' values on the same example i, so each resample
    draws examples, not values, and keeps the pairs: the interval then reflects how often the
    two models differ, not each model's own spread (scipy.stats.bootstrap, paired=True).
    A zero mean(denom) gives nan.

    Raises:
        ValueError: different lengths, fewer than 2 examples, n_boot < 1 or alpha not in (0, 1).
    """
    from scipy.stats import bootstrap

    a = np.asarray(numer, dtype=np.float64).reshape(-1)
    b = np.asarray(denom, dtype=np.float64).reshape(-1)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"ratio_ci needs two equal-length arrays of 2+ values: {len(a)}, {len(b)}")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"ratio_ci needs n_boot >= 1 and 0 < alpha < 1, got {n_boot}, {alpha}")

    def ratio(x, y, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(x, axis=axis) / np.mean(y, axis=axis)

    point = float(ratio(a, b))
    if not np.isfinite(point):
        return float("nan"), float("nan"), float("nan")
    with np.errstate(all="ignore"):  # a resample whose denominator is 0 gives inf, not a warning
        res = bootstrap(
            (a, b),
            ratio,
            paired=True,
            vectorized=True,
            n_resamples=n_boot,
            batch=max(1, _CHUNK_CELLS // len(a)),
            confidence_level=1 - alpha,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def cohort_table(
    per_example: dict[str, np.ndarray],
    cohorts: dict[str, np.ndarray],
    n_boot: int = 500,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and 95% bootstrap interval of each per-example metric within each cohort.

    Args:
        per_example: metric name -> (N,) values, one per evaluation example (NaN = undefined,
            skipped).
        cohorts: cohort name -> (N,) boolean mask. Include "all" yourself if you want it.

    Returns:
        {cohort: {metric: {"mean", "low", "high", "n"}}}; n counts the non-NaN examples. An
        empty cohort has n = 0 and NaN statistics (the run report writes them as null).

    Raises:
        ValueError: a metric or mask whose length differs from the others, or a non-boolean mask.
    """
    lengths = {len(np.asarray(v).reshape(-1)) for v in per_example.values()}
    if len(lengths) > 1:
        raise ValueError(f"cohort_table: per-example metrics have different lengths {lengths}")
    n = lengths.pop() if lengths else None
    table: dict[str, dict[str, dict[str, float]]] = {}
    for cname, mask in cohorts.items():
        m = np.asarray(mask).reshape(-1)
        if m.dtype != bool:
            raise ValueError(f"cohort_table: mask {cname!r} must be boolean, got {m.dtype}")
        if n is not None and len(m) != n:
            raise ValueError(f"cohort_table: mask {cname!r} has {len(m)} rows, metrics have {n}")
        row = {}
        for j, (metric, values) in enumerate(per_example.items()):
            x = np.asarray(values, dtype=np.float64).reshape(-1)[m]
            point, low, high = bootstrap_ci(x, n_boot=n_boot, seed=seed + j)
            row[metric] = {"mean": point, "low": low, "high": high, "n": int(np.sum(~np.isnan(x)))}
        table[cname] = row
    return table


def cohort_markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """A Markdown table: one row per cohort, cells "mean [low, high]", and the example count."""
    metrics: list[str] = []
    for row in table.values():
        metrics += [m for m in row if m not in metrics]
    lines = ["| cohort | n | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for cname, row in table.items():
        n = max((int(c["n"]) for c in row.values()), default=0)
        cells = []
        for m in metrics:
            c = row.get(m)
            if c is None or not np.isfinite(c["mean"]):
                cells.append("n/a")
            else:
                f = format_number
                cells.append(f"{f(c['mean'])} [{f(c['low'])}, {f(c['high'])}]")
        lines.append(f"| {cname} | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def worst_examples(losses, k: int = 10, mask=None) -> np.ndarray:
    """Indices of the `k` highest losses (highest first), optionally only where `mask` is True.

    NaN losses are skipped. Fewer than k candidates returns all of them. Ties keep index order.

    Raises:
        ValueError: k < 0, or a mask whose length differs from the losses.
    """
    if k < 0:
        raise ValueError(f"worst_examples needs k >= 0, got {k}")
    x = np.asarray(losses, dtype=np.float64).reshape(-1)
    ok = ~np.isnan(x)
    if mask is not None:
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if len(m) != len(x):
            raise ValueError(f"worst_examples: mask has {len(m)} rows, losses have {len(x)}")
        ok &= m
    idx = np.flatnonzero(ok)
    order = np.argsort(-x[idx], kind="stable")
    return idx[order[:k]].astype(np.int64)
