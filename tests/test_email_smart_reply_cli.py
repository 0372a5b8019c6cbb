"""`casebook run email-smart-reply` errors: one line on stderr, exit code 2, no traceback."""

import pytest

from casebook.cli import main


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "xlsx:x.xlsx"], "FORMAT one of"),
        (["--data", "dailydialog:/nonexistent/dd.txt"], "not found"),
        (["--data", "mbox:/nonexistent/box"], "not found"),
        (["--data", "maildir:/nonexistent"], "not a Maildir"),
    ],
)
def test_bad_data_is_one_line_exit_2(tmp_path, capsys, extra, message):
    code = main(["run", "email-smart-reply", "--preset", "tiny", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_binary_and_empty_files_refused(tmp_path, capsys):
    b = tmp_path / "b.txt"
    b.write_bytes(b"\x00\x01binary\x02")
    assert (
        main(
            [
                "run",
                "email-smart-reply",
                "--preset",
                "tiny",
                "--out",
                str(tmp_path),
                "--data",
                f"dailydialog:{b}",
            ]
        )
        == 2
    )
    assert "binary" in capsys.readouterr().err
    e = tmp_path / "e.txt"
    e.write_text("only one turn __eou__\n")
    assert (
        main(
            [
                "run",
                "email-smart-reply",
                "--preset",
                "tiny",
                "--out",
                str(tmp_path),
                "--data",
                f"dailydialog:{e}",
            ]
        )
        == 2
    )
    assert "no (message, reply) pairs" in capsys.readouterr().err


def test_bad_test_file_and_preset(tmp_path, capsys):
    good = tmp_path / "dd.txt"
    good.write_text("".join(f"Hi {i} . __eou__ Hello {i} . __eou__\n" for i in range(60)))
    assert (
        main(
            [
                "run",
                "email-smart-reply",
                "--preset",
                "tiny",
                "--out",
                str(tmp_path),
                "--data",
                f"dailydialog:{good}",
                "--test",
                "pairs:/nonexistent.tsv",
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse refuses an unknown preset itself
        main(["run", "email-smart-reply", "--preset", "huge"])
    assert e.value.code == 2


def test_listed(capsys):
    assert main(["list"]) == 0
    assert "email-smart-reply" in capsys.readouterr().out


def test_bad_time_cap(tmp_path, capsys):
    code = main(
        ["run", "email-smart-reply", "--preset", "tiny", "--out", str(tmp_path), "--time-cap", "0"]
    )
    assert code == 2 and "--time-cap" in capsys.readouterr().err


def test_bad_context_turns(tmp_path, capsys):
    code = main(
        ["run", "email-smart-reply", "--preset", "tiny", "--out", str(tmp_path)]
        + ["--context-turns", "9"]
    )
    assert code == 2 and "--context-turns" in capsys.readouterr().err
