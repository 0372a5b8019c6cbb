"""Email smart reply models: the 1-of-100 protocol by hand, encoders, ONNX parity, the trigger,
and one request through the training path and the serving path."""

import numpy as np
import pytest
import torch

from cases.email_smart_reply import evaluate as ev
from cases.email_smart_reply import train as T
from cases.email_smart_reply.config import get_config
from cases.email_smart_reply.data import builtin_threads, split_by_thread
from cases.email_smart_reply.model import (
    MessageTower,
    SmartReplyScratch,
    export_message_tower,
    in_batch_loss,
    load_tokenizer,
    tokenize,
)
from shared.lifecycle import torch_threads


def test_rank_metrics_hand_checked():
    # Row 0: the true reply (column 0) is best -> hit 1, rr 1.
    # Row 1: one candidate above -> hit 0, rr 1/2.
    # Row 2: tied with one other, none above -> hit 1/2, rr (1 + 1/2) / 2 = 0.75.
    scores = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    hit, rr = ev.rank_metrics(scores)
    assert hit.tolist() == [1.0, 0.0, 0.5]
    assert rr == pytest.approx([1.0, 0.5, 0.75])


def test_candidate_table_protocol():
    rows, cands = ev.candidate_table(150, n_candidates=100, max_pairs=120, seed=0)
    assert rows.shape == (120,) and cands.shape == (120, 100)
    assert np.all(cands[:, 0] == rows)  # the true reply first
    for k in range(len(rows)):
        assert len(set(cands[k].tolist())) == 100  # distinct, never the row itself twice
    again = ev.candidate_table(150, 100, 120, seed=0)
    assert np.array_equal(again[1], cands)  # seeded
    # A scorer that knows nothing scores 1 / 100 in expectation (ties broken at random).
    res = ev.one_of_100(
        lambda m, r: np.zeros((len(m), len(r))),
        list("x" * 150),
        [str(i) for i in range(150)],
        rows,
        cands,
    )
    assert ev.summary(res)["1_of_100"] == pytest.approx(0.01)
    # A scorer that knows the answer scores 1.
    oracle = lambda m, r: np.array([[float(a == b) for b in r] for a in m])  # noqa: E731
    texts = [str(i) for i in range(150)]
    assert ev.summary(ev.one_of_100(oracle, texts, texts, rows, cands))["1_of_100"] == 1.0


def test_in_batch_loss_prefers_aligned_pairs():
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    aligned = in_batch_loss(x, x, 20.0, True)
    shuffled = in_batch_loss(x, x[torch.randperm(8)], 20.0, True)
    assert aligned < shuffled and aligned < 0.5


def test_scratch_encoder_shapes_and_overfits_one_batch():
    tok = load_tokenizer()
    torch.manual_seed(0)
    msgs = [
        "Can we meet at 3pm?",
        "Thanks for the slides!",
        "Is the demo still on?",
        "Sorry, I'm sick.",
    ]
    reps = ["Works for me.", "You're welcome!", "Yes, it is.", "Feel better soon!"]
    ids, mask = tokenize(tok, msgs, 64)
    used = np.unique(np.concatenate([e.ids for e in tok.encode_batch(msgs + reps)]))
    model = SmartReplyScratch(tok.get_vocab_size(), 32, used)  # rows only for the pieces seen
    assert model.embed.num_embeddings == len(used) + 2  # + padding and unknown
    assert model.encode(ids, mask, "message").shape == (4, 32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rids, rmask = tokenize(tok, reps, 64)
    with torch_threads(1):  # two threads on a busy 2-core machine: 20x slower (cli.run)
        losses = [_step(model, opt, ids, mask, rids, rmask) for _ in range(60)]
    first, loss = losses[0], losses[-1]
    assert loss < 0.1 * first


def _step(model, opt, ids, mask, rids, rmask) -> float:
    m, r = model.encode(ids, mask, "message"), model.encode(rids, rmask, "reply")
    loss = in_batch_loss(m, r, 20.0, True)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def test_onnx_parity_and_one_request_through_both_paths(tmp_path):
    """The message tower as trained (torch) and as served (ONNX fp32) embed the same request
    alike; int8 stays close."""
    from cases.email_smart_reply.predictor import encode_texts
    from shared.onnx_utils import check_parity, make_session, quantize_dynamic_onnx

    tok = load_tokenizer()
    torch.manual_seed(0)
    model = SmartReplyScratch(tok.get_vocab_size(), 32).eval()
    path = export_message_tower(model, tok, tmp_path / "m.onnx", 64)
    ex = tokenize(tok, ["Could you review the contract by Friday?", "ok"], 64)
    assert check_parity(MessageTower(model), path, ex, atol=1e-4) < 1e-4
    request = ["Are you free tomorrow at 2pm for the review?"]
    inputs = T.ScratchInputs(model, tok, 64)
    trained = T.embed(inputs, inputs.prepare(request), "message")
    ids, mask = encode_texts(tok, request, 64)
    served = make_session(path).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert np.abs(trained - served).max() < 1e-4
    q = quantize_dynamic_onnx(path, tmp_path / "m8.onnx", per_channel=True)  # as served
    served8 = make_session(q).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert float((served8 * served).sum()) > 0.95  # cosine of unit vectors


def test_trigger_beats_suggest_always_on_precision():
    cfg = get_config("tiny")
    d = builtin_threads(600, seed=0)
    tr, va, te = split_by_thread(d, cfg, 0)
    parts = [d.subset(p) for p in (tr, va, te)]
    # FYIs (no reply) follow their thread; here simply half to train and half to test.
    half = len(d.no_reply) // 2
    parts[0].no_reply, parts[1].no_reply = d.no_reply[:half], d.no_reply[half:]
    trig = T.train_trigger(parts[0], parts[1], cfg, seed=0)
    texts, y = T.trigger_labels(parts[1], cfg)
    rows = ev.trigger_metrics(y, trig.proba(texts), trig.threshold)
    assert rows["trigger"]["precision"] > rows["suggest_always"]["precision"]
    assert rows["trigger"]["roc_auc"] > 0.7


def _tiny_minilm(tok, dim: int = 32, pool_layers=(0, 1)):
    """A SmartReplyMiniLM over a one-layer BERT of width `dim` (random weights: shapes and
    training logic, not MiniLM's quality); the heads read the embeddings' and the layer's pools."""
    from transformers import BertConfig, BertModel

    from cases.email_smart_reply.model import SmartReplyMiniLM

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        max_position_embeddings=128,
        attn_implementation="eager",
    )
    return SmartReplyMiniLM(BertModel(cfg), dim, pool_layers).eval()


def test_adapter_learns_a_mapping_zero_shot_cannot_and_folds_into_the_onnx_tower(tmp_path):
    """Frozen embeddings where a message and its reply point in unrelated directions (zero-shot
    cosine is at chance): the trained heads find the map; the exported message tower, heads
    inside, embeds a request as the training path does."""
    from cases.email_smart_reply.predictor import encode_texts
    from shared.onnx_utils import make_session

    tok = load_tokenizer()
    dim = 32
    g = torch.Generator().manual_seed(0)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]  # a random orthogonal map
    norm = torch.nn.functional.normalize

    def pairs(n):  # reply = the message rotated, plus noise; a noise block before each
        m = norm(torch.randn(n, dim, generator=g), dim=-1)
        r = norm(m @ rotation.T + 0.2 * torch.randn(n, dim, generator=g) / dim**0.5, dim=-1)
        lower = lambda: norm(torch.randn(n, dim, generator=g), dim=-1)  # noqa: E731
        return torch.cat([lower(), m], 1), torch.cat([lower(), r], 1)  # (n, 2 * dim) like features

    tm, tr_ = pairs(1024)
    vm, vr = pairs(300)
    rows, cands = ev.candidate_table(300, 100, 300, seed=1)
    val = T.ValSet(vm, vr, rows, cands)
    inputs = T.PooledInputs(_tiny_minilm(tok, dim), tok, 64)
    cfg = get_config(
        "tiny", adapter_lr=1e-2, adapter_batch_size=128, adapter_epochs=40, adapter_patience=10
    )
    with torch_threads(1):
        rec = T.fit_adapter(inputs, tm, tr_, val, cfg, seed=0)
    zero_shot = rec["history"][0][1]
    assert zero_shot < 0.1  # chance is 0.01
    assert rec["best"] > 0.6
    assert rec["best"] == pytest.approx(val.score(inputs))  # the best weights were kept
    # Serving: the heads are part of the exported message tower (nothing else to ship).
    request = ["Are you free tomorrow at 2pm for the review?", "ok"]
    feats = inputs.prepare(request)  # (2, 2 * dim) fp16 pools of the embeddings and the layer
    assert feats.shape == (2, 2 * dim) and len(inputs.cache) == 2
    trained = T.embed(inputs, feats, "message")  # (2, dim)
    path = export_message_tower(inputs.model, tok, tmp_path / "m.onnx", 64)
    ids, mask = encode_texts(tok, request, 64)
    served = make_session(path).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    assert np.abs(trained - served).max() < 5e-3  # the training path's cache is fp16


def test_production_is_the_cheap_encoder_unless_the_gain_is_beyond_noise():
    from cases.email_smart_reply.train import choose_production

    val = {"minilm_adapter": 0.078, "scratch_dual_encoder": 0.055, "bm25": 0.03}
    # 161 pairs: 2 SE at 0.078 is 0.042, so a 0.023 gain is a tie and the cheap encoder ships.
    assert choose_production(val, 161, cheapest="scratch_dual_encoder") == "scratch_dual_encoder"
    # 5,000 pairs: 2 SE is 0.0076, the same gain is real.
    assert choose_production(val, 5000, cheapest="scratch_dual_encoder") == "minilm_adapter"
    # The cheapest wins outright, or is not a candidate: the best ships.
    assert choose_production(
        {"scratch_dual_encoder": 0.3, "x": 0.2}, 100, "scratch_dual_encoder"
    ) == ("scratch_dual_encoder")
    assert choose_production({"x": 0.2, "y": 0.25}, 100, "scratch_dual_encoder") == "y"
