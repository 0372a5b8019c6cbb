"""The baselines the models must beat.

- `KeyboardKneserNey`: interpolated Kneser-Ney n-gram LM over the same vocabulary as the LSTM
  (Chen and Goodman 1998). The classic keyboard language model before neural ones. It counts;
  `tables(...)` turns the counts into the `model.KeyboardTrigram` that ships, whole or pruned by
  count cut-offs, and `prune_to(max_bytes)` picks the smallest cut-offs that fit a size budget.
- The dictionary spell-check baseline is symspellpy's own lookup (`spell.symspell_baseline`).

Interpolated KN, order 3, one absolute discount D (0.75):
    P3(w | u v) = max(c(u v w) - D, 0) / c(u v .) + gamma3(u v) * P2(w | v)
    P2(w | v)   = max(N1+(. v w) - D, 0) / N1+(. v .) + gamma2(v) * P1(w)
    P1(w)       = max(N1+(. w) - D, 0) / N1+(. .) + D |{w: N1+(. w) > 0}| / N1+(. .) / V
gamma is the mass the kept entries leave: 1 - sum_w max(c - D, 0) / c(context .), which is
D N1+(u v .) / c(u v .) when nothing is pruned (the textbook form). Lower orders use continuation
counts N1+ (how many distinct words precede), not raw counts; an unseen context falls straight
through to the next order. Each level sums to one over the vocabulary, pruned or not (tested).

Pruning by count cut-offs (as in SRILM's -gt3min): a trigram seen fewer than k3 times, or a
bigram with fewer than k2 distinct predecessors, is dropped from its table and its probability
falls back to the lower order. The denominators keep the full counts, so what is kept stays as
it was. Singletons are most of a trigram table (about 70% on Gutenberg), so k3 = 2 alone
shrinks it about 3x.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .model import KeyboardTrigram, KeyboardVocab


def _flat(table: dict, key_of) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """{context: {word: count}} -> (context key, word id, count) arrays sorted by key, then word."""
    keys, ids, cnt = [], [], []
    for ctx, nxt in table.items():
        k = key_of(ctx)
        for w, c in nxt.items():
            keys.append(k)
            ids.append(w)
            cnt.append(c)
    keys_a = np.asarray(keys, np.int64)
    ids_a = np.asarray(ids, np.int64)
    order = np.lexsort((ids_a, keys_a))
    return keys_a[order], ids_a[order], np.asarray(cnt, np.float64)[order]


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
        total = max(uni_cont.sum(), 1.0)
        self.p1_ = np.maximum(uni_cont - D, 0) / total + D * (uni_cont > 0).sum() / total / V
        # Flat (context key, word, count) arrays: a cut-off is then one vectorized mask.
        self.bi_ = _flat(bi_cont, int)
        self.tri_ = _flat(tri, lambda uv: uv[0] * V + uv[1])
        self.full_ = self.tables(1, 1)
        return self

    def _level(self, n: int, flat, min_count: int) -> dict[str, np.ndarray]:
        keys, ids, cnt = flat
        # Denominators over all entries (pruned or not): c(u v .) or N1+(. v .).
        uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        tot = np.bincount(inv, weights=cnt, minlength=len(uniq))  # (contexts,)
        keep = cnt >= min_count
        p = np.maximum(cnt[keep] - self.D, 0) / tot[inv[keep]]  # (kept,)
        ctx_of = inv[keep]
        used = np.unique(ctx_of)  # contexts with at least one kept entry
        ptr = np.zeros(len(used) + 1, np.int64)
        ptr[1:] = np.cumsum(np.bincount(np.searchsorted(used, ctx_of), minlength=len(used)))
        # gamma (1 - the kept mass) is not stored: model.KeyboardTrigram computes it at load.
        return {
            f"ctx{n}": uniq[used].astype(self._key_type()),
            f"ptr{n}": ptr.astype(np.int32),
            f"ids{n}": ids[keep].astype(self._id_type()),
            f"p{n}": p.astype(np.float16),
        }

    def _id_type(self):
        return np.uint16 if len(self.vocab) < 65_536 else np.int32

    def _key_type(self):
        return np.int32 if len(self.vocab) ** 2 < 2**31 else np.int64  # u * V + v

    def tables(self, min3: int = 1, min2: int = 1) -> KeyboardTrigram:
        """The shippable trigram with trigrams seen < min3 times and bigrams with < min2
        distinct predecessors pruned (1, 1: everything kept)."""
        t = {"p1": self.p1_.astype(np.float32)}
        t.update(self._level(2, self.bi_, min2))
        t.update(self._level(3, self.tri_, min3))
        return KeyboardTrigram(t, bos=self.vocab.stoi["<s>"])

    def _size_estimate(self, min3: int, min2: int) -> int:
        """Bytes of `tables(min3, min2)` without building it (safetensors header excluded)."""
        entry = np.dtype(self._id_type()).itemsize + 2  # word id + float16 p
        context = np.dtype(self._key_type()).itemsize + 4  # key + int32 offset
        n = 4 * len(self.p1_)
        for flat, k in ((self.bi_, min2), (self.tri_, min3)):
            keys, _, cnt = flat
            kept = cnt >= k
            n += int(kept.sum()) * entry + len(np.unique(keys[kept])) * context + 4
        return n

    def prune_to(self, max_bytes: int, max_cutoff: int = 1000) -> tuple[KeyboardTrigram, tuple]:
        """The least-pruned tables that fit `max_bytes`: raise the trigram cut-off first (its
        table is the bulk), the bigram cut-off only as far as needed at each trigram cut-off.
        Returns (tables, (min3, min2)); raises ValueError when even the unigram table is too big."""
        for min3 in range(1, max_cutoff + 1):
            for min2 in range(1, min3 + 1):
                if self._size_estimate(min3, min2) + 1024 <= max_bytes:  # 1 KB: the header
                    t = self.tables(min3, min2)
                    if t.n_bytes() <= max_bytes:
                        return t, (min3, min2)
        raise ValueError(f"no trigram fits {max_bytes:,} bytes (its unigram table alone does not)")

    def prob_next(self, context: Sequence[int]) -> np.ndarray:
        """P(w | last two ids of `context`) over the vocabulary, (V,); sums to one (unpruned)."""
        return self.full_.prob_next(context)

    def logprob_next(self, context: Sequence[int]) -> np.ndarray:
        return self.full_.logprob_next(context)

    def n_bytes(self) -> int:
        """Size on disk of the unpruned tables as they would ship."""
        return self.full_.n_bytes()
