"""A tiny scorer shipped like a case's model, for the golden-set and drill tests (not a test
module: imported as `from toy_scorer import ToyScorer, toy_requests`, tests/ is on the path)."""

import numpy as np

from shared.artifacts import load_artifact


class ToyScorer:
    """A logistic scorer over two text features (word count, share of capitals)."""

    def __init__(self, w, b):
        self.w, self.b = np.asarray(w, dtype=np.float64), float(b)

    @classmethod
    def load(cls, path):
        art = load_artifact(path)
        return cls(art.tensors["w"].numpy(), float(art.tensors["b"][0]))

    @staticmethod
    def features(requests):
        words = [len(r["text"].split()) for r in requests]
        caps = [sum(c.isupper() for c in r["text"]) / max(len(r["text"]), 1) for r in requests]
        return {"words": words, "caps": caps}

    def observation(self, requests, answers=None):
        f = self.features(requests)
        words, caps = np.asarray(f["words"], float) / 10, np.asarray(f["caps"], float)
        x = np.stack([words, caps, words**2, caps**2], 1)  # (N, 4)
        return f, list(1 / (1 + np.exp(-(x @ self.w + self.b))))


def toy_requests(n, seed=0, caps=0.1):
    """`n` requests {"text": ...} of 1-29 words, each word upper-case with probability `caps`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = ["w" * int(rng.integers(1, 8)) for _ in range(int(rng.integers(1, 30)))]
        out.append({"text": " ".join(w.upper() if rng.random() < caps else w for w in words)})
    return out
