"""What this checkout holds: the cases and benchmarks, found by scanning, and the flags every
case's `run` shares.

The command (casebook/cli.py), the failure drills (casebook/drill.py) and the serving glue
(casebook/serve_apps.py) all find cases here, so none of them imports another to do it.

A case plugs in by existing: every `cases/<package>/cli.py`, named on the command line with
`_` -> `-`. A benchmark plugs in as `benchmarks/<module>.py` with a `NAME = "..."` line.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from shared.errors import CasebookError

REPO_ROOT = Path(__file__).resolve().parent.parent
CASES_DIR = REPO_ROOT / "cases"
BENCH_DIR = REPO_ROOT / "benchmarks"


def available_cases() -> dict[str, str]:
    """The cases in this checkout, {cli name: package}: every `cases/<package>/cli.py`, sorted."""
    return {
        path.parent.name.replace("_", "-"): path.parent.name
        for path in sorted(CASES_DIR.glob("*/cli.py"))
        if path.parent.name.isidentifier() and (path.parent / "__init__.py").is_file()
    }


def load_case(name: str) -> ModuleType:
    """Import a case's cli module by its command-line name."""
    cases = available_cases()
    if name not in cases:
        known = ", ".join(cases) or "none"
        raise CasebookError(f"unknown case {name!r}; available: {known}")
    return importlib.import_module(f"cases.{cases[name]}.cli")


def available_benchmarks() -> dict[str, Path]:
    """Benchmarks in `benchmarks/`, {NAME: file}, found without importing them (heavy imports)."""
    found = {}
    for path in sorted(BENCH_DIR.glob("*.py")):
        for line in path.read_text().splitlines():
            if line.startswith("NAME = "):
                found[line.split("=", 1)[1].strip().strip("\"'")] = path
                break
    return found


def load_benchmark(name: str) -> ModuleType:
    """Import a benchmark module from its file (benchmarks/ is not an installed package)."""
    benches = available_benchmarks()
    if name not in benches:
        raise CasebookError(
            f"unknown benchmark {name!r}; available: {', '.join(benches) or 'none'}"
        )
    path = benches[name]
    spec = importlib.util.spec_from_file_location(f"casebook_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def add_common_run_flags(p: argparse.ArgumentParser, presets: tuple[str, ...]) -> None:
    """The `run` flags every case shares: --preset (the first preset is the default), --data,
    --out, --seed."""
    p.add_argument(
        "--preset",
        default=presets[0] if presets else None,
        choices=presets or None,
        help=f"configuration preset (default: {presets[0] if presets else 'none'})",
    )
    p.add_argument(
        "--data",
        default="builtin",
        help="data source: 'builtin' (generated, offline) or FORMAT:PATH for real data",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default runs/<case>/<time>)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for data, splits and training")
