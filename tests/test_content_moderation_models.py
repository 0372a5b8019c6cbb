"""Content moderation models: the rules baseline, TF-IDF + LR and its no-pickle round trip,
calibration, thresholds from PR curves, the MiniLM encoder (tiny config) with ONNX parity, and
one request through the training path and the predictor (no train/serve skew)."""

import numpy as np
import pytest
import torch

from cases.content_moderation.baseline import ModerationRules
from cases.content_moderation.config import get_config
from cases.content_moderation.data import generate_posts
from cases.content_moderation.evaluate import actions, macro_f1_interval, policy_metrics
from cases.content_moderation.model import (
    ModerationTfidf,
    apply_platt,
    build_encoder,
    encode_texts,
    export_encoder_onnx,
    fit_platt,
    load_tokenizer,
    minilm_dir,
    onnx_logits,
    verify_minilm,
)
from cases.content_moderation.train import (
    encoder_logits,
    identity_augment,
    policy_thresholds,
    train_encoder,
    train_steps,
)
from shared.onnx_utils import make_session

CFG = get_config("tiny")
TINY_BERT = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def test_rules_fire_and_miss_obfuscation():
    r = ModerationRules()
    s = r.score(["you are an idiot", "you are an 1d10t", "win a free iphone http://bit.ly/1"],
                ("offensive", "spam"))  # fmt: skip
    assert s[0, 0] > 0 and s[1, 0] == 0  # obfuscation slips past the blocklist
    assert s[2, 1] >= 2  # words + the URL


def test_thresholds_from_pr_curve_hand_example():
    # scores 0.1..1.0; labels: the top 5 are violating, plus one at 0.3
    s = np.linspace(0.1, 1.0, 10)[:, None]
    y = np.array([0, 0, 1, 0, 0, 1, 1, 1, 1, 1])[:, None]
    th = policy_thresholds(y, s, ("p",), remove_precision=0.95, review_recall=0.9)["p"]
    # precision >= 0.95 with >= 5 items above: the top 5 (0.6 and up) are all violating
    assert th["remove"] == pytest.approx(0.6)
    # recall >= 0.9 needs 0.3 (6 of 6 positives): review there
    assert th["review"] == pytest.approx(0.3)
    assert th["flag"] <= th["remove"]
    act = actions(np.array([[0.2], [0.4], [0.7]]), {"p": th}, ("p",))
    assert act.tolist() == [0, 1, 2]


def test_never_removes_without_precision():
    y = np.array([1, 0] * 20)[:, None]
    s = np.random.default_rng(0).random((40, 1))
    th = policy_thresholds(y, s, ("p",), 0.95, 0.9)["p"]
    assert th["remove"] > 1.0  # nothing reaches 95% precision: everything goes to review


def test_policy_metrics_and_interval():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    s = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.4, 0.7, 0.6])
    row = policy_metrics(y, s, 0.5, ci=True)
    assert row["roc_auc"] == pytest.approx(14 / 16)
    d = (s >= 0.5).astype(int)  # tp 3, fp 1, fn 1, tn 3 -> F1 0.75 both classes
    assert row["macro_f1"] == pytest.approx(0.75) and row["f1"] == pytest.approx(0.75)
    lo, hi = macro_f1_interval(y, d, seed=0)
    assert lo <= 0.75 <= hi


def test_platt_calibrates():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.3).astype(int)
    z = (y * 2.0 - 1.0) * 3.0 + rng.normal(0, 3, 2000) + 4.0  # shifted, over-confident logits
    ab = fit_platt(z[:, None], y[:, None])
    p = apply_platt(z[:, None], ab)[:, 0]
    assert abs(p.mean() - y.mean()) < 0.02


def test_tfidf_learns_and_round_trips():
    data = generate_posts(CFG, seed=0)
    tr_t, y_tr = data.subset("train")
    te_t, y_te = data.subset("test")
    m = ModerationTfidf(5_000, 10_000, 1, 4.0).fit(tr_t, y_tr)
    z = m.logits(te_t)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y_te[:, 0], z[:, 0]) > 0.75  # offensive
    tensors, files = m.state()
    m2 = ModerationTfidf.from_state(tensors, files["tfidf_vocab.json"])
    assert np.allclose(m2.logits(te_t), z, atol=1e-5)
    # the per-text path a served batch takes equals the sparse-matrix path
    few = te_t[:20] + ["", "zzzz qqq", "£500 ÄÖ 🖕"]
    dense = np.asarray(m2.features(few) @ m2.coef_.T) + m2.intercept_
    assert np.allclose(m2.logits(few), dense, atol=1e-4)


def test_identity_augmentation_adds_swapped_copies():
    texts = ["as a gay man i hike", "no identity"]
    y = np.array([[0], [1]], np.int8)
    t2, y2, n = identity_augment(texts, y, seed=0)
    assert n == 1 and len(t2) == 3 and "gay" not in t2[2] and y2[2, 0] == 0


def test_minilm_is_pinned_and_tokenizer_pads_dynamically():
    verify_minilm()
    tok = load_tokenizer(minilm_dir() / "tokenizer.json", max_len=16)
    ids, mask = encode_texts(tok, ["hi", "@USER @USER @USER a much longer text " * 5])
    assert ids.shape == mask.shape and ids.shape[1] == 16  # truncated to max_len
    ids, mask = encode_texts(tok, ["hi", "hello there"])
    assert ids.shape[1] < 16 and mask[0].sum() < mask[1].sum()  # padded to the batch's longest


def test_encoder_tiny_overfits_and_exports(tmp_path):
    torch.manual_seed(0)
    texts = ["you are an idiot", "lovely day at the park", "shut up moron", "nice game"] * 4
    y = np.array([[1], [0], [1], [0]] * 4, np.int8)
    cfg = get_config(
        "tiny",
        lr=3e-3,
        head_lr=3e-3,
        epochs=12,
        patience=20,
        batch_size=8,
        freeze_layers=1,
        max_train_steps=0,  # no step budget: all 12 epochs
        min_train_minutes=3.0,
        max_train_minutes=3.0,
    )
    model, tok, info = train_encoder(cfg, texts, y, texts, y, seed=0, log=lambda s: None,
                                     pretrained=False, bert_config=TINY_BERT)  # fmt: skip
    assert info["best_val_macro_f1"] == pytest.approx(1.0)
    assert info["frozen_layers"] == 1  # trained on cached layer-0 states
    logits = encoder_logits(model, tok, texts)  # (16, 1)
    assert logits.shape == (16, 1)
    path, diff = export_encoder_onnx(model, tok, tmp_path / "enc.onnx")
    assert diff < 1e-3
    got = onnx_logits(make_session(path), tok, texts)
    assert np.allclose(got, logits, atol=1e-3)


def test_step_budget_not_wall_clock():
    """The fine-tuning budget is in steps: epochs x steps per epoch, cut to the budget, and the
    run takes exactly that many steps (the learning rate has decayed to 0 at the last one)."""
    cfg = get_config("tiny", epochs=3, batch_size=4, max_train_steps=5, freeze_layers=1)
    assert train_steps(cfg, 16, builtin=False) == (4, 5)
    assert train_steps(cfg, 16, builtin=True) == (4, 3)  # tiny: builtin_train_steps = 3
    no_budget = get_config("tiny", epochs=3, batch_size=4, max_train_steps=0)
    assert train_steps(no_budget, 16, builtin=False) == (4, 12)  # every planned epoch
    texts = ["you are an idiot", "lovely day at the park", "shut up moron", "nice game"] * 4
    y = np.array([[1], [0], [1], [0]] * 4, np.int8)
    _, _, info = train_encoder(cfg, texts, y, texts, y, seed=0, log=lambda s: None,
                               pretrained=False, bert_config=TINY_BERT)  # fmt: skip
    assert info["steps"] == info["planned_steps"] == 5
    assert info["stopped"] == "step budget done" and info["step_cpu_seconds"] > 0


def test_encoder_shapes_and_split_forward():
    enc = build_encoder(3, pretrained=False, bert_config=TINY_BERT).eval()
    ids = torch.randint(0, 100, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        full = enc(ids, mask)
        enc.split = 1
        split = enc.upper(enc.lower(ids, mask), mask)
    assert full.shape == (2, 3) and torch.allclose(full, split, atol=1e-6)


def test_predictor_serves_the_encoder_graph(tmp_path):
    """An artifact whose shipped model is the encoder (+ TF-IDF blend): the predictor's scores
    equal the offline path (ONNX logits -> Platt -> blend) for the same texts."""
    from cases.content_moderation.predictor import ModerationPredictor
    from cases.content_moderation.train import save_moderation_artifact

    data = generate_posts(CFG, seed=0)
    tr_t, y_tr = data.subset("train")
    tfidf = ModerationTfidf(2_000, 2_000, 1, 4.0).fit(tr_t, y_tr)
    enc = build_encoder(len(data.policies), pretrained=False, bert_config=TINY_BERT)
    tok = load_tokenizer(minilm_dir() / "tokenizer.json", CFG.max_len)
    path, _ = export_encoder_onnx(enc, tok, tmp_path / "enc.onnx")
    platt = np.tile([[1.5, -0.2]], (len(data.policies), 1))
    tensors, files = tfidf.state()
    files["encoder.onnx"] = path.read_bytes()
    files["tokenizer.json"] = (minilm_dir() / "tokenizer.json").read_bytes()
    comps = {"encoder": {"weight": 0.75, "platt": platt.tolist()},
             "tfidf": {"weight": 0.25, "platt": platt.tolist()}}  # fmt: skip
    th = {p: {"remove": 0.9, "review": 0.5, "flag": 0.5} for p in data.policies}
    fit = {"files": files, "tensors": tensors, "components": comps, "production": "ensemble",
           "production_scores": "ensemble", "thresholds": {"ensemble": th},
           "info": {"val_macro_f1": {"ensemble": 0.5}}}  # fmt: skip
    art = save_moderation_artifact(tmp_path / "art", CFG, data, fit, None, None, "fp")
    texts = ["you are an idiot", "have a lovely day", "win a free iphone"]
    offline = 0.75 * apply_platt(onnx_logits(make_session(path), tok, texts), platt)
    offline += 0.25 * apply_platt(tfidf.logits(texts), platt)
    pred = ModerationPredictor.load(art)
    assert np.allclose(pred.score_texts(texts), offline, atol=1e-5)
    out = pred.moderate_batch([{"text": t, "kind": "post"} for t in texts])
    assert all(o["action"] in ("allow", "review", "remove") for o in out)
    # The review queue's priority (review.queue_priority): severity x reach x P of the policy
    # with the largest severity x P among those that reached their review threshold.
    from cases.content_moderation.data import severity

    def ask(review_at, reach=None):
        pred.thresholds = {p: {"review": review_at(p), "remove": 2.0} for p in pred.policies}
        return pred.moderate_batch([{"text": texts[0], "kind": "post", "reach": reach}])[0]

    a = ask(lambda p: 0.0, reach=2500.0)  # every policy due
    scores = a["scores"]
    top = max(scores, key=lambda p: severity(p) * scores[p])
    assert (a["action"], a["priority_policy"], a["severity"]) == ("review", top, severity(top))
    assert a["reach"] == 2500.0
    assert a["priority"] == pytest.approx(severity(top) * 2500.0 * scores[top], abs=1e-3)
    b = ask(lambda p: 0.0)  # no reach: the README's median, 100 views
    assert b["reach"] == 100.0 and b["priority"] == pytest.approx(a["priority"] / 25, abs=1e-3)
    low = min(scores, key=lambda p: severity(p) * scores[p])
    assert low != top
    c = ask(lambda p: 0.0 if p == low else 1.5)  # only `low` reached its review threshold
    assert c["action"] == "review" and c["priority_policy"] == low
    assert c["priority"] == pytest.approx(severity(low) * 100.0 * scores[low], abs=1e-3)
    d = ask(lambda p: 1.5)  # allowed: not queued, no priority
    assert d["action"] == "allow" and d["priority"] is None and d["severity"] is None
