"""Evaluation: offline retrieval and ranking, cohorts, the simulated A/B test, off-policy estimates.

Retrieval protocol (real and built-in data alike): time-ordered leave-last-one-out per user; the
model sees the train + validation history and ranks the full catalog; items in that history are
excluded; the single held-out item is the relevant one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shared.classification import expected_calibration_error, grouped_auc, roc_auc
from shared.cohorts import bootstrap_ci, cohort_table
from shared.ranking import catalog_coverage, ndcg_at_k, recall_at_k

from .train import RetrievalSplit


def top_k_excluding(scores: np.ndarray, H: sp.csr_matrix, k: int) -> np.ndarray:
    """Top-k item ids per row after removing the items in each history row; (B, I) -> (B, k)."""
    s = scores.astype(np.float32, copy=True)
    r, c = H.nonzero()
    s[r, c] = -np.inf
    k = min(k, s.shape[1])
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def rank_users(
    model,
    split: RetrievalSplit,
    users: np.ndarray,
    stage: str = "test",
    k: int = 50,
    batch: int = 1024,
) -> np.ndarray:
    """Top-k lists for `users`; stage "test" uses train + validation history, "val" train only."""
    X = split.X_trainval if stage == "test" else split.X_train
    seqs = split.seqs_trainval if stage == "test" else split.seqs_train
    out = []
    for b in range(0, len(users), batch):
        u = users[b : b + batch]
        H = X[u]
        out.append(top_k_excluding(model.score(H, [seqs[x] for x in u]), H, k))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def retrieval_metrics(top: np.ndarray, targets: np.ndarray, n_items: int) -> dict[str, float]:
    rel = [[t] for t in targets]
    return {
        "recall@10": recall_at_k(top, rel, 10),
        "ndcg@10": ndcg_at_k(top, rel, 10),
        "recall@50": recall_at_k(top, rel, 50),
        "ndcg@50": ndcg_at_k(top, rel, 50),
        "coverage@10": catalog_coverage(top, n_items, 10),
    }


def retrieval_cohorts(
    tops: dict[str, np.ndarray],
    split: RetrievalSplit,
    users: np.ndarray,
    user_cohort: np.ndarray | None,
    n_boot: int,
    seed: int = 0,
) -> dict:
    """Per-user NDCG@10 by cohort with bootstrap intervals.

    Users: new vs heavy (the simulator's cohorts, or on real data the lightest and heaviest
    quartiles by history length); items: head (the 20% most-watched videos) vs tail.
    """
    targets = split.test_item[users]
    rel = [[t] for t in targets]
    per = {name: ndcg_at_k(top, rel, 10, reduce="none") for name, top in tops.items()}
    per = {f"ndcg@10 {name}": v for name, v in per.items()}
    hist_len = np.asarray(split.X_trainval[users].sum(1)).ravel()
    if user_cohort is not None:
        new, heavy = user_cohort[users] == "new", user_cohort[users] == "heavy"
    else:
        lo, hi = np.quantile(hist_len, [0.25, 0.75])
        new, heavy = hist_len <= lo, hist_len >= hi
    counts = np.asarray(split.X_train.sum(0)).ravel()
    head_items = counts >= np.quantile(counts, 0.8)
    head = head_items[targets]
    cohorts = {
        "all": np.ones(len(users), bool),
        "new_users": new,
        "heavy_users": heavy,
        "head_items": head,
        "tail_items": ~head,
    }
    return cohort_table(per, cohorts, n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------------------------------------
# Ranking


def ranking_metrics(logits: np.ndarray, imp: dict[str, np.ndarray]) -> dict[str, float]:
    """AUC, grouped (per-session) AUC and ECE per task on logged impressions.

    click: all rows, probability with the position tower applied (as logged);
    long_watch: did the viewer watch at least half (click and watch_frac >= 0.5), scored by
    the watch head; satisfied: clicked rows only, scored by the satisfaction head.
    """
    click = imp["click"].astype(int)
    sess = imp["session"]
    p_click = 1.0 / (1.0 + np.exp(-logits[:, 0]))
    long_watch = ((imp["click"] > 0) & (imp["watch_frac"] >= 0.5)).astype(int)
    m = click > 0
    p_sat = 1.0 / (1.0 + np.exp(-logits[m, 2]))
    return {
        "click_auc": roc_auc(click, logits[:, 0]),
        "click_gauc": grouped_auc(click, logits[:, 0], sess),
        "click_ece": expected_calibration_error(click, p_click),
        "long_watch_auc": roc_auc(long_watch, logits[:, 1]),
        "long_watch_gauc": grouped_auc(long_watch, logits[:, 1], sess),
        "satisfied_auc": roc_auc(imp["satisfied"][m].astype(int), logits[m, 2]),
        "satisfied_ece": expected_calibration_error(imp["satisfied"][m].astype(int), p_sat),
    }


# ---------------------------------------------------------------------------------------------
# Online evaluation by simulation


def ab_test(sim, policies: dict, users: np.ndarray, day: float, n_boot: int, seed: int = 0):
    """Simulated A/B: each policy serves the same users; the simulator's expected outcomes.

    policies: name -> fn(users) -> slates (S, K). Returns {policy: {metric: {mean, low, high}}}
    with watch minutes, satisfied views and clicks per request (bootstrap 95% intervals).
    """
    out = {}
    for name, fn in policies.items():
        slates = fn(users)
        v = sim.expected_value(users, slates, day)
        row = {}
        for metric, values, scale in (
            ("watch_min", v["watch_time"], 1 / 60.0),
            ("satisfied", v["satisfied"], 1.0),
            ("clicks", v["clicks"], 1.0),
        ):
            point, lo, hi = bootstrap_ci(values * scale, n_boot=n_boot, seed=seed)
            row[metric] = {"mean": point, "low": lo, "high": hi}
        out[name] = row
    return out


def off_policy(sim, target_probs: dict, users: np.ndarray, day: float, seed: int = 0) -> dict:
    """IPS and SNIPS estimates of a single-slot surface (autoplay "up next") vs the truth.

    The logging policy's distribution pi_0(a | x) over the catalog (rows sum to 1) picks one
    video per request; the reward is sampled watch minutes at slot 0. For a target pi(a | x):
        truth = mean_x sum_a pi(a | x) E[r | x, a]            (known in the simulator)
        IPS = mean_i w_i r_i,  SNIPS = sum_i w_i r_i / sum_i w_i,  w_i = pi(a_i|x_i) / pi_0(a_i|x_i)
    target_probs: name -> fn(users) -> (S, I) probabilities.
    """
    rng = np.random.default_rng(seed)
    p0 = sim.logging_probs(users, day)  # (S, I)
    a = (p0.cumsum(1) > rng.random((len(users), 1))).argmax(1)  # inverse-CDF sample, (S,)
    a = np.minimum(a, p0.shape[1] - 1)
    outcome = sim.sample_outcomes(users, a[:, None], day, rng)
    r = outcome["watch_time"][:, 0] / 60.0  # minutes
    every = np.broadcast_to(np.arange(sim.n_items), (len(users), sim.n_items))
    res = {}
    for name, fn in {"logging": lambda u: p0, **target_probs}.items():
        pt = fn(users)
        truth_per_item = _expected_slot0(sim, users, every, day)
        truth = float((pt * truth_per_item).sum(1).mean())
        w = pt[np.arange(len(users)), a] / p0[np.arange(len(users)), a]
        ips = float(np.mean(w * r))
        snips = float(np.sum(w * r) / max(np.sum(w), 1e-12))
        res[name] = {
            "truth_watch_min": truth,
            "ips": ips,
            "snips": snips,
            "ips_rel_error": (ips - truth) / truth,
            "snips_rel_error": (snips - truth) / truth,
            "max_weight": float(w.max()),
        }
    return res


def _expected_slot0(sim, users, items, day) -> np.ndarray:
    p = sim.probabilities(users, items, day)
    return p["click"] * p["watch_frac"] * sim.item_duration_s[items] / 60.0  # (S, I) minutes
