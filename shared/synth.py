"""Seeded helpers for the built-in data generators.

Every generator in a case takes a seed and draws from one `numpy.random.Generator`, so the same
seed gives the same data on every machine. Heavy tails (item popularity, user activity) are what
make recommendation and language data hard; these helpers make them explicit.
"""

from __future__ import annotations

import numpy as np


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
