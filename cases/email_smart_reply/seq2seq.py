"""The original Smart Reply scorer: an LSTM encoder-decoder scoring log P(reply | message).

    scorer = train_seq2seq(pairs, time_cap_s=120, seed=0)
    lp = scorer.score(messages, response_texts)        # (N, R) log P(reply | message), nats
    measure_cost(scorer, messages, response_texts)     # ms and FLOPs per suggestion at R

Kannan et al. 2016 ("Smart Reply: Automated Response Suggestion for Email") score every reply of
the response set with a sequence-to-sequence LSTM: encode the message, then read each reply
teacher-forced and sum the log-probabilities of its words. Here, word level, one layer each:

    message ids (M) -> embed (E) -> encoder LSTM (H) -> final (h, c)
    <s> r1 .. rT    -> embed (E) -> decoder LSTM (H, starts at (h, c)) -> W_out (E)
                    -> logits against the shared embedding (V) -> log-softmax -> sum over r1..</s>

Why it costs what it costs, and how the batching helps (the "RNN throughput" question):
- The message is encoded ONCE, and its state is broadcast to all R replies, which the decoder
  reads as ONE padded (R, T) batch: a time step is then an (R, E+H) x (E+H, 4H) matmul instead of
  R matvecs, and the output layer an (R*T, E) x (E, V) matmul.
- Replies are sorted by length before padding, so chunks of similar length waste few padded
  steps (`measure_cost` reports the padded share).
- Even so, the full-vocabulary softmax at every reply token dominates: about 2*E*V FLOPs per
  token, times R*T tokens per message, against one encoder pass and a (R, D) dot product for a
  dual encoder whose reply vectors are precomputed. That ratio is what `measure_cost` puts in
  numbers.

Measured on DailyDialog (7,245 training pairs, E=128, H=256, V=5,554; 1 torch thread on a 2-core
machine at load average ~20): 1-of-100 = 0.017 on 300 held-out pairs after 8 epochs (chance
0.010; validation loss 4.82 nats per token): trained from scratch on this little data, the
decoder learns the replies' language model and barely the message. Cost per suggestion: 24 ms
and 0.12 GFLOPs at R = 16, 53 ms and 0.37 GFLOPs at R = 43, 792 ms and 8.1 GFLOPs at R = 500,
linear in R; 63% of a decoder step is the output layer.

The vocabulary and tokeniser are those of `compose` (lower-case words, contractions whole).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .compose import (
    BOS,
    EOS,
    MAX_MESSAGE_WORDS,
    MAX_REPLY_WORDS,
    ComposeVocab,
    split_pairs,
    tokenize,
)


class Seq2SeqScorer(nn.Module):
    """Word-level LSTM encoder-decoder that scores replies; embedding shared by all three uses."""

    def __init__(self, vocab: ComposeVocab, embed_dim: int = 128, hidden_dim: int = 256):
        super().__init__()
        self.vocab = vocab
        self.embed_dim, self.hidden_dim = embed_dim, hidden_dim
        v = len(vocab)
        self.emb = nn.Embedding(v, embed_dim)
        self.encoder = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.decoder = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, embed_dim)
        self.b_vocab = nn.Parameter(torch.zeros(v))
        self.drop = nn.Dropout(0.0)
        nn.init.normal_(self.emb.weight, std=0.1)

    # -- pieces ----------------------------------------------------------------------------------
    def _message_batch(self, messages: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, M) ids and (N,) lengths; a message with no words is read as a lone <s>."""
        ids = [
            self.vocab.encode(tokenize(m)[-MAX_MESSAGE_WORDS:]) or [self.vocab.stoi[BOS]]
            for m in messages
        ]
        x = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
        for i, s in enumerate(ids):
            x[i, : len(s)] = torch.tensor(s)
        return x, torch.tensor([len(s) for s in ids])

    def _reply_batch(self, replies: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, T) decoder inputs <s> r1..rn and (R, T) targets r1..rn </s>, pads -100."""
        seqs = [
            [self.vocab.stoi[BOS]]
            + self.vocab.encode(tokenize(r)[:MAX_REPLY_WORDS])
            + [self.vocab.stoi[EOS]]
            for r in replies
        ]
        t = max(map(len, seqs)) - 1
        inp = torch.zeros(len(seqs), t, dtype=torch.long)
        tgt = torch.full((len(seqs), t), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            inp[i, : len(s) - 1] = torch.tensor(s[:-1])
            tgt[i, : len(s) - 1] = torch.tensor(s[1:])
        return inp, tgt

    def encode(self, msg: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final encoder state at each message's true length: (1, N, H) h and c."""
        x = self.drop(self.emb(msg))  # (N, M, E)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        _, (h, c) = self.encoder(packed)  # (1, N, H) each
        return h, c

    def decode_logits(self, inp: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder: inputs (B, T) ids from state (1, B, H) -> logits (B, T, V)."""
        y, _ = self.decoder(self.drop(self.emb(inp)), (h.contiguous(), c.contiguous()))  # (B,T,H)
        z = self.out(self.drop(y))  # (B, T, E)
        return z @ self.emb.weight.T + self.b_vocab  # (B, T, V)

    def forward(self, msg, lengths, inp):
        """Training: one reply per message. msg (B, M), lengths (B,), inp (B, T) -> (B, T, V)."""
        h, c = self.encode(msg, lengths)
        return self.decode_logits(inp, h, c)

    # -- scoring ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _score_one(self, h, c, inp, tgt, chunk: int) -> torch.Tensor:
        """Sum of log P over the targets of every reply under one message state: (R,).

        The LSTM runs over the padded (r, T) chunk, but the output layer (most of the FLOPs)
        only over the real tokens: padded positions are dropped before the (E, V) projection.
        """
        out = torch.empty(inp.shape[0])
        for s in range(0, inp.shape[0], chunk):
            i, t = inp[s : s + chunk], tgt[s : s + chunk]  # (r, T)
            t_max = int((t != -100).sum(1).max())  # sorted chunks: cut the shared padding
            i, t = i[:, :t_max], t[:, :t_max]
            r = i.shape[0]
            x = self.emb(i)  # (r, T, E)
            y, _ = self.decoder(
                x, (h.expand(1, r, -1).contiguous(), c.expand(1, r, -1).contiguous())
            )
            mask = t != -100  # (r, T)
            z = self.out(y[mask])  # (n, E) real tokens only
            lp = (z @ self.emb.weight.T + self.b_vocab).log_softmax(-1)  # (n, V)
            tok = lp.gather(-1, t[mask][:, None])[:, 0]  # (n,)
            row = torch.arange(r)[:, None].expand(r, t.shape[1])[mask]  # (n,) reply of each token
            out[s : s + r] = torch.zeros(r).index_add_(0, row, tok)
        return out

    @torch.no_grad()
    def score(
        self, messages: Sequence[str], response_texts: Sequence[str], chunk: int = 256
    ) -> np.ndarray:
        """log P(reply | message) for every message against every reply, in nats: (N, R).

        Each message is encoded once (all N in one packed batch); for each message the decoder
        reads all R replies teacher-forced as padded batches of `chunk` replies, sorted by length.
        The score includes the end-of-reply token, so longer replies score lower: rank within one
        message, or normalise (per token, or against log P(reply | empty message)) for a
        comparison across lengths.
        """
        self.eval()
        if len(messages) == 0 or len(response_texts) == 0:
            return np.zeros((len(messages), len(response_texts)), dtype=np.float32)
        msg, lengths = self._message_batch(messages)
        h, c = self.encode(msg, lengths)  # (1, N, H) each
        inp, tgt = self._reply_batch(response_texts)  # (R, T)
        order = torch.argsort((tgt != -100).sum(1), stable=True)  # short replies first
        inp, tgt = inp[order], tgt[order]
        out = np.empty((len(messages), len(response_texts)), dtype=np.float32)
        for n in range(len(messages)):
            s = self._score_one(h[:, n : n + 1], c[:, n : n + 1], inp, tgt, chunk)  # (R,)
            out[n, order.numpy()] = s.numpy()
        return out

    def score_candidates(
        self, messages: Sequence[str], candidates: Sequence[Sequence[str]]
    ) -> np.ndarray:
        """log P(candidate | message) with a candidate list per message: (N, C).

        For the 1-of-100 protocol, where each message has its own 100 candidates.
        """
        rows = [
            self.score([m], list(cands))[0] for m, cands in zip(messages, candidates, strict=True)
        ]
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    # -- arrays in and out -----------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Weights, vocabulary (UTF-8 bytes) and sizes as plain numpy arrays."""
        d = {f"seq2seq.{k}": t.detach().cpu().numpy().copy() for k, t in self.state_dict().items()}
        d["seq2seq.vocab_utf8"] = self.vocab.to_array()
        d["seq2seq.dims"] = np.array([self.embed_dim, self.hidden_dim], dtype=np.int64)
        return d

    @classmethod
    def from_arrays(cls, d: Mapping[str, Any]) -> Seq2SeqScorer:
        """Inverse of `state_arrays`. Raises ValueError on missing or mis-shaped arrays."""
        try:
            vocab = ComposeVocab.from_array(np.asarray(d["seq2seq.vocab_utf8"]))
            e, h = (int(x) for x in np.asarray(d["seq2seq.dims"]))
            m = cls(vocab, e, h)
            sd = {
                k[len("seq2seq.") :]: torch.as_tensor(np.asarray(v))
                for k, v in d.items()
                if k.startswith("seq2seq.") and k not in ("seq2seq.vocab_utf8", "seq2seq.dims")
            }
            m.load_state_dict(sd)
        except (KeyError, RuntimeError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"seq2seq arrays incomplete or mis-shaped ({err})") from None
        return m.eval()


def train_seq2seq(
    pairs: Sequence[tuple[str, str]],
    time_cap_s: float = 120.0,
    seed: int = 0,
    *,
    embed_dim: int = 128,
    hidden_dim: int = 256,
    vocab_size: int = 8000,
    min_count: int = 2,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    dropout: float = 0.2,
    patience: int = 2,
    val_fraction: float = 0.1,
    threads: int = 2,
    progress: bool = False,
) -> Seq2SeqScorer:
    """Train the encoder-decoder on (message, reply) pairs with teacher forcing.

    Cross-entropy over the reply tokens (including </s>). `val_fraction` of the pairs (seeded)
    are held out: the epoch with the lowest validation token loss is kept, `patience` epochs
    without improvement stop training; `time_cap_s` stops it in any case (checked after every
    batch). Fewer than 20 pairs: no hold-out, all epochs run (the overfitting test).

    Raises:
        ValueError: no pair with a non-empty reply.
    """
    from shared.lifecycle import torch_threads

    rng = np.random.default_rng(seed)  # the split first, then the batch order
    train, val = split_pairs(pairs, val_fraction, rng, "train_seq2seq")
    vocab = ComposeVocab.build([t for p in train for t in p], vocab_size, min_count)
    torch.manual_seed(seed)
    model = Seq2SeqScorer(vocab, embed_dim, hidden_dim)
    model.drop.p = dropout
    start = time.perf_counter()

    def batch(chunk):
        msg, lengths = model._message_batch([m for m, _ in chunk])
        inp, tgt = model._reply_batch([r for _, r in chunk])
        return msg, lengths, inp, tgt

    with torch_threads(threads):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        best, best_loss, bad = None, float("inf"), 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=epochs, desc="seq2seq", unit="epoch")
        for _epoch in range(epochs):
            model.train()
            perm = rng.permutation(len(train))
            for s in range(0, len(train), batch_size):
                msg, lengths, inp, tgt = batch([train[i] for i in perm[s : s + batch_size]])
                logits = model(msg, lengths, inp)  # (B, T, V)
                loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=-100)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if time.perf_counter() - start > time_cap_s:
                    break
            if val:
                model.eval()
                tot, n = 0.0, 0
                with torch.no_grad():
                    for s in range(0, len(val), 256):
                        msg, lengths, inp, tgt = batch(val[s : s + 256])
                        logits = model(msg, lengths, inp)
                        tot += float(
                            F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="sum")
                        )
                        n += int((tgt != -100).sum())
                v_loss = tot / max(n, 1)
                if v_loss < best_loss:
                    best = {k: t.detach().clone() for k, t in model.state_dict().items()}
                    best_loss, bad = v_loss, 0
                else:
                    bad += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(val_loss=f"{best_loss:.3f}")
            if bad >= patience or time.perf_counter() - start > time_cap_s:
                break
        if bar is not None:
            bar.close()
    if best is not None:
        model.load_state_dict(best)
    model.drop.p = 0.0
    return model.eval()


def flops_per_message(
    scorer: Seq2SeqScorer, message_tokens: float, reply_tokens: Sequence[int]
) -> dict[str, float]:
    """Multiply-adds x 2 to score one message against a set of replies (dense layers only).

    encoder: M * 2*4H(E+H); decoder per reply token: 2*4H(E+H) (LSTM) + 2*HE (W_out) + 2*EV
    (tied output layer) + 5V (log-softmax: max, subtract, exp, sum, and the gather). reply_tokens
    are the decoder steps per reply (words + 1); the output layer runs on these only (padding is
    dropped before it), the LSTM on the padded steps (`measure_cost` adds those).
    """
    e, h, v = scorer.embed_dim, scorer.hidden_dim, len(scorer.vocab)
    lstm = 2 * 4 * h * (e + h)
    per_tok = lstm + 2 * h * e + 2 * e * v + 5 * v
    steps = float(np.sum(reply_tokens))
    return {
        "encoder_flops": message_tokens * lstm,
        "decoder_flops": steps * per_tok,
        "output_layer_share": (2 * e * v + 5 * v) / per_tok,
        "lstm_flops_per_step": float(lstm),
        "total_flops": message_tokens * lstm + steps * per_tok,
    }


def measure_cost(
    scorer: Seq2SeqScorer,
    messages: Sequence[str],
    response_texts: Sequence[str],
    threads: int = 2,
    chunk: int = 256,
) -> dict[str, float]:
    """Wall time and FLOPs to score the whole response set for one incoming message.

    A "suggestion" is one message's suggestions: all R = len(response_texts) replies scored for
    it (the three shown are picked from those scores). Each message is timed alone, after one
    warm-up call, with `threads` torch threads. Returns ms p50/p95/mean per suggestion, ms per
    reply scored, FLOPs per suggestion (analytic, see `flops_per_message`, with the mean message
    length; `_padded` adds the LSTM steps run on padding), the share of FLOPs in the output layer,
    and the share of padded LSTM steps after sorting by length within chunks of `chunk`.
    """
    from shared.lifecycle import torch_threads

    if not messages or not response_texts:
        raise ValueError("measure_cost needs at least one message and one reply")
    reply_steps = [min(len(tokenize(r)), MAX_REPLY_WORDS) + 1 for r in response_texts]
    msg_tokens = float(np.mean([max(len(tokenize(m)[-MAX_MESSAGE_WORDS:]), 1) for m in messages]))
    times = []
    with torch_threads(threads):
        scorer.score([messages[0]], response_texts, chunk=chunk)  # warm-up
        for m in messages:
            t0 = time.perf_counter()
            scorer.score([m], response_texts, chunk=chunk)
            times.append((time.perf_counter() - t0) * 1000.0)
    steps = np.sort(np.asarray(reply_steps))
    padded = sum(
        int(steps[s : s + chunk].max()) * len(steps[s : s + chunk])
        for s in range(0, len(steps), chunk)
    )
    fl = flops_per_message(scorer, msg_tokens, reply_steps)
    t = np.asarray(times)
    return {
        "R": float(len(response_texts)),
        "ms_per_suggestion_p50": float(np.percentile(t, 50)),
        "ms_per_suggestion_p95": float(np.percentile(t, 95)),
        "ms_per_suggestion_mean": float(t.mean()),
        "ms_per_reply": float(t.mean() / len(response_texts)),
        "flops_per_suggestion": fl["total_flops"],
        "flops_per_suggestion_padded": fl["total_flops"]
        + fl["lstm_flops_per_step"] * (padded - int(steps.sum())),
        "output_layer_share": fl["output_layer_share"],
        "padded_step_share": 1.0 - float(steps.sum()) / max(padded, 1),
        "n_messages": float(len(messages)),
        "threads": float(threads),
    }
