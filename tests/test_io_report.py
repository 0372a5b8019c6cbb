"""Atomic writes and the run report's metrics.json shape."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from shared import io
from shared.report import RunReport, markdown_table


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "f.json"
    io.atomic_write_json(path, {"x": 1})
    io.atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]  # no temp files left


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    io.atomic_write_text(path, "old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(OSError):
        io.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        io.atomic_write_json(tmp_path / "f.json", {"x": float("nan")})


def test_run_report_writes_the_shared_shape(tmp_path):
    r = RunReport(case="demo", data="builtin", preset="fast", seed=3, out_dir=tmp_path / "run")
    r.table(
        "retrieval",
        {"popularity": {"ndcg@10": 0.1}, "model": {"ndcg@10": np.float32(0.15)}},
        baseline="popularity",
    )
    r.production_model = "model"
    r.cohort("users", {"new": {"ndcg@10": float("nan")}})
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    r.figure(fig, "line.png", "a line")
    path = r.write()
    doc = json.loads(path.read_text())
    assert set(doc) >= {"case", "data", "preset", "seed", "production_model", "tables", "cohorts"}
    assert doc["tables"]["retrieval"]["model"]["ndcg@10"] == pytest.approx(0.15)
    assert doc["cohorts"]["users"]["new"]["ndcg@10"] is None  # NaN becomes null, not invalid JSON
    report = (tmp_path / "run" / "report.md").read_text()
    assert "(+50.0%)" in report and "![a line](line.png)" in report
    assert (tmp_path / "run" / "line.png").stat().st_size > 0


def test_markdown_table_without_baseline():
    text = markdown_table({"a": {"m": 1234567.0, "n": 0.5}})
    assert "1,234,567" in text and "0.5" in text


def test_first_line_of_an_error():
    from shared.errors import CasebookError, first_line

    assert first_line(CasebookError("bad file x.csv\nTraceback ...")) == "bad file x.csv"
    assert first_line(ValueError("\n  shape mismatch  \n")) == "shape mismatch"
    assert first_line(KeyError()) == "KeyError"


def test_staged_removes_a_failed_build_and_keeps_a_finished_one(tmp_path):
    import os

    import pytest

    from shared.io import staged

    target = tmp_path / "model"
    with pytest.raises(RuntimeError), staged(target) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_bytes(b"half")
        raise RuntimeError("crash mid-build")
    assert list(tmp_path.iterdir()) == []  # nothing half-built is left behind
    with staged(target) as tmp:
        tmp.write_text("done")
        os.replace(tmp, target)
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and target.read_text() == "done"
