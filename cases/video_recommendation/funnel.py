"""The funnel stage by stage: what each stage costs, and its knobs chosen on validation.

A served list passes four lossy stages after the full model (the shipped retriever scored
offline with all its weights over the whole history):

    stored    the shipped retriever as the artifact holds it (an item-item model: its table,
              top-|w| neighbours per video, over the last `i2i_history` watches)
    merged    with the other candidate sources (two-tower, SASRec, trending, fresh): without a
              ranker a share `merge_quota` of the positions goes to them
    ranked    the ranker's order (simulator only; real logs have no impressions to train one)
    reranked  MMR over topics with weight `rerank_weight`, a topic cap and a freshness bonus:
              what `/recommend` answers

`choose_funnel` picks each knob on the validation items (the history is the training part),
in stage order, with the artifact's own predictor, so what is measured is what serves:

- the table's k: the smallest in `cfg.i2i_ks` whose table fits `cfg.i2i_budget_mb` and whose
  validation NDCG@10 is within `cfg.i2i_tolerance` of the full model's (else the best that fits);
- the merge quota: the best validation NDCG@10 over `cfg.merge_quotas` (ties: the smallest);
  quota 0 is the shipped source with the others below it, so a merge can only tie or win;
- the re-rank weight: the largest in `cfg.rerank_weights` whose validation NDCG@10 is at least
  that of weight 0 (no re-ranking), so a re-rank ships only where it costs nothing on
  validation, and buys topic diversity (`topics@10`).

`stage_table` scores every stage on the test users with paired bootstrap intervals of the
difference to the full model; `i2i_scaling` measures the served table's memory and latency at
catalog sizes the case claims.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from shared.cohorts import bootstrap_ci
from shared.ranking import catalog_coverage, ndcg_at_k, recall_at_k

from .predictor import VideoRecPredictor, i2i_candidates, i2i_table, rerank_settings

STAGES = ("stored", "merged", "ranked", "reranked")
I2I_BYTES = 8  # per table entry: an int32 column position and a float32 weight


def table_mb(rows: int, k: int) -> float:
    """Memory of an item-item table of `rows` rows and k neighbours each, in MB (1e6 bytes)."""
    return rows * k * I2I_BYTES / 1e6


def _top(order_scores: np.ndarray, items: np.ndarray, exclude: set[int], k: int) -> np.ndarray:
    """(k,) ids by descending score (ties by position), watched excluded, -1 padded."""
    out = np.full(k, -1, dtype=np.int64)
    o = np.argsort(-np.asarray(order_scores, dtype=np.float64), kind="stable")
    got = [int(items[j]) for j in o if int(items[j]) not in exclude][:k]
    out[: len(got)] = got
    return out


def stage_lists(
    pred: VideoRecPredictor,
    hists: list[list[int]],
    k: int = 50,
    weights=(),
    quotas=(),
    cands=None,
) -> dict[str, np.ndarray]:
    """Each stage's top-k per history, (B, k) ids (-1 = fewer), watched videos excluded.

    `quotas` adds `merged@q` lists and `weights` (re-rank weights) `reranked@w` lists for each;
    `reranked` is the artifact's own funnel, exactly what `recommend_batch` answers for these
    histories. `cands`: `pred.retrieve(hists)`, when the caller already has it.
    """
    cold = [len(h) == 0 for h in hists]
    cands = pred.retrieve(hists) if cands is None else cands
    ranked = pred.rank(hists, cands)
    names = [*STAGES, *(f"merged@{q:g}" for q in quotas)]
    out = {s: np.full((len(hists), k), -1, dtype=np.int64) for s in names}
    for i, c in enumerate(cands):
        seen = set(hists[i])
        main = c.sources == pred.shipped
        # the shipped source's own candidates alone, by its own scores
        out["stored"][i] = _top(c.scores[main], c.items[main], seen, k)
        out["merged"][i] = _top(pred._retrieval_order(c), c.items, seen, k)
        out["ranked"][i] = _top(ranked[i], c.items, seen, k)
        for q in quotas:
            out[f"merged@{q:g}"][i] = _top(pred._retrieval_order(c, q), c.items, seen, k)
    keep_kw = pred.rerank_kw
    for w in [None, *weights]:
        if w is not None:
            pred.rerank_kw = rerank_settings(pred.cfg["hparams"], w)
        res = pred.finish(hists, cold, cands, ranked, False, k)
        pred.rerank_kw = keep_kw
        lists = np.full((len(hists), k), -1, dtype=np.int64)
        for i, r in enumerate(res):
            got = [x["item"] for x in r["items"]]
            lists[i, : len(got)] = got
        out["reranked" if w is None else f"reranked@{w:g}"] = lists
    return out


def _ndcg(top: np.ndarray, target: np.ndarray, reduce: str = "mean"):
    return ndcg_at_k(top, [[t] for t in target], 10, reduce=reduce)


def _batched(fn, hists: list, size: int = 256) -> dict[str, np.ndarray]:
    """fn(start, histories[start : start + size]) -> {name: (b, k)}, over every batch, joined."""
    parts: dict[str, list] = {}
    for b in range(0, len(hists), size):
        for name, v in fn(b, hists[b : b + size]).items():
            parts.setdefault(name, []).append(v)
    return {name: np.concatenate(v) for name, v in parts.items()}


def topics_at_10(top: np.ndarray, item_topic: np.ndarray) -> float:
    """Mean number of distinct known topics in the first 10 of each list (diversity)."""
    vals = []
    for row in top:
        t = item_topic[row[:10][row[:10] >= 0]]
        vals.append(len(set(t[t >= 0].tolist())))
    return float(np.mean(vals)) if vals else 0.0


def cut_table(table: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The first k entries of each row (rows are stored by |weight|, strongest first)."""
    counts = np.minimum(np.diff(table.indptr), k)  # (R,)
    starts = np.repeat(table.indptr[:-1], counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    take = starts + offsets
    indptr = np.r_[0, np.cumsum(counts)]
    return sp.csr_matrix((table.data[take], table.indices[take], indptr), shape=table.shape)


def choose_k(pred: VideoRecPredictor, hists, target, full_val: float, cfg) -> dict:
    """The table's k on validation (module doc); `pred.i2i` holds the largest k that fits."""
    e = pred.i2i
    table = e["table"]
    rows, k_max = table.shape[0], int(np.diff(table.indptr).max(initial=0))
    long = [np.asarray(h[-e["history"] :], dtype=np.int64) for h in hists]
    val, cut = {}, {}
    for k in [k for k in cfg.i2i_ks if k <= k_max] or [k_max]:
        cut[k] = cut_table(table, k)
        found = i2i_candidates(long, cut[k], e["row_of"], 10, e["tau"], e["floor"], e["cols"], True)
        top = np.full((len(hists), 10), -1, dtype=np.int64)
        for i, (items, _) in enumerate(found):
            top[i, : len(items)] = items[:10]
        val[k] = _ndcg(top, target)
    good = [k for k in val if val[k] >= (1.0 - cfg.i2i_tolerance) * full_val]
    k = min(good) if good else max(val, key=val.get)
    e["table"] = cut[k]
    why = (
        f"the smallest k within {cfg.i2i_tolerance:.1%} of the full model on validation"
        if good
        else f"no k that fits {cfg.i2i_budget_mb:g} MB reaches the full model within "
        f"{cfg.i2i_tolerance:.1%} on validation: the best that fits"
    )
    return {"k": int(k), "val": val, "rows": rows, "mb": table_mb(rows, k), "why": why}


def choose_funnel(pred: VideoRecPredictor, split, full_val: float, cfg) -> dict:
    """Pick k, the merge quota and the re-rank weight on the validation users (module doc).

    Sets them on `pred` (the table cut to k) and returns what the artifact records: the
    choices, every candidate's validation NDCG@10 and why each was kept.
    """
    users = split.val_users
    hists = [split.seqs_train[u].tolist() for u in users]
    target = split.val_item[users]
    out: dict = {"full_val_ndcg@10": full_val}
    if pred.i2i is not None:
        out["i2i"] = choose_k(pred, hists, target, full_val, cfg)  # cuts pred's table to k
    cands = [c for b in range(0, len(hists), 256) for c in pred.retrieve(hists[b : b + 256])]

    def lists(**kw) -> dict[str, np.ndarray]:
        return _batched(
            lambda b, h: stage_lists(pred, h, 10, cands=cands[b : b + 256], **kw), hists
        )

    # Merge quota: without a ranker the merged order is the served one; with one it is not.
    quotas = {}
    if pred.ranker is None:
        got = lists(quotas=cfg.merge_quotas)
        quotas = {q: _ndcg(got[f"merged@{q:g}"], target) for q in cfg.merge_quotas}
        pred.merge_quota = max(quotas, key=lambda q: (round(quotas[q], 12), -q))
    else:
        pred.merge_quota = 0.0
    out["merge"] = {"quota": pred.merge_quota, "val": quotas}
    weights = [w for w in cfg.rerank_weights if w > 0]
    got = lists(weights=[0.0, *weights])
    val = {w: _ndcg(got[f"reranked@{w:g}"], target) for w in [0.0, *weights]}
    div = {w: topics_at_10(got[f"reranked@{w:g}"], pred.item_topic) for w in val}
    free = [w for w in val if val[w] >= val[0.0] - 1e-12]
    pred.rerank_weight = max(free)
    pred.rerank_kw = rerank_settings(pred.cfg["hparams"], pred.rerank_weight)
    out["rerank"] = {"weight": pred.rerank_weight, "val": val, "topics@10": div}
    out["val_ndcg@10"] = {s: _ndcg(got[s], target) for s in ("stored", "merged", "ranked")} | {
        "reranked": val[pred.rerank_weight]
    }
    return out


def stage_table(pred: VideoRecPredictor, split, full_top: np.ndarray, n_boot: int, seed: int):
    """Every stage on the test users (train + validation history): NDCG@10, recall@50,
    coverage@10, topics@10 and the paired bootstrap 95% interval of each stage's per-user
    NDCG@10 and recall@50 minus the full model's (the same users resampled for both).

    Returns (rows, the reranked lists, which are what the artifact serves).
    """
    users = split.test_users
    hists = [split.seqs_trainval[u].tolist() for u in users]
    target = split.test_item[users]
    lists = {"full": full_top, **_batched(lambda b, h: stage_lists(pred, h, 50), hists)}
    rel = [[t] for t in target]
    base_n = ndcg_at_k(full_top, rel, 10, reduce="none")
    base_r = recall_at_k(full_top, rel, 50, reduce="none")
    rows = {}
    for name, top in lists.items():
        per_n = ndcg_at_k(top, rel, 10, reduce="none")
        per_r = recall_at_k(top, rel, 50, reduce="none")
        _, nlo, nhi = bootstrap_ci(per_n - base_n, n_boot=n_boot, seed=seed)
        _, rlo, rhi = bootstrap_ci(per_r - base_r, n_boot=n_boot, seed=seed + 1)
        rows[name] = {
            "ndcg@10": float(np.mean(per_n)),
            "d_ndcg@10_ci": f"[{nlo:+.4f}, {nhi:+.4f}]",
            "recall@50": float(np.mean(per_r)),
            "d_recall@50_ci": f"[{rlo:+.4f}, {rhi:+.4f}]",
            "coverage@10": catalog_coverage([r[r >= 0] for r in top], split.n_items, 10),
            "topics@10": topics_at_10(top, pred.item_topic),
        }
    return rows, lists["reranked"]


def i2i_scaling(
    k: int,
    history: int,
    sizes=(20_000, 100_000),
    budget_mb: float = 128.0,
    requests: int = 200,
    seed: int = 0,
) -> dict:
    """Memory and per-request latency of the served item-item source at catalog sizes.

    A random table with a row for every video (the worst case: item-kNN covers every video;
    EASE covers at most `ease_max_items`), k neighbours each or fewer where the memory budget
    binds (k <= budget / (rows x 8 bytes)), scored by `predictor.i2i_candidates` for one
    request at a time with a history of 50 watches and of `history` (the served cap).
    Returns {size: {k, table_mb, p50_ms, p99_ms (50 watches), p99_ms_long}}.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for n in sizes:
        kk = int(min(k, max(1, budget_mb * 1e6 // (n * I2I_BYTES))))
        idx = rng.integers(0, n, size=(n, kk), dtype=np.int32)
        table = i2i_table(idx, rng.normal(size=(n, kk)).astype(np.float32), n)
        rows, cols = np.arange(n), np.arange(n)
        row = {"k": kk, "table_mb": table_mb(n, kk)}
        for name, length in (("", 50), ("_long", history)):
            times = []
            for _ in range(requests):
                h = rng.integers(0, n, size=length)
                t0 = time.perf_counter()
                i2i_candidates([h], table, rows, 200, 4.0, 0.02, cols, True)
                times.append((time.perf_counter() - t0) * 1e3)
            if not name:
                row["p50_ms"] = float(np.percentile(times, 50))
            row[f"p99_ms{name}"] = float(np.percentile(times, 99))
        out[n] = row
    return out
