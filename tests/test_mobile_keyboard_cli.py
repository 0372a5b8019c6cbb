"""End to end: `cli.run` on the tiny preset, the artifact, the predictor and its state cache."""

import argparse
import json

import pytest

from cases.mobile_keyboard import cli
from cases.mobile_keyboard.predictor import KeyboardPredictor
from shared.artifacts import Registry
from shared.errors import ArtifactError, CasebookError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mk") / "run"
    args = argparse.Namespace(
        preset="tiny",
        data="builtin",
        out=out,
        seed=0,
        corpus=None,
        spell_test=[],
        spell_train=[],
        no_personalization=False,
    )
    metrics_path = cli.run(args)
    return metrics_path.parent


def test_run_writes_the_expected_tables(run_dir):
    doc = json.loads((run_dir / "metrics.json").read_text())
    assert doc["case"] == "mobile-keyboard" and doc["production_model"] == "lstm_int8"
    nw = doc["tables"]["next_word:builtin"]
    assert set(nw) == {"kn_ngram", "lstm", "lstm_int8"}
    for row in nw.values():
        assert set(row) >= {"top1", "top3", "ksr", "ms_per_keystroke_p95", "model_bytes"}
        assert 0 <= row["top1"] <= row["top3"] <= 1
    assert nw["lstm_int8"]["model_bytes"] < nw["lstm"]["model_bytes"]
    sp = doc["tables"]["spell:builtin"]
    assert set(sp) == {"symspell", "noisy_channel"}
    assert set(sp["noisy_channel"]) >= {"acc@1", "acc@3", "words_per_s"}
    assert "personalization" in doc["cohorts"]
    assert (run_dir / "report.md").is_file() and (run_dir / "next_word.png").is_file()
    # Quality floor on the tiny preset: the KN baseline learned the grammar.
    assert nw["kn_ngram"]["top3"] > 0.3


def test_artifact_registry_and_predictor(run_dir):
    reg = Registry(run_dir / "registry")
    assert reg.versions() == ["v0001"]
    p = KeyboardPredictor.load(run_dir / "artifact")
    out = p.suggest("do you want to", "gr")
    assert set(out) == {"completions", "next_words", "corrections", "context_tokens"}
    assert all(w.startswith("gr") for w in out["completions"])
    assert len(out["next_words"]) == 3
    assert p.suggest("see you", "tomorow")["corrections"][:1] == ["tomorrow"]


def test_predictor_caches_state_per_context(run_dir):
    p = KeyboardPredictor.load(run_dir / "artifact", with_spell=False)
    p.suggest("we are running late", "f")
    n = p.steps_run
    p.suggest("we are running late", "fo")  # next letter of the same word: no LSTM step
    assert p.steps_run == n
    p.suggest("we are running late for", "")  # one more word: exactly one step
    assert p.steps_run == n + 1
    # The cached distribution equals a fresh full recompute.
    fresh = KeyboardPredictor.load(run_dir / "artifact", with_spell=False)
    a = p.suggest("we are running late for", "")["next_words"]
    assert a == fresh.suggest("we are running late for", "")["next_words"]


def test_predictor_starts_each_sentence_afresh(run_dir):
    p = KeyboardPredictor.load(run_dir / "artifact", with_spell=False)
    start = p.suggest("")["next_words"]
    for ended in ("see you at home.", "see you at home. ", "ok! "):
        r = p.suggest(ended)
        assert r["next_words"] == start and r["context_tokens"] == 0
    r = p.suggest("see you at home. want to")
    assert r == p.suggest("want to") and r["context_tokens"] == 2


def test_personal_cache_offers_private_words(run_dir):
    p = KeyboardPredictor.load(run_dir / "artifact", with_spell=False)
    for _ in range(5):
        p.learn("u1", "see you at the bouldering wall with quentin")
    assert "quentin" in p.suggest("see you at the bouldering wall with", "q", "u1")["completions"]
    assert "quentin" not in p.suggest("see you at the bouldering wall with", "q")["completions"]


def test_corrupt_artifact_is_refused(run_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir / "artifact", bad)
    (bad / "vocab.json").write_text('["tampered"]')
    with pytest.raises(ArtifactError):
        KeyboardPredictor.load(bad)


def test_bad_inputs_are_casebook_errors(tmp_path):
    args = argparse.Namespace(preset="tiny", data="builtin", out=tmp_path, seed=0, corpus=None,
                              spell_test=["tsv:/does/not/exist.tsv"], spell_train=[],
                              no_personalization=True)  # fmt: skip
    with pytest.raises(CasebookError, match="does not exist"):
        cli.run(args)
    args.spell_test, args.data = [], "parquet:x"
    with pytest.raises(CasebookError, match="builtin"):
        cli.run(args)
    args.data, args.train_fraction = "builtin", 0.0
    with pytest.raises(CasebookError, match="training fraction"):
        cli.run(args)


def test_serve_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(CasebookError, match="no model"):
        cli.serve(tmp_path / "missing", "127.0.0.1", 0)
