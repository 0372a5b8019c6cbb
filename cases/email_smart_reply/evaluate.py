"""Offline evaluation: the 1-of-100 protocol, the response set's recall@3, the trigger, cohorts.

1-of-100 (Henderson et al. 2019, the conversational-datasets benchmark): each test message is
scored against its true reply and 99 replies drawn at random (seeded) from OTHER test pairs, over
at most 2,000 test pairs; accuracy = share of messages whose true reply scores highest; MRR = mean
of 1 / rank of the true reply. Ties are broken at random in expectation: with h candidates
strictly above the true reply and t tied with it, the hit counts 1 / (t + 1) if h = 0, and the
reciprocal rank is the mean of 1 / (h + 1 + j) for j = 0..t. (A constant scorer gets 1 / 100.)

recall@3 of the response set (the product view): the three suggestions the served system shows
(`predictor.choose_suggestions`: shortlist by score, diverse three) contain the true reply's
normalised text. Reported over all test pairs and over the pairs whose reply is in the set.
"""

from __future__ import annotations

import numpy as np

from shared.classification import pr_auc, roc_auc


def candidate_table(
    n: int, n_candidates: int = 100, max_pairs: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (P,) of the test pairs scored and their candidates (P, C), true reply in column 0.

    P = min(n, max_pairs) rows drawn without replacement; each row's C - 1 distractors are
    distinct other test pairs (C = min(n_candidates, n)).
    """
    if n < 2:
        raise ValueError(f"1-of-100 needs at least 2 test pairs, got {n}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max_pairs), replace=False))
    c = min(n_candidates, n)
    cands = np.empty((len(rows), c), dtype=np.int64)
    for k, i in enumerate(rows):
        others = rng.choice(n - 1, size=c - 1, replace=False)
        cands[k, 0] = i
        cands[k, 1:] = others + (others >= i)  # skip i itself
    return rows, cands


def rank_metrics(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, C) scores, true reply in column 0 -> per-row (hit (P,), reciprocal rank (P,)), both
    expectations under random tie-breaking (module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    true = s[:, :1]
    higher = (s[:, 1:] > true).sum(1)  # (P,)
    ties = (s[:, 1:] == true).sum(1)  # (P,)
    hit = np.where(higher == 0, 1.0 / (ties + 1), 0.0)
    rr = np.array(
        [np.mean(1.0 / (h + 1 + np.arange(t + 1))) for h, t in zip(higher, ties, strict=True)]
    )
    return hit, rr


def one_of_100(score_matrix, messages, replies, rows, cands) -> dict[str, np.ndarray]:
    """Score each row's message against its candidates with `score_matrix(messages, replies)`
    -> (N, R); return per-row "hit", "rr" and the (P, C) "scores"."""
    pool = np.unique(cands)  # the replies any row needs, scored once
    where = np.searchsorted(pool, cands)  # (P, C) column of each candidate in the pool
    full = score_matrix([messages[i] for i in rows], [replies[j] for j in pool])  # (P, |pool|)
    s = np.take_along_axis(np.asarray(full), where, axis=1)  # (P, C)
    hit, rr = rank_metrics(s)
    return {"hit": hit, "rr": rr, "scores": s}


def summary(res: dict[str, np.ndarray]) -> dict[str, float]:
    return {"1_of_100": float(res["hit"].mean()), "mrr": float(res["rr"].mean())}


def response_set_metrics(suggested: list[list[int]], true_index: np.ndarray, emb: np.ndarray):
    """recall@3 and diversity of the suggestions shown.

    suggested: per test message, indices into the response set (at most 3); true_index: (N,)
    index of the true reply's normalised text in the set, -1 if absent; emb: (R, D) unit
    reply embeddings. Returns (row dict, per-message hit array (N,)).
    """
    from .responses import diversity

    hit = np.array([t >= 0 and t in s for s, t in zip(suggested, true_index, strict=True)], float)
    covered = true_index >= 0
    div = [diversity(emb[s]) for s in suggested if len(s) >= 2]
    row = {
        "recall@3": float(hit.mean()),
        "recall@3_in_set": float(hit[covered].mean()) if covered.any() else float("nan"),
        "coverage": float(covered.mean()),
        "diversity": float(np.mean(div)) if div else float("nan"),
        "shown": float(np.mean([len(s) for s in suggested])),
    }
    return row, hit


def trigger_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, dict]:
    """The trigger against "suggest for every message": precision, recall, F1, share shown."""
    y = np.asarray(y, dtype=bool)
    rows = {}
    for name, on in (("suggest_always", np.ones(len(y), bool)), ("trigger", p >= threshold)):
        tp = float((on & y).sum())
        prec = tp / max(on.sum(), 1)
        rec = tp / max(y.sum(), 1)
        rows[name] = {
            "precision": prec,
            "recall": rec,
            "f1": 2 * prec * rec / max(prec + rec, 1e-12),
            "share_triggered": float(on.mean()),
        }
    rows["trigger"]["roc_auc"] = roc_auc(y, p) if 0 < y.sum() < len(y) else float("nan")
    rows["trigger"]["pr_auc"] = pr_auc(y, p) if 0 < y.sum() < len(y) else float("nan")
    rows["trigger"]["threshold"] = float(threshold)
    return rows


def cohort_masks(messages: list[str], intents: list[str] | None = None) -> dict[str, np.ndarray]:
    """Message length (words), question vs statement, and intent where known."""
    words = np.array([len(m.split()) for m in messages])
    question = np.array(["?" in m for m in messages])
    masks = {
        "all": np.ones(len(messages), bool),
        "short (<= 6 words)": words <= 6,
        "medium (7-15 words)": (words > 6) & (words <= 15),
        "long (> 15 words)": words > 15,
        "question": question,
        "statement": ~question,
    }
    if intents is not None and any(i != "unknown" for i in intents):
        for name in sorted(set(intents)):
            masks[f"intent: {name}"] = np.array([i == name for i in intents])
    return masks


def error_examples(res, messages, replies, rows, cands, k: int = 6) -> str:
    """A Markdown table of misses: the message, its true reply, and the model's top candidate."""
    miss = np.flatnonzero(res["hit"] < 1)[:k]
    lines = ["| message | true reply | model's choice |", "|---|---|---|"]
    cut = lambda t: t if len(t) <= 90 else t[:87] + "..."  # noqa: E731
    for j in miss:
        top = cands[j, int(np.argmax(res["scores"][j]))]
        row = [messages[rows[j]], replies[rows[j]], replies[top]]
        lines.append("| " + " | ".join(cut(x).replace("|", "/") for x in row) + " |")
    return "\n".join(lines)


def plot_curves(histories: dict[str, list[tuple[float, float]]]):
    """Validation 1-of-100 against training seconds, one line per model / batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, h in histories.items():
        if h:
            t, v = zip(*h, strict=True)
            ax.plot(t, v, marker="o", label=name)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation 1-of-100")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_diversity(rows: dict[str, dict]):
    """recall@3 and diversity of the three suggestions, with and without the diversity rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    names = list(rows)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [rows[n]["recall@3"] for n in names], 0.4, label="recall@3")
    ax.bar(x + 0.2, [rows[n]["diversity"] for n in names], 0.4, label="diversity")
    ax.set_xticks(x, names, fontsize=8)
    ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------- the whole run


def report_data(inputs, report) -> None:
    """The data gate's table and the Data section (`data.prepare`)."""
    report.table(
        "data_gate",
        inputs.gate_rows,
        note="Every input is checked in file-order batches, each against the rest of the data "
        "(schema: empty, binary, oversized texts; duplicates; shift) before training; refused "
        "batches are quarantined.",
    )
    report.section("Data", inputs.markdown)


def evaluate_run(models, shipped, test, cfg, seed: int, report, testset: str) -> dict:
    """Every table of the report on the test pairs. The `served` rows come from the saved
    artifact (`shipped.artifact`) through `SmartReplyPredictor`'s own batch path; the others
    from the trained models. Returns {"table": reply_selection rows, "served": the served
    row, "masks": cohort masks}."""
    from .predictor import SmartReplyPredictor

    pred = SmartReplyPredictor.load(shipped.artifact)
    rows, cands = candidate_table(len(test), cfg.n_candidates, cfg.max_eval_pairs, seed)
    # What the scorers read: each message with its earlier turns (cfg.context_turns).
    test_in = test.model_messages(cfg.context_turns)
    requests = suggest_requests(test, rows)
    table, results = score_scorers(models, test_in, test.replies, rows, cands)
    table.update(score_onnx_towers(models, shipped, test_in, test.replies, rows, cands, cfg))
    results["served"] = one_of_100(served_score_matrix(pred), requests, test.replies, rows, cands)
    table["served"] = {
        **summary(results["served"]),
        "val_1_of_100": shipped.onnx_val[shipped.precision],
    }
    table.update(score_seq2seq(models, test, rows, cands, cfg))
    for name in table:
        table[name].setdefault("pairs", len(rows))
    report_reply_selection(report, table, models, shipped, rows, cands, cfg, seed, testset)
    hit3 = report_response_set(report, pred, models, test, rows, requests, cfg, testset)
    report_trigger(report, models, test, cfg)
    report.table(
        "scoring_cost",
        scoring_cost(models, [test_in[i] for i in rows][:20], shipped.onnx[shipped.precision], cfg),
        baseline="dual_encoder_onnx",
        note="One suggestion = one incoming message scored against the whole response "
        "set (R replies), one message at a time, one thread, under the shared machine's "
        "load. The dual encoder embeds the message once (ONNX) and takes R dot products "
        "against precomputed reply vectors; the seq2seq decoder reads all R replies "
        "with a full-vocabulary softmax per word (Kannan et al. 2016). FLOPs analytic.",
    )
    report_compose(report, models, test, rows, cfg)
    masks = report_cohorts(report, results["served"], hit3, test, rows, cands, cfg, seed)
    report.figure(
        plot_curves({n: f["history"] for n, f in models.fits.items()}),
        "validation_curves.png",
        "Validation 1-of-100 during training",
    )
    return {"table": table, "served": table["served"], "masks": masks}


def suggest_requests(test, rows: np.ndarray) -> list[dict]:
    """The /suggest bodies of the test messages at `rows`: the message and its earlier turns."""
    ctx = test.contexts or [()] * len(test)
    return [{"message": test.messages[i], "context": list(ctx[i]), "k": 3} for i in rows]


def served_score_matrix(pred):
    """score_matrix for the served artifact: its ONNX message tower on /suggest bodies against
    its ONNX reply tower, both through the predictor."""

    def score(requests: list[dict], replies: list[str]) -> np.ndarray:
        return pred.embed_requests(requests) @ pred.embed_replies(replies).T  # (N, R)

    return score


def score_scorers(models, test_in, replies, rows, cands) -> tuple[dict, dict]:
    """1-of-100 of every trained scorer (torch and the baselines): (table rows, per-row results)."""
    import time

    table, results = {}, {}
    for name, scorer in models.scorers.items():
        t0 = time.perf_counter()
        res = one_of_100(scorer.score_matrix, test_in, replies, rows, cands)
        results[name] = res
        table[name] = {
            **summary(res),
            "val_1_of_100": models.val_1of100.get(name, float("nan")),
            "score_s": time.perf_counter() - t0,
        }
    return table, results


def score_onnx_towers(models, shipped, test_in, replies, rows, cands, cfg) -> dict:
    """The exported message towers (fp32 and int8) against the production torch reply tower:
    the precision study behind `shipped.precision`."""
    from shared.onnx_utils import make_session

    from .predictor import encode_texts

    r_test = models.scorers[models.production].embed(replies, "reply")  # (N, D)
    out = {}
    for kind, path in shipped.onnx.items():
        sess = make_session(path, threads=1)
        m = []
        for s in range(0, len(rows), 64):
            texts = [test_in[i] for i in rows[s : s + 64]]
            ids, mask = encode_texts(models.tokenizer, texts, cfg.max_len)
            m.append(sess.run(None, {"input_ids": ids, "attention_mask": mask})[0])
        hit, rr = rank_metrics(np.einsum("pd,pcd->pc", np.concatenate(m), r_test[cands]))
        out[f"{models.production}_onnx_{kind}"] = {
            "1_of_100": float(hit.mean()),
            "mrr": float(rr.mean()),
            "val_1_of_100": shipped.onnx_val[kind],
        }
    return out


def score_seq2seq(models, test, rows, cands, cfg) -> dict:
    """The LSTM seq2seq's row: 100 teacher-forced replies per message, per decoded token."""
    import time

    if models.seq2seq is None:
        return {}
    n = min(cfg.seq2seq_eval_pairs, len(rows))
    t0 = time.perf_counter()
    s = models.seq2seq.score_candidates(
        [test.messages[i] for i in rows[:n]],
        [[test.replies[j] for j in c] for c in cands[:n]],
    )
    # Raw log P(reply | message) ranks short replies first whatever the message (measured on
    # DailyDialog: 1-of-100 0.003, below chance); per decoded token it compares lengths fairly.
    from .compose import MAX_REPLY_WORDS, tokenize

    steps = [
        [min(len(tokenize(test.replies[j])), MAX_REPLY_WORDS) + 1 for j in c] for c in cands[:n]
    ]
    hit, rr = rank_metrics(s / np.asarray(steps, dtype=np.float32))
    return {
        "lstm_seq2seq": {
            "1_of_100": float(hit.mean()),
            "mrr": float(rr.mean()),
            "score_s": time.perf_counter() - t0,
            "pairs": n,
        }
    }


def report_reply_selection(report, table, models, shipped, rows, cands, cfg, seed, testset):
    report.table(
        f"reply_selection:{testset}",
        table,
        baseline="bm25",
        note=f"1-of-{cands.shape[1]} over {len(rows):,} test pairs (Henderson et al. 2019; "
        f"distractors: random replies of other test pairs, seed {seed}). `val_1_of_100` is on "
        f"validation; the production model (`{models.production}`) is the best encoder there, "
        "or the scratch encoder when the best is within noise of it (`train.choose_production`). "
        f"The `_onnx_` rows are the exported message towers against the torch reply tower; "
        f"`{shipped.precision}` is shipped (int8 only when its validation 1-of-100 is within "
        f"{cfg.int8_max_drop:g} of fp32). `served` is the saved artifact scored through "
        "`SmartReplyPredictor` (its message tower on the /suggest bodies, its ONNX reply tower "
        "on the candidates): the figure promotion compares.",
    )


def report_response_set(report, pred, models, test, rows, requests, cfg, testset) -> np.ndarray:
    """recall@3 of the three suggestions the artifact shows (`pred.pick_batch`, the trigger
    aside), of the plain top three by cosine and of the three most frequent replies; returns
    the shown suggestions' per-message hits (N,)."""
    true_index = np.array([models.responses.index_of(test.replies[i]) for i in rows])
    emb = pred.reply_emb
    shown, _, _ = pred.pick_batch(requests)
    rs_rows = {}
    rs_rows["diverse_top3"], hit3 = response_set_metrics(shown, true_index, emb)
    plain = [list(np.argsort(-s)[:3]) for s in pred.embed_requests(requests) @ emb.T]
    rs_rows["plain_top3"], _ = response_set_metrics(plain, true_index, emb)
    freq = list(np.argsort(-models.responses.n_threads, kind="stable")[:3])
    rs_rows["most_frequent_top3"], _ = response_set_metrics([freq] * len(shown), true_index, emb)
    report.table(
        f"response_set:{testset}",
        rs_rows,
        baseline="most_frequent_top3",
        note=f"{len(models.responses):,} replies, each used by >= {cfg.k_anon} distinct training "
        f"threads (k-anonymity), in {len(set(models.clusters.tolist()))} clusters. recall@3: "
        "the true reply's normalised text is among the three shown; `coverage`: the share of "
        "test replies in the set at all; diversity: 1 - mean pairwise cosine of the three. "
        "Scored on the saved artifact through `SmartReplyPredictor.pick_batch` (what /suggest "
        "shows when the trigger fires).",
    )
    report.figure(
        plot_diversity(rs_rows), "diversity.png", "recall@3 and diversity of the three suggestions"
    )
    return hit3


def report_trigger(report, models, test, cfg) -> None:
    from .data import trigger_labels

    texts, y = trigger_labels(test, cfg)
    report.table(
        "trigger",
        trigger_metrics(y, models.trigger.proba(texts), models.trigger.threshold),
        baseline="suggest_always",
        note="Positive: the message got a short reply (<= "
        f"{cfg.short_reply_words} words) a suggestion could stand in for; messages "
        "with long or no replies are negatives. Threshold: best F0.5 on validation.",
    )


def report_compose(report, models, test, rows, cfg) -> None:
    from .compose import evaluate_compose

    cpairs = [(test.messages[i], test.replies[i]) for i in rows[: cfg.compose_eval_pairs]]
    report.table(
        "compose",
        {
            f"{models.compose.kind}_compose": evaluate_compose(
                models.compose, cpairs, max_keystroke_pairs=200
            )
        },
        note=f"{len(cpairs):,} test pairs: exact match of the next 1-3 words at word "
        "boundaries, keystrokes saved with Tab to accept (200 pairs), ms per keystroke "
        "(in process). The shipped kind was picked on held-out training pairs by next-word "
        f"exact match: {getattr(models.compose, 'selection', {})}.",
    )


def report_cohorts(report, served, hit3, test, rows, cands, cfg, seed: int) -> dict:
    """Cohorts and error analysis of the served artifact; returns the cohort masks."""
    from shared.cohorts import cohort_markdown, cohort_table

    msgs = [test.messages[i] for i in rows]
    masks = cohort_masks(msgs, [test.intents[i] for i in rows])
    cohorts = cohort_table(
        {"1_of_100": served["hit"], "mrr": served["rr"], "recall@3": hit3}, masks, cfg.n_boot, seed
    )
    report.cohort("reply_selection", cohorts, cohort_markdown(cohorts))
    report.section(
        "Error analysis: misses of the served model",
        error_examples(served, test.messages, test.replies, rows, cands),
    )
    return masks


def report_training(models, report) -> None:
    """The batch-size study: each encoder's batch, best validation 1-of-100, steps, seconds."""
    rows = {}
    for name, f in models.fits.items():
        rows[name] = {
            "batch_size": f["batch_size"],
            "val_1_of_100": f["best"],
            "steps": f["steps"],
            "seconds": f["seconds"],
        }
    report.table(
        "training",
        rows,
        note="In-batch softmax: each message's negatives are the "
        "other B - 1 replies of its batch. Validation 1-of-100 at the best checkpoint.",
    )


def print_summary(table: dict) -> None:
    for name, r in table.items():
        print(f"  {name}: 1-of-100 {r['1_of_100']:.3f}", flush=True)


def scoring_cost(models, messages: list[str], onnx_path, cfg) -> dict[str, dict]:
    """ms and FLOPs per suggestion for the served dual encoder and (if trained) the seq2seq."""
    import time

    from shared.onnx_utils import make_session

    from .predictor import choose_suggestions, encode_texts

    sess = make_session(onnx_path, threads=1)
    r = len(models.responses)
    times, tokens = [], []
    for m in [messages[0]] + messages:  # the first call warms up
        t0 = time.perf_counter()
        ids, mask = encode_texts(models.tokenizer, [m], cfg.max_len)
        e = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        choose_suggestions(e[0] @ models.reply_emb.T, models.clusters, models.polarities, 3, 20)
        times.append((time.perf_counter() - t0) * 1e3)
        tokens.append(ids.shape[1])
    model = models.inputs[models.production].model
    dense = sum(
        p.numel() for n, p in model.named_parameters() if "embed" not in n and "reply" not in n
    )  # noqa: E501
    flops = 2 * dense * float(np.mean(tokens[1:])) + 2 * r * models.reply_emb.shape[1]
    t = np.asarray(times[1:])
    rows = {
        "dual_encoder_onnx": {
            "R": r,
            "ms_per_suggestion_p50": float(np.percentile(t, 50)),
            "ms_per_suggestion_p95": float(np.percentile(t, 95)),
            "flops_per_suggestion": flops,
        }
    }
    if models.seq2seq is not None:
        from .seq2seq import measure_cost

        c = measure_cost(models.seq2seq, messages, models.responses.texts, threads=1)
        rows["lstm_seq2seq"] = {
            k: c[k]
            for k in ("R", "ms_per_suggestion_p50", "ms_per_suggestion_p95", "flops_per_suggestion")
        }
        rows["lstm_seq2seq"]["output_layer_share"] = c["output_layer_share"]
    return rows
