"""The baselines every learned scorer must beat, behind one interface.

    scorer.fit(messages, replies, threads)        # training pairs
    scorer.score_matrix(messages, replies)        # (N, R): score of reply r for message n

- `MostFrequentScorer`: the same answer for every message, the replies most threads used
  (log of the training use count of the normalised reply). What a product without a model shows.
- `BM25Scorer`: lexical relevance of a reply to the message (Okapi BM25 via `bm25s`, the message
  as the query and the candidate replies as the documents), the classic baseline of Henderson et
  al. 2019. Replies rarely repeat the message's words, which is why it is weak here.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .responses import normalize_reply


class MostFrequentScorer:
    """score(message, reply) = log(1 + training uses of normalize_reply(reply))."""

    def fit(self, messages: list[str], replies: list[str], threads=None) -> MostFrequentScorer:
        self.counts_ = Counter(normalize_reply(r) for r in replies)
        return self

    def score_matrix(self, messages: list[str], replies: list[str]) -> np.ndarray:
        s = np.log1p([self.counts_.get(normalize_reply(r), 0) for r in replies])  # (R,)
        return np.broadcast_to(s.astype(np.float32), (len(messages), len(replies))).copy()


class BM25Scorer:
    """Okapi BM25 (k1 = 1.5, b = 0.75, bm25s defaults) of each reply for each message; the
    index is built over the candidate replies at scoring time (IDF from them)."""

    def fit(self, messages: list[str], replies: list[str], threads=None) -> BM25Scorer:
        return self  # nothing learned: IDF comes from the candidates

    def score_matrix(self, messages: list[str], replies: list[str]) -> np.ndarray:
        import bm25s

        index = bm25s.BM25()
        # No stopword list: in short replies "you", "not", "can" carry the meaning.
        index.index(
            bm25s.tokenize(replies, stopwords=None, show_progress=False), show_progress=False
        )
        queries = bm25s.tokenize(messages, stopwords=None, show_progress=False, return_ids=False)
        out = np.zeros((len(messages), len(replies)), dtype=np.float32)  # (N, R)
        for i, q in enumerate(queries):
            if q:
                out[i] = index.get_scores(q)
        return out
