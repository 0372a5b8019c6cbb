"""`casebook run mobile-keyboard` and `casebook serve mobile-keyboard`.

    casebook run mobile-keyboard                                   # built-in text, ~1-2 min
    casebook run mobile-keyboard --preset full --corpus ~/data/gutenberg \
        --spell-test tsv:~/data/norvig-testset1.tsv --spell-test birkbeck:~/data/missp.dat
    casebook serve mobile-keyboard --port 8000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from shared.errors import CasebookError

SUMMARY = "spell check, completion and next-word prediction under phone limits (LSTM vs n-gram)"
PRESETS = ("fast", "full", "tiny")
CASE = "mobile-keyboard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="text file or folder of .txt files to train and test on (default: built-in messages)",
    )
    parser.add_argument(
        "--spell-test",
        action="append",
        default=[],
        metavar="FORMAT:FILE",
        help="misspelling test set, tsv:FILE or birkbeck:FILE (repeatable; default: generated)",
    )
    parser.add_argument(
        "--spell-train",
        action="append",
        default=[],
        metavar="FORMAT:FILE",
        help="extra real misspelling pairs for the error model (norvig:, tsv:, birkbeck:)",
    )
    parser.add_argument(
        "--no-personalization", action="store_true", help="skip the cache and FedAvg study"
    )
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        metavar="F",
        help="train on this share of the training split (0 < F <= 1; a data-scaling study: "
        "validation and test stay whole)",
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help="wall-clock cap on LSTM training (default: the preset's, 1 min fast, 14 min full)",
    )


def _registry_root(out: Path) -> Path:
    """runs/mobile-keyboard/<time>/ -> runs/mobile-keyboard/registry; elsewhere <out>/registry."""
    return out.parent / "registry" if out.parent.name == CASE else out / "registry"


def run(args: argparse.Namespace) -> Path:
    from .config import get_config

    cfg = get_config(getattr(args, "preset", None) or PRESETS[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.train_threads))
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> Path:
    from shared.artifacts import Registry, fingerprint_arrays, promotion_gate, save_artifact
    from shared.cohorts import cohort_markdown, cohort_table, ratio_ci
    from shared.report import RunReport

    from .baseline import KeyboardKneserNey
    from .config import get_config
    from .data import (
        builtin_corpus,
        generated_spell_pairs,
        load_corpus,
        load_spell_pairs,
        subsample_train,
    )
    from .evaluate import (
        KNScorer,
        LSTMScorer,
        evaluate_spell,
        keystroke_latency_ms,
        kn_step_fn,
        ksr_of,
        lstm_step_fn,
        message_positions,
        next_word_hits,
        test_stream,
    )
    from .model import KeyboardVocab, export_step_onnx, fp32_bytes, int8_package, quantize_int8
    from .personalize import personalization_study
    from .spell import KeyboardSpellCorrector
    from .train import spell_word_lists, token_stream, train_error_model, train_lm

    preset = getattr(args, "preset", None) or PRESETS[0]
    seed = int(getattr(args, "seed", 0) or 0)
    out = getattr(args, "out", None) or Path("runs") / CASE / time.strftime("%Y%m%d-%H%M%S")
    out = Path(out)
    corpus_path = getattr(args, "corpus", None)
    data = getattr(args, "data", "builtin") or "builtin"
    if corpus_path is None and data != "builtin":
        fmt, _, p = data.partition(":")
        if fmt not in ("text", "corpus") or not p:
            raise CasebookError(f"--data {data!r}: use 'builtin' or text:PATH (or --corpus PATH)")
        corpus_path = Path(p)
    cfg = get_config(preset)
    if getattr(args, "train_minutes", None) is not None:
        if args.train_minutes <= 0:
            raise CasebookError("--train-minutes must be positive")
        cfg = get_config(preset, max_train_minutes=float(args.train_minutes))
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    log = print

    # Validate every input file before spending minutes on training.
    spell_tests = [load_spell_pairs(s) for s in getattr(args, "spell_test", []) or []]
    spell_train = [
        p for s in getattr(args, "spell_train", []) or [] for p in load_spell_pairs(s)[1]
    ]

    # ---------------------------------------------------------------- data
    t0 = time.perf_counter()
    if corpus_path is not None:
        corpus = load_corpus(corpus_path, cfg.split_fractions)
    else:
        corpus = builtin_corpus(cfg.n_messages, seed, cfg.split_fractions)
    data_name = str(corpus_path) if corpus_path else "builtin"
    fraction = getattr(args, "train_fraction", None)
    fraction = 1.0 if fraction is None else float(fraction)
    if fraction != 1.0:
        corpus = subsample_train(corpus, fraction)
        data_name += f" (train fraction {fraction:g})"  # never compared with a full-data champion
    vocab = KeyboardVocab.build(corpus.train, cfg.vocab_size, cfg.min_count)
    report = RunReport(
        case=CASE,
        data=data_name,
        preset=preset,
        seed=seed,
        out_dir=out,
    )
    ntok = corpus.n_tokens()
    log(f"corpus {corpus.name}: {ntok} tokens, vocabulary {len(vocab)}")
    report.timing("data_s", time.perf_counter() - t0)

    # ---------------------------------------------------------------- models
    t0 = time.perf_counter()
    kn = KeyboardKneserNey(vocab, cfg.kn_discount).fit(corpus.train)
    report.timing("kn_fit_s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    model, info = train_lm(cfg, corpus, vocab, seed, log)
    report.timing("lstm_train_s", time.perf_counter() - t0)
    qmodel = quantize_int8(model)
    package = int8_package(model)

    # ---------------------------------------------------------------- next word
    t0 = time.perf_counter()
    ids, words, pos = test_stream(corpus.test, vocab, cfg.eval_tokens)
    ksr_words = min(len(words), cfg.ksr_words)
    rows, hits = {}, {}
    scorers = {
        "kn_ngram": (KNScorer(kn, ids), kn_step_fn(kn), kn.n_bytes()),
        "lstm": (LSTMScorer(model, ids), lstm_step_fn(model), fp32_bytes(model)),
        "lstm_int8": (LSTMScorer(qmodel, ids), lstm_step_fn(qmodel), len(package)),
    }
    for name, (scorer, step, nbytes) in scorers.items():
        hit1, hit3 = next_word_hits(scorer, vocab, words, pos)
        hits[name] = hit1
        r = {
            "top1": float(hit1.mean()),
            "top3": float(hit3.mean()),
            "ksr": ksr_of(scorer, vocab, words[:ksr_words], pos),
        }
        lat = keystroke_latency_ms(step, vocab, words, cfg.latency_keystrokes)
        rows[name] = {**r, "ms_per_keystroke_p95": lat["p95"], "model_bytes": nbytes}
        log(f"  {name}: {rows[name]}")
    # The target is a ratio of top-1s; its paired interval says whether the test split is big
    # enough to tell the two models apart (each word is scored by both).
    ratios = {}
    for name in ("lstm", "lstm_int8"):
        point, low, high = ratio_ci(hits[name], hits["kn_ngram"], seed=seed)
        ratios[name] = {"ratio": point, "low": low, "high": high}
    report.extra["top1_ratio_to_kn"] = ratios
    table = f"next_word:{corpus.name}"
    report.table(
        table,
        rows,
        baseline="kn_ngram",
        note=f"{len(words)} test words ({ksr_words} for ksr), vocabulary {len(vocab)}, "
        f"LSTM {model.n_params():,} parameters (E={cfg.embed_dim}, H={cfg.hidden_dim}). "
        "top1 over kn_ngram's, with a 95% paired-bootstrap interval: "
        + "; ".join(
            f"{n} {r['ratio']:.3f}x [{r['low']:.3f}, {r['high']:.3f}]" for n, r in ratios.items()
        )
        + ".",
    )
    # Where the LSTM's longer memory pays: by how many words of the message precede the word.
    at = message_positions(ids, pos)
    by_pos = {
        "first word": at == 0,
        "second word": at == 1,
        "words 3-5": (at >= 2) & (at <= 4),
        "words 6-10": (at >= 5) & (at <= 9),
        "word 11 on": at >= 10,
        "all": np.ones(len(at), bool),
    }
    coh = cohort_table(
        {f"{n} top1": hits[n].astype(float) for n in ("kn_ngram", "lstm")}, by_pos, seed=seed
    )
    report.cohort(
        "next_word_by_position",
        coh,
        markdown="Next-word top-1 by the word's place in its message (95% bootstrap "
        "intervals). The trigram sees two words back; the LSTM the whole message.\n\n"
        + cohort_markdown(coh),
    )
    report.timing("next_word_eval_s", time.perf_counter() - t0)

    # ---------------------------------------------------------------- packaging
    t0 = time.perf_counter()
    onnx_path, parity = export_step_onnx(model, out / "keyboard_step.onnx")
    with torch.no_grad():
        x = torch.from_numpy(ids[:200][None])
        ref = torch.log_softmax(model(x)[0], -1)
        got = torch.log_softmax(qmodel(x)[0], -1)
        int8_diff = float((ref - got).abs().max())
        int8_top1_agree = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    packaging = {
        "fp32_bytes": fp32_bytes(model),
        "int8_package_bytes": len(package),
        "onnx_bytes": onnx_path.stat().st_size,
        "onnx_max_abs_diff": parity,
        "int8_max_abs_logp_diff": int8_diff,
        "int8_top1_agreement": int8_top1_agree,
        "n_params": model.n_params(),
    }
    report.extra["packaging"] = packaging
    report.section(
        "On-device packaging",
        "\n".join(
            f"- {k}: {v:,}" if isinstance(v, int) else f"- {k}: {v:.4g}"
            for k, v in packaging.items()
        ),
    )
    report.timing("packaging_s", time.perf_counter() - t0)

    # ---------------------------------------------------------------- spell check
    t0 = time.perf_counter()
    em = train_error_model(cfg, seed, spell_train)
    corrector = KeyboardSpellCorrector(em, prior_weight=cfg.spell_prior_weight)
    if not spell_tests:
        _, eval_words = spell_word_lists(cfg)
        spell_tests = [("builtin", generated_spell_pairs(eval_words, seed=50_000 + seed))]
    for stem, pairs in spell_tests:
        res = evaluate_spell(corrector, pairs)
        res = {"symspell": res["symspell"], "noisy_channel": res["noisy_channel"]}
        report.table(
            f"spell:{stem}",
            res,
            baseline="symspell",
            note=f"{len(pairs)} misspellings; error model trained on {em.n_pairs_:,} pairs "
            f"({'generated + user-given' if spell_train else 'generated keyboard noise only'}).",
        )
        log(f"  spell:{stem}: {res}")
    report.timing("spell_s", time.perf_counter() - t0)

    # ---------------------------------------------------------------- personalization
    study = None
    if not getattr(args, "no_personalization", False):
        t0 = time.perf_counter()
        study = personalization_study(model, vocab, cfg, seed, log)
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
            markdown="Next-word top-1 on each simulated user's later messages. The cache and "
            "the local training data never leave the phone; FedAvg uploads only clipped "
            "weight deltas.\n\n" + "\n".join(lines),
        )
        report.timing("personalization_s", time.perf_counter() - t0)

    # ---------------------------------------------------------------- plots
    _plots(report, rows, study)

    # ---------------------------------------------------------------- artifact + registry
    t0 = time.perf_counter()
    metrics = {
        "next_word": rows["lstm"],
        "cohort_top1": _cohort_top1(rows, study),
        "data": report.data,
        "corpus": corpus.name,
    }
    files = {
        "vocab.json": vocab.to_json().encode(),
        "error_model.json": em.to_json().encode(),
        "model_int8.safetensors": package,
        "keyboard_step.onnx": onnx_path.read_bytes(),
    }
    config = {**cfg.to_dict(), "vocab_len": len(vocab), "train_info": info, "corpus": corpus.name}
    fp = fingerprint_arrays(token_stream(corpus.train, vocab))
    artifact = save_artifact(out / "artifact", model.state_tensors(), config, metrics, fp, files)
    registry = Registry(_registry_root(out))
    version = registry.register(artifact).name
    champion = None
    try:
        from shared.artifacts import load_artifact

        champ = load_artifact(registry.resolve("champion"))
        if champ.metrics.get("data") == report.data:
            champion = champ.metrics.get("cohort_top1")
    except CasebookError:
        champion = None
    candidate = metrics["cohort_top1"]
    baseline = {"all": rows["kn_ngram"]["top1"]}
    decision = promotion_gate(candidate, baseline, champion, tolerance=0.02)
    if decision.promote:
        registry.promote(version)
    report.extra["registry"] = {
        "root": str(_registry_root(out)),
        "version": version,
        "promoted": bool(decision.promote),
        "reasons": list(decision.reasons),
    }
    report.section(
        "Artifact and promotion",
        f"artifact `{artifact}` registered as `{version}` in `{_registry_root(out)}`; "
        f"promoted: **{bool(decision.promote)}** ({'; '.join(decision.reasons)})",
    )
    report.timing("artifact_s", time.perf_counter() - t0)
    report.production_model = "lstm_int8"
    report.extra["lstm_train"] = info
    log(f"total {time.perf_counter() - t_start:.0f} s")
    return report.write()


def _cohort_top1(rows: dict, study: dict | None) -> dict[str, float]:
    out = {"all": float(rows["lstm"]["top1"])}
    if study is not None:
        for c, r in study["cohorts"].items():
            if c != "all":
                out[c] = float(r["base_top1"])
    return out


def _plots(report, rows: dict, study: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(rows)
    xs = np.arange(3)
    for i, n in enumerate(names):
        vals = [rows[n]["top1"], rows[n]["top3"], rows[n]["ksr"]]
        ax.bar(xs + i * 0.27, vals, width=0.27, label=n)
    ax.set_xticks(xs + 0.27, ["top1", "top3", "ksr"])
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    report.figure(fig, "next_word.png", "Next-word top-1/top-3 and keystroke savings per model")
    if study is not None:
        coh = {c: r for c, r in study["cohorts"].items() if c != "all"}
        fig, ax = plt.subplots(figsize=(6, 3))
        keys = ["base_top1", "cache_top1", "fedavg_top1", "fedavg_cache_top1"]
        xs = np.arange(len(coh))
        for i, k in enumerate(keys):
            ax.bar(xs + i * 0.2, [coh[c][k] for c in coh], width=0.2, label=k.replace("_top1", ""))
        ax.set_xticks(xs + 0.3, list(coh))
        ax.set_ylabel("next-word top-1")
        ax.legend(fontsize=8)
        report.figure(fig, "personalization.png", "Personalization gain per user cohort")


def serve(artifact: Path | None, host: str, port: int) -> None:
    from shared.serving import run_app

    from .serve import build_app

    root = Path(artifact) if artifact is not None else Path("runs") / CASE / "registry"
    if not root.exists():
        raise CasebookError(
            f"no model at {root}; run `casebook run {CASE}` first or pass --artifact PATH"
        )
    run_app(build_app(root), host=host, port=port)
