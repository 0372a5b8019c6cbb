"""Seeded helpers for the built-in data generators.

Every generator in a case takes a seed and draws from one `numpy.random.Generator`, so the same
seed gives the same data on every machine. Heavy tails (item popularity, user activity) are what
make recommendation and language data hard; these helpers make them explicit.
"""

from __future__ import annotations

import numpy as np


def make_rng(seed: int | None) -> np.random.Generator:
    """Return a PCG64 generator for `seed` (an int; None draws fresh OS entropy)."""
    return np.random.default_rng(seed)


def power_law_weights(n: int, alpha: float) -> np.ndarray:
    """Normalized power-law weights over ranks 0..n-1.

    w_i = (i + 1)^-alpha / sum_j (j + 1)^-alpha. alpha = 0 gives uniform weights; alpha near 1
    is the Zipf shape of word and item popularity.

    Raises:
        ValueError: if n < 1 or alpha < 0.
    """
    if n < 1:
        raise ValueError(f"power_law_weights needs n >= 1, got {n}")
    if alpha < 0:
        raise ValueError(f"power_law_weights needs alpha >= 0, got {alpha}")
    w = np.arange(1, n + 1, dtype=np.float64) ** -float(alpha)
    return w / w.sum()


def zipf_sample(rng: np.random.Generator, n_items: int, alpha: float, size) -> np.ndarray:
    """Draw item ids in [0, n_items) with P(i) = power_law_weights(n_items, alpha)[i].

    Unlike `rng.zipf`, the support is bounded and alpha may be <= 1. Item 0 is the most popular.
    Returns an int64 array of shape `size`.
    """
    p = power_law_weights(n_items, alpha)
    return rng.choice(n_items, size=size, p=p).astype(np.int64)


def lognormal_activity(rng: np.random.Generator, n: int, mean: float, sigma: float) -> np.ndarray:
    """Per-entity activity counts: lognormal with the given arithmetic `mean`, at least 1.

    The underlying normal has mu = log(mean) - sigma^2 / 2 so that E[X] = mean before rounding;
    values are rounded to int64 and clipped to >= 1 (every user has at least one event).

    Raises:
        ValueError: if n < 0, mean <= 0 or sigma < 0.
    """
    if n < 0 or mean <= 0 or sigma < 0:
        raise ValueError(
            f"lognormal_activity needs n >= 0, mean > 0, sigma >= 0; got {n}, {mean}, {sigma}"
        )
    mu = np.log(mean) - sigma**2 / 2.0
    x = rng.lognormal(mean=mu, sigma=sigma, size=n)
    return np.maximum(np.rint(x), 1).astype(np.int64)
