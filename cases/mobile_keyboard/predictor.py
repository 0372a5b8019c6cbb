"""KeyboardPredictor: load an artifact, answer keystrokes. No training or evaluation code is
imported, directly or through another module (tests/test_layout.py checks the import graph).

    p = KeyboardPredictor.load(Path("runs/mobile-keyboard/<run>/artifact"))
    p.suggest("see you at the", "sta")
    -> {"completions": ["station", ...], "next_words": ["station", "park", ...],
        "corrections": [...], "context_tokens": 4}

The artifact holds exactly the next-word model that won the candidate table (config "shipped"):
the LSTM in fp32 or as the int8 package (dequantized once at load: the numbers the table scored),
the Kneser-Ney trigram's tables, or the two mixed per step. `KeyboardNextWord` puts each behind
one step function; the offline evaluation times and checks this same step.

The model state after each context is cached (LRU keyed by the context words): the next keystroke
in the same word reuses it (prefix filtering only), and a context one word longer costs a single
LSTM step from the cached state. Nothing recomputes the prefix. The cache is shared by two
threads when served: the batch runs in a worker thread (`shared.batching.batch_when_free`) while
the live monitor's `observation()` reads it on the event loop, so one lock guards it (issue 26).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.artifacts import load_artifact, sanity_check
from shared.errors import ArtifactError

from .data import SENT_SPLIT_RE, tokenize
from .model import (
    KeyboardLSTM,
    KeyboardTrigram,
    KeyboardVocab,
    lstm_from_fp32,
    lstm_from_int8,
    mix_logp,
)
from .spell import KeyboardErrorModel, KeyboardSpellCorrector

MAX_CONTEXT_WORDS = 32  # older words add little and cost a step each on a cold cache
# The artifact's model files, by what they hold.
LSTM_FP32, LSTM_INT8 = "lstm_fp32.safetensors", "lstm_int8.safetensors"
TRIGRAM = "trigram.safetensors"


class KeyboardNextWord:
    """The shipped next-word model behind one step: `state, logp = step(state, token)`.

    `lstm` and/or `trigram`; with both, P = (1 - w) P_lstm + w P_trigram per step
    (`model.mix_logp`, w = `mix_weight`). The state is (LSTM (h, c), the trigram's last two ids);
    <s> starts a message afresh for both, as in training and in the offline evaluation.
    """

    def __init__(
        self,
        lstm: KeyboardLSTM | None = None,
        trigram: KeyboardTrigram | None = None,
        mix_weight: float = 0.0,
        bos: int = 1,
    ):
        if lstm is None and trigram is None:
            raise ValueError("a next-word model needs an LSTM, a trigram or both")
        self.lstm = lstm.eval() if lstm is not None else None
        self.trigram = trigram
        self.mix_weight = float(mix_weight) if lstm is not None and trigram is not None else 0.0
        self.bos = bos

    @torch.no_grad()
    def step(self, state, token: int) -> tuple[Any, np.ndarray]:
        """Advance by one word id; returns the new state and log P(next word) (V,)."""
        hc, hist = state if state is not None else (None, ())
        if token == self.bos:  # a message starts afresh (as in training and evaluation)
            hc, hist = None, ()
        lp_lstm = lp_tri = None
        if self.lstm is not None:
            logits, hc = self.lstm.fast_step(torch.tensor([token]), hc)  # (1, V)
            lp_lstm = torch.log_softmax(logits, -1)[0].numpy()  # (V,)
        if self.trigram is not None:
            hist = () if token == self.bos else (hist + (token,))[-2:]  # the last two words
            lp_tri = self.trigram.logprob_next(hist)  # (V,)
        if lp_lstm is None:
            return (hc, hist), lp_tri
        if lp_tri is None:
            return (hc, hist), lp_lstm
        return (hc, hist), mix_logp(lp_lstm, lp_tri, self.mix_weight)

    @classmethod
    def from_files(cls, files: dict[str, bytes], cfg: dict[str, Any]) -> KeyboardNextWord:
        """Rebuild the shipped model from the artifact's files and config."""
        dims = (cfg["embed_dim"], cfg["hidden_dim"], cfg.get("num_layers", 1))
        lstm = trigram = None
        if LSTM_INT8 in files:
            lstm = lstm_from_int8(files[LSTM_INT8], *dims)
        elif LSTM_FP32 in files:
            lstm = lstm_from_fp32(files[LSTM_FP32], *dims)
        if TRIGRAM in files:
            trigram = KeyboardTrigram.from_bytes(files[TRIGRAM])
        return cls(lstm, trigram, float(cfg.get("mix_weight", 0.0)))


class KeyboardUserCache:
    """Per-user unigram + bigram counts of kept words; P_cache(w | prev) with add-beta backoff."""

    def __init__(self, beta: float = 2.0):
        self.beta = beta
        self.uni: Counter = Counter()
        self.bi: dict[str, Counter] = {}

    def update(self, words: list[str]) -> None:
        prev = "<s>"
        for w in words:
            self.uni[w] += 1
            self.bi.setdefault(prev, Counter())[w] += 1
            prev = w

    def probs(self, prev: str) -> dict[str, float]:
        """P_cache(. | prev) over the words in the cache."""
        total = sum(self.uni.values())
        if total == 0:
            return {}
        nxt = self.bi.get(prev, Counter())
        n = sum(nxt.values())
        return {
            w: (nxt.get(w, 0) + self.beta * c / total) / (n + self.beta)
            for w, c in self.uni.items()
        }


def mixed_top(
    logp: np.ndarray, vocab: KeyboardVocab, cache: dict[str, float], lam: float, k: int = 3
) -> list[str]:
    """Top-k words of (1 - lam) P_model + lam P_cache; cache words outside the vocab compete too."""
    p = np.exp(logp) * (1 - lam)
    p[:2] = 0.0  # <unk>, <s>
    extra: dict[str, float] = {}
    for w, pc in cache.items():
        i = vocab.stoi.get(w)
        if i is None:
            extra[w] = lam * pc
        else:
            p[i] += lam * pc
    top = np.argpartition(-p, k)[:k] if len(p) > k else np.arange(len(p))
    cands = [(float(p[i]), vocab.itos[i]) for i in top] + [(v, w) for w, v in extra.items()]
    cands.sort(reverse=True)
    return [w for _, w in cands[:k]]


class KeyboardPredictor:
    """Completions, next words and spelling corrections from one artifact."""

    def __init__(
        self,
        model: KeyboardNextWord,
        vocab: KeyboardVocab,
        corrector: KeyboardSpellCorrector | None,
        config: dict[str, Any],
        cache_size: int = 4096,
    ):
        self.model = model
        self.vocab = vocab
        self.corrector = corrector
        self.config = config
        self.cache_weight = float(config.get("cache_weight", 0.15))
        self.context_weight = float(config.get("spell_context_weight", 0.5))
        self._states: OrderedDict[tuple[int, ...], tuple[Any, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        # Guards _states and steps_run: a lookup, the steps it needs and the LRU update are one
        # unit (without it a context evicted by the other thread between `in` and `[]` raises
        # KeyError; tests/test_mobile_keyboard_threads.py). Held for one context's steps at most.
        self._states_lock = threading.Lock()
        self.user_caches: dict[str, KeyboardUserCache] = {}  # on-device only; never uploaded
        self.steps_run = 0  # LSTM steps since load (tests check that caching avoids recompute)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, with_spell: bool = True) -> KeyboardPredictor:
        art = load_artifact(path)
        cfg = art.config
        try:
            vocab = KeyboardVocab.from_json(art.files["vocab.json"].decode("utf-8"))
            model = KeyboardNextWord.from_files(art.files, cfg)
            n = model.lstm.vocab_size if model.lstm is not None else model.trigram.V
            if n != len(vocab):
                raise ValueError(f"the model has {n} words, the vocabulary {len(vocab)}")
        except (KeyError, RuntimeError, ValueError, OSError) as e:
            raise ArtifactError(f"artifact {path}: cannot rebuild the model ({e})") from None
        corrector = None
        if with_spell and "error_model.json" in art.files:
            em = KeyboardErrorModel.from_json(art.files["error_model.json"].decode("utf-8"))
            corrector = KeyboardSpellCorrector(em, prior_weight=cfg.get("spell_prior_weight", 1.0))
        p = cls(model, vocab, corrector, cfg)
        # Golden input: after <s> the distribution must be finite.
        sanity_check(p._logp_for(())[None, :])
        return p

    # -- the language model with a state cache ----------------------------------------------------
    def _logp_for(self, ids: tuple[int, ...]) -> np.ndarray:
        """log P(next | <s> ids) over the vocabulary, reusing the longest cached prefix.
        Thread-safe (the serving worker thread and the monitor on the event loop share it)."""
        with self._states_lock:
            return self._logp_for_locked(ids)

    def _logp_for_locked(self, ids: tuple[int, ...]) -> np.ndarray:
        hit = self._states.get(ids)
        if hit is not None:
            self._states.move_to_end(ids)
            return hit[1]
        # Longest cached prefix of ids (the empty context is the state after <s>), then one
        # step per remaining word, remembering every intermediate context.
        k = len(ids)
        while k > 0 and ids[:k] not in self._states:
            k -= 1
        if ids[:k] in self._states:
            state, lp = self._states[ids[:k]]
        else:  # nothing cached at all: start the message
            state, lp = self._step(self.vocab.stoi["<s>"], None)
            self._remember((), state, lp)
        for j in range(k, len(ids)):
            state, lp = self._step(ids[j], state)
            self._remember(ids[: j + 1], state, lp)
        return lp

    def _step(self, token: int, state):
        self.steps_run += 1
        return self.model.step(state, token)

    def _remember(self, key: tuple[int, ...], state, lp: np.ndarray) -> None:
        self._states[key] = (state, lp)
        self._states.move_to_end(key)
        while len(self._states) > self._cache_size:
            self._states.popitem(last=False)

    # -- user data (stays in this process: the "device") ----------------------------------------
    def learn(self, user_id: str, text: str) -> None:
        """The user sent `text`: update their cache and user dictionary."""
        words = tokenize(text)
        self.user_caches.setdefault(user_id, KeyboardUserCache()).update(words)
        if self.corrector is not None:
            for w in words:
                self.corrector.learn_user_word(w)

    # -- the API -----------------------------------------------------------------------------------
    def suggest(self, context: str, prefix: str = "", user_id: str | None = None) -> dict:
        words = self._sentence_words(context)  # only the sentence being typed
        ids = tuple(self.vocab.encode(words))
        lp = self._logp_for(ids)
        prefix = prefix.strip().lower()
        cache = self.user_caches.get(user_id) if user_id else None
        if cache is not None:
            prev = words[-1] if words else "<s>"
            probs = cache.probs(prev)
            next_words = mixed_top(lp, self.vocab, probs, self.cache_weight)
            pool = {w: p for w, p in probs.items() if w.startswith(prefix)} if prefix else {}
            completions = self._complete_with_cache(lp, prefix, pool) if prefix else []
        else:
            next_words = self.vocab.top_words(lp, "", 3)
            completions = self.vocab.top_words(lp, prefix, 3) if prefix else []
        corrections: list[str] = []
        if prefix and self.corrector is not None and not self.corrector.is_known(prefix):
            floor = float(lp.min())

            def lm(cands):
                return [lp[self.vocab.stoi[c]] if c in self.vocab.stoi else floor for c in cands]

            ranked = self.corrector.rank(
                prefix, 3, context_logprob=lm if words else None, context_weight=self.context_weight
            )
            corrections = [w for w, _ in ranked if w != prefix]
        return {
            "completions": completions,
            "next_words": next_words,
            "corrections": corrections,
            "context_tokens": len(words),
        }

    @staticmethod
    def _sentence_words(context: str) -> list[str]:
        # Only the sentence being typed: the model is evaluated (and its best epoch chosen) with
        # every sentence starting afresh at <s>, so "home. want to" must score as "want to", and
        # "home. " as a sentence start. The trailing space lets a final "." end a sentence.
        return tokenize(SENT_SPLIT_RE.split(context + " ")[-1])[-MAX_CONTEXT_WORDS:]

    def observation(
        self, requests: list[dict], answers: list[dict] | None = None
    ) -> tuple[dict[str, list[float]], list[float]]:
        """What the live monitor watches (shared.golden, shared.monitor), per request:

        features: context_words (words of the sentence being typed), oov_share (share of them
        outside the vocabulary: another language or alphabet), prefix_chars, context_chars;
        score: the next-word model's top-1 probability after the context (<unk> and <s>
        excluded), the confidence behind `next_words`. The state cache makes it a lookup for
        a context just served, so `answers` is not needed.
        """
        feats: dict[str, list[float]] = {
            "context_words": [],
            "oov_share": [],
            "prefix_chars": [],
            "context_chars": [],
        }
        scores = []
        unk = self.vocab.stoi.get("<unk>", 0)
        for r in requests:
            context = str(r.get("context") or "")
            words = self._sentence_words(context)
            ids = tuple(self.vocab.encode(words))
            lp = self._logp_for(ids)
            scores.append(float(np.exp(lp[2:]).max()) if len(lp) > 2 else 0.0)
            feats["context_words"].append(float(len(words)))
            feats["oov_share"].append(sum(i == unk for i in ids) / len(ids) if ids else 0.0)
            feats["prefix_chars"].append(float(len(str(r.get("prefix") or "").strip())))
            feats["context_chars"].append(float(len(context)))
        return feats, scores

    def _complete_with_cache(
        self, lp: np.ndarray, prefix: str, pool: dict[str, float]
    ) -> list[str]:
        lam = self.cache_weight
        ids = self.vocab.prefix_ids(prefix)
        scores = {self.vocab.itos[i]: (1 - lam) * float(np.exp(lp[i])) for i in ids}
        for w, p in pool.items():
            scores[w] = scores.get(w, 0.0) + lam * p
        return [w for w, _ in sorted(scores.items(), key=lambda x: -x[1])[:3]]

    def suggest_batch(self, requests: list[dict]) -> list[dict]:
        return [self.suggest(r["context"], r.get("prefix", ""), r.get("user_id")) for r in requests]
