"""Distribution-shift measures: PSI and Jensen-Shannon divergence (used by the data gate).

Rules of thumb for PSI (population stability index), from credit-risk practice: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 a shift worth acting on. JS divergence here is in base 2, so it
lies in [0, 1]: 0 for identical distributions, 1 for disjoint supports.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.spatial.distance import jensenshannon

# Floor for empty bins in PSI: ln(a / e) is undefined at 0. 1e-4 is the usual choice.
PSI_EPS = 1e-4


def _finite_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        raise ValueError(f"{name} has no finite values")
    return a


def quantile_edges(expected, bins: int = 10) -> np.ndarray:
    """Interior bin edges at the 1/bins .. (bins-1)/bins quantiles of `expected`, deduplicated.

    Repeated quantiles (discrete or constant data) collapse, so there may be fewer than `bins`
    bins; a constant column gives one edge and two bins (below it, and at or above it).
    """
    if bins < 2:
        raise ValueError(f"PSI needs bins >= 2, got {bins}")
    e = _finite_1d(expected, "expected")
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    return edges


def bin_proportions(values, edges: np.ndarray) -> np.ndarray:
    """Share of finite `values` in each of len(edges) + 1 bins; bin k is [edges[k-1], edges[k])."""
    v = _finite_1d(values, "values")
    idx = np.searchsorted(edges, v, side="right")
    return np.bincount(idx, minlength=len(edges) + 1) / len(v)


def psi_from_proportions(expected_p, actual_p, eps: float = PSI_EPS) -> float:
    """PSI = sum_k (a_k - e_k) * ln(a_k / e_k), with both shares floored at `eps`."""
    e = np.clip(np.asarray(expected_p, dtype=np.float64), eps, None)
    a = np.clip(np.asarray(actual_p, dtype=np.float64), eps, None)
    if e.shape != a.shape:
        raise ValueError(f"PSI: proportions have different shapes {e.shape} and {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def psi(expected, actual, bins: int = 10) -> float:
    """Population stability index of `actual` against `expected`.

    Bins are the quantiles of `expected` (see `quantile_edges`), so each holds about 1/bins of the
    reference; PSI = sum_k (a_k - e_k) * ln(a_k / e_k) over bin shares, empty bins floored at 1e-4.
    Identical samples give 0. NaN and infinite values are dropped first.

    Raises:
        ValueError: either sample has no finite values, or bins < 2.
    """
    edges = quantile_edges(expected, bins)
    return psi_from_proportions(bin_proportions(expected, edges), bin_proportions(actual, edges))


def js_divergence(p, q) -> float:
    """Jensen-Shannon divergence in bits: JS = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2.

    `p` and `q` are non-negative weights (normalized here) as arrays of equal length, or as
    mappings from category to weight (a missing key counts as 0). Result in [0, 1].
    scipy's `jensenshannon` returns the distance, the square root of this value.

    Raises:
        ValueError: shapes differ, a weight is negative or non-finite, or a side sums to 0.
    """
    if isinstance(p, Mapping) or isinstance(q, Mapping):
        keys = sorted(set(p) | set(q), key=str)
        p = [p.get(k, 0.0) for k in keys]
        q = [q.get(k, 0.0) for k in keys]
    pa = np.asarray(p, dtype=np.float64).reshape(-1)
    qa = np.asarray(q, dtype=np.float64).reshape(-1)
    if pa.shape != qa.shape:
        raise ValueError(f"js_divergence: shapes differ {pa.shape} vs {qa.shape}")
    for name, a in (("p", pa), ("q", qa)):
        if not np.all(np.isfinite(a)) or np.any(a < 0) or a.sum() <= 0:
            raise ValueError(f"js_divergence: {name} must be finite, non-negative, not all zero")
    d = jensenshannon(pa, qa, base=2)
    return float(min(max(d * d, 0.0), 1.0))


def _is_missing(x) -> bool:
    if x is None:
        return True
    try:
        return bool(np.isnan(x))
    except (TypeError, ValueError):
        return False
