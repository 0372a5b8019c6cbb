"""`casebook run`, `casebook check` and `casebook serve` for email-smart-reply.

    casebook run email-smart-reply                                        # built-in threads
    casebook run email-smart-reply --data dailydialog:train.txt --test dailydialog:test.txt
    casebook run email-smart-reply --data mbox:~/mail/inbox.mbox
    casebook check email-smart-reply --data 'csv:chat.csv?message=q&reply=a'  # data only
    casebook serve email-smart-reply --port 8000

The run: data -> clean -> data gate -> split by thread and message (data.prepare) -> train
(trigger, baselines, dual encoders, response set, compose) -> ONNX message tower (fp32, int8)
-> evaluate on test -> artifact -> registry and promotion -> report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

PRESETS = ("fast", "full", "tiny")
SUMMARY = "Gmail-style smart reply and smart compose: trigger, response set, dual encoder"
CASE = "email-smart-reply"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--test",
        default=None,
        help="test data in the same formats as --data (train on --data, report on this); "
        "default: a seeded split of --data by thread",
    )
    parser.add_argument("--epochs", type=int, default=None, help="MiniLM epochs (preset)")
    parser.add_argument(
        "--time-cap",
        type=float,
        default=None,
        help="MiniLM fine-tuning budget in seconds (default: grows with the data, see config)",
    )
    parser.add_argument(
        "--context-turns",
        type=int,
        default=None,
        help="earlier turns of the thread the message tower reads (default: the config's)",
    )
    parser.add_argument(
        "--load-test",
        action="store_true",
        help="serve the artifact on 127.0.0.1 and measure /suggest and /compose latency",
    )


def _config(args: argparse.Namespace):
    """The preset with the run flags applied (shared by `run` and `check`)."""
    from shared.errors import CasebookError

    from .config import get_config

    over = {"max_epochs": args.epochs} if getattr(args, "epochs", None) else {}
    if getattr(args, "time_cap", None) is not None:
        if args.time_cap <= 0:
            raise CasebookError(f"--time-cap must be > 0 seconds, got {args.time_cap:g}")
        over.update(time_cap_s=args.time_cap, time_per_pair_s=0.0, max_time_cap_s=args.time_cap)
    if getattr(args, "context_turns", None) is not None:
        if not 0 <= args.context_turns <= 3:
            raise CasebookError(f"--context-turns must be 0..3, got {args.context_turns}")
        over["context_turns"] = args.context_turns
    return get_config(getattr(args, "preset", None) or PRESETS[0], **over)


def check(args: argparse.Namespace) -> str:
    """`casebook check email-smart-reply --data SPEC`: load, clean, gate and split exactly as
    `run` does, without training; the data section (Markdown). DataError when a run could not
    go ahead."""
    from . import data as D

    cfg = _config(args)
    seed = int(getattr(args, "seed", 0) or 0)
    spec = getattr(args, "data", None) or "builtin"
    return D.prepare(spec, cfg, seed, Path(args.out), getattr(args, "test", None)).markdown


def run(args: argparse.Namespace) -> Path:
    from shared.lifecycle import run_folder, torch_threads

    cfg = _config(args)
    out = run_folder(CASE, getattr(args, "out", None))
    # One intra-op thread: measured on the shared 2-core machine, a small encoder's training
    # step took 25 ms with one torch thread and 540 ms with two (threads wait on each other
    # when other jobs hold the cores).
    with torch_threads(cfg.threads):
        return _run(args, cfg, out)


def _run(args, cfg, out: Path) -> Path:
    from shared.artifacts import fingerprint_arrays
    from shared.lifecycle import register_and_promote, registry_root
    from shared.report import RunReport

    from . import data as D
    from .evaluate import evaluate_run
    from .predictor import SmartReplyPredictor
    from .train import export_towers, finish_monitoring, save, train

    seed = int(getattr(args, "seed", 0) or 0)
    spec = getattr(args, "data", None) or "builtin"
    report = RunReport(
        case=CASE,
        data=spec,
        preset=getattr(args, "preset", None) or PRESETS[0],
        seed=seed,
        out_dir=out,
    )
    t0 = time.perf_counter()
    inputs = D.prepare(spec, cfg, seed, out, getattr(args, "test", None))
    train_d, val_d, test, testset = inputs.train, inputs.val, inputs.test, inputs.testset
    if cfg.context_turns and not any(train_d.contexts):
        from dataclasses import replace

        cfg = replace(cfg, context_turns=0)  # no threads in this format: the message alone
    report.timing("data_s", time.perf_counter() - t0)
    report.table(
        "data_gate",
        inputs.gate_rows,
        note="Every input is checked in file-order batches, each against the rest of the data "
        "(schema: empty, binary, oversized texts; duplicates; shift) before training; refused "
        "batches are quarantined.",
    )
    report.section("Data", inputs.markdown)
    print(f"  {len(train_d):,} train / {len(val_d):,} val / {len(test):,} test pairs", flush=True)

    models = train(cfg, train_d, val_d, seed)
    report.production_model = models.production
    for k, v in models.timings.items():
        report.timing(k, v)
    fp32, int8 = export_towers(models, cfg, out / "onnx")
    t0 = time.perf_counter()
    res = evaluate_run(
        models, test, val_d, cfg, seed, report, testset, {"fp32": fp32, "int8": int8}
    )
    report.timing("evaluate_s", time.perf_counter() - t0)
    _batch_size_study(models, report)

    fingerprint = fingerprint_arrays(
        np.asarray(train_d.messages, dtype=object).astype(str),
        np.asarray(train_d.replies, dtype=object).astype(str),
    )
    prod = res["table"][f"{models.production}_onnx_{res['served']}"]
    art = save(
        models,
        cfg,
        out / "artifact",
        int8 if res["served"] == "int8" else fp32,
        fingerprint,
        {"1_of_100": prod["1_of_100"], "mrr": prod["mrr"]},
        {"served_precision": res["served"], "testset": testset},
    )
    # The golden set and the monitor's reference (loads the artifact as the server will).
    finish_monitoring(art, val_d, models.trigger.threshold, seed)
    cand = {"all": prod["1_of_100"]}
    promotion = register_and_promote(
        art,
        registry_root(out, CASE),
        metric="1_of_100",
        candidate=cand,
        baseline={"all": res["table"]["bm25"]["1_of_100"]},
        fingerprint=fingerprint,
        preset=report.preset,
        seed=seed,
        loader=SmartReplyPredictor.load,
    )
    report.extra["registry"] = promotion.to_dict()
    report.section("Registry and promotion", promotion.markdown())
    if getattr(args, "load_test", False):
        from .serve import load_test

        load_test(art, report, seed)
    for line in (f"{n}: 1-of-100 {r['1_of_100']:.3f}" for n, r in res["table"].items()):
        print("  " + line, flush=True)
    return report.write()


def _batch_size_study(models, report) -> None:
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


def serve(artifact: Path | None, host: str, port: int) -> None:
    from shared.errors import CasebookError
    from shared.serving import run_app

    from .serve import build_app

    root = Path(artifact) if artifact else Path("runs") / CASE / "registry"
    if not root.exists():
        raise CasebookError(f"{root} not found: run `casebook run {CASE}` first or pass --artifact")
    run_app(build_app(str(root)), host=host, port=port)
