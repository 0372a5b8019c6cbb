"""Training: the trigger, the response set, the dual encoders, compose; ends in an artifact.

    models = train(cfg, train_data, val_data, seed)     # every scorer, chosen on validation
    shipped = build_artifact(models, cfg, train_data, val_data, seed, out)  # precision on val

MiniLM on two shared CPU cores is the expensive part, so by default (`fast`) it is frozen:
  - its pooled embedding of every text is computed once (`PooledInputs`), and only the two
    residual tower heads train on them (`fit_adapter`: large batches, whole epochs, seconds);
  - those heads are part of the exported message tower, so serving is unchanged.
With `finetune` (`full`) the top layers are then fine-tuned (from the adapters when they read the
last layer only, else from zero-shot MiniLM):
  - the lower `6 - train_layers` transformer layers are frozen and their outputs are computed
    once per text (fp16 cache); each step runs only the top layers and the two tower heads
    (about a third of a full forward + backward);
  - dynamic padding, at most `max_len` word pieces;
  - a time cap that grows with the data (`time_cap_s + time_per_pair_s * pairs`, at most
    `max_time_cap_s`) and early stopping on validation 1-of-100, keeping the best weights.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import evaluate as ev
from .baseline import BM25Scorer, MostFrequentScorer
from .data import trigger_labels
from .model import (
    SmartReplyMiniLM,
    SmartReplyScratch,
    export_message_tower,
    in_batch_loss,
    load_tokenizer,
    mean_pool,
    minilm_dir,
    tokenize,
)
from .predictor import encode_texts, polarity, trigger_features, trigger_tokens
from .responses import build_response_set, cluster_responses

# ----------------------------------------------------------------------------- encoder inputs


class MiniLMInputs:
    """Frozen lower layers computed once per text; `encode` runs the trainable top layers."""

    def __init__(self, model: SmartReplyMiniLM, tokenizer, max_len: int, train_layers: int):
        self.model, self.tokenizer, self.max_len = model, tokenizer, max_len
        layers = model.body.encoder.layer
        self.n_frozen = len(layers) - train_layers
        for p in model.body.embeddings.parameters():
            p.requires_grad_(False)
        for layer in layers[: self.n_frozen]:
            for p in layer.parameters():
                p.requires_grad_(False)

    @staticmethod
    def _mask(mask: torch.Tensor) -> torch.Tensor:
        # (B, T) -> (B, 1, 1, T) additive mask: 0 where attended, -1e9 on padding.
        return (1.0 - mask[:, None, None, :].float()) * -1e9

    @torch.no_grad()
    def prepare(self, texts: list[str], desc: str = "") -> list[torch.Tensor]:
        """Per text, the (T_i, 384) fp16 hidden states after the frozen layers."""
        out: list[torch.Tensor | None] = [None] * len(texts)
        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        body = self.model.body.eval()
        for s in tqdm(range(0, len(texts), 128), desc=desc, leave=False, disable=not desc):
            idx = order[s : s + 128]
            ids, mask = tokenize(self.tokenizer, [texts[i] for i in idx], self.max_len)
            h = body.embeddings(input_ids=ids)  # (B, T, 384)
            for layer in body.encoder.layer[: self.n_frozen]:
                h = layer(h, attention_mask=self._mask(mask))
            lengths = mask.sum(1)
            for r, i in enumerate(idx):
                out[i] = h[r, : lengths[r]].half().clone()
        return out

    def encode(self, feats: list[torch.Tensor], tower: str) -> torch.Tensor:
        """(B, D) unit embeddings from cached states (gradients flow into the top layers)."""
        t = max(len(f) for f in feats)
        h = torch.zeros(len(feats), t, feats[0].shape[1])  # (B, T, 384)
        mask = torch.zeros(len(feats), t, dtype=torch.long)
        for i, f in enumerate(feats):
            h[i, : len(f)] = f.float()
            mask[i, : len(f)] = 1
        for layer in self.model.body.encoder.layer[self.n_frozen :]:
            h = layer(h, attention_mask=self._mask(mask))
        x = torch.nn.functional.normalize(mean_pool(h, mask), dim=-1)  # (B, 384)
        x = self.model.message_head(x) if tower == "message" else self.model.reply_head(x)
        return torch.nn.functional.normalize(x, dim=-1)


class PooledInputs:
    """The whole MiniLM frozen: one pooled (384,) vector per text, computed once by `prepare`;
    `encode` runs only the tower heads (the adapters), so a training step costs microseconds.

    `cache` (text -> row, shared by inputs over the same body) keeps evaluation from running
    MiniLM again over texts that training already embedded."""

    def __init__(self, model: SmartReplyMiniLM, tokenizer, max_len: int, cache=None):
        self.model, self.tokenizer, self.max_len = model, tokenizer, max_len
        self.cache: dict[str, torch.Tensor] = {} if cache is None else cache
        for p in model.body.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def prepare(self, texts: list[str], desc: str = "") -> torch.Tensor:
        """(N, L * 384) fp16 `SmartReplyMiniLM.features` (the encoder before its heads); fp16
        halves the cache (1.4 GB for 150K texts over 6 layers) at ~1e-3 of a cosine."""
        # Texts not embedded yet, similar lengths together (less padding), in a fixed order.
        new = sorted({t for t in texts if t not in self.cache}, key=lambda t: (len(t), t))
        self.model.body.eval()
        for s in tqdm(range(0, len(new), 64), desc=desc, leave=False, disable=not desc):
            chunk = new[s : s + 64]
            ids, mask = tokenize(self.tokenizer, chunk, self.max_len)
            x = self.model.features(ids, mask).half()  # (B, L * 384)
            self.cache.update(zip(chunk, x, strict=True))  # rows are views of x: no copy
        if not texts:
            return torch.zeros(0, self.model.message_head.linear.in_features, dtype=torch.half)
        return torch.stack([self.cache[t] for t in texts])

    def encode(self, feats, tower: str) -> torch.Tensor:
        """(B, L * 384) prepared rows (a tensor or a list of rows) -> (B, 384) unit embeddings."""
        x = (feats if isinstance(feats, torch.Tensor) else torch.stack(list(feats))).float()
        x = self.model.message_head(x) if tower == "message" else self.model.reply_head(x)
        return torch.nn.functional.normalize(x, dim=-1)


class ScratchInputs:
    """Word-piece ids per text; `encode` runs the whole small model."""

    def __init__(self, model: SmartReplyScratch, tokenizer, max_len: int):
        self.model, self.tokenizer, self.max_len = model, tokenizer, max_len

    def prepare(self, texts: list[str], desc: str = "") -> list[np.ndarray]:
        ids, mask = tokenize(self.tokenizer, texts, self.max_len)
        return [ids[i, : int(mask[i].sum())] for i in range(len(texts))]

    def encode(self, feats: list, tower: str) -> torch.Tensor:
        t = max(len(f) for f in feats)
        ids = torch.zeros(len(feats), t, dtype=torch.long)
        mask = torch.zeros(len(feats), t, dtype=torch.long)
        for i, f in enumerate(feats):
            ids[i, : len(f)] = f
            mask[i, : len(f)] = 1
        return self.model.encode(ids, mask, tower)


@torch.no_grad()
def embed(inputs, feats: list, tower: str, batch: int = 256) -> np.ndarray:
    """(N, D) float32 unit embeddings of prepared texts, in eval mode."""
    inputs.model.eval()
    order = np.argsort([len(f) for f in feats])
    out = np.zeros((len(feats), inputs.model.dim), dtype=np.float32)
    for s in range(0, len(feats), batch):
        idx = order[s : s + batch]
        out[idx] = inputs.encode([feats[i] for i in idx], tower).numpy()
    return out


class EncoderScorer:
    """score_matrix for a trained encoder: cosine of message and reply embeddings."""

    def __init__(self, inputs):
        self.inputs = inputs

    def embed(self, texts: list[str], tower: str) -> np.ndarray:
        """(N, D) unit embeddings of raw texts by one tower (torch, eval mode)."""
        return embed(self.inputs, self.inputs.prepare(texts), tower)

    def score_matrix(self, messages: list[str], replies: list[str]) -> np.ndarray:
        return self.embed(messages, "message") @ self.embed(replies, "reply").T  # (N, R)


# ----------------------------------------------------------------------------- fine-tuning


@dataclass
class ValSet:
    """Validation pairs prepared once for an encoder, with their 1-of-100 candidates."""

    m: list
    r: list
    rows: np.ndarray
    cands: np.ndarray

    def score(self, inputs) -> float:
        me = embed(inputs, [self.m[i] for i in self.rows], "message")  # (P, D)
        re_ = embed(inputs, self.r, "reply")  # (N, D)
        s = np.einsum("pd,pcd->pc", me, re_[self.cands])  # (P, C)
        return float(ev.rank_metrics(s)[0].mean())


def choose_production(val_1of100: dict[str, float], n_val: int, cheapest: str) -> str:
    """The encoder with the best validation 1-of-100, unless `cheapest` is within noise of it.

    Noise: two standard errors of a proportion at the best score, 2 sqrt(p (1 - p) / n_val). A
    MiniLM tower costs several times the CPU per request of the scratch encoder (on built-in data,
    served fp32, /suggest measured p99 51 ms at 8 in flight against a 50 ms target), so a gain
    smaller than that does not pay for it: on 161 built-in validation pairs 0.078 against 0.055
    is a tie (2 SE = 0.042); on 916 DailyDialog pairs 0.353 against the scratch encoder is not.
    """
    best = max(val_1of100, key=lambda n: val_1of100[n])
    if cheapest not in val_1of100 or best == cheapest:
        return best
    p = val_1of100[best]
    noise = 2.0 * float(np.sqrt(max(p * (1.0 - p), 0.0) / max(n_val, 1)))
    return cheapest if p - val_1of100[cheapest] < noise else best


def time_cap(cfg, n_pairs: int) -> float:
    """The fine-tuning budget in seconds: grows with the data, bounded."""
    return min(cfg.max_time_cap_s, cfg.time_cap_s + cfg.time_per_pair_s * n_pairs)


def fit_encoder(
    inputs,
    train_m,
    train_r,
    val: ValSet,
    *,
    lr,
    batch_size,
    epochs,
    cap_s,
    eval_every,
    patience,
    scale,
    symmetric,
    seed,
    desc,
    warmup: float = 0.0,
) -> dict:
    """In-batch softmax training with early stopping on validation 1-of-100.

    Returns {"history": [(seconds, val 1-of-100)], "best": float, "steps": int, "seconds": float,
    "stopped": "patience" | "time cap" | "epochs"}; the model ends with its best weights.
    """
    model = inputs.model
    n = len(train_m)
    steps_per_epoch = max(1, n // batch_size)
    opt, sched = _adamw_with_warmup(model, lr, warmup, steps_per_epoch)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    best = val.score(inputs)
    history = [(0.0, best)]
    best_state = copy.deepcopy({k: v for k, v in model.state_dict().items()})
    t0, step, bad, stopped = time.perf_counter(), 0, 0, "epochs"
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, leave=False)
    for _epoch in range(epochs):
        perm = rng.permutation(n)
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            model.train()
            m = inputs.encode([train_m[i] for i in idx], "message")  # (B, D)
            r = inputs.encode([train_r[i] for i in idx], "reply")  # (B, D)
            loss = in_batch_loss(m, r, scale, symmetric)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{best:.3f}")
            elapsed = time.perf_counter() - t0
            if step % eval_every == 0 or elapsed > cap_s:
                v = val.score(inputs)
                history.append((time.perf_counter() - t0, v))
                if v > best:
                    best, bad = v, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                if bad >= patience:
                    stopped = "patience"
                    break
                if elapsed > cap_s:
                    stopped = "time cap"
                    break
        else:
            continue
        break
    bar.close()
    if stopped == "epochs" and step % eval_every:
        v = val.score(inputs)
        history.append((time.perf_counter() - t0, v))
        if v > best:
            best, best_state = v, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return _fit_record(history, best, step, t0, stopped)


def _adamw_with_warmup(model, lr: float, warmup: float, steps_per_epoch: int):
    """AdamW over the trainable weights, with a linear warm-up over the first `warmup` share of
    an epoch (sentence-transformers' 10%): the first steps' large, noisy updates would otherwise
    undo the pre-trained geometry."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ramp = max(1, round(warmup * steps_per_epoch))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / ramp))


def _fit_record(history, best: float, steps: int, t0: float, stopped: str, **extra) -> dict:
    """What fit_encoder and fit_adapter return (seconds since t0, a perf_counter reading)."""
    return {
        "history": history,
        "best": best,
        "steps": steps,
        "seconds": time.perf_counter() - t0,
        "stopped": stopped,
        **extra,
    }


def fit_adapter(inputs: PooledInputs, train_m, train_r, val: ValSet, cfg, seed: int) -> dict:
    """Train the two residual heads on frozen, prepared (N, 384) embeddings.

    The in-batch softmax of `model.in_batch_loss` (symmetric) with a learned temperature
    (logits = exp(t) * cosine, t starting at log(cfg.scale)); `cfg.adapter_batch_size` pairs a
    step, whole epochs, early stopping on validation 1-of-100 after each epoch (best weights
    kept). Returns fit_encoder's record, plus the learned "scale".
    """
    model = inputs.model
    heads = [*model.message_head.parameters(), *model.reply_head.parameters()]
    log_scale = torch.nn.Parameter(torch.tensor(float(np.log(cfg.scale))))
    opt = torch.optim.AdamW(
        [*heads, log_scale], lr=cfg.adapter_lr, weight_decay=cfg.adapter_weight_decay
    )
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    best = val.score(inputs)
    history = [(0.0, best)]
    keys = [k for k in model.state_dict() if "head" in k]  # the body never changes
    snap = lambda: {k: v.detach().clone() for k, v in model.state_dict().items() if k in keys}  # noqa: E731
    best_state, best_scale = snap(), cfg.scale
    n = len(train_m)
    bs = min(cfg.adapter_batch_size, n)
    t0, step, bad, stopped = time.perf_counter(), 0, 0, "epochs"
    for _epoch in range(cfg.adapter_epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(n))
        for b in range(max(1, n // bs)):  # whole batches only: every step has bs - 1 negatives
            idx = perm[b * bs : (b + 1) * bs]
            m = inputs.encode(train_m[idx], "message")  # (B, 384)
            r = inputs.encode(train_r[idx], "reply")  # (B, 384)
            loss = in_batch_loss(m, r, log_scale.exp().clamp(max=100.0), symmetric=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        v = val.score(inputs)
        history.append((time.perf_counter() - t0, v))
        if v > best:
            best, bad, best_state, best_scale = v, 0, snap(), float(log_scale.detach().exp())
        else:
            bad += 1
        if bad >= cfg.adapter_patience:
            stopped = "patience"
            break
        if time.perf_counter() - t0 > cfg.adapter_time_cap_s:
            stopped = "time cap"
            break
    model.load_state_dict(best_state, strict=False)
    model.eval()
    return _fit_record(history, best, step, t0, stopped, scale=best_scale)


# ----------------------------------------------------------------------------- trigger


@dataclass
class Trigger:
    """Logistic regression on TF-IDF uni/bigrams (+ question and length markers)."""

    vocab: list[str]
    idf: np.ndarray
    w: np.ndarray
    b: float
    threshold: float

    def proba(self, texts: list[str]) -> np.ndarray:
        x = trigger_features(texts, {t: i for i, t in enumerate(self.vocab)}, self.idf)
        return 1.0 / (1.0 + np.exp(-(x @ self.w + self.b)))


def train_trigger(train, val, cfg, seed: int) -> Trigger:
    """Fit on train; the threshold maximises F0.5 on validation (precision counts double: a
    wrong suggestion costs attention, a missing one only a few keystrokes)."""
    from collections import Counter

    from sklearn.linear_model import LogisticRegression

    texts, y = trigger_labels(train, cfg)
    df = Counter(t for x in texts for t in set(trigger_tokens(x)))
    vocab = [t for t, c in df.most_common(cfg.trigger_vocab) if c >= 2]
    idf = np.log((1 + len(texts)) / (1 + np.array([df[t] for t in vocab], float))) + 1
    idf = idf.astype(np.float32)
    index = {t: i for i, t in enumerate(vocab)}
    x = trigger_features(texts, index, idf)
    if len(set(y.tolist())) < 2:  # one class only: always (or never) suggest
        return Trigger(vocab, idf, np.zeros(len(vocab), np.float32), 10.0 if y[0] else -10.0, 0.5)
    lr = LogisticRegression(C=4.0, max_iter=500, random_state=seed).fit(x, y)
    w, b = lr.coef_[0].astype(np.float32), float(lr.intercept_[0])
    trig = Trigger(vocab, idf, w, b, 0.5)
    vt, vy = trigger_labels(val, cfg)
    p = trig.proba(vt)
    best = (-1.0, 0.5)
    for th in np.linspace(0.05, 0.95, 19):
        on = p >= th
        prec = (on & (vy == 1)).sum() / max(on.sum(), 1)
        rec = (on & (vy == 1)).sum() / max(vy.sum(), 1)
        f = 1.25 * prec * rec / max(0.25 * prec + rec, 1e-12)
        best = max(best, (f, float(th)))
    trig.threshold = best[1]
    return trig


# ----------------------------------------------------------------------------- the whole fit


@dataclass
class SmartReplyModels:
    """Everything `train` fits; `scorers` map a row name of the report to a scorer."""

    scorers: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)  # encoder name -> MiniLMInputs / ScratchInputs
    val_1of100: dict = field(default_factory=dict)
    fits: dict = field(default_factory=dict)  # encoder name -> fit_encoder's record
    production: str = ""
    trigger: Trigger | None = None
    responses: object = None
    reply_emb: np.ndarray | None = None
    clusters: np.ndarray | None = None
    polarities: np.ndarray | None = None
    compose: object = None
    seq2seq: object = None
    tokenizer: object = None
    timings: dict = field(default_factory=dict)


def _val_set(inputs, val, cfg, seed) -> ValSet:
    rows, cands = ev.candidate_table(len(val), cfg.n_candidates, cfg.max_val_pairs, seed + 1)
    msgs = val.model_messages(cfg.context_turns)
    return ValSet(inputs.prepare(msgs), inputs.prepare(val.replies), rows, cands)


def train(cfg, train_data, val_data, seed: int = 0, log=print) -> SmartReplyModels:
    """Fit the trigger, baselines, encoders, response set and compose; choose production on
    validation 1-of-100 among the servable encoders. Runs with `cfg.threads` torch threads."""
    from shared.lifecycle import torch_threads

    with torch_threads(cfg.threads):
        return _train(cfg, train_data, val_data, seed, log)


def _train(cfg, train_data, val_data, seed: int, log) -> SmartReplyModels:
    out = SmartReplyModels()
    # The scorers read each message with its earlier turns (cfg.context_turns); the trigger and
    # compose read the message alone.
    tm, tr_ = train_data.model_messages(cfg.context_turns), train_data.replies
    _train_trigger_and_baselines(out, cfg, train_data, val_data, tm, seed)
    out.tokenizer = load_tokenizer(minilm_dir() if cfg.use_minilm else None)
    if cfg.use_minilm:
        zero, adapted = _train_minilm_adapter(out, tm, tr_, val_data, cfg, seed, log)
    if cfg.use_minilm and cfg.finetune:
        # The top-layer fine-tuning reads the last layer only (its cache holds no lower pools):
        # it starts from the adapters when they read the last layer only too, else zero-shot.
        start = adapted.model if not zero.pool_layers else SmartReplyMiniLM(zero.body)
        _finetune_minilm(out, start, tm, tr_, val_data, cfg, seed, log)
    _train_scratch(out, tm, tr_, val_data, cfg, seed, log)
    for name, rec in out.fits.items():
        out.val_1of100[name] = rec["best"]
    for name, inp in out.inputs.items():
        out.scorers[name] = EncoderScorer(inp)
    # The shipped scorer: best validation 1-of-100 among the encoders trained at the main batch
    # size (the study's other batch sizes are measurements, not candidates), unless the cheap
    # scratch encoder is within noise of it.
    candidates = {n: v for n, v in out.val_1of100.items() if "_b" not in n}
    n_val = min(len(val_data), cfg.max_val_pairs)
    out.production = choose_production(candidates, n_val, cheapest="scratch_dual_encoder")
    _build_responses(out, tr_, train_data.threads, cfg, seed)
    _train_compose_and_seq2seq(out, train_data, cfg, seed)
    return out


def _train_trigger_and_baselines(out, cfg, train_data, val_data, tm, seed: int) -> None:
    """The trigger (threshold on validation) and the two baseline scorers."""
    t0 = time.perf_counter()
    out.trigger = train_trigger(train_data, val_data, cfg, seed)
    out.timings["trigger_s"] = time.perf_counter() - t0
    for name, scorer in (("most_frequent", MostFrequentScorer()), ("bm25", BM25Scorer())):
        out.scorers[name] = scorer.fit(tm, train_data.replies, train_data.threads)


def _train_minilm_adapter(out, tm, tr_, val_data, cfg, seed: int, log):
    """MiniLM zero-shot, and frozen with trained adapters; returns both models' inputs."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    zero = SmartReplyMiniLM(pool_layers=tuple(cfg.pool_layers))
    pooled = PooledInputs(zero, out.tokenizer, cfg.max_len)
    pm = pooled.prepare(tm, "MiniLM embeddings (messages)")  # (N, L * 384)
    pr = pooled.prepare(tr_, "MiniLM embeddings (replies)")  # (N, L * 384)
    val = _val_set(pooled, val_data, cfg, seed)
    out.timings["minilm_embed_s"] = time.perf_counter() - t0
    out.inputs["minilm_zero_shot"] = pooled
    out.val_1of100["minilm_zero_shot"] = val.score(pooled)
    adapted = PooledInputs(copy.deepcopy(zero), out.tokenizer, cfg.max_len, pooled.cache)
    log(f"  training minilm_adapter: batch {cfg.adapter_batch_size}")
    rec = fit_adapter(adapted, pm, pr, val, cfg, seed)
    rec["batch_size"] = min(cfg.adapter_batch_size, len(tm))
    out.fits["minilm_adapter"], out.inputs["minilm_adapter"] = rec, adapted
    out.timings["fit_minilm_adapter_s"] = rec["seconds"]
    log(
        f"  minilm_adapter: val 1-of-100 {rec['history'][0][1]:.3f} -> {rec['best']:.3f} "
        f"({rec['steps']} steps, {rec['seconds']:.0f} s, stopped: {rec['stopped']})"
    )
    return zero, adapted


def _train_scratch(out, tm, tr_, val_data, cfg, seed: int, log) -> None:
    """The small encoder from scratch, at each batch size of the study."""
    for k, bs in enumerate(cfg.scratch_batch_sizes):
        name = "scratch_dual_encoder" + ("" if k == 0 else f"_b{bs}")
        torch.manual_seed(seed)
        pieces = np.unique(np.concatenate([e.ids for e in out.tokenizer.encode_batch(tm + tr_)]))
        model = SmartReplyScratch(out.tokenizer.get_vocab_size(), cfg.scratch_dim, pieces)
        inp = ScratchInputs(model, out.tokenizer, cfg.max_len)
        val = _val_set(inp, val_data, cfg, seed)
        rec = fit_encoder(
            inp,
            inp.prepare(tm),
            inp.prepare(tr_),
            val,
            lr=cfg.scratch_lr,
            batch_size=bs,
            epochs=cfg.scratch_epochs,
            cap_s=cfg.scratch_time_cap_s,
            eval_every=max(10, len(tm) // bs),
            patience=cfg.patience,
            scale=cfg.scale,
            symmetric=cfg.symmetric,
            seed=seed,
            desc=name,
        )
        rec["batch_size"] = bs
        out.fits[name], out.inputs[name] = rec, inp
        out.timings[f"fit_{name}_s"] = rec["seconds"]
        log(f"  {name}: val 1-of-100 {rec['best']:.3f} ({rec['seconds']:.0f} s)")


def _build_responses(out, replies, threads, cfg, seed: int) -> None:
    """The response set, embedded by the production reply tower, clustered, with polarities."""
    rs = build_response_set(
        replies,
        threads,
        k_anon=cfg.k_anon,
        max_size=cfg.max_responses,
        max_words=cfg.short_reply_words,
    )
    if len(rs) == 0:
        from shared.errors import DataError

        raise DataError(f"no reply was used by {cfg.k_anon} distinct threads: no response set")
    inp = out.inputs[out.production]
    out.responses = rs
    out.reply_emb = embed(inp, inp.prepare(rs.texts), "reply")
    out.clusters = cluster_responses(out.reply_emb, cfg.n_clusters, seed)
    out.polarities = np.array([polarity(t) for t in rs.texts], dtype=np.int64)


def _train_compose_and_seq2seq(out, train_data, cfg, seed: int) -> None:
    """Smart compose and the seq2seq scorer (the compose engineer's modules)."""
    from .compose import train_compose

    t0 = time.perf_counter()
    pairs = list(zip(train_data.messages, train_data.replies, strict=True))
    # kind="auto": the LSTM and the message-cued trigram both fit, the better on held-out next-word
    # exact match ships (on DailyDialog the trigram: 0.148 against 0.053, see compose.py).
    out.compose = train_compose(
        pairs, time_cap_s=cfg.compose_time_cap_s, seed=seed, threads=1, kind="auto"
    )
    out.timings["fit_compose_s"] = time.perf_counter() - t0
    out.seq2seq = _train_seq2seq(pairs, cfg, seed, out.timings)


def _finetune_minilm(out, start, tm, tr_, val_data, cfg, seed, log) -> None:
    """Fine-tune the top `train_layers` layers and the heads from `start` (the adapters, so step 0
    is the adapter model, or zero-shot MiniLM), at `batch_size` and (if set) `alt_batch_size`."""
    t0 = time.perf_counter()
    model = copy.deepcopy(start)
    for p in model.body.parameters():
        p.requires_grad_(True)  # PooledInputs froze them all; MiniLMInputs refreezes the lower
    inputs = MiniLMInputs(model, out.tokenizer, cfg.max_len, cfg.train_layers)
    feats_m = inputs.prepare(tm, "MiniLM frozen layers (messages)")
    feats_r = inputs.prepare(tr_, "MiniLM frozen layers (replies)")
    val = _val_set(inputs, val_data, cfg, seed)
    out.timings["minilm_cache_s"] = time.perf_counter() - t0
    cap = time_cap(cfg, len(tm))
    runs = [("minilm_dual_encoder", cfg.batch_size, inputs)]
    if cfg.alt_batch_size:
        alt = copy.deepcopy(start)
        for p in alt.body.parameters():
            p.requires_grad_(True)
        alt_inputs = MiniLMInputs(alt, out.tokenizer, cfg.max_len, cfg.train_layers)
        runs.append((f"minilm_dual_encoder_b{cfg.alt_batch_size}", cfg.alt_batch_size, alt_inputs))
    for name, bs, inp in runs:
        log(f"  fine-tuning {name}: batch {bs}, up to {cap:.0f} s")
        rec = fit_encoder(
            inp,
            feats_m,
            feats_r,
            val,
            lr=cfg.lr,
            batch_size=bs,
            epochs=cfg.max_epochs,
            cap_s=cap,
            eval_every=min(cfg.eval_every, max(10, len(tm) // (2 * bs))),
            patience=cfg.patience,
            scale=cfg.scale,
            symmetric=cfg.symmetric,
            seed=seed,
            desc=name,
            warmup=cfg.warmup,
        )
        rec["batch_size"] = bs
        out.fits[name], out.inputs[name] = rec, inp
        out.timings[f"fit_{name}_s"] = rec["seconds"]
        log(
            f"  {name}: val 1-of-100 {rec['history'][0][1]:.3f} -> {rec['best']:.3f} "
            f"({rec['steps']} steps, {rec['seconds']:.0f} s, stopped: {rec['stopped']})"
        )


def _train_seq2seq(pairs, cfg, seed, timings):
    """The LSTM seq2seq scorer, when its module is present (the cost comparison)."""
    import importlib.util

    if importlib.util.find_spec(f"{__package__}.seq2seq") is None:
        return None
    from .seq2seq import train_seq2seq

    t0 = time.perf_counter()
    model = train_seq2seq(pairs, time_cap_s=cfg.seq2seq_time_cap_s, seed=seed)
    timings["fit_seq2seq_s"] = time.perf_counter() - t0
    return model


# ----------------------------------------------------------------------------- artifact


def export_towers(models: SmartReplyModels, cfg, folder: Path) -> tuple[Path, Path]:
    """The production message tower as ONNX fp32 and int8 (dynamic, per-channel scales)."""
    from shared.onnx_utils import check_parity, quantize_dynamic_onnx

    model = models.inputs[models.production].model.eval()
    fp32 = export_message_tower(
        model, models.tokenizer, folder / "message_tower_fp32.onnx", cfg.max_len
    )
    ex = tokenize(
        models.tokenizer, ["Could you send me the slides by Friday?", "Thanks!"], cfg.max_len
    )
    from .model import MessageTower

    check_parity(MessageTower(model), fp32, ex, atol=1e-4)
    # One weight scale per output channel: per tensor cost the adapter tower 2 points (DailyDialog
    # dev, context 1, /tmp/p15/q8.py: validation 1-of-100 0.334 fp32, 0.314 int8 per tensor,
    # 0.330 per channel; per message on one thread, load ~5: fp32 10.6 ms, per tensor 3.2 ms,
    # per channel 3.6 ms).
    int8 = quantize_dynamic_onnx(fp32, folder / "message_tower_int8.onnx", per_channel=True)
    return fp32, int8


def export_reply_tower(models: SmartReplyModels, cfg, folder: Path) -> Path:
    """The production reply tower as ONNX fp32, checked against torch (1e-4): the artifact's
    reply vectors for replies outside the response set (offline scoring of what is served)."""
    from shared.onnx_utils import check_parity

    from .model import ReplyTower

    model = models.inputs[models.production].model.eval()
    path = export_message_tower(
        model, models.tokenizer, Path(folder) / "reply_tower_fp32.onnx", cfg.max_len, "reply"
    )
    ex = tokenize(models.tokenizer, ["Sounds good, see you then.", "No."], cfg.max_len)
    check_parity(ReplyTower(model), path, ex, atol=1e-4)
    return path


def choose_precision(models: SmartReplyModels, val, cfg, seed: int, onnx: dict) -> tuple:
    """The message tower's served precision, chosen on validation: int8 when its 1-of-100 is
    within `cfg.int8_max_drop` of fp32, else fp32. `onnx` maps "fp32"/"int8" to ONNX paths;
    returns (the chosen key, {key: validation 1-of-100}), on the validation candidates that
    chose production (`_val_set`), against the production reply tower."""
    from shared.onnx_utils import make_session

    rows, cands = ev.candidate_table(len(val), cfg.n_candidates, cfg.max_val_pairs, seed + 1)
    val_in = val.model_messages(cfg.context_turns)
    r_val = models.scorers[models.production].embed(val.replies, "reply")  # (N, D)
    onnx_val = {}
    for kind, path in onnx.items():
        sess = make_session(path, threads=1)
        m = []
        for s in range(0, len(rows), 64):
            ids, mask = encode_texts(
                models.tokenizer, [val_in[i] for i in rows[s : s + 64]], cfg.max_len
            )
            m.append(sess.run(None, {"input_ids": ids, "attention_mask": mask})[0])
        s = np.einsum("pd,pcd->pc", np.concatenate(m), r_val[cands])  # (P, C)
        onnx_val[kind] = float(ev.rank_metrics(s)[0].mean())
    served = "int8" if onnx_val["fp32"] - onnx_val["int8"] <= cfg.int8_max_drop else "fp32"
    return served, onnx_val


def data_fingerprint(train_data) -> str:
    """The training pairs' fingerprint (the registry compares it across versions)."""
    from shared.artifacts import fingerprint_arrays

    return fingerprint_arrays(
        np.asarray(train_data.messages, dtype=object).astype(str),
        np.asarray(train_data.replies, dtype=object).astype(str),
    )


@dataclass
class SmartReplyShipped:
    """What `build_artifact` shipped: the artifact, the message tower's precision and why."""

    artifact: Path
    precision: str  # "fp32" | "int8"
    onnx: dict  # "fp32"/"int8" -> the exported message towers (both scored on test)
    onnx_val: dict  # "fp32"/"int8" -> validation 1-of-100
    fingerprint: str


def build_artifact(
    models: SmartReplyModels, cfg, train_data, val_data, seed: int, out: Path, testset: str = ""
) -> SmartReplyShipped:
    """Export the towers, choose the served precision on validation, save the artifact under
    out/artifact and add its golden set and monitor reference: all before the test set is read.
    `testset` names the test data in the artifact's config."""
    fp32, int8 = export_towers(models, cfg, Path(out) / "onnx")
    onnx = {"fp32": fp32, "int8": int8}
    precision, onnx_val = choose_precision(models, val_data, cfg, seed, onnx)
    fingerprint = data_fingerprint(train_data)
    art = save(
        models,
        cfg,
        Path(out) / "artifact",
        onnx[precision],
        fingerprint,
        {"val_1_of_100": onnx_val[precision]},
        {"served_precision": precision, "testset": testset},
    )
    art = finish_monitoring(art, val_data, models.trigger.threshold, seed)
    return SmartReplyShipped(art, precision, onnx, onnx_val, fingerprint)


def save(
    models: SmartReplyModels,
    cfg,
    directory: Path,
    onnx_path: Path,
    fingerprint: str,
    metrics: dict,
    extra_config: dict,
) -> Path:
    """The artifact the server loads: ONNX message tower, tokenizer, response set with its
    embeddings, clusters and polarities, the trigger and the compose model; and the ONNX reply
    tower (fp32), which serving does not read: offline scoring does."""
    from dataclasses import asdict

    from shared.artifacts import save_artifact

    t = {
        "reply_emb": torch.from_numpy(models.reply_emb),
        "clusters": torch.from_numpy(models.clusters.astype(np.int64)),
        "polarities": torch.from_numpy(models.polarities.astype(np.int64)),
        "trigger_w": torch.from_numpy(models.trigger.w.astype(np.float32)),
        "trigger_b": torch.tensor([models.trigger.b], dtype=torch.float32),
        "trigger_idf": torch.from_numpy(models.trigger.idf.astype(np.float32)),
    }
    if models.compose is not None:
        t.update(
            {
                k: torch.from_numpy(np.ascontiguousarray(v))
                for k, v in models.compose.state_arrays().items()
            }
        )
    config = {
        **asdict(cfg),
        **extra_config,
        "production": models.production,
        "trigger_threshold": models.trigger.threshold,
    }
    responses = {
        "texts": models.responses.texts,
        "keys": models.responses.keys,
        "n_threads": models.responses.n_threads.tolist(),
        "k_anon": cfg.k_anon,
        "trigger_vocab": models.trigger.vocab,
    }
    reply_tower = export_reply_tower(models, cfg, Path(onnx_path).parent)
    files = {
        "message_tower.onnx": Path(onnx_path).read_bytes(),
        "reply_tower.onnx": reply_tower.read_bytes(),
        "tokenizer.json": models.tokenizer.to_str().encode("utf-8"),
        "responses.json": json.dumps(responses).encode("utf-8"),
    }
    return save_artifact(directory, t, config, metrics, fingerprint, files)


def finish_monitoring(artifact_dir: Path, val_data, threshold: float, seed: int = 0) -> Path:
    """Add the golden set and the live monitor's reference to a saved artifact (shared.golden).

    Requests are /suggest bodies built from the validation messages (and messages that got no
    reply, which real traffic has too), in a seeded order: the first 200 are the golden set,
    the next (up to 2,000) the monitor's "normal". With fewer than 400, the reference is all of
    them (it then overlaps the golden set: both describe the same traffic). The decision is
    "suggest": trigger probability >= the trigger's threshold.
    """
    from shared.golden import finish_artifact

    from .predictor import SmartReplyPredictor

    texts = list(val_data.messages) + list(val_data.no_reply)
    order = np.random.default_rng(seed + 17).permutation(len(texts))
    reqs = [{"message": texts[i], "k": 3} for i in order]
    golden = reqs[:200]
    reference = reqs[200:2200] if len(reqs) >= 400 else reqs
    return finish_artifact(
        artifact_dir,
        SmartReplyPredictor.load,
        golden_requests=golden,
        reference_requests=reference,
        decision_threshold=float(threshold),
        decision="suggest",
    )
