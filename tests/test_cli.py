"""The casebook command line: help, listing, and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from shared import cli


def test_help_offers_the_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "bench", "serve", "list"):
        assert command in out


def test_list_shows_existing_cases_only(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in cli.available_cases():
        assert name in out
    # A case whose package does not exist is not listed.
    for name in cli.CASE_PACKAGES:
        if name not in cli.available_cases():
            assert name not in out.split("benchmarks:")[0]


def test_unknown_case_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "no-such-case"])
    assert exc.value.code == 2


def test_casebook_error_is_one_line_and_exit_2():
    code = (
        "import sys; from shared import cli; from shared.errors import CasebookError\n"
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
