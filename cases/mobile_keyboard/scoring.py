"""How a next-word model is scored on a stream of words, the same way on validation (train.py
chooses what ships) and on test (evaluate.py reports it).

The sentences become one stream `<s> w1 w2 ... <s> ...` (`test_stream`); at every word the model
ranks the vocabulary from the words before it (specials never shown).
    top1, top3   share of words that are the first / among the first 3 suggestions
                 (an out-of-vocabulary word counts as a miss for every model)
    ksr          keystroke savings rate with 3 suggestions (shared.language.keystroke_savings):
                 the user taps a suggestion as soon as the word appears, otherwise types it
    ms_per_keystroke_p95   one thread: a word boundary runs one model step + the vocabulary head
                 + top-3; a letter inside a word only filters the cached distribution by prefix
Scorers compute the same numbers as the predictor's own step (`KeyboardNextWord.step`), in
batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from shared.language import keystroke_savings

from .model import KeyboardVocab, mix_logp
from .predictor import KeyboardNextWord


def test_stream(
    sentences: Sequence[Sequence[str]], vocab: KeyboardVocab, max_tokens: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(ids with <s>, the words, position in ids of each word), about `max_tokens` words.

    When the test split is larger, every k-th sentence is taken so the sample spans all of it
    (the split is in file order: a prefix would be one book or one website).
    """
    bos = vocab.stoi["<s>"]
    ids, words, pos = [], [], []
    total = sum(map(len, sentences))
    stride = max(1, -(-total // max(max_tokens, 1)))  # ceil(total / max_tokens)
    for s in sentences[::stride]:
        if len(words) >= max_tokens:
            break
        ids.append(bos)
        for t in s:
            pos.append(len(ids))
            ids.append(vocab.stoi.get(t, 0))
            words.append(t)
    return np.asarray(ids, np.int64), words, np.asarray(pos, np.int64)


class LSTMScorer:
    """Log-probs at each stream position; every message starts from a fresh state at <s>.

    A keyboard starts each message afresh (and the model trained on 24-32-token windows from a
    zero state), so the state is not carried across messages. Messages are run in padded
    batches; the LSTM is causal, so right padding does not touch the real positions.
    """

    def __init__(self, model: torch.nn.Module, ids: np.ndarray, batch: int = 128):
        bos = int(ids[0])
        starts = np.flatnonzero(ids == bos).tolist() + [len(ids)]
        segs = [(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True) if b > a]
        segs.sort(key=lambda ab: ab[1] - ab[0])  # similar lengths together: less padding
        z = None
        with torch.no_grad():
            for i in range(0, len(segs), batch):
                group = segs[i : i + batch]
                L = max(b - a for a, b in group)
                x = np.full((len(group), L), bos, dtype=np.int64)
                for j, (a, b) in enumerate(group):
                    x[j, : b - a] = ids[a:b]
                out, _ = model.lstm(model.embed(torch.from_numpy(x)))  # (B, L, H)
                proj = model.proj(out)  # (B, L, E)
                if z is None:
                    z = torch.zeros(len(ids), proj.shape[-1])
                for j, (a, b) in enumerate(group):
                    z[a:b] = proj[j, : b - a]
        self.z = z  # (N, E): the projected output before the vocabulary head
        self.model = model
        self._cache: tuple[int, np.ndarray] | None = None

    def logp_before(self, pos: int) -> np.ndarray:
        """log P(. | ids[:pos]) over the vocabulary (V,)."""
        if self._cache is not None and self._cache[0] == pos:
            return self._cache[1]
        with torch.no_grad():
            logits = self.model.head(self.z[pos - 1 : pos])  # (1, V)
            lp = torch.log_softmax(logits, -1)[0].numpy()
        self._cache = (pos, lp)
        return lp

    def batch_logp(self, positions: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.model.head(self.z[torch.from_numpy(positions - 1)])  # (n, V)
            return torch.log_softmax(logits, -1).numpy()


class KNScorer:
    """The trigram's log-probs at each stream position, with the context cut at the message's
    <s>: like the LSTM (and `KeyboardNextWord.step`), a message starts afresh, and the model was
    fitted on messages padded `<s> <s> w1 ...`, so `(last word of the previous message, <s>)`
    is a context it never saw."""

    def __init__(self, kn, ids: np.ndarray):
        """`kn`: anything with `logprob_next(context ids)` (the trigram, whole or pruned)."""
        self.kn, self.ids = kn, ids
        self.bos = int(ids[0])  # the stream starts with <s>
        self._cache: tuple[int, np.ndarray] | None = None

    def _context(self, pos: int) -> list[int]:
        ctx = self.ids[max(0, pos - 2) : pos].tolist()
        return [] if ctx and ctx[-1] == self.bos else ctx  # prob_next pads with <s> <s>

    def logp_before(self, pos: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == pos:
            return self._cache[1]
        lp = self.kn.logprob_next(self._context(pos))
        self._cache = (pos, lp)
        return lp

    def batch_logp(self, positions: np.ndarray) -> np.ndarray:
        return np.stack([self.kn.logprob_next(self._context(int(p))) for p in positions])


class NextWordScorer:
    """Batched log-probs of a shipped next-word model (LSTM, trigram or their mixture) at each
    stream position: the same numbers as `KeyboardNextWord.step` fed the stream word by word
    (tested), computed in batches. The mixture weight is read at call time."""

    def __init__(self, nw: KeyboardNextWord, ids: np.ndarray):
        self.nw = nw
        self.lstm = LSTMScorer(nw.lstm, ids) if nw.lstm is not None else None
        self.kn = KNScorer(nw.trigram, ids) if nw.trigram is not None else None

    def batch_logp(self, positions: np.ndarray) -> np.ndarray:
        if self.kn is None:
            return self.lstm.batch_logp(positions)
        if self.lstm is None:
            return self.kn.batch_logp(positions)
        a, b = self.lstm.batch_logp(positions), self.kn.batch_logp(positions)
        return mix_logp(a, b, self.nw.mix_weight)

    def logp_before(self, pos: int) -> np.ndarray:
        return self.batch_logp(np.asarray([pos]))[0]


def next_word_hits(
    scorer, vocab: KeyboardVocab, words: list[str], pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per test word: (hit1, hit3) booleans (n,), whether it is the first / among the first 3
    suggestions before any of its letters is typed. Per-word hits let two models be compared
    word by word (a paired bootstrap) and by cohort."""
    hit1 = np.zeros(len(words), bool)
    hit3 = np.zeros(len(words), bool)
    spec = np.zeros(len(vocab), bool)
    spec[:2] = True  # <unk>, <s> are never suggested
    target = np.array([vocab.stoi.get(w, 0) for w in words], np.int64)  # 0 = <unk>: a miss
    for i in range(0, len(pos), 512):
        lp = scorer.batch_logp(pos[i : i + 512]).copy()  # (n, V)
        lp[:, spec] = -np.inf
        top = np.argpartition(-lp, 3, axis=1)[:, :3]
        order = np.take_along_axis(lp, top, 1).argsort(1)[:, ::-1]
        top = np.take_along_axis(top, order, 1)  # (n, 3) best first
        t = target[i : i + 512, None]  # (n, 1)
        known = t[:, 0] != 0
        hit1[i : i + 512] = known & (top[:, 0] == t[:, 0])
        hit3[i : i + 512] = known & (top == t).any(1)
    return hit1, hit3


def message_positions(ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """For each test word, how many words of its message come before it (0 = first word)."""
    bos = int(ids[0])
    last_bos = np.maximum.accumulate(np.where(ids == bos, np.arange(len(ids)), 0))  # (N,)
    return pos - last_bos[pos] - 1


def ksr_of(scorer, vocab: KeyboardVocab, words: list[str], pos: np.ndarray) -> float:
    """Keystroke savings with 3 suggestions over `words` (the prefix filters the cached
    distribution at the word's position)."""

    def suggest(i: int, prefix: str) -> list[str]:
        return vocab.top_words(scorer.logp_before(int(pos[i])), prefix, 3)

    return keystroke_savings(words, suggest, n=3)["ksr"] if words else float("nan")


def keystroke_latency_ms(
    step_fn: Callable[[int], np.ndarray],
    vocab: KeyboardVocab,
    words: list[str],
    n_keystrokes: int,
) -> dict[str, float]:
    """Time each keystroke on one thread: step at word start, prefix filter inside the word.

    `step_fn(prev_id)` advances the cached state by one word and returns log-probs (V,).
    Each keystroke is timed in the thread's CPU time (CLOCK_THREAD_CPUTIME_ID): what the work
    costs a core of its own, as on the phone. Wall-clock time on a shared machine adds whatever
    other processes took (measured at load 12 on 2 cores: p95 of a 50 KB model 0.2-4.7 ms from
    run to run), which would make the 5 ms budget a lottery.
    """
    from shared.lifecycle import torch_threads

    clock = time.thread_time
    times = []
    with torch_threads(1):
        prev = vocab.stoi["<s>"]
        for w in words:
            if len(times) >= n_keystrokes:
                break
            t0 = clock()
            lp = step_fn(prev)  # the word boundary: one step + vocabulary head
            vocab.top_words(lp, "", 3)
            times.append(clock() - t0)
            for p in range(1, len(w)):
                t0 = clock()
                vocab.top_words(lp, w[:p], 3)  # a letter: filter the cached distribution
                times.append(clock() - t0)
            prev = vocab.stoi.get(w, 0)
    ms = np.asarray(times) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def next_word_step_fn(nw: KeyboardNextWord) -> Callable[[int], np.ndarray]:
    """The predictor's per-keystroke step, its state carried between calls."""
    state = {"s": None}

    def step(prev_id: int) -> np.ndarray:
        state["s"], lp = nw.step(state["s"], prev_id)
        return lp

    return step


def score_next_word(
    nw: KeyboardNextWord,
    vocab: KeyboardVocab,
    stream: tuple[np.ndarray, list[str], np.ndarray],
    ksr_words: int,
    latency_keystrokes: int,
) -> tuple[dict[str, float], np.ndarray]:
    """top1, top3, ksr and p95 ms per keystroke of one model on (ids, words, pos); also the
    per-word top-1 hits (for paired intervals and cohorts)."""
    ids, words, pos = stream
    scorer = NextWordScorer(nw, ids)
    hit1, hit3 = next_word_hits(scorer, vocab, words, pos)
    n_ksr = min(len(words), ksr_words)
    lat = keystroke_latency_ms(next_word_step_fn(nw), vocab, words, latency_keystrokes)
    row = {
        "top1": float(hit1.mean()) if len(words) else float("nan"),
        "top3": float(hit3.mean()) if len(words) else float("nan"),
        "ksr": ksr_of(scorer, vocab, words[:n_ksr], pos),
        "ms_per_keystroke_p95": lat["p95"],
    }
    return row, hit1
