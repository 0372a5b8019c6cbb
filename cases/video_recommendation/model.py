"""The learned models, each whole: two-tower retrieval, SASRec, and the multi-task ranker.

- `VideoRecTwoTower`: user tower = MLP over the mean embedding of the recent watch history (so a
  new or anonymous viewer with a history is served without a user id); item tower = id + topic
  embeddings -> MLP. Trained with in-batch sampled softmax and logQ correction (Yi et al. 2019):
  logit_ij = <u_i, v_j> / tau - log q_j, q_j = the chance item j appears in a batch.
- `VideoRecSASRec`: causal self-attention over the last `seq_len` watches (Kang & McAuley 2018),
  next-item prediction with a full softmax over the catalog (tied item embeddings).
- `VideoRecRanker`: shared MLP over user/item/context features with three heads (click; watch
  time as watch-time-weighted logistic regression, Covington et al. 2016; satisfaction) and a
  shallow position tower added to the click and watch logits in training only (Zhao et al. 2019).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAD = 0  # item index 0 is padding in every sequence model; real items are shifted by +1


def pad_left(seqs: list, L: int) -> np.ndarray:
    """The last L items of each sequence, shifted +1 (0 = pad), left-padded; -> (B, L) int64.

    The one input builder of both sequence models, in training and at serving."""
    out = np.zeros((len(seqs), L), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-L:]
        if len(s):
            out[r, L - len(s) :] = s + 1
    return out


class VideoRecTwoTower(nn.Module):
    def __init__(self, n_items: int, n_topics: int, dim: int = 64, temperature: float = 0.05):
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.topic_emb = nn.Embedding(max(n_topics, 1) + 1, dim)  # topic -1 (unknown) -> row 0
        self.hist_emb = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.user_mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.item_mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.temperature = temperature
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.hist_emb.weight, std=0.05)

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        """hist (B, L) item indices (+1, 0 = pad) -> (B, D) unit vectors."""
        e = self.hist_emb(hist)  # (B, L, D)
        mask = (hist != PAD).unsqueeze(-1).float()  # (B, L, 1)
        mean = (e * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return F.normalize(self.user_mlp(mean), dim=-1)

    def item_vectors(self, items: torch.Tensor, topics: torch.Tensor) -> torch.Tensor:
        """items (N,) indices (+1), topics (N,) (+1, 0 = unknown) -> (N, D) unit vectors."""
        x = self.item_emb(items) + self.topic_emb(topics)  # (N, D)
        return F.normalize(self.item_mlp(x) + x, dim=-1)

    def loss(self, hist, pos, pos_topic, log_q) -> torch.Tensor:
        """In-batch softmax with logQ correction; hist (B, L), pos (B,), log_q (B,)."""
        u = self.user_vectors(hist)  # (B, D)
        v = self.item_vectors(pos, pos_topic)  # (B, D)
        logits = u @ v.T / self.temperature - log_q[None, :]  # (B, B)
        # The same item twice in a batch is not a negative for itself.
        same = pos[None, :] == pos[:, None]
        logits = logits.masked_fill(same & ~torch.eye(len(pos), dtype=torch.bool), -1e9)
        return F.cross_entropy(logits, torch.arange(len(pos)))


class VideoRecSASRec(nn.Module):
    def __init__(
        self,
        n_items: int,
        dim: int = 64,
        max_len: int = 50,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, dim)
        block = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=dim * 2,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.pos_emb.weight, std=0.05)

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) left-padded item indices (+1) -> (B, L, D) causal states."""
        B, L = seq.shape
        pos = torch.arange(L, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(pos)[None]
        x = self.drop(x)  # (B, L, D)
        pad = seq == PAD  # (B, L)
        # Query t may see keys s <= t that are real items; every position may see itself, so a
        # padded row never attends to nothing (which would give NaN).
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        causal_ok = torch.tril(torch.ones(L, L, dtype=torch.bool, device=seq.device))
        ok = (causal_ok[None] & ~pad[:, None, :]) | eye[None]  # (B, L, L)
        heads = self.encoder.layers[0].self_attn.num_heads
        mask = torch.zeros(ok.shape, device=seq.device).masked_fill(~ok, float("-inf"))
        mask = mask.repeat_interleave(heads, 0)  # (B * heads, L, L)
        h = self.encoder(x, mask=mask)
        h = h.masked_fill(pad.unsqueeze(-1), 0.0)
        return self.norm(h)  # (B, L, D)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., D) -> (..., I+1) scores against every item (tied embeddings; column 0 = pad)."""
        return h @ self.item_emb.weight.T

    def loss(self, seq: torch.Tensor, target: torch.Tensor, n_negatives: int = 0) -> torch.Tensor:
        """Next-item cross-entropy at every non-pad position; seq, target (B, L).

        n_negatives = 0: full softmax over the catalog. Otherwise a sampled softmax against
        `n_negatives` items drawn uniformly and shared by the batch; with uniform sampling the
        logQ correction is a constant and drops out.
        """
        h = self.hidden(seq)  # (B, L, D)
        m = target != PAD
        h, y = h[m], target[m]  # (N, D), (N,)
        if n_negatives <= 0:
            logits = self.logits(h)  # (N, I+1)
            logits[:, PAD] = -1e9
            return F.cross_entropy(logits, y)
        n_items = self.item_emb.num_embeddings - 1
        neg = torch.randint(1, n_items + 1, (n_negatives,), device=seq.device)  # (M,)
        pos_logit = (h * self.item_emb(y)).sum(-1, keepdim=True)  # (N, 1)
        neg_logit = h @ self.item_emb(neg).T  # (N, M)
        neg_logit = neg_logit.masked_fill(neg[None, :] == y[:, None], -1e9)  # accidental hits
        logits = torch.cat([pos_logit, neg_logit], 1)  # (N, 1 + M)
        return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=seq.device))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq (B, L) -> (B, I+1) next-item scores from the last position."""
        return self.logits(self.hidden(seq)[:, -1])


N_DENSE = 6  # the dense ranker features, named below
DENSE_NAMES = (
    "log_duration",
    "log_video_age_days",
    "log_item_views",
    "topic_affinity",
    "retrieval_score",
    "example_age_days",
)


def topic_share(histories: list, item_topic: np.ndarray, n_topics: int) -> np.ndarray:
    """Share of each history's watches in each topic; (B, T) float32, rows of zeros if empty."""
    share = np.zeros((len(histories), n_topics), np.float32)
    for r, h in enumerate(histories):
        if len(h):
            share[r] = np.bincount(item_topic[np.asarray(h)], minlength=n_topics) / len(h)
    return share


def tower_score(user_vecs: np.ndarray, item_vecs: np.ndarray) -> np.ndarray:
    """Row-wise <u_n, v_n>: (N, D), (N, D) -> (N,) float32, the ranker's two-tower feature."""
    return np.einsum("nd,nd->n", user_vecs, item_vecs).astype(np.float32)


def ranker_inputs(
    items: np.ndarray,
    request: np.ndarray,
    histories: list,
    item_topic: np.ndarray,
    n_topics: int,
    log_duration: np.ndarray,
    age_days: np.ndarray,
    item_views: np.ndarray,
    tower: np.ndarray,
    example_age_days: np.ndarray,
) -> dict[str, np.ndarray]:
    """THE ranker inputs, built by this one function in training and at serving (no skew).

    items (N,) video ids, request (N,) the row of `histories` each item is scored for; the
    per-row arrays (N,): log duration, video age in days at the request, the video's views, the
    two-tower score and the example age (days before the end of training; 0 at serving).
    Returns item (+1) and topic (+1) int64 indices and dense (N, 6) float32 in DENSE_NAMES order.
    """
    share = topic_share(histories, item_topic, n_topics)  # (B, T)
    topic = item_topic[items]
    # Inputs keep their dtypes until the final cast, so both paths round alike.
    dense = np.stack(
        [
            log_duration,
            np.log1p(np.maximum(age_days, 0.0)),
            np.log1p(item_views),
            share[request, topic],
            tower,
            example_age_days,
        ],
        1,
    ).astype(np.float32)  # (N, 6)
    return {
        "item": (items + 1).astype(np.int64),
        "topic": (topic + 1).astype(np.int64),
        "dense": dense,
    }


def serving_score(logits: np.ndarray, sat_weight: float = 1.0) -> np.ndarray:
    """THE served ranking score: expected watch time (the watch head's log-odds) plus
    log P(satisfied); logits (..., 3) -> (...)."""
    return logits[..., 1] - sat_weight * np.logaddexp(0.0, -logits[..., 2])


class VideoRecRanker(nn.Module):
    """Multi-task ranker; outputs (B, 3) logits: click, watch (weighted LR), satisfaction."""

    def __init__(
        self,
        n_items: int,
        n_topics: int,
        slate_size: int,
        hidden: int = 64,
        dim: int = 16,
        use_position: bool = True,
    ):
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, dim)
        self.topic_emb = nn.Embedding(max(n_topics, 1) + 1, dim)
        self.dense_norm = nn.BatchNorm1d(N_DENSE)
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim + N_DENSE, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.heads = nn.Linear(hidden, 3)
        # Shallow position tower: one bias per slot per (click, watch) head; no user/item input,
        # so it can only absorb how much a slot is seen, not what is shown there.
        self.position = nn.Embedding(slate_size, 2) if use_position else None
        if self.position is not None:
            nn.init.zeros_(self.position.weight)

    def forward(
        self,
        item: torch.Tensor,
        topic: torch.Tensor,
        dense: torch.Tensor,
        position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """item, topic (B,) indices (+1); dense (B, N_DENSE); position (B,) or None -> (B, 3)."""
        x = torch.cat([self.item_emb(item), self.topic_emb(topic), self.dense_norm(dense)], -1)
        out = self.heads(self.mlp(x))  # (B, 3)
        if position is not None and self.position is not None:
            bias = self.position(position)  # (B, 2)
            out = out + F.pad(bias, (0, 1))  # satisfaction is conditional on a click: no bias
        return out


class VideoRecRankerServing(nn.Module):
    """The ranker as served: no position input (the tower is dropped), example age fixed at 0."""

    def __init__(self, ranker: VideoRecRanker):
        super().__init__()
        self.ranker = ranker

    def forward(self, item: torch.Tensor, topic: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        dense = torch.cat([dense[:, :-1], torch.zeros_like(dense[:, -1:])], 1)  # example age 0
        return self.ranker(item, topic, dense)


def export_ranker_onnx(ranker: VideoRecRanker, feats: dict, path: Path) -> tuple[Path, float]:
    """Export the serving ranker (no position input, example age 0) to ONNX and check parity
    on up to 64 rows of `feats`; returns the path and the max absolute difference."""
    from shared.onnx_utils import check_parity, export_onnx

    serving = VideoRecRankerServing(ranker).eval()
    n = min(64, len(feats["item"]))
    ex = tuple(torch.from_numpy(feats[k][:n]) for k in ("item", "topic", "dense"))
    batch = {0: "batch"}
    path = export_onnx(
        serving,
        ex,
        path,
        ["item", "topic", "dense"],
        ["logits"],
        dynamic_axes={"item": batch, "topic": batch, "dense": batch, "logits": batch},
    )
    return path, check_parity(serving, path, ex, atol=1e-4)
