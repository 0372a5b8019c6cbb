"""`casebook run video-recommendation` and `casebook serve video-recommendation`.

    casebook run video-recommendation                                  # simulator, fast preset
    casebook run video-recommendation --data movielens:~/data/ml-latest-small
    casebook run video-recommendation --data lastfm:~/data/hetrec2011-lastfm-2k
    casebook run video-recommendation --data "interactions:log.tsv?user=visitor&item=video"
    casebook check video-recommendation --data interactions:log.csv     # data only, no training
    casebook serve video-recommendation --artifact runs/video-recommendation/registry

The run: data (+ the data gate on every simulated day, with injected bad batches) -> retrievers,
the shipped one picked on validation (+ the ranker on the simulator) -> the artifact -> the
served artifact scored on the test users -> register and promote -> the simulated A/B test,
off-policy estimates and the feedback loop (simulator only) -> latency -> report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

PRESETS = ("fast", "full", "tiny", "catalog100k")
SUMMARY = "YouTube-style recommender: retrieval, multi-task ranking, re-ranking, A/B by simulation"
CASE = "video-recommendation"


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
    from shared.lifecycle import register_and_promote, registry_root, run_folder, torch_threads
    from shared.report import RunReport

    from . import evaluate as ev
    from .data import prepare
    from .predictor import VideoRecPredictor
    from .train import build_artifact, data_fingerprint, train_rankers, train_retrievers

    cfg, seed = _cfg(args), int(getattr(args, "seed", 0) or 0)
    preset, spec = getattr(args, "preset", None) or PRESETS[0], getattr(args, "data", None)
    spec = spec or "builtin"
    out = run_folder(CASE, getattr(args, "out", None))
    report = RunReport(case=CASE, data=spec, preset=preset, seed=seed, out_dir=out)
    # One intra-op thread: these models are small, and on a shared 2-core machine a second
    # thread mostly waits (measured: the ranker's tests ran 12x faster with one thread under load).
    with torch_threads(1):
        t0 = time.perf_counter()
        data, gate, section = prepare(spec, cfg, seed, out / "quarantine")
        builtin = data.simulator is not None
        report.section("Data", section)
        report.extra["data"] = data.log.to_dict()
        ev.report_gate(gate, report)
        report.timing("data_s", time.perf_counter() - t0)

        trained = train_retrievers(cfg, data, seed, report.timings)
        if builtin:
            t0 = time.perf_counter()
            train_rankers(cfg, data, trained, seed)
            report.timing("ranking_s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        art, parity = build_artifact(trained, data, cfg, spec, seed, out / "artifact")
        report.timing("artifact_s", time.perf_counter() - t0)

        tops = ev.evaluate_retrieval(trained, report)
        user_cohort = data.simulator.user_cohort if builtin else None
        cohort = ev.evaluate_served(art, trained, tops, user_cohort, cfg, report, seed)
        ab = None
        if builtin:
            ev.evaluate_ranking(trained, data, cfg, report, parity)
            ab = ev.evaluate_online(trained, data, art, cfg, report, seed)
        metric, candidate, baseline = ev.promotion_figures(cohort, ab)
        promotion = register_and_promote(
            art,
            registry_root(out, CASE),
            metric=metric,
            candidate=candidate,
            baseline=baseline,
            fingerprint=data_fingerprint(data, trained.split),
            preset=preset,
            seed=seed,
            loader=VideoRecPredictor.load,
        )
        report.extra["registry"] = promotion.to_dict()
        report.section("Registry and promotion", promotion.markdown())
        if builtin and not getattr(args, "skip_loop", False):
            ev.feedback_loop(cfg, report, seed)
        ev.latency(art, report)
        if getattr(args, "load_test", False):
            versions = registry_root(out, CASE) / "versions"
            ev.load_test(versions / promotion.version, report, seed)
    if not builtin:
        report.section(
            "Data notes", "- ranking, A/B, off-policy and feedback-loop stages need the simulator"
        )
    return report.write()


def check(args: argparse.Namespace) -> str:
    """`casebook check video-recommendation --data SPEC`: load, clean, gate and split as `run`
    does (`data.prepare`), without training; the Data section a run's report would hold."""
    from shared.lifecycle import run_folder

    from .data import prepare

    cfg, seed = _cfg(args), int(getattr(args, "seed", 0) or 0)
    out = run_folder(f"check/{CASE}", getattr(args, "out", None))
    spec = getattr(args, "data", None) or "builtin"
    return prepare(spec, cfg, seed, out / "quarantine")[2]


def serve(artifact: Path | None, host: str, port: int) -> None:
    from shared.errors import CasebookError
    from shared.serving import run_app

    from .serve import build_app

    root = Path(artifact) if artifact else Path("runs") / CASE / "registry"
    if not root.exists():
        raise CasebookError(f"{root} not found: run `casebook run {CASE}` first or pass --artifact")
    run_app(build_app(str(root)), host=host, port=port)
