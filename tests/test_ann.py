"""shared.ann: faiss indexes against brute-force numpy search."""

from __future__ import annotations

import numpy as np
import pytest

from shared import ann
from shared.errors import CasebookError


def _data(n=2000, d=32, q=50, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d)) * 3
    x = centers[rng.integers(0, 20, n + q)] + rng.standard_normal((n + q, d))
    return x[:n].astype(np.float32), x[n:].astype(np.float32)


def _truth(xb, xq, k, metric):
    if metric == "ip":
        s = xq @ xb.T  # (Q, N)
    else:
        s = -((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)  # (Q, N) negative squared L2
    return np.argsort(-s, axis=1)[:, :k]


def _recall(ids, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, truth, strict=True)])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_index_matches_numpy(metric):
    xb, xq = _data()
    _, ids = ann.exact_index(xb, metric).search(xq, 10)
    assert _recall(ids, _truth(xb, xq, 10, metric)) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_approximate_indexes_find_most_neighbours(metric):
    ann.set_threads(1)
    xb, xq = _data()
    truth = _truth(xb, xq, 10, metric)
    centroids = ann.train_centroids(xb, 16, metric=metric)
    ivf = ann.ivf_flat_index(xb, 16, nprobe=16, metric=metric, centroids=centroids)
    assert _recall(ivf.search(xq, 10)[1], truth) == pytest.approx(1.0)  # every cell searched
    pq = ann.ivfpq_refine_index(xb, 16, 8, nprobe=8, k_factor=8, metric=metric, centroids=centroids)
    assert _recall(pq.search(xq, 10)[1], truth) > 0.8
    hnsw = ann.hnsw_index(xb, metric, m=16, ef_search=64)
    assert _recall(hnsw.search(xq, 10)[1], truth) > 0.9
    assert ann.index_bytes(pq) > 0


def test_build_index_switches_to_hnsw_above_exact_max():
    import faiss

    xb, _ = _data(n=300)
    assert isinstance(ann.build_index(xb), faiss.IndexFlat)
    assert isinstance(ann.build_index(xb, exact_max=100), faiss.IndexHNSWFlat)


def test_bad_input_is_a_one_line_error():
    xb, _ = _data(n=100)
    with pytest.raises(CasebookError, match="shape"):
        ann.exact_index(np.zeros((0, 8)))
    with pytest.raises(CasebookError, match="NaN"):
        ann.exact_index(np.full((4, 8), np.nan))
    with pytest.raises(CasebookError, match="metric"):
        ann.exact_index(xb, "cosine")
    with pytest.raises(CasebookError, match="divide"):
        ann.ivfpq_refine_index(xb, 4, 5)
