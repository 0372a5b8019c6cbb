"""The keyboard's loaders on the quirks of real files, every file written by the test: a folder of
text in any encoding and extension (text:), chat logs (messages:, lines or a csv column), the
misspelling sets (tsv:, birkbeck:, norvig:), and `casebook check mobile-keyboard`."""

import codecs

import pytest

from casebook import cli as casebook_cli
from cases.mobile_keyboard.data import (
    LINE_CAP,
    KeyboardTextGenerator,
    builtin_corpus,
    load_corpus,
    load_data,
    load_messages,
    load_spell_pairs,
    tokenize,
)
from shared.errors import DataError
from shared.ingest import LoadLog


def _prose(marker: str, n: int = 300) -> str:
    """`n` lines of English prose carrying a word no other file has."""
    line = "The {m} cat sat on the mat and it was happy. Then the dog ran to the park; it barked"
    return "\n".join(line.format(m=marker) for _ in range(n)) + "\n"


def _words(corpus) -> set[str]:
    return {t for part in (corpus.train, corpus.val, corpus.test) for s in part for t in s}


def _unique_messages(n: int) -> list[str]:
    seen, out = set(), []
    for m in KeyboardTextGenerator(5).messages(4 * n):
        key = " ".join(tokenize(m))
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out[:n]


@pytest.fixture
def folder(tmp_path):
    """Every quirk of a folder people have: encodings, extensions, line endings, nesting,
    hidden and documentation files, a binary, empty files, a copy, a long line, Russian."""
    d = tmp_path / "texts"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / "a.txt").write_text(_prose("alphaword"))
    (d / "b.md").write_bytes(codecs.BOM_UTF8 + _prose("bravoword").replace("\n", "\r\n").encode())
    latin = (
        _prose("charlieword")
        .replace("happy", "happy at the caf\xe9 \u2019cause")
        .replace("\n", "\r")
    )
    (d / "c").write_bytes(latin.encode("cp1252"))  # no extension, Windows-1252, CR only
    (d / "d.text").write_bytes(_prose("deltaword").encode("utf-16"))  # UTF-16 with a BOM
    (d / "sub" / "deeper" / "e.txt").write_text(_prose("echoword"))
    long_line = " ".join(["foxtrotword"] * (LINE_CAP // 5)) + "\n"
    (d / "f.txt").write_text(long_line + _prose("golfword"))
    (d / "copy of a.txt").write_bytes(_prose("alphaword").replace("\n", "\r\n").encode("utf-16"))
    (d / "empty.txt").write_text("")
    (d / "blank.txt").write_text("  \n\t\n\r\n")
    (d / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (d / ".git" / "config").write_text("[core]\n\tbare = false\n" * 50)
    (d / "README").write_text(_prose("readmeword"))
    (d / "ru.txt").write_text("Привет, как дела? Всё хорошо, спасибо.\n" * 40)
    return d


def test_text_folder_reads_every_encoding_and_extension(folder):
    log = LoadLog("text:folder")
    corpus = load_corpus(folder, log=log)
    words = _words(corpus)
    for w in ("alphaword", "bravoword", "charlieword", "deltaword", "echoword", "golfword"):
        assert w in words, w
    # Documentation and hidden files are not part of the corpus.
    assert "readmeword" not in words and "bare" not in words
    assert "caf" in words  # Windows-1252 decoded: café breaks at the accent, as documented
    # Files are numbered in sorted order (the number is the skip's "line").
    assert log.n_skipped == {"empty file": 2, "binary file": 1}
    assert log.skipped["binary file"] == [9] and log.skipped["empty file"] == [3, 7]
    notes = "\n".join(log.notes)
    assert "photo.png (binary file)" in notes and "empty.txt (empty file)" in notes
    assert "README" in notes and ".DS_Store" not in notes and "config" not in notes
    assert "read as cp1252: c" in notes and "utf-16" in notes
    assert "ru.txt" in notes and "a-z" in notes  # non-English text is named, not a crash
    assert f"1 lines over {LINE_CAP:,} characters wrapped" in notes and "f.txt:1" in notes
    # A copy (other encoding, other line endings) is removed with its lines, once.
    assert log.removed == {"identical files (lines)": 300}
    assert log.examples["identical files (lines)"] == ["copy of a.txt = a.txt"]
    # Rows are lines: every line of a read file, one row per skipped file.
    assert log.rows_read == 300 * 7 + 1 + 40 + 3  # 7 files of prose, the long line, ru.txt
    n = corpus.n_tokens()
    assert n["train"] > n["val"] > 0 and n["test"] > 0
    assert load_corpus(folder).test == corpus.test  # deterministic


def test_long_line_is_wrapped_not_lost(tmp_path):
    p = tmp_path / "one.txt"
    p.write_text(" ".join(["word"] * 30_000) + "\n" + _prose("x", 2000))
    corpus = load_corpus(p)
    assert sum(t == "word" for s in corpus.train + corpus.val + corpus.test for t in s) == 30_000


def test_folder_with_nothing_usable_is_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match="has no text files"):
        load_corpus(empty)
    bins = tmp_path / "bins"
    bins.mkdir()
    (bins / "a.pdf").write_bytes(b"%PDF-1.4\x00\x00binary")
    (bins / "b.txt").write_text("")
    with pytest.raises(DataError, match=r"no text to read \(#1 a.pdf \(binary file\)"):
        load_corpus(bins)
    ru = tmp_path / "ru.txt"
    ru.write_text("Привет, как дела?\n" * 500)
    with pytest.raises(DataError, match="0 English words in 500 lines"):
        load_corpus(ru)
    with pytest.raises(DataError, match="0 English words"):
        load_messages(ru)


def _chat_lines() -> list[str]:
    msgs = _unique_messages(300)
    return msgs + [
        "",
        "   \t",
        "OK, see you at FIVE!",
        "ok see you at five",  # the same message after tokenizing: removed
        "ok... see you at five?",
        "Привет",  # no English word: skipped with its line number
        "caf\xe9 tonight",
        " ".join(["long"] * LINE_CAP),  # cut at LINE_CAP characters
    ]


def test_messages_file_dedupes_before_the_split(tmp_path):
    lines = _chat_lines()
    p = tmp_path / "chat.log"
    p.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    log = LoadLog("messages:chat.log")
    corpus = load_messages(p, log=log)
    assert log.rows_read == len(lines)
    assert log.n_skipped == {"blank message": 2, "no English words": 1}
    assert log.skipped["blank message"] == [301, 302] and log.skipped["no English words"] == [306]
    assert log.removed == {"exact duplicates": 2}
    assert log.examples["exact duplicates"] == ["OK, see you at FIVE! (x3)"]
    assert f"1 messages over {LINE_CAP:,} characters cut (lines 308)" in log.notes
    # Every message sits in exactly one part, once: none in both train and test.
    keys = {" ".join(tokenize(m)) for m in lines if tokenize(m) and not m.startswith("long")}
    parts = [{" ".join(s) for s in getattr(corpus, k)} for k in ("train", "val", "test")]
    for k in keys - {"ok see you at five", "caf tonight"}:
        assert sum(k in part for part in parts) == 1, k
    five = [s for k in ("train", "val", "test") for s in getattr(corpus, k)]
    assert five.count(["ok", "see", "you", "at", "five"]) == 1
    assert sum(s == ["long"] * (LINE_CAP // 5) for s in five) == 1


def test_messages_latin1_and_cr_line_ends(tmp_path):
    p = tmp_path / "chat.txt"
    p.write_bytes("\r".join(_unique_messages(200) + ["caf\xe9 at noon"]).encode("latin-1"))
    log = LoadLog("m")
    corpus = load_messages(p, log=log)
    assert log.rows_read == 201 and log.encoding in ("cp1252", "latin-1")
    assert ["caf", "at", "noon"] in corpus.train + corpus.val + corpus.test


def test_messages_csv_by_column_name(tmp_path):
    msgs = _unique_messages(200)
    rows = ["id;sender;body;sent_at"]  # extra columns, the text third, semicolons
    rows += [f'{i};sam;"{m}";2024-01-01' for i, m in enumerate(msgs)]
    rows += ['900;sam;"first line\nsecond line of one message";x', "901;sam;;x", "   ", "902;sam"]
    p = tmp_path / "export.csv"
    p.write_bytes(codecs.BOM_UTF8 + "\r\n".join(rows).encode("utf-8"))
    log = LoadLog("m")
    corpus = load_messages(p, column="Body", log=log)
    all_sents = corpus.train + corpus.val + corpus.test
    assert ["first", "line", "second", "line", "of", "one", "message"] in all_sents
    assert len(all_sents) == 201
    # The message with a newline spans lines 202-203; the empty body (line 204) and the short
    # row (line 206) are skipped with their file lines, the blank row too.
    assert log.skipped == {"blank message": [204, 206], "blank row": [205]}
    # Without ?text=, a header named like a message column is found; without one, a clear error.
    q = tmp_path / "msgs.tsv"
    q.write_text("when\tmessage\n" + "".join(f"t\t{m}\n" for m in msgs))
    assert len(load_messages(q).train) > 100
    r = tmp_path / "noheader.csv"
    r.write_text("".join(f"t,{m}\n" for m in msgs))
    with pytest.raises(DataError, match=r"messages:FILE\?text=COLUMN"):
        load_messages(r)


def test_spec_forms_and_the_data_section(tmp_path, folder):
    data = load_data(f"text:{folder}", n_messages=0)
    assert data.name == str(folder) and data.corpus.name == "texts"
    sec = data.section
    assert sec.startswith(f"Source: `text:{folder}`") and "| removed: identical files" in sec
    assert "Split: train" in sec and " sentences" in sec and "Tokens: train" in sec
    again = load_data(f"corpus:{folder}", n_messages=0)
    assert again.corpus.test == data.corpus.test
    with pytest.raises(DataError, match="takes no column"):
        load_data(f"text:{folder}?text=body", n_messages=0)
    with pytest.raises(DataError, match="text, corpus, messages"):
        load_data(f"csv:{folder}", n_messages=0)
    with pytest.raises(DataError, match="unknown option"):
        load_data(f"messages:{folder}?label=x", n_messages=0)


def test_builtin_messages_are_kept_as_generated():
    """The built-in stream is not deduplicated (the README's figures are measured on it); the
    section says how many messages repeat."""
    data = load_data("builtin", n_messages=600, seed=0)
    plain = builtin_corpus(600, 0)
    assert data.corpus.train == plain.train and data.corpus.test == plain.test
    assert "not deduplicated: 5 (0.8%) repeat" in data.section
    assert "| read | 600 | 100% |" in data.section


def test_spell_tsv_quirks(tmp_path):
    p = tmp_path / "set.tsv"
    rows = ["Correct\tNote\tMisspelling", "access\tx\tacess", "", "  \t ", "address\tadres",
            "\xe9t\xe9\tx\tete", "onlyone", "because\t\tbecuase"]  # fmt: skip
    p.write_bytes(codecs.BOM_UTF8 + "\r\n".join(rows).encode("utf-8"))
    log = LoadLog("tsv")
    stem, pairs = load_spell_pairs(f"tsv:{p}", log)
    # By header name in any order; extra columns ignored; lines 5 and 7 lack a column.
    assert pairs == [("acess", "access"), ("ete", "été"), ("becuase", "because")]
    assert log.skipped == {"blank row": [3, 4], "fewer than 2 fields": [7],
                           "empty misspelling or correct word": [5]}  # fmt: skip
    assert log.rows_read == 7 and stem == "set"
    # No header: misspelling, then correct; Latin-1; a first row of plain words is data.
    q = tmp_path / "plain.txt"
    q.write_bytes("wrong\theader\r\nacess\taccess\rcaf\tcaf\xe9\n".encode("latin-1"))
    assert load_spell_pairs(f"tsv:{q}")[1] == [
        ("wrong", "header"),
        ("acess", "access"),
        ("caf", "café"),
    ]


def test_spell_birkbeck_and_norvig_skip_bad_lines(tmp_path):
    bb = tmp_path / "missp.dat"
    text = "acess\n$Access\nacess\nacces 3\ntwo words here\n\n$\nlost\n$address\r\nadres\r\n"
    bb.write_bytes(codecs.BOM_UTF8 + text.encode())
    log = LoadLog("bb")
    assert load_spell_pairs(f"birkbeck:{bb}", log)[1] == [
        ("acess", "access"),
        ("acces", "access"),
        ("adres", "address"),
    ]
    assert log.skipped == {
        "misspelling before any $correct line": [1, 8],
        "more than one word": [5],
        "blank line": [6],
        "'$' with no correct word": [7],
    }
    nv = tmp_path / "errors.txt"
    nv.write_bytes(
        b"four: forer, fore*5\r\nno colon\r\n: orphan\r\nempty:\r\n\r\nyellow: yello\r\n"
    )
    log = LoadLog("nv")
    assert load_spell_pairs(f"norvig:{nv}", log)[1] == [
        ("forer", "four"),
        ("fore", "four"),
        ("yello", "yellow"),
    ]
    assert log.skipped == {"not 'correct: miss1, miss2'": [2, 3, 4], "blank line": [5]}
    assert "3 (misspelling, correct) pairs" in log.notes


def test_casebook_check_writes_the_report_and_refuses_nothing_usable(tmp_path, folder, capsys):
    out = tmp_path / "check"
    code = casebook_cli.main(
        ["check", "mobile-keyboard", "--data", f"text:{folder}", "--out", str(out)]
    )
    assert code == 0
    report = (out / "data_report.md").read_text()
    assert report.startswith("# Data check: mobile-keyboard") and "Tokens: train" in report
    assert "photo.png" in capsys.readouterr().out
    # --corpus is --data text:PATH.
    code = casebook_cli.main(
        ["check", "mobile-keyboard", "--corpus", str(folder), "--out", str(tmp_path / "c")]
    )
    assert code == 0 and (tmp_path / "c" / "data_report.md").read_text() == report
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    bins = tmp_path / "bins"
    bins.mkdir()
    (bins / "x.bin").write_bytes(b"\x00" * 10)
    for bad in (empty, bins):
        code = casebook_cli.main(
            ["check", "mobile-keyboard", "--data", f"text:{bad}", "--out", str(tmp_path / "x")]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("casebook: error: text:") and "\n" not in err


def test_only_cr_and_lf_end_a_line(tmp_path):
    """U+2028, U+0085 and form feeds sit inside lines of pasted text; str.splitlines would cut
    there and shift every block boundary after them."""
    p = tmp_path / "odd.txt"
    p.write_text(_prose("x").replace("Then", "Then\u2028\x85\x0c"))
    log = LoadLog("t")
    load_corpus(p, log=log)
    assert log.rows_read == 300
    m = tmp_path / "m.txt"
    m.write_text("\n".join(_unique_messages(200) + ["see you\u2028at nine"]))
    log = LoadLog("m")
    corpus = load_messages(m, log=log)
    assert (
        log.rows_read == 201
        and ["see", "you", "at", "nine"] in corpus.train + corpus.test + corpus.val
    )


def test_no_validation_text_is_an_error(tmp_path):
    """Validation chooses the model that ships: a split without it cannot run."""
    p = tmp_path / "book.txt"
    p.write_text(_prose("x", 2000))
    with pytest.raises(DataError, match="too small after splitting"):
        load_corpus(p, fractions=(0.9, 0.0, 0.1))
