"""Language-model metrics: top-k accuracy, perplexity and keystroke savings.

Top-k accuracy is the "top-1 / top-3 recall" of the Gboard paper (Hard et al. 2018). Keystroke
savings simulates a user who types letter by letter and taps the suggestion as soon as it shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


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
