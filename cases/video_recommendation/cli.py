"""`casebook run video-recommendation` and `casebook serve video-recommendation`.

    casebook run video-recommendation                                  # simulator, fast preset
    casebook run video-recommendation --data movielens:~/data/ml-latest-small
    casebook serve video-recommendation --port 8000

The run: data (+ the data gate on every log batch, with injected bad batches) -> retrieval
baselines and learned models -> multi-task ranker (+ ONNX parity) -> cohorts -> simulated A/B and
off-policy estimates -> feedback-loop experiment -> artifact, registry, promotion gate -> report.
The simulator-only stages (ranking, A/B, off-policy, feedback loop) are skipped on real data,
which has no impressions or ground truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

PRESETS = ("fast", "full", "tiny", "catalog100k")
SUMMARY = "YouTube-style recommender: retrieval, multi-task ranking, re-ranking, A/B by simulation"
CASE = "video-recommendation"
logger = logging.getLogger("casebook")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-epochs", type=int, default=None, help="SASRec epochs (preset)")
    parser.add_argument("--tower-epochs", type=int, default=None, help="two-tower epochs (preset)")
    parser.add_argument(
        "--skip-loop", action="store_true", help="skip the multi-round feedback-loop experiment"
    )
    parser.add_argument(
        "--load-test",
        action="store_true",
        help="serve the run's model with Ray Serve on 127.0.0.1 and measure HTTP latency "
        "with 8 requests in flight (about a minute more)",
    )


def _cfg(args):
    from .config import get_config

    over = {}
    if getattr(args, "seq_epochs", None) is not None:
        over["seq_epochs"] = args.seq_epochs
    if getattr(args, "tower_epochs", None) is not None:
        over["tower_epochs"] = args.tower_epochs
    return get_config(getattr(args, "preset", None) or PRESETS[0], **over)


def run(args: argparse.Namespace) -> Path:
    import torch

    # One intra-op thread: these models are small, and on a shared 2-core machine a second
    # thread mostly waits (measured: the ranker's tests ran 12x faster with one thread under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> Path:
    from shared.report import RunReport

    from . import evaluate as ev
    from .data import load_data
    from .train import (
        RecencyEASERetriever,
        SASRecRetriever,
        TwoTowerRetriever,
        make_baselines,
        make_split,
    )

    cfg = _cfg(args)
    seed = int(getattr(args, "seed", 0) or 0)
    spec = getattr(args, "data", None) or "builtin"
    out = getattr(args, "out", None)
    if out is None:
        out = Path("runs") / CASE / time.strftime("%Y%m%d-%H%M%S")
    out = Path(out)
    report = RunReport(
        case=CASE, data=spec, preset=getattr(args, "preset", None) or "fast", seed=seed, out_dir=out
    )
    t0 = time.perf_counter()
    data = load_data(spec, cfg, seed)
    report.timing("data_s", time.perf_counter() - t0)
    builtin = data.simulator is not None
    notes = list(data.notes)

    # --- the data gate ---
    if builtin:
        t0 = time.perf_counter()
        data = _gate(data, cfg, report, out, seed)
        report.timing("gate_s", time.perf_counter() - t0)

    # --- retrieval ---
    split = make_split(data, seed)
    test_users = split.test_users
    val_users = split.val_users
    rows, val_rows, tops, models = {}, {}, {}, {}
    candidates = dict(make_baselines(cfg, counts=data.weight_is_count))
    candidates["ease_recency"] = RecencyEASERetriever(cfg, ease=candidates["ease"].model)
    candidates["two_tower"] = TwoTowerRetriever(cfg, data.item_topic, seed)
    candidates["sasrec"] = SASRecRetriever(cfg, seed)
    skipped = {} if data.has_time else dict(ORDERED_MODELS)
    for name in skipped:
        del candidates[name]
    _protocol_section(report, split, data, skipped, seed)
    for name, model in candidates.items():
        t0 = time.perf_counter()
        model.fit(split)
        report.timing(f"fit_{name}_s", time.perf_counter() - t0)
        models[name] = model
        top = ev.rank_users(model, split, test_users, "test", 50)
        tops[name] = top
        rows[name] = ev.retrieval_metrics(top, split.test_item[test_users], split.n_items)
        vtop = ev.rank_users(model, split, val_users, "val", 10)
        val_rows[name] = ev.retrieval_metrics(
            np.pad(vtop, ((0, 0), (0, 40)), constant_values=-1),
            split.val_item[val_users],
            split.n_items,
        )["ndcg@10"]
        rows[name]["val_ndcg@10"] = val_rows[name]
        print(
            f"  {name:18s} ndcg@10 {rows[name]['ndcg@10']:.4f} (val {val_rows[name]:.4f})",
            flush=True,
        )
    # The shipped row is chosen on validation NDCG@10, never on the test numbers.
    production = max(val_rows, key=val_rows.get)
    learned = max(("two_tower", "sasrec"), key=lambda n: val_rows.get(n, -1.0))
    report.production_model = production
    report.table(
        "retrieval",
        rows,
        baseline="popularity",
        note=(
            f"{PROTOCOL_NAMES[split.protocol]} over {len(test_users):,} users, full ranking over "
            f"{split.n_items:,} items, history items excluded. The production row "
            f"(`{production}`) is the best on validation NDCG@10 (`val_ndcg@10`)."
        ),
    )
    if "ease_recency" in models:
        rec = models["ease_recency"]
        report.extra["ease_recency_val_ndcg@10_by_tau"] = {
            str(k): v for k, v in rec.val_ndcg_.items()
        }
        report.section(
            "Sequence-aware EASE: the recency scale picked on validation",
            f"tau = {rec.tau_:g} watches (0 = no decay, plain EASE). Validation NDCG@10 by tau: "
            + ", ".join(f"{k:g}: {v:.4f}" for k, v in rec.val_ndcg_.items())
            + ".",
        )
    if data.weight_is_count:
        report.section(
            "Play counts: binary interactions vs log1p confidence weights",
            "Validation NDCG@10, binary -> log1p(count) / mean: "
            + "; ".join(
                f"{n} {val_rows[n]:.4f} -> {val_rows[n + '_log1p']:.4f}"
                for n in ("item_knn", "ease")
            )
            + f". The better of all rows on validation ships (`{production}`).",
        )
    best_base = max(rows[n]["ndcg@10"] for n in rows if n in BASELINES)
    report.extra["production_vs_best_baseline_ndcg@10"] = rows[production]["ndcg@10"] / max(
        best_base, 1e-12
    )
    cohort = ev.retrieval_cohorts(
        {k: tops[k] for k in dict.fromkeys((production, "ease", "popularity"))},
        split,
        test_users,
        data.simulator.user_cohort if builtin else None,
        cfg.n_boot,
        seed,
    )
    from shared.cohorts import cohort_markdown

    report.cohort("retrieval_ndcg@10", cohort, cohort_markdown(cohort))

    # --- ranking, A/B, off-policy, feedback loop (simulator only) ---
    ranker_onnx = None
    if builtin:
        ranker_onnx = _ranking(data, split, models["two_tower"], cfg, report, out, seed)
    else:
        notes.append("ranking, A/B, off-policy and feedback-loop stages need the simulator")

    # --- artifact, registry, promotion gate ---
    t0 = time.perf_counter()
    art_dir = _save(
        data, split, models, production, learned, cfg, rows, cohort, ranker_onnx, out, spec, seed
    )
    report.timing("artifact_s", time.perf_counter() - t0)
    _register(art_dir, cohort, production, out, report)

    if builtin:
        _online(data, split, models, production, art_dir, cfg, report, seed)
        if not getattr(args, "skip_loop", False):
            t0 = time.perf_counter()
            from .feedback import plot_feedback, run_feedback_loop

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
    _latency(art_dir, report)
    if getattr(args, "load_test", False):
        _load_test(art_dir, report, seed)
    if notes:
        report.section("Data notes", "\n".join(f"- {n}" for n in notes))
    return report.write()


# Models that need an order of watches, skipped on data without timestamps.
ORDERED_MODELS = {
    "recent_popularity": "counts the most recent watches; without timestamps there are none",
    "ease_recency": "weights each watch by how recent it is; without timestamps nothing is",
    "sasrec": "predicts the next watch from the ones before; without timestamps the order "
    "is the file's (Last.fm: artist id), not the viewer's",
}
BASELINES = ("popularity", "recent_popularity", "item_knn", "ease", "item_knn_log1p", "ease_log1p")
PROTOCOL_NAMES = {
    "leave_last_out": "Leave-last-one-out by time",
    "random_leave_one_out": "Seeded random leave-one-out (no timestamps)",
}


def _protocol_section(report, split, data, skipped: dict, seed: int) -> None:
    """Say which split ran and why, and which models were skipped and why."""
    report.extra["protocol"] = split.protocol
    report.extra["skipped_models"] = skipped
    if split.protocol == "leave_last_out":
        why = (
            "The data has timestamps: per user the last watch is the test item and the one "
            "before the validation item, which is what a recommender is asked to predict."
        )
    else:
        why = (
            f"The data has no timestamps, and its row order is not time (HetRec Last.fm is "
            f"sorted by artist id within each user, so the last row is the highest id). Per "
            f"user with 3+ items, one random item is the test item and another the validation "
            f"item (seed {seed}); the rest is the training history, in a random order."
        )
    lines = [f"**{PROTOCOL_NAMES[split.protocol]}** (`{split.protocol}`). {why}"]
    lines += [f"- `{name}` skipped: it {reason}." for name, reason in skipped.items()]
    report.section("Evaluation protocol", "\n".join(lines))


def _gate(data, cfg, report, out: Path, seed: int):
    """Check every daily batch; inject one corrupted copy of a day per failure kind."""
    from shared.gate import build_reference, check_batch, quarantine

    from .data import CORRUPTIONS, corrupt_batch, impressions_to_interactions, split_batches

    schema = _schema(cfg)
    batches = split_batches(data.impressions)
    reference = build_reference(batches[0], schema)
    kept, rows, failures = [], {}, []
    for i, b in enumerate(batches):
        res = check_batch(b, schema, reference)
        if res.passed:
            kept.append(b)
        else:
            quarantine(b, res, out / "quarantine")
            failures.append(f"day {i}: " + "; ".join(c.message for c in res.failed))
    rows["clean_days"] = {
        "batches": len(batches),
        "passed": len(kept),
        "quarantined": len(batches) - len(kept),
    }
    victim = batches[len(batches) // 2]
    for kind in CORRUPTIONS:
        bad = corrupt_batch(victim, kind, seed)
        res = check_batch(bad, schema, reference)
        path = None if res.passed else quarantine(bad, res, out / "quarantine")
        rows[f"injected_{kind}"] = {
            "batches": 1,
            "passed": int(res.passed),
            "quarantined": int(not res.passed),
        }
        failures.append(
            f"injected {kind}: "
            + (
                "PASSED (not caught)"
                if res.passed
                else "; ".join(c.message for c in res.failed) + f" -> {path.name if path else ''}"
            )
        )
    report.table(
        "data_gate",
        rows,
        note="Every daily impression batch is checked before training; "
        "one day is re-injected with each corruption. Only passed batches are trained on.",
    )
    report.section("Data gate: what was quarantined", "\n".join(f"- {f}" for f in failures))
    imp = {c: np.concatenate([b[c] for b in kept]) for c in kept[0]}
    data.impressions = imp
    data.interactions = impressions_to_interactions(imp)
    return data


def _schema(cfg):
    from .data import impression_schema

    return impression_schema(cfg.slate_size)


def _ranking(data, split, tower, cfg, report, out: Path, seed: int) -> bytes:
    """Train the ranker and its ablations on the first 80% of days; evaluate on the rest."""
    import torch

    from shared.onnx_utils import check_parity, export_onnx

    from . import evaluate as ev
    from .data import DAY_S
    from .model import VideoRecRankerServing
    from .train import ranker_features, ranker_logits, serving_score, train_ranker

    t0 = time.perf_counter()
    imp = data.impressions
    cut = int(cfg.n_days * 0.8)
    tr = imp["day"] < cut
    te = ~tr
    item_views = np.bincount(data.interactions["item"], minlength=data.n_items).astype(np.float32)
    t_end = float(cut * DAY_S)
    feats = ranker_features(imp, data, tower, t_end, item_views)
    sub = lambda d, m: {k: v[m] for k, v in d.items()}  # noqa: E731
    f_tr, f_te, i_tr, i_te = sub(feats, tr), sub(feats, te), sub(imp, tr), sub(imp, te)
    n_topics = int(data.item_topic.max()) + 1
    variants = {
        "multitask": {},
        "no_watch_weighting": {"weight_watch": False},
        "no_position_tower": {"use_position": False},
    }
    rows, models = {}, {}
    sim = data.simulator
    for name, kw in variants.items():
        m = train_ranker(f_tr, i_tr, cfg, data.n_items, n_topics, seed, **kw)
        models[name] = m
        logits = ranker_logits(m, f_te, i_te["position"])
        row = ev.ranking_metrics(logits, i_te)
        # Re-order each logged test slate by the serving score (no position input) and ask the
        # simulator what the new order is worth: expected watch minutes per slate.
        row["slate_watch_min"] = _reordered_value(sim, i_te, serving_score(ranker_logits(m, f_te)))
        rows[name] = row
    rows["logged_order"] = {"slate_watch_min": _reordered_value(sim, i_te, -i_te["position"])}
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
    pw = models["multitask"].position.weight.detach().numpy()[:, 0]
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
    report.timing("ranking_s", time.perf_counter() - t0)
    # ONNX export of the serving ranker (no position input, example age 0) + parity.
    serving = VideoRecRankerServing(models["multitask"]).eval()
    n = min(64, len(f_te["item"]))
    ex = (
        torch.from_numpy(f_te["item"][:n]),
        torch.from_numpy(f_te["topic"][:n]),
        torch.from_numpy(f_te["dense"][:n]),
    )
    path = export_onnx(
        serving,
        ex,
        out / "ranker.onnx",
        ["item", "topic", "dense"],
        ["logits"],
        dynamic_axes={
            "item": {0: "batch"},
            "topic": {0: "batch"},
            "dense": {0: "batch"},
            "logits": {0: "batch"},
        },
    )
    diff = check_parity(serving, path, ex, atol=1e-4)
    report.extra["ranker_onnx_max_abs_diff"] = diff
    return path.read_bytes()


def _reordered_value(sim, imp, score) -> float:
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


def _save(
    data, split, models, production, learned, cfg, rows, cohort, ranker_onnx, out, spec, seed
) -> Path:
    import torch

    from shared.artifacts import fingerprint_arrays, save_artifact

    from .data import DAY_S

    it = data.interactions
    t_end = int(it["timestamp"].max())
    tensors = {f"tower.{k}": v for k, v in models["two_tower"].model.state_dict().items()}
    if learned == "sasrec":
        tensors.update({f"sasrec.{k}": v for k, v in models["sasrec"].model.state_dict().items()})
    counts = np.bincount(it["item"], minlength=data.n_items).astype(np.float32)
    recent = models.get("recent_popularity", models["popularity"]).model.counts_
    sim = data.simulator
    if data.item_upload_s is not None:
        age = (t_end - data.item_upload_s) / DAY_S
        fresh = np.argsort(np.where(age >= 0, age, np.inf))[:50]
    else:
        age = np.full(data.n_items, 365.0)
        fresh = np.zeros(0, np.int64)
    log_dur = np.log(sim.item_duration_s) if sim is not None else np.zeros(data.n_items)
    tensors.update(
        {
            "item_topic": torch.from_numpy(data.item_topic.astype(np.int64)),
            "item_age_days": torch.from_numpy(age.astype(np.float32)),
            "item_views": torch.from_numpy(counts),
            "item_log_duration": torch.from_numpy(log_dur.astype(np.float32)),
            "trending": torch.from_numpy(np.argsort(-recent)[:100].astype(np.int64)),
            "fresh": torch.from_numpy(fresh.astype(np.int64)),
        }
    )
    # The item-to-item source: EASE's strongest neighbours per video, with the recency scale of
    # the sequence-aware EASE (0 = none) when an EASE row is the one shipped. Stored only for the
    # videos EASE covers (`ease_max_items`), so a 100K catalog does not carry 100K empty rows.
    recency_tau = None
    if production in ("ease", "ease_recency", "ease_log1p"):
        rec = models.get("ease_recency")
        recency_tau = rec.tau_ if production == "ease_recency" else 0.0
        ease = rec.ease if production == "ease_recency" else models[production].model
        idx, w = ease.neighbours(cfg.i2i_neighbours)  # (I, K)
        rows_i2i = np.flatnonzero((idx >= 0).any(1))
        tensors.update(
            {
                "i2i_rows": torch.from_numpy(rows_i2i.astype(np.int64)),
                "i2i_idx": torch.from_numpy(idx[rows_i2i]),
                "i2i_w": torch.from_numpy(w[rows_i2i]),
            }
        )
    hist = {str(u): s.tolist() for u, s in enumerate(split.seqs_trainval) if len(s)}
    files = {"histories.json": json.dumps(hist).encode()}
    if ranker_onnx is not None:
        files["ranker.onnx"] = ranker_onnx
    config = {
        "case": CASE,
        "data": spec,
        "seed": seed,
        "n_items": data.n_items,
        "n_topics": int(max(data.item_topic.max(), 0)) + 1,
        "item_ids": data.item_ids.tolist() if data.item_ids is not None else None,
        "production_model": production,
        "served_retrievers": ["two_tower"]
        + (["sasrec"] if learned == "sasrec" else [])
        + (["ease"] if recency_tau is not None else []),
        "hparams": {**cfg.to_dict(), "recency_tau": recency_tau},
    }
    metrics = {"retrieval": rows, "cohorts": cohort}
    fp = fingerprint_arrays(it["user"], it["item"], it["timestamp"])
    name = time.strftime("%Y%m%d-%H%M%S")
    return save_artifact(out / "artifacts" / name, tensors, config, metrics, fp, files)


def _register(art_dir: Path, cohort: dict, production: str, out: Path, report) -> None:
    """Register the artifact; promote it if it beats popularity and holds up to the champion."""
    from shared.artifacts import Registry, load_artifact, promotion_gate

    def per_cohort(tab, model):
        key = f"ndcg@10 {model}"
        return {c: v[key]["mean"] for c, v in tab.items() if key in v and v[key]["n"] > 0}

    registry = Registry(out.parent / "registry")
    version = registry.register(art_dir)
    cand = per_cohort(cohort, production)
    base = per_cohort(cohort, "popularity")
    champion = None
    try:
        champ = load_artifact(registry.resolve("champion"))
        prod = champ.config.get("production_model", "")
        champion = per_cohort(champ.metrics.get("cohorts", {}), prod) or None
        if champ.config.get("data") != report.data:
            champion = None  # a champion trained on other data is not comparable
    except Exception:
        champion = None
    decision = promotion_gate(cand, base, champion, tolerance=0.02)
    if decision.promote:
        registry.promote(version.name)
    report.extra["registry"] = {
        "root": str(registry.root),
        "version": version.name,
        "promoted": decision.promote,
        "reasons": decision.reasons,
    }
    report.section(
        "Registry and promotion gate",
        f"Registered `{version.name}` in `{registry.root}`; promoted: **{decision.promote}**.\n\n"
        + "\n".join(f"- {r}" for r in decision.reasons),
    )


def _online(data, split, models, production, art_dir, cfg, report, seed) -> None:
    """Simulated A/B test and off-policy estimates at the end of the logging window."""
    from . import evaluate as ev
    from .predictor import VideoRecPredictor

    t0 = time.perf_counter()
    sim = data.simulator
    rng = np.random.default_rng(seed + 5)
    users = rng.choice(sim.n_users, min(cfg.ab_users, sim.n_users), replace=False)
    day = float(cfg.n_days)
    K = cfg.slate_size
    pred = VideoRecPredictor.load(art_dir)
    X = split.X_trainval

    def funnel(u):
        res = pred.recommend_batch([int(x) for x in u], [None] * len(u), K)
        return np.array([[it["item"] for it in r["items"]][:K] for r in res])

    def retriever_only(name):
        def fn(u):
            return ev.rank_users(models[name], split, u, "test", K)

        return fn

    def logging(u):
        from .data import gumbel_top_k

        p = sim.logging_probs(u, day, exclude=X[u].toarray() > 0)
        return gumbel_top_k(np.log(p + 1e-30), K, np.random.default_rng(seed + 6))

    policies = {
        "production_funnel": funnel,
        f"retrieval_only_{production}": retriever_only(production),
        "popularity": retriever_only("popularity"),
        "logging_policy": logging,
    }
    ab = ev.ab_test(sim, policies, users, day, cfg.n_boot, seed)
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
    ope = ev.off_policy(
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


def _chunked_top1(pred, users: np.ndarray) -> np.ndarray:
    # The production top-1 per distinct user (the funnel is deterministic for a user).
    uniq, inv = np.unique(users, return_inverse=True)
    out = []
    for b in range(0, len(uniq), 256):
        res = pred.recommend_batch(
            [int(x) for x in uniq[b : b + 256]], [None] * len(uniq[b : b + 256]), 1
        )
        out.extend(r["items"][0]["item"] for r in res)
    return np.asarray(out)[inv]


def _latency(art_dir: Path, report) -> None:
    """In-process latency of one /recommend call through the predictor (batch 1)."""
    from shared.bench import time_fn
    from shared.costs import serving_cost

    from .predictor import VideoRecPredictor

    pred = VideoRecPredictor.load(art_dir)
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


# The serving target (README, requirements): /recommend p99 <= 50 ms with 8 requests in flight.
LOAD_IN_FLIGHT = 8
LOAD_TARGET_P99_MS = 50.0
LOAD_REQUESTS, LOAD_SECONDS = 2000, 60.0  # the measured run stops at whichever comes first
LOAD_WARMUP = 200  # requests before measuring: replica start-up, first ONNX and faiss calls


def _load_test(art_dir: Path, report, seed: int = 0) -> None:
    """HTTP latency of POST /recommend through the Ray Serve app, LOAD_IN_FLIGHT in flight.

    Starts Ray (2 CPUs, unless Ray is already running) and Serve on 127.0.0.1, deploys
    `serve.build_app` on this run's registered version, and measures each way in: the ingress
    replica's own HTTP server (direct ingress, what `casebook serve` gives clients) and Serve's
    proxy. Each gets LOAD_WARMUP requests, then a closed loop (`shared.loadgen.closed_loop`)
    over a mix of known users, explicit histories and unknown users. Into a Ray that is already
    running, only the proxy is measured. Serve (and a Ray this started) is shut down afterwards.
    """
    import ray
    from ray import serve

    from shared.artifacts import Registry
    from shared.loadgen import closed_loop
    from shared.serving import free_port, serve_runtime_env, wait_for_http

    from .serve import LOGGING, build_app

    t0 = time.perf_counter()
    reg = report.extra.get("registry")
    root = Registry(reg["root"]).resolve(reg["version"]) if reg else Path(art_dir)
    n_items = json.loads((root / "config.json").read_text())["n_items"]
    payloads = _load_payloads(json.loads((root / "histories.json").read_text()), 512, seed)
    started = not ray.is_initialized()
    port, direct_port = free_port(), None
    while started and direct_port in (None, port):
        direct_port = free_port()
    if started:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env=serve_runtime_env(direct_port),  # Serve's fast path, no usage stats
        )
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=LOGGING)
    paths = {"proxy": port}
    rows, results = {}, {}
    try:
        # Three replicas at 0.5 CPU each fit a 2-CPU Ray with room for Serve's proxy.
        serve.run(
            build_app(str(root), num_cpus=0.5), name=CASE, route_prefix="/", logging_config=LOGGING
        )
        deploy_s = time.perf_counter() - t0
        if direct_port and wait_for_http(f"http://127.0.0.1:{direct_port}/health"):
            paths = {"direct": direct_port, **paths}
        elif direct_port:
            print("  load test: direct ingress did not come up; measuring the proxy only")
        for path, p in paths.items():
            url = f"http://127.0.0.1:{p}/recommend"
            closed_loop(url, payloads, LOAD_IN_FLIGHT, LOAD_WARMUP, 60.0)
            cpu0 = _tree_cpu_s()
            res = closed_loop(url, payloads, LOAD_IN_FLIGHT, LOAD_REQUESTS, LOAD_SECONDS)
            cpu_ms = 1e3 * (_tree_cpu_s() - cpu0) / max(res.n, 1)
            name = f"http_{LOAD_IN_FLIGHT}_in_flight" + ("" if path == "direct" else "_proxy")
            results[path] = (res, cpu_ms)
            rows[name] = {
                "p50_ms": res.p50_ms,
                "p95_ms": res.p95_ms,
                "p99_ms": res.p99_ms,
                "rps": res.rps,
                "requests": res.n,
                "errors": res.errors,
                "catalog_videos": n_items,
                "cpu_ms_per_request": cpu_ms,
            }
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()
    report.table(
        "serving_latency_http",
        rows,
        note=f"POST /recommend through the three deployments on a local Ray (2 CPUs), "
        f"{LOAD_IN_FLIGHT} requests in flight (closed loop), after {LOAD_WARMUP} warm-up "
        "requests; 70% known users, 25% explicit histories, 5% unknown users, k = 10. "
        f"`http_{LOAD_IN_FLIGHT}_in_flight`: to the ingress replica's own HTTP server (Serve's "
        "direct ingress, what `casebook serve` gives clients); `_proxy`: through Serve's proxy "
        "actor. `cpu_ms_per_request`: CPU time of the whole stack (load generator, Ray, "
        "proxy, replicas) per request, which other jobs on the machine do not inflate.",
    )
    lines = []
    for path, (res, cpu_ms) in results.items():
        met = "meets" if res.p99_ms <= LOAD_TARGET_P99_MS else "misses"
        lines.append(
            f"{'direct ingress' if path == 'direct' else 'through the proxy'}: "
            f"{res.n:,} requests at {LOAD_IN_FLIGHT} in flight over {res.wall_s:.0f} s, "
            f"{n_items:,} videos: p50 {res.p50_ms:.1f} ms, p99 {res.p99_ms:.1f} ms ({met} the "
            f"p99 <= {LOAD_TARGET_P99_MS:.0f} ms target), {res.rps:.0f} requests/s, "
            f"{res.errors} errors, {cpu_ms:.1f} ms of CPU per request."
        )
        print(f"  load test, {lines[-1]}", flush=True)
    report.section("Serving load test (HTTP, Ray Serve)", "\n\n".join(lines))
    report.extra["serving_latency_http"] = {
        **{path: res.to_dict() for path, (res, _) in results.items()},
        "deploy_s": deploy_s,
    }
    report.timing("load_test_s", time.perf_counter() - t0)


def _load_payloads(histories: dict, n: int, seed: int) -> list[dict]:
    """n requests: 70% known users, 25% explicit histories (the last 1-50 watches of a known
    user), 5% unknown users (the cold-start list)."""
    rng = np.random.default_rng(seed)
    users = list(histories)
    out = []
    for i in range(n):
        r = rng.random()
        if users and r < 0.70:
            out.append({"user_id": int(users[rng.integers(len(users))]), "k": 10})
        elif users and r < 0.95:
            h = histories[users[rng.integers(len(users))]]
            out.append({"history": h[-int(rng.integers(1, min(len(h), 50) + 1)) :], "k": 10})
        else:
            out.append({"user_id": f"visitor-{i}", "k": 10})
    return out


def _tree_cpu_s() -> float:
    """CPU seconds used so far by this process and its descendants (Ray's processes are), read
    from /proc; NaN where there is no /proc."""
    import os

    proc = Path("/proc")
    if not proc.is_dir():
        return float("nan")
    parent, ticks = {}, {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        f = stat[stat.rfind(")") + 2 :].split()  # fields after "pid (name) "
        parent[int(d.name)] = int(f[1])
        ticks[int(d.name)] = int(f[11]) + int(f[12])  # utime + stime, clock ticks
    tree, frontier = {os.getpid()}, {os.getpid()}
    while frontier:
        kids = {p for p, pp in parent.items() if pp in frontier and p not in tree}
        tree.update(kids)
        frontier = kids
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def serve(artifact: Path | None, host: str, port: int) -> None:
    from shared.errors import CasebookError

    from .serve import build_app

    root = Path(artifact) if artifact else Path("runs") / CASE / "registry"
    if not root.exists():
        raise CasebookError(f"{root} not found: run `casebook run {CASE}` first or pass --artifact")
    from shared.serving import run_app

    run_app(build_app(str(root)), host=host, port=port)
