"""Top-K ranking metrics with binary relevance, plus catalog-level measures.

`ranked` is a 2-D int array (users x K) or a list of lists of item ids, best first, without
repeats; `relevant` has one entry per user: a set or array of relevant item ids, or a single id
(so a (U,) array of held-out items works for leave-one-out). Per-user
metrics take reduce="mean" (a float) or reduce="none" (an np.ndarray, one value per user).

Users with no relevant items have no defined score: they get NaN with reduce="none" and are left
out of the mean (as RecBole and microsoft/recommenders do). Lists shorter than k are used as
they are (the missing slots count as misses); k larger than every list is a ValueError.
"""

from __future__ import annotations

import numpy as np


def _hits(ranked, relevant, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(U, k) boolean hit matrix and (U,) relevant-set sizes; k None means the longest list."""
    lists = [np.asarray(r).reshape(-1) for r in ranked]
    if len(lists) != len(relevant):
        raise ValueError(f"{len(lists)} ranked lists but {len(relevant)} relevant sets")
    if len(lists) == 0:
        raise ValueError("no users: ranked is empty")
    longest = max(len(r) for r in lists)
    if k is None:
        k = max(longest, 1)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > longest:
        raise ValueError(f"k={k} is larger than the longest ranked list ({longest})")
    hits = np.zeros((len(lists), k), dtype=bool)
    n_rel = np.zeros(len(lists), dtype=np.int64)
    for u, (r, rel) in enumerate(zip(lists, relevant, strict=True)):
        if isinstance(rel, (set, frozenset)):
            rel_set = set(rel)
        else:  # an array, a list, or one item id (leave-one-out)
            rel_set = set(np.asarray(rel).reshape(-1).tolist())
        n_rel[u] = len(rel_set)
        top = r[:k].tolist()
        hits[u, : len(top)] = [item in rel_set for item in top]
    return hits, n_rel


def _reduce(per_user: np.ndarray, n_rel: np.ndarray, reduce: str):
    per_user = np.where(n_rel > 0, per_user, np.nan)
    if reduce == "none":
        return per_user
    if reduce != "mean":
        raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}")
    if not np.any(n_rel > 0):
        raise ValueError("no user has any relevant item; the metric is undefined")
    return float(np.nanmean(per_user))


def recall_at_k(ranked, relevant, k: int, reduce: str = "mean"):
    """Recall@K = |top-K ∩ relevant| / |relevant| per user."""
    hits, n_rel = _hits(ranked, relevant, k)
    return _reduce(hits.sum(1) / np.maximum(n_rel, 1), n_rel, reduce)


def hit_rate_at_k(ranked, relevant, k: int, reduce: str = "mean"):
    """HitRate@K = 1 if any relevant item is in the top K, else 0, per user."""
    hits, n_rel = _hits(ranked, relevant, k)
    return _reduce(hits.any(1).astype(np.float64), n_rel, reduce)


def ndcg_at_k(ranked, relevant, k: int, reduce: str = "mean"):
    """NDCG@K with binary gains: DCG / IDCG per user.

    DCG = sum_{i < K, item i relevant} 1 / log2(i + 2) (i is the 0-based position);
    IDCG = sum_{i < min(|relevant|, K)} 1 / log2(i + 2), the DCG of a perfect list.
    """
    hits, n_rel = _hits(ranked, relevant, k)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)  # (k,)
    dcg = hits @ discount
    idcg = np.cumsum(discount)[np.clip(np.minimum(n_rel, k) - 1, 0, None)]
    return _reduce(dcg / idcg, n_rel, reduce)


def mrr(ranked, relevant, reduce: str = "mean"):
    """Mean reciprocal rank: 1 / (1-based position of the first relevant item), 0 if none.

    Uses each user's whole list (no cut-off); truncate `ranked` first for MRR@K.
    """
    hits, n_rel = _hits(ranked, relevant, None)
    first = hits.argmax(1)
    rr = np.where(hits.any(1), 1.0 / (first + 1.0), 0.0)
    return _reduce(rr, n_rel, reduce)


def catalog_coverage(ranked, n_items: int, k: int) -> float:
    """Share of the catalog that appears in at least one user's top K: |∪ top-K| / n_items.

    Raises:
        ValueError: n_items < 1 or k < 1.
    """
    if n_items < 1 or k < 1:
        raise ValueError(f"catalog_coverage needs n_items >= 1 and k >= 1, got {n_items}, {k}")
    seen: set = set()
    for r in ranked:
        seen.update(np.asarray(r).reshape(-1)[:k].tolist())
    return len(seen) / n_items


def gini(counts) -> float:
    """Gini coefficient of non-negative counts (e.g. recommendations per item), in [0, 1).

    With x sorted ascending and i = 1..n: G = sum_i (2i - n - 1) x_i / (n * sum x).
    0 when every item gets the same count; (n - 1) / n when one item gets everything.
    Include zero counts for items never shown, or the concentration is understated.

    Raises:
        ValueError: empty, negative or non-finite counts, or all counts zero.
    """
    x = np.sort(np.asarray(counts, dtype=np.float64).reshape(-1))
    if len(x) == 0 or not np.all(np.isfinite(x)) or x.min() < 0:
        raise ValueError("gini needs a non-empty array of finite, non-negative counts")
    if x.sum() == 0:
        raise ValueError("gini is undefined when all counts are zero")
    n = len(x)
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * x.sum()))
