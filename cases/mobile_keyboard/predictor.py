"""KeyboardPredictor: load an artifact, answer keystrokes. No training code is imported.

    p = KeyboardPredictor.load(Path("runs/mobile-keyboard/<run>/artifact"))
    p.suggest("see you at the", "sta")
    -> {"completions": ["station", ...], "next_words": ["station", "park", ...],
        "corrections": [...], "context_tokens": 4}

The LSTM state after each context is cached (LRU keyed by the context words): the next keystroke
in the same word reuses it (prefix filtering only), and a context one word longer costs a single
LSTM step from the cached state. Nothing recomputes the prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.artifacts import load_artifact, sanity_check
from shared.errors import ArtifactError

from .data import SENT_SPLIT_RE, tokenize
from .model import KeyboardLSTM, KeyboardVocab
from .personalize import KeyboardUserCache, mixed_top
from .spell import KeyboardErrorModel, KeyboardSpellCorrector

MAX_CONTEXT_WORDS = 32  # older words add little and cost a step each on a cold cache


class KeyboardPredictor:
    """Completions, next words and spelling corrections from one artifact."""

    def __init__(
        self,
        model: KeyboardLSTM,
        vocab: KeyboardVocab,
        corrector: KeyboardSpellCorrector | None,
        config: dict[str, Any],
        cache_size: int = 4096,
    ):
        self.model = model.eval()
        self.vocab = vocab
        self.corrector = corrector
        self.config = config
        self.cache_weight = float(config.get("cache_weight", 0.15))
        self.context_weight = float(config.get("spell_context_weight", 0.5))
        self._states: OrderedDict[tuple[int, ...], tuple[Any, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self.user_caches: dict[str, KeyboardUserCache] = {}  # on-device only; never uploaded
        self.steps_run = 0  # LSTM steps since load (tests check that caching avoids recompute)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, with_spell: bool = True) -> KeyboardPredictor:
        art = load_artifact(path)
        cfg = art.config
        try:
            vocab = KeyboardVocab.from_json(art.files["vocab.json"].decode("utf-8"))
            model = KeyboardLSTM(len(vocab), cfg["embed_dim"], cfg["hidden_dim"], cfg["num_layers"])
            model.load_state_tensors(art.tensors)
        except (KeyError, RuntimeError, ValueError) as e:
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
    @torch.no_grad()
    def _logp_for(self, ids: tuple[int, ...]) -> np.ndarray:
        """log P(next | <s> ids) over the vocabulary, reusing the longest cached prefix."""
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
        logits, state = self.model.fast_step(torch.tensor([token]), state)  # (1, V)
        self.steps_run += 1
        return state, torch.log_softmax(logits, -1)[0].numpy()

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
        # Only the sentence being typed: the model is evaluated (and its best epoch chosen) with
        # every sentence starting afresh at <s>, so "home. want to" must score as "want to", and
        # "home. " as a sentence start. The trailing space lets a final "." end a sentence.
        words = tokenize(SENT_SPLIT_RE.split(context + " ")[-1])[-MAX_CONTEXT_WORDS:]
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
