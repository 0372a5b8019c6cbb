"""The baselines the models must beat.

- `KeyboardKneserNey`: interpolated Kneser-Ney n-gram LM over the same vocabulary as the LSTM
  (Chen and Goodman 1998). The classic keyboard language model before neural ones.
- The dictionary spell-check baseline is symspellpy's own lookup (`spell.symspell_baseline`).

Interpolated KN, order 3, one absolute discount D (0.75):
    P3(w | u v) = max(c(u v w) - D, 0) / c(u v .) + D N1+(u v .) / c(u v .) * P2(w | v)
    P2(w | v)   = max(N1+(. v w) - D, 0) / N1+(. v .) + D N1+(v .) / N1+(. v .) * P1(w)
    P1(w)       = max(N1+(. w) - D, 0) / N1+(. .) + D |{w: N1+(. w) > 0}| / N1+(. .) / V
Lower orders use continuation counts N1+ (how many distinct words precede), not raw counts; an
unseen context falls straight through to the next order. Each level sums to one over the
vocabulary, so P3 does too (tested).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .model import KeyboardVocab


class KeyboardKneserNey:
    """Interpolated Kneser-Ney trigram over a fixed vocabulary; `fit` returns self."""

    def __init__(self, vocab: KeyboardVocab, discount: float = 0.75):
        self.vocab = vocab
        self.D = discount

    def fit(self, sentences: Sequence[Sequence[str]]) -> KeyboardKneserNey:
        V = len(self.vocab)
        bos = self.vocab.stoi["<s>"]
        tri: dict[tuple[int, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for s in sentences:
            ids = [bos, bos] + self.vocab.encode(s)
            for i in range(2, len(ids)):
                tri[ids[i - 2], ids[i - 1]][ids[i]] += 1
        # Continuation counts: N1+(. v w) = number of distinct u with c(u v w) > 0.
        bi_cont: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for (_u, v), nxt in tri.items():
            for w in nxt:
                bi_cont[v][w] += 1
        uni_cont = np.zeros(V)  # N1+(. w): distinct v with N1+(. v w) > 0
        for _v, nxt in bi_cont.items():
            for w in nxt:
                uni_cont[w] += 1
        D = self.D
        total = uni_cont.sum()
        p1 = np.maximum(uni_cont - D, 0) / total + D * (uni_cont > 0).sum() / total / V
        self.p1_ = p1  # (V,)
        # Freeze the sparse tables as (ids, counts) arrays for vectorized lookups.
        self.bi_ = {
            v: (np.fromiter(d.keys(), np.int64), np.fromiter(d.values(), np.float64))
            for v, d in bi_cont.items()
        }
        self.tri_ = {
            k: (np.fromiter(d.keys(), np.int64), np.fromiter(d.values(), np.float64))
            for k, d in tri.items()
        }
        return self

    def prob_next(self, context: Sequence[int]) -> np.ndarray:
        """P(w | last two ids of `context`) over the vocabulary, (V,); sums to one."""
        bos = self.vocab.stoi["<s>"]
        ctx = [bos, bos] + list(context)
        u, v = ctx[-2], ctx[-1]
        D = self.D
        p = self.p1_
        if v in self.bi_:
            ids, cnt = self.bi_[v]
            tot = cnt.sum()
            p = p * (D * len(ids) / tot)
            p[ids] += np.maximum(cnt - D, 0) / tot
        if (u, v) in self.tri_:
            ids, cnt = self.tri_[u, v]
            tot = cnt.sum()
            p = p * (D * len(ids) / tot)
            p[ids] += np.maximum(cnt - D, 0) / tot
        return p

    def logprob_next(self, context: Sequence[int]) -> np.ndarray:
        return np.log(np.maximum(self.prob_next(context), 1e-30))

    def n_bytes(self) -> int:
        """Rough size of the tables as a phone would store them (int32 id + int32 count)."""
        n = sum(len(ids) for ids, _ in self.tri_.values()) + len(self.tri_)
        n += sum(len(ids) for ids, _ in self.bi_.values()) + len(self.bi_)
        return int(8 * n + 4 * len(self.p1_))
