"""The run report every case writes: `metrics.json` (one shape for all cases) and `report.md`.

    report = RunReport(case="video-recommendation", data="builtin", preset="fast", seed=0,
                       out_dir=Path("runs/video-recommendation/20261124-101500"))
    report.table("retrieval", {"popularity": {"ndcg@10": 0.05}, "two_tower": {"ndcg@10": 0.09}},
                 baseline="popularity")
    report.production_model = "two_tower"
    report.figure(fig, "feedback_loop.png", "Coverage per round")
    report.write()

metrics.json:
    {"case": str, "data": str, "preset": str, "seed": int, "production_model": str,
     "tables": {TABLE: {MODEL: {METRIC: number}}}, "cohorts": {...}, "timings": {...}}

In report.md each table gets a column of relative deltas against its baseline row:
delta = (model - baseline) / |baseline| for every metric where the baseline is non-zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.io import atomic_write_json, atomic_write_text, to_jsonable


def format_number(x: Any) -> str:
    """Short human form: 4 significant digits, thousands separators for big numbers."""
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int) or (abs(x) >= 1000 and float(x).is_integer()):
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def markdown_table(rows: dict[str, dict[str, Any]], baseline: str | None = None) -> str:
    """A Markdown table of {model: {metric: value}}; with `baseline`, deltas in parentheses."""
    metrics: list[str] = []
    for row in rows.values():
        for m in row:
            if m not in metrics:
                metrics.append(m)
    lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    base = rows.get(baseline, {}) if baseline else {}
    for name, row in rows.items():
        cells = []
        for m in metrics:
            v = row.get(m)
            cell = format_number(v)
            b = base.get(m)
            if (
                baseline
                and name != baseline
                and isinstance(v, (int, float))
                and isinstance(b, (int, float))
                and b != 0
            ):
                cell += f" ({(v - b) / abs(b):+.1%})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class RunReport:
    """Collects a run's tables, cohorts, timings, prose and figures; `write()` saves them."""

    case: str
    data: str
    preset: str
    seed: int
    out_dir: Path
    production_model: str = ""
    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    cohorts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _sections: list[str] = field(default_factory=list)
    _baselines: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._started = time.perf_counter()

    def table(
        self,
        name: str,
        rows: dict[str, dict[str, Any]],
        baseline: str | None = None,
        note: str = "",
    ) -> None:
        """Add a model-vs-model table; `baseline` names the row the deltas are taken against."""
        self.tables[name] = to_jsonable(rows)
        self._baselines[name] = baseline
        text = f"### Table `{name}`\n\n"
        if note:
            text += note.strip() + "\n\n"
        text += markdown_table(self.tables[name], baseline)
        if baseline:
            text += f"\n\nDeltas in parentheses are relative to `{baseline}`."
        self._sections.append(text)

    def cohort(self, name: str, value: Any, markdown: str | None = None) -> None:
        """Add a cohort result (any JSON-able structure); `markdown` is how the report shows it."""
        self.cohorts[name] = to_jsonable(value)
        if markdown:
            self._sections.append(f"### Cohorts: {name}\n\n{markdown.strip()}")

    def timing(self, name: str, seconds: float) -> None:
        """Record a wall-clock duration in seconds."""
        self.timings[name] = round(float(seconds), 4)

    def section(self, title: str, markdown: str) -> None:
        """Add free prose or a pre-rendered table under a heading."""
        self._sections.append(f"## {title}\n\n{markdown.strip()}")

    def figure(self, fig: Any, filename: str, caption: str) -> Path:
        """Save a matplotlib figure as PNG beside the report and embed it."""
        path = self.out_dir / filename
        fig.savefig(path, dpi=110, bbox_inches="tight")
        try:
            import matplotlib.pyplot as plt

            plt.close(fig)
        except ImportError:  # pragma: no cover - matplotlib is a core dependency
            pass
        self._sections.append(f"![{caption}]({filename})\n\n*{caption}*")
        return path

    def metrics(self) -> dict[str, Any]:
        """The metrics.json document."""
        doc = {
            "case": self.case,
            "data": self.data,
            "preset": self.preset,
            "seed": int(self.seed),
            "production_model": self.production_model,
            "tables": self.tables,
            "cohorts": self.cohorts,
            "timings": self.timings,
        }
        if self.extra:
            doc["extra"] = to_jsonable(self.extra)
        return doc

    def write(self) -> Path:
        """Write metrics.json and report.md atomically; return the metrics.json path."""
        self.timing("total_s", time.perf_counter() - self._started)
        head = (
            f"# {self.case}: run report\n\n"
            f"data `{self.data}`, preset `{self.preset}`, seed {self.seed}, "
            f"production model `{self.production_model or 'n/a'}`, "
            f"{self.timings['total_s']:.1f} s\n"
        )
        timing_rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in self.timings.items())
        body = "\n\n".join(self._sections)
        tail = f"## Timings (s)\n\n| stage | seconds |\n|---|---|\n{timing_rows}\n"
        atomic_write_text(self.out_dir / "report.md", f"{head}\n{body}\n\n{tail}")
        return atomic_write_json(self.out_dir / "metrics.json", self.metrics())
