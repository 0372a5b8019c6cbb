"""`casebook run`, `casebook check` and `casebook serve` for email-smart-reply.

    casebook run email-smart-reply                                        # built-in threads
    casebook run email-smart-reply --data dailydialog:train.txt --test dailydialog:test.txt
    casebook run email-smart-reply --data mbox:~/mail/inbox.mbox
    casebook check email-smart-reply --data 'csv:chat.csv?message=q&reply=a'  # data only
    casebook serve email-smart-reply --port 8000

The run: data -> clean -> data gate -> split by thread and message (data.prepare) -> train
(trigger, baselines, dual encoders, response set, compose) -> artifact (ONNX towers, the
message tower's precision chosen on validation, train.build_artifact) -> evaluate on test, the
served rows through the saved artifact's predictor -> registry and promotion -> report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
    from shared.lifecycle import register_and_promote, registry_root
    from shared.report import RunReport

    from . import data as D
    from . import evaluate as ev
    from .predictor import SmartReplyPredictor
    from .train import build_artifact, train

    seed = int(getattr(args, "seed", 0) or 0)
    spec = getattr(args, "data", None) or "builtin"
    preset = getattr(args, "preset", None) or PRESETS[0]
    report = RunReport(case=CASE, data=spec, preset=preset, seed=seed, out_dir=out)
    t0 = time.perf_counter()
    inputs = D.prepare(spec, cfg, seed, out, getattr(args, "test", None))
    cfg = D.fit_context_turns(cfg, inputs.train)
    report.timing("data_s", time.perf_counter() - t0)
    ev.report_data(inputs, report)
    n = {k: f"{len(getattr(inputs, k)):,}" for k in ("train", "val", "test")}
    print(f"  {n['train']} train / {n['val']} val / {n['test']} test pairs", flush=True)

    models = train(cfg, inputs.train, inputs.val, seed)
    report.production_model = models.production
    for k, v in models.timings.items():
        report.timing(k, v)
    shipped = build_artifact(models, cfg, inputs.train, inputs.val, seed, out, inputs.testset)
    t0 = time.perf_counter()
    res = ev.evaluate_run(models, shipped, inputs.test, cfg, seed, report, inputs.testset)
    report.timing("evaluate_s", time.perf_counter() - t0)
    ev.report_training(models, report)

    promotion = register_and_promote(
        shipped.artifact,
        registry_root(out, CASE),
        metric="1_of_100",
        candidate={"all": res["served"]["1_of_100"]},
        baseline={"all": res["table"]["bm25"]["1_of_100"]},
        fingerprint=shipped.fingerprint,
        preset=preset,
        seed=seed,
        loader=SmartReplyPredictor.load,
    )
    report.extra["registry"] = promotion.to_dict()
    report.section("Registry and promotion", promotion.markdown())
    if getattr(args, "load_test", False):
        from .serve import load_test

        load_test(shipped.artifact, report, seed)
    ev.print_summary(res["table"])
    return report.write()


def serve(artifact: Path | None, host: str, port: int) -> None:
    from shared.errors import CasebookError
    from shared.serving import run_app

    from .serve import build_app

    root = Path(artifact) if artifact else Path("runs") / CASE / "registry"
    if not root.exists():
        raise CasebookError(f"{root} not found: run `casebook run {CASE}` first or pass --artifact")
    run_app(build_app(str(root)), host=host, port=port)
