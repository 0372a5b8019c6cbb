"""KeyboardLSTM: a small word-level LSTM language model with tied input/output embeddings.

In the spirit of Gboard's next-word model (Hard et al. 2018: CIFG-LSTM, 670 units, 10K words,
1.4M parameters): embed (E) -> LSTM (H) -> project to E -> logits against the same embedding
matrix. Tying the output layer to the input embedding halves the parameters that a 10K
vocabulary costs (V x E once instead of twice), which is what makes a few-MB model possible.

Also here: the vocabulary, int8 packaging (torch dynamic quantization for the runtime, an int8
safetensors package for the size on disk) and ONNX export of the single-step graph.
"""

from __future__ import annotations

import bisect
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

UNK, BOS = "<unk>", "<s>"
SPECIALS = (UNK, BOS)


class KeyboardVocab:
    """Word <-> id, most frequent first after the specials; with a prefix index for completion."""

    def __init__(self, words: Sequence[str]):
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        # Prefix index: the words sorted alphabetically; the words starting with a prefix form one
        # contiguous range, found by two binary searches (no scan per keystroke).
        order = sorted(range(len(SPECIALS), len(self.itos)), key=self.itos.__getitem__)
        self._sorted_words = [self.itos[i] for i in order]
        self._sorted_ids = np.asarray(order, dtype=np.int64)

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], size: int, min_count: int = 1):
        counts = Counter(t for s in sentences for t in s)
        words = [w for w, c in counts.most_common() if c >= min_count]
        return cls(words[: max(size - len(SPECIALS), 1)])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, 0) for t in tokens]

    def prefix_ids(self, prefix: str) -> np.ndarray:
        """Ids of the words that start with `prefix` (all words for an empty prefix)."""
        if not prefix:
            return self._sorted_ids
        lo = bisect.bisect_left(self._sorted_words, prefix)
        hi = bisect.bisect_left(self._sorted_words, prefix + "\uffff")
        return self._sorted_ids[lo:hi]

    def top_words(self, logp: np.ndarray, prefix: str = "", k: int = 3) -> list[str]:
        """The `k` most likely words starting with `prefix`, given log-probs over the vocab (V,)."""
        ids = self.prefix_ids(prefix)
        if len(ids) == 0:
            return []
        scores = logp[ids]
        if len(ids) > k:
            part = np.argpartition(-scores, k)[:k]
            part = part[np.argsort(-scores[part])]
        else:
            part = np.argsort(-scores)
        return [self.itos[i] for i in ids[part]]

    def to_json(self) -> str:
        return json.dumps(self.itos[len(SPECIALS) :])

    @classmethod
    def from_json(cls, text: str) -> KeyboardVocab:
        return cls(json.loads(text))


class KeyboardLSTM(nn.Module):
    """Word LSTM LM: tokens (B, T) -> logits (B, T, V); tied embedding; one step per word."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_dim: int,
        num_layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.vocab_size, self.embed_dim, self.hidden_dim = vocab_size, embed_dim, hidden_dim
        self.num_layers = num_layers
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True)
        self.proj = nn.Linear(hidden_dim, embed_dim)  # H -> E so the output can reuse the embedding
        self.head = nn.Linear(embed_dim, vocab_size)
        self.head.weight = self.embed.weight  # tied: one V x E matrix for input and output
        nn.init.uniform_(self.embed.weight, -0.05, 0.05)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = self.drop(self.embed(tokens))  # (B, T, E)
        out, (h, c) = self.lstm(x, state)  # out (B, T, H); h, c (L, B, H)
        logits = self.head(self.proj(self.drop(out)))  # (B, T, E) -> (B, T, V)
        return logits, (h, c)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) -> (B, T, E): the projected LSTM output the head scores (zero state)."""
        out, _ = self.lstm(self.drop(self.embed(tokens)))  # (B, T, H)
        return self.proj(self.drop(out))  # (B, T, E)

    def step(
        self, token: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One word: token (B,) -> logits (B, V) and the next state (cached by the keyboard)."""
        logits, state = self.forward(token[:, None], state)  # (B, 1, V)
        return logits[:, 0], state

    @torch.no_grad()
    def fast_step(
        self, token: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Inference-only `step` through nn.LSTMCell views of the same weights.

        nn.LSTM re-lays out its weights on every call, which dominates a batch-1 step on CPU;
        LSTMCell does not (3-6x faster per step). Same numbers as `step` (tested).
        """
        if not isinstance(self.lstm, nn.LSTM):  # a quantized copy: use its own kernels
            return self.step(token, state)
        cells = self.__dict__.get("_cells")
        if cells is None:
            cells = []
            for k in range(self.num_layers):
                cell = nn.LSTMCell(self.embed_dim if k == 0 else self.hidden_dim, self.hidden_dim)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    setattr(cell, name, getattr(self.lstm, f"{name}_l{k}"))  # shared, not copied
                cells.append(cell)
            self.__dict__["_cells"] = cells  # not a registered submodule: no duplicate weights
        if state is None:
            state = self.init_state(token.shape[0])
        h, c = state  # (L, B, H)
        x = self.embed(token)  # (B, E)
        hs, cs = [], []
        for k, cell in enumerate(cells):
            hk, ck = cell(x, (h[k], c[k]))  # (B, H)
            hs.append(hk)
            cs.append(ck)
            x = hk
        logits = self.head(self.proj(x))  # (B, V)
        return logits, (torch.stack(hs), torch.stack(cs))

    def init_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(self.num_layers, batch, self.hidden_dim)
        return z, z.clone()

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Weights for safetensors: the tied head.weight is stored once (as embed.weight)."""
        return {k: v for k, v in self.state_dict().items() if k != "head.weight"}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        full = dict(tensors)
        full["head.weight"] = full["embed.weight"]
        self.load_state_dict(full)
        self.head.weight = self.embed.weight


class KeyboardStep(nn.Module):
    """ONNX wrapper: (token (B,), h (L,B,H), c (L,B,H)) -> (log-probs (B,V), h, c)."""

    def __init__(self, model: KeyboardLSTM):
        super().__init__()
        self.model = model

    def forward(self, token, h, c):
        logits, (h2, c2) = self.model.step(token, (h, c))
        return torch.log_softmax(logits, dim=-1), h2, c2


def quantize_int8(model: KeyboardLSTM) -> nn.Module:
    """Dynamic int8 copy for the CPU runtime: LSTM and Linear weights int8, embedding 8-bit rows.

    `quantize_dynamic` swaps submodules by type, so it only works because the LSTM sits inside
    this model (a bare nn.LSTM passed at top level comes back unchanged); `is_quantized` checks.
    """
    import copy
    import warnings

    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
        quantize_dynamic,
    )

    m = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        q = quantize_dynamic(
            m,
            {
                nn.LSTM: default_dynamic_qconfig,
                nn.Linear: default_dynamic_qconfig,
                nn.Embedding: float_qparams_weight_only_qconfig,
            },
            dtype=torch.qint8,
        )
    if not is_quantized(q):
        raise RuntimeError("quantize_dynamic left the LSTM in float32")
    return q


def is_quantized(model: nn.Module) -> bool:
    """True when the LSTM inside `model` was really replaced by its dynamic int8 version."""
    return "quantized" in type(model.lstm).__module__


def int8_package(model: KeyboardLSTM) -> bytes:
    """The int8 file a phone would ship: every matrix as int8 rows + one fp32 scale per row.

    Symmetric per-row quantization: q = round(w / s), s = max|w_row| / 127. The tied embedding is
    stored once and serves as both the input table and the output layer. Biases stay fp32.
    """
    from safetensors.torch import save

    out = {}
    for name, w in model.state_tensors().items():
        w = w.detach().float()
        if w.dim() == 2:
            s = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127.0  # (rows, 1)
            out[name + ".q"] = torch.round(w / s).clamp(-127, 127).to(torch.int8).contiguous()
            out[name + ".scale"] = s[:, 0].contiguous()
        else:
            out[name] = w.contiguous()
    return save(out)


def fp32_bytes(model: KeyboardLSTM) -> int:
    """Size on disk of the fp32 weights as safetensors (tied embedding stored once)."""
    from safetensors.torch import save

    return len(save({k: v.contiguous() for k, v in model.state_tensors().items()}))


def export_step_onnx(model: KeyboardLSTM, path, opset: int = 17):
    """Export the single-step graph (what runs per keystroke) and return (path, parity max diff)."""
    from shared.onnx_utils import check_parity, export_onnx

    step = KeyboardStep(model).eval()
    tok = torch.tensor([2, 3], dtype=torch.long)  # (B=2,)
    h, c = model.init_state(2)
    example = (tok, h + 0.1, c - 0.1)
    p = export_onnx(
        step,
        example,
        path,
        input_names=["token", "h", "c"],
        output_names=["logp", "h_out", "c_out"],
        dynamic_axes={"token": {0: "B"}, "h": {1: "B"}, "c": {1: "B"}, "logp": {0: "B"}},
        opset=opset,
    )
    diff = check_parity(step, p, example, atol=1e-4)
    return p, diff


def state_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """safetensors bytes of a tensor dict (for sizes and personalization deltas)."""
    from safetensors.torch import save

    buf = io.BytesIO()
    buf.write(save({k: v.contiguous() for k, v in tensors.items()}))
    return buf.getvalue()
