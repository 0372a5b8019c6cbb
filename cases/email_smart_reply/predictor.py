"""Load a smart-reply artifact and answer in batches: trigger, suggestions, compose.

    p = SmartReplyPredictor.load("runs/email-smart-reply/registry/versions/v0001")
    p.suggest_batch([{"message": "Can we meet at 3pm?", "k": 3, "context": ["earlier mail"]}])
    -> [{"suggestions": [{"text": "Sounds good, see you then.", "score": 0.71}, ...],
         "triggered": true, "trigger_score": 0.93, "top_score": 0.71}]
    p.compose_batch([{"message": "Can we meet at 3pm?", "prefix": "sounds go"}])

The features and scores are computed by the functions below, which training and evaluation call
too (`encode_texts`, `trigger_features`, `choose_suggestions`): no train/serve skew. This module
needs neither torch nor the training code: the message tower runs in ONNX Runtime, the response
set's reply embeddings sit in a faiss inner-product index (exact: a few thousand replies).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from shared.errors import ArtifactError, CasebookError

from .responses import polarity, select_diverse  # noqa: F401  (polarity: re-exported for train)

_WORD = re.compile(r"[a-z0-9']+")


def encode_texts(tokenizer, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Word pieces with dynamic padding: (B, T) int64 input_ids and attention_mask, T = the
    longest text of the batch, at most `max_len` (longer texts keep their first pieces and the
    closing [SEP])."""
    encs = tokenizer.encode_batch([t if t.strip() else "." for t in texts])
    # A tokenizer.json may carry its own padding; keep only the real pieces of each text.
    real = [e.ids[: sum(e.attention_mask)] for e in encs]
    ids = [x if len(x) <= max_len else x[: max_len - 1] + x[-1:] for x in real]
    t = max(len(x) for x in ids)
    input_ids = np.zeros((len(ids), t), dtype=np.int64)
    mask = np.zeros((len(ids), t), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return input_ids, mask


def model_text(message: str, context: list[str] | tuple[str, ...] = (), turns: int = 0) -> str:
    """The text the message tower reads: the message, then up to `turns` earlier turns of the
    thread, newest first, joined by [SEP] (the tokenizer maps it to its separator piece). The
    message comes first so that truncation to `max_len` pieces drops the oldest context."""
    prev = [c for c in list(context)[::-1][: max(turns, 0)] if c.strip()]
    return " [SEP] ".join([message, *prev])


def trigger_tokens(text: str) -> list[str]:
    """Unigrams, bigrams, and markers for a question and the length (in words, bucketed)."""
    words = _WORD.findall(text.lower())
    toks = words + [f"{a}_{b}" for a, b in zip(words, words[1:], strict=False)]
    toks.append(f"__len{min(len(words) // 5, 6)}")
    if "?" in text:
        toks.append("__question")
    return toks


def trigger_features(texts: list[str], vocab: dict[str, int], idf: np.ndarray) -> np.ndarray:
    """(N, V) float32 TF-IDF rows, L2-normalised; tokens outside `vocab` are dropped."""
    x = np.zeros((len(texts), len(vocab)), dtype=np.float32)
    for i, t in enumerate(texts):
        for tok in trigger_tokens(t):
            j = vocab.get(tok)
            if j is not None:
                x[i, j] += 1.0
    x *= idf[None, :]
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def message_features(messages: list[str]) -> dict[str, list[float]]:
    """Cheap input descriptors the monitor compares with training: characters, words, and the
    share of non-ASCII characters (another alphabet, mojibake) per message."""
    return {
        "message_chars": [float(len(m)) for m in messages],
        "message_words": [float(len(m.split())) for m in messages],
        "non_ascii_share": [sum(ord(c) > 127 for c in m) / max(len(m), 1) for m in messages],
    }


def choose_suggestions(
    scores: np.ndarray, clusters: np.ndarray, polarities: np.ndarray, k: int, shortlist: int
) -> list[int]:
    """Indices of at most k replies for one message: the `shortlist` best by score, then the
    diverse pick (`responses.select_diverse`: one per cluster, both polarities where sensible)."""
    top = np.argsort(-scores, kind="stable")[:shortlist]
    pick = select_diverse(scores[top], clusters[top], polarities[top], k=k)
    return [int(top[i]) for i in pick]


def _onnx_session(onnx: bytes):
    """One-thread ONNX Runtime session, no spinning (the shared cores)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])


class SmartReplyPredictor:
    """The served model: ONNX message tower + reply embeddings + trigger + compose."""

    def __init__(self, art, session, tokenizer, compose=None):
        cfg = art.config
        self.path = art.path
        self.config = cfg
        self.session = session
        self.tokenizer = tokenizer
        self.max_len = int(cfg["max_len"])
        self.context_turns = int(cfg.get("context_turns", 0))  # 0 for artifacts before it
        self.shortlist = int(cfg.get("shortlist", 20))
        t = art.tensors
        self.reply_emb = t["reply_emb"].numpy().astype(np.float32)  # (R, D) unit rows
        self.clusters = t["clusters"].numpy()
        self.polarities = t["polarities"].numpy()
        self.trigger_w = t["trigger_w"].numpy().astype(np.float32)  # (V,)
        self.trigger_b = float(t["trigger_b"].numpy().reshape(-1)[0])
        self.trigger_idf = t["trigger_idf"].numpy().astype(np.float32)  # (V,)
        self.threshold = float(cfg["trigger_threshold"])
        meta = json.loads(art.files["responses.json"])
        self.texts: list[str] = meta["texts"]
        self.trigger_vocab: dict[str, int] = {w: i for i, w in enumerate(meta["trigger_vocab"])}
        self.compose = compose
        self._reply_onnx = art.files.get("reply_tower.onnx")  # artifacts before it have none
        self._reply_session = None
        from shared.ann import build_index, set_threads

        self.index = build_index(self.reply_emb, "ip")  # exact below 50K replies
        # One OpenMP thread: measured in process (/tmp/h1/prof.py, load average ~20), a search
        # for a batch of 8 messages took 46 ms with faiss's default threads (they busy-wait for
        # the shared cores) and 0.01 ms with one; a single message 0.01 ms either way.
        set_threads(1)

    @classmethod
    def load(cls, path: str | Path) -> SmartReplyPredictor:
        """Verify (sha256 manifest) and load; ArtifactError on any corrupt or missing part."""
        from tokenizers import Tokenizer

        from shared.artifacts import load_artifact

        art = load_artifact(path)
        for name in ("message_tower.onnx", "tokenizer.json", "responses.json"):
            if name not in art.files:
                raise ArtifactError(f"artifact {path}: {name} is missing")
        try:
            session = _onnx_session(art.files["message_tower.onnx"])
            tokenizer = Tokenizer.from_str(art.files["tokenizer.json"].decode("utf-8"))
        except Exception as e:  # onnxruntime / tokenizers raise their own types
            raise ArtifactError(f"artifact {path}: cannot load the model ({e})") from None
        compose = None
        if "compose.vocab_utf8" in art.tensors:  # the LSTM or the n-gram, whichever shipped
            from .compose import ComposeModel

            compose = ComposeModel.from_arrays({k: v.numpy() for k, v in art.tensors.items()})
        pred = cls(art, session, tokenizer, compose)
        pred.sanity_check()
        return pred

    def sanity_check(self) -> None:
        """Refuse a model whose embeddings are not finite unit vectors of the right width."""
        e = self.embed_messages(["Can we meet tomorrow at 3pm?", "Thanks a lot!"])
        if e.shape != (2, self.reply_emb.shape[1]) or not np.all(np.isfinite(e)):
            raise ArtifactError(f"artifact {self.path}: the message tower gives bad embeddings")

    def embed_messages(self, messages: list[str]) -> np.ndarray:
        """(N, D) unit message embeddings from the ONNX message tower."""
        ids, mask = encode_texts(self.tokenizer, messages, self.max_len)
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    def embed_requests(self, requests: list[dict]) -> np.ndarray:
        """(N, D) message embeddings of /suggest bodies: each message with its earlier turns
        (`model_text`, `context_turns` of the artifact), through the ONNX message tower."""
        texts = [
            model_text(r["message"], r.get("context") or (), self.context_turns) for r in requests
        ]
        return self.embed_messages(texts)

    def embed_replies(self, replies: list[str]) -> np.ndarray:
        """(N, D) unit reply embeddings from the artifact's ONNX reply tower (loaded on first
        use: serving never calls it). CasebookError for an artifact without one."""
        if self._reply_session is None:
            onnx = self._reply_onnx
            if onnx is None:
                raise CasebookError(f"artifact {self.path} has no reply tower")
            try:
                self._reply_session = _onnx_session(onnx)
            except Exception as e:  # onnxruntime raises its own types
                raise ArtifactError(
                    f"artifact {self.path}: cannot load the reply tower ({e})"
                ) from None
        out = []
        for s in range(0, len(replies), 64):
            ids, mask = encode_texts(self.tokenizer, replies[s : s + 64], self.max_len)
            out.append(self._reply_session.run(None, {"input_ids": ids, "attention_mask": mask})[0])
        return np.concatenate(out) if out else np.zeros((0, self.reply_emb.shape[1]), np.float32)

    def pick_batch(
        self, requests: list[dict]
    ) -> tuple[list[list[int]], list[list[float]], np.ndarray]:
        """The suggestions shown when the trigger fires, for every request whatever the trigger
        says: per request the indices into the response set (the faiss shortlist, then the
        diverse pick) and their cosines, with the (N,) best-reply cosines."""
        emb = self.embed_requests(requests)  # (N, D)
        n_short = min(self.shortlist, len(self.texts))
        sims, idx = self.index.search(np.ascontiguousarray(emb, dtype=np.float32), n_short)
        picks, cosines = [], []
        for i, r in enumerate(requests):
            # Scores over the shortlist only; the rest of the set cannot be picked anyway.
            scores = np.full(len(self.texts), -np.inf, dtype=np.float32)
            scores[idx[i]] = sims[i]
            pick = choose_suggestions(
                scores, self.clusters, self.polarities, int(r.get("k", 3)), n_short
            )
            picks.append(pick)
            cosines.append([float(scores[j]) for j in pick])
        return picks, cosines, sims[:, 0].astype(np.float64)

    def trigger_proba(self, messages: list[str]) -> np.ndarray:
        """(N,) probability that a short suggested reply fits the message."""
        x = trigger_features(messages, self.trigger_vocab, self.trigger_idf)
        return 1.0 / (1.0 + np.exp(-(x @ self.trigger_w + self.trigger_b)))

    def suggest_batch(self, requests: list[dict]) -> list[dict]:
        """[{"message", "k", optional "context": earlier turns, oldest first}] ->
        [{"suggestions": [{"text", "score"}], "triggered",
        "trigger_score", "top_score"}]; suggestions are empty when the trigger says no;
        top_score is the best reply's cosine in the whole set (also when not triggered)."""
        return self._suggest(requests)[0]

    def _suggest(self, requests: list[dict]) -> tuple[list[dict], np.ndarray, np.ndarray]:
        """The answers, and unrounded (N,) trigger probabilities and (N,) best-reply cosines."""
        if not requests:
            return [], np.zeros(0), np.zeros(0)
        messages = [r["message"] for r in requests]
        p = self.trigger_proba(messages)  # the trigger reads the message alone
        picks, cosines, top = self.pick_batch(requests)  # top: faiss returns the best first
        out = []
        for i, pick in enumerate(picks):
            triggered = bool(p[i] >= self.threshold)
            sugg = []
            if triggered:
                sugg = [
                    {"text": self.texts[j], "score": round(s, 4)}
                    for j, s in zip(pick, cosines[i], strict=True)
                ]
            out.append(
                {
                    "suggestions": sugg,
                    "triggered": triggered,
                    "trigger_score": round(float(p[i]), 4),
                    "top_score": round(float(top[i]), 4),
                }
            )
        return out, p, top

    def observation(
        self, requests: list[dict], answers: list[dict] | None = None
    ) -> tuple[dict[str, list[float]], list[float]]:
        """What the live monitor and the golden check watch (shared.golden's contract).

        features: per request, the message's length in characters and in words, its share of
        non-ASCII characters, the share of its words the trigger's vocabulary knows, and the
        best reply's cosine (a broken message tower moves it);
        scores: the trigger probability, one per request (the "suggest" decision is
        score >= the trigger threshold). With `answers` (serving) their rounded figures are
        reused; without (training, the golden check) they are computed, unrounded.
        """
        if answers is None:
            _, p, top = self._suggest(requests)
        else:
            p = np.array([a["trigger_score"] for a in answers], dtype=np.float64)
            top = np.array([a["top_score"] for a in answers], dtype=np.float64)
        messages = [r["message"] for r in requests]
        features = message_features(messages)
        # Share of the message's words the trigger's vocabulary knows (random letters or another
        # language keep the length but not this).
        words = [_WORD.findall(m.lower()) for m in messages]
        features["known_word_share"] = [
            sum(x in self.trigger_vocab for x in w) / max(len(w), 1) for w in words
        ]
        features["top_score"] = [float(x) for x in top]
        return features, [float(x) for x in p]

    def compose_batch(self, requests: list[dict]) -> list[dict]:
        """[{"message", "prefix"}] -> [{"completion": str}] ("" when not confident)."""
        if self.compose is None:
            raise CasebookError("this artifact has no compose model")
        return [
            {"completion": self.compose.complete(r["message"], r["prefix"], max_words=3)}
            for r in requests
        ]
