"""Evaluation: per-policy tables, evaluation-only sets, identity bias, the review queue, the
product metric, error analysis, the human ceiling, and the figures.

Every table goes into metrics.json as `POLICY:TESTSET` with one row per model:
    macro_f1     mean F1 of the violating and the clean class at the model's flag threshold
                 (the validation macro-F1-best one)
    f1           F1 of the violating class at its own validation F1-best threshold (`flag_f1`)
    pr_auc       average precision (threshold-free; the headline for rare policies)
    roc_auc      threshold-free ranking quality
    precision@recall0.9   precision where recall first reaches 0.9
Thresholds always come from validation (train.policy_thresholds); test data never picks one.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from shared.classification import precision_at_recall

from .data import policy_for, severity

# Table rows in this order; `minilm_served` is an alias of the served graph, not a row.
MODEL_ORDER = (
    "rules",
    "tfidf_lr_noaug",
    "tfidf_lr",
    "minilm",
    "minilm_int8",
    "ensemble",
)


def policy_metrics(
    y: np.ndarray,
    s: np.ndarray,
    flag: float,
    seed: int = 0,
    ci: bool = False,
    flag_f1: float | None = None,
) -> dict:
    """The table row for one model on one policy (see the module doc); `f1` is taken at
    `flag_f1` when given (the violating class's own F1-best validation threshold)."""
    y = np.asarray(y).astype(int)
    d = (np.asarray(s) >= flag).astype(int)
    d_f1 = d if flag_f1 is None else (np.asarray(s) >= flag_f1).astype(int)
    row = {
        "macro_f1": float(f1_score(y, d, average="macro", zero_division=0)),
        "f1": float(f1_score(y, d_f1, zero_division=0)),
    }
    both = 0 < y.sum() < len(y)
    row["pr_auc"] = float(average_precision_score(y, s)) if both else float("nan")
    row["roc_auc"] = float(roc_auc_score(y, s)) if both else float("nan")
    row["precision@recall0.9"] = precision_at_recall(y, s, 0.9)[0] if both else float("nan")
    row["flag_rate"] = float(d.mean())
    if ci and len(y) > 1:
        row["macro_f1_low"], row["macro_f1_high"] = macro_f1_interval(y, d, seed)
    return row


def macro_f1_interval(y: np.ndarray, d: np.ndarray, seed: int, n_boot: int = 500) -> tuple:
    """95% percentile-bootstrap interval of the binary macro-F1 of decisions d against y.

    Vectorized: each of n_boot resamples of the examples counts TP, FP, FN, TN at once;
    F1 of a class = 2 TP / (2 TP + FP + FN) (0 when the class is absent and never predicted).
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))  # (B, N)
    yy, dd = y[idx], d[idx]  # (B, N)
    tp = (yy & dd).sum(1)
    fp = ((1 - yy) & dd).sum(1)
    fn = (yy & (1 - dd)).sum(1)
    tn = len(y) - tp - fp - fn
    f_pos = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    f_neg = 2 * tn / np.maximum(2 * tn + fn + fp, 1)
    lo, hi = np.quantile((f_pos + f_neg) / 2, [0.025, 0.975])
    return float(lo), float(hi)


def policy_tables(
    y: np.ndarray, scores: dict[str, np.ndarray], thresholds: dict, policies, seed: int = 0
) -> dict[str, dict[str, dict]]:
    """{policy: {model: row}} for the models in `scores` ((N, P) each), in MODEL_ORDER."""
    out = {}
    names = [m for m in MODEL_ORDER if m in scores] + [m for m in scores if m not in MODEL_ORDER]
    for j, pol in enumerate(policies):
        if y[:, j].sum() == 0:
            continue
        out[pol] = {
            m: policy_metrics(
                y[:, j],
                scores[m][:, j],
                thresholds[m][pol]["flag"],
                seed,
                ci=True,
                flag_f1=thresholds[m][pol].get("flag_f1"),
            )
            for m in names
        }
    return out


def actions(scores: np.ndarray, thresholds: dict, policies) -> np.ndarray:
    """(N,) 2 = remove, 1 = review, 0 = allow, from (N, P) scores and per-policy thresholds."""
    act = np.zeros(len(scores), np.int64)
    for j, p in enumerate(policies):
        act = np.maximum(act, np.where(scores[:, j] >= thresholds[p]["review"], 1, 0))
        act = np.maximum(act, np.where(scores[:, j] >= thresholds[p]["remove"], 2, 0))
    return act


# ----------------------------------------------------------------------------- bias


def bias_rows(
    texts: list[str],
    y: np.ndarray,
    scorers: dict,
    scores: dict[str, np.ndarray],
    thresholds: dict,
    policy: str,
    policies,
    seed: int,
    identities: dict[str, np.ndarray] | None = None,
) -> tuple[dict, dict]:
    """Per model: worst subgroup AUC, BPSN, BNSP, the Jigsaw final bias metric and the
    counterfactual flip rate (swap the identity term, count changed flag decisions).

    identities: {identity: (N,) bool} masks (a file's own identity columns); None: the term
    lists matched in `texts`. Identities with fewer than 5 texts are left out.

    Returns ({model: summary row}, {model: the full bias table}).
    """
    from shared.fairness import (
        bias_table,
        counterfactual_flip_rate,
        final_bias_metric,
        worst_subgroup,
    )

    from .data import identity_masks, swap_identity

    j = policies.index(policy)
    yj = y[:, j]
    given = identity_masks(texts) if identities is None else identities
    masks = {k: m for k, m in given.items() if m.sum() >= 5}
    rng = np.random.default_rng(seed)
    swapped = [(i, swap_identity(t, rng)) for i, t in enumerate(texts)]
    swapped = [(i, s) for i, s in swapped if s is not None]
    rows, tables = {}, {}
    for m, fn in scorers.items():
        s = scores[m][:, j]
        row = {}
        if masks and 0 < yj.sum() < len(yj):
            table = bias_table(yj, s, masks)
            tables[m] = table
            name, worst = worst_subgroup(table)
            row["worst_subgroup_auc"] = worst
            row["worst_subgroup"] = name
            row["worst_bpsn_auc"] = worst_subgroup(table, "bpsn_auc")[1]
            row["worst_bnsp_auc"] = worst_subgroup(table, "bnsp_auc")[1]
            row["final_bias"] = final_bias_metric(float(roc_auc_score(yj, s)), table)
        if swapped:
            idx = np.array([i for i, _ in swapped])
            s_cf = fn([t for _, t in swapped])[:, j]
            flag = thresholds[m][policy]["flag"]
            row["counterfactual_flip_rate"] = counterfactual_flip_rate(s[idx] >= flag, s_cf >= flag)
            row["counterfactual_pairs"] = len(idx)
        rows[m] = row
    return rows, tables


# ----------------------------------------------------------------------------- review queue


def queue_study(
    p: np.ndarray, severity: np.ndarray, reach: np.ndarray, y: np.ndarray, capacity: int, seed: int
) -> dict:
    """The review queue over one simulated day: the items the model sends to review arrive
    uniformly through the day; reviewers work them by priority (severity x reach x P), FIFO or
    score alone, at the same capacity (review.compare_orders)."""
    from .review import compare_orders

    arrival = np.random.default_rng(seed).random(len(p))  # days
    return compare_orders(p, severity, reach, y, capacity, arrival=arrival)


def product_metrics(act: np.ndarray, y_any: np.ndarray, reach: np.ndarray) -> dict:
    """Automatic actions: harmful views prevented by auto-removal (the whole reach of each
    removed violating item), and wrongful removals of benign items per 10K benign items."""
    removed = act == 2
    benign = y_any == 0
    return {
        "auto_removal_rate": float(removed.mean()),
        "review_rate": float((act == 1).mean()),
        "harmful_views_prevented_auto": float(reach[removed & ~benign].sum()),
        "harmful_views_total": float(reach[~benign].sum()),
        "wrongful_removals_per_10k_benign": float(
            1e4 * (removed & benign).sum() / max(benign.sum(), 1)
        ),
    }


# ----------------------------------------------------------------------------- ceiling, errors


def human_level(counts: np.ndarray, seed: int = 0) -> dict:
    """Single-annotator macro-F1 against the majority of the other annotators (Davidson).

    Per tweet, one annotator's vote is drawn at random (weighted by the vote counts) and
    compared with the majority of the remaining votes (tweets with fewer than 3 votes or a tie
    among the rest are skipped). That is how well one careful person agrees with the panel: the
    ceiling a model trained on these labels can be expected to reach.
    """
    rng = np.random.default_rng(seed)
    one, rest = [], []
    for c in counts:
        if c.sum() < 3:
            continue
        k = rng.choice(3, p=c / c.sum())
        r = c.copy()
        r[k] -= 1
        if (r == r.max()).sum() > 1:
            continue
        one.append(k)
        rest.append(int(np.argmax(r)))
    one, rest = np.array(one), np.array(rest)
    out = {"n": len(one)}
    # offensive = hate or offensive (classes 0, 1); hate = class 0
    for name, pos in (("offensive", (0, 1)), ("hate", (0,))):
        a, b = np.isin(one, pos).astype(int), np.isin(rest, pos).astype(int)
        out[name] = {
            "macro_f1": float(f1_score(b, a, average="macro")),
            "f1": float(f1_score(b, a)),
        }
    return out


def worst_errors(texts: list[str], y: np.ndarray, s: np.ndarray, k: int = 5) -> dict:
    """The most confident false positives and false negatives (text, label, score)."""
    fp = np.flatnonzero(y == 0)
    fn = np.flatnonzero(y == 1)
    fp = fp[np.argsort(-s[fp])][:k]
    fn = fn[np.argsort(s[fn])][:k]
    return {
        "false_positives": [(texts[i], float(s[i])) for i in fp],
        "false_negatives": [(texts[i], float(s[i])) for i in fn],
    }


def errors_markdown(errs: dict, policy: str) -> str:
    lines = [
        f"Most confident mistakes on `{policy}` (test split):",
        "",
        "| kind | score | text |",
        "|---|---|---|",
    ]
    for kind, items in errs.items():
        for text, score in items:
            clean = text.replace("|", "/").replace("\n", " ")[:140]
            lines.append(f"| {kind.replace('_', ' ')[:-1]} | {score:.3f} | {clean} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def pr_figure(y: np.ndarray, scores: dict[str, np.ndarray], policy: str, thresholds: dict):
    """Precision-recall curves per model, with the shipped model's remove/review points."""
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve

    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for m, s in scores.items():
        prec, rec, _ = precision_recall_curve(y, s)
        ax.plot(rec, prec, label=m, linewidth=1.2)
    ax.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{policy}: precision-recall on the test split")
    ax.legend(fontsize=7)
    return fig


def sweep_figure(sweep: list[dict], radius: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    r = [p["radius"] for p in sweep]
    ax.plot(r, [p["recall"] for p in sweep], label="recall of edited known-bad copies")
    ax.plot(r, [p["false_match_rate"] for p in sweep], label="false-match rate on benign")
    ax.axvline(radius, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("PDQ Hamming radius (bits of 256)")
    ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- the run report


def _md_rows(rows: dict[str, dict], cols: list[str]) -> str:
    from shared.report import format_number

    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m, r in rows.items():
        lines.append(f"| {m} | " + " | ".join(format_number(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def report_tfidf_paths(report, pred, texts: list[str]) -> None:
    """The served TF-IDF has two paths (`ModerationTfidf.logits`): per text for a request of up
    to 32 texts, scikit-learn's sparse matrix above. The table above scores the test set in one
    batch (the matrix path); this checks the per-text path a request takes gives the same
    log-odds on the same test texts, and says by how much they differ."""
    if pred.tfidf is None or not texts:
        return
    whole = pred.tfidf.logits(texts)  # (N, P) matrix path when N > 32
    per_request = np.concatenate(
        [pred.tfidf.logits(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    )  # (N, P): the path a served request of <= 32 texts takes
    diff = float(np.max(np.abs(whole - per_request)))
    report.section(
        "The served TF-IDF paths",
        f"On the {len(texts):,} test texts, the per-request path (batches of 32) and the "
        f"sparse-matrix path give log-odds that differ by at most {diff:.2g} "
        f"({'the same to float32 rounding' if diff < 1e-4 else 'MORE than float32 rounding'}).",
    )
    report.extra["tfidf_path_max_abs_diff"] = diff


def report_run(report, cfg, data, fit: dict, pred, image, ads, evals, seed: int, log=print) -> dict:
    """Fill the run report: every table, cohort and figure. Returns the headline numbers
    (the shipped model's test macro-F1 per policy, for the registry)."""
    pols = data.policies
    te_t, y_te = data.subset("test")
    prod = fit["production"]
    # The shipped model is measured through the predictor on the saved artifact: the code path
    # the server runs, so the table is what is served (no train/serve skew).
    served = pred.score_texts(te_t)
    scores = {m: s["test"] for m, s in fit["scores"].items() if m != "minilm_served"}
    scores[prod] = served
    th = dict(fit["thresholds"])
    th[prod] = fit["thresholds"][fit["production_scores"]]
    tables = policy_tables(y_te, scores, th, pols, seed)
    for pol, rows in tables.items():
        report.table(
            f"{pol}:{data.test_name}",
            rows,
            baseline="rules",
            note=f"{len(te_t)} test texts ({int(y_te[:, pols.index(pol)].sum())} violating); "
            f"thresholds from validation; shipped: `{prod}` (scored from the artifact). "
            "macro_f1_low/high: 95% bootstrap interval.",
        )
    headline = {pol: rows[prod]["macro_f1"] for pol, rows in tables.items()}
    baseline = {pol: rows["rules"]["macro_f1"] for pol, rows in tables.items()}
    report_tfidf_paths(report, pred, te_t)

    # --- actions and the product metric ---
    act = actions(served, th[prod], pols)
    y_any = y_te.max(1)
    reach = data.reach[data.split["test"]]
    sev = np.array(
        [max([severity(p) for p, v in zip(pols, row, strict=True) if v] or [1.0]) for row in y_te]
    )
    capacity = int(cfg.reviewer_items_per_hour * cfg.reviewer_hours)
    product = product_metrics(act, y_any, reach)
    queued = act == 1
    q = queue_study(
        served.max(1)[queued], sev[queued], reach[queued], y_any[queued], capacity, seed
    )
    product["reviewer_hours_per_day"] = cfg.reviewer_hours
    for order in ("priority", "fifo"):
        product[f"review_views_prevented_{order}"] = q[order]["harmful_views_prevented"]
    product["harmful_views_prevented_per_reviewer_hour"] = q["priority"][
        "harmful_views_prevented_per_reviewer_hour"
    ]
    from .review import queue_markdown

    report.cohort(
        "review_queue",
        {o: {k: v for k, v in r.items() if k != "daily"} for o, r in q.items()},
        markdown=f"{int(queued.sum())} test items sent to review arrive over one simulated day; "
        f"capacity {capacity} decisions ({cfg.reviewer_hours:g} h at "
        f"{cfg.reviewer_items_per_hour}/h).\n\n" + queue_markdown(q),
    )
    report.table(
        "product:" + data.test_name,
        {prod: product},
        note="Actions of the shipped model on the test split; views are simulated "
        "(log-normal reach, median 100) for every data source.",
    )

    # --- bias: every model, the first policy (offensive where present) ---
    bias_policy = "offensive" if "offensive" in pols else pols[0]
    te_scores = {m: scores[m] for m in fit["scorers"]}
    ident = data.identities(data.split["test"])
    rows, full = bias_rows(
        te_t, y_te, fit["scorers"], te_scores, th, bias_policy, pols, seed, identities=ident
    )
    report.table(
        f"bias:{bias_policy}:{data.test_name}",
        rows,
        note=(
            "Worst identity subgroup AUC, BPSN, BNSP (Borkan et al. 2019), the Jigsaw final bias "
            "metric and the counterfactual flip rate (identity term swapped; flag decisions). "
            f"Identity-term augmentation: {fit['info'].get('augmentation', 'not tried')}."
        ),
    )
    if prod in full:
        from shared.fairness import bias_markdown

        report.cohort(
            f"identity:{data.test_name}",
            full,
            markdown=(
                f"Per-identity AUCs of the shipped model `{prod}` on `{bias_policy}`:\n\n"
                + bias_markdown(full[prod])
            ),
        )

    # --- evaluation-only sets ---
    for ev in evals:
        _eval_set(report, ev, fit, th, pols, seed)

    # --- images, hashes, ads ---
    if image is not None:
        img_rows = {
            "image_cnn": policy_metrics(
                image["labels"]["test"],
                image["scores"]["test"],
                image["thresholds"]["image"]["flag"],
                seed,
            )
        }
        report.table("image:rendered", img_rows, note="Rendered images (generated data).")
        m = image["matching"]
        report.section(
            "Known-bad matching (PDQ, generated images)",
            (
                f"radius {m['radius']} of 256 bits (the best recall at a false-match rate <= "
                f"{cfg.max_false_match_rate:g} on one benign set, measured on another): recall "
                + ", ".join(f"{k} {v:.3f}" for k, v in m["recall"].items())
                + f"; false matches {m['false_matches']} of {m['n_benign']} benign images "
                f"(rate {m['false_match_rate']:.4f}, 95% interval {m['false_match_ci'][0]:.4f}-"
                f"{m['false_match_ci'][1]:.4f})."
            ),
        )
        report.extra["hash_matching"] = m
        report.figure(
            sweep_figure(m["sweep"], m["radius"]),
            "hash_sweep.png",
            "Known-bad matching: recall and false-match rate against the radius",
        )
    if ads is not None:
        t = ads["test"]
        rows = {
            "text_only": policy_metrics(t["y"], t["text"].max(1), ads["th_text"], seed),
            "image_only": policy_metrics(t["y"], t["image"], ads["th_image"], seed),
            "late_fusion": policy_metrics(t["y"], t["fused"], ads["th_fused"], seed),
        }
        report.table(
            "ad:builtin-ads",
            rows,
            baseline="text_only",
            note=f"{len(t['y'])} test ads (title + body + image); violating = any text "
            "policy or the image policy. Generated data.",
        )

    # --- error analysis and figures ---
    j = pols.index(bias_policy)
    report.section(
        "Error analysis", errors_markdown(worst_errors(te_t, y_te[:, j], served[:, j]), bias_policy)
    )
    report.figure(
        pr_figure(y_te[:, j], {m: scores[m][:, j] for m in scores}, bias_policy, th[prod]),
        f"pr_{bias_policy}.png",
        f"Precision-recall on {bias_policy}, every model",
    )
    if data.annotator_counts is not None:
        hl = human_level(data.annotator_counts[data.split["test"]], seed)
        report.extra["human_level"] = hl
        report.section(
            "Human level (Davidson annotator counts)",
            (
                f"One annotator against the majority of the others, {hl['n']} test tweets: "
                + ", ".join(f"{p} macro-F1 {v['macro_f1']:.3f}" for p, v in hl.items() if p != "n")
            ),
        )
    return {"headline": headline, "baseline": baseline}


def _eval_set(report, ev, fit: dict, th: dict, pols, seed: int) -> None:
    """One evaluation-only set: every model's row; HateCheck per functionality; pairs' flips."""
    pol = policy_for(ev.policy, pols)
    j = pols.index(pol)
    rows, decisions = {}, {}
    for m, fn in fit["scorers"].items():
        s = fn(ev.texts)[:, j]
        rows[m] = policy_metrics(ev.labels, s, th[m][pol]["flag"], seed, ci=True)
        decisions[m] = s >= th[m][pol]["flag"]
        if ev.pair_texts is not None:
            s2 = fn(ev.pair_texts)[:, j]
            rows[m]["flip_rate"] = float(np.mean(decisions[m] != (s2 >= th[m][pol]["flag"])))
    note = f"{len(ev.texts)} texts, evaluation only (never trained on), scored as `{pol}`."
    if pol != ev.policy:
        note += f" The training data has no `{ev.policy}` policy; `{pol}` stands in."
    if ev.log is not None and ev.log.total_skipped:
        note += (
            " Skipped rows: "
            + "; ".join(
                f"{r} {n} (first at line {ev.log.skipped[r][0]})"
                for r, n in ev.log.n_skipped.items()
            )
            + "."
        )
    report.table(f"{ev.policy}:{ev.name}", rows, baseline="rules", note=note)
    if ev.functionality is not None and len(set(ev.functionality)) > 1:
        prod = fit["production"] if fit["production"] in decisions else "tfidf_lr"
        d = decisions[prod]
        acc = {}
        for f in sorted(set(ev.functionality)):
            mask = ev.functionality == f
            acc[f] = {"n": int(mask.sum()), "accuracy": float(np.mean(d[mask] == ev.labels[mask]))}
        report.cohort(
            f"{ev.name}:functionality",
            acc,
            markdown=(
                f"Accuracy of `{prod}` per HateCheck functionality:\n\n"
                + "\n".join(f"- {f}: {v['accuracy']:.3f} (n={v['n']})" for f, v in acc.items())
            ),
        )


# ----------------------------------------------------------------------------- serving load

LOAD_IN_FLIGHT = 8  # the target: p99 <= 50 ms at 8 requests in flight, text only
LOAD_TARGET_P99_MS = 50.0


def predictor_latency(pred, texts: list[str], batch: int = 8, reps: int = 50) -> dict:
    """In-process latency of `moderate_batch` on batches of `batch` texts (ms): the model's
    share of a request, without HTTP or Ray."""
    import time

    reqs = [{"text": t, "kind": "post"} for t in texts]
    pred.moderate_batch(reqs[:batch])  # warm-up
    times = []
    for r in range(reps):
        chunk = [reqs[(r * batch + k) % len(reqs)] for k in range(batch)]
        t0 = time.perf_counter()
        pred.moderate_batch(chunk)
        times.append(1e3 * (time.perf_counter() - t0))
    return {f"batch{batch}_p50_ms": float(np.median(times)),
            f"batch{batch}_p99_ms": float(np.percentile(times, 99))}  # fmt: skip


LOAD_REPEATS = 3  # runs of the app and of the no-op floor, alternated (issue 18)
LOAD_WARMUP = 50


def load_test(root, texts: list[str], report, requests: int = 600, seconds: float = 20.0) -> dict:
    """POST /moderate through Ray Serve on 127.0.0.1 beside the no-op floor, alternated in one
    run (`shared.floor.load_test_with_floor`: direct ingress, LOAD_IN_FLIGHT in flight,
    LOAD_REPEATS runs of up to `requests` requests or `seconds` each for the app and for the
    floor, the same request bodies, the floor answering a body of the app's answer size),
    text only. Returns the app's row (medians over the runs, multiples of the floor)."""
    import time

    from shared.floor import describe_against_floor, load_test_with_floor

    from .serve import build_app

    payloads = [{"text": t[:2000] or "empty", "kind": "post"} for t in texts[:512]]
    t0 = time.perf_counter()
    result = load_test_with_floor(
        build_app(str(root), num_cpus=1.0),
        {"/moderate": payloads},
        name="content-moderation",
        in_flight=LOAD_IN_FLIGHT,
        requests=requests,
        seconds=seconds,
        repeats=LOAD_REPEATS,
        warmup=LOAD_WARMUP,
    )
    row = result["rows"]["/moderate"]
    met = "meets" if row["p99_ms"] <= LOAD_TARGET_P99_MS else "misses"
    line = describe_against_floor("/moderate", result)
    print(f"  load test {line}", flush=True)
    report.table(
        "serving_latency_http",
        result["rows"],
        note=f"POST /moderate, text only, {LOAD_IN_FLIGHT} in flight (closed loop), one replica "
        f"(1 CPU) on a local Ray (2 CPUs), after {LOAD_WARMUP} warm-up requests; medians over "
        f"{LOAD_REPEATS} runs of up to {requests} requests, the app and the no-op floor "
        "(`shared.floor`: the same ingress, request bodies and answer size, no model) "
        f"alternated, {result['path']} ingress; {met} the p99 <= {LOAD_TARGET_P99_MS:.0f} ms "
        "target. `*_x_floor`: the app over the floor, median of the per-run ratios (range "
        "beside); `cpu_ms_per_request`: the whole stack's CPU per request. Measured in "
        f"{time.perf_counter() - t0:.0f} s; on a machine shared with other jobs the absolute "
        "figures swing from run to run, the multiples much less.",
    )
    report.section("Serving load test (HTTP, Ray Serve, against the no-op floor)", line)
    report.extra["serving_latency_http"] = result
    return row
