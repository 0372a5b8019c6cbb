"""Evaluation: retrieval (offline rows and the served artifact), cohorts, ranking, the simulated
A/B test, off-policy estimates, serving latency and the HTTP load test; each writes its tables
and prose to the run's report.

Retrieval protocol: leave-one-out per user (by time, or at random with the run's seed when the
data has no timestamps; `train.make_split`); the model sees the train + validation history and
ranks the full catalog; items in that history are excluded; the single held-out item is the
relevant one. The `served` row runs the artifact's predictor (the whole funnel, re-ranking
included) on the same users and is what promotion compares.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from shared.classification import expected_calibration_error, grouped_auc, roc_auc
from shared.cohorts import bootstrap_ci, cohort_markdown, cohort_table
from shared.ranking import catalog_coverage, ndcg_at_k, recall_at_k

from .model import serving_score
from .predictor import VideoRecPredictor
from .train import RetrievalSplit, VideoRecTrained, monitor_requests, rank_users, ranker_logits

CASE = "video-recommendation"
PROTOCOL_NAMES = {
    "leave_last_out": "Leave-last-one-out by time",
    "random_leave_one_out": "Seeded random leave-one-out (no timestamps)",
}
BASELINES = ("popularity", "recent_popularity", "item_knn", "ease", "item_knn_log1p", "ease_log1p")


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


def evaluate_retrieval(trained: VideoRecTrained, report) -> dict[str, np.ndarray]:
    """Test metrics of every retriever (the `retrieval` table); returns their top-50 lists."""
    split = trained.split
    users = split.test_users
    rows, tops = {}, {}
    for name, model in trained.models.items():
        tops[name] = rank_users(model, split, users, "test", 50)
        rows[name] = retrieval_metrics(tops[name], split.test_item[users], split.n_items)
        rows[name]["val_ndcg@10"] = trained.val_ndcg[name]
        print(
            f"  {name:18s} ndcg@10 {rows[name]['ndcg@10']:.4f} (val {trained.val_ndcg[name]:.4f})",
            flush=True,
        )
    report.table(
        "retrieval",
        rows,
        baseline="popularity",
        note=(
            f"{PROTOCOL_NAMES[split.protocol]} over {len(users):,} users, full ranking over "
            f"{split.n_items:,} items, history items excluded. `{trained.production}` is the "
            "best on validation NDCG@10 (`val_ndcg@10`) and is served first; the `served` row "
            "is the artifact itself (section *What is served*)."
        ),
    )
    best = max(rows[n]["ndcg@10"] for n in rows if n in BASELINES)
    report.extra["production_vs_best_baseline_ndcg@10"] = rows[trained.production]["ndcg@10"] / max(
        best, 1e-12
    )
    _model_sections(trained, report)
    return tops


def _model_sections(trained: VideoRecTrained, report) -> None:
    """The protocol, the skipped models, the recency scale and the play-count weighting."""
    split, val = trained.split, trained.val_ndcg
    report.extra["protocol"] = split.protocol
    report.extra["skipped_models"] = trained.skipped
    if split.protocol == "leave_last_out":
        why = (
            "The data has timestamps: per user the last watch is the test item and the one "
            "before the validation item, which is what a recommender is asked to predict."
        )
    else:
        why = (
            "The data has no timestamps, and its row order is not time (HetRec Last.fm is "
            "sorted by artist id within each user, so the last row is the highest id). Per "
            "user with 3+ items, one random item is the test item and another the validation "
            "item (the run's seed); the rest is the training history, in a random order."
        )
    lines = [f"**{PROTOCOL_NAMES[split.protocol]}** (`{split.protocol}`). {why}"]
    lines += [f"- `{name}` skipped: it {reason}." for name, reason in trained.skipped.items()]
    report.section("Evaluation protocol", "\n".join(lines))
    if "ease_recency" in trained.models:
        rec = trained.models["ease_recency"]
        by_tau = {str(k): v for k, v in rec.val_ndcg_.items()}
        report.extra["ease_recency_val_ndcg@10_by_tau"] = by_tau
        report.section(
            "Sequence-aware EASE: the recency scale picked on validation",
            f"tau = {rec.tau_:g} watches (0 = no decay, plain EASE). Validation NDCG@10 by tau: "
            + ", ".join(f"{k:g}: {v:.4f}" for k, v in rec.val_ndcg_.items())
            + ".",
        )
    if "ease_log1p" in val:
        report.section(
            "Play counts: binary interactions vs log1p confidence weights",
            "Validation NDCG@10, binary -> log1p(count) / mean: "
            + "; ".join(
                f"{n} {val[n]:.4f} -> {val[n + '_log1p']:.4f}" for n in ("item_knn", "ease")
            )
            + f". The best row on validation ships: `{trained.production}`.",
        )


def served_lists(pred: VideoRecPredictor, users: np.ndarray, k: int = 50) -> np.ndarray:
    """The artifact's recommendations for known users, (B, k) ids, -1 where fewer came back."""
    out = np.full((len(users), k), -1, dtype=np.int64)
    for b in range(0, len(users), 256):
        u = [int(x) for x in users[b : b + 256]]
        for r, res in enumerate(pred.recommend_batch(u, [None] * len(u), k)):
            got = [x["item"] for x in res["items"]]
            out[b + r, : len(got)] = got
    return out


def evaluate_served(
    art: Path, trained: VideoRecTrained, tops: dict, user_cohort, cfg, report, seed: int
) -> dict:
    """Score the artifact that is served on the test users: a `served` row in the retrieval
    table and the NDCG@10 cohort table of served, shipped retriever and popularity.

    Returns the cohort table; `report.production_model` names what the artifact serves.
    """
    from .funnel import stage_table

    split = trained.split
    users = split.test_users
    pred = VideoRecPredictor.load(art)
    t0 = time.perf_counter()
    # The stage table's `reranked` lists are what `recommend_batch` answers these users.
    stages, top = stage_table(pred, split, tops[trained.production], cfg.n_boot, seed)
    report.timing("served_eval_s", time.perf_counter() - t0)
    report_funnel(pred, stages, trained, cfg, report)
    row = retrieval_metrics(top, split.test_item[users], split.n_items)
    row["coverage@10"] = catalog_coverage([r[r >= 0] for r in top], split.n_items, 10)
    report.tables["retrieval"]["served"] = row
    served = describe_served(pred)
    report.production_model = served
    report.extra["served_model"] = {
        "name": served,
        "production_retriever": trained.production,
        "sources": pred.cfg["served_retrievers"],
        "ranker": bool(pred.cfg.get("ranker")),
    }
    picked = {"served": top, trained.production: tops[trained.production]}
    picked["popularity"] = tops["popularity"]
    cohort = retrieval_cohorts(picked, split, users, user_cohort, cfg.n_boot, seed)
    report.cohort("retrieval_ndcg@10", cohort, cohort_markdown(cohort))
    p = trained.production
    order = (
        "ranked by the ONNX ranker"
        if pred.ranker
        else "in the shipped retriever's order (no ranker without impression logs)"
    )
    offline = report.tables["retrieval"][p]["ndcg@10"]
    report.section(
        "What is served",
        f"The artifact serves `{served}`: candidates from "
        f"{', '.join(pred.cfg['served_retrievers'])} plus trending and fresh lists, {order}, "
        f"then re-ranked with weight {pred.rerank_weight} (watched removed; above 0: freshness "
        f"bonus, MMR over topics, at most {cfg.max_per_topic} per topic; chosen on validation, "
        "table `funnel_stages`). Scored through the predictor on the same "
        f"{len(users):,} test users: NDCG@10 {row['ndcg@10']:.4f}, against `{p}`'s offline "
        f"{offline:.4f}. Promotion compares the served artifact's numbers: this NDCG@10 on real "
        "data; on the simulator the A/B test's expected watch minutes, because the ranker "
        "orders by expected watch time and satisfaction, not by what the logging policy "
        "showed next (the held-out item).",
    )
    return cohort


def report_funnel(pred: VideoRecPredictor, stages: dict, trained, cfg, report) -> None:
    """The stage table (test), the knobs chosen on validation and why, and the served
    item-item table's memory and latency at 20K and 100K videos (`funnel.py`)."""
    from .funnel import i2i_scaling

    f = pred.cfg.get("funnel") or {}
    hp, p = pred.cfg["hparams"], trained.production
    val = f.get("val_ndcg@10", {})
    knob = {
        "full": f"`{p}` offline: every weight, the whole history",
        "stored": "the shipped source alone, as stored"
        + (
            f": table k = {hp.get('i2i_k')}, last {hp.get('i2i_history')} watches"
            if pred.i2i
            else ""
        ),
        "merged": f"+ the other sources, merge quota {pred.merge_quota:g}",
        "ranked": "the ONNX ranker's order" if pred.ranker else "no ranker: the merged order",
        "reranked": f"re-rank weight {pred.rerank_weight:g} (served)",
    }
    rows = {}
    for name, r in stages.items():
        v = f.get("full_val_ndcg@10") if name == "full" else val.get(name)
        rows[name] = {**r, "val_ndcg@10": v, "knob": knob[name]}
    report.table(
        "funnel_stages",
        rows,
        baseline="full",
        note=f"The shipped retriever `{p}` stage by stage on the same "
        f"{len(trained.split.test_users):,} test users. `d_*_ci`: paired bootstrap 95% "
        f"interval ({cfg.n_boot} resamples of users) of the stage minus the full model per "
        "user; `topics@10`: distinct topics in the first 10; `val_ndcg@10`: the validation "
        "figure each knob was chosen on (`funnel.choose_funnel`).",
    )
    lines = []
    if "i2i" in f:
        i2i = f["i2i"]
        by_k = ", ".join(f"{k}: {v:.4f}" for k, v in i2i["val"].items())
        lines.append(
            f"- **Stored table**: k = {i2i['k']} neighbours per video ({i2i['rows']:,} rows, "
            f"{i2i['mb']:.1f} MB at 8 bytes an entry; budget {cfg.i2i_budget_mb:g} MB), "
            f"{i2i['why']}. Validation NDCG@10 by k: {by_k}; the full model "
            f"{f['full_val_ndcg@10']:.4f}."
        )
    m = f.get("merge", {})
    if m.get("val"):
        by_q = ", ".join(f"{q}: {v:.4f}" for q, v in m["val"].items())
        lines.append(
            f"- **Merge**: quota {m['quota']:g} kept, the best on validation (quota 0 is the "
            f"shipped source with the others only below it). Validation NDCG@10 by quota: {by_q}."
        )
    else:
        lines.append("- **Merge**: the ranker orders every candidate, so no quota applies.")
    if pred.ranker is not None:
        lines.append(
            "- **Ranker**: kept for what it is trained for, expected watch time (table `ranking`: "
            "slate watch minutes; the A/B test), not for predicting the logged next watch: "
            "its NDCG@10 cost is in the table above, what it buys is the A/B's watch minutes."
        )
    r = f.get("rerank", {})
    if r:
        parts = ", ".join(
            f"{w}: {v:.4f} ({r['topics@10'][w]:.2f} topics)" for w, v in r["val"].items()
        )
        lines.append(
            f"- **Re-rank**: weight {r['weight']:g} kept, the most diverse that loses nothing "
            f"to no re-ranking (weight 0) on validation. Validation NDCG@10 (topics@10) by "
            f"weight: {parts}."
        )
    if pred.i2i is not None:
        k = int(hp.get("i2i_k") or np.diff(pred.i2i["table"].indptr).max())
        hist = pred.i2i["history"]
        scale = i2i_scaling(k, hist, budget_mb=cfg.i2i_budget_mb, requests=300)
        report.extra["i2i_scaling"] = scale
        lines.append(
            f"- **Served item-item table at catalog scale** (`funnel.i2i_scaling`: a row for "
            f"every video, k = {k} or what {cfg.i2i_budget_mb:g} MB allows, one request at a "
            "time in process): "
            + "; ".join(
                f"{n:,} videos: k = {v['k']}, {v['table_mb']:.0f} MB, p50 {v['p50_ms']:.2f} ms, "
                f"p99 {v['p99_ms']:.2f} ms at 50 watches, p99 {v['p99_ms_long']:.2f} ms at {hist}"
                for n, v in scale.items()
            )
            + "."
        )
    report.extra["funnel"] = f
    report.section("Funnel: what each stage keeps, chosen on validation", "\n".join(lines))


def describe_served(pred: VideoRecPredictor) -> str:
    """A short name of the served funnel, e.g. `ease_recency+two_tower>ranker>rerank`."""
    sources = list(pred.cfg["served_retrievers"])
    shipped = pred.cfg["production_model"]
    first = [shipped] + [x for x in sources if x != shipped]
    return "+".join(first) + (">ranker" if pred.cfg.get("ranker") else "") + ">rerank"


def per_cohort(cohort: dict, model: str) -> dict[str, float]:
    """{cohort: mean NDCG@10 of `model`} for the cohorts that have users."""
    key = f"ndcg@10 {model}"
    return {c: v[key]["mean"] for c, v in cohort.items() if key in v and v[key]["n"] > 0}


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


def evaluate_ranking(trained: VideoRecTrained, data, cfg, report, parity: float | None) -> None:
    """The ranker and its ablations on the last 20% of days; position bias; ONNX parity."""
    f_te, i_te = trained.rank_test
    sim = data.simulator
    rows = {}
    for name, m in trained.rankers.items():
        row = ranking_metrics(ranker_logits(m, f_te, i_te["position"]), i_te)
        # Re-order each logged test slate by the serving score (no position input) and ask the
        # simulator what the new order is worth: expected watch minutes per slate.
        row["slate_watch_min"] = reordered_value(sim, i_te, serving_score(ranker_logits(m, f_te)))
        rows[name] = row
    rows["logged_order"] = {"slate_watch_min": reordered_value(sim, i_te, -i_te["position"])}
    report.table(
        "ranking",
        rows,
        baseline="no_watch_weighting",
        note=(
            "Test = the last 20% of days. AUC/GAUC (per session) and ECE per task; "
            "`slate_watch_min` = the simulator's expected watch minutes when each logged slate is "
            "re-ordered by the model's serving score (watch log-odds + log P(satisfied))."
        ),
    )
    # Position tower: learned click bias per slot vs the true log examination probability.
    pw = trained.rankers["multitask"].position.weight.detach().numpy()[:, 0]
    true = -cfg.position_decay * np.log(np.arange(cfg.slate_size) + 1.0)
    report.table(
        "position_bias",
        {
            f"slot_{k}": {"true_log_examine": true[k], "learned_click_bias": pw[k] - pw[0]}
            for k in range(cfg.slate_size)
        },
        note="The shallow position tower's click bias (relative to slot 0) against the "
        "simulator's true log examination probability; it is dropped at serving.",
    )
    report.extra["ranker_onnx_max_abs_diff"] = parity


def reordered_value(sim, imp, score) -> float:
    """Expected watch minutes per logged slate when each slate is re-ordered by `score`."""
    sess = imp["session"]
    order = np.lexsort((-score, sess))
    s_sorted = sess[order]
    starts = np.r_[0, np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1]
    K = sim.cfg.slate_size
    full = np.diff(np.r_[starts, len(order)]) == K
    starts = starts[full]
    slates = imp["item"][order][starts[:, None] + np.arange(K)[None, :]]  # (S, K)
    users = imp["user"][order][starts]
    days = imp["day"][order][starts]
    vals = [
        sim.expected_value(users[days == d], slates[days == d], float(d))["watch_time"]
        for d in np.unique(days)
    ]
    return float(np.concatenate(vals).mean() / 60.0)


# ---------------------------------------------------------------------------------------------
# Online evaluation by simulation


def ab_test(
    sim, policies: dict, users: np.ndarray, day: float, n_boot: int, seed: int = 0, per_user=None
):
    """Simulated A/B: each policy serves the same users; the simulator's expected outcomes.

    policies: name -> fn(users) -> slates (S, K). Returns {policy: {metric: {mean, low, high}}}
    with watch minutes, satisfied views and clicks per request (bootstrap 95% intervals).
    `per_user`, a dict, gets {policy: (S,) expected watch minutes of each user}.
    """
    out = {}
    for name, fn in policies.items():
        slates = fn(users)
        v = sim.expected_value(users, slates, day)
        if per_user is not None:
            per_user[name] = v["watch_time"] / 60.0
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


def evaluate_online(trained: VideoRecTrained, data, art: Path, cfg, report, seed: int) -> dict:
    """Simulated A/B test and off-policy estimates at the end of the logging window.

    Returns {arm: {user cohort: expected watch minutes per request}} for the served funnel
    ("served") and popularity: what promotion compares on the simulator, where the ranker
    serves expected watch time and the held-out next watch is what the logging policy showed.
    """
    from .data import gumbel_top_k

    t0 = time.perf_counter()
    sim, split, models = data.simulator, trained.split, trained.models
    production = trained.production
    rng = np.random.default_rng(seed + 5)
    users = rng.choice(sim.n_users, min(cfg.ab_users, sim.n_users), replace=False)
    day = float(cfg.n_days)
    K = cfg.slate_size
    pred = VideoRecPredictor.load(art)
    X = split.X_trainval

    def funnel(u):
        res = pred.recommend_batch([int(x) for x in u], [None] * len(u), K)
        return np.array([[it["item"] for it in r["items"]][:K] for r in res])

    def retriever_only(name):
        return lambda u: rank_users(models[name], split, u, "test", K)

    def logging(u):
        p = sim.logging_probs(u, day, exclude=X[u].toarray() > 0)
        return gumbel_top_k(np.log(p + 1e-30), K, np.random.default_rng(seed + 6))

    policies = {
        "production_funnel": funnel,
        f"retrieval_only_{production}": retriever_only(production),
        "popularity": retriever_only("popularity"),
        "logging_policy": logging,
    }
    watch = {}
    ab = ab_test(sim, policies, users, day, cfg.n_boot, seed, per_user=watch)
    rows = {
        name: {f"{m} ({v['low']:.3g}-{v['high']:.3g})": v["mean"] for m, v in r.items()}
        for name, r in ab.items()
    }
    flat = {name: {m: v["mean"] for m, v in r.items()} for name, r in ab.items()}
    report.cohort("ab_test", ab)
    report.table(
        "ab_test",
        flat,
        baseline="logging_policy",
        note=f"{len(users):,} simulated users, the same for every arm; expected watch minutes, "
        "satisfied views and clicks per request from the simulator's ground truth.",
    )
    report.section(
        "A/B intervals (95% bootstrap over users)",
        "\n".join(f"- {n}: " + ", ".join(rows[n]) for n in rows),
    )
    # Off-policy: target = 90% the policy's top-1, 10% the logging distribution (keeps support).
    o_users = rng.integers(0, sim.n_users, cfg.ope_requests)
    p_log = sim.logging_probs(o_users, day)

    def top1_policy(top1_fn):
        def fn(u):
            top1 = top1_fn(u)
            p = 0.1 * p_log.copy()
            p[np.arange(len(u)), top1] += 0.9
            return p

        return fn

    counts = models["popularity"].model.counts_
    ope = off_policy(
        sim,
        {
            "production_top1": top1_policy(lambda u: _chunked_top1(pred, u)),
            "popularity_top1": top1_policy(lambda u: np.full(len(u), int(np.argmax(counts)))),
        },
        o_users,
        day,
        seed,
    )
    report.table(
        "off_policy",
        ope,
        note=f"{len(o_users):,} logged single-slot requests (autoplay). "
        "Targets mix 90% their top-1 with 10% the logging policy so every action has "
        "support; truth is the simulator's expectation.",
    )
    report.timing("online_eval_s", time.perf_counter() - t0)
    cohort = sim.user_cohort[users]
    return {
        arm: {
            "all": float(watch[key].mean()),
            **{c: float(watch[key][cohort == c].mean()) for c in np.unique(cohort)},
        }
        for arm, key in (("served", "production_funnel"), ("popularity", "popularity"))
    }


def _chunked_top1(pred, users: np.ndarray) -> np.ndarray:
    # The production top-1 per distinct user (the funnel is deterministic for a user).
    uniq, inv = np.unique(users, return_inverse=True)
    out = []
    for b in range(0, len(uniq), 256):
        chunk = [int(x) for x in uniq[b : b + 256]]
        out.extend(
            r["items"][0]["item"] for r in pred.recommend_batch(chunk, [None] * len(chunk), 1)
        )
    return np.asarray(out)[inv]


def promotion_figures(cohort: dict, ab: dict | None) -> tuple[str, dict, dict]:
    """(metric, served artifact's figures, popularity's figures) by cohort, for promotion.

    On real data the served artifact's NDCG@10; on the simulator (`ab` given) the A/B test's
    expected watch minutes of the served funnel, which is what its ranker is built for.
    """
    if ab is not None:
        return "ab_watch_min", ab["served"], ab["popularity"]
    return "ndcg@10", per_cohort(cohort, "served"), per_cohort(cohort, "popularity")


def feedback_loop(cfg, report, seed: int) -> None:
    """Run the feedback-loop experiment; its last round and figure go to the report."""
    from .feedback import plot_feedback, run_feedback_loop

    t0 = time.perf_counter()
    loop = run_feedback_loop(cfg, seed)
    report.timing("feedback_loop_s", time.perf_counter() - t0)
    report.extra["feedback_loop"] = loop
    final = {arm: {m: v[-1] for m, v in h.items()} for arm, h in loop.items()}
    report.table(
        "feedback_loop_final_round",
        final,
        baseline="greedy",
        note=f"After {cfg.loop_rounds} train -> deploy -> log -> retrain rounds.",
    )
    report.figure(
        plot_feedback(loop),
        "feedback_loop.png",
        "Greedy vs exploring policy over retraining rounds",
    )


def report_gate(gate: dict, report) -> None:
    """The data gate's table and what it quarantined (`data.gate_log`, `data.gate_interactions`)."""
    simulated = any(k.startswith("injected_") for k in gate["rows"])
    note = (
        "Every daily impression batch is checked before training; one day is re-injected "
        "with each corruption. Only passed batches are trained on."
        if simulated
        else "The interaction log is checked in batches (time windows, or random parts without "
        "timestamps), each against the rest of the log. Only passed batches are trained on."
    )
    report.table("data_gate", gate["rows"], note=note)
    report.section("Data gate: what was quarantined", "\n".join(f"- {f}" for f in gate["failures"]))


# ---------------------------------------------------------------------------------------------
# Serving: in-process latency and the HTTP load test

# The serving target (README, requirements): /recommend p99 <= 50 ms with 8 requests in flight.
LOAD_IN_FLIGHT = 8
LOAD_TARGET_P99_MS = 50.0
# Issue 18's targets, against the no-op floor measured alternately in the same run: p99 at most
# 3x the floor's (and at most 35 ms), CPU per request at most 3 ms.
LOAD_TARGET_P99_X_FLOOR, LOAD_TARGET_P99_MS_TIGHT, LOAD_TARGET_CPU_MS = 3.0, 35.0, 3.0
LOAD_REQUESTS, LOAD_SECONDS = 600, 20.0  # one measured run stops at whichever comes first
LOAD_REPEATS = 3  # runs of the case and of the floor per path, alternated
LOAD_WARMUP = 200  # requests before measuring: replica start-up, first ONNX and faiss calls


def latency(art: Path, report) -> None:
    """In-process latency of one /recommend call through the predictor (batch 1 and 8)."""
    from shared.bench import time_fn
    from shared.costs import serving_cost

    pred = VideoRecPredictor.load(art)
    users = list(pred.user_histories)[:50] or [None]
    i = {"n": 0}

    def call():
        u = users[i["n"] % len(users)]
        i["n"] += 1
        pred.recommend(u, None, 10)

    t = time_fn(call, warmup=3, repeats=50)
    # What one served batch costs: 8 requests, the load test's number in flight.
    batch = [users[j % len(users)] for j in range(LOAD_IN_FLIGHT)]
    t8 = time_fn(lambda: pred.recommend_batch(batch, [None] * len(batch), 10), repeats=20)
    report.table(
        "serving_latency_inprocess",
        {
            "predictor_batch1": {"p50_ms": t.p50_ms, "p95_ms": t.p95_ms, "p99_ms": t.p99_ms},
            f"predictor_batch{LOAD_IN_FLIGHT}": {
                "p50_ms": t8.p50_ms,
                "p95_ms": t8.p95_ms,
                "p99_ms": t8.p99_ms,
            },
        },
        note="Requests through retrieval, ranking (the ONNX ranker when the data trained one) "
        "and re-ranking, in process, "
        f"{pred.n_items:,} videos; one call of 1 request, and one call of {LOAD_IN_FLIGHT}.",
    )
    # What that latency would cost at YouTube scale: 300K QPS at peak (README, requirements),
    # one core per replica serving one request at a time, run at half load.
    cost = serving_cost(qps=300_000, p50_latency_ms=t.p50_ms, cores_per_replica=1, headroom=2.0)
    report.extra["serving_cost_at_300k_qps"] = cost
    report.section(
        "Serving cost at peak (back of the envelope, shared.costs.serving_cost)",
        f"At the measured p50 of {t.p50_ms:.1f} ms one single-core replica serves "
        f"{cost['per_replica_rps']:.0f} requests/s; 300K QPS at half load needs "
        f"{cost['replicas']:,} cores, about ${cost['usd_per_month']:,.0f} a month at "
        f"$0.04 per core-hour (${cost['usd_per_million_requests']:.3f} per million requests). "
        "This is why the funnel keeps the ranker to a few hundred candidates per request.",
    )


def load_test(root: Path, report, seed: int = 0) -> None:
    """HTTP latency of POST /recommend through the Ray Serve app, LOAD_IN_FLIGHT in flight,
    beside the no-op floor (`shared.floor`) measured alternately in the same run.

    Starts Ray (2 CPUs, unless Ray is already running) and Serve on 127.0.0.1
    (`shared.floor.start_local_ray_direct`: direct ingress for each app), deploys the shipped
    app (`serve.build_app` on `root`, this run's registered version: the funnel in one replica),
    the floor app (same ingress, same request bodies, an answer of the same size) and the same
    API as three deployments (`build_app(topology="stages")`), and measures each way in: the
    ingress replica's own HTTP server (direct ingress, what `casebook serve` gives clients; all
    three) and Serve's proxy (the shipped app and the floor). Each gets LOAD_WARMUP requests,
    then LOAD_REPEATS closed-loop runs of each, alternated (`shared.floor.alternate`, the
    shipped app first), over a mix of known users,
    explicit histories and unknown users. The tables give the medians over the repeats and the
    case's p50, p99 and CPU per request as multiples of the floor (median of the per-repeat
    ratios, with their range). Into a Ray that is already running, only the proxy is measured.
    Serve (and a Ray this started) is shut down afterwards.
    """
    from ray import serve

    from shared.bench import paired_ratios
    from shared.floor import (
        FLOOR_APP,
        alternate,
        build_floor_app,
        direct_port_of,
        measure_http,
        start_local_ray_direct,
    )
    from shared.serving import stop_local_ray

    from .serve import LOGGING, build_app

    t0 = time.perf_counter()
    n_items = json.loads((root / "config.json").read_text())["n_items"]
    payloads = monitor_requests(json.loads((root / "histories.json").read_text()), 512, seed)
    local, direct_ports = start_local_ray_direct(
        "127.0.0.1", n_apps=3, num_cpus=2, logging_config=LOGGING
    )
    rows, results = {}, {}
    names = {"case": "http", "floor": "floor", "stages": "http_stages"}
    try:
        # The shipped topology (one replica) and the three of "stages", 0.5 CPU each, fit a
        # 2-CPU Ray.
        serve.run(
            build_app(str(root), num_cpus=0.5), name=CASE, route_prefix="/", logging_config=LOGGING
        )
        deploy_s = time.perf_counter() - t0
        proxy = f"http://127.0.0.1:{local.port}"
        case_port = direct_port_of("127.0.0.1", direct_ports, "/") if direct_ports else None
        # The floor answers what the case answers to a known user: the same response size.
        answer = _example_answer(f"http://127.0.0.1:{case_port or local.port}", payloads[0])
        serve.run(
            build_floor_app("/recommend", answer, logging_config=LOGGING),
            name=FLOOR_APP,
            route_prefix="/floor",
            logging_config=LOGGING,
        )
        targets = {"proxy": {"case": f"{proxy}/recommend", "floor": f"{proxy}/floor/recommend"}}
        rest = [p for p in direct_ports if p != case_port]
        floor_port = direct_port_of("127.0.0.1", rest, "/floor") if rest else None
        if case_port and floor_port:
            # Direct ingress also gets the three-deployment topology (serve.build_stages_app),
            # so the floor multiples of both topologies come from the same run.
            serve.run(
                build_app(str(root), num_cpus=0.5, topology="stages"),
                name=f"{CASE}-stages",
                route_prefix="/stages",
                logging_config=LOGGING,
            )
            rest = [p for p in rest if p != floor_port]
            stages_port = direct_port_of("127.0.0.1", rest, "/stages")
            stages = f"http://127.0.0.1:{stages_port}/stages/recommend" if stages_port else None
            targets = {
                "direct": {
                    "case": f"http://127.0.0.1:{case_port}/recommend",
                    "floor": f"http://127.0.0.1:{floor_port}/floor/recommend",
                    **({"stages": stages} if stages else {}),
                },
                **targets,
            }
        elif direct_ports:
            print("  load test: direct ingress did not come up; measuring the proxy only")
        for path, urls in targets.items():
            for who, url in urls.items():
                n = LOAD_WARMUP // 4 if who == "floor" else LOAD_WARMUP
                measure_http(url, payloads, LOAD_IN_FLIGHT, n, 60.0)
            runs = alternate(
                {
                    who: lambda u=url: measure_http(
                        u, payloads, LOAD_IN_FLIGHT, LOAD_REQUESTS, LOAD_SECONDS
                    )
                    for who, url in urls.items()
                },
                LOAD_REPEATS,
            )
            results[path] = runs
            suffix = "" if path == "direct" else "_proxy"
            for who, mine in runs.items():
                row = {
                    k: float(np.median([r[k] for r in mine]))
                    for k in ("p50_ms", "p95_ms", "p99_ms", "rps", "cpu_ms_per_request")
                }
                row.update(
                    requests=int(sum(r["n"] for r in mine)),
                    errors=int(sum(r["errors"] for r in mine)),
                    catalog_videos=n_items,
                )
                if who != "floor":
                    for key, label in (
                        ("p50_ms", "p50"),
                        ("p99_ms", "p99"),
                        ("cpu_ms_per_request", "cpu"),
                    ):
                        ratio = paired_ratios(
                            [r[key] for r in mine], [r[key] for r in runs["floor"]]
                        )
                        row[f"{label}_x_floor"] = ratio["median"]
                        row[f"{label}_x_floor_range"] = f"{ratio['min']:.2f}-{ratio['max']:.2f}"
                rows[f"{names[who]}_{LOAD_IN_FLIGHT}_in_flight{suffix}"] = row
    finally:
        stop_local_ray(local)
    report.table(
        "serving_latency_http",
        rows,
        note=f"POST /recommend to the shipped app (the funnel in one replica) on a local Ray "
        f"(2 CPUs), "
        f"{LOAD_IN_FLIGHT} requests in flight (closed loop), after {LOAD_WARMUP} warm-up "
        "requests; 70% known users, 25% explicit histories, 5% unknown users, k = 10. "
        f"Medians over {LOAD_REPEATS} runs of up to {LOAD_REQUESTS} requests, the case and the "
        "no-op floor (`shared.floor`: the same ingress, request bodies and answer size, no "
        f"model) alternated. `http_{LOAD_IN_FLIGHT}_in_flight`: to the ingress replica's own "
        "HTTP server (Serve's direct ingress, what `casebook serve` gives clients); `_proxy`: "
        "through Serve's proxy actor; `floor_*`: the floor the same way; `http_stages_*`: "
        "the same API as three deployments (ingress, retriever, ranker: topology `stages`), "
        "direct ingress only. `*_x_floor`: the "
        "case over the floor, median of the per-run ratios (range beside). "
        "`cpu_ms_per_request`: CPU time of the whole stack (load generator, Ray, proxy, "
        "replicas) per request, which other jobs on the machine inflate much less than latency.",
    )
    lines = []
    for path in results:
        suffix = "" if path == "direct" else "_proxy"
        case = rows[f"http_{LOAD_IN_FLIGHT}_in_flight{suffix}"]
        floor = rows[f"floor_{LOAD_IN_FLIGHT}_in_flight{suffix}"]
        met = "meets" if case["p99_ms"] <= LOAD_TARGET_P99_MS else "misses"
        tight = (
            case["p99_x_floor"] <= LOAD_TARGET_P99_X_FLOOR
            and case["p99_ms"] <= LOAD_TARGET_P99_MS_TIGHT
            and case["cpu_ms_per_request"] <= LOAD_TARGET_CPU_MS
        )
        lines.append(
            f"{'direct ingress' if path == 'direct' else 'through the proxy'}: "
            f"{case['requests']:,} requests at {LOAD_IN_FLIGHT} in flight in {LOAD_REPEATS} runs, "
            f"{n_items:,} videos: p50 {case['p50_ms']:.1f} ms, p99 {case['p99_ms']:.1f} ms ({met} "
            f"the p99 <= {LOAD_TARGET_P99_MS:.0f} ms target), {case['rps']:.0f} requests/s, "
            f"{case['errors']} errors, {case['cpu_ms_per_request']:.1f} ms of CPU per request. "
            f"The no-op floor in the same run: p50 {floor['p50_ms']:.1f} ms, p99 "
            f"{floor['p99_ms']:.1f} ms, {floor['cpu_ms_per_request']:.2f} ms of CPU; the case is "
            f"{case['p50_x_floor']:.1f}x / {case['p99_x_floor']:.1f}x / "
            f"{case['cpu_x_floor']:.1f}x the floor (p50 / p99 / CPU), "
            f"{'meeting' if tight else 'missing'} issue 18's p99 <= "
            f"{LOAD_TARGET_P99_X_FLOOR:.0f}x floor and <= {LOAD_TARGET_P99_MS_TIGHT:.0f} ms, "
            f"CPU <= {LOAD_TARGET_CPU_MS:.0f} ms."
        )
        print(f"  load test, {lines[-1]}", flush=True)
    three = rows.get(f"http_stages_{LOAD_IN_FLIGHT}_in_flight")
    if three:
        lines.append(
            f'The same API as three deployments (topology "stages": ingress, retriever and '
            f"ranker, two handle calls per batch), direct ingress, same run: p50 "
            f"{three['p50_ms']:.1f} ms, p99 {three['p99_ms']:.1f} ms, {three['rps']:.0f} "
            f"requests/s, {three['cpu_ms_per_request']:.1f} ms of CPU per request: "
            f"{three['p50_x_floor']:.1f}x / {three['p99_x_floor']:.1f}x / "
            f"{three['cpu_x_floor']:.1f}x the floor."
        )
        print(f"  load test: {lines[-1]}", flush=True)
    report.section("Serving load test (HTTP, Ray Serve)", "\n\n".join(lines))
    report.extra["serving_latency_http"] = {
        **{path: runs for path, runs in results.items()},
        "deploy_s": deploy_s,
    }
    report.timing("load_test_s", time.perf_counter() - t0)


def _example_answer(base: str, payload: dict) -> dict:
    """The case's JSON answer to one request (the floor answers a body of this size)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    req = urllib.request.Request(
        f"{base}/recommend",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with opener.open(req, timeout=30) as r:
        return json.loads(r.read())
