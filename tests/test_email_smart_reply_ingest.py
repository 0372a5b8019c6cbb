"""Smart reply on a user's own files: every loader with the quirks of real files (written here),
cleaning before the split, the split by thread and message, the gate judged against the rest of
the data, and `casebook check`."""

import csv
import io
import mailbox
from email.message import EmailMessage

import numpy as np
import pytest

from casebook.cli import main
from cases.email_smart_reply import data as D
from cases.email_smart_reply.config import get_config
from shared.errors import DataError

LONG = "x " * 15_000  # 30,000 characters: over MAX_TEXT_CHARS


def _csv_bytes(rows, encoding="utf-8-sig", delimiter=","):
    buf = io.StringIO(newline="")
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buf.getvalue().encode(encoding)


def test_csv_quirks(tmp_path):
    """BOM, CRLF, columns by alias in any order with extras, quoted newlines (an email with a
    quote and a signature), blank and whitespace-only rows, an empty reply, a short row, a long
    message, non-English text and a duplicate in other case and spacing."""
    rows = [
        ["id", "Response", "notes", "Message", "conversation_id"],  # line 1
        ["1", "Sure, see you then.", "a", "Can we meet at 3pm?", "t1"],  # line 2
        ["2", "Works for me!", "b", "Can we meet at 3pm?", "t2"],  # 3: same message, new reply
        [
            "3",
            "Sure, will do.\nI'll send them tonight.\n\n-- \nAlice\nSenior Analyst",
            "c",
            "Hi Ben,\n\nCould you send the slides?\n\nOn Tue, 5 May 2026, Ben wrote:\n> old",
            "t3",
        ],  # lines 4-14
        [],  # 15: empty
        ["  ", " ", "", "   ", ""],  # 16: whitespace only
        ["5", "   ", "d", "Anyone there?", "t5"],  # 17: empty reply
        ["6", "ok", "e", LONG, "t6"],  # 18: too long
        ["7", "Ja, gerne! Bis morgen.", "f", "Können wir uns morgen treffen?", "t7"],  # 19
        ["8", "はい、大丈夫です。", "g", "明日会えますか？", "t8"],  # 20
        ["9", "sure,  see you THEN.", "h", "can we meet at 3PM?", "t9"],  # 21: duplicate of 2
        ["10"],  # 22: short row
    ]
    f = tmp_path / "chat.csv"
    f.write_bytes(_csv_bytes(rows))
    d = D.clean_pairs(D.load_data(f"csv:{f}", get_config("tiny")))
    assert d.messages == [
        "Can we meet at 3pm?",
        "Can we meet at 3pm?",
        "Could you send the slides?",  # greeting and the quoted mail removed, one message
        "Können wir uns morgen treffen?",
        "明日会えますか？",
    ]
    assert d.replies[2] == "Sure, will do. I'll send them tonight."  # signature removed
    assert d.replies[:2] == ["Sure, see you then.", "Works for me!"]  # both replies kept
    assert len(set(d.threads.tolist())) == 5  # by conversation_id
    log = d.log
    assert log.encoding == "utf-8-sig" and log.rows_read == 11
    assert log.skipped["blank row"] == [15, 16]
    assert log.skipped["empty message or reply"] == [17, 22]
    assert log.skipped["message or reply over 20,000 characters"] == [18]
    assert log.removed == {"exact duplicates": 1} and log.rows_kept == 5
    assert "line 18" in log.markdown() and "see you then" in log.markdown()


def test_csv_latin1_tsv_aliases_and_column_options(tmp_path):
    f = tmp_path / "win.csv"  # Windows-1252 from a spreadsheet, no thread column
    f.write_bytes(
        _csv_bytes([["prompt", "answer"], ["Ça coûte 5€ ?", "Très bien — merci"]], "cp1252")
    )
    d = D.load_data(f"csv:{f}", get_config("tiny"))
    assert (d.messages, d.replies) == (["Ça coûte 5€ ?"], ["Très bien — merci"])
    assert d.log.encoding == "cp1252" and "not UTF-8" in d.log.markdown()
    t = tmp_path / "qa.tsv"  # tab-separated, reply column first, named by the ?suffix
    t.write_bytes(_csv_bytes([["a", "q", "x"], ["Fine.", "How are you?", "1"]], "utf-8", "\t"))
    d = D.load_data(f"csv:{t}?message=q&reply=a", get_config("tiny"))
    assert (d.messages, d.replies) == (["How are you?"], ["Fine."])
    with pytest.raises(DataError, match="no message column.*the file has a, q, x"):
        D.load_data(f"csv:{t}", get_config("tiny"))
    with pytest.raises(DataError, match="unknown option 'label'"):
        D.load_data(f"csv:{t}?label=a", get_config("tiny"))
    with pytest.raises(DataError, match="apply to csv: only"):
        D.load_data(f"pairs:{t}?message=q", get_config("tiny"))


def test_csv_with_no_usable_pair_is_one_line(tmp_path):
    f = tmp_path / "empty.csv"
    f.write_bytes(_csv_bytes([["message", "reply"], ["Hello?", ""], ["", "Hi"]]))
    with pytest.raises(DataError, match=r"no \(message, reply\) pairs.*empty message or reply 2"):
        D.load_data(f"csv:{f}", get_config("tiny"))


def test_pairs_quirks(tmp_path):
    """Header, CRLF, Latin-1, a line without a tab, blank lines, a long line: skipped, counted."""
    text = (
        "message\treply\r\n"
        "Can we meet?\tSure.\r\n"  # line 2
        "no tab here\r\n"  # 3
        "   \r\n"  # 4
        f"{LONG}\tok\r\n"  # 5
        "Café à midi ?\tOui, très bien.\r\n"  # 6
        "Thanks!\tYou're\twelcome.\r\n"  # 7: later tabs belong to the reply
    )
    f = tmp_path / "p.tsv"
    f.write_bytes(text.encode("latin-1"))
    d = D.load_data(f"pairs:{f}", get_config("tiny"))
    assert d.messages == ["Can we meet?", "Café à midi ?", "Thanks!"]
    assert d.replies[2] == "You're welcome."
    assert d.log.skipped == {
        "no tab": [3],
        "blank line": [4],
        "message or reply over 20,000 characters": [5],
    }
    assert d.log.rows_read == 6 and d.log.encoding == "cp1252"


def test_dailydialog_quirks(tmp_path):
    f = tmp_path / "dd.txt"
    text = (
        "Hi . __eou__ Hello ! __eou__\r\n\r\n"
        "Only one turn . __eou__\r\nÇa va ? __eou__ Oui . __eou__\r\n"
    )
    f.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    d = D.load_data(f"dailydialog:{f}", get_config("tiny"))
    assert d.messages == ["Hi .", "Ça va ?"] and d.replies == ["Hello !", "Oui ."]
    assert d.log.skipped == {"blank line": [2], "fewer than two turns": [3]}


def _mail(mid, body, charset="utf-8", reply_to=None):
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = "a@x.com", "b@x.com", "Re", mid
    if reply_to:
        m["In-Reply-To"] = reply_to
    m.set_content(body.encode(charset), "text", "plain", cte="8bit")
    m.set_param("charset", "utf-8")  # declared utf-8 whatever the bytes are (a common lie)
    return m


def test_mbox_quirks(tmp_path):
    """A body in Latin-1 declared as UTF-8 is still read; a reply that is only quoted text is
    skipped and counted (by its position in the box)."""
    path = tmp_path / "box.mbox"
    box = mailbox.mbox(path)
    for m in (
        _mail("<1@x>", "Können wir uns um 3 treffen?\n", "latin-1"),
        _mail("<2@x>", "Ja, gerne.\n\n-- \nAlice\n", reply_to="<1@x>"),
        _mail("<3@x>", "> Ja, gerne.\n", reply_to="<2@x>"),
    ):
        box.add(m)
    box.flush()
    box.close()
    d = D.load_data(f"mbox:{path}", get_config("tiny"))
    assert (d.messages, d.replies) == (["Können wir uns um 3 treffen?"], ["Ja, gerne."])
    assert d.log.rows_read == 2 and sum(d.log.n_skipped.values()) == 1


def _data(messages, replies, threads, source="test"):
    n = len(messages)
    return D.SmartReplyData(
        list(messages), list(replies), np.asarray(threads), ["unknown"] * n, source
    )


def test_split_keeps_each_thread_in_one_part_and_no_pair_in_two(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["message,reply,thread"]
    for i in range(600):  # 150 threads of 4 pairs; every 10th thread is a copy of another
        t = i // 4
        src = t - 1 if t % 10 == 9 else t
        rows.append(f"msg {src} {i % 4},reply {src} {i % 4} {rng.integers(3) * 0},{t}")
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    d = D.clean_pairs(D.load_data(f"csv:{path}", get_config("fast")))
    assert d.log.removed["exact duplicates"] == 15 * 4  # the copied threads' pairs
    parts = D.split_pairs(d, (0.8, 0.1, 0.1), seed=0)
    assert sum(len(p) for p in parts) == len(d) == 540
    where_thread, where_pair = {}, {}
    for k, p in enumerate(parts):
        for i in p:
            assert where_thread.setdefault(int(d.threads[i]), k) == k  # a thread in one part
            assert where_pair.setdefault((d.messages[i], d.replies[i]), k) == k
    assert all(len(p) > 0 for p in parts)


def test_gate_judges_each_batch_against_the_rest(tmp_path):
    cfg = get_config("fast")  # 5 batches of 100
    n = 500
    long = "a long message about the plan with many more words than the short ones here"
    msgs = [f"short {i}" if i < 100 else f"{long} {i}" for i in range(n)]
    d = _data(msgs, [f"reply {i}" for i in range(n)], np.arange(n))
    kept, row, failures, _ = D.gate_pairs(d, cfg, tmp_path / "q")
    # The shifted first batch is refused; it does not get the four good ones refused.
    assert row["quarantined"] == 1 and len(kept) == 400 and failures[0].startswith("batch 0")
    # Repetition the whole file shares passes; a batch retried on the way in does not.
    pairs = []
    rng = np.random.default_rng(0)
    for b in range(5):
        own = [(f"message {b}-{i}", f"reply {b}-{i}") for i in range(85)]
        pairs += own + [own[i] for i in rng.integers(0, 85, 15)]
    m, r = zip(*pairs, strict=True)
    assert D.gate_pairs(_data(m, r, np.arange(n)), cfg, tmp_path / "q")[1]["quarantined"] == 0
    pairs[200:300] = pairs[100:150] * 2
    m, r = zip(*pairs, strict=True)
    _, row, failures, _ = D.gate_pairs(_data(m, r, np.arange(n)), cfg, tmp_path / "q")
    assert row["quarantined"] == 1 and "batch 2" in failures[0] and "duplicate_rate" in failures[0]


def test_builtin_split_and_gate_unchanged(tmp_path):
    """The built-in run trains on what it always did: no pair removed, the split by thread."""
    cfg = get_config("tiny")
    inputs = D.prepare("builtin", cfg, 0, tmp_path)
    data = D.builtin_threads(cfg.n_threads, 0)
    parts = D.split_by_thread(data, cfg, 0)
    for got, idx in zip((inputs.train, inputs.val, inputs.test), parts, strict=True):
        assert got.messages == [data.messages[i] for i in idx]
    assert inputs.gate_rows["injected_corrupt_batch"]["quarantined"] == 1
    assert "not deduplicated" in inputs.markdown


def test_casebook_check(tmp_path, capsys):
    rows = [["email", "reply", "thread"]]
    rows += [
        [f"Can we meet on day {i:03d}?", f"Sure, day {i:03d} works.", str(i // 2)]
        for i in range(300)
    ]
    rows += [["Can we meet on day 001?", "sure, day 001 works.", "x"]]  # a duplicate
    f = tmp_path / "mail.csv"
    f.write_bytes(_csv_bytes(rows))
    out = tmp_path / "check"
    argv = ["check", "email-smart-reply", "--preset", "tiny", "--out", str(out)]
    assert main([*argv, "--data", f"csv:{f}"]) == 0
    report = (out / "data_report.md").read_text()
    assert "| read | 301 |" in report and "| removed: exact duplicates | 1 |" in report
    assert "Split: train 2" in report and "3 of 3 batch(es) passed" in report
    capsys.readouterr()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(_csv_bytes([["message", "reply"], ["", ""], ["   ", "x"]]))
    assert main([*argv, "--data", f"csv:{bad}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no (message, reply) pairs" in err
