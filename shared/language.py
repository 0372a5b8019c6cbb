"""Language-model metrics: top-k accuracy, perplexity and keystroke savings.

Top-k accuracy is the "top-1 / top-3 recall" of the Gboard paper (Hard et al. 2018). Keystroke
savings simulates a user who types letter by letter and taps the suggestion as soon as it shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def topk_accuracy(scores_or_ranked, targets, k: int) -> float:
    """Share of rows whose target is among the top `k`.

    Args:
        scores_or_ranked: float scores of shape (N, V) (higher is better), or integer ranked ids
            of shape (N, K), best first. The dtype decides which: integer means ranked ids.
        targets: (N,) integer target ids.
        k: cut-off, 1 <= k <= V (or K).

    With scores, a row is a hit iff fewer than k other ids score >= the target's score, so ties
    count against the target (a constant scorer gets 0 when V > k, never a free 1).

    Raises:
        ValueError: empty input, shape mismatch, k out of range, or a target outside [0, V).
    """
    x = np.asarray(scores_or_ranked)
    t = np.asarray(targets).reshape(-1)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"topk_accuracy needs a non-empty 2-D array, got shape {x.shape}")
    if len(t) != x.shape[0]:
        raise ValueError(f"topk_accuracy: {x.shape[0]} rows but {len(t)} targets")
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"topk_accuracy: k={k} must be in [1, {x.shape[1]}]")
    t = t.astype(np.int64)
    if np.issubdtype(x.dtype, np.integer):
        return float(np.mean(np.any(x[:, :k] == t[:, None], axis=1)))
    if t.min() < 0 or t.max() >= x.shape[1]:
        raise ValueError(f"topk_accuracy: targets must lie in [0, {x.shape[1]})")
    hits = 0
    # Chunks of rows keep the (rows, V) comparison small for a large vocabulary.
    for lo in range(0, len(t), 1024):
        s = x[lo : lo + 1024]  # (B, V)
        tb = t[lo : lo + 1024]
        target_score = s[np.arange(len(tb)), tb][:, None]  # (B, 1)
        others_ahead = np.sum(s >= target_score, axis=1) - 1  # (B,) excludes the target itself
        hits += int(np.sum(others_ahead < k))
    return hits / len(t)


def perplexity(total_nll_nats: float, n_tokens: int) -> float:
    """exp(total negative log-likelihood in nats / number of tokens).

    Raises:
        ValueError: n_tokens < 1 or a negative or non-finite total.
    """
    if n_tokens < 1:
        raise ValueError(f"perplexity needs n_tokens >= 1, got {n_tokens}")
    if not math.isfinite(total_nll_nats) or total_nll_nats < 0:
        raise ValueError(f"perplexity needs a finite, non-negative NLL, got {total_nll_nats}")
    return float(math.exp(total_nll_nats / n_tokens))


def keystroke_savings(
    words: Sequence[str], suggest: Callable[[int, str], Sequence[str]], n: int = 3
) -> dict:
    """Simulate typing `words` with up to `n` suggestions shown at every keystroke.

    For word i the user sees suggest(i, prefix) for prefix = word[:p], p = 0 .. len(word) - 1
    (p = 0 is next-word prediction before any letter). If the word is among the first `n`
    suggestions, the user taps it: one keystroke that inserts the word and its trailing space,
    so the word costs p + 1 keystrokes. Otherwise they type it and a space: len(word) + 1.
    characters = sum(len(word) + 1); ksr = 1 - keystrokes / characters. A perfect suggester
    (always right at p = 0) gives ksr = 1 - N / sum(len(word) + 1). Matching is exact
    (case-sensitive).

    Returns:
        {"ksr", "keystrokes", "characters", "words", "accepted", "acceptance_rate"}; accepted
        counts the words entered by a tap.

    Raises:
        ValueError: no words, an empty word, or n < 1.
    """
    if len(words) == 0:
        raise ValueError("keystroke_savings needs at least one word")
    if n < 1:
        raise ValueError(f"keystroke_savings needs n >= 1, got {n}")
    keystrokes = characters = accepted = 0
    for i, word in enumerate(words):
        if not word:
            raise ValueError(f"keystroke_savings: word {i} is empty")
        characters += len(word) + 1
        cost = len(word) + 1
        for p in range(len(word)):
            if word in list(suggest(i, word[:p]))[:n]:
                cost = p + 1
                accepted += 1
                break
        keystrokes += cost
    return {
        "ksr": 1.0 - keystrokes / characters,
        "keystrokes": keystrokes,
        "characters": characters,
        "words": len(words),
        "accepted": accepted,
        "acceptance_rate": accepted / len(words),
    }
