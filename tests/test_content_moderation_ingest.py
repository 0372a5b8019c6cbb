"""Content moderation on a user's own files: every loader on a fixture with the quirks of real
files (written here), cleaning before the split, the gate judging batches against the rest of
the data, and `casebook check`.

Quirks covered: header or none, extra columns, column order, UTF-8 with a BOM, Latin-1
(cp1252), CRLF, quoted newlines, empty and whitespace-only rows, very long rows, labels as 0/1,
true/false or names, non-English text, a class at 1% or less.
"""

import argparse
import json

import numpy as np
import pytest

from casebook.cli import main
from cases.content_moderation.config import get_config
from cases.content_moderation.data import (
    MAX_TEXT_CHARS,
    check_training_data,
    dedup_key,
    exact_key,
    load_eval,
    load_source,
    policy_for,
    prepare_data,
    severity,
    train_halves,
)
from shared.errors import DataError

CFG = get_config("tiny")


def tag(i: int) -> str:
    """A distinct letters-only word per i (digits are stripped by the near-duplicate key)."""
    return chr(97 + i % 26) + chr(97 + i // 26 % 26) + "x"


def write(path, lines, encoding="utf-8", crlf=False, bom=False):
    text = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return path


def parts_of(data):
    """{exact key: part} over the split; fails if a key sits in two parts."""
    side = {}
    for part, idx in data.split.items():
        for i in idx:
            k = exact_key(data.texts[i])
            assert side.setdefault(k, part) == part, f"{k!r} in {side[k]} and {part}"
    return side


# ----------------------------------------------------------------------------- OLID


def test_olid_quirks(tmp_path):
    """Header by name in another order with an extra column, BOM, CRLF, a bad label, an empty
    tweet, a very long tweet, non-English tweets, exact copies removed before the split."""
    rows = ["subtask_a\tid\tsubtask_b\ttweet"]
    for i in range(60):
        off = i % 3 == 0
        text = f"@USER you are an idiot {tag(i)}" if off else f"@USER lovely day {tag(i)} URL"
        if i % 10 == 5:
            text = f"Привет друзья как дела {tag(i)}"
        rows.append(f"{'OFF' if off else 'NOT'}\t{i}\tNULL\t{text}")
    rows += ["MAYBE\t70\tNULL\thello there", "NOT\t71\tNULL\t   ", "off\t72\tNULL\t" + "x" * 25_000]
    rows += ["NOT\t73\tNULL\t@USER LOVELY   day bax URL"]  # row 3 again (case, spaces)
    write(tmp_path / "olid-training-v1.0.tsv", rows, crlf=True, bom=True)
    d = load_source(f"olid:{tmp_path}", CFG, seed=0)
    assert d.log.rows_read == 64 and d.log.n_skipped == {"subtask_a not OFF/NOT": 1,
                                                          "empty text": 1}  # fmt: skip
    assert d.log.skipped["subtask_a not OFF/NOT"] == [62]  # file line (header is line 1)
    assert d.log.removed == {"exact duplicates": 1}
    assert len(d) == 61 and max(map(len, d.texts)) == MAX_TEXT_CHARS
    assert any("clipped" in n for n in d.log.notes)
    assert any(t.startswith("Привет") for t in d.texts)
    parts_of(d)


def test_olid_without_header_and_in_latin1(tmp_path):
    rows = [f"{i}\t@USER caf\xe9 {tag(i)} {'idiot' if i % 2 else 'nice'}\t"
            f"{'OFF' if i % 2 else 'NOT'}" for i in range(40)]  # fmt: skip
    write(tmp_path / "olid-training-v1.0.tsv", rows, encoding="cp1252")
    d = load_source(f"olid:{tmp_path}", CFG, seed=0)
    assert len(d) == 40 and d.labels.sum() == 20 and "café" in d.texts[0]
    assert d.log.encoding == "cp1252"


def test_olid_with_no_usable_row_is_one_line(tmp_path):
    write(tmp_path / "olid-training-v1.0.tsv", ["id\ttweet\tsubtask_a", "1\t \tOFF", "2\thi\t?"])
    with pytest.raises(DataError, match="no usable row") as e:
        load_source(f"olid:{tmp_path}", CFG, 0)
    assert "\n" not in str(e.value) and "line 2" in str(e.value)


# ----------------------------------------------------------------------------- Davidson


def test_davidson_quirks(tmp_path):
    """Columns reordered plus an extra, quoted newlines, a bad class, unreadable votes (kept),
    Latin-1, hate at 1% of 300 tweets (every part still has one: stratified fallback)."""
    lines = ["tweet,extra,class,count,neither,offensive_language,hate_speech,"]
    for i in range(300):
        cls = 0 if i % 100 == 7 else (1 if i % 2 else 2)
        votes = {0: "0,0,3", 1: "0,3,0", 2: "3,0,0"}[cls]
        lines.append(f'"tweet {tag(i)}\nsecond line, caf\xe9",x,{cls},3,{votes},')
    lines.append('"bad class tweet",x,7,3,0,0,3,')
    lines.append('"votes unreadable zzq",x,1,3,a,b,c,')
    d = load_source(f"davidson:{write(tmp_path / 'd.csv', lines, 'latin-1')}", CFG, 0)
    assert d.log.n_skipped == {"class not 0, 1 or 2": 1} and d.log.skipped[
        "class not 0, 1 or 2"] == [602]  # fmt: skip
    assert len(d) == 301 and "\nsecond line, café" in d.texts[0]
    assert any("annotator counts" in n for n in d.log.notes)
    hate = d.policies.index("hate")
    for part, idx in d.split.items():
        assert d.labels[idx, hate].sum() >= 1, part
    assert d.annotator_counts.shape == (301, 3)


# ----------------------------------------------------------------------------- SMS spam


def sms_lines(n: int = 600, seed: int = 0) -> list[str]:
    """An SMS-like collection: short personal ham, a few spam campaigns sent again and again
    (exact copies, as in the UCI file, where ~400 texts occur more than once), 13% spam."""
    rng = np.random.default_rng(seed)
    campaigns = [
        "WINNER!! You have been selected to receive a £900 prize reward! Call 09061701461",
        "FREE entry in 2 a wkly comp to win FA Cup final tkts. Text FA to 87121 to receive",
        "URGENT! Your mobile number has been awarded a £2000 bonus. Call 09066364589",
        "Had your mobile 11 months or more? U R entitled to update to the latest colour mobile "
        "for FREE! Call 08002986030",
    ]
    ham_words = "ok lar see you later home now dinner train late sorry call tmrw love mum".split()
    out = []
    for i in range(n):
        if rng.random() < 0.13:
            if rng.random() < 0.6:
                out.append("spam\t" + campaigns[int(rng.integers(len(campaigns)))])
            else:
                code = int(rng.integers(80000, 89999))
                out.append(f"spam\tClaim ur £{int(rng.integers(1, 9)) * 100} cash {tag(i)} "
                           f"txt WIN to {code} now! T&Cs 150p/msg")  # fmt: skip
        elif rng.random() < 0.08:
            out.append("ham\t" + ["Ok lar...", "Sorry, I'll call later", "Ok..."][i % 3])
        else:
            words = " ".join(rng.choice(ham_words, size=5))
            out.append(f"ham\t{words} {tag(i)}")
    return out


def test_sms_spam_quirks(tmp_path):
    """Header, CRLF, Latin-1 (£ is one byte), a line without a tab and a blank line skipped
    with their line numbers, campaigns' exact copies removed and reported."""
    lines = ["label\ttext"] + sms_lines(400) + ["this line has no tab", "", "ham\t   "]
    p = write(tmp_path / "SMSSpamCollection", lines, encoding="latin-1", crlf=True)
    d = load_source(f"sms-spam:{p}", CFG, 0)
    assert d.log.rows_read == 403 and "label not ham/spam" not in d.log.n_skipped  # header
    assert d.log.skipped["no tab"] == [402] and d.log.skipped["blank line"] == [403]
    assert d.log.skipped["empty text"] == [404]
    assert d.log.removed["exact duplicates"] >= 20
    assert any("£" in t for t in d.texts)
    parts_of(d)  # no text in two parts
    assert len(set(map(exact_key, d.texts))) == len(d)


def test_sms_spam_kaggle_csv(tmp_path):
    """The Kaggle copy: spam.csv with v1,v2 and three empty extra columns."""
    lines = ["v1,v2,,,"] + [
        f'{t.split(chr(9))[0]},"{t.split(chr(9))[1]}",,,' for t in sms_lines(200)
    ]
    d = load_source(f"sms-spam:{write(tmp_path / 'spam.csv', lines, 'latin-1')}", CFG, 0)
    assert d.policies == ("spam",) and 0.05 < d.labels.mean() < 0.3


def test_sms_spam_with_no_usable_row(tmp_path):
    p = write(tmp_path / "sms", ["maybe\tnot a label", "nolabel"])
    with pytest.raises(DataError, match=r"no usable row.*ham\|spam") as e:
        load_source(f"sms-spam:{p}", CFG, 0)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- csv


def test_csv_by_alias_with_quirks(tmp_path):
    """comment_text / is_spam found by name (label column first, an extra column), ';'
    delimiter, a BOM, quoted newlines, true/false labels, spam at 1%, an unknown label and an
    empty text skipped with their lines, non-English text."""
    lines = ["is_spam;id;Comment_Text;lang"]
    for i in range(400):
        spam = i % 100 == 3
        text = f"win cash now {tag(i)} click" if spam else f'"hello {tag(i)}\nsee you";x'
        if i % 50 == 1:
            text = f"你好 朋友 {tag(i)};zh"
        lines.append(f"{'TRUE' if spam else 'false'};{i};{text}" + ("" if ";" in text else ";en"))
    lines += ["maybe;900;what is this;en", "false;901;   ;en"]
    d = load_source(f"csv:{write(tmp_path / 'posts.csv', lines, bom=True)}", CFG, 0)
    assert d.policies == ("spam",) and d.labels.sum() == 4
    assert d.log.n_skipped == {"unknown label": 1, "empty text": 1}
    line = 1 + sum(ln.count("\n") + 1 for ln in lines[1:401]) + 1  # quoted newlines count
    assert d.log.skipped["unknown label"] == [line]
    for part, idx in d.split.items():
        assert d.labels[idx, 0].sum() >= 1, part  # a class at 1%: a positive in every part
    assert any(t.startswith("你好") for t in d.texts)


def test_csv_named_columns_and_label_names(tmp_path):
    """?text=&label= names the columns; labels as names: OFF/NOT, toxic/non-toxic, spam/ham."""
    for pos, neg, policy in (("OFF", "NOT", "offensive"), ("toxic", "non-toxic", "toxic"),
                             ("spam", "ham", "spam")):  # fmt: skip
        lines = ["body,verdict,label"] + [
            f"post {tag(i)} words,{pos if i % 4 == 0 else neg},ignored" for i in range(80)
        ]
        p = write(tmp_path / "mine.csv", lines)
        d = load_source(f"csv:{p}?text=body&label=verdict", CFG, 0)
        assert d.policies == (policy,) and d.labels.sum() == 20 and d.texts[0].startswith("post")
    with pytest.raises(DataError, match="no text column"):
        load_source(f"csv:{p}?text=nope&label=verdict", CFG, 0)
    with pytest.raises(DataError, match="unknown option 'user'"):
        load_source(f"csv:{p}?user=body", CFG, 0)


def test_csv_policy_per_row_stays_multiclass_and_headerless(tmp_path):
    lines = ["text,label"] + [
        f"text {tag(i)} here,{['spam', 'none', 'hate', 'none'][i % 4]}" for i in range(80)
    ]
    d = load_source(f"csv:{write(tmp_path / 'm.csv', lines)}", CFG, 0)
    assert d.policies == ("hate", "spam") and d.labels.sum(0).tolist() == [20, 20]
    # no header: the label column is the one whose values read as labels
    lines = [f"{['spam', 'ham'][i % 2]},a longer text {tag(i)} than the label" for i in range(60)]
    d = load_source(f"csv:{write(tmp_path / 'n.csv', lines)}", CFG, 0)
    assert d.policies == ("spam",) and d.labels.sum() == 30 and len(d) == 60
    assert d.texts[0].startswith("a longer text") and any("no header" in n for n in d.log.notes)


# ----------------------------------------------------------------------------- Jigsaw


JIGSAW_HEAD = "id,comment_text,toxic,severe_toxic,obscene,threat,insult,identity_hate"


def jigsaw_lines(n: int = 600) -> list[str]:
    """Jigsaw-like rows: toxic 10%, insult 5%, obscene 4%, threat 1%, severe 2%, identity
    hate 1%, quoted newlines, an extra column."""
    lines = [JIGSAW_HEAD + ",extra"]
    for i in range(n):
        y = [i % 10 == 0, i % 50 == 0, i % 25 == 0, i % 100 == 10, i % 20 == 0, i % 100 == 30]
        y[0] = y[0] or any(y[1:])
        text = f"you {tag(i)} idiot" if y[0] else f"thanks for the edit {tag(i)}"
        lines.append(f'{i:016x},"{text}\nsigned",' + ",".join(str(int(v)) for v in y) + ",z")
    return lines


def test_jigsaw_quirks(tmp_path):
    """Multi-label, one policy per column, threat and identity_hate at 1% with positives in
    every part; a row of test labels (-1, not scored) skipped; severities for the new names."""
    lines = jigsaw_lines() + ['ffff,"not scored",-1,-1,-1,-1,-1,-1,z']
    d = load_source(f"jigsaw:{write(tmp_path / 'train.csv', lines, crlf=True)}", CFG, 0)
    assert d.policies == ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
    assert d.log.n_skipped == {"a label not 0/1": 1}
    for j, p in enumerate(d.policies):
        for part, idx in d.split.items():
            assert d.labels[idx, j].sum() >= 1, (p, part)
    assert severity("threat") == 3.0 and severity("obscene") == 1.5
    assert severity("some_new_policy") == 2.0


def test_jigsaw_policy_too_rare_is_dropped_with_a_note(tmp_path):
    """identity_hate on one comment of 300: too few for a positive in every part."""
    lines = [ln if i in (11, 31) else ln[: -len(",1,z")] + ",0,z" if ln.endswith(",1,z") else ln
             for i, ln in enumerate(jigsaw_lines(300))]  # fmt: skip
    d = load_source(f"jigsaw:{write(tmp_path / 'j.csv', lines)}", CFG, 0)
    assert d.policies == ("toxic", "severe_toxic", "obscene", "threat", "insult")
    assert any("'identity_hate' dropped" in n for n in d.log.notes)


def test_a_large_file_is_sampled_down_keeping_its_rare_classes(tmp_path):
    """Over max_texts after cleaning: every positive of a rare policy kept, the rest a seeded
    sample by label share, counted in the data section; every policy keeps positives in every
    part (a plain random sample would leave threat with one positive)."""
    path = write(tmp_path / "train.csv", jigsaw_lines())
    full = load_source(f"jigsaw:{path}", CFG, 0)
    d = load_source(f"jigsaw:{path}", get_config("tiny", max_texts=200), 0)
    assert abs(len(d) - 200) <= 3  # rounding per stratum
    removed = d.log.removed["sampled out (max_texts 200, stratified by label)"]
    assert removed == len(full) - len(d)
    assert d.policies == full.policies
    assert d.labels.sum(0).tolist() == full.labels.sum(0).tolist()  # all rare positives kept
    for j in range(len(d.policies)):
        for idx in d.split.values():
            assert d.labels[idx, j].sum() >= 1


def test_jigsaw_bias_identity_columns_feed_the_bias_cohorts(tmp_path):
    """target shares -> toxic at >= 0.5; identity columns (shares, empty = absent) become the
    masks `identities()` returns, instead of the term lists; extra columns ignored."""
    lines = ["id,target,comment_text,severe_toxicity,female,muslim,black,created_date,rating"]
    for i in range(200):
        target = [0.0, 0.2, 0.6, 0.9][i % 4]
        fem = "" if i % 3 else "0.8"
        lines.append(f"{i},{target},\"a comment {tag(i)}\",0.1,{fem},{0.5 if i % 5 == 0 else 0},"
                     f",2017-01-01,approved")  # fmt: skip
    d = load_source(f"jigsaw-bias:{write(tmp_path / 'b.csv', lines)}", CFG, 0)
    assert d.policies == ("toxic",) and d.labels.mean() == pytest.approx(0.5)
    ident = d.identities()
    assert set(ident) == {"female", "muslim", "black"}  # from the file, not the term lists
    assert ident["female"].sum() == 67 and ident["muslim"].sum() == 40 and ident["black"].sum() == 0
    test = d.identities(d.split["test"])
    assert len(test["female"]) == len(d.split["test"])


# ----------------------------------------------------------------------------- evaluation sets


def test_eval_loaders_skip_bad_rows(tmp_path):
    hc = write(tmp_path / "hc.csv", ["\ufefffunctionality,test_case,label_gold,target_ident",
                                     "derog,I hate muslims.,hateful,Muslims",
                                     "neutral,I am a muslim.,non-hateful,Muslims",
                                     "odd,what,unsure,"])  # fmt: skip
    ev = load_eval(f"hatecheck:{hc}")
    assert ev.labels.tolist() == [1, 0] and ev.log.skipped == {
        "label_gold not hateful/non-hateful": [4]}  # fmt: skip
    a = write(tmp_path / "a.csv", ["rev_id,comment,toxic", "1,i am gay,False", "2,x,True",
                                   "3,y,maybe"])  # fmt: skip
    b = write(tmp_path / "b.csv", ["comment,rev_id,toxic", "i am tall,1,False", "z,3,True"])
    ev = load_eval(f"toxicity-pairs:{a},{b}")
    assert ev.labels.tolist() == [0] and ev.pair_texts == ["i am tall"]
    assert ev.log.n_skipped == {
        "rev_id not in the fuzzed file": 1,
        "toxic not 0/1 or true/false": 1,
    }
    c = write(tmp_path / "c.csv", ["message,toxic,gay,women", "hi all,0,1,0", "you idiot,1,0,1"])
    ev = load_eval(f"csv:{c}")
    assert ev.policy == "toxic" and ev.identity.tolist() == ["gay", "women"]


# ----------------------------------------------------------------------------- the gate


def test_a_refused_train_half_is_quarantined_and_the_run_trains_on_the_rest(tmp_path):
    p = write(tmp_path / "s", sms_lines(600))
    data = load_source(f"sms-spam:{p}", CFG, 0)
    halves = train_halves(data, 0)
    half = halves["train[a]"]
    for k in range(1, len(half), 3):  # a retried batch: a third of its rows sent twice
        data.texts[half[k]], data.labels[half[k]] = (
            data.texts[half[k - 1]],
            data.labels[half[k - 1]],
        )
    gate = check_training_data(data, tmp_path / "run", 0, inject_bad=False)
    assert not gate["batches"]["train[a]"]["passed"] and gate["batches"]["train[b]"]["passed"]
    assert gate["batches"]["val"]["passed"] and gate["batches"]["test"]["passed"]
    assert np.array_equal(data.split["train"], halves["train[b]"])  # trains on the rest
    assert data.log.removed["quarantined by the data gate (train[a])"] == len(half)
    assert list((tmp_path / "run" / "quarantine").iterdir())


def test_the_run_stops_in_one_line_when_nothing_sensible_is_left(tmp_path):
    p = write(tmp_path / "s", sms_lines(600))
    data = load_source(f"sms-spam:{p}", CFG, 0)
    for i in data.split["val"]:
        data.texts[i] = ""
    with pytest.raises(DataError, match="refused the val batch") as e:
        check_training_data(data, tmp_path / "run", 0, inject_bad=False)
    assert "\n" not in str(e.value) and "fix the file" in str(e.value)


def test_gate_passes_a_dataset_that_repeats_itself_everywhere(tmp_path):
    """Without cleaning, every part of an SMS-like file holds campaign copies (the old fixed
    limit refused train[a] at 0.0537 > 0.02); the relative limit passes it."""
    p = write(tmp_path / "s", sms_lines(1200))
    data = load_source(f"sms-spam:{p}", CFG, 0)
    # put copies back into every part: every 10th text of each part twice
    for part, idx in data.split.items():
        copies = idx[::10]
        start = len(data.texts)
        data.texts += [data.texts[i] for i in copies]
        data.labels = np.concatenate([data.labels, data.labels[copies]])
        data.split[part] = np.concatenate([idx, np.arange(start, start + len(copies))])
    n = len(data.split["test"])
    assert 1 - len({data.texts[i] for i in data.split["test"]}) / n > 0.05
    gate = check_training_data(data, tmp_path / "run", 0, inject_bad=True)
    assert all(b["passed"] for b in gate["batches"].values())
    assert (
        not gate["injected"]["passed"] and "duplicate_rate[text_id]" in gate["injected"]["failed"]
    )


# ----------------------------------------------------------------------------- check and run


def test_check_and_run_on_an_sms_file_with_spam_campaigns(tmp_path, capsys):
    """Only --data: `check` exits 0, writes data_report.md and reports the copies it removed;
    `run` (tiny preset, to stay fast) trains and its report holds the same data section."""
    lines = sms_lines(900)
    dup = 1 - len(set(lines)) / len(lines)
    assert dup >= 0.05, dup  # the fixture repeats itself as the real collection does
    p = write(tmp_path / "SMSSpamCollection", lines)
    code = main(["check", "content-moderation", "--data", f"sms-spam:{p}",
                 "--out", str(tmp_path / "check")])  # fmt: skip
    assert code == 0
    report = (tmp_path / "check" / "data_report.md").read_text()
    assert "removed: exact duplicates" in report and "Data gate:" in report
    assert "train[a]: pass" in report and "| spam |" in report
    data, _, md = prepare_data(f"sms-spam:{p}", CFG, 0, tmp_path / "p")
    assert md in report  # the same section `run` writes into report.md
    for key in (exact_key, dedup_key):  # no text, nor a near-copy, in both train and test
        train = {key(data.texts[i]) for i in data.split["train"]}
        assert not train & {key(data.texts[i]) for i in data.split["test"]}
    code = main(["run", "content-moderation", "--data", f"sms-spam:{p}", "--preset", "tiny",
                 "--no-encoder", "--no-images", "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 0
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["extra"]["data"]["removed"]["exact duplicates"]["count"] > 0
    assert "removed: exact duplicates" in (tmp_path / "run" / "report.md").read_text()
    assert doc["tables"]["spam:sms-spam"]["tfidf_lr"]["f1"] > 0.9


def test_check_exits_2_in_one_line_on_a_file_with_no_usable_row(tmp_path, capsys):
    p = write(tmp_path / "bad.csv", ["text,label", "hello,purple", "   ,1"])
    code = main(["check", "content-moderation", "--data", f"csv:{p}",
                 "--out", str(tmp_path / "c")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no usable row" in err and "\n" not in err
    assert not (tmp_path / "c" / "data_report.md").exists()


def _args(out, data, **kw):
    base = dict(preset="tiny", data=data, out=out, seed=0, eval=[], no_encoder=True,
                no_images=True, train_minutes=None)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_jigsaw_runs_end_to_end_with_its_policy_names(tmp_path):
    """Every stage that once assumed the four built-in policies: tables per Jigsaw policy, the
    review queue's severities, the bias table on `toxic`, the served predictor's scores."""
    from cases.content_moderation import cli
    from cases.content_moderation.predictor import ModerationPredictor

    p = write(tmp_path / "train.csv", jigsaw_lines(800))
    hc_rows = ["test_case,label_gold", "muslims are vermin,hateful", "i am a muslim,non-hateful"]
    hc = write(tmp_path / "hc.csv", hc_rows + ["unsure case,unsure"])
    metrics = cli.run(_args(tmp_path / "run", f"jigsaw:{p}", eval=[f"hatecheck:{hc}"]))
    doc = json.loads(metrics.read_text())
    for pol in ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"):
        assert {"rules", "tfidf_lr"} <= set(doc["tables"][f"{pol}:jigsaw-holdout"])
    assert "bias:toxic:jigsaw-holdout" in doc["tables"]
    assert "review_queue" in doc["cohorts"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "`identity_hate` stands in" in report
    assert "Skipped rows: label_gold not hateful/non-hateful 1 (first at line 4)" in report
    assert policy_for("hate", ("toxic", "identity_hate")) == "identity_hate"
    pred = ModerationPredictor.load(tmp_path / "run" / "artifact")
    out = pred.moderate_batch([{"text": "you aax idiot", "kind": "post"}])[0]
    assert set(out["scores"]) == set(JIGSAW_HEAD.split(",")[2:])


def test_jigsaw_bias_run_uses_the_file_identities(tmp_path):
    from cases.content_moderation import cli

    lines = ["id,comment_text,target,female,muslim"]
    for i in range(600):
        target = 0.8 if i % 3 == 0 else 0.1
        word = "idiot" if target > 0.5 else "thanks"
        lines.append(f"{i},{word} {tag(i)},{target},{1.0 if i % 4 == 0 else ''},"
                     f"{0.6 if i % 5 == 0 else 0.0}")  # fmt: skip
    p = write(tmp_path / "bias.csv", lines)
    doc = json.loads(cli.run(_args(tmp_path / "run", f"jigsaw-bias:{p}")).read_text())
    full = doc["cohorts"]["identity:jigsaw-bias-holdout"]
    shipped = doc["production_model"]
    assert set(full[shipped]) == {"female", "muslim"}  # the file's columns, not term lists
    data = load_source(f"jigsaw-bias:{p}", CFG, 0)
    test = data.identities(data.split["test"])
    assert full[shipped]["female"]["n"] == int(test["female"].sum()) > 0
    assert "identity columns of the file" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.slow
def test_run_on_an_sms_file_with_only_data(tmp_path):
    """The issue's command, default preset (MiniLM fine-tuned: minutes): trains and reports."""
    p = write(tmp_path / "SMSSpamCollection", sms_lines(900))
    code = main(["run", "content-moderation", "--data", f"sms-spam:{p}",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 0
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["extra"]["data"]["removed"]["exact duplicates"]["count"] > 0
    assert doc["tables"]["spam:sms-spam"][doc["production_model"]]["f1"] > 0.9
