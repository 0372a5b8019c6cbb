"""Offline evaluation: next-word top-k, keystroke savings, per-keystroke latency, size, spelling.

Candidates (table `candidates:<corpus>`, on VALIDATION): the table `train.validation_table` made
and the choice `train.choose_shipped` took from it; this module reports them and scores the
shipped model on test (scorers: scoring.py).

Next word (table `next_word:<corpus>`): the test sentences are one stream `<s> w1 w2 ... <s> ...`;
at every word the model ranks the vocabulary from the words before it (specials never shown).
    top1, top3   share of test words that are the first / among the first 3 suggestions
                 (an out-of-vocabulary word counts as a miss for every model)
    ksr          keystroke savings rate with 3 suggestions (shared.language.keystroke_savings):
                 the user taps a suggestion as soon as the word appears, otherwise types it
    ms_per_keystroke_p95   one thread: a word boundary runs one model step + the vocabulary head
                 + top-3; a letter inside a word only filters the cached distribution by prefix
    model_bytes  size on disk (fp32 or int8 safetensors; the n-gram as int32 id/count tables)
Spelling (table `spell:<set>`): acc@1, acc@3 of the corrected word, words_per_s timed in
alternating chunks with the baseline, so both see the same machine load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from .config import KeyboardConfig
from .scoring import message_positions, score_next_word, test_stream
from .spell import KeyboardSpellCorrector, symspell_baseline


def evaluate_spell(
    corrector: KeyboardSpellCorrector,
    pairs: Sequence[tuple[str, str]],
    chunk: int = 50,
) -> dict[str, dict[str, float]]:
    """acc@1, acc@3, words_per_s for symspellpy and the corrector, timed in alternating chunks."""
    res = {name: {"hit1": 0, "hit3": 0, "seconds": 0.0} for name in ("symspell", "noisy_channel")}
    fns = {"symspell": symspell_baseline, "noisy_channel": corrector.correct}
    for i in range(0, len(pairs), chunk):
        block = pairs[i : i + chunk]
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs = [fn(typo) for typo, _ in block]
            res[name]["seconds"] += time.perf_counter() - t0
            for (_, correct), out in zip(block, outs, strict=True):
                res[name]["hit1"] += int(out[:1] == [correct])
                res[name]["hit3"] += int(correct in out[:3])
    n = max(len(pairs), 1)
    return {
        name: {
            "acc@1": r["hit1"] / n,
            "acc@3": r["hit3"] / n,
            "words_per_s": n / max(r["seconds"], 1e-9),
            "n": len(pairs),
        }
        for name, r in res.items()
    }


# ---------------------------------------------------------------------------------------------
# The run's report: the candidate table, the test tables, cohorts, packaging, spelling, figures
# ---------------------------------------------------------------------------------------------


def evaluate(
    cfg: KeyboardConfig,
    trained,
    corpus,
    report,
    seed: int = 0,
    spell_tests: Sequence[tuple[str, list[tuple[str, str]]]] = (),
    personalization: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Fill `report` from a `train.KeyboardTrained`; the shipped row is scored on the model
    loaded from the artifact (what serves). Returns the shipped model's test top-1 by cohort
    (what promotion compares)."""
    t0 = time.perf_counter()
    _candidate_section(cfg, trained, corpus.name, report)
    hits, rows = _test_tables(cfg, trained, corpus, report, seed, log)
    cohorts = _position_cohorts(trained, hits, report, seed)
    report.timing("next_word_eval_s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    _packaging_section(trained, report)
    report.timing("packaging_s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    _spell_tables(cfg, trained, report, seed, spell_tests, log)
    report.timing("spell_s", time.perf_counter() - t0)
    study = None
    if personalization:
        t0 = time.perf_counter()
        study = _personalization_section(cfg, trained, report, seed, log)
        report.timing("personalization_s", time.perf_counter() - t0)
    _plots(report, rows, trained.validation, trained.shipped, study, cfg.phone_budget_bytes)
    report.production_model = trained.shipped
    report.extra["lstm_train"] = trained.lstm_info
    return cohorts


def _candidate_section(cfg: KeyboardConfig, trained, corpus_name: str, report) -> None:
    rows = {n: dict(r) for n, r in trained.validation.items()}
    report.table(
        f"candidates:{corpus_name}",
        rows,
        baseline="kn_full",
        note="VALIDATION; this table decides what ships. Budget: "
        f"{cfg.phone_budget_bytes:,} bytes on disk, p95 <= {cfg.phone_budget_ms:g} ms per "
        "keystroke (one thread; measured under whatever load the machine had).",
    )
    lines = [
        "| candidate | bytes | validation top1 | ksr | p95 ms | decision |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in rows.items():
        lines.append(
            f"| {n} | {r['model_bytes']:,} | {r['top1']:.4f} | {r['ksr']:.4f} | "
            f"{r['ms_per_keystroke_p95']:.3f} | {trained.why[n]} |"
        )
    notes = "\n".join(f"- {n}: {c.note}" for n, c in trained.candidates.items())
    mix = ", ".join(f"{w:g}: {t:.4f}" for w, t in trained.mix_top1.items())
    report.section(
        "The shipped model",
        f"**Ships: `{trained.shipped}`** ({trained.why[trained.shipped]}).\n\n"
        + "\n".join(lines)
        + f"\n\n{notes}\n\nMixture: validation top-1 by trigram weight {{{mix}}}.",
    )
    report.extra["shipped"] = {
        "name": trained.shipped,
        "why": trained.why,
        "mix_weight": trained.candidates[trained.shipped].next_word.mix_weight,
        "mix_top1_by_weight": {str(w): t for w, t in trained.mix_top1.items()},
    }


def _test_tables(cfg, trained, corpus, report, seed, log):
    from shared.cohorts import ratio_ci

    from .predictor import KeyboardPredictor

    vocab = trained.vocab
    stream = test_stream(corpus.test, vocab, cfg.eval_tokens)
    served = KeyboardPredictor.load(trained.artifact, with_spell=False).model
    rows, hits = {}, {}
    for name, cand in trained.candidates.items():
        nw = served if name == trained.shipped else cand.next_word
        row, hits[name] = score_next_word(nw, vocab, stream, cfg.ksr_words, cfg.latency_keystrokes)
        rows[name] = {**row, "model_bytes": cand.n_bytes}
        log(f"  test {name}: {rows[name]}")
    ratios = {}
    for name in rows:
        if name != "kn_full":
            point, low, high = ratio_ci(hits[name], hits["kn_full"], seed=seed)
            ratios[name] = {"ratio": point, "low": low, "high": high}
    report.extra["top1_ratio_to_kn"] = ratios
    n_words = len(stream[1])
    report.table(
        f"next_word:{corpus.name}",
        rows,
        baseline="kn_full",
        note=f"TEST, {n_words} words ({min(n_words, cfg.ksr_words)} for ksr), vocabulary "
        f"{len(vocab)}, LSTM {trained.lstm.n_params():,} parameters (E={cfg.embed_dim}, "
        f"H={cfg.hidden_dim}); shipped: {trained.shipped} (scored on the artifact). top1 over "
        "kn_full's, with a 95% paired-bootstrap interval: "
        + "; ".join(
            f"{n} {r['ratio']:.3f}x [{r['low']:.3f}, {r['high']:.3f}]" for n, r in ratios.items()
        )
        + ".",
    )
    return (stream, hits), rows


def _position_cohorts(trained, hits_of, report, seed) -> dict[str, float]:
    """Top-1 by the word's place in its message (where the LSTM's longer memory pays)."""
    from shared.cohorts import cohort_markdown, cohort_table

    (ids, _, pos), hits = hits_of
    at = message_positions(ids, pos)
    by_pos = {
        "first word": at == 0,
        "second word": at == 1,
        "words 3-5": (at >= 2) & (at <= 4),
        "words 6-10": (at >= 5) & (at <= 9),
        "word 11 on": at >= 10,
        "all": np.ones(len(at), bool),
    }
    names = list(dict.fromkeys(["kn_full", "lstm_fp32", trained.shipped]))
    coh = cohort_table({f"{n} top1": hits[n].astype(float) for n in names}, by_pos, seed=seed)
    report.cohort(
        "next_word_by_position",
        coh,
        markdown="Next-word top-1 by the word's place in its message (95% bootstrap "
        "intervals). The trigram sees two words back; the LSTM the whole message.\n\n"
        + cohort_markdown(coh),
    )
    shipped = hits[trained.shipped]
    return {c: float(shipped[m].mean()) for c, m in by_pos.items() if m.any()}


def _packaging_section(trained, report) -> None:
    """ONNX parity of the fp32 step graph, and why the int8 package is not an int8 ONNX file."""
    import tempfile
    from pathlib import Path

    from shared.onnx_utils import quantize_dynamic_onnx

    from .model import export_step_onnx

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, parity = export_step_onnx(trained.lstm, Path(tmp) / "keyboard_step.onnx")
        q = quantize_dynamic_onnx(onnx_path, Path(tmp) / "keyboard_step_int8.onnx")
        onnx_bytes, onnx_int8_bytes = onnx_path.stat().st_size, q.stat().st_size
    packaging = {
        "shipped": trained.shipped,
        "shipped_bytes": trained.candidates[trained.shipped].n_bytes,
        "lstm_fp32_bytes": trained.candidates["lstm_fp32"].n_bytes,
        "lstm_int8_package_bytes": trained.candidates["lstm_int8"].n_bytes,
        "onnx_fp32_step_bytes": onnx_bytes,
        "onnx_int8_step_bytes": onnx_int8_bytes,
        "onnx_max_abs_diff": parity,
        "n_params": trained.lstm.n_params(),
    }
    report.extra["packaging"] = packaging
    report.section(
        "On-device packaging",
        "\n".join(
            f"- {k}: {v:,}" if isinstance(v, int) else f"- {k}: {v}" for k, v in packaging.items()
        )
        + "\n\nonnxruntime's dynamic int8 quantization stores the tied embedding twice (the "
        "Gather table and the output MatMul), so its file is larger than the int8 package, "
        "which keeps one int8 copy and a scale per row; the package is what ships.",
    )


def _spell_tables(cfg, trained, report, seed, spell_tests, log) -> None:
    from .data import generated_spell_pairs
    from .spell import KeyboardSpellCorrector
    from .train import spell_word_lists

    em = trained.error_model
    corrector = KeyboardSpellCorrector(em, prior_weight=cfg.spell_prior_weight)
    if not spell_tests:
        _, eval_words = spell_word_lists(cfg)
        spell_tests = [("builtin", generated_spell_pairs(eval_words, seed=50_000 + seed))]
    for stem, pairs in spell_tests:
        res = evaluate_spell(corrector, pairs)
        report.table(
            f"spell:{stem}",
            res,
            baseline="symspell",
            note=f"{len(pairs)} misspellings; error model trained on {em.n_pairs_:,} pairs.",
        )
        log(f"  spell:{stem}: {res}")


def _personalization_section(cfg, trained, report, seed, log) -> dict:
    from .personalize import personalization_study

    study = personalization_study(trained.lstm, trained.vocab, cfg, seed, log)
    coh = study["cohorts"]
    lines = [
        "| cohort | users | words | base top1 | +cache | fedavg | fedavg+cache |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, r in coh.items():
        lines.append(
            f"| {c} | {r['users']} | {r['words']} | {r['base_top1']:.3f} | "
            f"{r['cache_top1']:.3f} | {r['fedavg_top1']:.3f} | {r['fedavg_cache_top1']:.3f} |"
        )
    report.cohort(
        "personalization",
        {"cohorts": coh, "fedavg_rounds": study["fedavg_rounds"]},
        markdown="Next-word top-1 of the fp32 LSTM on each simulated user's later messages (a "
        "study of the mechanisms, whichever model ships). The cache and the local training "
        "data never leave the phone; FedAvg uploads only clipped weight deltas.\n\n"
        + "\n".join(lines),
    )
    return study


def _plots(
    report, rows: dict, validation: dict, shipped: str, study: dict | None, budget_bytes: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(rows)
    width = 0.8 / len(names)
    xs = np.arange(3)
    for i, n in enumerate(names):
        vals = [rows[n]["top1"], rows[n]["top3"], rows[n]["ksr"]]
        ax.bar(xs + i * width, vals, width=width, label=n + (" (ships)" if n == shipped else ""))
    ax.set_xticks(xs + 0.4 - width / 2, ["top1", "top3", "ksr"])
    ax.set_ylabel("fraction (test)")
    ax.legend(fontsize=7)
    report.figure(fig, "next_word.png", "Next-word top-1/top-3 and keystroke savings per model")
    fig, ax = plt.subplots(figsize=(6, 3))
    for n, r in validation.items():
        ax.scatter(r["model_bytes"] / 1e6, r["top1"], label=n, marker="*" if n == shipped else "o")
    ax.axvline(budget_bytes / 1e6, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"MB on disk (dashed: the {budget_bytes / 1e6:g} MB budget)")
    ax.set_ylabel("validation top-1")
    ax.legend(fontsize=7)
    report.figure(fig, "candidates.png", "Candidates: validation top-1 against size")
    if study is not None:
        coh = {c: r for c, r in study["cohorts"].items() if c != "all"}
        fig, ax = plt.subplots(figsize=(6, 3))
        keys = ["base_top1", "cache_top1", "fedavg_top1", "fedavg_cache_top1"]
        xs = np.arange(len(coh))
        for i, k in enumerate(keys):
            ax.bar(xs + i * 0.2, [coh[c][k] for c in coh], width=0.2, label=k.replace("_top1", ""))
        ax.set_xticks(xs + 0.3, list(coh))
        ax.set_ylabel("next-word top-1")
        ax.legend(fontsize=7)
        report.figure(fig, "personalization.png", "Personalization gain per user cohort")
