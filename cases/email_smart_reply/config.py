"""The case's configuration: one typed dataclass and its named presets.

`fast` (the default) keeps `casebook run email-smart-reply` under 3 minutes on built-in data:
MiniLM frozen with a trained adapter per tower; `full` also fine-tunes MiniLM's top layers for a
time that grows with the data, at two batch sizes; `tiny` is for tests (seconds, no MiniLM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from shared.errors import CasebookError


@dataclass(frozen=True)
class SmartReplyConfig:
    # --- built-in data ---
    n_threads: int = 1500  # generated email threads (each gives 1-3 message -> reply pairs)
    threads: int = 1  # torch intra-op threads (see cli.run for the measurement)
    # --- splits (by thread: no thread on both sides) ---
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # --- data gate ---
    gate_batches: int = 5  # the training input is checked in this many file-order batches
    # --- evaluation (Henderson et al. 2019) ---
    n_candidates: int = 100  # 1-of-100: the true reply + 99 random replies of other test pairs
    max_eval_pairs: int = 2000  # test pairs scored (the protocol's cap)
    max_val_pairs: int = 1000  # validation pairs for early stopping and model choice
    n_boot: int = 300  # bootstrap resamples for cohort intervals
    # --- text ---
    max_len: int = 64  # word pieces per text; DailyDialog turns average ~15
    # earlier turns of the thread the message tower reads after the message ([SEP]-joined;
    # data formats without threads have none). Chosen on DailyDialog validation (README 6).
    context_turns: int = 1
    use_minilm: bool = True  # False: only the from-scratch encoder (tests, no weights needed)
    # --- dual encoder, MiniLM frozen + trained adapters (the cheap default; README 4) ---
    # The whole MiniLM runs once per text (pooled vectors cached); only the two residual heads
    # train, so steps are cheap: a large batch (more in-batch negatives) and many epochs.
    # hidden states whose mean pools the adapters read (0 = embeddings .. 6 = last layer, last);
    # layers 1-6 beat the last layer alone on DailyDialog validation, 0.353 vs 0.334 (README 6)
    pool_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    adapter_lr: float = 1e-4  # AdamW; weight decay pulls the heads back to the identity
    adapter_weight_decay: float = 0.01
    adapter_batch_size: int = 512  # pairs per step: 511 in-batch negatives per message
    adapter_epochs: int = 100
    adapter_patience: int = 10  # epochs without a validation gain (noisy curve: 5 stopped early)
    adapter_time_cap_s: float = 300.0
    # --- dual encoder, MiniLM top layers fine-tuned (off in `fast`: on DailyDialog dev it
    # spent its 610 s cap for a lower validation 1-of-100 than the adapters, README 6) ---
    finetune: bool = False  # True: also fine-tune the top layers (train._finetune_minilm)
    train_layers: int = 2  # top MiniLM layers fine-tuned (of 6); the rest frozen and cached
    lr: float = 1e-4  # AdamW; 2e-5..1e-4 is the usual range for MiniLM fine-tuning
    warmup: float = 0.1  # linear lr warm-up over this share of the first epoch
    batch_size: int = 32  # pairs per step; in-batch softmax has batch_size - 1 negatives
    alt_batch_size: int = 0  # > 0: also fine-tune MiniLM at this batch size (batch-size study)
    scale: float = 20.0  # logits = scale * cosine (sentence-transformers' MNRL default)
    symmetric: bool = True  # loss over message->reply and reply->message softmaxes
    max_epochs: int = 4
    eval_every: int = 100  # steps between validation checks (early stopping); at most half an epoch
    patience: int = 3  # validation checks without improvement before stopping
    time_cap_s: float = 30.0  # base fine-tuning budget, seconds ...
    time_per_pair_s: float = 0.08  # ... plus this per training pair (~0.75 s per 32-pair step)
    max_time_cap_s: float = 1500.0  # never more than this
    # --- small encoder from scratch (fallback and comparison) ---
    scratch_dim: int = 128  # embedding width
    scratch_lr: float = 2e-3
    scratch_epochs: int = 30
    scratch_batch_sizes: tuple[int, ...] = (64, 8)  # first trained for use, the rest for the study
    scratch_time_cap_s: float = 40.0
    # --- triggering ---
    trigger_vocab: int = 5000  # uni- and bigrams kept for the logistic-regression trigger
    short_reply_words: int = (
        12  # a reply this short or shorter is one a suggestion can stand in for
    )
    # --- response set ---
    k_anon: int = 3  # a reply enters only if at least this many distinct threads used it
    max_responses: int = 2000
    n_clusters: int = 40  # semantic clusters of the response set (diversity)
    shortlist: int = 20  # responses fetched from faiss before the diversity step
    # --- smart compose and the seq2seq scorer (compose engineer's modules) ---
    compose_time_cap_s: float = 20.0
    compose_eval_pairs: int = 500  # test pairs for the compose exact-match figures
    seq2seq_time_cap_s: float = 20.0
    seq2seq_eval_pairs: int = 300  # test rows the LSTM scores (100 teacher-forced replies each)
    # --- serving ---
    int8_max_drop: float = 0.01  # keep the int8 message tower within 1 point of fp32 1-of-100


PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    "full": {
        "finetune": True,
        "max_epochs": 8,
        "patience": 4,
        "time_per_pair_s": 0.2,
        "max_time_cap_s": 5400.0,
        "alt_batch_size": 8,
        "compose_time_cap_s": 120.0,
        "seq2seq_time_cap_s": 120.0,
    },
    "tiny": {
        "n_threads": 500,
        "use_minilm": False,
        "max_eval_pairs": 300,
        "max_val_pairs": 200,
        "n_boot": 50,
        "scratch_dim": 64,
        "scratch_lr": 5e-3,
        "scratch_epochs": 20,
        "scratch_batch_sizes": (32,),
        "scratch_time_cap_s": 15.0,
        "n_clusters": 12,
        "compose_time_cap_s": 3.0,
        "seq2seq_time_cap_s": 3.0,
        "seq2seq_eval_pairs": 50,
        "compose_eval_pairs": 100,
        "gate_batches": 3,
    },
}


def get_config(preset: str = "fast", **overrides: Any) -> SmartReplyConfig:
    """The named preset with `overrides` applied (unknown names are an error)."""
    if preset not in PRESETS:
        raise CasebookError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return replace(SmartReplyConfig(), **{**PRESETS[preset], **overrides})


def config_dict(cfg: SmartReplyConfig) -> dict[str, Any]:
    return asdict(cfg)
