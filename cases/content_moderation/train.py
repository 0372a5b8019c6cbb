"""Training: TF-IDF + LR, the fine-tuned MiniLM encoder, calibration, per-policy thresholds,
identity-term augmentation, and the artifact the server loads.

    tfidf = train_tfidf(cfg, texts, Y)
    enc, info = train_encoder(cfg, train_texts, Y_train, val_texts, Y_val, seed, log)
    thresholds = policy_thresholds(Y_val, P_val, policies, 0.95, 0.9)
    save_moderation_artifact(out / "artifact", ...)

Loss (encoder): class-weighted binary cross-entropy, one sigmoid per policy (a post can be both
offensive and hate, an ad both spam and scam, so the policies are not mutually exclusive). The
positive weight of policy j is min(n_neg / n_pos, cap): without it the rare policies (hate is 6%
of Davidson) get few gradient steps' worth of signal and the head predicts "clean"; the cap keeps
a rare, noisy class from dominating. Focal loss was the alternative; with calibration after
training and thresholds from PR curves, the weighted BCE's simpler gradients were enough.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import numpy as np

from .data import swap_identity
from .model import (
    ModerationTfidf,
    apply_platt,
    build_encoder,
    encode_texts,
    fit_platt,
    load_tokenizer,
    minilm_dir,
    sigmoid,
)


def train_tfidf(cfg, texts: list[str], y: np.ndarray, c: float | None = None) -> ModerationTfidf:
    return ModerationTfidf(
        cfg.tfidf_word_features, cfg.tfidf_char_features, cfg.tfidf_min_df, c or cfg.lr_c
    ).fit(texts, y)


def identity_augment(
    texts: list[str], y: np.ndarray, seed: int
) -> tuple[list[str], np.ndarray, int]:
    """Counterfactual augmentation: each training text that names an identity is added again
    with the identity swapped and the same labels, so a term alone carries no label signal.

    Returns (texts, labels, number of added texts).
    """
    rng = np.random.default_rng(seed)
    extra_t, extra_y = [], []
    for t, lab in zip(texts, y, strict=True):
        s = swap_identity(t, rng)
        if s is not None:
            extra_t.append(s)
            extra_y.append(lab)
    if not extra_t:
        return list(texts), y, 0
    return list(texts) + extra_t, np.concatenate([y, np.stack(extra_y)]), len(extra_t)


def best_macro_f1(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(threshold, macro-F1) at the score threshold t (flag if p >= t) with the best binary
    macro-F1, the mean of the F1 of the positive and of the negative class (OffensEval's
    metric). Every distinct score is a candidate; counts come from one sort, O(N log N).
    """
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])  # end of each tie group
    tp = np.cumsum(ys)[last]  # flagged and positive, flagging the top k
    fp = (last + 1) - tp
    n_pos, n_neg = int(ys.sum()), len(ys) - int(ys.sum())
    fn, tn = n_pos - tp, n_neg - fp
    f1_pos = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    f1_neg = 2 * tn / np.maximum(2 * tn + fn + fp, 1)
    macro = (f1_pos + f1_neg) / 2
    k = int(np.argmax(macro))
    return float(ps[last[k]]), float(macro[k])


def policy_thresholds(
    y: np.ndarray, p: np.ndarray, policies, remove_precision: float, review_recall: float
) -> dict[str, dict[str, float]]:
    """Per policy, from the validation PR curve of calibrated scores p (N, P):

    remove:  the lowest threshold whose precision is >= remove_precision, with at least 5
             items above it (else 1.01: never auto-remove, everything goes to review);
    review:  the highest threshold whose recall is >= review_recall, at most `remove`;
    flag:    the threshold with the best macro-F1, at most `remove` (the decision the
             macro-F1 tables use: OffensEval's metric, so the threshold is picked for it);
    flag_f1: the threshold with the best F1 of the violating class, at most `remove` (the
             tables' `f1` column: SMS spam's usual metric).
    """
    from sklearn.metrics import precision_recall_curve

    out = {}
    for j, pol in enumerate(policies):
        yj, pj = y[:, j], p[:, j]
        if yj.sum() == 0 or yj.sum() == len(yj):
            out[pol] = {"remove": 1.01, "review": 0.5, "flag": 0.5, "flag_f1": 0.5}
            continue
        prec, rec, thr = precision_recall_curve(yj, pj)
        prec, rec = prec[:-1], rec[:-1]  # thresholds increase; the last point has none
        n_above = len(pj) - np.searchsorted(np.sort(pj), thr, side="left")
        ok = np.flatnonzero((prec >= remove_precision) & (n_above >= 5))
        remove = float(thr[ok[0]]) if len(ok) else 1.01
        r_ok = np.flatnonzero(rec >= review_recall)
        review = float(min(thr[r_ok[-1]], remove)) if len(r_ok) else float(thr[0])
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        flag_f1 = float(min(thr[int(np.argmax(f1))], remove))
        flag = float(min(best_macro_f1(yj, pj)[0], remove))
        out[pol] = {"remove": remove, "review": review, "flag": flag, "flag_f1": flag_f1}
    return out


# ----------------------------------------------------------------------------- the encoder


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, cut into chunks of 50 batches, sort each
    chunk by length, cut into batches, shuffle the batches. Less padding, still random."""
    perm = rng.permutation(len(lengths))
    chunk = 50 * batch_size
    batches = []
    for s in range(0, len(perm), chunk):
        part = perm[s : s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def encoder_logits(model, tok, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, P) logits from the torch encoder (eval mode), length-sorted batches."""
    import torch

    was = model.training
    model.eval()
    out = np.zeros((len(texts), model.head.out_features), np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = encode_texts(tok, [texts[i] for i in idx])
            out[idx] = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    model.train(was)
    return out


def macro_f1_at_best(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over policies of the binary macro-F1 at its best threshold (model selection)."""
    vals = [
        best_macro_f1(y[:, j], p[:, j])[1] for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)
    ]
    return float(np.mean(vals)) if vals else float("nan")


def train_minutes(cfg, builtin: bool) -> float:
    """Fine-tuning wall-clock safety cap in minutes (the step budget normally ends first)."""
    if builtin:
        return float(cfg.builtin_train_minutes)
    return float(max(cfg.max_train_minutes, cfg.min_train_minutes))


def train_steps(cfg, n_train: int, builtin: bool) -> tuple[int, int]:
    """(steps per epoch, planned steps): epochs x steps per epoch, cut to the step budget
    (`builtin_train_steps` or `max_train_steps`; 0 = no budget). The budget is in steps, so
    what a run learns does not depend on how busy the machine is."""
    per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    total = per_epoch * cfg.epochs
    budget = cfg.builtin_train_steps if builtin else cfg.max_train_steps
    return per_epoch, int(min(total, budget) if budget > 0 else total)


def _cache_lower(model, tok, texts: list[str], batch_size: int = 64) -> list[np.ndarray]:
    """Hidden states after the frozen layers, one (T_i, H) float16 array per text (its own
    length): computed once, reused every epoch and every validation check."""
    import torch

    out: list[np.ndarray] = [None] * len(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    model.eval()
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = encode_texts(tok, [texts[i] for i in idx])
            h = model.lower(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()  # (b, T, H)
            for k, i in enumerate(idx):
                out[i] = h[k, : int(mask[k].sum())].astype(np.float16)
    return out


def _pad_cached(states: list[np.ndarray]):
    """Cached (T_i, H) arrays -> (B, T, H) float32 tensor and (B, T) mask, T = the longest."""
    import torch

    t_max = max(len(a) for a in states)
    h = np.zeros((len(states), t_max, states[0].shape[1]), np.float32)  # (B, T, H)
    mask = np.zeros((len(states), t_max), np.int64)  # (B, T)
    for k, a in enumerate(states):
        h[k, : len(a)] = a
        mask[k, : len(a)] = 1
    return torch.from_numpy(h), torch.from_numpy(mask)


def _cached_logits(model, cache: list[np.ndarray], batch_size: int = 128) -> np.ndarray:
    """(N, P) logits from cached lower-layer states (eval mode)."""
    import torch

    was = model.training
    model.eval()
    out = np.zeros((len(cache), model.head.out_features), np.float32)
    order = np.argsort([len(a) for a in cache], kind="stable")
    with torch.no_grad():
        for s in range(0, len(cache), batch_size):
            idx = order[s : s + batch_size]
            h, mask = _pad_cached([cache[i] for i in idx])
            out[idx] = model.upper(h, mask).numpy()
    model.train(was)
    return out


def train_encoder(
    cfg,
    texts: list[str],
    y: np.ndarray,
    val_texts: list[str],
    y_val: np.ndarray,
    seed: int,
    log: Callable[[str], None] = print,
    builtin: bool = False,
    pretrained: bool = True,
    bert_config: dict | None = None,
):
    """Fine-tune MiniLM with a multi-label head; early stopping on validation macro-F1.

    With `cfg.freeze_layers = k > 0` the embeddings and the first k layers stay frozen and
    their outputs are computed once per text (`_cache_lower`): each step then runs only the top
    layers forward and backward. On 2 CPU cores this is what makes several epochs affordable
    (k = 3 of 6: by layer count about half the cost of a full step).

    Returns (model with the best validation weights, tokenizer, info dict).
    """
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if cfg.max_train_texts and len(texts) > cfg.max_train_texts:
        keep = rng.choice(len(texts), cfg.max_train_texts, replace=False)
        texts, y = [texts[i] for i in keep], y[keep]
    tok = load_tokenizer(minilm_dir() / "tokenizer.json", cfg.max_len)
    model = build_encoder(y.shape[1], pretrained=pretrained, bert_config=bert_config)
    k = min(int(cfg.freeze_layers), len(model.bert.encoder.layer) - 1)
    model.split = k
    frozen = [model.bert.embeddings, *model.bert.encoder.layer[:k]] if k > 0 else []
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    cache = _cache_lower(model, tok, texts) if k > 0 else None
    cache_val = _cache_lower(model, tok, val_texts) if k > 0 else None
    cache_s = time.perf_counter() - t0
    if k > 0:
        log(f"  cached layers 0-{k - 1} for {len(texts) + len(val_texts)} texts in {cache_s:.0f} s")

    def val_probs() -> np.ndarray:
        z = _cached_logits(model, cache_val) if k > 0 else encoder_logits(model, tok, val_texts)
        return sigmoid(z)

    n_pos = y.sum(0).astype(np.float64)
    pos_weight = np.minimum((len(y) - n_pos) / np.maximum(n_pos, 1.0), cfg.pos_weight_cap)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32))
    head = list(model.head.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("head.") and p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    lengths = np.array([len(t) for t in texts])
    steps_per_epoch, total = train_steps(cfg, len(texts), builtin)
    warm = max(1, int(0.06 * total))

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    # The budget is `total` steps; the wall-clock cap is a safety net that a run on an ordinary
    # machine does not reach (it excludes the one-off cache pass, linear in the data).
    budget_s = 60.0 * train_minutes(cfg, builtin)
    t_steps = time.perf_counter()
    cpu_steps = time.process_time()
    estimate_at = min(total, 10)  # steps after which the time to the end is estimated
    eval_every = max(1, steps_per_epoch // max(1, cfg.evals_per_epoch))
    best, best_state, best_step, bad, step = -1.0, None, 0, 0, 0
    history = []
    stop = ""
    model.train()
    bar = tqdm(total=total, desc="fine-tune MiniLM", unit="step", leave=False)
    while step < total:
        for idx in _batches(lengths, cfg.batch_size, rng):
            if k > 0:
                h, mask = _pad_cached([cache[i] for i in idx])
                logits = model.upper(h, mask)  # (B, P)
            else:
                ids, mask = encode_texts(tok, [texts[i] for i in idx])
                logits = model(torch.from_numpy(ids), torch.from_numpy(mask))  # (B, P)
            loss = loss_fn(logits, torch.from_numpy(y[idx].astype(np.float32)))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step == estimate_at:
                per = (time.perf_counter() - t_steps) / step
                log(
                    f"  {per:.2f} s a step ({(time.process_time() - cpu_steps) / step:.2f} s "
                    f"CPU): {total} steps in about {per * total / 60:.1f} min "
                    f"(safety cap {budget_s / 60:.0f} min)"
                )
            out_of_time = time.perf_counter() - t_steps > budget_s
            if step % eval_every == 0 or step == total or out_of_time:
                score = macro_f1_at_best(y_val, val_probs())
                history.append(
                    {"step": step, "epoch": round(step / steps_per_epoch, 3),
                     "val_macro_f1": score, "s": round(time.perf_counter() - t0, 1)}
                )  # fmt: skip
                log(f"  step {step}/{total}: validation macro-F1 {score:.4f}")
                if score > best:
                    best, best_step, bad = score, step, 0
                    best_state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
                else:
                    bad += 1
                if bad > cfg.patience:
                    stop = "early stop (no validation gain)"
                    break
                if out_of_time:
                    stop = f"time cap ({budget_s / 60:.1f} min)"
                    break
            if step >= total:
                break
        if stop:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    info = {
        "steps": step,
        "planned_steps": total,
        "best_step": best_step,
        "best_val_macro_f1": best,
        "train_texts": len(texts),
        "frozen_layers": k,
        "cache_seconds": cache_s,
        "seconds": time.perf_counter() - t0,
        "step_seconds": time.perf_counter() - t_steps,
        "step_cpu_seconds": time.process_time() - cpu_steps,
        "budget_minutes": budget_s / 60,
        "stopped": stop or "step budget done",
        "pos_weight": pos_weight.tolist(),
        "history": history,
    }
    return model, tok, info


# ----------------------------------------------------------------------------- the artifact


def blend(probs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted average of calibrated probabilities, (N, P)."""
    return sum(weights[k] * probs[k] for k in weights)


def calibrated(logits: np.ndarray, ab: np.ndarray) -> np.ndarray:
    return apply_platt(logits, ab)


def calibrate(logits_val: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    return fit_platt(logits_val, y_val)


def predictor_spec(
    policies, components: dict[str, dict], thresholds: dict, max_len: int, extra: dict
) -> bytes:
    """predictor.json: what the predictor needs besides the weight files."""
    spec = {
        "policies": list(policies),
        "components": components,  # name -> {"weight": w, "platt": [[a, b], ...]}
        "thresholds": thresholds,
        "max_len": int(max_len),
        **extra,
    }
    return json.dumps(spec, indent=2).encode()


# ----------------------------------------------------------------------------- the whole fit


def _worst_subgroup_auc(y: np.ndarray, s: np.ndarray, identities: dict[str, np.ndarray]) -> float:
    """Lowest subgroup AUC over identities (masks, `ModerationData.identities`) with both
    classes (NaN if none)."""
    from shared.fairness import bias_table, worst_subgroup

    masks = {k: m for k, m in identities.items() if m.sum() >= 5}
    if not masks or y.min() == y.max():
        return float("nan")
    return worst_subgroup(bias_table(y, s, masks))[1]


def fit_text_models(cfg, data, seed: int, out, log: Callable[[str], None] = print, builtin=False):
    """Fit every text model on the train split; calibrate, choose thresholds and the shipped
    model on validation. Returns a dict with, per model, calibrated scores on val and test
    (`scores[model][part]`, (N, P)), thresholds, and what the artifact needs.

    Models: `rules` (baseline), `tfidf_lr`, `minilm` (fine-tuned, exported, fp32 ONNX) and
    `minilm_int8` (its dynamic int8 quantization), `ensemble` (MiniLM + TF-IDF, weight from
    validation). The mitigation (identity-term augmentation) is tried on TF-IDF first.
    """
    from shared.onnx_utils import make_session, quantize_dynamic_onnx

    from .baseline import ModerationRules
    from .model import export_encoder_onnx, onnx_logits

    pols = data.policies
    tr_t, y_tr = data.subset("train")
    va_t, y_va = data.subset("val")
    te_t, y_te = data.subset("test")
    scores: dict[str, dict[str, np.ndarray]] = {}
    timings: dict[str, float] = {}
    info: dict = {"n_train": len(tr_t), "n_val": len(va_t), "n_test": len(te_t)}

    rules = ModerationRules()
    scores["rules"] = {"val": rules.score(va_t, pols), "test": rules.score(te_t, pols)}
    # model -> texts -> (N, P) calibrated scores, for evaluation-only sets and counterfactuals
    scorers: dict[str, Callable[[list[str]], np.ndarray]] = {
        "rules": lambda t: rules.score(t, pols)
    }

    # --- TF-IDF + LR, with and without identity-term augmentation ---
    t0 = time.perf_counter()
    best_c, tfidf, z_va, platt_tfidf, c_val = None, None, None, None, {}
    for c in cfg.lr_c_grid or (cfg.lr_c,):  # C by validation macro-F1
        m = train_tfidf(cfg, tr_t, y_tr, c)
        z = m.logits(va_t)
        ab = calibrate(z, y_va)
        c_val[float(c)] = macro_f1_at_best(y_va, calibrated(z, ab))
        if best_c is None or c_val[float(c)] > c_val[best_c]:
            best_c, tfidf, z_va, platt_tfidf = float(c), m, z, ab
    info["tfidf_c"] = {"chosen": best_c, "val_macro_f1": c_val}
    z_te = tfidf.logits(te_t)
    scores["tfidf_lr"] = {
        "val": calibrated(z_va, platt_tfidf),
        "test": calibrated(z_te, platt_tfidf),
    }
    timings["tfidf_s"] = time.perf_counter() - t0
    log(f"  tfidf_lr: validation macro-F1 {macro_f1_at_best(y_va, scores['tfidf_lr']['val']):.4f}")
    augmented = False
    if cfg.augment_identity:
        aug_t, aug_y, n_added = identity_augment(tr_t, y_tr, seed)
        if n_added:
            tfidf_aug = train_tfidf(cfg, aug_t, aug_y, best_c)
            za_va, za_te = tfidf_aug.logits(va_t), tfidf_aug.logits(te_t)
            platt_aug = calibrate(za_va, y_va)
            scores["tfidf_lr_aug"] = {
                "val": calibrated(za_va, platt_aug),
                "test": calibrated(za_te, platt_aug),
            }
            f_plain = macro_f1_at_best(y_va, scores["tfidf_lr"]["val"])
            f_aug = macro_f1_at_best(y_va, scores["tfidf_lr_aug"]["val"])
            va_id = data.identities(data.split["val"])
            w_plain = _worst_subgroup_auc(y_va[:, 0], scores["tfidf_lr"]["val"][:, 0], va_id)
            w_aug = _worst_subgroup_auc(y_va[:, 0], scores["tfidf_lr_aug"]["val"][:, 0], va_id)
            # Keep it only if it helps the worst-served identity without costing > 0.5 point.
            augmented = bool(
                np.nan_to_num(w_aug) > np.nan_to_num(w_plain) and f_aug >= f_plain - 0.005
            )
            info["augmentation"] = {
                "added_texts": n_added,
                "val_macro_f1": [f_plain, f_aug],
                "val_worst_subgroup_auc": [w_plain, w_aug],
                "kept": augmented,
            }
            verdict = "kept" if augmented else "dropped"
            log(
                f"  identity augmentation: +{n_added} texts, macro-F1 {f_plain:.4f} -> "
                f"{f_aug:.4f}, worst subgroup AUC {w_plain:.4f} -> {w_aug:.4f}: {verdict}"
            )
            if augmented:
                tfidf, platt_tfidf = tfidf_aug, platt_aug
                scores["tfidf_lr"], scores["tfidf_lr_noaug"] = (
                    scores.pop("tfidf_lr_aug"),
                    scores["tfidf_lr"],
                )
                tr_t, y_tr = aug_t, aug_y
    scorers["tfidf_lr"] = lambda t: calibrated(tfidf.logits(t), platt_tfidf)
    components = {"tfidf": {"weight": 1.0, "platt": platt_tfidf.tolist()}}
    candidates = {"tfidf_lr": {"tfidf": 1.0}}
    files: dict[str, bytes] = {}
    tensors, vocab_files = tfidf.state()
    files.update(vocab_files)

    # --- the fine-tuned MiniLM encoder ---
    if cfg.encoder:
        t0 = time.perf_counter()
        enc, tok, enc_info = train_encoder(cfg, tr_t, y_tr, va_t, y_va, seed, log, builtin=builtin)
        timings["minilm_train_s"] = time.perf_counter() - t0
        info["minilm"] = enc_info
        # Scored through ONNX Runtime only (the torch model's parity is checked at export):
        # fp32 as `minilm`, dynamic int8 as `minilm_int8`, each calibrated on validation.
        # int8 ships only if its validation macro-F1 is within cfg.int8_tolerance of fp32's.
        t0 = time.perf_counter()
        fp32_path, parity = export_encoder_onnx(enc, tok, out / "encoder.onnx")
        int8_path = quantize_dynamic_onnx(fp32_path, out / "encoder.int8.onnx")
        sessions, platts = {}, {}
        for name, path in (("minilm", fp32_path), ("minilm_int8", int8_path)):
            sess = sessions[name] = make_session(path, threads=2)
            z_va, z_te = onnx_logits(sess, tok, va_t), onnx_logits(sess, tok, te_t)
            platts[name] = calibrate(z_va, y_va)
            scores[name] = {
                "val": calibrated(z_va, platts[name]),
                "test": calibrated(z_te, platts[name]),
            }
        f32 = macro_f1_at_best(y_va, scores["minilm"]["val"])
        i8 = macro_f1_at_best(y_va, scores["minilm_int8"]["val"])
        use_int8 = abs(f32 - i8) <= cfg.int8_tolerance
        info["onnx"] = {
            "max_abs_diff_fp32": parity,
            "val_macro_f1_fp32": f32,
            "val_macro_f1_int8": i8,
            "int8_shipped": use_int8,
            "fp32_bytes": fp32_path.stat().st_size,
            "int8_bytes": int8_path.stat().st_size,
        }
        timings["onnx_s"] = time.perf_counter() - t0
        served = "minilm_int8" if use_int8 else "minilm"
        enc_path = int8_path if use_int8 else fp32_path
        files["encoder.onnx"] = enc_path.read_bytes()
        files["tokenizer.json"] = (minilm_dir() / "tokenizer.json").read_bytes()
        platt_enc = platts[served]
        components["encoder"] = {"weight": 1.0, "platt": platt_enc.tolist()}
        candidates["minilm"] = {"encoder": 1.0}
        scores["minilm_served"] = scores[served]
        sess_served = sessions[served]
        scorers["minilm"] = lambda t: calibrated(onnx_logits(sess_served, tok, t), platt_enc)
        if cfg.ensemble:
            best_w, best_f = 0.5, -1.0
            for w in np.round(np.arange(0.1, 0.91, 0.05), 2):  # weight by validation
                f = macro_f1_at_best(
                    y_va, w * scores[served]["val"] + (1 - w) * scores["tfidf_lr"]["val"]
                )
                if f > best_f:
                    best_w, best_f = float(w), f
            scores["ensemble"] = {
                part: best_w * scores[served][part] + (1 - best_w) * scores["tfidf_lr"][part]
                for part in ("val", "test")
            }
            candidates["ensemble"] = {"encoder": best_w, "tfidf": 1 - best_w}
            scorers["ensemble"] = lambda t: (
                best_w * scorers["minilm"](t) + (1 - best_w) * scorers["tfidf_lr"](t)
            )
            info["ensemble_weight"] = best_w
        info["minilm_served_as"] = served
        for p in (fp32_path, int8_path):
            p.unlink(missing_ok=True)  # the served graph lives in the artifact

    # --- the shipped model: best validation macro-F1 ---
    score_key = {"tfidf_lr": "tfidf_lr", "minilm": "minilm_served", "ensemble": "ensemble"}
    val_f1 = {c: macro_f1_at_best(y_va, scores[score_key[c]]["val"]) for c in candidates}
    production = max(val_f1, key=val_f1.get)
    info["val_macro_f1"] = val_f1
    log(f"  validation macro-F1: {val_f1} -> ship {production}")
    weights = candidates[production]
    comps = {k: {**components[k], "weight": w} for k, w in weights.items()}
    thresholds = {
        m: policy_thresholds(y_va, s["val"], pols, cfg.remove_precision, cfg.review_recall)
        for m, s in scores.items()
    }
    if "tfidf" not in comps:
        tensors = {}
        files.pop("tfidf_vocab.json", None)
    if "encoder" not in comps:
        files.pop("encoder.onnx", None)
        files.pop("tokenizer.json", None)
    return {
        "scores": scores,
        "thresholds": thresholds,
        "production": production,
        "production_scores": score_key[production],
        "components": comps,
        "tensors": tensors,
        "files": files,
        "info": info,
        "timings": timings,
        "augmented": augmented,
        "scorers": scorers,
    }


# ----------------------------------------------------------------------------- the image side


def fit_image_side(cfg, seed: int, out, log: Callable[[str], None] = print) -> dict:
    """The image CNN on rendered images (split 70/15/15), its ONNX export and threshold, and
    the known-bad hash bank (rendered known-bad images + the normalized texts of known scams).

    Returns {"onnx": bytes, "thresholds", "scores": {part: (N,)}, "labels": {part: (N,)},
    "bank": HashBank, "matching": measure_matching(...), "info"}.
    """
    from shared.splits import random_split

    from .hashbank import HashBank, choose_radius, measure_matching
    from .images import (
        export_image_onnx,
        known_bad_bank,
        render_images,
        score_images,
        train_image_model,
    )

    t0 = time.perf_counter()
    imgs, labels, _ = render_images(cfg.n_images, seed=seed + 101)
    tr, va, te = random_split(len(imgs), (0.7, 0.15, 0.15), seed=seed)
    model = train_image_model(
        imgs[tr],
        labels[tr],
        epochs=cfg.image_epochs,
        seed=seed,
        time_cap_s=60.0,
        val_images=imgs[va],
        val_labels=labels[va],
        progress=False,
    )
    path, parity = export_image_onnx(model, out / "image.onnx")
    onnx_bytes = path.read_bytes()
    path.unlink(missing_ok=True)
    s = {part: score_images(model, imgs[idx]) for part, idx in (("val", va), ("test", te))}
    y = {"val": labels[va], "test": labels[te]}
    th = policy_thresholds(
        y["val"][:, None], s["val"][:, None], ("image",), cfg.remove_precision, cfg.review_recall
    )
    log(f"  image CNN: {time.perf_counter() - t0:.0f} s, ONNX max abs diff {parity:.2e}")

    # Known-bad bank: pick the radius on one benign set, report the false-match rate on another.
    rng = np.random.default_rng(seed + 202)
    bad = known_bad_bank(cfg.hash_bank_items, seed)
    benign_pick, lab_pick, _ = render_images(
        cfg.hash_benign_images, seed=seed + 303, size=128, violating_share=0.0, label_noise=0.0
    )
    sweep = measure_matching(bad, benign_pick, rng, radius=cfg.hash_radius)["sweep"]
    radius = choose_radius(sweep, cfg.max_false_match_rate) or cfg.hash_radius
    benign_eval, _, _ = render_images(
        cfg.hash_benign_images, seed=seed + 404, size=128, violating_share=0.0, label_noise=0.0
    )
    matching = measure_matching(bad, benign_eval, rng, radius=radius)
    bank = HashBank(radius=radius)
    for i, img in enumerate(bad):
        try:
            bank.add_image(img, f"kb-img-{i:05d}")
        except Exception:  # a low-quality hash is skipped, as measure_matching does
            continue
    from .data import _SCAM

    for i, t in enumerate(_SCAM):  # the scam templates a reviewer has already confirmed
        bank.add_text(t.format(amount="500 dollars", url="http://bit.ly/x"), f"kb-txt-{i:03d}")
    log(
        f"  hash bank: radius {radius}, recall {matching['recall']['all']:.3f}, "
        f"false-match rate {matching['false_match_rate']:.4f}"
    )
    return {
        "onnx": onnx_bytes,
        "thresholds": th,
        "scores": s,
        "labels": y,
        "bank": bank,
        "matching": matching,
        "model": model,
        "info": {"parity": parity, "seconds": time.perf_counter() - t0, "radius": radius},
    }


def pair_ad_images(data, cfg, seed: int, model) -> dict[str, np.ndarray]:
    """Images for the built-in ads: a scam ad carries a violating image half the time, a
    legitimate ad 3% of the time (an image-only violation the text cannot show).

    Returns {"images": (A, 64, 64, 3), "image_label": (A,), "row": (A,) data row of each ad}.
    """
    from .images import render_images

    rows = np.flatnonzero(data.kinds == "ad")
    rng = np.random.default_rng(seed + 505)
    scam = data.labels[rows, data.policies.index("scam")] == 1
    want = np.where(scam, rng.random(len(rows)) < 0.5, rng.random(len(rows)) < 0.03)
    imgs, lab, _ = render_images(2 * len(rows) + 20, seed=seed + 606, label_noise=0.0)
    pos, neg = np.flatnonzero(lab == 1), np.flatnonzero(lab == 0)
    pick = np.where(want, rng.choice(pos, len(rows)), rng.choice(neg, len(rows)))
    return {"images": imgs[pick], "image_label": lab[pick].astype(np.int8), "row": rows}


def save_moderation_artifact(
    directory, cfg, data, fit: dict, image: dict | None, fusion: dict | None, fingerprint: str
):
    """The artifact the server loads: the shipped text model's files, the image CNN, the hash
    bank (an .npz of plain arrays) and predictor.json (policies, blend weights, calibration,
    thresholds from validation, the ad fusion)."""
    import io

    from shared.artifacts import save_artifact

    files = dict(fit["files"])
    extra: dict = {"production": fit["production"], "data": data.name}
    if "encoder" in fit["components"]:
        extra["encoder_file"] = "encoder.onnx"
    if image is not None:
        files["image.onnx"] = image["onnx"]
        extra["image_file"] = "image.onnx"
        extra["image_thresholds"] = image["thresholds"]
        buf = io.BytesIO()
        np.savez(buf, **image["bank"].to_arrays())
        files["hashbank.npz"] = buf.getvalue()
        extra["hash_radius"] = image["info"]["radius"]
    if fusion is not None:
        extra["fusion"] = fusion
    thresholds = fit["thresholds"][fit["production_scores"]]
    files["predictor.json"] = predictor_spec(
        data.policies, fit["components"], thresholds, cfg.max_len, extra
    )
    metrics = {"val_macro_f1": fit["info"]["val_macro_f1"], "production": fit["production"]}
    return save_artifact(directory, fit["tensors"], cfg.to_dict(), metrics, fingerprint, files)


def fit_ad_fusion(cfg, data, fit: dict, image: dict, seed: int) -> tuple[dict, dict]:
    """Late fusion for ads: a logistic regression on [text policy scores, image score], fitted
    on the validation ads, target = the ad violates any policy (text or image).

    Returns (fusion spec for predictor.json, {part: {"text", "image", "fused", "y"}} scores).
    """
    from sklearn.linear_model import LogisticRegression

    from .images import score_images

    pairs = pair_ad_images(data, cfg, seed, image["model"])
    row_to_ad = {int(r): k for k, r in enumerate(pairs["row"])}
    img_scores = score_images(image["model"], pairs["images"])
    parts = {}
    key = fit["production_scores"]
    for part in ("val", "test"):
        idx = data.split[part]
        pos = [k for k, r in enumerate(idx) if int(r) in row_to_ad]
        ads = [row_to_ad[int(idx[k])] for k in pos]
        text = fit["scores"][key][part][pos]  # (A, P)
        y = (data.labels[idx[pos]].max(1) | pairs["image_label"][ads]).astype(np.int8)
        parts[part] = {"text": text, "image": img_scores[ads], "y": y}
    v = parts["val"]
    x_val = np.concatenate([v["text"], v["image"][:, None]], axis=1)  # (A, P + 1)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(x_val, v["y"])
    coef, b = lr.coef_[0], float(lr.intercept_[0])
    for part in parts.values():
        x = np.concatenate([part["text"], part["image"][:, None]], axis=1)
        part["fused"] = sigmoid(x @ coef + b)
    th = policy_thresholds(
        v["y"][:, None],
        parts["val"]["fused"][:, None],
        ("ad_fused",),
        cfg.remove_precision,
        cfg.review_recall,
    )["ad_fused"]
    spec = {"coef": coef.tolist(), "intercept": b, "thresholds": th}
    # Flag thresholds (best validation F1) for the comparison table.
    for name, sv in (("text", v["text"].max(1)), ("image", v["image"]), ("fused", v["fused"])):
        parts[f"th_{name}"] = policy_thresholds(v["y"][:, None], sv[:, None], ("x",), 0.95, 0.9)[
            "x"
        ]["flag"]
    return spec, parts
