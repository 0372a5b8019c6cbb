"""The RNN throughput ladder: how fast can an LSTM language model answer keystrokes?

    casebook bench rnn            # the full ladder: 7 minutes on 2 cores that other jobs shared
    casebook bench rnn --quick    # a tiny model, seconds (what the tests run)
    python benchmarks/rnn_throughput.py --threads 1    # flags beyond --quick/--out (see below)

Each rung is measured against the one before, on one model, in one process:
  1. naive      eager PyTorch, one request at a time, recomputing the whole prefix per keystroke
  2. cached     keep (h, c) per request and run one step per keystroke (LSTMCell vs nn.LSTM)
  3. batched    steps of concurrent requests (batch 1..256), and dynamic batching of requests that
                arrive apart (a discrete-event simulation whose service times are real model calls)
  4. lengths    scoring variable-length sequences: padded vs packed vs length-bucketed
  5. compiled   TorchScript (and torch.compile in the full run) of the batched step
  6. ort        onnxruntime fp32
  7. int8       dynamic int8 in PyTorch (the LSTM wrapped so it really is quantized) and in ORT
  8. threads    1 thread vs all cores
  9. gpu        only when CUDA is present: cuDNN fp32/fp16/bf16, large batches, a CUDA graph step

Every row carries tokens/s, p50/p99 ms per call, model bytes, the fraction of the roofline, the
error against the fp32 reference, and for quantized rows the top-1 change on held-out text.

Roofline: a call that reads the weights `s` times and does `F` useful FLOPs cannot finish faster
than max(s * weight_bytes / bandwidth, F / peak), with the peak matmul FLOP/s and the copy
bandwidth measured on this machine (shared.bench.machine_fingerprint). `roofline_fraction` is that
bound over the measured median time: 1.0 is the hardware limit. Small models sit in cache, so a
batch-1 row can exceed 1.0 against DRAM bandwidth; that is reported as measured.

The model is a Gboard-sized reference (Hard et al. 2018: one layer, 670 units, 10K vocabulary,
96-dim embeddings tied to the output through a 670 -> 96 projection): 3.1M parameters. Gboard's
CIFG recurs through the 96-dim projection (1.4M parameters); `nn.LSTM(proj_size=...)` has no
LSTMCell or ONNX LSTM equivalent, so the reference recurs on the full 670-dim state, which costs
about 2x the FLOPs per step. It is trained briefly on generated text so that top-1 changes under
quantization mean something. When the mobile-keyboard case's `KeyboardLSTM` is installed, the
core rungs also run on it, at the same sizes and with the same trained weights.

`--threads N` runs the ladder with N threads (default: all cores). On a machine that other work
shares, `--threads 1` gives the stable numbers; the threads rung then compares against all cores.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from shared.lifecycle import run_folder, torch_threads

NAME = "rnn"
SUMMARY = "RNN throughput ladder: naive -> cached -> batched -> ORT -> int8 (-> GPU), one run"


# ----------------------------------------------------------------------------- configuration


@dataclass
class RnnBenchConfig:
    """Sizes of one ladder run. The full preset is the Gboard-sized model."""

    vocab: int = 10_000  # words; Gboard's next-word vocabulary
    embed: int = 96  # embedding and projection width (Gboard: 96)
    hidden: int = 670  # LSTM units (Gboard: 670)
    prefix_len: int = 32  # tokens of context recomputed per keystroke on the naive path
    batches: tuple[int, ...] = (1, 4, 16, 64, 256)  # concurrent requests per step
    big_batch: int = 64  # the batch used for the compiled / ORT / int8 / threads rungs
    n_seqs: int = 64  # sequences per call on the variable-length rung
    min_len: int = 2  # shortest sequence (tokens) on the variable-length rung
    max_len: int = 64  # longest sequence (tokens)
    bucket_size: int = 32  # sequences per length bucket
    arrival_requests: int = 400  # requests in the dynamic-batching simulation
    max_wait_ms: float = 2.0  # how long the dynamic batcher waits to fill a batch
    train_tokens: int = 300_000  # generated training text
    train_steps: int = 60  # Adam steps (about 0.2-0.5 s each on 2 idle cores)
    train_batch: int = 32
    train_len: int = 16
    eval_tokens: int = 16_384  # held-out tokens for the top-1 comparison
    repeats: int = 15  # timed calls per row (after warm-up)
    min_time_s: float = 0.4  # at least this long per row, so fast rows get many calls
    compile: bool = True  # try torch.compile (slow to build; full run only)
    keyboard: bool = True  # also ladder the mobile-keyboard case's KeyboardLSTM when installed


PRESETS = {
    "full": RnnBenchConfig(),
    "quick": RnnBenchConfig(
        vocab=500,
        embed=16,
        hidden=48,
        prefix_len=8,
        batches=(1, 8),
        big_batch=8,
        n_seqs=8,
        max_len=12,
        bucket_size=4,
        arrival_requests=40,
        train_tokens=4_000,
        train_steps=3,
        train_batch=8,
        train_len=8,
        eval_tokens=512,
        repeats=2,
        min_time_s=0.0,
        compile=False,
        keyboard=False,
    ),
}


# ----------------------------------------------------------------------------- the models


class RnnBenchLSTM(nn.Module):
    """Gboard-sized LSTM language model: tied embeddings through a projection.

    tokens (B, T) -> embed (B, T, E) -> LSTM (B, T, H) -> proj (B, T, E) -> tied head (B, T, V).
    Same interface as the keyboard case's `KeyboardLSTM`: forward(tokens, state) and step().
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, num_layers: int = 1):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.proj = nn.Linear(hidden_dim, embed_dim)
        # Tied output: a Linear (so dynamic int8 quantizes it) sharing the embedding matrix.
        self.head = nn.Linear(embed_dim, vocab_size, bias=False)
        self.head.weight = self.embedding.weight

    def logits_from_hidden(self, y: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(y))  # (..., H) -> (..., E) -> (..., V)

    def forward(self, tokens: torch.Tensor, state=None):
        x = self.embedding(tokens)  # (B, T, E)
        y, state = self.lstm(x, state)  # (B, T, H); h, c: (L, B, H)
        return self.logits_from_hidden(y), state  # (B, T, V)

    def step(self, token: torch.Tensor, state):
        logits, state = self.forward(token[:, None], state)  # (B, 1, V)
        return logits[:, 0], state  # (B, V)


class RnnBenchCellStep(nn.Module):
    """One step through `nn.LSTMCell` sharing the reference model's weights.

    Why: on CPU, `nn.LSTM` re-lays out its weights on every call, which dominates a batch-1 step;
    `LSTMCell` is two GEMMs and the gate arithmetic.
    """

    def __init__(self, model: RnnBenchLSTM):
        super().__init__()
        lstm = model.lstm
        self.model = model
        self.cell = nn.LSTMCell(lstm.input_size, lstm.hidden_size)
        self.cell.weight_ih = lstm.weight_ih_l0
        self.cell.weight_hh = lstm.weight_hh_l0
        self.cell.bias_ih = lstm.bias_ih_l0
        self.cell.bias_hh = lstm.bias_hh_l0

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        x = self.model.embedding(token)  # (B, E)
        h1, c1 = self.cell(x, (h[0], c[0]))  # (B, H) each
        return self.model.logits_from_hidden(h1), h1[None], c1[None]  # (B, V), (1, B, H) x 2


class RnnBenchStep(nn.Module):
    """(token (B,), h (1, B, H), c (1, B, H)) -> (logits (B, V), h, c): the exportable step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, (h1, c1) = self.model.step(token, (h, c))
        return logits, h1, c1


class RnnBenchQuantWrapper(nn.Module):
    """Holds a model as a submodule so `quantize_dynamic` swaps its nn.LSTM and nn.Linear.

    `quantize_dynamic` replaces children of the module it is given; handed a bare `nn.LSTM` it
    returns it unchanged (and fp32), which is easy to miss.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, state=None):
        return self.model(tokens, state)

    def step(self, token, state):
        return self.model.step(token, state)


def _quantize_int8(model: nn.Module) -> nn.Module:
    import warnings

    wrapped = RnnBenchQuantWrapper(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's migration notice
        q = torch.ao.quantization.quantize_dynamic(wrapped, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    quantized = [m for m in q.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    if not any(type(m).__name__ == "LSTM" for m in quantized) or any(
        type(m) is nn.LSTM for m in q.modules()
    ):
        raise RuntimeError("quantize_dynamic left the LSTM in fp32")
    return q.eval()


def _model_bytes(model: nn.Module) -> int:
    """Serialized size of the state dict (int8 packed weights count as int8)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def _flops_per_token(vocab: int, embed: int, hidden: int) -> float:
    """FLOPs of one step: LSTM 8·H·(E+H) (4 gates, 2 FLOPs per MAC), proj 2·H·E, head 2·E·V."""
    return 8.0 * hidden * (embed + hidden) + 2.0 * hidden * embed + 2.0 * embed * vocab


def _copy_weights(src: RnnBenchLSTM, dst: nn.Module) -> bool:
    """Load the reference's weights into a same-shaped model (the keyboard's names), if possible.

    Maps embedding -> embed (or embedding), lstm.*, proj.*; a head bias is zeroed. Returns False
    (and leaves `dst` untouched) when any name or shape does not line up.
    """
    theirs = dst.state_dict()
    mine = src.state_dict()
    new = {}
    for k, v in theirs.items():
        cand = [k, k.replace("embed.", "embedding."), k.replace("embedding.", "embed.")]
        if k == "head.weight":
            cand.append("embedding.weight")
        got = next((mine[c] for c in cand if c in mine), None)
        if got is None and k == "head.bias":
            got = torch.zeros_like(v)
        if got is None or got.shape != v.shape:
            return False
        new[k] = got.clone()
    dst.load_state_dict(new)
    return True


def _keyboard_class():
    """The keyboard case's KeyboardLSTM, or None when that case is not installed."""
    import importlib
    import importlib.util

    try:
        if importlib.util.find_spec("cases.mobile_keyboard.model") is None:
            return None
        return getattr(importlib.import_module("cases.mobile_keyboard.model"), "KeyboardLSTM", None)
    except Exception:  # a half-written case must not break the benchmark
        return None


# ----------------------------------------------------------------------------- generated text


def make_text(vocab: int, n_tokens: int, seed: int = 0) -> np.ndarray:
    """A word stream with Zipf unigrams and a sparse, skewed successor table per word.

    Each word has 8 likely successors (Zipf weights over them); 15% of the time the next word is
    drawn from the unigram curve instead. A language model can learn much of it in seconds, so
    top-1 accuracy is well above chance and sensitive to quantization error.
    """
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    unigram = 1.0 / ranks**1.1
    unigram /= unigram.sum()
    k = 8
    succ = rng.choice(vocab, size=(vocab, k), p=unigram)  # (V, k) successor ids
    succ_p = 1.0 / np.arange(1, k + 1) ** 1.5
    succ_p /= succ_p.sum()
    cols = rng.choice(k, size=n_tokens, p=succ_p)
    jumps = rng.random(n_tokens) < 0.15
    uni = rng.choice(vocab, size=n_tokens, p=unigram)
    out = np.empty(n_tokens, dtype=np.int64)
    cur = int(uni[0])
    for i in range(n_tokens):
        cur = int(uni[i]) if jumps[i] else int(succ[cur, cols[i]])
        out[i] = cur
    return out


def train_quickly(model: nn.Module, text: np.ndarray, cfg: RnnBenchConfig, seed: int) -> float:
    """A few Adam steps of next-token cross-entropy; returns the last loss (nats).

    Adam is written out (eight lines) because `torch.optim` imports torch._dynamo on first use,
    which costs about 6 s of start-up on 2 cores: more than the whole --quick run.
    """
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(text)
    params = [p for p in model.parameters() if p.requires_grad]
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.999, 1e-8
    model.train()
    loss = torch.tensor(float("nan"))
    n_starts = len(data) - cfg.train_len - 1
    step = 0
    for _ in range(cfg.train_steps):
        starts = torch.randint(0, n_starts, (cfg.train_batch,), generator=gen)
        idx = starts[:, None] + torch.arange(cfg.train_len + 1)  # (B, T+1)
        batch = data[idx]
        logits, _ = model(batch[:, :-1])  # (B, T, V)
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            step += 1
            for p, g, a, v in zip(params, grads, m1, m2, strict=True):
                a.mul_(beta1).add_(g, alpha=1 - beta1)  # first moment
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # second moment
                denom = (v / (1 - beta2**step)).sqrt_().add_(eps)
                p.addcdiv_(a, denom, value=-lr / (1 - beta1**step))
    model.eval()
    return float(loss.detach())


# ----------------------------------------------------------------------------- measuring


@dataclass
class _Ctx:
    """What every row needs: the sizes, the machine's peaks and where rows go."""

    cfg: RnnBenchConfig
    flops_per_token: float
    fp32_bytes: int
    peak_gflops: float  # all cores, fp32 matmul
    peak_gflops_1t: float  # one thread
    bandwidth_gbs: float
    rows: list[dict]
    model_name: str
    top1_fp32_pct: float | None = None  # set by the int8 rung


def _time(
    fn: Callable[[], Any],
    cfg: RnnBenchConfig,
    items: int,
    repeats: int | None = None,
    warmup: int = 2,
):
    from shared.bench import time_fn

    return time_fn(
        fn,
        warmup=warmup,
        repeats=repeats if repeats is not None else cfg.repeats,
        min_time_s=cfg.min_time_s,
        items_per_call=items,
    )


def _add_row(
    ctx: _Ctx,
    rung: str,
    name: str,
    timing,
    *,
    batch: int,
    tokens_per_call: int,
    weight_reads: int,
    model_bytes: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
    **extra: Any,
) -> dict:
    """One ladder row; its roofline fraction is filled in by `finalize_roofline` at the end."""
    model_bytes = ctx.fp32_bytes if model_bytes is None else model_bytes
    threads = torch.get_num_threads() if threads is None else threads
    row = {
        "model": ctx.model_name,
        "rung": rung,
        "name": name,
        "device": device,
        "batch": batch,
        "threads": threads,
        "tokens_per_s": tokens_per_call / timing.median_s,
        "p50_ms": timing.p50_ms,
        "p99_ms": timing.p99_ms,
        "model_bytes": int(model_bytes),
        "roofline_fraction": None,
        "bound": None,
        "gflops": tokens_per_call * ctx.flops_per_token / timing.median_s / 1e9,
        "gflop_per_call": tokens_per_call * ctx.flops_per_token / 1e9,
        "gb_read_per_call": weight_reads * model_bytes / 1e9,
        "max_abs_err": None,
        "rel_err": None,
        "top1_delta_pts": None,
    }
    row.update(extra)
    ctx.rows.append(row)
    return row


def finalize_roofline(rows: list[dict], peak: float, peak_1t: float, bw: float) -> None:
    """roofline_fraction = max(GFLOP / peak, GB / bandwidth) / measured time, per CPU row.

    Done once at the end so every row uses the same (best measured) peaks.
    """
    for r in rows:
        if r.get("device") != "cpu" or not r.get("tokens_per_s") or "gflop_per_call" not in r:
            continue
        seconds = r["gflop_per_call"] / r["gflops"]  # the measured median time per call
        t_compute = r["gflop_per_call"] / (peak if r["threads"] > 1 else peak_1t)
        t_memory = r["gb_read_per_call"] / bw
        r["roofline_fraction"] = max(t_compute, t_memory) / seconds
        r["bound"] = "compute" if t_compute >= t_memory else "memory"


def _find(rows: list[dict], model: str, name: str) -> dict | None:
    for r in rows:
        if r["model"] == model and r["name"] == name:
            return r
    return None


def _compare(rows: list[dict], model: str, name: str, against: str) -> None:
    """Set row `name`'s speedup against row `against` (tokens/s ratio)."""
    r, a = _find(rows, model, name), _find(rows, model, against)
    if r is not None and a is not None:
        r["vs"] = against
        r["speedup"] = r["tokens_per_s"] / a["tokens_per_s"]


def _errors(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """max |out - ref| and the relative error ||out - ref||_2 / ||ref||_2 over the logits."""
    diff = (out.float() - ref.float()).reshape(-1)
    return {
        "max_abs_err": float(diff.abs().max()),
        "rel_err": float(diff.norm() / ref.float().reshape(-1).norm().clamp_min(1e-12)),
    }


def _top1_step_fn(step: Callable, tokens: torch.Tensor, hidden: int) -> float:
    """Top-1 next-token accuracy of a step function run over held-out rows (B, T)."""
    b, t = tokens.shape
    h = torch.zeros(1, b, hidden)
    c = torch.zeros(1, b, hidden)
    correct = 0
    for i in range(t - 1):
        logits, h, c = step(tokens[:, i], h, c)
        correct += int((torch.as_tensor(logits).argmax(-1) == tokens[:, i + 1]).sum())
    return 100.0 * correct / (b * (t - 1))


def _ort_step(session) -> Callable:
    def step(tok, h, c):
        out = session.run(None, {"token": tok.numpy(), "h": h.numpy(), "c": c.numpy()})
        return torch.from_numpy(out[0]), torch.from_numpy(out[1]), torch.from_numpy(out[2])

    return step


# ----------------------------------------------------------------------------- the ladder


def _dynamic_batching(
    step_fn: Callable[[int], None], arrivals_s: np.ndarray, max_batch: int, max_wait_s: float
) -> dict[str, float]:
    """Discrete-event simulation of a batching server; service times are real model calls.

    Requests arrive at `arrivals_s` (seconds). When the server is free it takes what has arrived,
    up to `max_batch`; if that is less than `max_batch`, it waits until the oldest request has
    waited `max_wait_s` or the batch fills, whichever comes first. `step_fn(b)` runs one real
    batch-`b` step and the virtual clock advances by its measured duration.
    """
    n = len(arrivals_s)
    done = np.empty(n)
    clock, i, batches = 0.0, 0, []
    while i < n:
        clock = max(clock, arrivals_s[i])
        if max_batch > 1:
            deadline = arrivals_s[i] + max_wait_s
            j_full = i + max_batch - 1  # the arrival that would fill the batch
            fill_time = arrivals_s[j_full] if j_full < n else math.inf
            clock = max(clock, min(deadline, fill_time))
        j = i
        while j < n and j - i < max_batch and arrivals_s[j] <= clock:
            j += 1
        t0 = time.perf_counter()
        step_fn(j - i)
        clock += time.perf_counter() - t0
        done[i:j] = clock
        batches.append(j - i)
        i = j
    lat_ms = (done - arrivals_s) * 1e3
    return {
        "tokens_per_s": n / (done[-1] - arrivals_s[0]),
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "mean_batch": float(np.mean(batches)),
    }


@dataclass
class _LadderState:
    """What the rungs share: the model, a realistic recurrent state, the step implementations."""

    model: nn.Module
    ctx: _Ctx
    held: torch.Tensor  # (N, T) held-out token rows
    h_big: torch.Tensor  # (1, big, H) state after the real prefix of `big` rows
    c_big: torch.Tensor  # (1, big, H)
    tok_big: torch.Tensor  # (big,) the next token of each of those rows
    step_impls: dict[str, nn.Module] = field(default_factory=dict)  # impl name -> batched step
    best_impl_at: dict[int, str] = field(default_factory=dict)  # batch size -> fastest impl


def run_ladder(
    model: nn.Module,
    ctx: _Ctx,
    held: torch.Tensor,
    workdir: Path,
    reference_extras: bool,
    progress,
) -> None:
    """Every CPU rung on one model. `reference_extras` adds the rungs that need its internals."""
    cfg = ctx.cfg
    L = cfg.prefix_len
    all_threads = torch.get_num_threads()
    # A realistic state: run the real text through, so logits are not from an all-zero state.
    with torch.inference_mode():
        _, (h_big, c_big) = model(held[: cfg.big_batch, :L])  # (1, big, H)
    s = _LadderState(model, ctx, held, h_big, c_big, held[: cfg.big_batch, L])

    with torch.inference_mode():
        _rung_naive(s)
        progress.update(1)
        _rung_cached(s, reference_extras)
        progress.update(1)
        _rung_batched(s)
        progress.update(1)
        _rung_arrivals(s)
        progress.update(1)
        if reference_extras:  # 4. variable lengths (needs the model's parts: reference only)
            _variable_lengths(model, ctx, held)
        progress.update(1)
        step = _rung_compiled(s, reference_extras)
        progress.update(1)

    # 6-8. onnxruntime fp32 and int8, PyTorch int8, threads.
    try:
        _ort_and_int8(
            model,
            ctx,
            held,
            workdir,
            s.step_impls["nn.LSTM"],
            h_big,
            c_big,
            s.tok_big,
            all_threads,
            progress,
            threads_rung=reference_extras,
            best_big_step=step,
        )
    except ImportError as e:  # e.g. a GPU machine without onnxruntime
        ctx.rows.append(_failed_row(ctx, "6 ort", "ort_and_int8", e))


def _rung_naive(s: _LadderState) -> None:
    """1. naive: one request at a time, the whole prefix recomputed at every keystroke."""
    cfg, L = s.ctx.cfg, s.ctx.cfg.prefix_len
    prefix = s.held[:1, :L]  # (1, L) one user's context

    def naive():
        for t in range(1, L + 1):
            s.model(prefix[:, :t])  # (1, t, V), only the last position is used

    # The slowest row by far (L full forwards per call): few repeats, no min time.
    t = _time(naive, replace(cfg, min_time_s=0.0), items=L, repeats=3, warmup=1)
    _add_row(
        s.ctx,
        "1 naive",
        "naive_recompute",
        t,
        batch=1,
        tokens_per_call=L,
        weight_reads=L * (L + 1) // 2,
        impl="nn.LSTM",
    )
    t = _time(lambda: s.model(prefix), cfg, items=1)
    _add_row(
        s.ctx,
        "1 naive",
        f"keystroke_recompute_{L}",
        t,
        batch=1,
        tokens_per_call=1,
        weight_reads=L,
        impl="nn.LSTM",
    )


def _rung_cached(s: _LadderState, reference_extras: bool) -> None:
    """2. cached state, one step per keystroke (nn.LSTM, and LSTMCell for the reference)."""
    ctx, cfg, name = s.ctx, s.ctx.cfg, s.ctx.model_name
    h1, c1 = s.h_big[:, :1].clone(), s.c_big[:, :1].clone()
    tok1 = s.tok_big[:1]

    def row(label: str, t, impl: str, **extra) -> None:
        one = {"batch": 1, "tokens_per_call": 1, "weight_reads": 1}
        _add_row(ctx, "2 cached", label, t, impl=impl, **one, **extra)

    row("cached_step", _time(lambda: s.model.step(tok1, (h1, c1)), cfg, items=1), "nn.LSTM")
    _compare(ctx.rows, name, "cached_step", "naive_recompute")
    s.step_impls["nn.LSTM"] = RnnBenchStep(s.model)
    if not reference_extras:
        return
    cell = RnnBenchCellStep(s.model).eval()
    s.step_impls["LSTMCell"] = cell
    t = _time(lambda: cell(tok1, h1, c1), cfg, items=1)
    ref = s.model.step(tok1, (h1, c1))[0]
    row("cached_step_lstmcell", t, "LSTMCell", **_errors(ref, cell(tok1, h1, c1)[0]))
    _compare(ctx.rows, name, "cached_step_lstmcell", "cached_step")


def _rung_batched(s: _LadderState) -> None:
    """3. batching concurrent requests: the faster step implementation at each batch size."""
    ctx, cfg, name = s.ctx, s.ctx.cfg, s.ctx.model_name
    big, L = cfg.big_batch, cfg.prefix_len
    for b in cfg.batches:
        tok, hb, cb = s.held[:b, L], s.h_big[:, :b].clone(), s.c_big[:, :b].clone()
        if b > big:
            reps = -(-b // big)
            tok = s.held[:big, L].repeat(reps)[:b]
            hb, cb = s.h_big.repeat(1, reps, 1)[:, :b], s.c_big.repeat(1, reps, 1)[:, :b]
        best = None
        for impl, mod in s.step_impls.items():
            t = _time(lambda mod=mod, tok=tok, hb=hb, cb=cb: mod(tok, hb, cb), cfg, items=b)
            if best is None or t.median_s < best[1].median_s:
                best = (impl, t)
        s.best_impl_at[b] = best[0]
        _add_row(
            ctx,
            "3 batched",
            f"batch_{b}",
            best[1],
            batch=b,
            tokens_per_call=b,
            weight_reads=1,
            impl=best[0],
        )
        if b > 1:
            prev = cfg.batches[cfg.batches.index(b) - 1]
            _compare(ctx.rows, name, f"batch_{b}", f"batch_{prev}")


def _rung_arrivals(s: _LadderState) -> None:
    """3b. dynamic batching of requests that arrive apart (Poisson), against one at a time.

    Offered load: 3x what one-at-a-time serves (a real backlog without batching), capped at half
    of what the largest batch serves (so the batching server keeps up).
    """
    ctx, cfg, name = s.ctx, s.ctx.cfg, s.ctx.model_name
    big, L = cfg.big_batch, cfg.prefix_len
    b1 = max(
        r["tokens_per_s"]
        for r in ctx.rows
        if r["model"] == name and r["batch"] == 1 and r["rung"] in ("2 cached", "3 batched")
    )
    b_max = _find(ctx.rows, name, f"batch_{max(cfg.batches)}")["tokens_per_s"]
    rate = min(3.0 * b1, 0.5 * b_max) if b_max > 2 * b1 else 3.0 * b1
    arrivals = np.cumsum(np.random.default_rng(0).exponential(1.0 / rate, cfg.arrival_requests))
    max_b = max(cfg.batches)
    pool_tok = s.held[:big, L].repeat(-(-max_b // big))[:max_b]
    pool_h = s.h_big.repeat(1, -(-max_b // big), 1)[:, :max_b].contiguous()
    pool_c = s.c_big.repeat(1, -(-max_b // big), 1)[:, :max_b].contiguous()

    # Like a real batcher, pad a batch up to the next allowed size (powers of two), so only a
    # few shapes exist; each is warmed up first (oneDNN builds kernels per new shape).
    allowed = [2**k for k in range(int(math.log2(max_b)) + 1)] + [max_b]

    def run_batch(b):
        size = min(a for a in allowed if a >= b)
        impl = s.best_impl_at[min(cfg.batches, key=lambda x: abs(x - size))]
        s.step_impls[impl](pool_tok[:size], pool_h[:, :size], pool_c[:, :size])

    for size in allowed:
        for _ in range(2):
            run_batch(size)

    for label, mb in (("arrivals_one_at_a_time", 1), ("arrivals_dynamic_batching", max_b)):
        sim = _dynamic_batching(run_batch, arrivals, mb, cfg.max_wait_ms / 1e3)
        fake = type(
            "T",
            (),
            {
                "median_s": 1.0 / sim["tokens_per_s"],
                "p50_ms": sim["p50_ms"],
                "p99_ms": sim["p99_ms"],
            },
        )
        _add_row(
            ctx,
            "3 batched",
            label,
            fake,
            batch=mb,
            tokens_per_call=1,
            weight_reads=1 / max(sim["mean_batch"], 1.0),
            impl="simulated server",
            mean_batch=sim["mean_batch"],
            offered_rps=rate,
        )
    _compare(ctx.rows, name, "arrivals_dynamic_batching", "arrivals_one_at_a_time")


def _rung_compiled(s: _LadderState, reference_extras: bool) -> nn.Module:
    """5. compiled: TorchScript (trace) and torch.compile of the batched step.

    Returns the step the compiled rows were built from (the fastest at the big batch).
    """
    ctx, cfg, name = s.ctx, s.ctx.cfg, s.ctx.model_name
    big = cfg.big_batch
    step = s.step_impls[s.best_impl_at.get(big, "nn.LSTM")]
    args = (s.tok_big, s.h_big.clone(), s.c_big.clone())
    ref_big = step(*args)[0]
    base_name = f"batch_{big}" if big in cfg.batches else f"batch_{cfg.batches[-1]}"

    def row(label: str, t, impl: str, out: torch.Tensor, **extra) -> None:
        big_batch = {"batch": big, "tokens_per_call": big, "weight_reads": 1}
        errors = _errors(ref_big, out)
        _add_row(ctx, "5 compiled", label, t, impl=impl, **big_batch, **extra, **errors)
        _compare(ctx.rows, name, label, base_name)

    try:
        traced = torch.jit.trace(step, args, check_trace=False)
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        t = _time(lambda: traced(*args), cfg, items=big)
        row(f"torchscript_b{big}", t, "jit.trace+freeze", traced(*args)[0])
    except Exception as e:  # reported, not hidden
        ctx.rows.append(_failed_row(ctx, "5 compiled", f"torchscript_b{big}", e))
    if not (cfg.compile and reference_extras):
        return step
    try:
        t0 = time.perf_counter()
        comp = torch.compile(step, dynamic=False)
        out = comp(*args)[0]
        compile_s = time.perf_counter() - t0
        t = _time(lambda: comp(*args), cfg, items=big)
        row(f"torch_compile_b{big}", t, "torch.compile (inductor)", out, compile_s=compile_s)
    except Exception as e:
        ctx.rows.append(_failed_row(ctx, "5 compiled", f"torch_compile_b{big}", e))
    return step


def _failed_row(ctx: _Ctx, rung: str, name: str, err: Exception, device: str = "cpu") -> dict:
    return {
        "model": ctx.model_name,
        "rung": rung,
        "name": name,
        "device": device,
        "tokens_per_s": None,
        "note": f"failed: {type(err).__name__}: {str(err)[:160]}",
    }


def _variable_lengths(model: RnnBenchLSTM, ctx: _Ctx, held: torch.Tensor) -> None:
    """Score n_seqs sequences of mixed lengths: padded vs packed vs length-bucketed."""
    from torch.nn.utils.rnn import pack_padded_sequence

    cfg = ctx.cfg
    rng = np.random.default_rng(1)
    # Message lengths are skewed: many short, a few long (geometric, mean ~ max_len / 4).
    lengths = np.clip(rng.geometric(4.0 / cfg.max_len, cfg.n_seqs), cfg.min_len, cfg.max_len)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    t_max = int(lengths.max())
    n_tok = int(lengths.sum())
    rows_needed = cfg.n_seqs
    seqs = held[:rows_needed, :t_max].clone()  # (N, Tmax); positions past each length are padding
    mask = torch.arange(t_max)[None, :] < lengths[:, None]  # (N, Tmax)

    def padded():
        logits, _ = model(seqs)  # (N, Tmax, V): padding positions computed and thrown away
        return logits[mask]  # (n_tok, V)

    def packed():
        x = model.embedding(seqs)  # (N, Tmax, E)
        p = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        y, _ = model.lstm(p)  # PackedSequence, data: (n_tok, H)
        return model.logits_from_hidden(y.data)  # (n_tok, V), only real tokens

    order = torch.argsort(lengths, descending=True)
    buckets = [order[i : i + cfg.bucket_size] for i in range(0, cfg.n_seqs, cfg.bucket_size)]

    def bucketed():
        outs = []
        for idx in buckets:
            t_b = int(lengths[idx].max())
            logits, _ = model(seqs[idx, :t_b])  # (b, t_b, V): little padding inside a bucket
            outs.append(logits[mask[idx, :t_b]])
        return torch.cat(outs)

    # Weight reads per call: one per time step (per bucket when bucketed).
    steps = {
        "padded": t_max,
        "packed": t_max,
        "bucketed": sum(int(lengths[i].max()) for i in buckets),
    }
    for label, fn in (("padded", padded), ("packed", packed), ("bucketed", bucketed)):
        t = _time(fn, replace(cfg, min_time_s=0.0), items=n_tok, repeats=5, warmup=1)
        _add_row(
            ctx,
            "4 lengths",
            f"lengths_{label}",
            t,
            batch=cfg.n_seqs,
            tokens_per_call=n_tok,
            weight_reads=steps[label],
            impl=label,
            padding_fraction=1.0 - n_tok / (cfg.n_seqs * t_max) if label == "padded" else None,
        )
    _compare(ctx.rows, ctx.model_name, "lengths_packed", "lengths_padded")
    _compare(ctx.rows, ctx.model_name, "lengths_bucketed", "lengths_padded")


@dataclass
class _Runtimes:
    """The exported and quantized steps that rungs 6-8 time, with the reference outputs."""

    batch_1: tuple  # (token (1,), h (1, 1, H), c (1, 1, H))
    batch_b: tuple  # (token (big,), h (1, big, H), c (1, big, H))
    refs: dict[int, torch.Tensor]  # batch size -> fp32 logits of the torch step
    base_top1: float  # held-out top-1 of the fp32 torch step, percent
    paths: dict[str, Path]  # "ort_fp32" / "ort_int8" -> ONNX file
    sessions: dict[tuple[str, int], Any]  # (label, threads) -> onnxruntime session
    feeds: dict[int, dict[str, np.ndarray]]  # batch size -> session inputs
    ort_top1: dict[str, float]  # label -> held-out top-1, percent
    q_step: nn.Module  # PyTorch dynamic int8 step
    q_bytes: int
    q_top1: float


def _ort_and_int8(
    model,
    ctx,
    held,
    workdir,
    step_mod,
    h_big,
    c_big,
    tok_big,
    all_threads,
    progress,
    threads_rung=True,
    best_big_step=None,
) -> None:
    """6. onnxruntime fp32, 7. int8 (onnxruntime and PyTorch), 8. threads (unless disabled)."""
    rt = _build_runtimes(model, ctx, held, workdir, step_mod, h_big, c_big, tok_big, all_threads)
    progress.update(1)
    _rung_ort_int8(ctx, rt, all_threads)
    progress.update(1)
    if _other_threads(all_threads) != all_threads and threads_rung:
        step_big = best_big_step if best_big_step is not None else step_mod
        _rung_threads(ctx, rt, all_threads, step_big)
    progress.update(1)


def _build_runtimes(
    model, ctx, held, workdir, step_mod, h_big, c_big, tok_big, all_threads
) -> _Runtimes:
    """Export the step to ONNX (fp32, then dynamic int8), open sessions, quantize the torch model,
    and measure each one's held-out top-1 against the fp32 step's."""
    from shared.onnx_utils import export_onnx, make_session, quantize_dynamic_onnx

    cfg, name, H = ctx.cfg, ctx.model_name, ctx.cfg.hidden
    batch_1 = (tok_big[:1], h_big[:, :1].clone(), c_big[:, :1].clone())
    batch_b = (tok_big, h_big.clone(), c_big.clone())
    with torch.inference_mode():
        refs = {1: step_mod(*batch_1)[0], cfg.big_batch: step_mod(*batch_b)[0]}
        base_top1 = _top1_step_fn(lambda t, h, c: step_mod(t, h, c), held, H)
    ctx.top1_fp32_pct = base_top1

    fp32_path = workdir / f"{name}_step_fp32.onnx"
    export_onnx(
        step_mod,
        batch_b,
        fp32_path,
        input_names=["token", "h", "c"],
        output_names=["logits", "h_out", "c_out"],
        dynamic_axes={
            "token": {0: "batch"},
            "h": {1: "batch"},
            "c": {1: "batch"},
            "logits": {0: "batch"},
            "h_out": {1: "batch"},
            "c_out": {1: "batch"},
        },
    )
    paths = {
        "ort_fp32": fp32_path,
        "ort_int8": quantize_dynamic_onnx(fp32_path, workdir / f"{name}_step_int8.onnx"),
    }
    sessions = {
        (label, threads): make_session(path, threads=threads, spinning=False)
        for label, path in paths.items()
        for threads in sorted({_other_threads(all_threads), all_threads})
    }
    feeds = {
        b: {"token": args[0].numpy(), "h": args[1].numpy(), "c": args[2].numpy()}
        for b, args in ((1, batch_1), (cfg.big_batch, batch_b))
    }
    with torch.inference_mode():
        q_model = _quantize_int8(_clone(model))
        q_step = RnnBenchStep(q_model.model)
        q_bytes = _model_bytes(q_model)
        q_top1 = _top1_step_fn(lambda t, h, c: q_step(t, h, c), held, H)
    ort_top1 = {
        label: _top1_step_fn(_ort_step(sessions[(label, all_threads)]), held, H) for label in paths
    }
    return _Runtimes(
        batch_1, batch_b, refs, base_top1, paths, sessions, feeds, ort_top1, q_step, q_bytes, q_top1
    )


def _rung_ort_int8(ctx, rt: _Runtimes, all_threads: int) -> None:
    """6-7. onnxruntime fp32 and int8, PyTorch int8, at batch 1 and the big batch."""
    cfg, name, big = ctx.cfg, ctx.model_name, ctx.cfg.big_batch
    for b, args in ((1, rt.batch_1), (big, rt.batch_b)):
        ref = rt.refs[b]
        for label in ("ort_fp32", "ort_int8"):
            sess = rt.sessions[(label, all_threads)]
            out = torch.from_numpy(sess.run(None, rt.feeds[b])[0])
            t = _time(lambda sess=sess, b=b: sess.run(None, rt.feeds[b]), cfg, items=b)
            _add_row(
                ctx,
                "6 ort" if label == "ort_fp32" else "7 int8",
                f"{label}_b{b}",
                t,
                batch=b,
                tokens_per_call=b,
                weight_reads=1,
                model_bytes=rt.paths[label].stat().st_size,
                impl=f"onnxruntime {label[4:]}",
                top1_delta_pts=rt.ort_top1[label] - rt.base_top1,
                **_errors(ref, out),
            )
        with torch.inference_mode():
            out = rt.q_step(*args)[0]
            t = _time(lambda args=args: rt.q_step(*args), cfg, items=b)
        _add_row(
            ctx,
            "7 int8",
            f"torch_int8_b{b}",
            t,
            batch=b,
            tokens_per_call=b,
            weight_reads=1,
            model_bytes=rt.q_bytes,
            impl="quantize_dynamic (wrapped)",
            top1_delta_pts=rt.q_top1 - rt.base_top1,
            **_errors(ref, out),
        )
    one = "cached_step_lstmcell" if _find(ctx.rows, name, "cached_step_lstmcell") else "cached_step"
    best_1 = max(
        (r for r in ctx.rows if r["model"] == name and r["name"] in (one, "cached_step")),
        key=lambda r: r["tokens_per_s"],
    )["name"]
    base_big = f"batch_{big}" if _find(ctx.rows, name, f"batch_{big}") else None
    _compare(ctx.rows, name, "ort_fp32_b1", best_1)
    _compare(ctx.rows, name, "ort_int8_b1", "ort_fp32_b1")
    _compare(ctx.rows, name, "torch_int8_b1", best_1)
    if base_big:
        _compare(ctx.rows, name, f"ort_fp32_b{big}", base_big)
        _compare(ctx.rows, name, f"torch_int8_b{big}", base_big)
    _compare(ctx.rows, name, f"ort_int8_b{big}", f"ort_fp32_b{big}")


def _rung_threads(ctx, rt: _Runtimes, all_threads: int, step_big: nn.Module) -> None:
    """8. threads: the batched paths on one thread vs all cores (whichever the run did not use)."""
    cfg, name, big = ctx.cfg, ctx.model_name, ctx.cfg.big_batch
    other = _other_threads(all_threads)
    tag = f"{other}thread" if other == 1 else f"{other}threads"
    for label in ("ort_fp32", "ort_int8"):
        sess = rt.sessions[(label, other)]
        t = _time(lambda sess=sess: sess.run(None, rt.feeds[big]), cfg, items=big)
        _add_row(
            ctx,
            "8 threads",
            f"{label}_b{big}_{tag}",
            t,
            batch=big,
            threads=other,
            tokens_per_call=big,
            weight_reads=1,
            model_bytes=rt.paths[label].stat().st_size,
            impl=f"onnxruntime {label[4:]}",
        )
        _compare(ctx.rows, name, f"{label}_b{big}_{tag}", f"{label}_b{big}")
    with torch_threads(other), torch.inference_mode():
        t = _time(lambda: step_big(*rt.batch_b), cfg, items=big)
    _add_row(
        ctx,
        "8 threads",
        f"torch_fp32_b{big}_{tag}",
        t,
        batch=big,
        threads=other,
        tokens_per_call=big,
        weight_reads=1,
        impl="LSTMCell" if isinstance(step_big, RnnBenchCellStep) else "nn.LSTM",
    )
    if _find(ctx.rows, name, f"batch_{big}"):
        _compare(ctx.rows, name, f"torch_fp32_b{big}_{tag}", f"batch_{big}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _other_threads(threads: int) -> int:
    """The thread count the threads rung compares against: 1, or all cores for a 1-thread run."""
    return 1 if threads > 1 else _cores()


def _clone(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).eval()


# ----------------------------------------------------------------------------- GPU rows


def run_gpu(model: nn.Module, ctx: _Ctx, held: torch.Tensor) -> None:
    """cuDNN fp32/fp16/bf16 steps at large batches, a sequence forward, and a CUDA-graph step.

    Runs only when CUDA is present; each row is guarded so one unsupported mode is reported as a
    failed row, not a crash. The roofline uses the fp32 CPU peaks, so it is left empty here.
    """
    import copy

    cfg = ctx.cfg
    dev = torch.device("cuda")
    H, L = cfg.hidden, cfg.prefix_len

    def sync_timed(fn, items, repeats=None):
        def call():
            fn()
            torch.cuda.synchronize()

        return _time(call, cfg, items=items, repeats=repeats)

    def add(name, t, b, tokens, dtype, **extra):
        ctx.rows.append(
            {
                "model": ctx.model_name,
                "rung": "9 gpu",
                "name": name,
                "device": "cuda",
                "batch": b,
                "threads": None,
                "tokens_per_s": tokens / t.median_s,
                "p50_ms": t.p50_ms,
                "p99_ms": t.p99_ms,
                "model_bytes": None,
                "roofline_fraction": None,
                "bound": None,
                "dtype": dtype,
                **extra,
            }
        )

    batches = (1, 256, 4096) if cfg.vocab >= 1000 else (1, 8)
    for dtype_name, dtype in (
        ("fp32", torch.float32),
        ("fp16", torch.float16),
        ("bf16", torch.bfloat16),
    ):
        try:
            m = copy.deepcopy(model).to(dev, dtype).eval()
            with torch.inference_mode():
                for b in batches:
                    reps = -(-b // held.shape[0])
                    tok = held[:, L].repeat(reps)[:b].to(dev)
                    h = torch.zeros(1, b, H, device=dev, dtype=dtype)
                    c = torch.zeros(1, b, H, device=dev, dtype=dtype)
                    t = sync_timed(lambda m=m, tok=tok, h=h, c=c: m.step(tok, (h, c)), b)
                    add(f"cuda_{dtype_name}_step_b{b}", t, b, b, dtype_name)
                seq = held[:, :L].repeat(-(-256 // held.shape[0]), 1)[:256].to(dev)
                t = sync_timed(lambda m=m, seq=seq: m(seq), seq.numel())
                add(f"cuda_{dtype_name}_sequence_b256_t{L}", t, 256, seq.numel(), dtype_name)
        except Exception as e:
            ctx.rows.append(_failed_row(ctx, "9 gpu", f"cuda_{dtype_name}", e, device="cuda"))
    for b in batches:
        for dtype_name in ("fp16", "bf16"):
            _compare(
                ctx.rows, ctx.model_name, f"cuda_{dtype_name}_step_b{b}", f"cuda_fp32_step_b{b}"
            )

    # A CUDA graph of one batch-256 fp16 step: removes the per-kernel launch cost.
    try:
        b = 256 if cfg.vocab >= 1000 else 8
        m = copy.deepcopy(model).to(dev, torch.float16).eval()
        step = RnnBenchStep(m)
        reps = -(-b // held.shape[0])
        s_tok = held[:, L].repeat(reps)[:b].to(dev)
        s_h = torch.zeros(1, b, H, device=dev, dtype=torch.float16)
        s_c = torch.zeros(1, b, H, device=dev, dtype=torch.float16)
        with torch.inference_mode():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    step(s_tok, s_h, s_c)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step(s_tok, s_h, s_c)
            t = sync_timed(graph.replay, b)
        add(f"cuda_graph_fp16_step_b{b}", t, b, b, "fp16")
        _compare(ctx.rows, ctx.model_name, f"cuda_graph_fp16_step_b{b}", f"cuda_fp16_step_b{b}")
    except Exception as e:
        ctx.rows.append(_failed_row(ctx, "9 gpu", "cuda_graph_fp16_step", e, device="cuda"))


# ----------------------------------------------------------------------------- entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the generated text and weights"
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="skip torch.compile (it takes ~30-60 s to build)"
    )
    parser.add_argument(
        "--no-keyboard", action="store_true", help="ladder only the reference model"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch/onnxruntime threads for the ladder (default: all cores); 1 gives stable "
        "numbers on a machine that other work shares",
    )


def _peaks(fp: dict) -> tuple[float, float]:
    """(fp32 matmul GFLOP/s, copy GB/s) measured by the shared machine fingerprint."""
    gflops, gbs = fp.get("matmul_gflops"), fp.get("memcpy_gbps")
    if not gflops or not gbs:
        raise RuntimeError("the machine fingerprint has no measured matmul/copy numbers")
    return float(gflops), float(gbs)


def _loadavg() -> float | None:
    """1-minute load average: above the core count, other work shared the CPU with this run."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _peak_at(threads: int, n: int = 1024) -> float:
    """fp32 matmul GFLOP/s with `threads` torch threads (shared.bench's measurement)."""
    from shared.bench import measure_matmul_gflops

    with torch_threads(threads):
        return float(measure_matmul_gflops(n=n, repeats=3)["matmul_gflops"])


def summarize(
    rows: list[dict],
    model: str,
    cfg: RnnBenchConfig,
    peak_gflops: float,
    top1_fp32_pct: float | None = None,
    peak_gflops_1t: float | None = None,
) -> dict[str, Any]:
    """The headline ratios, all from one run on one model."""
    ok = [
        r
        for r in rows
        if r["model"] == model
        and r.get("tokens_per_s")
        and r["device"] == "cpu"
        and not r["name"].startswith("arrivals_")
    ]
    naive = _find(rows, model, "naive_recompute")
    best = max(ok, key=lambda r: r["tokens_per_s"])
    recompute = _find(rows, model, f"keystroke_recompute_{cfg.prefix_len}")
    cached = [
        r
        for r in ok
        if r["batch"] == 1
        and r["name"] != "naive_recompute"
        and not r["name"].startswith("keystroke_")
    ]
    cached_fp32 = [r for r in cached if r["name"].startswith("cached_step")]
    best_cached_fp32 = max(cached_fp32, key=lambda r: r["tokens_per_s"])
    best_cached = max(cached, key=lambda r: r["tokens_per_s"])
    batched_fp32 = [
        r
        for r in ok
        if r["batch"] >= min(64, cfg.big_batch)
        and r["rung"] in ("3 batched", "5 compiled", "6 ort", "4 lengths")
        and r.get("threads", 2) == torch.get_num_threads()
    ]
    best_batched = max(batched_fp32, key=lambda r: r["gflops"])
    int8 = [r for r in ok if r["rung"] == "7 int8"]
    gpu = [
        r for r in rows if r["model"] == model and r["device"] == "cuda" and r.get("tokens_per_s")
    ]
    best_gpu = max(gpu, key=lambda r: r["tokens_per_s"]) if gpu else None
    dyn = _find(rows, model, "arrivals_dynamic_batching")
    one = _find(rows, model, "arrivals_one_at_a_time")
    return {
        "model": model,
        "best_vs_naive_tokens_per_s": best["tokens_per_s"] / naive["tokens_per_s"],
        "best_row": best["name"],
        "keystroke_cached_vs_recompute": best_cached_fp32["tokens_per_s"]
        / recompute["tokens_per_s"],
        "keystroke_cached_row": best_cached_fp32["name"],
        "keystroke_best_cached_vs_recompute": best_cached["tokens_per_s"]
        / recompute["tokens_per_s"],
        "keystroke_best_cached_row": best_cached["name"],
        "batched_fp32_fraction_of_peak": best_batched["gflops"]
        / (peak_gflops if best_batched["threads"] > 1 else (peak_gflops_1t or peak_gflops)),
        "top1_fp32_pct": top1_fp32_pct,
        "batched_fp32_row": best_batched["name"],
        "batched_fp32_gflops": best_batched["gflops"],
        "int8_max_rel_err": max(r["rel_err"] for r in int8) if int8 else None,
        "int8_worst_top1_delta_pts": min(r["top1_delta_pts"] for r in int8) if int8 else None,
        "gpu_best_row": best_gpu["name"] if best_gpu else None,
        "gpu_best_vs_best_cpu_tokens_per_s": best_gpu["tokens_per_s"] / best["tokens_per_s"]
        if best_gpu
        else None,
        "dynamic_batching_vs_one_at_a_time": dyn["tokens_per_s"] / one["tokens_per_s"]
        if dyn and one
        else None,
    }


def _plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("tokens_per_s")]
    models = list(dict.fromkeys(r["model"] for r in ok))
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 0.28 * len(ok) + 1.5), squeeze=False)
    for ax, m in zip(axes[:, 0], models, strict=True):
        mine = [r for r in ok if r["model"] == m]
        labels = [r["name"] for r in mine]
        values = [r["tokens_per_s"] for r in mine]
        rungs = sorted({r["rung"] for r in mine})
        cmap = plt.get_cmap("tab10")
        colors = [cmap(rungs.index(r["rung"]) % 10) for r in mine]
        ax.barh(range(len(mine)), values, color=colors)
        ax.set_yticks(range(len(mine)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("tokens/s (log scale)")
        ax.set_title(f"RNN throughput ladder: {m}")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


COLUMNS = [
    "model",
    "rung",
    "name",
    "impl",
    "batch",
    "threads",
    "tokens_per_s",
    "p50_ms",
    "p99_ms",
    "model_bytes",
    "roofline_fraction",
    "bound",
    "vs",
    "speedup",
    "rel_err",
    "top1_delta_pts",
    "note",
]


def run(args: argparse.Namespace) -> Path:
    """Run the ladder; write rnn_throughput.json / .md / .png into args.out; return the JSON."""
    threads = int(getattr(args, "threads", 0) or 0)
    with torch_threads(threads if threads > 0 else torch.get_num_threads()):
        return _run(args)


def _run(args: argparse.Namespace) -> Path:
    from shared.bench import write_results

    cfg = PRESETS["quick" if getattr(args, "quick", False) else "full"]
    if getattr(args, "no_compile", False):
        cfg = replace(cfg, compile=False)
    if getattr(args, "no_keyboard", False):
        cfg = replace(cfg, keyboard=False)
    seed = int(getattr(args, "seed", 0) or 0)
    out = run_folder(f"bench/{NAME}", getattr(args, "out", None))
    t_start = time.perf_counter()
    load_start = _loadavg()

    quick = bool(getattr(args, "quick", False))
    fp = _fingerprint(quick)
    _, bw = _peaks(fp)
    # Peaks for the roofline at one thread and at all cores, measured now and again at the end.
    one_n, cores = (256 if quick else 1024), _cores()
    peak_start, peak_1t_start = _peak_at(cores, one_n), _peak_at(1, one_n)

    train_text, held = _texts(cfg, seed)
    models, kb_note = _models(cfg, seed)
    rows: list[dict] = []
    ctx = _Ctx(
        cfg=cfg,
        flops_per_token=_flops_per_token(cfg.vocab, cfg.embed, cfg.hidden),
        fp32_bytes=0,  # set per model
        peak_gflops=peak_start,
        peak_gflops_1t=peak_1t_start,
        bandwidth_gbs=bw,
        rows=rows,
        model_name="",
    )
    train_info, top1, kb_note = _ladders(models, ctx, train_text, held, seed, kb_note)

    # Peaks again at the end: on a shared machine the first measurement can be unlucky, and a
    # roofline fraction above 1 would only mean the peak was underestimated.
    peak = max(peak_start, _peak_at(cores, one_n))
    peak_1t = max(peak_1t_start, _peak_at(1, one_n))
    peak = max(peak, peak_1t)  # all cores can do at least what one does (contention aside)
    finalize_roofline(rows, peak, peak_1t, bw)
    summaries = {m: summarize(rows, m, cfg, peak, top1[m], peak_1t) for m in top1}

    params = sum(p.numel() for p in models[0][1].parameters())
    summary = dict(summaries["reference"])
    summary.update(
        {
            "per_model": summaries,
            "keyboard_model": kb_note,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            "params": int(params),
            "flops_per_token": _flops_per_token(cfg.vocab, cfg.embed, cfg.hidden),
            "peak_matmul_gflops": peak,
            "peak_matmul_gflops_1thread": peak_1t,
            "peak_matmul_gflops_at_start": peak_start,
            "peak_matmul_gflops_1thread_at_start": peak_1t_start,
            "loadavg_1min_start_end": [load_start, _loadavg()],
            "cores": fp.get("cores"),
            "threads": torch.get_num_threads(),
            "copy_bandwidth_gbs": bw,
            "training": train_info,
            "cuda": torch.cuda.is_available(),
            "targets": {
                "best_vs_naive_tokens_per_s": ">= 20",
                "keystroke_cached_vs_recompute": ">= 10",
                "batched_fp32_fraction_of_peak": ">= 0.6",
                "int8_max_rel_err": "<= 0.05",
                "int8_worst_top1_delta_pts": ">= -0.5",
            },
            "wall_s": time.perf_counter() - t_start,
        }
    )
    path = write_results(out, "rnn_throughput", rows, summary, columns=COLUMNS, fingerprint=fp)
    try:
        _plot(rows, out / "rnn_throughput.png")
    except ImportError:  # matplotlib missing (a bare GPU machine): the JSON and table suffice
        pass
    return Path(path)


def _fingerprint(quick: bool) -> dict:
    """The machine fingerprint; small, fast peak measurements in --quick mode (the full one
    takes ~8 s on 2 busy cores)."""
    from shared.bench import machine_fingerprint, measure_matmul_gflops, measure_memcpy_gbps

    if not quick:
        return machine_fingerprint(measure=True)
    fp = machine_fingerprint(measure=False)
    fp.update(measure_matmul_gflops(n=512, repeats=3))
    fp["memcpy_gbps"] = measure_memcpy_gbps(mib=32, repeats=3)
    return fp


def _texts(cfg: RnnBenchConfig, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """Generated training text (N,) and held-out rows (R, T) long enough for every rung."""
    text = make_text(cfg.vocab, cfg.train_tokens + cfg.eval_tokens, seed)
    train_text, eval_text = text[: cfg.train_tokens], text[cfg.train_tokens :]
    held_len = max(cfg.prefix_len + 2, cfg.max_len)
    n_rows = len(eval_text) // held_len
    held = torch.from_numpy(eval_text[: n_rows * held_len].reshape(n_rows, held_len))  # (R, T)
    if n_rows < max(cfg.big_batch, cfg.n_seqs):
        raise RuntimeError("eval_tokens too small for the batch sizes")
    return train_text, held


def _models(cfg: RnnBenchConfig, seed: int) -> tuple[list[tuple[str, nn.Module, bool]], str]:
    """[(name, model, reference extras)]: the reference LSTM, and the keyboard case's model when
    it is installed; plus a note on the keyboard model."""
    torch.manual_seed(seed)
    models = [("reference", RnnBenchLSTM(cfg.vocab, cfg.embed, cfg.hidden), True)]
    kb_cls = _keyboard_class() if cfg.keyboard else None
    kb_note = "not installed"
    if kb_cls is not None:
        try:
            torch.manual_seed(seed)
            models.append(("keyboard", kb_cls(cfg.vocab, cfg.embed, cfg.hidden), False))
            kb_note = "included"
        except Exception as e:
            kb_note = f"could not build: {type(e).__name__}: {e}"
    return models, kb_note


def _ladders(models, ctx: _Ctx, train_text, held, seed: int, kb_note: str):
    """Train each model (or copy the reference's weights) and run its ladder (and GPU rows).

    Returns (training info, held-out fp32 top-1 per model, the keyboard note). A failure on the
    keyboard model drops its rows and is noted; a failure on the reference is raised.
    """
    from tqdm import tqdm

    cfg, rows = ctx.cfg, ctx.rows
    train_info, top1 = {}, {}
    steps_per_model = 9
    with (
        tempfile.TemporaryDirectory(prefix="rnn-bench-") as tmp,
        tqdm(total=steps_per_model * len(models), desc="rnn ladder", disable=None) as bar,
    ):
        for mname, model, extras in models:
            t0 = time.perf_counter()
            copied = mname != "reference" and _copy_weights(models[0][1], model)
            if copied:
                # Same architecture: reuse the trained reference weights, so both models
                # compute the same function and their top-1 numbers are comparable.
                train_info[mname] = {"weights": "copied from the trained reference"}
            else:
                loss = train_quickly(model, train_text, cfg, seed)
                train_info[mname] = {"loss_nats": loss, "train_s": time.perf_counter() - t0}
            mctx = replace(ctx, fp32_bytes=_model_bytes(model), model_name=mname)
            try:
                run_ladder(model, mctx, held, Path(tmp), extras, bar)
            except Exception as e:
                if mname == "reference":
                    raise
                kb_note = f"ladder failed: {type(e).__name__}: {str(e)[:200]}"
                rows[:] = [r for r in rows if r["model"] != mname]
                continue
            if torch.cuda.is_available():
                run_gpu(model, mctx, held)
            top1[mname] = mctx.top1_fp32_pct
    return train_info, top1, kb_note


if __name__ == "__main__":  # python benchmarks/rnn_throughput.py [--quick]
    p = argparse.ArgumentParser(description=SUMMARY)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    add_arguments(p)
    print(run(p.parse_args()))
