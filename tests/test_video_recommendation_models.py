"""Video recommendation: baselines against hand-computed scores, neural shapes and overfitting,
re-ranking rules, and ONNX parity of the served ranker."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cases.video_recommendation.baseline import EASE, ItemKNN, Popularity
from cases.video_recommendation.config import get_config
from cases.video_recommendation.data import VideoRecData
from cases.video_recommendation.model import (
    N_DENSE,
    VideoRecRanker,
    VideoRecRankerServing,
    VideoRecSASRec,
    VideoRecTwoTower,
    pad_left,
)
from cases.video_recommendation.predictor import rerank
from cases.video_recommendation.train import (
    RecencyEASERetriever,
    make_split,
    recency_matrix,
    sasrec_windows,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models: extra intra-op threads only add synchronisation cost.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# users x items: item 0 and 1 co-watched once; each also watched alone once
X = sp.csr_matrix(np.array([[1, 1], [1, 0], [0, 1]], dtype=np.float32))


def test_ease_matches_hand_computed_weights():
    # G = X^T X + I = [[3, 1], [1, 3]], P = G^-1 = [[3, -1], [-1, 3]] / 8,
    # B_01 = -P_01 / P_11 = (1/8) / (3/8) = 1/3, diagonal zero.
    m = EASE(lam=1.0).fit(X)
    np.testing.assert_allclose(m.B_, [[0, 1 / 3], [1 / 3, 0]], atol=1e-6)
    np.testing.assert_allclose(m.score(sp.csr_matrix([[1.0, 0.0]])), [[0, 1 / 3]], atol=1e-6)


def test_ease_on_a_capped_catalog_scores_only_the_head():
    Xb = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 0]], dtype=np.float32))
    m = EASE(lam=1.0, max_items=2).fit(Xb)
    s = m.score(sp.csr_matrix([[1.0, 0, 0]]))
    assert s.shape == (1, 3) and s[0, 2] == 0 and s[0, 1] > 0


def test_recency_matrix_decays_from_the_newest_watch_and_keeps_the_max_on_repeats():
    W = recency_matrix([np.array([2, 0, 2, 1])], 3, tau=1.0, floor=0.1).toarray()[0]
    decay = 0.1 + 0.9 * np.exp(-np.arange(4.0))  # r = 0 newest (item 1), 1, 2, 3
    np.testing.assert_allclose(W, [decay[2], decay[0], decay[1]], rtol=1e-6)
    flat = recency_matrix([np.array([2, 0])], 3, tau=0.0, floor=0.1).toarray()[0]
    np.testing.assert_allclose(flat, [1, 0, 1])  # tau 0: no decay, plain EASE's binary history


def test_recency_ease_picks_a_decay_when_the_next_watch_follows_the_last_one():
    # Three "series" of five videos, watched in order. Every user started one series long ago
    # and stopped after 2-3 episodes, then moved to another one; the next watch continues the
    # newer series, which only the recent watches say.
    rng = np.random.default_rng(0)
    users, items, ts = [], [], []
    for u in range(90):
        old, new = rng.choice(3, 2, replace=False) * 5
        seq = [old + k for k in range(int(rng.integers(2, 4)))]
        seq += [new + k for k in range(int(rng.integers(3, 6)))]
        users += [u] * len(seq)
        items += seq
        ts += list(range(len(seq)))
    data = VideoRecData(
        interactions={
            "user": np.array(users),
            "item": np.array(items),
            "timestamp": np.array(ts),
            "weight": np.ones(len(users), np.float32),
        },
        n_users=90,
        n_items=15,
        source="test",
        item_topic=np.zeros(15, np.int64),
    )
    split = make_split(data)
    m = RecencyEASERetriever(get_config("tiny", ease_lambda=1.0)).fit(split)
    assert m.tau_ > 0 and m.val_ndcg_[m.tau_] > m.val_ndcg_[0.0]
    plain = RecencyEASERetriever(get_config("tiny", ease_lambda=1.0, recency_taus=(0.0,)))
    plain.fit(split)
    H = split.X_trainval[:5]
    np.testing.assert_allclose(
        plain.score(H, split.seqs_trainval[:5]), plain.ease.score(H), rtol=1e-5, atol=1e-6
    )


def test_item_knn_matches_hand_computed_cosine():
    # co-watch(0, 1) = 1; |item 0| = |item 1| = sqrt(2): cosine = 1 / 2 (no shrinkage)
    m = ItemKNN(k=5, shrink=0.0).fit(X)
    np.testing.assert_allclose(m.score(sp.csr_matrix([[1.0, 0.0]])), [[0, 0.5]], atol=1e-6)


@pytest.mark.parametrize("name", ["item_knn", "ease"])
def test_a_shipped_item_item_model_serves_its_own_scores_through_the_table(name):
    # The served table (top neighbours per video) must reproduce the offline scores H S / H B
    # for every video it lists, when k covers every neighbour: EASE's negative weights too.
    from cases.video_recommendation.predictor import i2i_candidates, i2i_table
    from cases.video_recommendation.train import BaselineRetriever, VideoRecTrained, item_item_table

    rng = np.random.default_rng(0)
    Xr = sp.csr_matrix((rng.random((40, 12)) < 0.3).astype(np.float32))
    model = ItemKNN(k=12, shrink=1.0) if name == "item_knn" else EASE(lam=5.0)
    trained = VideoRecTrained(None, {name: BaselineRetriever(model.fit(Xr))}, {}, {}, name, "")
    t = item_item_table(trained, 12)
    assert t["tau"] == 0.0 and t["idx"].dtype == np.int32
    row_of = np.full(12, -1)
    row_of[t["rows"]] = np.arange(len(t["rows"]))
    hist = [np.array([0, 3, 5]), np.array([7])]
    table = i2i_table(t["idx"], t["w"], len(t["cols"]))
    found = i2i_candidates(hist, table, row_of, 12, cols=t["cols"])
    H = sp.csr_matrix((np.ones(4), ([0, 0, 0, 1], [0, 3, 5, 7])), shape=(2, 12))
    offline = model.score(H)
    if name == "ease":
        assert (t["w"] < 0).any()  # the negative weights are stored, not dropped
    for r, (items, scores) in enumerate(found):
        assert len(items) > 0
        np.testing.assert_allclose(scores, offline[r, items], rtol=1e-5, atol=1e-6)
    # Each row's neighbours come by |weight|, so the first k' columns are the table at k'.
    mag = np.abs(t["w"])
    assert np.all(np.diff(mag, axis=1) <= 0)


def test_popularity_counts():
    np.testing.assert_allclose(Popularity().fit(X).score(X[:1]), [[2, 2]])


def test_sasrec_windows_cover_every_transition():
    x, y = sasrec_windows([np.array([0, 1, 2, 3, 4])], L=2)
    pairs = {(a, b) for xi, yi in zip(x, y, strict=True) for a, b in zip(xi, yi, strict=True) if b}
    assert pairs == {(1, 2), (2, 3), (3, 4), (4, 5)}  # +1 shifted ids, pad 0


def _overfit(model, loss_fn, steps=60, lr=0.02):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss.item()


def test_two_tower_shapes_and_overfits_one_batch():
    torch.manual_seed(0)
    m = VideoRecTwoTower(n_items=30, n_topics=4, dim=16)
    hist = torch.from_numpy(pad_left([np.array([1, 2]), np.array([5]), np.array([7, 8, 9])], 4))
    assert m.user_vectors(hist).shape == (3, 16)
    pos, topic = torch.tensor([4, 11, 20]), torch.tensor([1, 2, 3])
    assert m.item_vectors(pos, topic).shape == (3, 16)
    first, last = _overfit(m, lambda: m.loss(hist, pos, topic, torch.zeros(3)))
    assert last < 0.2 * first


def test_sasrec_shapes_and_overfits_one_batch():
    torch.manual_seed(0)
    m = VideoRecSASRec(n_items=40, dim=16, max_len=6, layers=1, heads=2, dropout=0.0)
    seq = torch.tensor([[0, 0, 1, 2, 3, 4], [0, 5, 6, 7, 8, 9]])
    tgt = torch.tensor([[0, 0, 2, 3, 4, 5], [0, 6, 7, 8, 9, 10]])
    assert m(seq).shape == (2, 41)
    assert torch.isfinite(m.hidden(torch.zeros(1, 6, dtype=torch.long))).all()  # all-pad row
    first, last = _overfit(m, lambda: m.loss(seq, tgt))
    assert last < 0.2 * first
    first, last = _overfit(m, lambda: m.loss(seq, tgt, n_negatives=16))
    assert last < 0.5


def _ranker_batch(n=16):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randint(1, 20, (n,), generator=g),
        torch.randint(1, 4, (n,), generator=g),
        torch.randn(n, N_DENSE, generator=g),
        torch.randint(0, 5, (n,), generator=g),
    )


def test_ranker_shapes_and_overfits_one_batch():
    torch.manual_seed(0)
    m = VideoRecRanker(n_items=20, n_topics=3, slate_size=5, hidden=16)
    item, topic, dense, pos = _ranker_batch()
    assert m(item, topic, dense, pos).shape == (16, 3)
    y = (torch.arange(16) % 2).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def loss():
        out = m(item, topic, dense, pos)
        return sum(bce(out[:, j], y) for j in range(3))

    first, last = _overfit(m, loss, steps=150)
    assert last < 0.3 * first


def test_position_tower_is_dropped_at_serving():
    m = VideoRecRanker(n_items=20, n_topics=3, slate_size=5, hidden=16).eval()
    with torch.no_grad():
        m.position.weight.fill_(3.0)
        item, topic, dense, pos = _ranker_batch()
        served = VideoRecRankerServing(m)(item, topic, dense)
        dense0 = dense.clone()
        dense0[:, -1] = 0
        np.testing.assert_allclose(served.numpy(), m(item, topic, dense0).numpy(), atol=1e-6)


def test_ranker_onnx_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from shared.onnx_utils import check_parity, export_onnx

    m = VideoRecRankerServing(VideoRecRanker(20, 3, 5, hidden=16)).eval()
    item, topic, dense, _ = _ranker_batch()
    path = export_onnx(
        m,
        (item, topic, dense),
        tmp_path / "r.onnx",
        ["item", "topic", "dense"],
        ["logits"],
        dynamic_axes={"item": {0: "b"}, "topic": {0: "b"}, "dense": {0: "b"}, "logits": {0: "b"}},
    )
    assert check_parity(m, path, (item[:5], topic[:5], dense[:5]), atol=1e-4) <= 1e-4


def test_rerank_removes_watched_caps_topics_and_diversifies():
    items = np.arange(8)
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2], dtype=np.float32)
    topics = np.array([0, 0, 0, 0, 1, 1, 2, -1])
    pick = rerank(items, scores, topics, k=6, exclude={0}, max_per_topic=2, mmr_lambda=0.8)
    chosen = items[pick]
    assert 0 not in chosen
    assert sum(topics[chosen] == 0) <= 2
    assert len(chosen) == 6 and len(set(chosen)) == 6
    # relevance only and no cap: plain score order
    pick = rerank(items, scores, topics, k=3, mmr_lambda=1.0, max_per_topic=99)
    assert list(items[pick]) == [0, 1, 2]
