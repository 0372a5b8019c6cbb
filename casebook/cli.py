"""The `casebook` command: list, run, bench and serve the cases; look at and compare runs.

    casebook list
    casebook run video-recommendation --preset fast --seed 0
    casebook run all
    casebook bench rnn --quick
    casebook serve mobile-keyboard --port 8000
    casebook serve mobile-keyboard --replicas 2          (casebook/serve_apps.py)
    casebook serve mobile-keyboard --config deploy/mobile-keyboard.yaml
    casebook drill mobile-keyboard            (failure drills on the live app: casebook/drill.py)
    casebook check content-moderation --data sms-spam:SMSSpamCollection   (data only, no training)
    casebook ui --runs runs                   (the runs in a browser: casebook/ui.py)
    casebook compare RUN_A RUN_B              (two runs' tables side by side: shared/compare.py)

A case plugs in by existing: every `cases/<package>/cli.py` is found by scanning, and its
command-line name is the package name with `_` -> `-`. The module defines
    SUMMARY: str                               one line for `casebook list`
    PRESETS: tuple[str, ...]                   preset names for `--preset`; the first is the default
    add_arguments(parser) -> None              case-specific `run` flags
    run(args) -> Path                          runs end to end, returns the path of metrics.json
    check(args) -> str                         loads, cleans, splits and gates `--data` without
                                               training; returns the data report (Markdown) and
                                               raises DataError when a run could not go ahead
    serve(artifact, host, port) -> None        blocks, serving the case over HTTP
A benchmark plugs in the same way, as `benchmarks/<module>.py` defining
    NAME: str, SUMMARY: str, add_arguments(parser) -> None, run(args) -> Path (its JSON file).
Without `--out`, a case picks its own run folder (`shared.lifecycle.run_folder`:
runs/<case>/<UTC time>/) and a benchmark gets runs/bench/<name>/<UTC time>/.

This package sits above the layers: it imports cases and benchmarks; nothing imports it.

Errors the user can fix (`shared.errors.CasebookError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from casebook.catalog import (
    add_common_run_flags,
    available_benchmarks,
    available_cases,
    load_benchmark,
    load_case,
)
from shared.errors import CasebookError
from shared.lifecycle import run_folder


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a replica count)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casebook",
        description="Worked ML system-design cases: run them, benchmark them, serve them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("list", help="list the cases and benchmarks")

    run_p = sub.add_parser("run", help="run a case (or all) end to end and write a report")
    run_sub = run_p.add_subparsers(dest="case", required=True, metavar="CASE")
    all_p = run_sub.add_parser("all", help="every case on built-in data, then a summary table")
    all_p.add_argument("--seed", type=int, default=0, help="random seed passed to every case")
    all_p.add_argument("--out", type=Path, default=None, help="parent folder for each case's run")
    for name in available_cases():
        module = load_case(name)
        p = run_sub.add_parser(name, help=module.SUMMARY, description=module.SUMMARY)
        add_common_run_flags(p, tuple(getattr(module, "PRESETS", ())))
        module.add_arguments(p)

    check_p = sub.add_parser(
        "check",
        help="load, clean, split and gate a case's data without training; write data_report.md",
    )
    check_sub = check_p.add_subparsers(dest="case", required=True, metavar="CASE")
    for name in available_cases():
        module = load_case(name)
        p = check_sub.add_parser(name, help=f"check data for {name}")
        add_common_run_flags(p, tuple(getattr(module, "PRESETS", ())))
        module.add_arguments(p)

    bench_p = sub.add_parser("bench", help="run a benchmark and write JSON, Markdown and a plot")
    bench_sub = bench_p.add_subparsers(dest="bench", required=True, metavar="NAME")
    bench_sub.add_parser("all", help="every benchmark").add_argument(
        "--quick", action="store_true", help="tiny sizes (seconds, for smoke tests)"
    )
    for name in available_benchmarks():
        module = load_benchmark(name)
        p = bench_sub.add_parser(name, help=module.SUMMARY, description=module.SUMMARY)
        p.add_argument("--quick", action="store_true", help="tiny sizes (seconds, for smoke tests)")
        p.add_argument("--out", type=Path, default=None, help="output folder")
        module.add_arguments(p)

    from casebook import drill

    drill_p = sub.add_parser(
        "drill",
        help="failure drills against a case's live app (bad input, corrupt model, load, ...)",
        description=(drill.__doc__ or "").split("\n\n")[0],
    )
    drill.add_arguments(drill_p, list(available_cases()))

    serve_p = sub.add_parser("serve", help="serve a case's champion model over HTTP (Ray Serve)")
    serve_p.add_argument("case", choices=list(available_cases()), help="which case")
    serve_p.add_argument(
        "--artifact",
        type=Path,
        default=None,
        help="artifact folder or registry (default: the champion in runs/<case>/registry)",
    )
    serve_p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve_p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    serve_p.add_argument(
        "--replicas",
        type=_positive_int,
        default=None,
        help="replicas of every deployment of the app (default: the case's own, one)",
    )
    serve_p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a Serve config file (deploy/<case>.yaml) to deploy instead, on a Ray on --host",
    )

    ui_p = sub.add_parser(
        "ui", help="the runs in a browser: list, open a report, compare two (127.0.0.1)"
    )
    ui_p.add_argument("--runs", type=Path, default=Path("runs"), help="runs folder (default runs)")
    ui_p.add_argument("--port", type=int, default=8050, help="HTTP port (default 8050)")

    cmp_p = sub.add_parser("compare", help="two runs' summaries and tables side by side, B - A")
    cmp_p.add_argument("run_a", type=Path, help="run folder A (holding metrics.json)")
    cmp_p.add_argument("run_b", type=Path, help="run folder B")
    return parser


def _bench_args(name: str, argv_quick: bool, out: Path | None) -> argparse.Namespace:
    """Parse a benchmark's own flags at their defaults (used by `bench all`)."""
    module = load_benchmark(name)
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    module.add_arguments(p)
    args = p.parse_args(["--quick"] if argv_quick else [])
    args.out = out
    return args


def _summary(rows: list[dict]) -> str:
    lines = [
        "",
        "| case | production model | headline | seconds | report |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['model']} | {r['headline']} | {r['seconds']:.0f} | {r['report']} |"
        )
    return "\n".join(lines)


def _headline(metrics_path: Path) -> tuple[str, str]:
    doc = json.loads(metrics_path.read_text())
    model = doc.get("production_model", "")
    # The shipped model's row: named after it, or "served" where the shipped model is a funnel
    # of several (the video case) and the row scores the served artifact as a whole.
    # Tables named `candidates...` or `validation...` hold validation figures (the keyboard's
    # candidate table): the headline is a test figure.
    for table, rows in doc.get("tables", {}).items():
        if table.startswith(("candidates", "validation")):
            continue
        row = model if model in rows else "served" if "served" in rows else None
        if row is not None:
            items = list(rows[row].items())[:3]
            text = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in items
            )
            return model, f"{table}: {text}"
    return model, ""


def run_all(args: argparse.Namespace) -> int:
    rows, failed = [], []
    for name in available_cases():
        module = load_case(name)
        p = argparse.ArgumentParser()
        add_common_run_flags(p, tuple(getattr(module, "PRESETS", ())))
        module.add_arguments(p)
        case_args = p.parse_args(["--seed", str(args.seed)])
        if args.out is not None:
            case_args.out = args.out / name
        print(f"\n=== casebook run {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            metrics_path = Path(module.run(case_args))
        except CasebookError as e:
            print(f"casebook: {name}: error: {e}", file=sys.stderr)
            failed.append(name)
            continue
        model, headline = _headline(metrics_path)
        rows.append(
            {
                "case": name,
                "model": model,
                "headline": headline,
                "seconds": time.perf_counter() - t0,
                "report": str(metrics_path.parent / "report.md"),
            }
        )
    print(_summary(rows))
    if failed:
        print(f"casebook: failed: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


def check_case(args: argparse.Namespace) -> int:
    """`casebook check CASE --data SPEC`: print the case's data report and write it as
    data_report.md (in --out, else runs/check/<case>/<time>/). 0 when a run could go ahead; a
    DataError (one line, exit 2) when not."""
    from shared.io import atomic_write_text

    module = load_case(args.case)
    out = run_folder(f"check/{args.case}", args.out)
    args.out = out
    markdown = module.check(args)
    path = atomic_write_text(out / "data_report.md", f"# Data check: {args.case}\n\n{markdown}\n")
    print(markdown)
    print(f"\nwrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "list":
            print("cases:")
            for name in available_cases():
                print(f"  {name:22s} {load_case(name).SUMMARY}")
            print("benchmarks:")
            for name, path in available_benchmarks().items():
                print(f"  {name:22s} benchmarks/{path.name}")
            return 0
        if args.command == "run":
            if args.case == "all":
                return run_all(args)
            module = load_case(args.case)
            metrics_path = Path(module.run(args))
            print(f"wrote {metrics_path} and {metrics_path.parent / 'report.md'}")
            return 0
        if args.command == "check":
            return check_case(args)
        if args.command == "bench":
            names = list(available_benchmarks()) if args.bench == "all" else [args.bench]
            for name in names:
                if args.bench == "all":
                    bench_args = _bench_args(name, args.quick, None)
                else:
                    bench_args = args
                if bench_args.out is None:
                    bench_args.out = run_folder(f"bench/{name}", None)
                print(f"\n=== casebook bench {name} ===", flush=True)
                result = load_benchmark(name).run(bench_args)
                print(f"wrote {result}")
            return 0
        if args.command == "drill":
            from casebook import drill

            return drill.main(args, list(available_cases()))
        if args.command == "ui":
            from casebook.ui import serve_ui

            serve_ui(args.runs, args.port)
            return 0
        if args.command == "compare":
            from casebook.ui import compare_cli

            print(compare_cli(args.run_a, args.run_b))
            return 0
        if args.command == "serve":
            if args.replicas is None and args.config is None:
                load_case(args.case).serve(args.artifact, args.host, args.port)
                return 0
            from casebook import serve_apps

            serve_apps.serve_case(
                args.case, args.artifact, args.host, args.port, args.replicas, args.config
            )
            return 0
    except CasebookError as e:
        print(f"casebook: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `casebook list | head`: the reader left early, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
