"""Candidate-generation baselines the learned models must beat.

All follow one shape: `fit(X)` on a user x item implicit matrix (scipy CSR, (U, I)) returns self;
`score(H)` takes history rows (CSR, (B, I)) and returns dense scores (B, I), higher is better.

- Popularity: count of watches per video.
- RecentPopularity: watches in the most recent `window` share of the training time span.
- ItemKNN: cosine item-item co-occurrence, top-k neighbours kept per item, score = H S.
- EASE (Steck 2019): B = argmin ||X - X B||^2 + lambda ||B||^2 with diag(B) = 0, closed form
  P = (X^T X + lambda I)^-1, B_ij = -P_ij / P_jj; score = H B.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class Popularity:
    """Scores every video by its training watch count."""

    def fit(self, X: sp.csr_matrix, timestamps: np.ndarray | None = None, items=None):
        self.counts_ = np.asarray(X.sum(0)).ravel().astype(np.float32)  # (I,)
        return self

    def score(self, H: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.counts_, (H.shape[0], self.counts_.size)).copy()


class RecentPopularity(Popularity):
    """Watch counts over the last `window` share of the training time span (a trending list)."""

    def __init__(self, window: float = 0.1):
        self.window = window

    def fit(self, X: sp.csr_matrix, timestamps: np.ndarray | None = None, items=None):
        if timestamps is None or items is None:
            return super().fit(X)
        lo, hi = np.quantile(timestamps, [1.0 - self.window, 1.0])
        recent = items[(timestamps >= lo) & (timestamps <= hi)]
        self.counts_ = np.bincount(recent, minlength=X.shape[1]).astype(np.float32)
        # Ties (and unseen) broken by all-time popularity, scaled below one recent watch.
        total = np.asarray(X.sum(0)).ravel()
        self.counts_ += (total / (total.max() + 1.0)).astype(np.float32)
        return self


class ItemKNN:
    """Item-item cosine similarity over co-watch counts, `k` neighbours per item."""

    def __init__(self, k: int = 100, shrink: float = 10.0, binary: bool = True):
        self.k, self.shrink, self.binary = k, shrink, binary

    def fit(self, X: sp.csr_matrix, timestamps=None, items=None):
        # binary=False keeps X's values (confidence weights) in the co-watch sums and norms.
        Xb = ((X > 0) if self.binary else X).astype(np.float32).tocsc()
        co = (Xb.T @ Xb).tocsr().astype(np.float32)  # (I, I) co-watch counts
        co.setdiag(0.0)
        co.eliminate_zeros()
        norm = np.sqrt(np.asarray(Xb.multiply(Xb).sum(0)).ravel())  # (I,)
        co = co.tocoo()
        # cosine with a shrinkage term (pairs with few co-watches are trusted less)
        vals = co.data / (norm[co.row] * norm[co.col] + self.shrink)
        S = sp.csr_matrix((vals, (co.row, co.col)), shape=co.shape)
        self.sim_ = _top_k_per_row(S, self.k).T.tocsr()  # column j holds item j's neighbours
        return self

    def score(self, H: sp.csr_matrix) -> np.ndarray:
        return np.asarray(((H > 0).astype(np.float32) @ self.sim_).todense())


def _top_k_per_row(S: sp.csr_matrix, k: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for r in range(S.shape[0]):
        a, b = S.indptr[r], S.indptr[r + 1]
        if b == a:
            continue
        d, c = S.data[a:b], S.indices[a:b]
        if d.size > k:
            keep = np.argpartition(-d, k - 1)[:k]
            d, c = d[keep], c[keep]
        rows.append(np.full(d.size, r))
        cols.append(c)
        vals.append(d)
    if not rows:
        return sp.csr_matrix(S.shape, dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=S.shape
    )


class EASE:
    """Embarrassingly shallow autoencoder (Steck 2019), closed form. O(I^3) time, O(I^2) memory.

    Above `max_items` only the most-watched `max_items` videos get weights (the rest score 0).
    `binary=False` fits on X's values (confidence weights) instead of X > 0.
    """

    def __init__(self, lam: float = 200.0, max_items: int = 20000, binary: bool = True):
        self.lam, self.max_items, self.binary = lam, max_items, binary

    def fit(self, X: sp.csr_matrix, timestamps=None, items=None):
        n = X.shape[1]
        counts = np.asarray(X.sum(0)).ravel()
        self.items_ = np.sort(np.argsort(-counts)[: self.max_items]) if n > self.max_items else None
        Xs = X[:, self.items_] if self.items_ is not None else X
        Xs = ((Xs > 0) if self.binary else Xs).astype(np.float64)
        G = (Xs.T @ Xs).toarray()  # (I, I) Gram matrix
        G[np.diag_indices_from(G)] += self.lam
        P = np.linalg.inv(G)
        B = -P / np.diag(P)[None, :]  # B_ij = -P_ij / P_jj
        B[np.diag_indices_from(B)] = 0.0
        self.B_ = B.astype(np.float32)
        self.n_items_ = n
        return self

    def score(self, H: sp.csr_matrix, binary: bool = True) -> np.ndarray:
        """H (B, I) history -> (B, I) scores H B; `binary=False` keeps H's values as weights."""
        Hs = H[:, self.items_] if self.items_ is not None else H
        Hs = (Hs > 0).astype(np.float32) if binary else Hs.astype(np.float32)
        s = np.asarray(Hs @ self.B_)  # (B, I')
        if self.items_ is None:
            return s
        out = np.zeros((H.shape[0], self.n_items_), dtype=np.float32)
        out[:, self.items_] = s
        return out
