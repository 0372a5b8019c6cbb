"""Email smart reply data: cleaning, the built-in generator, real-format loaders, splits, gate."""

import mailbox
from email.message import EmailMessage

import numpy as np
import pytest

from cases.email_smart_reply import data as D
from cases.email_smart_reply.config import get_config
from shared.errors import CasebookError, DataError

RAW = """Hi Ben,

Sure, I'll send it over.

Best,
Alice

On Tue, 5 May 2026 at 10:02, Ben <ben@example.com> wrote:
> Could you send me the slides by Friday?
>
> --
> Ben
"""


def test_clean_email_strips_greeting_quote_and_signature():
    assert D.clean_email(RAW) == "Sure, I'll send it over."
    sig = "Thanks, will do.\n-- \nAlice Example\nSenior Analyst\n"
    assert D.clean_email(sig) == "Thanks, will do."
    fwd = "See below.\n\n-----Original Message-----\nFrom: x\nold text"
    assert D.clean_email(fwd) == "See below."


def test_builtin_is_deterministic_and_clean():
    a, b = D.builtin_threads(200, seed=3), D.builtin_threads(200, seed=3)
    assert a.messages == b.messages and a.replies == b.replies
    assert set(a.intents) >= {"scheduling", "thanks", "question", "request", "bad_news"}
    assert a.no_reply  # FYIs: trigger negatives
    assert ">" in a.raw_example and "wrote:" in a.raw_example  # raw mail has quotes ...
    for t in a.messages + a.replies:  # ... which cleaning removed
        assert ">" not in t and "wrote:" not in t and "Sent from my" not in t and t


def test_dailydialog_loader(tmp_path):
    f = tmp_path / "dd.txt"
    f.write_text("Hi there . __eou__ Hello ! __eou__ How are you ? __eou__\nBye . __eou__\n")
    d = D.load_data(f"dailydialog:{f}", get_config("tiny"))
    assert d.messages == ["Hi there .", "Hello !"]
    assert d.replies == ["Hello !", "How are you ?"]
    assert d.threads.tolist() == [0, 0]
    assert d.contexts == [[], ["Hi there ."]]  # the turns before each message, same dialogue
    assert d.model_messages(1) == ["Hi there .", "Hello ! [SEP] Hi there ."]
    assert d.model_messages(0) == d.messages
    assert d.subset(np.array([1])).contexts == [["Hi there ."]]


def test_model_text_puts_the_message_first_newest_context_next():
    from cases.email_smart_reply.predictor import model_text

    assert model_text("c", ["a", "b"], 0) == "c"
    assert model_text("c", ["a", "b"], 1) == "c [SEP] b"
    assert model_text("c", ["a", "b"], 5) == "c [SEP] b [SEP] a"
    assert model_text("c", ["a", "  "], 2) == "c [SEP] a"  # blank turns dropped


def test_pairs_loader_and_errors(tmp_path):
    f = tmp_path / "p.tsv"
    f.write_text("Can we meet?\tSure.\nThanks!\tYou're welcome.\n")
    d = D.load_data(f"pairs:{f}", get_config("tiny"))
    assert d.messages == ["Can we meet?", "Thanks!"] and d.replies[1] == "You're welcome."
    f.write_text("no tab here\n")  # no usable pair at all: the file is refused in one line
    with pytest.raises(DataError, match=r"no \(message, reply\) pairs.*no tab 1"):
        D.load_data(f"pairs:{f}", get_config("tiny"))
    b = tmp_path / "bin.tsv"
    b.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(DataError, match="binary"):
        D.load_data(f"pairs:{b}", get_config("tiny"))
    with pytest.raises(DataError, match="not found"):
        D.load_data(f"pairs:{tmp_path / 'missing.tsv'}", get_config("tiny"))
    with pytest.raises(CasebookError, match="FORMAT one of csv, dailydialog"):
        D.load_data("xlsx:x.xlsx", get_config("tiny"))


def _mail(mid, body, subject="Slides", reply_to=None, refs=None):
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = (
        "a@example.com",
        "b@example.com",
        subject,
        mid,
    )
    if reply_to:
        m["In-Reply-To"] = reply_to
    if refs:
        m["References"] = refs
    m.set_content(body)
    return m


def _thread():
    return [
        _mail("<1@x>", "Hi Ben,\n\nCould you send me the slides by Friday?\n\n-- \nAlice\n"),
        _mail("<2@x>", RAW.replace("Hi Ben", "Hi Alice"), reply_to="<1@x>", refs="<1@x>"),
        _mail("<3@x>", "Thanks!\n\nOn Tue Alice wrote:\n> Sure\n", refs="<1@x> <2@x>"),
        _mail("<9@x>", "Unrelated newsletter", subject="News"),
    ]


def test_mbox_loader_threads_and_cleans(tmp_path):
    path = tmp_path / "inbox.mbox"
    box = mailbox.mbox(path)
    for m in _thread():
        box.add(m)
    box.flush()
    box.close()
    d = D.load_data(f"mbox:{path}", get_config("tiny"))
    assert d.messages == ["Could you send me the slides by Friday?", "Sure, I'll send it over."]
    assert d.replies == ["Sure, I'll send it over.", "Thanks!"]
    assert len(set(d.threads.tolist())) == 1  # one thread, rooted at <1@x>
    assert d.contexts == [[], ["Could you send me the slides by Friday?"]]  # the parent chain


def test_maildir_loader(tmp_path):
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for m in _thread():
        box.add(m)
    d = D.load_data(f"maildir:{tmp_path / 'Maildir'}", get_config("tiny"))
    assert sorted(d.replies) == ["Sure, I'll send it over.", "Thanks!"]
    with pytest.raises(DataError, match="not a Maildir"):
        D.load_data(f"maildir:{tmp_path}", get_config("tiny"))


def test_split_by_thread_has_no_leak():
    cfg = get_config("tiny")
    d = D.builtin_threads(300, seed=0)
    parts = D.split_by_thread(d, cfg, seed=0)
    sets = [set(d.threads[p].tolist()) for p in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(p) for p in parts) == len(d)


def test_gate_refuses_corrupt_input(tmp_path):
    cfg = get_config("tiny")
    d = D.builtin_threads(400, seed=0)
    kept, row, failures, _ = D.gate_pairs(d, cfg, tmp_path / "q")
    assert row["quarantined"] == 0 and len(kept) == len(d)
    bad = D.corrupt_pairs(d, seed=0)
    with pytest.raises(DataError, match="data gate refused") as e:
        D.gate_pairs(bad, cfg, tmp_path / "q")
    assert "\n" not in str(e.value)
    assert list((tmp_path / "q").glob("*.npz"))  # quarantined for a person to look at
    assert np.all(D.pair_columns(["a"], ["b"])["bad_chars"] == 0)
