"""`casebook run|check|serve content-moderation`.

    casebook run content-moderation                                   # built-in data, ~2-3 min
    casebook run content-moderation --data olid:~/data/olid           # OffensEval 2019 protocol
    casebook run content-moderation --data davidson:labeled_data.csv --eval hatecheck:hc.csv
    casebook run content-moderation --data jigsaw:train.csv           # 6 Jigsaw policies
    casebook check content-moderation --data sms-spam:SMSSpamCollection   # data only, no training
    casebook serve content-moderation --port 8000

The run: data (read, clean, split, gate: data.prepare_data, which is all `check` does) -> rules
baseline, TF-IDF + LR (identity-term augmentation tried), fine-tuned MiniLM (ONNX, int8 where
parity holds), ensemble -> the shipped model chosen on validation -> image CNN, known-bad hash
bank, ad fusion -> artifact -> every table measured on the saved artifact -> registry and
promotion.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from shared.errors import CasebookError

SUMMARY = "moderate posts and ads: hash matching, rules, TF-IDF, fine-tuned MiniLM, image CNN"
PRESETS = ("fast", "full", "tiny")
CASE = "content-moderation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="FORMAT:PATH",
        help="evaluation-only set (repeatable): hatecheck:FILE, "
        "toxicity-pairs:NONFUZZED.csv,FUZZED.csv, csv:FILE[?text=COL&label=COL]",
    )
    parser.add_argument("--no-encoder", action="store_true", help="skip MiniLM fine-tuning")
    parser.add_argument(
        "--no-images", action="store_true", help="skip the image CNN, hash bank and ads"
    )
    parser.add_argument(
        "--load-test",
        action="store_true",
        help="after the run, serve the artifact and measure POST /moderate at 8 in flight",
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=None,
        help="wall-clock safety cap on MiniLM fine-tuning in minutes; the budget is in steps "
        "(config max_train_steps: 600 on real data, 40 built-in)",
    )


def _config(args: argparse.Namespace):
    from .config import get_config

    over = {}
    if getattr(args, "no_encoder", False):
        over["encoder"] = False
    minutes = getattr(args, "train_minutes", None)
    if minutes is not None:
        if minutes <= 0:
            raise CasebookError("--train-minutes must be positive")
        over.update(
            max_train_minutes=minutes, min_train_minutes=minutes, builtin_train_minutes=minutes
        )
    return get_config(getattr(args, "preset", None) or PRESETS[0], **over)


def _build_artifact(out: Path, cfg, data, fit, image, fusion, seed: int) -> tuple[Path, str]:
    """Save the artifact with the training data's fingerprint, then its golden set and the
    monitor's reference (shared.golden), before registration: 200 validation requests whose
    scores a reload must reproduce, ~2000 others as "normal". Returns (artifact, fingerprint)."""
    from shared.artifacts import fingerprint_arrays
    from shared.golden import finish_artifact

    from .predictor import ModerationPredictor
    from .train import save_moderation_artifact

    tr = data.split["train"]
    text_digest = hashlib.sha256("\n".join(data.texts[i] for i in tr).encode()).digest()
    fp = fingerprint_arrays(data.labels[tr], np.frombuffer(text_digest, np.uint8))
    artifact = save_moderation_artifact(out / "artifact", cfg, data, fit, image, fusion, fp)
    golden, reference = monitor_requests(data, seed)
    finish_artifact(
        artifact,
        ModerationPredictor.load,
        golden_requests=golden,
        reference_requests=reference,
        decision_threshold=1.0,  # observation's score: the auto-removal margin (>= 1 removes)
        decision="auto_remove",
    )
    return artifact, fp


def run(args: argparse.Namespace) -> Path:
    from shared.lifecycle import register_and_promote, registry_root, run_folder, torch_threads
    from shared.report import RunReport

    from .data import load_eval, prepare_data
    from .evaluate import load_test, predictor_latency, report_run
    from .predictor import ModerationPredictor
    from .train import fit_ad_fusion, fit_image_side, fit_text_models

    cfg = _config(args)
    preset = getattr(args, "preset", None) or PRESETS[0]
    seed = int(getattr(args, "seed", 0) or 0)
    source = getattr(args, "data", "builtin") or "builtin"
    builtin = source == "builtin"
    evals = [load_eval(s) for s in getattr(args, "eval", []) or []]  # fail before training
    out = run_folder(CASE, getattr(args, "out", None))
    t0 = time.perf_counter()
    data, gate, data_md = prepare_data(source, cfg, seed, out)
    report = RunReport(case=CASE, data=source, preset=preset, seed=seed, out_dir=out)
    log = print
    log(
        f"{data.name}: {len(data)} texts, policies {', '.join(data.policies)}, split "
        + ", ".join(f"{k} {len(v)}" for k, v in data.split.items())
    )
    report.extra["data_gate"] = gate
    report.extra["data"] = data.log.to_dict()
    report.section("Data", data_md)
    report.timing("data_s", time.perf_counter() - t0)

    t0 = time.perf_counter()
    with torch_threads(cfg.train_threads):
        fit = fit_text_models(cfg, data, seed, out, log, builtin=builtin)
        report.timing("text_models_s", time.perf_counter() - t0)
        image = ads = fusion = None
        if not getattr(args, "no_images", False):
            t0 = time.perf_counter()
            image = fit_image_side(cfg, seed, out, log)
            if builtin and (data.kinds == "ad").any():
                fusion, ads = fit_ad_fusion(cfg, data, fit, image, seed)
            report.timing("image_side_s", time.perf_counter() - t0)
    for k, v in fit["timings"].items():
        report.timing(k, v)

    t0 = time.perf_counter()
    artifact, fp = _build_artifact(out, cfg, data, fit, image, fusion, seed)
    pred = ModerationPredictor.load(artifact)  # what the server will load, verified
    report.timing("artifact_s", time.perf_counter() - t0)

    t0 = time.perf_counter()
    head = report_run(report, cfg, data, fit, pred, image, ads, evals, seed, log)
    report.production_model = fit["production"]
    report.extra["training"] = fit["info"]
    report.timing("evaluate_s", time.perf_counter() - t0)

    promotion = register_and_promote(
        artifact,
        registry_root(out, CASE),
        metric="macro_f1",
        candidate={
            "all": float(sum(head["headline"].values()) / len(head["headline"])),
            **{k: float(v) for k, v in head["headline"].items()},
        },
        baseline={"all": float(sum(head["baseline"].values()) / len(head["baseline"]))},
        fingerprint=fp,
        preset=preset,
        seed=seed,
        loader=ModerationPredictor.load,
    )
    report.extra["registry"] = promotion.to_dict()
    report.extra["predictor_latency"] = predictor_latency(pred, data.subset("test")[0])
    if getattr(args, "load_test", False):
        t0 = time.perf_counter()
        try:
            load_test(artifact, data.subset("test")[0], report)
        except Exception as e:  # the run's results stand; say why the measurement is missing
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            log(f"  load test failed: {msg}")
            report.section("Serving load test", f"Not measured: {msg}")
        report.timing("load_test_s", time.perf_counter() - t0)
    report.section("Registry and promotion", promotion.markdown())
    log(
        "test macro-F1 of the shipped model: "
        + ", ".join(f"{k} {v:.4f}" for k, v in head["headline"].items())
    )
    return report.write()


def check(args: argparse.Namespace) -> str:
    """`casebook check content-moderation --data SPEC`: read, clean, split and gate as `run`
    does (data.prepare_data), no training; the data report as Markdown."""
    from .data import load_eval, prepare_data

    for spec in getattr(args, "eval", []) or []:
        load_eval(spec)  # an evaluation set that would stop the run stops the check too
    seed = int(getattr(args, "seed", 0) or 0)
    source = getattr(args, "data", "builtin") or "builtin"
    return prepare_data(source, _config(args), seed, Path(args.out))[2]


def monitor_requests(data, seed: int, n_golden: int = 200, n_reference: int = 2000):
    """(golden, reference) `POST /moderate` bodies from validation, then test texts: only
    texts the route accepts (1-5,000 characters, not blank, no control characters)."""
    from .serve import MAX_TEXT_CHARS

    rng = np.random.default_rng(seed + 808)
    rows = np.concatenate([rng.permutation(data.split["val"]), rng.permutation(data.split["test"])])
    reqs = []
    for i in rows:
        t = data.texts[i]
        if not t.strip() or len(t) > MAX_TEXT_CHARS:
            continue
        if any((ord(ch) < 32 and ch not in "\t\n\r") or ch == "\ufffd" for ch in t):
            continue
        kind = str(data.kinds[i]) if len(data.kinds) == len(data.texts) else "post"
        reqs.append({"text": t, "kind": kind})
        if len(reqs) >= n_golden + n_reference:
            break
    if len(reqs) < 2:
        raise CasebookError(f"{data.name}: too few servable texts for the golden set")
    k = min(n_golden, len(reqs) // 2)
    return reqs[:k], reqs[k:]


def serve(artifact: Path | None, host: str, port: int) -> None:
    from shared.serving import run_app

    from .serve import build_app

    root = Path(artifact) if artifact is not None else Path("runs") / CASE / "registry"
    if not root.exists():
        raise CasebookError(
            f"no model at {root}; run `casebook run {CASE}` first or pass --artifact PATH"
        )
    run_app(build_app(root), host=host, port=port)
