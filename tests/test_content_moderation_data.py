"""Content moderation data: the generator, every real-format loader on a fixture the test writes,
leakage-free splits and the data gate."""

import numpy as np
import pytest

from cases.content_moderation.config import get_config
from cases.content_moderation.data import (
    POLICIES,
    check_training_data,
    dedup_key,
    generate_posts,
    identity_masks,
    load_eval,
    load_source,
    swap_identity,
)
from shared.errors import DataError

CFG = get_config("tiny")


def tag(i: int) -> str:
    """A distinct letters-only word per i (digits are stripped by the near-duplicate key)."""
    return chr(97 + i % 26) + chr(97 + i // 26 % 26) + "x"


def test_generator_is_deterministic_and_labelled():
    a, b = generate_posts(CFG, seed=3), generate_posts(CFG, seed=3)
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    assert a.policies == POLICIES and a.labels.shape == (len(a.texts), len(POLICIES))
    # every policy occurs, hate implies offensive, ads exist
    assert (a.labels.sum(0) > 0).all()
    hate, off = POLICIES.index("hate"), POLICIES.index("offensive")
    assert np.all(a.labels[:, off] >= a.labels[:, hate])
    assert (a.kinds == "ad").sum() > 0
    assert sum(map(len, a.split.values())) == len(a.texts)


def test_split_keeps_near_duplicates_on_one_side():
    data = generate_posts(CFG, seed=0)
    side = {}
    for part, idx in data.split.items():
        for i in idx:
            key = dedup_key(data.texts[i])
            assert side.setdefault(key, part) == part, f"{key!r} in {side[key]} and {part}"
    assert dedup_key("RT @bob: You are GREAT!!! http://t.co/x 2019") == "you are great"


def test_identity_masks_and_swap():
    m = identity_masks(["as a gay man i hike", "nothing here", "muslims and jews"])
    assert m["gay"].tolist() == [True, False, False]
    assert m["muslim"].tolist() == [False, False, True] and m["jewish"][2]
    rng = np.random.default_rng(0)
    s = swap_identity("as a gay man i hike", rng)
    assert s is not None and "gay" not in s and s.endswith("man i hike")
    assert swap_identity("no identity here", rng) is None


def _write_olid(root, with_test=True):
    rows = ["id\ttweet\tsubtask_a\tsubtask_b\tsubtask_c"]
    for i in range(40):
        off = i % 3 == 0
        text = f"@USER you are an idiot {tag(i)}" if off else f"@USER lovely day {tag(i)} URL"
        rows.append(f"{i}\t{text}\t{'OFF' if off else 'NOT'}\t{'TIN' if off else 'NULL'}\tNULL")
    (root / "olid-training-v1.0.tsv").write_text("\n".join(rows) + "\n")
    if with_test:
        (root / "testset-levela.tsv").write_text(
            "id\ttweet\n900\t@USER shut up moron\n901\t@USER nice game tonight\n"
        )
        (root / "labels-levela.csv").write_text("900,OFF\n901,NOT\n")


def test_olid_with_test_a(tmp_path):
    _write_olid(tmp_path)
    d = load_source(f"olid:{tmp_path}", CFG, seed=0)
    assert d.policies == ("offensive",) and d.test_name == "olid-test-a"
    test_texts = [d.texts[i] for i in d.split["test"]]
    assert test_texts == ["@USER shut up moron", "@USER nice game tonight"]
    assert d.labels[d.split["test"], 0].tolist() == [1, 0]
    assert len(d.split["train"]) + len(d.split["val"]) == 40


def test_olid_test_a_labels_with_a_header_row(tmp_path):
    _write_olid(tmp_path)
    (tmp_path / "labels-levela.csv").write_text("id,label\n900,OFF\n901,NOT\n")
    d = load_source(f"olid:{tmp_path}", CFG, seed=0)
    assert d.labels[d.split["test"], 0].tolist() == [1, 0]
    # a bad gold line leaves its test row unlabelled: skipped with its line, not an error
    (tmp_path / "testset-levela.tsv").write_text(
        "id\ttweet\n900\t@USER shut up moron\n901\t@USER nice game tonight\n902\tok then\n"
    )
    (tmp_path / "labels-levela.csv").write_text("900,OFF\n901,NOT\n902,MAYBE\n")
    d = load_source(f"olid:{tmp_path}", CFG, seed=0)
    assert d.labels[d.split["test"], 0].tolist() == [1, 0]
    reason = "testset-levela.tsv: id without a label in labels-levela.csv"
    assert d.log.n_skipped[reason] == 1 and d.log.skipped[reason] == [4]


def test_olid_without_test_holds_out(tmp_path):
    _write_olid(tmp_path, with_test=False)
    d = load_source(f"olid:{tmp_path}", CFG, seed=0)
    assert d.test_name == "olid-holdout" and len(d.split["test"]) > 0


def test_olid_errors(tmp_path):
    with pytest.raises(DataError, match="no olid-training"):
        load_source(f"olid:{tmp_path}", CFG, 0)
    (tmp_path / "olid-training-v1.0.tsv").write_text("id\ttweet\tsubtask_a\n1\thi\tMAYBE\n")
    with pytest.raises(DataError, match="OFF/NOT"):
        load_source(f"olid:{tmp_path}", CFG, 0)
    with pytest.raises(DataError, match="not a folder"):
        load_source(f"olid:{tmp_path}/nope", CFG, 0)


def test_davidson(tmp_path):
    lines = [",count,hate_speech,offensive_language,neither,class,tweet"]
    for i in range(30):
        cls = i % 3
        votes = [[3, 0, 0], [0, 3, 0], [0, 1, 2]][cls]
        lines.append(f"{i},3,{votes[0]},{votes[1]},{votes[2]},{cls},tweet {tag(i)} text")
    p = tmp_path / "labeled_data.csv"
    p.write_text("\n".join(lines) + "\n")
    d = load_source(f"davidson:{p}", CFG, 0)
    assert d.policies == ("offensive", "hate")
    assert d.labels[0].tolist() == [1, 1] and d.labels[1].tolist() == [1, 0]
    assert d.labels[2].tolist() == [0, 0]
    assert d.annotator_counts.shape == (30, 3)
    assert d.agreement[2] == pytest.approx(2 / 3)
    p.write_text(",count,tweet\n0,3,hi\n")
    with pytest.raises(DataError, match="no class column"):
        load_source(f"davidson:{p}", CFG, 0)


def test_sms_spam_is_stratified(tmp_path):
    lines = [f"ham\thello friend see you at {tag(i)}" for i in range(80)]
    lines += [f"spam\tWIN a free prize now call {tag(i)}" for i in range(20)]
    p = tmp_path / "SMSSpamCollection"
    p.write_text("\n".join(lines) + "\n")
    d = load_source(f"sms-spam:{p}", CFG, seed=1)
    for part in ("train", "val", "test"):
        share = d.labels[d.split[part], 0].mean()
        assert 0.1 <= share <= 0.3, (part, share)
    p.write_text("maybe\tnot a label\n")
    with pytest.raises(DataError, match="ham\\|spam"):
        load_source(f"sms-spam:{p}", CFG, 0)


def test_csv_binary_and_policy_labels(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("text,label,gay\n" + "".join(f"text {tag(i)},{i % 2},0\n" for i in range(30)))
    d = load_source(f"csv:{p}", CFG, 0)
    assert d.policies == ("offensive",) and d.labels.sum() == 15
    p.write_text(
        "text,label\n" + "".join(f"t{tag(i)},{['spam', 'none'][i % 2]}\n" for i in range(30))
    )
    assert load_source(f"csv:{p}", CFG, 0).policies == ("spam",)
    p.write_text("text,label\nhi,purple\n")
    with pytest.raises(DataError, match="label must be"):
        load_source(f"csv:{p}", CFG, 0)


def test_eval_loaders(tmp_path):
    hc = tmp_path / "hatecheck.csv"
    hc.write_text(
        "functionality,test_case,label_gold,target_ident\n"
        "derog_neg_emote_h,I hate muslims.,hateful,Muslims\n"
        "ident_neutral_nh,I am a muslim.,non-hateful,Muslims\n"
    )
    ev = load_eval(f"hatecheck:{hc}")
    assert ev.policy == "hate" and ev.labels.tolist() == [1, 0]
    assert ev.functionality.tolist() == ["derog_neg_emote_h", "ident_neutral_nh"]
    a, b = tmp_path / "nonfuzzed.csv", tmp_path / "fuzzed.csv"
    a.write_text("rev_id,comment,toxic\n1,i am a gay man,False\n2,gay people are awful,True\n")
    b.write_text(
        "rev_id,comment,toxic\n1,i am a straight man,False\n2,tall people are awful,True\n"
    )
    ev = load_eval(f"toxicity-pairs:{a},{b}")
    assert ev.labels.tolist() == [0, 1] and ev.pair_texts[0] == "i am a straight man"
    with pytest.raises(DataError, match="NONFUZZED"):
        load_eval(f"toxicity-pairs:{a}")
    with pytest.raises(DataError, match="FORMAT"):
        load_eval("jigsaw:x.csv")


def test_gate_passes_good_data_and_refuses_a_bad_batch(tmp_path):
    data = generate_posts(CFG, seed=0)
    summary = check_training_data(data, tmp_path, seed=0, inject_bad=True)
    assert all(b["passed"] for b in summary["batches"].values())
    inj = summary["injected"]
    assert not inj["passed"] and "out_of_range[n_chars]" in inj["failed"]
    assert inj["quarantined_to"] and (tmp_path / "quarantine").is_dir()
    # real data with empty texts in the training split is refused in one line
    for i in data.split["train"][:40]:
        data.texts[i] = ""
    with pytest.raises(DataError, match="data gate refused") as e:
        check_training_data(data, tmp_path, seed=0, inject_bad=False)
    assert "\n" not in str(e.value)


def test_one_class_training_data_is_refused(tmp_path):
    p = tmp_path / "clean.csv"
    p.write_text("text,label\n" + "".join(f"text {tag(i)} here,0\n" for i in range(40)))
    with pytest.raises(DataError, match="only one class"):
        load_source(f"csv:{p}", CFG, 0)
