"""Approximate nearest-neighbour retrieval with faiss: exact vs IVF vs HNSW vs IVF-PQ + refine.

    casebook bench retrieval            # 1M x 128 clustered vectors, a few minutes on 2 cores
    casebook bench retrieval --quick    # 20K vectors, seconds

Candidate generation in a recommender is a top-k inner-product or L2 search over item vectors.
Exact search reads every vector for every query; the indexes trade a little recall for reading
far fewer. For each index and search setting this measures recall@10 against exact search, batch
QPS (all queries in one call, the offline / batched-serving case), single-query QPS and latency
(one request at a time, the online case), build time and bytes per vector.

The vectors are a Gaussian mixture (clusters of different sizes and spreads), not uniform noise:
uniform noise in 128 dimensions has no neighbourhood structure, so every index looks bad on it,
while real embeddings are clustered.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

NAME = "retrieval"
SUMMARY = "faiss exact vs IVF vs HNSW vs IVF-PQ+refine: recall@10 vs QPS, build time, bytes"


@dataclass
class RetrievalBenchConfig:
    """Sizes and search settings of one run."""

    n: int = 1_000_000  # database vectors
    dim: int = 128
    n_clusters: int = 2_000  # mixture components in the generated data
    n_queries: int = 1_000  # queries for recall and batch QPS
    n_single: int = 200  # queries timed one at a time
    k: int = 10
    nlist: int = 1_024  # IVF cells (~ sqrt(n))
    train_size: int = 65_536  # vectors used to train k-means / PQ (faiss wants >= 39 * nlist)
    nprobes: tuple[int, ...] = (4, 16, 64)
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_efs: tuple[int, ...] = (16, 32, 64, 128)
    pq_m: int = 64  # PQ sub-quantizers (4-bit fast-scan codes: 32 bytes per vector)
    # (nprobe, k_factor): re-rank k * k_factor PQ candidates with exact distances
    pq_settings: tuple[tuple[int, int], ...] = ((8, 8), (16, 16), (32, 16))
    exact_queries: int = 300  # queries for the exact-search timing (it is the slow one)


PRESETS = {
    "full": RetrievalBenchConfig(),
    "quick": RetrievalBenchConfig(
        n=20_000,
        n_clusters=100,
        n_queries=200,
        n_single=50,
        nlist=64,
        train_size=8_192,
        nprobes=(2, 8),
        hnsw_m=16,
        hnsw_efs=(16, 64),
        pq_m=32,
        pq_settings=((8, 8),),
        exact_queries=200,
    ),
}


def make_vectors(n: int, dim: int, n_clusters: int, seed: int, latent: int = 32) -> np.ndarray:
    """Clustered vectors of low intrinsic dimension, float32 (n, dim).

    Like learned embeddings: points live near a `latent`-dimensional subspace (a random linear
    map of a Gaussian mixture with Zipf-sized clusters of varied spread) plus a little isotropic
    noise in all `dim` directions. Pure isotropic noise in 128 dimensions would make all
    distances nearly equal, which no real embedding space looks like.
    """
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((n_clusters, latent)).astype(np.float32)  # (C, L)
    sizes = 1.0 / np.arange(1, n_clusters + 1) ** 0.7  # popular regions hold more items
    assign = rng.choice(n_clusters, size=n, p=sizes / sizes.sum())  # (n,)
    spread = rng.uniform(0.5, 1.0, n_clusters).astype(np.float32)  # per-cluster radius
    proj = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)  # (L, D)
    x = np.empty((n, dim), dtype=np.float32)
    chunk = 200_000
    for s in range(0, n, chunk):  # in chunks to keep the temporaries small
        a = assign[s : s + chunk]
        z = centers[a] + rng.standard_normal((len(a), latent), dtype=np.float32) * spread[a, None]
        noise = rng.standard_normal((len(a), dim), dtype=np.float32)
        x[s : s + chunk] = z @ proj + 0.1 * noise  # (b, D)
    return x


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k (both (Q, >=k) id arrays)."""
    hits = [
        len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits)) / k


def _measure(index, xq: np.ndarray, truth: np.ndarray, cfg, n_single: int) -> dict[str, Any]:
    """Recall@k, batch QPS over all of xq, and one-at-a-time latency over the first n_single."""
    t0 = time.perf_counter()
    _, ids = index.search(xq, cfg.k)
    batch_s = time.perf_counter() - t0
    lat = []
    for i in range(n_single):
        t0 = time.perf_counter()
        index.search(xq[i : i + 1], cfg.k)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.asarray(lat) * 1e3
    return {
        "recall_at_10": recall_at_k(ids, truth, cfg.k),
        "batch_qps": len(xq) / batch_s,
        "single_qps": n_single / float(np.sum(lat)),
        "single_p50_ms": float(np.percentile(lat_ms, 50)),
        "single_p99_ms": float(np.percentile(lat_ms, 99)),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed for the generated vectors")
    parser.add_argument(
        "--n", type=int, default=None, help="database size (default: 1M, quick 20K)"
    )


def run(args: argparse.Namespace) -> Path:
    """Build each index, sweep its search setting; write retrieval.json / .md / .png."""
    from shared import ann
    from shared.bench import machine_fingerprint, write_results
    from shared.lifecycle import run_folder

    quick = bool(getattr(args, "quick", False))
    cfg = PRESETS["quick" if quick else "full"]
    if getattr(args, "n", None):
        cfg = replace(cfg, n=int(args.n))
    seed = int(getattr(args, "seed", 0) or 0)
    out = run_folder(f"bench/{NAME}", getattr(args, "out", None))
    t_start = time.perf_counter()
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if quick:
        # A smoke run: one thread, because faiss's OpenMP threads busy-wait and crawl when other
        # processes share the cores (as under a parallel test suite).
        threads = 1
    ann.set_threads(threads)
    fp = machine_fingerprint(measure=not quick)

    rng = np.random.default_rng(seed + 1)
    data = make_vectors(cfg.n + cfg.n_queries, cfg.dim, cfg.n_clusters, seed)
    xb, xq = data[: cfg.n], data[cfg.n :]  # (n, D) database, (Q, D) queries from the same mixture
    xt = xb[rng.choice(cfg.n, size=min(cfg.train_size, cfg.n), replace=False)]  # training sample

    rows, truth = _exact_rows(cfg, xb, xq)
    # k-means cells shared by IVF-Flat and IVF-PQ; their build times include it.
    t0 = time.perf_counter()
    centroids = ann.train_centroids(xt, cfg.nlist, seed=seed, metric="l2")
    coarse_s = time.perf_counter() - t0
    rows += _ivf_rows(cfg, xb, xq, truth, centroids, coarse_s)
    rows += _hnsw_rows(cfg, xb, xq, truth)
    rows += _ivfpq_rows(cfg, xb, xq, xt, truth, centroids, coarse_s)

    summary = _summarize(rows, cfg, threads, time.perf_counter() - t_start)
    columns = [
        "index",
        "setting",
        "recall_at_10",
        "batch_qps",
        "x_exact_batch_qps",
        "single_qps",
        "single_p50_ms",
        "single_p99_ms",
        "build_s",
        "bytes_per_vector",
    ]
    path = write_results(out, "retrieval", rows, summary, columns=columns, fingerprint=fp)
    _plot(rows, summary["exact_batch_qps"], out / "retrieval.png")
    return Path(path)


def _row(cfg, index_name: str, setting: str, build_s: float, nbytes: int, m: dict) -> dict:
    return {
        "index": index_name,
        "setting": setting,
        "build_s": build_s,
        "bytes_per_vector": nbytes / cfg.n,
        **m,
    }


def _exact_rows(cfg, xb: np.ndarray, xq: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Exact search: the ground truth (Q, k) and the speed to beat."""
    from shared import ann

    t0 = time.perf_counter()
    flat = ann.exact_index(xb, "l2")
    build = time.perf_counter() - t0
    _, truth = flat.search(xq, cfg.k)  # (Q, k) exact neighbours
    nq_exact = min(cfg.exact_queries, cfg.n_queries)
    m = _measure(flat, xq[:nq_exact], truth[:nq_exact], cfg, min(cfg.n_single, 50))
    return [_row(cfg, "Flat (exact)", "-", build, 4 * cfg.dim * cfg.n, m)], truth


def _ivf_rows(cfg, xb, xq, truth, centroids, coarse_s: float) -> list[dict]:
    """IVF-Flat: k-means cells; search the nprobe nearest cells exhaustively."""
    from shared import ann

    t0 = time.perf_counter()
    ivf = ann.ivf_flat_index(xb, cfg.nlist, metric="l2", centroids=centroids)
    build = coarse_s + time.perf_counter() - t0
    nbytes = ann.index_bytes(ivf)
    rows = []
    for nprobe in cfg.nprobes:
        ivf.nprobe = nprobe
        m = _measure(ivf, xq, truth, cfg, cfg.n_single)
        rows.append(_row(cfg, f"IVF{cfg.nlist},Flat", f"nprobe={nprobe}", build, nbytes, m))
    return rows


def _hnsw_rows(cfg, xb, xq, truth) -> list[dict]:
    """HNSW: a navigable small-world graph; efSearch sets the candidate-list length."""
    from shared import ann

    t0 = time.perf_counter()
    hnsw = ann.hnsw_index(xb, "l2", m=cfg.hnsw_m, ef_construction=cfg.hnsw_ef_construction)
    build = time.perf_counter() - t0
    nbytes = ann.index_bytes(hnsw)
    rows = []
    for ef in cfg.hnsw_efs:
        hnsw.hnsw.efSearch = ef
        m = _measure(hnsw, xq, truth, cfg, cfg.n_single)
        rows.append(_row(cfg, f"HNSW{cfg.hnsw_m},Flat", f"efSearch={ef}", build, nbytes, m))
    return rows


def _ivfpq_rows(cfg, xb, xq, xt, truth, centroids, coarse_s: float) -> list[dict]:
    """IVF-PQ (4-bit fast-scan codes) plus exact re-ranking of k * factor candidates, and the
    codes alone (no re-ranking) at the last setting."""
    import faiss

    from shared import ann

    t0 = time.perf_counter()
    refine = ann.ivfpq_refine_index(
        xb, cfg.nlist, cfg.pq_m, metric="l2", train=xt, centroids=centroids
    )
    ivfpq = faiss.downcast_index(refine.base_index)
    build = coarse_s + time.perf_counter() - t0
    pq_bytes = ann.index_bytes(ivfpq)
    name = f"IVF{cfg.nlist},PQ{cfg.pq_m}x4fs,RFlat"
    rows = []
    for nprobe, k_factor in cfg.pq_settings:
        ivfpq.nprobe = nprobe
        refine.k_factor = k_factor
        m = _measure(refine, xq, truth, cfg, cfg.n_single)
        # Codes + the full vectors kept for re-ranking (which could live on disk or another tier).
        setting = f"nprobe={nprobe},k_factor={k_factor}"
        rows.append(_row(cfg, name, setting, build, pq_bytes + 4 * cfg.dim * cfg.n, m))
        rows[-1]["code_bytes_per_vector"] = pq_bytes / cfg.n
    ivfpq.nprobe = cfg.pq_settings[-1][0]
    m = _measure(ivfpq, xq, truth, cfg, cfg.n_single)
    setting = f"nprobe={ivfpq.nprobe} (no refine)"
    rows.append(_row(cfg, f"IVF{cfg.nlist},PQ{cfg.pq_m}x4fs", setting, build, pq_bytes, m))
    return rows


def _summarize(rows: list[dict], cfg, threads: int, wall_s: float) -> dict[str, Any]:
    """Speed-ups against exact search (added to each row) and the best index at recall >= 0.95."""
    exact_qps = rows[0]["batch_qps"]  # the first row is exact search
    for r in rows:
        r["x_exact_batch_qps"] = r["batch_qps"] / exact_qps
    good = [r for r in rows if r["recall_at_10"] >= 0.95 and r["index"] != "Flat (exact)"]
    best = max(good, key=lambda r: r["batch_qps"]) if good else None
    return {
        "n": cfg.n,
        "dim": cfg.dim,
        "threads": threads,
        "exact_batch_qps": exact_qps,
        "best_at_recall_95": f"{best['index']} {best['setting']}" if best else None,
        "best_at_recall_95_x_exact": best["x_exact_batch_qps"] if best else None,
        "best_at_recall_95_recall": best["recall_at_10"] if best else None,
        "target": "recall@10 >= 0.95 at >= 8x exact batch QPS",
        "video_rec_embeddings": "not included (the case's catalogue is small enough for exact "
        "search; see benchmarks/README.md)",
        "config": {k_: list(v) if isinstance(v, tuple) else v for k_, v in asdict(cfg).items()},
        "wall_s": wall_s,
    }


def _plot(rows: list[dict], exact_qps: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["index"] for r in rows):
        mine = [r for r in rows if r["index"] == name]
        ax.plot([r["recall_at_10"] for r in mine], [r["batch_qps"] for r in mine], "o-", label=name)
    ax.axhline(8 * exact_qps, color="grey", ls=":", lw=1, label="8x exact")
    ax.axvline(0.95, color="grey", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 vs exact")
    ax.set_ylabel("batch queries/s (log)")
    ax.set_title("faiss: recall vs throughput")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":  # python benchmarks/retrieval.py [--quick]
    p = argparse.ArgumentParser(description=SUMMARY)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    add_arguments(p)
    print(run(p.parse_args()))
