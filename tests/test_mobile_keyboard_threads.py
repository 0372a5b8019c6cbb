"""The keyboard predictor's state cache under two threads at once, as it is served: the batch
runs `suggest_batch` in a worker thread (shared.batching.batch_when_free) while the live monitor
calls `observation()` on the event loop, both on the same LRU cache (issue 26).

Several threads hammer both on a cache far smaller than the contexts they ask for, so contexts
are evicted while others look them up; every answer must equal a single-threaded one and no
call may raise. Without the cache's lock this raises KeyError within a few rounds (a context
evicted between the prefix search and its read)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import torch

from cases.mobile_keyboard.model import KeyboardLSTM, KeyboardVocab
from cases.mobile_keyboard.predictor import KeyboardNextWord, KeyboardPredictor

# Letters only: the tokenizer splits digits off a word.
ROUNDS = 3  # passes over the requests per thread (about 2 s in all)
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def _predictor(cache_size: int) -> KeyboardPredictor:
    torch.manual_seed(0)
    vocab = KeyboardVocab(WORDS)
    lstm = KeyboardLSTM(len(vocab), embed_dim=8, hidden_dim=16)
    return KeyboardPredictor(KeyboardNextWord(lstm), vocab, None, {}, cache_size=cache_size)


def _requests(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    reqs = []
    for _ in range(n):
        context = " ".join(rng.choice(WORDS[:6], size=int(rng.integers(1, 5))))
        reqs.append({"context": context, "prefix": str(rng.choice(["", "a", "ch", "d"]))})
    return reqs


@pytest.fixture
def fine_switching():
    """Switch threads every microsecond instead of every 5 ms, so the race shows in seconds."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_suggest_and_observation_share_the_cache_safely_across_threads(fine_switching):
    reqs = _requests(300, seed=0)
    ref = _predictor(cache_size=100_000)  # one thread, nothing evicted: the expected answers
    want_answers = ref.suggest_batch(reqs)
    _, want_scores = ref.observation(reqs)

    p = _predictor(cache_size=4)  # far fewer than the contexts: constant eviction
    errors: list[BaseException] = []
    wrong: list[str] = []
    start = threading.Barrier(6)

    def serve(seed: int) -> None:  # the worker thread's batches
        order = np.concatenate(
            [np.random.default_rng(seed + 10 * r).permutation(len(reqs)) for r in range(ROUNDS)]
        )
        start.wait()
        try:
            for lo in range(0, len(order), 16):
                idx = order[lo : lo + 16]
                got = p.suggest_batch([reqs[i] for i in idx])
                wrong.extend(str(i) for i, g in zip(idx, got, strict=True) if g != want_answers[i])
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    def monitor(seed: int) -> None:  # the event loop's observation() after each batch
        order = np.concatenate(
            [np.random.default_rng(seed + 10 * r).permutation(len(reqs)) for r in range(ROUNDS)]
        )
        start.wait()
        try:
            for lo in range(0, len(order), 16):
                idx = order[lo : lo + 16]
                _, scores = p.observation([reqs[i] for i in idx])
                wrong.extend(
                    str(i) for i, s in zip(idx, scores, strict=True) if s != want_scores[i]
                )
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=serve, args=(s,)) for s in range(4)]
    threads += [threading.Thread(target=monitor, args=(s,)) for s in range(4, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, f"{len(errors)} thread(s) raised, first: {errors[0]!r}"
    assert not wrong, f"{len(wrong)} answers differ from the single-threaded ones"
    assert len(p._states) <= 4  # the LRU bound holds under contention
