"""Train the keyboard's models: the LSTM language model and the spelling error model.

    from cases.mobile_keyboard.config import get_config
    from cases.mobile_keyboard.train import train
    model, vocab, info = train(get_config("fast"))           # built-in text, about a minute

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

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from shared.errors import CasebookError

from .config import KeyboardConfig
from .data import KeyboardCorpus, builtin_corpus, generated_spell_pairs
from .model import KeyboardLSTM, KeyboardVocab
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
    (`cfg.select_on`: next-word top-1 or loss)."""
    if cfg.select_on not in ("top1", "nll"):
        raise CasebookError(f"select_on must be 'top1' or 'nll', got {cfg.select_on!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.train_threads))
    try:
        return _train_lm(cfg, corpus, vocab, rng, log)
    finally:
        torch.set_num_threads(threads)


def _train_lm(cfg, corpus, vocab, rng, log):
    """Phase 1: sampled (or full) softmax, cosine schedule, early stopping on validation.
    Phase 2 (sampled runs only): the best phase-1 weights fine-tuned with the full softmax at the
    schedule's final learning rate, kept only if validation improves."""
    model = KeyboardLSTM(len(vocab), cfg.embed_dim, cfg.hidden_dim, cfg.num_layers, cfg.dropout)
    train_ids = token_stream(corpus.train, vocab)
    # Start the output bias at log unigram frequencies: step 0 already predicts like a unigram
    # model, so a short (time-capped) run spends its steps on context, not on word frequency.
    counts = np.bincount(train_ids, minlength=len(vocab)).astype(np.float64) + 1.0
    with torch.no_grad():
        model.head.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())).float())
    # The sampled softmax's proposal: unigram^0.75 (word2vec's choice: rare words get sampled
    # more often than their frequency, so the head learns to push them down too).
    q = torch.from_numpy(counts**0.75 / (counts**0.75).sum()).float()  # (V,)
    log_q = q.log()
    sampled = cfg.softmax_samples > 0
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    val_ids = token_stream(corpus.val, vocab)[:50_000]  # cap the validation cost on big corpora
    starts = window_starts(train_ids, cfg.bptt, vocab.stoi["<s>"])
    steps_per_epoch = max(1, math.ceil(len(starts) / cfg.batch_size))
    t0 = time.perf_counter()
    deadline = t0 + cfg.max_train_minutes * 60
    # A sampled run keeps `full_softmax_frac` of the time for phase 2.
    phase1_deadline = t0 + cfg.max_train_minutes * 60 * (1 - cfg.full_softmax_frac * sampled)
    # Learning rate: linear warm-up then cosine decay to 5% over the planned steps. The plan is
    # all epochs, or, once 30 steps have been timed, as many steps as fit in the time cap, so a
    # capped run still ends with a decayed (well-converged) learning rate.
    planned = steps_per_epoch * cfg.epochs
    warmup = max(1, planned // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        frac = min(1.0, (step - warmup) / max(1, planned - warmup))
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    def loss_of(x, y, full: bool):
        if full:
            logits, _ = model(x)  # (B, T, V); each sequence starts from a zero state
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        z = model.features(x)  # (B, T, E)
        z = z.reshape(-1, z.shape[-1])
        return sampled_softmax_loss(model, z, y.reshape(-1), log_q, q, cfg.softmax_samples)

    def run_epoch(desc, full, until, max_steps, phase1=True):
        """One pass over the windows; phase 1 follows the schedule and keeps the average."""
        final_lr = cfg.lr * 0.05  # the cosine schedule's floor: phase 2 continues from there
        nonlocal step
        model.train()
        bar = tqdm(
            make_batches(train_ids, cfg.bptt, cfg.batch_size, rng, starts),
            total=steps_per_epoch,
            desc=desc,
            disable=None,
            leave=False,
        )
        total, count, done, out_of_time = 0.0, 0, 0, False
        for x, y in bar:
            loss = loss_of(x, y, full)
            for g in opt.param_groups:
                g["lr"] = lr_at(step) if phase1 else final_lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            if ema is not None and phase1:  # phase 1 keeps the running average
                d = min(cfg.ema_decay, (1 + step) / (10 + step))  # short memory at the start
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        ema[name].lerp_(p, 1.0 - d)
            step, done = step + 1, done + 1
            total += float(loss.detach()) * y.numel()
            count += y.numel()
            if step % 30 == 0 and phase1:
                replan(until)
            if time.perf_counter() > until:
                out_of_time = True
                break
            if done >= max_steps:
                break
        return total / max(count, 1), out_of_time

    def replan(until):
        # Re-plan from the measured speed (machine load changes during a run), so the cosine
        # decay ends near the time cap rather than long before it.
        nonlocal planned
        per_step = (time.perf_counter() - t0) / step
        fit = step + int((until - time.perf_counter()) / per_step)
        new_plan = max(min(fit, steps_per_epoch * cfg.epochs), warmup + 1, step + 1)
        if step == 30 and new_plan < planned:
            total_steps = steps_per_epoch * cfg.epochs
            log(f"  lstm: the time cap allows about {new_plan} of {total_steps} steps")
        planned = new_plan

    # Model selection on validation: by next-word top-1 (the product metric) or by loss. They
    # part ways on small corpora: with more epochs the loss rises (rare words get confident
    # and wrong) while top-1 still climbs (frequent phrases get sharper); webtext, dropout 0.3:
    # loss best at epoch 7 (top-1 0.152), top-1 best at epoch 12 (0.159).
    best, best_state, history, kept = float("inf"), None, [], {}
    step, stale, stopped_early, converged = 0, 0, False, False
    # An exponential moving average of the weights (Polyak averaging; AWD-LSTM's averaged SGD
    # is the same idea): the average of the last ~1/(1 - decay) steps generalises better than
    # the last step. Phase 1 validates and keeps the averaged weights.
    ema = None
    if cfg.ema_decay > 0:
        ema = {n: p.detach().clone() for n, p in model.named_parameters()}  # tied: stored once

    def end_epoch(name, train_nll, averaged=False):
        nonlocal best, best_state, stale
        raw = None
        if averaged and ema is not None:
            raw = {n: p.detach().clone() for n, p in model.named_parameters()}
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(ema[n])
        val, top1 = evaluate_lm(model, val_ids)
        history.append({"epoch": name, "train_nll": train_nll, "val_nll": val, "val_top1": top1})
        log(
            f"  lstm epoch {name}: train nll {train_nll:.3f}, "
            f"val nll {val:.3f} (ppl {math.exp(min(val, 50)):.1f}), val top-1 {top1:.4f}"
        )
        score = -top1 if cfg.select_on == "top1" else val  # lower is better
        if score < best:
            best, stale = score, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            kept.update(val_nll=val, val_top1=top1, epoch=name)
        else:
            stale += 1
        if raw is not None:  # training goes on from the raw weights
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(raw[n])

    for epoch in range(cfg.epochs):
        desc = f"lstm epoch {epoch + 1}/{cfg.epochs}" + (" (sampled)" if sampled else "")
        train_nll, out_of_time = run_epoch(desc, not sampled, phase1_deadline, 10**12)
        end_epoch(str(epoch + 1), train_nll, averaged=True)
        if out_of_time:
            stopped_early = True
            log(f"  lstm: phase 1 stopped at its share of the {cfg.max_train_minutes} min cap")
            break
        if stale >= cfg.patience:
            converged = True
            log(f"  lstm: validation has not improved for {cfg.patience} epochs: stopping")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
        model.head.weight = model.embed.weight
    phase1_steps = step
    if sampled and best_state is not None:
        # Phase 2: the full softmax at the final learning rate, up to one epoch (or the cap).
        n = max(1, min(steps_per_epoch, int(phase1_steps * cfg.full_softmax_frac)))
        train_nll, _ = run_epoch("lstm full softmax", True, deadline, n, phase1=False)
        end_epoch("full-softmax", train_nll)
        model.load_state_dict(best_state)  # best_state is the better of the two phases
        model.head.weight = model.embed.weight
    model.eval()
    info = {
        "history": history,
        "selected_on": cfg.select_on,
        "best_epoch": kept.get("epoch"),
        "best_val_nll": kept.get("val_nll", float("nan")),
        "best_val_top1": kept.get("val_top1", float("nan")),
        "train_seconds": time.perf_counter() - t0,
        "train_tokens": int(len(train_ids)),
        "steps": step,
        "phase1_steps": phase1_steps,
        "n_params": model.n_params(),
        "stopped_early": stopped_early,
        "converged": converged,
    }
    return model, info


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


def train(
    cfg: KeyboardConfig,
    corpus: KeyboardCorpus | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[KeyboardLSTM, KeyboardVocab, dict]:
    """Train the LSTM on `corpus` (built-in text when None); returns (model, vocab, info)."""
    if corpus is None:
        corpus = builtin_corpus(cfg.n_messages, seed, cfg.split_fractions)
    vocab = KeyboardVocab.build(corpus.train, cfg.vocab_size, cfg.min_count)
    model, info = train_lm(cfg, corpus, vocab, seed, log)
    return model, vocab, info
