"""Train the keyboard's models and ship the one that wins: `train(cfg, corpus, artifact_dir)`.

    from cases.mobile_keyboard.config import get_config
    from cases.mobile_keyboard.data import builtin_corpus
    from cases.mobile_keyboard.train import train
    cfg = get_config("fast")
    trained = train(cfg, builtin_corpus(cfg.n_messages), Path("/tmp/kb/artifact"))  # ~40 s

Steps: the vocabulary; the Kneser-Ney trigram; the LSTM (`train_lm`); the spelling error model;
the candidates for the phone (`build_candidates`: each rebuilt from the bytes it would ship as);
their validation table and the choice (`validation_table`, `choose_shipped`); the artifact with
exactly the shipped model (`save_shipped`).

Candidates (table `candidates:<corpus>`, on VALIDATION): the full Kneser-Ney trigram, the trigram
pruned to the phone budget, the LSTM in fp32, the LSTM's int8 package, and the int8 LSTM mixed
with a trigram pruned to the bytes the LSTM leaves (trigram weight picked on validation). Each is
rebuilt from the bytes that would ship and run through the predictor's own step
(`predictor.KeyboardNextWord`, scored as in scoring.py). `choose_shipped`: among those within the
budget (size and p95 latency), the best validation top-1 (to three decimals), keystroke savings
breaking a tie. Selection on validation happens here only; evaluate.py reports on test.

Loss: cross-entropy of the next word. Cross-entropy is what top-k and keystroke savings reward:
a calibrated next-word distribution. The full softmax costs V*E multiply-adds per token forward
(about 1M at V = 10K, E = 96), three times the LSTM's 4H(E+H) = 0.36M at H = 256, and on a CPU
its (tokens x V) logit matrix and gradient are memory-bound on top: measured on one core, the
head is 90% of a training step (144 of 157 ms for 1,024 tokens). So training uses a sampled
softmax (Jean et al. 2015): the true word against K words drawn from the unigram^0.75
distribution, with the logQ correction, logit_w - log(K q_w), which keeps the estimate of the
full softmax's gradient consistent. The best sampled weights are then fine-tuned with the full
softmax (`full_softmax_frac` of the time), so the model ends calibrated over the whole vocabulary.
The epoch kept is the one with the best validation score, next-word top-1 by default (the
product metric; `select_on`), and training stops when it has not improved for `patience` epochs;
with `ema_decay` > 0 what is validated and kept is an exponential moving average of the weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from shared.errors import CasebookError
from shared.lifecycle import torch_threads

from .baseline import KeyboardKneserNey
from .config import KeyboardConfig
from .data import KeyboardCorpus, generated_spell_pairs
from .model import (
    KeyboardLSTM,
    KeyboardTrigram,
    KeyboardVocab,
    fp32_file,
    int8_package,
    lstm_from_fp32,
    lstm_from_int8,
)
from .predictor import LSTM_FP32, LSTM_INT8, TRIGRAM, KeyboardNextWord
from .scoring import NextWordScorer, score_next_word, test_stream
from .spell import KeyboardErrorModel, load_frequency_dictionary


def token_stream(sentences: Sequence[Sequence[str]], vocab: KeyboardVocab) -> np.ndarray:
    """One id stream: <s> w1 w2 ... <s> w1 ... (the LSTM carries no state across <s>-bounded
    messages in training other than what it learns to reset)."""
    bos = vocab.stoi["<s>"]
    out: list[int] = []
    for s in sentences:
        out.append(bos)
        out.extend(vocab.encode(s))
    return np.asarray(out, dtype=np.int64)


def window_starts(stream: np.ndarray, bptt: int, bos: int) -> np.ndarray:
    """Where the training windows of `bptt` tokens begin: at a message start (<s>) when possible.

    The keyboard starts every message from a fresh state at <s>, so training should too: a window
    cut at an arbitrary point starts mid-sentence from a zero state, a situation that never occurs
    on the phone, while the phone's situation (zero state, then <s>) would be rare in training.
    Each window starts at the last <s> inside the previous one, so the sentence it cut off is seen
    again whole (about 20% of tokens trained twice); a sentence longer than the window continues
    in the next window from where it was cut.
    """
    bos_pos = np.flatnonzero(stream == bos)
    n = len(stream) - 1  # the last token has no target
    starts, s = [], 0
    while s + bptt <= n:
        starts.append(s)
        i = np.searchsorted(bos_pos, s + bptt) - 1  # the last <s> before this window's end
        s = int(bos_pos[i]) if i >= 0 and bos_pos[i] > s else s + bptt
    return np.asarray(starts, dtype=np.int64)


def make_batches(
    stream: np.ndarray,
    bptt: int,
    batch_size: int,
    rng: np.random.Generator,
    starts: np.ndarray | None = None,
):
    """Shuffled (inputs, targets) batches of shape (B, bptt) cut from the stream at `starts`
    (default: back-to-back windows)."""
    if starts is None:
        starts = np.arange((len(stream) - 1) // bptt, dtype=np.int64) * bptt
    if len(starts) == 0:
        return
    cols = np.arange(bptt)[None, :]  # (1, T)
    x = torch.from_numpy(stream[starts[:, None] + cols])  # (N, T)
    y = torch.from_numpy(stream[starts[:, None] + cols + 1])  # (N, T)
    order = rng.permutation(len(starts))
    for i in range(0, len(starts), batch_size):
        idx = torch.from_numpy(order[i : i + batch_size])
        yield x[idx], y[idx]


def sampled_softmax_loss(
    model: KeyboardLSTM,
    z: torch.Tensor,
    y: torch.Tensor,
    log_q: torch.Tensor,
    q: torch.Tensor,
    k: int,
) -> torch.Tensor:
    """Sampled softmax cross-entropy; z (N, E) projected outputs, y (N,) targets.

    K negatives are drawn with replacement from q (V,) and shared by the batch; every logit gets
    -log(K q_w) (the logQ correction) and a negative equal to the target is masked out.
    """
    neg = torch.multinomial(q, k, replacement=True)  # (K,)
    W, b = model.head.weight, model.head.bias  # (V, E), (V,)
    correction = log_q + math.log(k)  # (V,)
    pos = (z * W[y]).sum(-1) + b[y] - correction[y]  # (N,)
    negs = z @ W[neg].T + (b[neg] - correction[neg])[None, :]  # (N, K)
    negs = negs.masked_fill(neg[None, :] == y[:, None], float("-inf"))  # accidental hits
    logits = torch.cat([pos[:, None], negs], 1)  # (N, 1 + K)
    return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long))


@torch.no_grad()
def evaluate_lm(model: KeyboardLSTM, stream: np.ndarray, chunk: int = 2048) -> tuple[float, float]:
    """(mean next-token cross-entropy in nats, next-word top-1) over the stream, state carried
    across chunks. top-1 is scored like the test table: over word targets (not <s>), the
    specials never suggested, an <unk> target a miss."""
    model.eval()
    if len(stream) < 2:
        return float("nan"), float("nan")
    state, total, hits, words = None, 0.0, 0, 0
    for i in range(0, len(stream) - 1, chunk):
        x = torch.from_numpy(stream[i : i + chunk][None, :])  # (1, T)
        y = torch.from_numpy(stream[i + 1 : i + chunk + 1][None, :])  # (1, T')
        x = x[:, : y.shape[1]]
        logits, state = model(x, state)  # (1, T, V)
        total += float(F.cross_entropy(logits[0], y[0], reduction="sum"))
        guess = logits[0, :, 2:].argmax(-1) + 2  # (T,) best word, <unk> and <s> excluded
        is_word = y[0] != 1  # <s> ends a message; it is not a word to suggest
        hits += int(((guess == y[0]) & is_word).sum())
        words += int(is_word.sum())
    return total / (len(stream) - 1), hits / max(words, 1)


def train_lm(
    cfg: KeyboardConfig,
    corpus: KeyboardCorpus,
    vocab: KeyboardVocab,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[KeyboardLSTM, dict]:
    """Train KeyboardLSTM on corpus.train; keep the weights with the best validation score
    (`cfg.select_on`: next-word top-1 or loss).

    Phase 1: sampled (or full) softmax, cosine schedule, early stopping on validation.
    Phase 2 (sampled runs only): the best phase-1 weights fine-tuned with the full softmax at the
    schedule's final learning rate, kept only if validation improves.
    The time cap is `cfg.train_minutes(training tokens)`: it grows with the corpus.
    """
    if cfg.select_on not in ("top1", "nll"):
        raise CasebookError(f"select_on must be 'top1' or 'nll', got {cfg.select_on!r}")
    torch.manual_seed(seed)
    with torch_threads(cfg.train_threads):
        trainer = _LMTrainer(cfg, corpus, vocab, np.random.default_rng(seed), log)
        trainer.run_phase1()
        trainer.run_phase2()
        return trainer.model.eval(), trainer.info()


class _LMTrainer:
    """The training run's state, one method per step (read top to bottom in `train_lm`)."""

    def __init__(self, cfg, corpus, vocab, rng, log):
        self.cfg, self.rng, self.log = cfg, rng, log
        self.model = KeyboardLSTM(
            len(vocab), cfg.embed_dim, cfg.hidden_dim, cfg.num_layers, cfg.dropout
        )
        self.train_ids = token_stream(corpus.train, vocab)
        self.val_ids = token_stream(corpus.val, vocab)[:50_000]  # cap validation on big corpora
        self.starts = window_starts(self.train_ids, cfg.bptt, vocab.stoi["<s>"])
        self.steps_per_epoch = max(1, math.ceil(len(self.starts) / cfg.batch_size))
        # Start the output bias at log unigram frequencies: step 0 already predicts like a
        # unigram model, so a short (time-capped) run spends its steps on context.
        counts = np.bincount(self.train_ids, minlength=len(vocab)).astype(np.float64) + 1.0
        with torch.no_grad():
            self.model.head.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())).float())
        # The sampled softmax's proposal: unigram^0.75 (word2vec's choice: rare words get
        # sampled more often than their frequency, so the head learns to push them down too).
        self.q = torch.from_numpy(counts**0.75 / (counts**0.75).sum()).float()  # (V,)
        self.log_q = self.q.log()
        self.sampled = cfg.softmax_samples > 0
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.cap_minutes = cfg.train_minutes(len(self.train_ids))
        # The cap counts this process's CPU seconds, not wall-clock ones: on a shared machine
        # (measured: load 12 on 2 cores) wall time gave the built-in run 3 epochs instead of 8
        # and a different model per run; CPU time gives the same training at any load (one
        # training thread, so CPU seconds ~ wall seconds on a quiet machine).
        self.clock = time.process_time
        self.t0, self.wall0 = self.clock(), time.perf_counter()
        self.deadline = self.t0 + self.cap_minutes * 60
        # A sampled run keeps `full_softmax_frac` of the time for phase 2.
        self.phase1_deadline = self.t0 + self.cap_minutes * 60 * (
            1 - cfg.full_softmax_frac * self.sampled
        )
        # Learning rate: linear warm-up then cosine decay to 5% over the planned steps. The plan
        # is all epochs, or, once 30 steps have been timed, as many steps as fit in the time
        # cap, so a capped run still ends with a decayed (well-converged) learning rate.
        self.planned = self.steps_per_epoch * cfg.epochs
        self.warmup = max(1, self.planned // 20)
        self.step = self.phase1_steps = 0
        # Model selection on validation: by next-word top-1 (the product metric) or by loss.
        # They part ways on small corpora: with more epochs the loss rises (rare words get
        # confident and wrong) while top-1 still climbs (frequent phrases get sharper);
        # webtext, dropout 0.3: loss best at epoch 7 (top-1 0.152), top-1 best at 12 (0.159).
        self.best, self.best_state, self.history, self.kept = float("inf"), None, [], {}
        self.stale, self.stopped_early, self.converged = 0, False, False
        # An exponential moving average of the weights (Polyak averaging; AWD-LSTM's averaged
        # SGD is the same idea): the average of the last ~1/(1 - decay) steps generalises
        # better than the last step. Phase 1 validates and keeps the averaged weights.
        self.ema = None
        if cfg.ema_decay > 0:
            self.ema = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        log(
            f"  lstm: {len(self.train_ids):,} training tokens, time cap {self.cap_minutes:.2f} min"
            f" ({cfg.train_minutes_per_m_tokens:g} min per million tokens, "
            f"within [{cfg.min_train_minutes:g}, {cfg.max_train_minutes:g}])"
        )

    # -- the schedule --------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if step < self.warmup:
            return cfg.lr * (step + 1) / self.warmup
        frac = min(1.0, (step - self.warmup) / max(1, self.planned - self.warmup))
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    def replan(self, until: float) -> None:
        """Re-plan from the measured speed (machine load changes during a run), so the cosine
        decay ends near the time cap rather than long before it."""
        per_step = (self.clock() - self.t0) / self.step
        fit = self.step + int((until - self.clock()) / per_step)
        total = self.steps_per_epoch * self.cfg.epochs
        new_plan = max(min(fit, total), self.warmup + 1, self.step + 1)
        if self.step == 30 and new_plan < self.planned:
            self.log(f"  lstm: the time cap allows about {new_plan} of {total} steps")
        self.planned = new_plan

    # -- one step and one epoch ----------------------------------------------------------------
    def loss_of(self, x: torch.Tensor, y: torch.Tensor, full: bool) -> torch.Tensor:
        if full:
            logits, _ = self.model(x)  # (B, T, V); each sequence starts from a zero state
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        z = self.model.features(x)  # (B, T, E)
        z = z.reshape(-1, z.shape[-1])  # (B*T, E)
        k = self.cfg.softmax_samples
        return sampled_softmax_loss(self.model, z, y.reshape(-1), self.log_q, self.q, k)

    def update_average(self) -> None:
        d = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))  # short memory at first
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                self.ema[name].lerp_(p, 1.0 - d)

    def run_epoch(self, desc: str, full: bool, until: float, max_steps: int, phase1: bool = True):
        """One pass over the windows; phase 1 follows the schedule and keeps the average.
        Returns (mean training loss, whether the time ran out)."""
        cfg, model = self.cfg, self.model
        final_lr = cfg.lr * 0.05  # the cosine schedule's floor: phase 2 continues from there
        model.train()
        batches = make_batches(self.train_ids, cfg.bptt, cfg.batch_size, self.rng, self.starts)
        bar = tqdm(batches, total=self.steps_per_epoch, desc=desc, disable=None, leave=False)
        total, count, done, out_of_time = 0.0, 0, 0, False
        for x, y in bar:
            loss = self.loss_of(x, y, full)
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step) if phase1 else final_lr
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            self.opt.step()
            if self.ema is not None and phase1:
                self.update_average()
            self.step, done = self.step + 1, done + 1
            total += float(loss.detach()) * y.numel()
            count += y.numel()
            if self.step % 30 == 0:
                if phase1:
                    self.replan(until)
                bar.set_postfix_str(f"{max(0.0, until - self.clock()):.0f} CPU s of cap left")
            if self.clock() > until:
                out_of_time = True
                break
            if done >= max_steps:
                break
        return total / max(count, 1), out_of_time

    # -- validation and the kept weights -------------------------------------------------------
    def end_epoch(self, name: str, train_nll: float, averaged: bool = False) -> None:
        """Validate (the averaged weights in phase 1) and keep the best state."""
        model, raw = self.model, None
        if averaged and self.ema is not None:
            raw = {n: p.detach().clone() for n, p in model.named_parameters()}
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(self.ema[n])
        val, top1 = evaluate_lm(model, self.val_ids)
        self.history.append(
            {"epoch": name, "train_nll": train_nll, "val_nll": val, "val_top1": top1}
        )
        self.log(
            f"  lstm epoch {name}: train nll {train_nll:.3f}, "
            f"val nll {val:.3f} (ppl {math.exp(min(val, 50)):.1f}), val top-1 {top1:.4f}"
        )
        score = -top1 if self.cfg.select_on == "top1" else val  # lower is better
        if score < self.best:
            self.best, self.stale = score, 0
            self.best_state = {k: v.clone() for k, v in model.state_dict().items()}
            self.kept.update(val_nll=val, val_top1=top1, epoch=name)
        else:
            self.stale += 1
        if raw is not None:  # training goes on from the raw weights
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(raw[n])

    def load_best(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            self.model.head.weight = self.model.embed.weight

    # -- the two phases ------------------------------------------------------------------------
    def run_phase1(self) -> None:
        cfg = self.cfg
        for epoch in range(cfg.epochs):
            desc = f"lstm epoch {epoch + 1}/{cfg.epochs}" + (" (sampled)" if self.sampled else "")
            train_nll, out_of_time = self.run_epoch(
                desc, not self.sampled, self.phase1_deadline, 10**12
            )
            self.end_epoch(str(epoch + 1), train_nll, averaged=True)
            if out_of_time:
                self.stopped_early = True
                self.log(
                    f"  lstm: phase 1 stopped at its share of the {self.cap_minutes:.2f} min cap"
                )
                break
            if self.stale >= cfg.patience:
                self.converged = True
                self.log(f"  lstm: validation has not improved for {cfg.patience} epochs: stopping")
                break
        self.load_best()
        self.phase1_steps = self.step

    def run_phase2(self) -> None:
        """The full softmax at the final learning rate, up to one epoch (or the cap)."""
        if not self.sampled or self.best_state is None:
            return
        n = max(1, min(self.steps_per_epoch, int(self.phase1_steps * self.cfg.full_softmax_frac)))
        train_nll, _ = self.run_epoch("lstm full softmax", True, self.deadline, n, phase1=False)
        self.end_epoch("full-softmax", train_nll)
        self.load_best()  # best_state is the better of the two phases

    def info(self) -> dict:
        return {
            "history": self.history,
            "selected_on": self.cfg.select_on,
            "best_epoch": self.kept.get("epoch"),
            "best_val_nll": self.kept.get("val_nll", float("nan")),
            "best_val_top1": self.kept.get("val_top1", float("nan")),
            "train_seconds": time.perf_counter() - self.wall0,
            "train_cpu_seconds": self.clock() - self.t0,
            "time_cap_minutes": self.cap_minutes,
            "train_tokens": int(len(self.train_ids)),
            "steps": self.step,
            "phase1_steps": self.phase1_steps,
            "n_params": self.model.n_params(),
            "stopped_early": self.stopped_early,
            "converged": self.converged,
        }


def spell_word_lists(cfg: KeyboardConfig) -> tuple[list[str], list[str]]:
    """Disjoint dictionary words for the error model's training pairs and for built-in evaluation.

    Both come from the 30,000 most frequent alphabetic words of symspellpy's dictionary; every
    tenth word is reserved for evaluation, so no evaluation word (or its misspelling) is ever
    seen by the error model.
    """
    freq = load_frequency_dictionary()
    ranked = sorted(freq, key=freq.__getitem__, reverse=True)
    pool = [w for w in ranked[:30_000] if len(w) >= 3 and w.isalpha()]
    train_words = [w for i, w in enumerate(pool) if i % 10 != 0][: cfg.spell_train_words]
    eval_words = [w for i, w in enumerate(pool) if i % 10 == 0][: cfg.spell_eval_words]
    return train_words, eval_words


def train_error_model(
    cfg: KeyboardConfig,
    seed: int = 0,
    extra_pairs: Sequence[tuple[str, str]] = (),
) -> KeyboardErrorModel:
    """Fit the noisy channel on generated keyboard misspellings (+ user-given real pairs)."""
    train_words, _ = spell_word_lists(cfg)
    # Two misspellings per word; seed stream 1000+ never overlaps the evaluation stream.
    pairs = generated_spell_pairs(train_words, seed=1000 + seed, per_word=2)
    return KeyboardErrorModel().fit(list(pairs) + list(extra_pairs))


# ---------------------------------------------------------------------------------------------
# The candidates for the phone, and the artifact that holds the one that ships
# ---------------------------------------------------------------------------------------------


@dataclass
class KeyboardCandidate:
    """One next-word model that could ship: the exact files it would ship as, and the model
    rebuilt from those bytes (what gets scored, timed and served)."""

    name: str
    files: dict[str, bytes]
    next_word: KeyboardNextWord
    note: str = ""

    @property
    def n_bytes(self) -> int:
        return sum(len(b) for b in self.files.values())


def build_candidates(
    cfg: KeyboardConfig, model: KeyboardLSTM, kn: KeyboardKneserNey
) -> dict[str, KeyboardCandidate]:
    """kn_full, kn_pruned (when the full tables exceed the budget), lstm_fp32, lstm_int8, and
    mix (the int8 LSTM + a trigram pruned to the bytes the LSTM leaves; its weight is picked on
    validation later). Every model is rebuilt from its bytes."""
    dims = (cfg.embed_dim, cfg.hidden_dim, cfg.num_layers)
    out: dict[str, KeyboardCandidate] = {}

    def trigram(name: str, tables: KeyboardTrigram, note: str) -> None:
        data = tables.to_bytes()
        nw = KeyboardNextWord(trigram=KeyboardTrigram.from_bytes(data))
        out[name] = KeyboardCandidate(name, {TRIGRAM: data}, nw, note)

    full = kn.full_
    trigram("kn_full", full, f"{full.n_entries():,} n-gram entries")
    budget = cfg.phone_budget_bytes
    if full.n_bytes() > budget:
        try:
            pruned, (k3, k2) = kn.prune_to(budget)
            note = f"{pruned.n_entries():,} entries; count cut-offs trigram {k3}, bigram {k2}"
            trigram("kn_pruned", pruned, note)
        except ValueError:
            pass  # not even the unigram table fits: no pruned candidate
    fp32 = fp32_file(model)
    nw = KeyboardNextWord(lstm=lstm_from_fp32(fp32, *dims))
    out["lstm_fp32"] = KeyboardCandidate("lstm_fp32", {LSTM_FP32: fp32}, nw, "fp32 safetensors")
    package = int8_package(model)
    nw = KeyboardNextWord(lstm=lstm_from_int8(package, *dims))
    note = "int8 rows + fp32 scale per row, dequantized at load"
    out["lstm_int8"] = KeyboardCandidate("lstm_int8", {LSTM_INT8: package}, nw, note)
    try:
        small, (k3, k2) = kn.prune_to(budget - len(package))
    except ValueError:
        return out  # the LSTM leaves no room for a trigram
    tri = small.to_bytes()
    nw = KeyboardNextWord(lstm_from_int8(package, *dims), KeyboardTrigram.from_bytes(tri), 0.0)
    note = f"int8 LSTM + trigram of {small.n_entries():,} entries (cut-offs {k3}, {k2})"
    out["mix"] = KeyboardCandidate("mix", {LSTM_INT8: package, TRIGRAM: tri}, nw, note)
    return out


def save_shipped(
    path: Path,
    shipped: KeyboardCandidate,
    vocab: KeyboardVocab,
    error_model: KeyboardErrorModel,
    config: dict,
    metrics: dict,
    fingerprint: str,
) -> Path:
    """The artifact: exactly the shipped model's files, the vocabulary and the error model.

    config gains "shipped" (the candidate's name) and "mix_weight", which the predictor reads.
    """
    from shared.artifacts import save_artifact

    files = {
        **shipped.files,
        "vocab.json": vocab.to_json().encode(),
        "error_model.json": error_model.to_json().encode(),
    }
    config = {**config, "shipped": shipped.name, "mix_weight": shipped.next_word.mix_weight}
    return save_artifact(path, {}, config, metrics, fingerprint, files)


GOLDEN_REQUESTS, REFERENCE_REQUESTS = 200, 2000


def keystroke_requests(sentences: Sequence[Sequence[str]], n: int, seed: int) -> list[dict]:
    """`n` /suggest requests from held-out sentences, as a client sends them: the words before a
    random position as context, 0-3 letters of the next word as prefix. Sentences are reused
    (other positions) when there are fewer than `n`."""
    rng = np.random.default_rng(seed)
    usable = [s for s in sentences if len(s) >= 2]
    if not usable:
        raise ValueError("no sentence of two words or more for the monitor's requests")
    out: list[dict] = []
    while len(out) < n:
        s = usable[int(rng.integers(len(usable)))]
        i = int(rng.integers(1, len(s)))
        word = s[i]
        k = int(rng.integers(0, min(3, len(word)) + 1))
        prefix = word[:k] if word[:k].isalpha() else ""
        out.append({"context": " ".join(s[:i]), "prefix": prefix})
    return out


def finish_keyboard_artifact(artifact: Path, val: Sequence[Sequence[str]], seed: int) -> Path:
    """Add the golden set and the monitor's reference (shared.golden) from validation
    keystrokes: 200 golden requests, 2000 others for the reference."""
    from shared.golden import finish_artifact

    from .predictor import KeyboardPredictor

    reqs = keystroke_requests(val, GOLDEN_REQUESTS + REFERENCE_REQUESTS, seed + 17)
    return finish_artifact(
        artifact,
        lambda p: KeyboardPredictor.load(p, with_spell=False),
        golden_requests=reqs[:GOLDEN_REQUESTS],
        reference_requests=reqs[GOLDEN_REQUESTS:],
    )


def choose_mix_weight(
    nw: KeyboardNextWord,
    vocab: KeyboardVocab,
    ids: np.ndarray,
    words: list[str],
    pos: np.ndarray,
    weights: Sequence[float],
) -> tuple[float, dict[float, float]]:
    """The trigram weight w in (1 - w) P_lstm + w P_trigram with the best top-1 on these words
    (validation). Returns (w, {w: top-1}). One pass: both distributions once per block."""
    scorer = NextWordScorer(nw, ids)
    target = np.array([vocab.stoi.get(w, 0) for w in words], np.int64)  # 0 = <unk>: a miss
    hits = dict.fromkeys(weights, 0)
    for i in range(0, len(pos), 512):
        pa = np.exp(scorer.lstm.batch_logp(pos[i : i + 512]))  # (n, V)
        pb = np.exp(scorer.kn.batch_logp(pos[i : i + 512]))  # (n, V)
        pa[:, :2] = pb[:, :2] = 0.0  # <unk>, <s> are never suggested
        t = target[i : i + 512]
        for w in weights:
            guess = ((1 - w) * pa + w * pb).argmax(1)  # (n,); top-1 needs no log
            hits[w] += int(((guess == t) & (t != 0)).sum())
    top1 = {w: h / max(len(words), 1) for w, h in hits.items()}
    return max(weights, key=lambda w: (top1[w], -w)), top1


def validation_table(
    cfg: KeyboardConfig,
    candidates: dict,
    vocab: KeyboardVocab,
    sentences: Sequence[Sequence[str]],
    log: Callable[[str], None] = print,
) -> tuple[dict[str, dict[str, float]], dict[float, float]]:
    """Score every candidate on (up to `cfg.val_words` of) the validation split; the mixture's
    trigram weight is picked here first. Returns (rows, the mixture's top-1 per weight)."""
    stream = test_stream(sentences, vocab, cfg.val_words)
    ids, words, pos = stream
    mix_top1: dict[float, float] = {}
    if "mix" in candidates:
        nw = candidates["mix"].next_word
        nw.mix_weight, mix_top1 = choose_mix_weight(nw, vocab, ids, words, pos, cfg.mix_weights)
        log(f"  mix: trigram weight {nw.mix_weight:g} (validation top-1 by weight {mix_top1})")
    rows = {}
    for name, cand in candidates.items():
        row, _ = score_next_word(
            cand.next_word, vocab, stream, cfg.ksr_words, cfg.latency_keystrokes
        )
        rows[name] = {**row, "model_bytes": cand.n_bytes}
        log(f"  validation {name}: {rows[name]}")
    return rows, mix_top1


def choose_shipped(
    rows: dict[str, dict[str, float]], budget_bytes: int, budget_ms: float
) -> tuple[str, dict[str, str]]:
    """The candidate that ships, and why each row did or did not.

    rows: name -> {"top1", "ksr", "model_bytes", "ms_per_keystroke_p95"}, measured on
    validation. A row fits when model_bytes <= budget_bytes and its p95 <= budget_ms. Among the
    rows that fit, the highest top-1 rounded to three decimals wins, the higher keystroke
    savings breaking a tie (top-1 moves +-0.002 between runs on 20-50K words, so a smaller
    gap is no evidence). Raises CasebookError when nothing fits.
    """
    why: dict[str, str] = {}
    fits = []
    for name, r in rows.items():
        over = []
        if r["model_bytes"] > budget_bytes:
            over.append(f"{r['model_bytes']:,} bytes > {budget_bytes:,}")
        if r["ms_per_keystroke_p95"] > budget_ms:
            over.append(f"p95 {r['ms_per_keystroke_p95']:.2f} ms > {budget_ms:g}")
        if over:
            why[name] = "over budget: " + ", ".join(over)
        else:
            fits.append(name)
    if not fits:
        raise CasebookError(
            "no next-word candidate fits the phone budget: "
            + "; ".join(f"{n} {w}" for n, w in why.items())
        )
    ranked = sorted(fits, key=lambda n: (round(rows[n]["top1"], 3), rows[n]["ksr"]), reverse=True)
    best = ranked[0]
    why[best] = f"ships: best validation top-1 ({rows[best]['top1']:.4f}) within the budget"
    for n in ranked[1:]:
        tie = round(rows[n]["top1"], 3) == round(rows[best]["top1"], 3)
        why[n] = (
            f"fits; top-1 {rows[n]['top1']:.4f} ties to 3 decimals, lower ksr {rows[n]['ksr']:.4f}"
            if tie
            else f"fits; lower validation top-1 ({rows[n]['top1']:.4f})"
        )
    return best, why


@dataclass
class KeyboardTrained:
    """What `train` built: the models, the candidate table on validation, the artifact."""

    vocab: KeyboardVocab
    kn: KeyboardKneserNey
    lstm: KeyboardLSTM
    lstm_info: dict
    error_model: KeyboardErrorModel
    candidates: dict[str, KeyboardCandidate]
    validation: dict[str, dict[str, float]]  # candidate -> top1, ksr, bytes, p95 (validation)
    mix_top1: dict[float, float]  # trigram weight -> validation top-1 of the mixture
    why: dict[str, str]  # candidate -> why it ships or not
    shipped: str
    artifact: Path
    fingerprint: str
    timings: dict[str, float]


def train(
    cfg: KeyboardConfig,
    corpus: KeyboardCorpus,
    artifact_dir: Path,
    seed: int = 0,
    spell_train: Sequence[tuple[str, str]] = (),
    log: Callable[[str], None] = print,
) -> KeyboardTrained:
    """Every model, the validation table, the choice, and the artifact of the one that ships."""
    from shared.artifacts import fingerprint_arrays

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    vocab = KeyboardVocab.build(corpus.train, cfg.vocab_size, cfg.min_count)
    kn = KeyboardKneserNey(vocab, cfg.kn_discount).fit(corpus.train)
    timings["kn_fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lstm, info = train_lm(cfg, corpus, vocab, seed, log)
    timings["lstm_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    error_model = train_error_model(cfg, seed, spell_train)
    timings["error_model_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    candidates = build_candidates(cfg, lstm, kn)
    rows, mix_top1 = validation_table(cfg, candidates, vocab, corpus.val, log)
    shipped, why = choose_shipped(rows, cfg.phone_budget_bytes, cfg.phone_budget_ms)
    log(f"  ships: {shipped} ({why[shipped]})")
    timings["choice_s"] = time.perf_counter() - t0
    fingerprint = fingerprint_arrays(token_stream(corpus.train, vocab))
    config = {**cfg.to_dict(), "vocab_len": len(vocab), "train_info": info, "corpus": corpus.name}
    metrics = {"validation": rows, "shipped": shipped}
    artifact = save_shipped(
        artifact_dir, candidates[shipped], vocab, error_model, config, metrics, fingerprint
    )
    finish_keyboard_artifact(artifact, corpus.val, seed)
    return KeyboardTrained(
        vocab, kn, lstm, info, error_model, candidates, rows, mix_top1, why, shipped,
        artifact, fingerprint, timings,
    )  # fmt: skip
