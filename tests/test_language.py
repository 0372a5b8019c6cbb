"""Language metrics: top-k accuracy, perplexity and simulated keystroke savings."""

from __future__ import annotations

import math

import pytest

from shared.language import keystroke_savings, perplexity


def test_perplexity():
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(50), 10) == pytest.approx(50.0)  # uniform over 50 words
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


WORDS = ["the", "cat", "sat", "on", "the", "mat"]


def test_keystroke_savings_of_a_perfect_suggester_matches_closed_form():
    out = keystroke_savings(WORDS, lambda i, prefix: [WORDS[i]])
    chars = sum(len(w) + 1 for w in WORDS)  # 6 words + spaces = 23
    assert out["characters"] == chars == 23
    assert out["keystrokes"] == len(WORDS)
    assert out["ksr"] == pytest.approx(1 - len(WORDS) / chars)
    assert out["accepted"] == 6 and out["acceptance_rate"] == 1.0


def test_keystroke_savings_of_no_suggester_is_zero():
    out = keystroke_savings(WORDS, lambda i, prefix: [])
    assert out["ksr"] == 0.0 and out["keystrokes"] == out["characters"]


def test_keystroke_savings_after_a_prefix_and_outside_top_n():
    # The word shows up once its first letter is typed: cost 1 letter + 1 tap per word.
    def after_one_letter(i, prefix):
        return [WORDS[i]] if prefix else ["x"]

    out = keystroke_savings(WORDS, after_one_letter)
    assert out["keystrokes"] == 2 * len(WORDS)
    # Right answer only in 4th place: with n=3 it is never shown.
    out = keystroke_savings(WORDS, lambda i, p: ["a", "b", "c", WORDS[i]], n=3)
    assert out["ksr"] == 0.0
    with pytest.raises(ValueError):
        keystroke_savings([], lambda i, p: [])
