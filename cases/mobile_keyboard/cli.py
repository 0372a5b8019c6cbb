"""`casebook run|check|serve mobile-keyboard`.

    casebook run mobile-keyboard                                   # built-in text, under 1 min
    casebook run mobile-keyboard --preset full --data text:~/data/gutenberg \
        --spell-test tsv:~/data/norvig-testset1.tsv --spell-test birkbeck:~/data/missp.dat
    casebook check mobile-keyboard --data messages:~/chat.txt      # the data report, no training
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
        help="same as --data text:PATH: a text file or a folder of text files (prose)",
    )
    parser.add_argument(
        "--spell-test",
        action="append",
        default=[],
        metavar="FORMAT:FILE",
        help="misspelling test set, tsv:FILE, birkbeck:FILE or norvig:FILE (repeatable; "
        "default: generated)",
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
        help="wall-clock cap on LSTM training (default: grows with the corpus, 4 min per "
        "million training tokens at the fast preset, 14 at full)",
    )
    parser.add_argument(
        "--load-test",
        action="store_true",
        help="after training, serve the artifact on 127.0.0.1 and load-test /suggest beside the "
        "no-op floor (serve.load_test)",
    )


def run(args: argparse.Namespace) -> Path:
    """Arguments -> config -> train (ends in the artifact) -> evaluate -> register."""
    from shared.lifecycle import register_and_promote, registry_root, run_folder, torch_threads
    from shared.report import RunReport

    from .evaluate import evaluate
    from .predictor import KeyboardPredictor
    from .train import train

    t_start = time.perf_counter()
    cfg, preset, seed = _config(args)
    data = _data(args, cfg, seed)  # every file read and checked before minutes of training
    corpus = data.corpus
    out = run_folder(CASE, getattr(args, "out", None))
    report = RunReport(case=CASE, data=data.name, preset=preset, seed=seed, out_dir=out)
    report.section("Data", data.section)
    print(f"corpus {corpus.name}: {corpus.n_tokens()} tokens")
    with torch_threads(cfg.train_threads):
        torch.manual_seed(seed)
        trained = train(cfg, corpus, out / "artifact", seed, data.spell_train)
        for k, v in trained.timings.items():
            report.timing(k, v)
        cohorts = evaluate(
            cfg,
            trained,
            corpus,
            report,
            seed,
            data.spell_tests,
            not getattr(args, "no_personalization", False),
        )
    # The shipped model already beat every other candidate, the full trigram included, on
    # validation (train.py); promotion's baseline is the keyboard with no model (always the
    # most frequent words), which a trigram that ships can clear too (it cannot beat itself).
    baseline = {"all": _unigram_top1(trained, corpus, cfg)}
    promotion = register_and_promote(
        trained.artifact,
        registry_root(out, CASE),
        metric="top1",
        candidate=cohorts,
        baseline=baseline,
        fingerprint=trained.fingerprint,
        preset=preset,
        seed=seed,
        loader=KeyboardPredictor.load,
    )
    report.extra["registry"] = promotion.to_dict()
    report.section("Artifact and promotion", promotion.markdown())
    if getattr(args, "load_test", False):
        from .serve import load_test

        load_test(trained.artifact, report, seed)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return report.write()


def _config(args: argparse.Namespace):
    from .config import get_config

    preset = getattr(args, "preset", None) or PRESETS[0]
    seed = int(getattr(args, "seed", 0) or 0)
    minutes = getattr(args, "train_minutes", None)
    if minutes is None:
        return get_config(preset), preset, seed
    if minutes <= 0:
        raise CasebookError("--train-minutes must be positive")
    cap = float(minutes)
    return get_config(preset, min_train_minutes=cap, max_train_minutes=cap), preset, seed


def check(args: argparse.Namespace) -> str:
    """`casebook check mobile-keyboard`: load, clean and split as `run` does, without training;
    the report's data section (a DataError when a run could not go ahead)."""
    cfg, _, seed = _config(args)
    return _data(args, cfg, seed).section


def _data(args: argparse.Namespace, cfg, seed: int):
    """--data (or --corpus PATH, the same as --data text:PATH) and the misspelling files."""
    from .data import load_data

    spec = getattr(args, "data", None) or "builtin"
    path = getattr(args, "corpus", None)
    if path is not None:
        if spec != "builtin":
            raise CasebookError(f"give --data {spec} or --corpus {path}, not both")
        spec = f"text:{path}"
    fraction = getattr(args, "train_fraction", None)
    return load_data(
        spec,
        n_messages=cfg.n_messages,
        seed=seed,
        fractions=cfg.split_fractions,
        spell_test=list(getattr(args, "spell_test", []) or []),
        spell_train=list(getattr(args, "spell_train", []) or []),
        train_fraction=1.0 if fraction is None else float(fraction),
    )


def _unigram_top1(trained, corpus, cfg) -> float:
    """Test top-1 of always suggesting the most frequent training word."""
    from .scoring import test_stream

    _, words, _ = test_stream(corpus.test, trained.vocab, cfg.eval_tokens)
    top = trained.vocab.itos[2]  # the vocabulary is most frequent first, after <unk> and <s>
    return float(np.mean([w == top for w in words])) if words else 0.0


def serve(artifact: Path | None, host: str, port: int) -> None:
    from shared.serving import run_app

    from .serve import build_app

    root = Path(artifact) if artifact is not None else Path("runs") / CASE / "registry"
    if not root.exists():
        raise CasebookError(
            f"no model at {root}; run `casebook run {CASE}` first or pass --artifact PATH"
        )
    run_app(build_app(root), host=host, port=port)
