"""The casebook command line: discovery by scanning, help, listing, one-line errors (exit 2)."""

import argparse
import subprocess
import sys
import types
from pathlib import Path

import pytest

from casebook import catalog, cli


def test_help_offers_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "bench", "serve", "list"):
        assert command in out


def test_cases_and_benchmarks_are_found_by_scanning(tmp_path, monkeypatch):
    # The real checkout: every cases/<pkg>/cli.py, named with '-' for '_'.
    expected = {p.parent.name.replace("_", "-") for p in catalog.CASES_DIR.glob("*/cli.py")}
    assert set(cli.available_cases()) == expected
    assert set(cli.available_benchmarks()) >= {"retrieval"}
    # A new case appears by existing; a folder without cli.py (or not a package) does not.
    for name, files in {
        "new_case": ["__init__.py", "cli.py"],
        "half_written": ["__init__.py", "data.py"],
        "not-a-package": ["cli.py"],
    }.items():
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_text("")
    monkeypatch.setattr(catalog, "CASES_DIR", tmp_path)
    assert cli.available_cases() == {"new-case": "new_case"}


def test_list_shows_every_case(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    cases_part = out.split("benchmarks:")[0]
    for name in cli.available_cases():
        assert name in cases_part


def test_run_all_runs_every_case_found(tmp_path, monkeypatch, capsys):
    ran = []

    def fake(name, fail=False):
        def run(args):
            ran.append((name, args.seed, args.out))
            if fail:
                raise cli.CasebookError("no data")
            out = Path(args.out)
            out.mkdir(parents=True)
            (out / "metrics.json").write_text(
                '{"production_model": "m", "tables": {"t": {"m": {"acc": 0.5}}}}'
            )
            return out / "metrics.json"

        return types.SimpleNamespace(
            SUMMARY=name, PRESETS=("fast",), add_arguments=lambda p: None, run=run
        )

    modules = {"a-case": fake("a-case"), "b-case": fake("b-case", fail=True)}
    monkeypatch.setattr(cli, "available_cases", lambda: {n: n for n in modules})
    monkeypatch.setattr(cli, "load_case", modules.__getitem__)
    code = cli.run_all(argparse.Namespace(seed=3, out=tmp_path))
    assert code == 2  # one case failed: reported, the others still ran
    assert ran == [("a-case", 3, tmp_path / "a-case"), ("b-case", 3, tmp_path / "b-case")]
    captured = capsys.readouterr()
    assert "| a-case | m | t: acc=0.5 |" in captured.out
    assert "b-case: error: no data" in captured.err


def test_unknown_case_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "no-such-case"])
    assert exc.value.code == 2


def test_casebook_error_is_one_line_and_exit_2():
    code = (
        "import sys; from casebook import cli; from shared.errors import CasebookError\n"
        "def bad(name): raise CasebookError('file x.csv not found')\n"
        "cli.load_benchmark = bad\n"
        "sys.argv = ['casebook', 'bench', 'all', '--quick']\n"
        "cli.available_benchmarks = lambda: {'b': cli.Path('b.py')}\n"
        "sys.exit(cli.main())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "casebook: error: file x.csv not found"
    assert "Traceback" not in proc.stderr


def test_python_m_casebook_lists():
    proc = subprocess.run(
        [sys.executable, "-m", "casebook", "list"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "cases:" in proc.stdout and "retrieval" in proc.stdout


def test_check_prints_and_writes_the_data_report(tmp_path, monkeypatch, capsys):
    seen = {}

    def check(args):
        seen["args"] = args
        if args.data == "bad:x":
            raise cli.CasebookError("bad:x has no usable rows; give a file with a text column")
        return "| step | rows |\n| read | 3 |"

    module = types.SimpleNamespace(
        SUMMARY="a", PRESETS=("fast",), add_arguments=lambda p: None, check=check
    )
    monkeypatch.setattr(cli, "available_cases", lambda: {"a-case": "a_case"})
    monkeypatch.setattr(cli, "load_case", lambda name: module)
    assert cli.main(["check", "a-case", "--data", "csv:x.csv", "--out", str(tmp_path)]) == 0
    assert seen["args"].preset == "fast" and seen["args"].out == tmp_path
    report = (tmp_path / "data_report.md").read_text()
    assert report.startswith("# Data check: a-case") and "| read | 3 |" in report
    assert "| read | 3 |" in capsys.readouterr().out
    assert cli.main(["check", "a-case", "--data", "bad:x", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "casebook: error: bad:x has no usable rows; give a file with a text column"
