"""End to end: `cli.run` on the tiny preset, the shipped-model decision, the artifact, the
predictor and its state cache, and the promotion decision."""

import argparse
import json

import numpy as np
import pytest

from cases.mobile_keyboard import cli
from cases.mobile_keyboard.config import get_config
from cases.mobile_keyboard.predictor import LSTM_FP32, LSTM_INT8, TRIGRAM, KeyboardPredictor
from cases.mobile_keyboard.train import choose_shipped
from shared.artifacts import Registry, load_artifact
from shared.errors import ArtifactError, CasebookError


def _args(out, **kw):
    base = dict(preset="tiny", data="builtin", out=out, seed=0, corpus=None, spell_test=[],
                spell_train=[], no_personalization=False)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mk") / "run"
    return cli.run(_args(out)).parent


def test_run_ships_the_validation_winner(run_dir):
    doc = json.loads((run_dir / "metrics.json").read_text())
    val = doc["tables"]["candidates:builtin"]
    assert set(val) == {"kn_full", "lstm_fp32", "lstm_int8", "mix"}
    shipped = doc["production_model"]
    assert shipped == doc["extra"]["shipped"]["name"]
    # The decision follows the validation table under the phone budget of the run's own config
    # (saved in the artifact; the tiny preset's), and the report gives choose_shipped's reasons.
    art = load_artifact(run_dir / "artifact")
    cfg = get_config("tiny")
    budget = (art.config["phone_budget_bytes"], art.config["phone_budget_ms"])
    assert budget == (cfg.phone_budget_bytes, cfg.phone_budget_ms)
    assert (shipped, doc["extra"]["shipped"]["why"]) == choose_shipped(val, *budget)
    assert val[shipped]["model_bytes"] <= budget[0]
    assert val[shipped]["ms_per_keystroke_p95"] <= budget[1]
    assert all(round(r["top1"], 3) <= round(val[shipped]["top1"], 3) for r in val.values())
    # The artifact holds exactly the shipped model's files, and the bytes the table counted.
    assert art.config["shipped"] == shipped
    model_files = {n for n in art.files if n.endswith(".safetensors")} - {"weights.safetensors"}
    expect = {"kn_full": {TRIGRAM}, "lstm_fp32": {LSTM_FP32}, "lstm_int8": {LSTM_INT8},
              "mix": {LSTM_INT8, TRIGRAM}}[shipped]  # fmt: skip
    assert model_files == expect
    assert sum(len(art.files[n]) for n in model_files) == val[shipped]["model_bytes"]
    # int8 is about a quarter of fp32 on disk, and the shipped model is never worse than the
    # trigram it replaces on validation.
    assert val["lstm_int8"]["model_bytes"] < 0.4 * val["lstm_fp32"]["model_bytes"]
    assert val[shipped]["top1"] >= val["kn_full"]["top1"] - 5e-4
    sp = doc["tables"]["spell:builtin"]
    assert set(sp) == {"symspell", "noisy_channel"}
    assert set(sp["noisy_channel"]) >= {"acc@1", "acc@3", "words_per_s"}
    assert "personalization" in doc["cohorts"]
    assert (run_dir / "report.md").is_file() and (run_dir / "next_word.png").is_file()
    # Quality floor on the tiny preset: the KN baseline learned the grammar.
    nw = doc["tables"]["next_word:builtin"]
    assert nw["kn_full"]["top3"] > 0.3 and nw[shipped]["top1"] >= 0.95 * nw["kn_full"]["top1"]


def test_report_starts_with_the_data_section_check_prints(run_dir):
    """report.md opens with the same data section `casebook check` returns for the same args."""
    report = (run_dir / "report.md").read_text()
    section = cli.check(_args(run_dir / "unused"))
    assert "## Data\n\n" + section in report
    assert report.index("## Data") < report.index("candidates:builtin")
    assert "| read | 600 | 100% |" in section and "Tokens: train" in section


def test_artifact_registry_and_predictor(run_dir):
    reg = Registry(run_dir / "registry")
    assert reg.versions()[0] == "v0001"
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


def test_choice_respects_the_budget():
    cfg = get_config("tiny")
    nbytes, ms = cfg.phone_budget_bytes, cfg.phone_budget_ms
    rows = {
        "big": {"top1": 0.30, "ksr": 0.5, "model_bytes": nbytes + 1, "ms_per_keystroke_p95": 1e-3},
        "slow": {"top1": 0.29, "ksr": 0.5, "model_bytes": 1_000, "ms_per_keystroke_p95": ms * 1.01},
        "a": {"top1": 0.2001, "ksr": 0.50, "model_bytes": nbytes, "ms_per_keystroke_p95": ms},
        "b": {"top1": 0.2004, "ksr": 0.40, "model_bytes": 1_000, "ms_per_keystroke_p95": 1e-3},
    }
    name, why = choose_shipped(rows, nbytes, ms)
    # big and slow are better but just over budget; a sits exactly on both limits (it fits);
    # a and b tie to 3 decimals: ksr decides.
    assert name == "a" and "over budget" in why["big"] and "p95" in why["slow"]
    assert f"{nbytes + 1:,} bytes > {nbytes:,}" in why["big"]
    with pytest.raises(CasebookError, match="no next-word candidate fits"):
        choose_shipped({"big": rows["big"]}, nbytes, ms)


def test_train_ships_within_the_configured_budget(run_dir, tmp_path):
    """A budget between the int8 and the fp32 LSTM (sizes from the run above, same preset,
    seed and data): train() labels fp32 over that budget and ships a model within it."""
    from cases.mobile_keyboard.data import builtin_corpus
    from cases.mobile_keyboard.train import train

    val = json.loads((run_dir / "metrics.json").read_text())["tables"]["candidates:builtin"]
    fp32, int8 = val["lstm_fp32"]["model_bytes"], val["lstm_int8"]["model_bytes"]
    budget = (fp32 + int8) // 2
    cfg = get_config("tiny", phone_budget_bytes=budget)
    corpus = builtin_corpus(cfg.n_messages, 0, cfg.split_fractions)
    trained = train(cfg, corpus, tmp_path / "artifact", log=lambda _: None)
    rows = trained.validation
    assert rows["lstm_fp32"]["model_bytes"] == fp32 > budget
    assert trained.why["lstm_fp32"].startswith(f"over budget: {fp32:,} bytes > {budget:,}")
    assert trained.shipped != "lstm_fp32" and rows[trained.shipped]["model_bytes"] <= budget
    assert load_artifact(trained.artifact).config["phone_budget_bytes"] == budget


def test_trigram_ships_when_it_wins_on_validation(tmp_path):
    """A fixture where the trigram wins (one epoch of LSTM on 4K words, the mixture mostly
    LSTM): the trigram ships and the predictor serves it, with no LSTM in the artifact."""
    from cases.mobile_keyboard.data import builtin_corpus
    from cases.mobile_keyboard.scoring import NextWordScorer, test_stream
    from cases.mobile_keyboard.train import train

    cfg = get_config("tiny", mix_weights=(0.05,))
    corpus = builtin_corpus(cfg.n_messages, 0, cfg.split_fractions)
    trained = train(cfg, corpus, tmp_path / "artifact", log=lambda _: None)
    val = trained.validation
    assert trained.shipped == "kn_full" == max(val, key=lambda n: val[n]["top1"])
    art = load_artifact(trained.artifact)
    assert TRIGRAM in art.files and LSTM_INT8 not in art.files and LSTM_FP32 not in art.files
    p = KeyboardPredictor.load(trained.artifact, with_spell=False)
    assert p.model.lstm is None and p.model.trigram is not None
    # The served suggestions are the offline scorer's top 3 for the same words.
    ids, words, pos = test_stream(corpus.test[:3], trained.vocab, 10**6)
    lp = NextWordScorer(trained.candidates["kn_full"].next_word, ids).batch_logp(pos)
    for i in range(len(words)):
        start = int(np.flatnonzero(ids[: pos[i]] == 1)[-1])  # this message's <s>
        context = " ".join(trained.vocab.itos[t] for t in ids[start + 1 : pos[i]])
        expect = trained.vocab.top_words(lp[i], "", 3)
        assert p.suggest(context)["next_words"] == expect


def test_promotion_compares_like_with_like_and_refuses_a_corrupt_champion(run_dir):
    """Same preset, seed and data: compared with the champion's own record. An unreadable
    champion: an error in the report and no promotion, not a silent pass."""
    out = run_dir  # its registry holds v0001, made from the same data
    doc = json.loads(cli.run(_args(out / "again", no_personalization=True)).read_text())
    first = doc["extra"]["registry"]
    assert first["version"] == "v0001" and first["champion_before"] is None
    again = _args(out / "again", no_personalization=True)
    champion = Registry(out / "again" / "registry").resolve("champion")
    (champion / "vocab.json").write_text('["tampered"]')
    doc = json.loads(cli.run(again).read_text())
    reg = doc["extra"]["registry"]
    assert reg["version"] == "v0002" and reg["error"] and reg["promoted"] is False
    assert "Error" in (out / "again" / "report.md").read_text()


def test_the_fingerprint_follows_the_data(run_dir):
    """Another seed makes other built-in data, so its runs are never compared with seed 0's."""
    from cases.mobile_keyboard.data import builtin_corpus
    from cases.mobile_keyboard.model import KeyboardVocab
    from cases.mobile_keyboard.train import token_stream
    from shared.artifacts import fingerprint_arrays

    def fingerprint(seed):
        corpus = builtin_corpus(600, seed)
        return fingerprint_arrays(
            token_stream(corpus.train, KeyboardVocab.build(corpus.train, 600, 2))
        )

    assert fingerprint(0) == fingerprint(0) != fingerprint(1)
    recorded = (run_dir / "artifact" / "fingerprint").read_text().strip()
    assert recorded == fingerprint(0)  # the tiny preset: 600 messages, vocabulary 600
