"""Runs side by side: what a run left behind, summarised, and two runs' tables compared.

    summary = read_run("runs/mobile-keyboard/20261124-101500")   # metrics.json + registry record
    diff = compare_runs(read_run(a), read_run(b))
    print(comparison_text(diff))                                   # `casebook compare A B`

`casebook compare` prints `comparison_text`; `casebook ui` renders the same `compare_runs` result
as HTML. Everything below `read_run` / `find_runs` is a pure function of the dicts they return.

A difference is B - A; the relative difference (B - A) / |A| is None where A is zero or either
side is missing or not a number.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from shared.errors import CasebookError
from shared.report import format_number

SUMMARY_FIELDS = ("case", "data", "preset", "seed", "production_model", "headline", "promoted")
_SKIP_PARTS = {"artifact", "registry", "versions"}  # metrics.json files that are not runs


def find_runs(root: str | os.PathLike) -> list[Path]:
    """Every run folder under `root` (a folder holding metrics.json and report.md, outside any
    artifact or registry), newest name first within each case folder."""
    root = Path(root)
    found = []
    for path in root.rglob("metrics.json"):
        rel = path.relative_to(root).parts[:-1]
        if _SKIP_PARTS.intersection(rel) or not (path.parent / "report.md").is_file():
            continue
        found.append(path.parent)
    return sorted(found, key=lambda p: (str(p.parent), p.name), reverse=True)


def _record(registry: dict[str, Any]) -> dict[str, Any]:
    """The registry record of the run's version ({} when there is none to read)."""
    root, version = registry.get("registry"), registry.get("version")
    if not root or not version:
        return {}
    path = Path(root) / "versions" / f"{version}.record.json"
    try:
        rec = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def read_run(folder: str | os.PathLike) -> dict[str, Any]:
    """A run's summary: its metrics.json and its registry record, as one dict.

    Returns {"path", "name" (the folder's name, the run's UTC time for default runs), "case",
    "data", "preset", "seed", "production_model", "headline": "metric=value" (the metric its
    promotion was judged on, from the registry record; else the production model's first table
    figure), "promoted": True/False/None (None: the run registered nothing), "version",
    "tables", "timings"}.

    Raises CasebookError (one line) if the folder has no readable metrics.json.
    """
    folder = Path(folder)
    try:
        doc = json.loads((folder / "metrics.json").read_text("utf-8"))
        assert isinstance(doc, dict)
    except (OSError, ValueError, AssertionError):
        raise CasebookError(f"{folder}: no readable metrics.json (is it a run folder?)") from None
    registry = (doc.get("extra") or {}).get("registry") or {}
    record = _record(registry)
    return {
        "path": str(folder),
        "name": folder.name,
        "case": doc.get("case", ""),
        "data": doc.get("data", ""),
        "preset": doc.get("preset", ""),
        "seed": doc.get("seed"),
        "production_model": doc.get("production_model", ""),
        "headline": headline(doc, record),
        "promoted": registry.get("promoted") if registry else None,
        "version": registry.get("version"),
        "tables": doc.get("tables") or {},
        "timings": doc.get("timings") or {},
    }


def headline(doc: dict[str, Any], record: dict[str, Any]) -> str:
    """ "metric=value": the registry record's metric on cohort "all" (what promotion judged),
    else the production model's (or the "served" row's) first figure of the first test table;
    "" when neither exists."""
    cand = record.get("candidate") or {}
    if record.get("metric") and isinstance(cand.get("all"), (int, float)):
        return f"{record['metric']}={format_number(cand['all'])}"
    model = doc.get("production_model", "")
    for table, rows in (doc.get("tables") or {}).items():
        if table.startswith(("candidates", "validation")):
            continue
        row = rows.get(model) or rows.get("served")
        if row:
            metric, value = next(iter(row.items()))
            return f"{metric}={format_number(value)}"
    return ""


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _union(*keys: Any) -> list[str]:
    out: list[str] = []
    for ks in keys:
        out.extend(k for k in ks if k not in out)
    return out


def diff_values(a: Any, b: Any) -> tuple[float | None, float | None]:
    """(b - a, (b - a) / |a|): None where either is not a finite number; the relative one also
    None where a is 0."""
    if not (_number(a) and _number(b)):
        return None, None
    d = float(b) - float(a)
    return d, (d / abs(float(a)) if a != 0 else None)


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two runs' summaries (`read_run`) compared.

    Returns {"a": name, "b": name, "same_case": bool,
             "summary": [{"field", "a", "b", "same"}] for SUMMARY_FIELDS,
             "tables": [{"table", "rows": [{"model", "metric", "a", "b", "diff", "rel"}]}]},
    tables and rows in A's order, then those only B has; a value missing on one side is None.
    """
    summary = [
        {"field": f, "a": a.get(f), "b": b.get(f), "same": a.get(f) == b.get(f)}
        for f in SUMMARY_FIELDS
    ]
    tables = []
    ta, tb = a.get("tables") or {}, b.get("tables") or {}
    for name in _union(ta, tb):
        ra, rb = ta.get(name) or {}, tb.get(name) or {}
        rows = []
        for model in _union(ra, rb):
            ma, mb = ra.get(model) or {}, rb.get(model) or {}
            for metric in _union(ma, mb):
                va, vb = ma.get(metric), mb.get(metric)
                d, rel = diff_values(va, vb)
                rows.append(
                    {"model": model, "metric": metric, "a": va, "b": vb, "diff": d, "rel": rel}
                )
        tables.append({"table": name, "rows": rows})
    return {
        "a": a.get("path", a.get("name")),
        "b": b.get("path", b.get("name")),
        "same_case": a.get("case") == b.get("case"),
        "summary": summary,
        "tables": tables,
    }


def format_diff(d: float | None, rel: float | None) -> str:
    """'+0.0123 (+4.1%)', '+3' or '' for no difference to show."""
    if d is None:
        return ""
    text = f"{d:+.4g}" if not float(d).is_integer() else f"{int(d):+,}"
    return text + (f" ({rel:+.1%})" if rel is not None and d != 0 else "")


def _cell(x: Any) -> str:
    return "-" if x is None else format_number(x)


def comparison_text(diff: dict[str, Any]) -> str:
    """`compare_runs`'s result as plain-text tables for a terminal."""
    lines = [f"A: {diff['a']}", f"B: {diff['b']}"]
    if not diff["same_case"]:
        lines.append("note: the runs are of different cases; only shared tables line up")
    lines.append("")
    lines += _text_table(
        ["", "A", "B", "same"],
        [
            [s["field"], _cell(s["a"]), _cell(s["b"]), "yes" if s["same"] else "NO"]
            for s in diff["summary"]
        ],  # fmt: skip
    )
    for t in diff["tables"]:
        lines += ["", f"table {t['table']}"]
        rows = [
            [
                r["model"],
                r["metric"],
                _cell(r["a"]),
                _cell(r["b"]),
                format_diff(r["diff"], r["rel"]),
            ]
            for r in t["rows"]
        ]
        lines += _text_table(["model", "metric", "A", "B", "B - A"], rows)
    return "\n".join(lines)


def _text_table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    return out + [fmt.format(*map(str, r)) for r in rows]
