"""Nearest-neighbour indexes with faiss, built one way for every case and benchmark.

    index = build_index(item_vectors)                 # exact up to 50K vectors, HNSW above
    scores, ids = index.search(user_vectors, 10)      # (Q, 10) each; faiss's own API

    index = ivfpq_refine_index(x, nlist=1024, pq_m=64, nprobe=16, k_factor=16)   # at 1M+

Every builder takes float vectors (N, D) and a metric: "ip" (inner product, what two-tower and
sentence embeddings score with; normalise the vectors first for cosine) or "l2". The choices and
their costs are measured by `casebook bench retrieval` (benchmarks/retrieval.py, which builds
its indexes here): exact search reads every vector per query; IVF reads the `nprobe` nearest of
`nlist` k-means cells; HNSW walks a graph (`ef_search` candidates); IVF-PQ keeps 4-bit
product-quantised codes (pq_m / 2 bytes per vector) and re-ranks `k * k_factor` of them with
exact distances.

faiss is imported inside each function, so a module that imports this one stays importable (and
its tests runnable) without faiss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.errors import CasebookError

EXACT_MAX = 50_000  # above this, `build_index` switches from exact search to HNSW (video case)
METRICS = ("ip", "l2")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a core dependency
        raise CasebookError("faiss is not installed (pip install faiss-cpu)") from None
    return faiss


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    """C-contiguous float32 (N, D), as faiss needs; refuses empty or non-finite input."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise CasebookError(f"an index needs vectors of shape (N, D) with N, D > 0, got {v.shape}")
    if not np.isfinite(v).all():
        raise CasebookError("an index cannot hold NaN or infinite vectors")
    return v


def _metric(metric: str) -> int:
    faiss = _faiss()
    if metric not in METRICS:
        raise CasebookError(f"metric must be one of {METRICS}, got {metric!r}")
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


def set_threads(n: int) -> None:
    """faiss's OpenMP threads. One per replica when replicas share few cores: faiss's idle
    threads busy-wait and slow the other processes down."""
    _faiss().omp_set_num_threads(max(1, int(n)))


def exact_index(vectors: np.ndarray, metric: str = "ip") -> Any:
    """Brute-force search (IndexFlatIP / IndexFlatL2): exact, 4 * D bytes per vector."""
    faiss = _faiss()
    v = _as_float32(vectors)
    index = faiss.IndexFlat(v.shape[1], _metric(metric))
    index.add(v)
    return index


def hnsw_index(
    vectors: np.ndarray,
    metric: str = "ip",
    m: int = 32,
    ef_search: int = 64,
    ef_construction: int = 40,
) -> Any:
    """An HNSW graph over the vectors (`m` links per node; `ef_search` sets recall vs speed)."""
    faiss = _faiss()
    v = _as_float32(vectors)
    index = faiss.IndexHNSWFlat(v.shape[1], m, _metric(metric))
    index.hnsw.efConstruction = ef_construction
    index.hnsw.efSearch = ef_search
    index.add(v)
    return index


def train_centroids(
    train: np.ndarray, nlist: int, seed: int = 0, metric: str = "ip", niter: int = 10
) -> np.ndarray:
    """k-means cell centres (nlist, D) for IVF indexes, from a training sample.

    faiss wants at least 39 * nlist training vectors for stable cells. With metric "ip" the
    centres are normalised (spherical k-means), as faiss does for inner-product IVF.
    """
    faiss = _faiss()
    x = _as_float32(train)
    if len(x) < nlist:
        raise CasebookError(f"k-means needs at least nlist={nlist} vectors, got {len(x)}")
    kmeans = faiss.Kmeans(
        x.shape[1], nlist, niter=niter, seed=seed, verbose=False, spherical=metric == "ip"
    )
    kmeans.train(x)
    return np.asarray(kmeans.centroids, dtype=np.float32)  # (nlist, D)


def _quantizer(centroids: np.ndarray, metric: str) -> Any:
    faiss = _faiss()
    c = _as_float32(centroids)
    q = faiss.IndexFlat(c.shape[1], _metric(metric))
    q.add(c)
    return q


def _centroids_for(vectors, nlist, train, centroids, seed, metric) -> np.ndarray:
    if centroids is not None:
        return centroids
    return train_centroids(vectors if train is None else train, nlist, seed, metric)


def ivf_flat_index(
    vectors: np.ndarray,
    nlist: int,
    nprobe: int = 16,
    metric: str = "ip",
    train: np.ndarray | None = None,
    centroids: np.ndarray | None = None,
    seed: int = 0,
) -> Any:
    """IVF with full vectors: search the `nprobe` nearest of `nlist` cells exhaustively.

    Pass `centroids` (from `train_centroids`) to share one k-means between several indexes, or
    a `train` sample (default: the vectors themselves).
    """
    faiss = _faiss()
    v = _as_float32(vectors)
    c = _centroids_for(v, nlist, train, centroids, seed, metric)
    index = faiss.IndexIVFFlat(_quantizer(c, metric), v.shape[1], len(c), _metric(metric))
    index.train(c)  # the quantizer is already trained: this only marks the index trained
    index.add(v)
    index.nprobe = nprobe
    return index


def ivfpq_refine_index(
    vectors: np.ndarray,
    nlist: int,
    pq_m: int,
    nprobe: int = 16,
    k_factor: int = 16,
    metric: str = "ip",
    train: np.ndarray | None = None,
    centroids: np.ndarray | None = None,
    seed: int = 0,
) -> Any:
    """IVF-PQ with 4-bit fast-scan codes, re-ranked exactly (IndexRefineFlat).

    The search returns the best k of `k * k_factor` PQ candidates by exact distance; the base
    IVF-PQ index is `index.base_index` (set its `nprobe` there). Memory: pq_m / 2 bytes of codes
    per vector, plus the full vectors kept for the re-ranking. `pq_m` must divide D.
    """
    faiss = _faiss()
    v = _as_float32(vectors)
    if v.shape[1] % pq_m:
        raise CasebookError(f"pq_m={pq_m} must divide the dimension {v.shape[1]}")
    c = _centroids_for(v, nlist, train, centroids, seed, metric)
    ivfpq = faiss.IndexIVFPQFastScan(
        _quantizer(c, metric), v.shape[1], len(c), pq_m, 4, _metric(metric)
    )
    ivfpq.train(v if train is None else _as_float32(train))  # PQ codebooks on residuals
    ivfpq.nprobe = nprobe
    index = faiss.IndexRefineFlat(ivfpq)
    index.k_factor = k_factor
    index.add(v)
    return index


def build_index(vectors: np.ndarray, metric: str = "ip", exact_max: int = EXACT_MAX) -> Any:
    """The default serving index: exact up to `exact_max` vectors, HNSW (m=32, ef 64) above.

    Exact search over 50K x 64 floats takes about a millisecond per query on one core; above
    that HNSW keeps latency flat at a small recall cost (benchmarks/retrieval.py).
    """
    v = _as_float32(vectors)
    if len(v) <= exact_max:
        return exact_index(v, metric)
    return hnsw_index(v, metric)


def index_bytes(index: Any) -> int:
    """Size of the serialised index in bytes (what it takes in memory, to within a few %)."""
    return int(_faiss().serialize_index(index).nbytes)
