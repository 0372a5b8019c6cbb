"""`casebook run/serve content-moderation` errors: one line on stderr and exit code 2."""

import pytest

from casebook.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_listed(capsys):
    assert main(["list"]) == 0
    assert "content-moderation" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--data", "nonsense:x.csv"], "FORMAT:PATH"),
        (["--data", "jigsaw:/no/such.csv"], "not found"),
        (["--data", "sms-spam:x.txt?text=body"], "no option"),
        (["--data", "olid:/no/such/folder"], "not a folder"),
        (["--data", "davidson:/no/such.csv"], "not found"),
        (["--eval", "hatecheck:/no/such.csv"], "not found"),
        (["--eval", "nonsense"], "FORMAT:PATH"),
        (["--train-minutes", "-1"], "positive"),
    ],
)
def test_run_errors(capsys, tmp_path, argv, words):
    code, err = _run(capsys, "run", "content-moderation", "--preset", "tiny",
                     "--out", str(tmp_path / "o"), *argv)  # fmt: skip
    assert code == 2
    assert err.startswith("casebook: error:") and words in err and "\n" not in err


def test_bad_csv_label_is_one_line(capsys, tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("text,label\nhello,purple\n")
    code, err = _run(capsys, "run", "content-moderation", "--data", f"csv:{p}",
                     "--out", str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and "label must be" in err and "\n" not in err


def test_serve_without_model(capsys, tmp_path):
    code, err = _run(capsys, "serve", "content-moderation", "--artifact", str(tmp_path / "none"))
    assert code == 2 and "no model" in err
