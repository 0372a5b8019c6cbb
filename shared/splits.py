"""Train / validation / test splitters that return index arrays.

Each splitter returns one sorted int64 index array per part; the parts are disjoint and together
cover every row (except where a docstring says otherwise). Choose the split that matches how the
model will be used: a random split for i.i.d. data, a global time cut when the model predicts the
future, leave-last-out for per-user next-item tasks, and a grouped split when one entity (a user, a
thread, an author) must never appear on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) < 1 or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    return f


def _cut_points(n: int, f: np.ndarray) -> np.ndarray:
    # Boundaries round(n * cumsum); the last boundary is exactly n so every row lands somewhere.
    bounds = np.rint(np.cumsum(f) * n).astype(np.int64)
    bounds[-1] = n
    return bounds


def random_split(n: int, fractions=(0.8, 0.1, 0.1), seed=0) -> tuple[np.ndarray, ...]:
    """Shuffle 0..n-1 with `seed` and cut it by `fractions`.

    Part k holds rows round(n * F_{k-1}) .. round(n * F_k) of the permutation, F the cumulative sum.

    Raises:
        ValueError: n < 0, or fractions negative or not summing to 1.
    """
    if n < 0:
        raise ValueError(f"random_split needs n >= 0, got {n}")
    f = _check_fractions(fractions)
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.split(perm, _cut_points(n, f)[:-1])
    return tuple(np.sort(p).astype(np.int64) for p in parts)


def time_cut_split(timestamps, quantiles=(0.8, 0.9)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global time cut: train before the q0 time quantile, val up to q1, test after.

    With s = sorted(t) and t0 = s[round(q0 * n)], t1 = s[round(q1 * n)] (index clipped to n - 1):
    train = t < t0, val = t0 <= t < t1, test = t >= t1. Rows sharing a timestamp always fall in
    the same part, so part sizes are approximately (not exactly) the quantiles when there are ties.

    Raises:
        ValueError: empty or non-finite timestamps, or quantiles not 0 < q0 <= q1 < 1.
    """
    t = np.asarray(timestamps)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError("time_cut_split needs a non-empty 1-D array of timestamps")
    t = t.astype(np.float64) if not np.issubdtype(t.dtype, np.datetime64) else t.astype("int64")
    if not np.all(np.isfinite(t)):
        raise ValueError("time_cut_split: timestamps contain NaN or infinity")
    q0, q1 = quantiles
    if not 0 < q0 <= q1 < 1:
        raise ValueError(f"time_cut_split needs 0 < q0 <= q1 < 1, got {quantiles}")
    s = np.sort(t)
    # Cuts are observed times, so with distinct timestamps the sizes are exactly round(q * n).
    t0, t1 = (s[min(int(round(q * len(s))), len(s) - 1)] for q in (q0, q1))
    train = np.flatnonzero(t < t0)
    val = np.flatnonzero((t >= t0) & (t < t1))
    test = np.flatnonzero(t >= t1)
    return train.astype(np.int64), val.astype(np.int64), test.astype(np.int64)


def leave_last_out(user_ids, timestamps, n_holdout=2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user, ordered by time: the last event -> test, the one before -> val, the rest -> train.

    With n_holdout=1 there is no validation part (val is empty). Users with fewer than
    n_holdout + 1 events stay wholly in train, so every evaluated user has training history.
    Ties in time keep the original row order (stable sort).

    Raises:
        ValueError: mismatched lengths or n_holdout not in {1, 2}.
    """
    u = np.asarray(user_ids)
    t = np.asarray(timestamps)
    if u.ndim != 1 or t.shape != u.shape:
        raise ValueError(f"leave_last_out: user_ids {u.shape} and timestamps {t.shape} differ")
    if n_holdout not in (1, 2):
        raise ValueError(f"leave_last_out needs n_holdout in (1, 2), got {n_holdout}")
    n = len(u)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return empty, empty, empty
    # Sort by (user, time, original index): lexsort keys go last-major, and is stable.
    order = np.lexsort((np.arange(n), t, u))
    u_sorted = u[order]
    # Position of each row from the end of its user's run: 0 = last event.
    is_last = np.r_[u_sorted[1:] != u_sorted[:-1], True]
    run_end = np.flatnonzero(is_last)
    run_start = np.r_[0, run_end[:-1] + 1]
    run_len = run_end - run_start + 1
    rank_from_end = np.repeat(run_end, run_len) - np.arange(n)
    user_len = np.repeat(run_len, run_len)
    eligible = user_len >= n_holdout + 1
    order = order.astype(np.int64)
    test = order[eligible & (rank_from_end == 0)]
    val = order[eligible & (rank_from_end == 1)] if n_holdout == 2 else empty
    train = order[~(eligible & (rank_from_end < n_holdout))]
    return np.sort(train), np.sort(val), np.sort(test)


def group_split(groups, fractions=(0.8, 0.1, 0.1), seed=0) -> tuple[np.ndarray, ...]:
    """Split rows so that all rows of one group land in the same part.

    The unique groups are shuffled with `seed` and cut by `fractions` of the number of groups
    (not of rows), as in `random_split`; every row follows its group.

    Raises:
        ValueError: groups not 1-D, or bad fractions.
    """
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"group_split needs a 1-D array of group ids, got shape {g.shape}")
    f = _check_fractions(fractions)
    uniq, inverse = np.unique(g, return_inverse=True)
    group_parts = random_split(len(uniq), f, seed=seed)
    part_of_group = np.empty(len(uniq), dtype=np.int64)
    for k, idx in enumerate(group_parts):
        part_of_group[idx] = k
    row_part = part_of_group[inverse.reshape(-1)]
    return tuple(np.flatnonzero(row_part == k).astype(np.int64) for k in range(len(f)))
