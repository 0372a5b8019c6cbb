"""Video recommendation predictor: the EASE item-to-item source on a hand-built table, merging
candidate sources, vectorised re-ranking against the plain loop, and stage-only loading."""

import json
import math

import numpy as np
import pytest
import torch

from cases.video_recommendation.model import VideoRecTwoTower
from cases.video_recommendation.predictor import (
    VideoRecPredictor,
    i2i_candidates,
    i2i_table,
    merge_sources,
    rerank,
)
from shared.artifacts import Artifact

# A 4-video table, K = 2 neighbours per video (-1 = none):
#   0 -> 1 (0.5), 2 (0.25);  1 -> 2 (1.0);  2 -> 3 (2.0), 0 (0.1);  3 -> nothing
IDX = np.array([[1, 2], [2, -1], [3, 0], [-1, -1]], dtype=np.int64)
W = np.array([[0.5, 0.25], [1.0, 0.0], [2.0, 0.1], [0.0, 0.0]], dtype=np.float32)
ROWS = np.arange(4)
TABLE = i2i_table(IDX, W, 4)  # (4, 4) CSR


def _as_dict(items, scores):
    return {int(i): float(s) for i, s in zip(items, scores, strict=True)}


def test_i2i_without_recency_sums_neighbour_weights():
    # history [0, 1]: video 1 <- 0.5 (from 0); video 2 <- 0.25 (from 0) + 1.0 (from 1)
    [(items, scores)] = i2i_candidates([np.array([0, 1])], TABLE, ROWS, n=10)
    assert list(items) == [2, 1]  # best first
    assert _as_dict(items, scores) == pytest.approx({2: 1.25, 1: 0.5})


def test_i2i_recency_weights_the_newest_watch_most():
    # tau = 1: the newest watch (1, r = 0) weighs 1, the one before (0, r = 1) weighs e^-1
    [(items, scores)] = i2i_candidates([np.array([0, 1])], TABLE, ROWS, n=10, tau=1.0)
    e = math.exp(-1.0)
    assert _as_dict(items, scores) == pytest.approx({2: 1.0 + 0.25 * e, 1: 0.5 * e})
    # a floor keeps some weight on old watches: w_r = floor + (1 - floor) e^(-r / tau)
    [(items, scores)] = i2i_candidates([np.array([0, 1])], TABLE, ROWS, 10, 1.0, 0.5)
    w1 = 0.5 + 0.5 * e
    assert _as_dict(items, scores) == pytest.approx({2: 1.0 + 0.25 * w1, 1: 0.5 * w1})


def test_i2i_counts_a_rewatched_video_once_at_its_newest_weight_and_keeps_top_n():
    # history [2, 0, 2]: 2 is newest (r = 0, weight 1), 0 has r = 1 (weight e^-0.5 at tau 2)
    e = math.exp(-0.5)
    [(items, scores)] = i2i_candidates([np.array([2, 0, 2])], TABLE, ROWS, n=4, tau=2.0)
    want = {3: 2.0, 0: 0.1, 1: 0.5 * e, 2: 0.25 * e}
    assert _as_dict(items, scores) == pytest.approx(want)
    assert list(items) == [3, 1, 2, 0]
    [(items, _)] = i2i_candidates([np.array([2, 0, 2])], TABLE, ROWS, n=2, tau=2.0)
    assert list(items) == [3, 1]


def test_i2i_batch_and_a_table_with_rows_for_some_videos_only():
    # Rows only for videos 0 and 2 (as EASE stores its covered head): 1 contributes nothing.
    row_of = np.array([0, -1, 1, -1])
    hists = [np.array([0, 1]), np.array([3]), np.array([2])]
    out = i2i_candidates(hists, i2i_table(IDX[[0, 2]], W[[0, 2]], 4), row_of, n=10)
    assert _as_dict(*out[0]) == pytest.approx({1: 0.5, 2: 0.25})
    assert len(out[1][0]) == 0  # no row: no candidates
    assert _as_dict(*out[2]) == pytest.approx({3: 2.0, 0: 0.1})


def test_merge_sources_keeps_first_position_and_the_later_learned_label():
    f = np.float32
    parts = [
        (np.array([5, 3]), np.array([0.9, 0.8], f), "two_tower", True),
        (np.array([3, 7]), np.array([0.7, 0.6], f), "sasrec", True),
        (np.array([7, 9]), np.array([2.0, 1.0], f), "ease", True),
        (np.array([9, 1]), np.array([-1e3, -1e3], f), "trending", False),
        (np.array([1, 4]), np.array([-1e3, -1e3], f), "fresh", False),
    ]
    items, scores, labels = merge_sources(parts)
    assert list(items) == [5, 3, 7, 9, 1, 4]
    assert list(labels) == ["two_tower", "sasrec", "ease", "ease", "trending", "fresh"]
    np.testing.assert_allclose(scores, [0.9, 0.7, 2.0, 1.0, -1e3, -1e3])


def _rerank_loop(item_ids, scores, topics, k, exclude, age, boost, lam, cap):
    """The per-step Python loop re-ranking was first written as (the reference)."""
    keep = np.array([int(i) not in exclude for i in item_ids], dtype=bool)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return []
    s = scores[idx].astype(np.float64)
    s = (s - s.min()) / (s.max() - s.min() + 1e-12)
    if age is not None:
        s = s + boost * np.exp(-np.maximum(age[idx], 0.0) / 3.0)
    t = topics[idx]
    chosen, per_topic = [], {}
    available = np.ones(idx.size, dtype=bool)
    while len(chosen) < k and available.any():
        seen = np.zeros(idx.size, dtype=bool)
        for c in chosen:
            if t[c] >= 0:
                seen |= t == t[c]
        mmr = lam * s - (1.0 - lam) * seen
        capped = np.array([tt >= 0 and per_topic.get(int(tt), 0) >= cap for tt in t])
        mmr = np.where(available & ~capped, mmr, -np.inf)
        if not np.isfinite(mmr).any():
            mmr = np.where(available, lam * s, -np.inf)
        j = int(np.argmax(mmr))
        chosen.append(j)
        available[j] = False
        per_topic[int(t[j])] = per_topic.get(int(t[j]), 0) + 1
    return [int(idx[j]) for j in chosen]


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_rerank_matches_the_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    items = rng.permutation(1000)[:n]
    scores = rng.normal(size=n).astype(np.float32)
    scores[rng.random(n) < 0.2] = -1e3  # fill-in candidates tie at the bottom
    topics = rng.integers(-1, 4, n)
    exclude = set(rng.choice(items, int(rng.integers(0, n + 1)), replace=False).tolist())
    age = rng.uniform(-2, 10, n) if seed % 2 else None
    k, lam, cap = int(rng.integers(1, 40)), float(rng.uniform(0, 1)), int(rng.integers(1, 4))
    want = _rerank_loop(items, scores, topics, k, exclude, age, 0.05, lam, cap)
    got = rerank(items, scores, topics, k, exclude, age, 0.05, lam, cap)
    assert got == want


def _artifact(tmp_path, with_i2i: bool) -> Artifact:
    """A hand-built 4-video artifact: an untrained two-tower model, no ranker (retrieval order)."""
    torch.manual_seed(0)
    tower = VideoRecTwoTower(n_items=4, n_topics=2, dim=8)
    tensors = {f"tower.{k}": v for k, v in tower.state_dict().items()}
    tensors.update(
        {
            "item_topic": torch.tensor([0, 1, 0, 1]),
            "item_age_days": torch.tensor([1.0, 2.0, 3.0, 4.0]),
            "item_views": torch.tensor([4.0, 3.0, 2.0, 1.0]),
            "item_log_duration": torch.zeros(4),
            "trending": torch.tensor([3, 2, 1, 0]),
            "fresh": torch.tensor([1], dtype=torch.int64),
        }
    )
    hparams = {
        "seq_len": 5,
        "retrieval_candidates": 2,
        "embed_dim": 8,
        "freshness_boost": 0.05,
        "mmr_lambda": 0.8,
        "max_per_topic": 3,
    }
    if with_i2i:
        tensors.update({"i2i_idx": torch.from_numpy(IDX), "i2i_w": torch.from_numpy(W)})
        hparams["recency_tau"] = 1.0
    config = {"case": "video-recommendation", "n_items": 4, "n_topics": 2, "hparams": hparams}
    files = {"histories.json": json.dumps({"0": [0, 1]}).encode()}
    return Artifact(tmp_path / "v0001", tensors, config, {}, "", files)


def test_retrieve_adds_ease_candidates_only_with_the_table(tmp_path):
    for with_i2i in (False, True):
        p = VideoRecPredictor(_artifact(tmp_path, with_i2i))
        [c] = p.retrieve([[0, 1]])
        labels = dict(zip(c.items.tolist(), c.sources.tolist(), strict=True))
        is_ease = c.sources == "ease"
        ease = dict(zip(c.items[is_ease].tolist(), c.scores[is_ease].tolist(), strict=True))
        if not with_i2i:
            assert "ease" not in labels.values()
            continue
        # The i2i top-2 for [0, 1] at tau 1 is 2 then 1, and 1 is watched: the served source
        # leaves the history out, so 2 alone. "ease" is the last learned source, so it labels
        # 2 even where the two-tower index also found it.
        e = math.exp(-1.0)
        assert ease == pytest.approx({2: 1.0 + 0.25 * e})
        assert set(labels) == {0, 1, 2, 3}  # trending fills the rest
        # the ranker's two-tower feature is <u, v> for every candidate
        with torch.no_grad():
            u = p.tower.user_vectors(torch.tensor([[0, 0, 0, 1, 2]])).numpy()[0]
        np.testing.assert_allclose(c.tower_score, p.tower_items[c.items] @ u, rtol=1e-5)
        out = p.recommend(user_id=0, k=2)
        assert not out["cold_start"] and {x["item"] for x in out["items"]} <= {2, 3}


def test_a_stage_only_predictor_skips_what_it_does_not_run(tmp_path):
    art = _artifact(tmp_path, with_i2i=True)
    ranker_only = VideoRecPredictor(art, stages=("rank",))
    assert ranker_only.tower is None and ranker_only.tower_index is None
    assert ranker_only.i2i is None and ranker_only.user_histories == {}
    ingress = VideoRecPredictor(art, stages=("prepare", "finish"))
    assert ingress.user_histories == {"0": [0, 1]} and ingress.tower is None
    with pytest.raises(Exception, match="unknown predictor stages"):
        VideoRecPredictor(art, stages=("train",))


def test_without_a_ranker_the_shipped_ease_order_comes_first(tmp_path):
    art = _artifact(tmp_path, with_i2i=True)
    art.config["production_model"] = "ease_recency"
    p = VideoRecPredictor(art)
    [c] = p.retrieve([[0, 1]])
    [s] = p.rank([[0, 1]], [c])
    ease = c.sources == "ease_recency"  # the table's source is named for the shipped model
    # EASE candidates keep their own scores; every other candidate ranks below all of them.
    np.testing.assert_allclose(s[ease], c.scores[ease])
    assert s[~ease].max() < s[ease].min()
    # Another shipped row: its own candidates first, whatever the scales of the other sources.
    art = _artifact(tmp_path / "tower", with_i2i=False)
    art.config["production_model"] = "two_tower"
    p2 = VideoRecPredictor(art)
    [c2] = p2.retrieve([[0, 1]])
    [s2] = p2.rank([[0, 1]], [c2])
    tower = c2.sources == "two_tower"
    assert tower.any() and s2[~tower].max() < s2[tower].min()
    np.testing.assert_allclose(s2[tower], c2.scores[tower])


def test_rerank_matches_the_full_mmr_scan_ties_caps_and_unknown_topics():
    # rerank scans a sorted list; _mmr_scan is the plain argmax over every candidate each step.
    from cases.video_recommendation.predictor import _mmr_scan, rerank

    rng = np.random.default_rng(0)
    for trial in range(400):
        n, k = int(rng.integers(1, 60)), int(rng.integers(1, 30))
        items = rng.permutation(200)[:n].astype(np.int64)
        ties = trial % 2 == 1  # integer scores: many equal relevances
        scores = (rng.integers(0, 4, n) if ties else rng.normal(size=n)).astype(np.float32)
        topics = rng.integers(-1, int(rng.integers(1, 6)), n)  # -1: unknown topic
        exclude = set(rng.choice(200, 10).tolist()) if trial % 3 else None
        lam, cap = float(rng.choice([0.0, 0.5, 0.8, 1.0])), int(rng.integers(1, 4))
        got = rerank(items, scores, topics, k, exclude, mmr_lambda=lam, max_per_topic=cap)
        keep = np.flatnonzero(~np.isin(items, list(exclude or [-1])))
        s = scores[keep].astype(np.float64)
        s = (s - s.min()) / (s.max() - s.min() + 1e-12) if keep.size else s
        want = [int(keep[j]) for j in _mmr_scan(lam * s, topics[keep], k, lam, cap)]
        assert got == want, trial


def test_ranked_positions_order_by_score_ties_by_position_and_skip_dropped():
    from cases.video_recommendation.predictor import ranked_positions

    scores = np.array([1.0, 3.0, 3.0, 2.0, 5.0], dtype=np.float32)
    keep = np.array([True, True, True, True, False])
    assert ranked_positions(scores, keep).tolist() == [3, 0, 1, 2, -1]
    assert ranked_positions(scores, np.zeros(5, dtype=bool)).tolist() == [-1] * 5


def test_pre_rank_is_the_position_before_the_rerank_and_weight_0_moves_nothing(tmp_path):
    from cases.video_recommendation.predictor import VideoRecCandidates, rerank_settings

    p = VideoRecPredictor(_artifact(tmp_path, with_i2i=False))  # topics of 0..3: 0, 1, 0, 1
    items = np.array([0, 2, 1, 3])  # ranked 0, 2 (topic 0), then 1, 3 (topic 1)
    zeros = np.zeros(4, np.float32)
    c = VideoRecCandidates(items, zeros, np.array(["two_tower"] * 4), zeros)
    scores = [np.array([4.0, 3.9, 1.0, 0.5], dtype=np.float32)]

    def served(hist, cold=False, blocked=None):
        [a] = p.finish([hist], [cold], [c], scores, False, 4, [blocked or []])
        return [(x["item"], x["pre_rank"]) for x in a["items"]]

    p.rerank_kw = {"freshness_boost": 0.0, "mmr_lambda": 0.5, "max_per_topic": 3}
    # MMR lifts video 1 (a new topic) over video 2 (a second topic-0 video): moves 0, +1, -1, 0
    assert served([]) == [(0, 0), (1, 2), (2, 1), (3, 3)]
    # Watched and blocked videos are not in the list the re-rank starts from.
    assert served([0]) == [(2, 0), (1, 1), (3, 2)]
    assert served([], blocked=[2]) == [(0, 0), (1, 1), (3, 2)]
    p.rerank_kw = rerank_settings(p.cfg["hparams"], 0.0)  # no re-ranking: no moves
    assert served([]) == [(0, 0), (2, 1), (1, 2), (3, 3)]
    # Cold start: the trending then fresh videos, as listed, start the re-rank.
    sources = np.array(["two_tower", "trending", "trending", "fresh"])
    cold = VideoRecCandidates(np.array([3, 2, 0, 1]), zeros, sources, zeros)
    [a] = p.finish([[]], [True], [cold], None, False, 4, [[2]])
    assert [(x["item"], x["pre_rank"]) for x in a["items"]] == [(0, 0), (1, 1)]
