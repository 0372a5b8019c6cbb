"""KeyboardLSTM: a small word-level LSTM language model with tied input/output embeddings.

In the spirit of Gboard's next-word model (Hard et al. 2018: CIFG-LSTM, 670 units, 10K words,
1.4M parameters): embed (E) -> LSTM (H) -> project to E -> logits against the same embedding
matrix. Tying the output layer to the input embedding halves the parameters that a 10K
vocabulary costs (V x E once instead of twice), which is what makes a few-MB model possible.

Also here: the vocabulary; the int8 package (int8 rows + a scale per row, safetensors) and its
inverse, which is what the predictor runs when int8 ships; `KeyboardTrigram`, the Kneser-Ney
trigram as it ships (probability tables, pruned to a size budget by `baseline.KeyboardKneserNey`);
`mix_logp`, the per-step interpolation of two next-word distributions; and ONNX export of the
single-step graph.
"""

from __future__ import annotations

import bisect
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


def int8_tensors(package: bytes) -> dict[str, torch.Tensor]:
    """The fp32 tensors an int8 package encodes, w = q * s row by row (`int8_package`'s inverse).

    The predictor runs exactly these numbers when int8 ships, and the candidate table scores
    them, so the accuracy, the size and the latency of the int8 row all come from one file.
    """
    from safetensors.torch import load

    raw = load(bytes(package))
    out = {}
    for name, t in raw.items():
        if name.endswith(".q"):
            out[name[: -len(".q")]] = t.float() * raw[name[: -len(".q")] + ".scale"][:, None]
        elif not name.endswith(".scale"):
            out[name] = t.float()
    return out


def lstm_from_int8(package: bytes, embed_dim: int, hidden_dim: int, num_layers: int = 1):
    """A KeyboardLSTM holding the weights of an int8 package (dequantized once, at load)."""
    tensors = int8_tensors(package)
    vocab_size = tensors["embed.weight"].shape[0]
    model = KeyboardLSTM(vocab_size, embed_dim, hidden_dim, num_layers)
    model.load_state_tensors(tensors)
    return model.eval()


def fp32_file(model: KeyboardLSTM) -> bytes:
    """The fp32 weights as safetensors (tied embedding stored once)."""
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in model.state_tensors().items()})


def lstm_from_fp32(data: bytes, embed_dim: int, hidden_dim: int, num_layers: int = 1):
    """A KeyboardLSTM holding the weights of an fp32 file (`fp32_file`'s inverse)."""
    from safetensors.torch import load

    tensors = load(bytes(data))
    model = KeyboardLSTM(tensors["embed.weight"].shape[0], embed_dim, hidden_dim, num_layers)
    model.load_state_tensors(tensors)
    return model.eval()


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


class KeyboardTrigram:
    """The interpolated Kneser-Ney trigram as it ships: per-level probability tables.

    For a context (u, v) the distribution is built top-down, each level a sparse correction of
    the one below (see baseline.py for the formulas):
        p = p1;  p = gamma2[v] * p + p2[v, .];  p = gamma3[u v] * p + p3[u v, .]
    where p2/p3 hold the discounted probabilities of the kept (word, context) pairs and gamma the
    mass left for the lower order: 1 - sum of the kept entries. A pruned pair simply falls back
    to the lower order, so every level sums to one whatever was pruned.

    Tables (numpy, stored as safetensors): `p1` (V,) float32; for each level n in (2, 3):
    `ctx{n}` sorted context keys (v, or u * V + v; int32 when V * V < 2**31), `ptr{n}` int32 CSR
    offsets, `ids{n}` the word ids (uint16 when V < 65,536) and `p{n}` float16. 4 bytes an entry
    and 8 a context (was 6 and 20 with int64 keys and offsets, float32 p and a stored gamma): on
    Gutenberg the 0.56 MB an int8 LSTM leaves holds 86K entries instead of 47K (issue 13). gamma
    is not stored: it is computed at load from the float16 p, so each level still sums to one
    (float16 moves a probability by at most 0.05%, and ranks almost never).
    """

    def __init__(self, tables: dict[str, np.ndarray], bos: int = 1):
        self.t = tables
        self.V = len(tables["p1"])
        self.bos = bos  # <s>, the message start (SPECIALS order)
        # gamma{n} per context: 1 - the kept mass, from the stored p (float64 sums).
        self.gamma = {}
        for n in (2, 3):
            p, ptr = tables[f"p{n}"].astype(np.float64), tables[f"ptr{n}"].astype(np.int64)
            mass = np.add.reduceat(p, ptr[:-1]) if len(p) else np.zeros(len(ptr) - 1)
            self.gamma[n] = 1.0 - mass  # (contexts,); every stored context keeps >= 1 entry

    def _level(self, p: np.ndarray, n: int, key: int) -> np.ndarray:
        ctx = self.t[f"ctx{n}"]
        i = int(np.searchsorted(ctx, key))
        if i == len(ctx) or ctx[i] != key:
            return p  # unseen context: this level adds nothing
        a, b = self.t[f"ptr{n}"][i], self.t[f"ptr{n}"][i + 1]
        p = p * float(self.gamma[n][i])
        p[self.t[f"ids{n}"][a:b].astype(np.int64)] += self.t[f"p{n}"][a:b]
        return p

    def prob_next(self, context: Sequence[int]) -> np.ndarray:
        """P(w | the last two ids of `context`), (V,) float64; [] is a message start."""
        ctx = [self.bos, self.bos] + list(context)
        u, v = int(ctx[-2]), int(ctx[-1])
        p = self.t["p1"].astype(np.float64)  # (V,), a copy
        p = self._level(p, 2, v)
        return self._level(p, 3, u * self.V + v)

    def logprob_next(self, context: Sequence[int]) -> np.ndarray:
        return np.log(np.maximum(self.prob_next(context), 1e-30))

    def n_entries(self) -> int:
        return int(len(self.t["ids2"]) + len(self.t["ids3"]))

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        return save({k: np.ascontiguousarray(v) for k, v in self.t.items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyboardTrigram:
        from safetensors.numpy import load

        return cls(load(bytes(data)))

    def n_bytes(self) -> int:
        """Size on disk: the safetensors file that ships."""
        return len(self.to_bytes())


def mix_logp(lp_a: np.ndarray, lp_b: np.ndarray, weight_b: float) -> np.ndarray:
    """log((1 - w) exp(lp_a) + w exp(lp_b)), row-wise; the mixture of two next-word distributions.

    Both inputs are log-probabilities over the same vocabulary (..., V); the result sums to one
    when they do. Computed with logaddexp, so words far down either list stay finite.
    """
    w = float(weight_b)
    if w <= 0.0:
        return lp_a
    if w >= 1.0:
        return lp_b
    return np.logaddexp(np.log1p(-w) + lp_a, np.log(w) + lp_b)
