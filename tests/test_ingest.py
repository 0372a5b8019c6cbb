"""shared.ingest: what real files bring (encodings, line endings, headers, quoted newlines, bad
rows) is read or skipped and counted, exact duplicates go before the split, and the relative
duplicate limit of the gate passes data that repeats itself everywhere but not a retried batch."""

from __future__ import annotations

import codecs

import numpy as np
import pytest

from shared.errors import DataError
from shared.gate import ColumnSpec, Schema, build_reference, check_batch
from shared.ingest import (
    LoadLog,
    data_section,
    decode,
    dedupe,
    parse_binary,
    parse_spec,
    read_table,
    read_text,
    split_lines,
)


@pytest.mark.parametrize(
    "raw, text, encoding",
    [
        ("naïve café".encode(), "naïve café", "utf-8"),
        (codecs.BOM_UTF8 + "naïve".encode(), "naïve", "utf-8-sig"),
        ("naïve £5 – ok".encode("utf-16"), "naïve £5 – ok", "utf-16"),
        ("naïve £5 – ok".encode("cp1252"), "naïve £5 – ok", "cp1252"),
        (b"caf\xe9 \x81", "café \x81", "latin-1"),  # 0x81 is undefined in cp1252
    ],
)
def test_decode_reads_the_encodings_files_come_in(raw, text, encoding):
    assert decode(raw, "f") == (text, encoding)


def test_decode_refuses_a_binary_file():
    with pytest.raises(DataError, match="binary"):
        decode(b"PK\x03\x04\x00\x00zip", "archive.zip")


def test_split_lines_keeps_characters_that_splitlines_would_cut():
    assert split_lines("a\r\nb\rc\nd\x85e\u2028f\n") == ["a", "b", "c", "d\x85e\u2028f"]


def _write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_read_table_handles_the_quirks_of_real_files(tmp_path):
    long_text = "x" * 300_000  # over csv's 128 KB default field limit
    text = (
        "\ufeffID;Comment_Text;Toxic;extra\r\n"
        '1;"line one\r\nline two";1;a\r\n'
        "\r\n"
        "   ;   ;  ;  \r\n"
        "2;Grüße aus Köln;false;b\r\n"
        "3\r\n"
        f"4;{long_text};0;c\r\n"
    )
    path = _write(tmp_path / "c.csv", text)
    log = LoadLog("csv:c.csv")
    table = read_table(path, log, known=("comment_text",), min_fields=3)
    assert table.header == ["id", "comment_text", "toxic", "extra"]
    assert table.delimiter == ";"
    t = table.column(("text", "comment_text"), "text")
    assert [r[t] for _, r in table] == ["line one\r\nline two", "Grüße aus Köln", long_text]
    # Line numbers are where each row starts in the file (the quoted field spans lines 2-3).
    assert table.lines == [2, 6, 8]
    assert log.rows_read == 6 and log.rows_kept == 3
    assert log.n_skipped == {"blank row": 2, "fewer than 3 fields": 1}
    assert log.skipped["blank row"] == [4, 5]
    assert log.skipped["fewer than 3 fields"] == [7]
    assert "line 7" in log.markdown()


def test_read_table_without_a_header_and_in_latin_1(tmp_path):
    path = _write(tmp_path / "pairs.tsv", "caf\xe9\tyes\nna\xefve\tno\n", "latin-1")
    log = LoadLog("tsv")
    table = read_table(path, log, known=("message",))
    assert table.header == [] and table.delimiter == "\t"
    assert [r for _, r in table] == [["café", "yes"], ["naïve", "no"]]
    assert log.encoding == "cp1252" and "not UTF-8" in log.notes[0]
    with pytest.raises(DataError, match="no message column"):
        table.column(("message",), "message")


def test_a_file_with_no_usable_row_is_one_clear_error(tmp_path):
    path = _write(tmp_path / "empty.csv", "text,label\n\n  \n")
    with pytest.raises(DataError, match="no usable rows"):
        read_table(path, LoadLog("csv"), known=("text",))
    with pytest.raises(DataError, match="not found"):
        read_text(tmp_path / "missing.csv")


@pytest.mark.parametrize(
    "value, label",
    [
        ("1", 1), ("0", 0), (" TRUE ", 1), ("false", 0), ("yes", 1), ("No", 0), ('"1"', 1),
        ("spam", 1), ("HAM", 0), ("0.66", 1), ("0.2", 0), ("1.0", 1),
        ("2", None), ("-1", None), ("maybe", None), ("", None), (None, None),
    ],
)  # fmt: skip
def test_parse_binary(value, label):
    assert parse_binary(value, positive=("spam",), negative=("ham",)) == label


def test_dedupe_removes_copies_and_resolves_conflicts_by_majority():
    keys = ["a", "b", "a", "c", "c", "d", "d", "d", "e"]
    y = np.array([1, 0, 1, 1, 0, 1, 1, 0, 0])
    log = LoadLog("t")
    log.rows_read = len(keys)
    keep, y_kept = dedupe(keys, y, log)
    # a: a copy (one removed); c: a tie (both dropped); d: majority 1 (two removed).
    assert keep.tolist() == [0, 1, 5, 8]
    assert y_kept.tolist() == [1, 0, 1, 0]
    assert log.removed == {
        "exact duplicates": 1,
        "conflicting labels (majority kept)": 2,
        "conflicting labels (tie, dropped)": 2,
    }
    assert log.rows_kept == 4
    assert "`d (1: 2, 0: 1)`" in log.markdown()


def test_dedupe_multilabel_and_unlabelled():
    y = np.array([[1, 0], [1, 0], [0, 1]])
    keep, y_kept = dedupe(["x", "x", "y"], y)
    assert keep.tolist() == [0, 2] and y_kept.tolist() == [[1, 0], [0, 1]]
    keep, none = dedupe(["x", "y", "x"], None)
    assert keep.tolist() == [0, 1] and none is None


def test_parse_spec_takes_column_options():
    spec = parse_spec("csv:~/posts.csv?text=body&label=is_toxic", ("csv",), ("text", "label"))
    assert spec.fmt == "csv" and spec.path.name == "posts.csv"
    assert spec.options == {"text": "body", "label": "is_toxic"}
    with pytest.raises(DataError, match="unknown option 'user'"):
        parse_spec("csv:p.csv?user=x", ("csv",), ("text", "label"))
    with pytest.raises(DataError, match="FORMAT one of csv"):
        parse_spec("tsv:p.tsv", ("csv",))


def test_data_section_shows_every_step():
    log = LoadLog("csv:x.csv", encoding="utf-8", rows_read=10)
    log.skip(3, "empty text")
    log.remove("exact duplicates", 2, ["hello (x3)"])
    md = data_section(log, {"train": 5, "val": 1, "test": 1}, {"spam": {"train": 0.2}}, ["pass"])
    for part in ("| read | 10 |", "| skipped: empty text | 1 |", "| kept | 7 |", "`hello (x3)`",
                 "train 5, val 1, test 1 rows", "| spam | 20.00% |", "- pass"):  # fmt: skip
        assert part in md


SCHEMA = Schema(columns={"text": ColumnSpec("str")}, key=("text",))


def _texts(rng, n: int, repeat: float) -> np.ndarray:
    """n texts of which a share `repeat` are copies of earlier ones (spam campaigns)."""
    base = np.array([f"message {i}" for i in range(n)], dtype=object)
    copies = rng.random(n) < repeat
    base[copies] = base[rng.integers(0, n, copies.sum())]
    return base


def test_gate_judges_duplicates_against_the_datas_own_rate():
    rng = np.random.default_rng(0)
    reference = build_reference({"text": _texts(rng, 2000, 0.08)}, SCHEMA)
    assert reference.duplicate_rate > 0.05
    # Another part of the same data repeats itself as much: passes (an absolute 2% would not).
    same = check_batch({"text": _texts(rng, 2000, 0.08)}, SCHEMA, reference)
    assert same.passed, same.report()
    # A retried batch (every row twice) is still refused.
    clean = _texts(rng, 1000, 0.08)
    retried = check_batch({"text": np.concatenate([clean, clean])}, SCHEMA, reference)
    assert [c.name for c in retried.failed] == ["duplicate_rate"]
    # A reference from older runs without the field keeps the absolute limit.
    reference.duplicate_rate = None
    assert not check_batch({"text": _texts(rng, 2000, 0.08)}, SCHEMA, reference).passed
