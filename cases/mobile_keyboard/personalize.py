"""Personalization on the device, and a federated-averaging simulation.

Two mechanisms, both keeping the user's text on the phone:
- `predictor.KeyboardUserCache` (it serves, so it lives with the predictor): a per-user
  unigram/bigram cache of what the user typed, mixed with the next-word model:
  P(w) = (1 - lam) P_model(w) + lam P_cache(w | previous word). It can suggest the user's own
  words that the shipped vocabulary lacks (friends' names, a hobby's jargon). It lives and dies
  on the phone.
- `federated_averaging`: FedAvg (McMahan et al. 2017) over simulated users. Each round a few
  phones start from the global weights, run a few SGD steps on their own messages, and send back
  only the weight delta, clipped to a fixed norm (the step that differential privacy and secure
  aggregation build on); the server averages the deltas weighted by tokens. The raw text, the
  cache, and per-word statistics never leave the phone; only clipped deltas do.
Users differ on purpose (data.KeyboardTextGenerator.users): "mainstream" users write like the
base corpus, "niche" users add private names, hobby jargon and slang.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import KeyboardConfig
from .data import KeyboardTextGenerator, tokenize
from .model import KeyboardLSTM, KeyboardVocab
from .predictor import KeyboardUserCache, mixed_top
from .scoring import LSTMScorer, test_stream
from .train import token_stream


def _user_data(cfg: KeyboardConfig, seed: int):
    gen = KeyboardTextGenerator(seed)
    users = gen.users(cfg.n_users)
    data = {}
    for u in users:
        msgs = [tokenize(m) for m in gen.user_messages(u, cfg.user_messages)]
        half = len(msgs) // 2
        data[u.user_id] = (u, msgs[:half], msgs[half:])  # (user, on-device history, future text)
    return data


def _top1_top3(model, vocab, sentences, cache: KeyboardUserCache | None, lam: float):
    ids, words, pos = test_stream(sentences, vocab, max_tokens=10**9)
    scorer = LSTMScorer(model, ids)
    hit1 = hit3 = 0
    probs: dict[str, dict[str, float]] = {}  # P_cache(. | prev), computed once per prev word
    for i, w in enumerate(words):
        lp = scorer.logp_before(int(pos[i]))
        if cache is not None:
            prev = "<s>" if ids[pos[i] - 1] == vocab.stoi["<s>"] else words[i - 1]
            if prev not in probs:
                probs[prev] = cache.probs(prev)
            top = mixed_top(lp, vocab, probs[prev], lam)
        else:
            top = vocab.top_words(lp, "", 3)
        hit1 += int(top[:1] == [w])
        hit3 += int(w in top)
    n = max(len(words), 1)
    return hit1 / n, hit3 / n, len(words)


def federated_averaging(
    model: KeyboardLSTM,
    vocab: KeyboardVocab,
    client_data: dict[str, list[list[str]]],
    cfg: KeyboardConfig,
    seed: int = 0,
    clip: float = 1.0,
    log: Callable[[str], None] = print,
) -> tuple[KeyboardLSTM, list[dict]]:
    """FedAvg rounds; each client sends back only its clipped weight delta. Returns (model, log)."""
    rng = np.random.default_rng(seed)
    glob = copy.deepcopy(model)
    clients = sorted(client_data)
    history = []
    for r in range(cfg.fed_rounds):
        chosen = rng.choice(
            len(clients), size=min(cfg.fed_clients_per_round, len(clients)), replace=False
        )
        base = {k: v.detach().clone() for k, v in glob.state_dict().items()}
        agg = {k: torch.zeros_like(v) for k, v in base.items()}
        weight_total = 0.0
        losses = []
        for ci in chosen:
            local = copy.deepcopy(glob)
            local.train()
            opt = torch.optim.SGD(local.parameters(), lr=cfg.fed_lr)
            stream = token_stream(client_data[clients[ci]], vocab)
            T = min(cfg.bptt, len(stream) - 1)
            n_seq = (len(stream) - 1) // T
            x_all = torch.from_numpy(stream[: n_seq * T].reshape(n_seq, T))  # (N, T)
            y_all = torch.from_numpy(stream[1 : n_seq * T + 1].reshape(n_seq, T))
            for _ in range(cfg.fed_local_steps):
                idx = torch.from_numpy(rng.choice(n_seq, size=min(8, n_seq), replace=False))
                logits, _ = local(x_all[idx])  # (b, T, V)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_all[idx].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(local.parameters(), 1.0)
                opt.step()
                losses.append(float(loss.detach()))
            # What the phone uploads: the delta, clipped to norm `clip`. Nothing else.
            delta = {k: v.detach() - base[k] for k, v in local.state_dict().items()}
            norm = float(torch.sqrt(sum((d.float() ** 2).sum() for d in delta.values())))
            scale = min(1.0, clip / max(norm, 1e-12))
            w = float(len(stream))
            for k in agg:
                agg[k] += delta[k] * scale * w
            weight_total += w
        new_state = {k: base[k] + agg[k] / weight_total for k in base}
        glob.load_state_dict(new_state)
        glob.head.weight = glob.embed.weight
        history.append(
            {"round": r + 1, "clients": len(chosen), "mean_local_loss": float(np.mean(losses))}
        )
        log(f"  fedavg round {r + 1}: {len(chosen)} clients, local loss {np.mean(losses):.3f}")
    glob.eval()
    return glob, history


def personalization_study(
    model: KeyboardLSTM,
    vocab: KeyboardVocab,
    cfg: KeyboardConfig,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Base vs +cache vs FedAvg vs FedAvg+cache next-word top-1/top-3, per user cohort."""
    data = _user_data(cfg, seed)
    fed_model, fed_hist = federated_averaging(
        model, vocab, {uid: d[1] for uid, d in data.items()}, cfg, seed, log=log
    )
    per_user = {}
    for uid, (user, history, future) in data.items():
        cache = KeyboardUserCache()
        for s in history:
            cache.update(s)
        row = {"cohort": user.cohort}
        for name, m, c in (
            ("base", model, None),
            ("cache", model, cache),
            ("fedavg", fed_model, None),
            ("fedavg_cache", fed_model, cache),
        ):
            t1, t3, n = _top1_top3(m, vocab, future, c, cfg.cache_weight)
            row[f"{name}_top1"], row[f"{name}_top3"], row["n_words"] = t1, t3, n
        per_user[uid] = row
    cohorts: dict[str, dict[str, float]] = {}
    for cohort in sorted({r["cohort"] for r in per_user.values()}) + ["all"]:
        rows = [r for r in per_user.values() if cohort in ("all", r["cohort"])]
        w = np.asarray([r["n_words"] for r in rows], float)
        agg = {"users": len(rows), "words": int(w.sum())}
        for key in rows[0]:
            if key.endswith(("_top1", "_top3")):
                agg[key] = float(np.average([r[key] for r in rows], weights=w))
        agg["cache_gain_top1"] = agg["cache_top1"] - agg["base_top1"]
        agg["fedavg_gain_top1"] = agg["fedavg_top1"] - agg["base_top1"]
        cohorts[cohort] = agg
    return {
        "cohorts": cohorts,
        "per_user": per_user,
        "fedavg_rounds": fed_hist,
        "fed_model": fed_model,
    }
