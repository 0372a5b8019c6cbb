"""Offline evaluation: next-word top-k, keystroke savings, per-keystroke latency, size, spelling.

Next word (table `next_word:<corpus>`): the test sentences are one stream `<s> w1 w2 ... <s> ...`;
at every word the model ranks the vocabulary from the words before it (specials never shown).
    top1, top3   share of test words that are the first / among the first 3 suggestions
                 (an out-of-vocabulary word counts as a miss for every model)
    ksr          keystroke savings rate with 3 suggestions (shared.language.keystroke_savings):
                 the user taps a suggestion as soon as the word appears, otherwise types it
    ms_per_keystroke_p95   one thread: a word boundary runs one model step + the vocabulary head
                 + top-3; a letter inside a word only filters the cached distribution by prefix
    model_bytes  size on disk (fp32 or int8 safetensors; the n-gram as int32 id/count tables)
Spelling (table `spell:<set>`): acc@1, acc@3 of the corrected word, words_per_s timed in
alternating chunks with the baseline, so both see the same machine load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from shared.language import keystroke_savings

from .baseline import KeyboardKneserNey
from .model import KeyboardVocab
from .spell import KeyboardSpellCorrector, symspell_baseline


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
    <s>: like the LSTM (and kn_step_fn on the phone), a message starts afresh, and the model was
    fitted on messages padded `<s> <s> w1 ...`, so `(last word of the previous message, <s>)`
    is a context it never saw."""

    def __init__(self, kn: KeyboardKneserNey, ids: np.ndarray):
        self.kn, self.ids = kn, ids
        self.bos = kn.vocab.stoi["<s>"]
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
    """
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    try:
        prev = vocab.stoi["<s>"]
        for w in words:
            if len(times) >= n_keystrokes:
                break
            t0 = time.perf_counter()
            lp = step_fn(prev)  # the word boundary: one step + vocabulary head
            vocab.top_words(lp, "", 3)
            times.append(time.perf_counter() - t0)
            for p in range(1, len(w)):
                t0 = time.perf_counter()
                vocab.top_words(lp, w[:p], 3)  # a letter: filter the cached distribution
                times.append(time.perf_counter() - t0)
            prev = vocab.stoi.get(w, 0)
    finally:
        torch.set_num_threads(prev_threads)
    ms = np.asarray(times) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def lstm_step_fn(model: torch.nn.Module) -> Callable[[int], np.ndarray]:
    """A per-keystroke step with the (h, c) state cached between calls."""
    state = {"hc": None}

    @torch.no_grad()
    def step(prev_id: int) -> np.ndarray:
        if hasattr(model, "fast_step"):  # fp32: LSTMCell path
            logits, state["hc"] = model.fast_step(torch.tensor([prev_id]), state["hc"])  # (1, V)
        else:  # the quantized copy: its own int8 LSTM kernel
            x = model.embed(torch.tensor([[prev_id]]))  # (1, 1, E)
            out, state["hc"] = model.lstm(x, state["hc"])  # (1, 1, H)
            logits = model.head(model.proj(out[0, -1:]))  # (1, V)
        # Ranking needs no softmax: log-softmax is a shift, so logits give the same top-3.
        return logits[0].numpy()

    return step


def kn_step_fn(kn: KeyboardKneserNey) -> Callable[[int], np.ndarray]:
    hist: list[int] = []

    def step(prev_id: int) -> np.ndarray:
        if prev_id == kn.vocab.stoi["<s>"]:
            hist.clear()
        else:
            hist.append(prev_id)
        return kn.logprob_next(hist[-2:])

    return step


def evaluate_spell(
    corrector: KeyboardSpellCorrector,
    pairs: Sequence[tuple[str, str]],
    chunk: int = 50,
) -> dict[str, dict[str, float]]:
    """acc@1, acc@3, words_per_s for symspellpy and the corrector, timed in alternating chunks."""
    res = {name: {"hit1": 0, "hit3": 0, "seconds": 0.0} for name in ("symspell", "noisy_channel")}
    fns = {"symspell": symspell_baseline, "noisy_channel": corrector.correct}
    for i in range(0, len(pairs), chunk):
        block = pairs[i : i + chunk]
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs = [fn(typo) for typo, _ in block]
            res[name]["seconds"] += time.perf_counter() - t0
            for (_, correct), out in zip(block, outs, strict=True):
                res[name]["hit1"] += int(out[:1] == [correct])
                res[name]["hit3"] += int(correct in out[:3])
    n = max(len(pairs), 1)
    return {
        name: {
            "acc@1": r["hit1"] / n,
            "acc@3": r["hit3"] / n,
            "words_per_s": n / max(r["seconds"], 1e-9),
            "n": len(pairs),
        }
        for name, r in res.items()
    }
