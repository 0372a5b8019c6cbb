"""End to end on the tiny preset: tables named POLICY:TESTSET with every model, the shipped model
(chosen on validation among several in the encoder run), a quality floor, the flip rates, the
bias and queue tables, the artifact and the registry, and one request through the training path
and the served predictor (no train/serve skew)."""

import argparse
import json

import numpy as np
import pytest

from cases.content_moderation import cli
from cases.content_moderation.config import get_config
from cases.content_moderation.data import generate_posts
from cases.content_moderation.predictor import ModerationPredictor
from cases.content_moderation.train import fit_text_models
from shared.artifacts import Registry

# toxicity-pairs: each text and its copy with only the identity term changed
_PAIRS = [
    (("as a gay person i love hiking", "as a white person i love hiking"), False),
    (("gay people are vermin", "white people are vermin"), True),
]


def _args(out, **kw):
    base = dict(preset="tiny", data="builtin", out=out, seed=0, eval=[], no_encoder=True,
                no_images=False, train_minutes=None)  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cm")
    hc = root / "hatecheck.csv"
    hc.write_text(
        "functionality,test_case,label_gold,target_ident\n"
        + "derog_neg_emote_h,muslims are vermin and should be driven out,hateful,Muslims\n" * 3
        + "ident_neutral_nh,i am a muslim and i love hiking,non-hateful,Muslims\n" * 3
    )
    a, b = root / "nonfuzzed.csv", root / "fuzzed.csv"
    for path, side in ((a, 0), (b, 1)):
        rows = [f"{i},{pair[side]},{toxic}" for i, (pair, toxic) in enumerate(_PAIRS, 1)]
        path.write_text("rev_id,comment,toxic\n" + "\n".join(rows) + "\n")
    evals = [f"hatecheck:{hc}", f"toxicity-pairs:{a},{b}"]
    return cli.run(_args(root / "run", eval=evals)).parent


def test_tables_floor_and_shipped_model(run_dir):
    doc = json.loads((run_dir / "metrics.json").read_text())
    tables = doc["tables"]
    for pol in ("offensive", "hate", "spam", "scam"):
        rows = tables[f"{pol}:builtin"]
        assert {"rules", "tfidf_lr"} <= set(rows)
        for row in rows.values():
            assert {"macro_f1", "f1", "pr_auc", "roc_auc", "precision@recall0.9"} <= set(row)
    # The per-request TF-IDF path and the matrix path agree on the whole test set.
    assert 0 <= doc["extra"]["tfidf_path_max_abs_diff"] < 1e-4
    assert "## The served TF-IDF paths" in (run_dir / "report.md").read_text()
    shipped = doc["production_model"]
    # Without the encoder the TF-IDF model is the only candidate, so it ships; the choice among
    # several (minilm, ensemble) on validation is test_run_with_encoder's.
    assert doc["extra"]["training"]["val_macro_f1"].keys() == {"tfidf_lr"}
    assert shipped == "tfidf_lr"
    off = tables["offensive:builtin"]
    # quality floor on generated data: the model beats the blocklist and clears 0.75 macro-F1
    assert off[shipped]["macro_f1"] > 0.75 and off[shipped]["pr_auc"] > off["rules"]["pr_auc"]
    bias = tables["bias:offensive:builtin"]
    assert {"rules", "tfidf_lr"} <= set(bias)
    # the flip rate's meaning is pinned in test_counterfactual_flip_rate_counts_changed_flags
    assert all(row["counterfactual_pairs"] > 0 for row in bias.values())
    assert "review_queue" in doc["cohorts"]
    q = doc["cohorts"]["review_queue"]
    assert q["priority"]["items_reviewed"] == q["fifo"]["items_reviewed"]  # same capacity
    assert "ad:builtin-ads" in tables and "image:rendered" in tables
    assert doc["extra"]["data_gate"]["injected"]["passed"] is False
    assert (run_dir / "report.md").is_file()
    # evaluation-only sets: their own tables, every model, HateCheck per functionality
    assert {"rules", "tfidf_lr"} <= set(tables["hate:hatecheck"])
    assert "hatecheck:functionality" in doc["cohorts"]


def test_pair_flip_rate_is_the_served_models(run_dir):
    """The toxicity-pairs flip rate is the share of pairs whose `offensive` flag changes when
    only the identity term does, as the served model decides: recomputed here from the
    champion's scores and its own flag threshold."""
    doc = json.loads((run_dir / "metrics.json").read_text())
    row = doc["tables"]["offensive:toxicity-pairs"][doc["production_model"]]
    pred = ModerationPredictor.load(Registry(run_dir / "registry").resolve("champion"))
    j, flag = pred.policies.index("offensive"), pred.thresholds["offensive"]["flag"]
    a = pred.score_texts([pair[0] for pair, _ in _PAIRS])[:, j] >= flag
    b = pred.score_texts([pair[1] for pair, _ in _PAIRS])[:, j] >= flag
    assert row["flip_rate"] == pytest.approx(np.mean(a != b))
    assert row["flag_rate"] == pytest.approx(np.mean(a))


def test_counterfactual_flip_rate_counts_changed_flags():
    """bias_rows on a constructed case: a scorer that flags one identity term flips every
    swapped text (the term is always replaced by another); one blind to identity never does."""
    from cases.content_moderation.data import SWAP_TERMS
    from cases.content_moderation.evaluate import bias_rows

    term = SWAP_TERMS[0]
    texts = [f"i am {term} and i {v} it" for v in ("love", "hate", "like", "fear")]
    texts.append("no identity here")  # has no term to swap: not a pair

    def by_term(t):
        return np.array([[float(f" {term} " in f" {x} ")] for x in t])

    def blind(t):
        return np.array([[float("hate" in x)] for x in t])

    scorers = {"by_term": by_term, "blind": blind}
    rows, _ = bias_rows(
        texts,
        np.array([[0], [1], [0], [1], [0]]),
        scorers,
        {m: fn(texts) for m, fn in scorers.items()},
        {m: {"offensive": {"flag": 0.5}} for m in scorers},
        "offensive",
        ("offensive",),
        seed=0,
        identities={},
    )
    assert rows["by_term"]["counterfactual_pairs"] == rows["blind"]["counterfactual_pairs"] == 4
    assert rows["by_term"]["counterfactual_flip_rate"] == 1.0
    assert rows["blind"]["counterfactual_flip_rate"] == 0.0


def test_registry_and_artifact(run_dir):
    reg = Registry(run_dir / "registry")
    assert reg.aliases()["champion"] == "v0001"
    pred = ModerationPredictor.load(reg.resolve("champion"))
    out = pred.moderate_batch([{"text": "you are a worthless idiot", "kind": "post"},
                               {"text": "have a lovely day", "kind": "post"}])  # fmt: skip
    assert out[0]["scores"]["offensive"] > out[1]["scores"]["offensive"]
    # the golden set and the monitor's reference ship in the artifact (shared.golden)
    from shared.golden import check_golden

    art = reg.resolve("champion")
    ref = json.loads((art / "monitor_reference.json").read_text())
    assert ref["decision"] == "auto_remove" and ref["decision_threshold"] == 1.0
    assert set(ref["features"]) == {"n_chars", "n_words", "non_ascii", "upper", "has_image"}
    assert len(json.loads((art / "golden.json").read_text())["requests"]) >= 50  # tiny: half
    check_golden(pred, art)


def test_one_request_through_training_and_serving_paths(tmp_path):
    from cases.content_moderation.train import save_moderation_artifact

    cfg = get_config("tiny", encoder=False)
    data = generate_posts(cfg, seed=1)
    fit = fit_text_models(cfg, data, 1, tmp_path, log=lambda s: None)
    art = save_moderation_artifact(tmp_path / "a", cfg, data, fit, None, None, "fp")
    texts = ["shut up you m0r0n", "win a free iphone now click http://bit.ly/1"]
    offline = fit["scorers"][fit["production"]](texts)
    served = ModerationPredictor.load(art).score_texts(texts)
    assert np.allclose(offline, served, atol=1e-5)


@pytest.mark.slow
def test_run_with_encoder(tmp_path):
    doc = json.loads(cli.run(_args(tmp_path / "enc", no_encoder=False, no_images=True)).read_text())
    rows = doc["tables"]["offensive:builtin"]
    assert {"minilm", "minilm_int8", "ensemble"} <= set(rows)
    # several candidates: the one shipped has the best validation macro-F1 recorded
    val = doc["extra"]["training"]["val_macro_f1"]
    assert val.keys() == {"tfidf_lr", "minilm", "ensemble"}
    assert doc["production_model"] == max(val, key=val.get)


def test_shuffled_weights_fail_the_golden_check(run_dir, tmp_path):
    """The silent failure a sha256 cannot see: weights permuted inside a valid manifest."""
    import shutil

    from shared.errors import ArtifactError
    from shared.golden import check_golden, shuffle_weights

    bad = tmp_path / "shuffled"
    shutil.copytree(Registry(run_dir / "registry").resolve("champion"), bad)
    assert shuffle_weights(bad)
    with pytest.raises(ArtifactError):
        check_golden(ModerationPredictor.load(bad), bad)
