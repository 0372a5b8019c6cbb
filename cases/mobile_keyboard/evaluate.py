"""Offline evaluation: next-word top-k, keystroke savings, per-keystroke latency, size, spelling,
and the decision of which next-word model ships.

Candidates (table `candidates:<corpus>`, on VALIDATION): the full Kneser-Ney trigram, the trigram
pruned to the phone budget, the LSTM in fp32, the LSTM's int8 package, and the int8 LSTM mixed
with a trigram pruned to the bytes the LSTM leaves (trigram weight picked on validation). Each is
rebuilt from the bytes that would ship and run through the predictor's own step
(`predictor.KeyboardNextWord`). `choose_shipped`: among those within the budget (size and p95
latency), the best validation top-1 (to three decimals), keystroke savings breaking a tie.

Next word (table `next_word:<corpus>`): the test sentences are one stream `<s> w1 w2 ... <s> ...`;
at every word the model ranks the vocabulary from the words before it (specials never shown).
    top1, top3   share of test words that are the first / among the first 3 suggestions
                 (an out-of-vocabulary word counts as a miss for every model)
    ksr          keystroke savings rate with 3 suggestions (shared.language.keystroke_savings):
                 the user taps a suggestion as soon as the word appears, otherwise types it
    ms_per_keystroke_p95   one thread: a word boundary runs one model step + the vocabulary head
                 + top-3; a letter inside a word only filters the cached distribution by prefix
    model_bytes  size on disk (fp32 or int8 safetensors; the n-gram as int32 id/count tables)
Spelling (table `spell:<set>`): acc@1, acc@3 of the corrected word, words_per_s timed in
alternating chunks with the baseline, so both see the same machine load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from shared.errors import CasebookError
from shared.language import keystroke_savings

from .config import KeyboardConfig
from .model import KeyboardVocab, mix_logp
from .predictor import KeyboardNextWord
from .spell import KeyboardSpellCorrector, symspell_baseline


def test_stream(
    sentences: Sequence[Sequence[str]], vocab: KeyboardVocab, max_tokens: int
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(ids with <s>, the words, position in ids of each word), about `max_tokens` words.

    When the test split is larger, every k-th sentence is taken so the sample spans all of it
    (the split is in file order: a prefix would be one book or one website).
    """
    bos = vocab.stoi["<s>"]
    ids, words, pos = [], [], []
    total = sum(map(len, sentences))
    stride = max(1, -(-total // max(max_tokens, 1)))  # ceil(total / max_tokens)
    for s in sentences[::stride]:
        if len(words) >= max_tokens:
            break
        ids.append(bos)
        for t in s:
            pos.append(len(ids))
            ids.append(vocab.stoi.get(t, 0))
            words.append(t)
    return np.asarray(ids, np.int64), words, np.asarray(pos, np.int64)


class LSTMScorer:
    """Log-probs at each stream position; every message starts from a fresh state at <s>.

    A keyboard starts each message afresh (and the model trained on 24-32-token windows from a
    zero state), so the state is not carried across messages. Messages are run in padded
    batches; the LSTM is causal, so right padding does not touch the real positions.
    """

    def __init__(self, model: torch.nn.Module, ids: np.ndarray, batch: int = 128):
        bos = int(ids[0])
        starts = np.flatnonzero(ids == bos).tolist() + [len(ids)]
        segs = [(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True) if b > a]
        segs.sort(key=lambda ab: ab[1] - ab[0])  # similar lengths together: less padding
        z = None
        with torch.no_grad():
            for i in range(0, len(segs), batch):
                group = segs[i : i + batch]
                L = max(b - a for a, b in group)
                x = np.full((len(group), L), bos, dtype=np.int64)
                for j, (a, b) in enumerate(group):
                    x[j, : b - a] = ids[a:b]
                out, _ = model.lstm(model.embed(torch.from_numpy(x)))  # (B, L, H)
                proj = model.proj(out)  # (B, L, E)
                if z is None:
                    z = torch.zeros(len(ids), proj.shape[-1])
                for j, (a, b) in enumerate(group):
                    z[a:b] = proj[j, : b - a]
        self.z = z  # (N, E): the projected output before the vocabulary head
        self.model = model
        self._cache: tuple[int, np.ndarray] | None = None

    def logp_before(self, pos: int) -> np.ndarray:
        """log P(. | ids[:pos]) over the vocabulary (V,)."""
        if self._cache is not None and self._cache[0] == pos:
            return self._cache[1]
        with torch.no_grad():
            logits = self.model.head(self.z[pos - 1 : pos])  # (1, V)
            lp = torch.log_softmax(logits, -1)[0].numpy()
        self._cache = (pos, lp)
        return lp

    def batch_logp(self, positions: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.model.head(self.z[torch.from_numpy(positions - 1)])  # (n, V)
            return torch.log_softmax(logits, -1).numpy()


class KNScorer:
    """The trigram's log-probs at each stream position, with the context cut at the message's
    <s>: like the LSTM (and `KeyboardNextWord.step`), a message starts afresh, and the model was
    fitted on messages padded `<s> <s> w1 ...`, so `(last word of the previous message, <s>)`
    is a context it never saw."""

    def __init__(self, kn, ids: np.ndarray):
        """`kn`: anything with `logprob_next(context ids)` (the trigram, whole or pruned)."""
        self.kn, self.ids = kn, ids
        self.bos = int(ids[0])  # the stream starts with <s>
        self._cache: tuple[int, np.ndarray] | None = None

    def _context(self, pos: int) -> list[int]:
        ctx = self.ids[max(0, pos - 2) : pos].tolist()
        return [] if ctx and ctx[-1] == self.bos else ctx  # prob_next pads with <s> <s>

    def logp_before(self, pos: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == pos:
            return self._cache[1]
        lp = self.kn.logprob_next(self._context(pos))
        self._cache = (pos, lp)
        return lp

    def batch_logp(self, positions: np.ndarray) -> np.ndarray:
        return np.stack([self.kn.logprob_next(self._context(int(p))) for p in positions])


class NextWordScorer:
    """Batched log-probs of a shipped next-word model (LSTM, trigram or their mixture) at each
    stream position: the same numbers as `KeyboardNextWord.step` fed the stream word by word
    (tested), computed in batches. The mixture weight is read at call time."""

    def __init__(self, nw: KeyboardNextWord, ids: np.ndarray):
        self.nw = nw
        self.lstm = LSTMScorer(nw.lstm, ids) if nw.lstm is not None else None
        self.kn = KNScorer(nw.trigram, ids) if nw.trigram is not None else None

    def batch_logp(self, positions: np.ndarray) -> np.ndarray:
        if self.kn is None:
            return self.lstm.batch_logp(positions)
        if self.lstm is None:
            return self.kn.batch_logp(positions)
        a, b = self.lstm.batch_logp(positions), self.kn.batch_logp(positions)
        return mix_logp(a, b, self.nw.mix_weight)

    def logp_before(self, pos: int) -> np.ndarray:
        return self.batch_logp(np.asarray([pos]))[0]


def next_word_hits(
    scorer, vocab: KeyboardVocab, words: list[str], pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per test word: (hit1, hit3) booleans (n,), whether it is the first / among the first 3
    suggestions before any of its letters is typed. Per-word hits let two models be compared
    word by word (a paired bootstrap) and by cohort."""
    hit1 = np.zeros(len(words), bool)
    hit3 = np.zeros(len(words), bool)
    spec = np.zeros(len(vocab), bool)
    spec[:2] = True  # <unk>, <s> are never suggested
    target = np.array([vocab.stoi.get(w, 0) for w in words], np.int64)  # 0 = <unk>: a miss
    for i in range(0, len(pos), 512):
        lp = scorer.batch_logp(pos[i : i + 512]).copy()  # (n, V)
        lp[:, spec] = -np.inf
        top = np.argpartition(-lp, 3, axis=1)[:, :3]
        order = np.take_along_axis(lp, top, 1).argsort(1)[:, ::-1]
        top = np.take_along_axis(top, order, 1)  # (n, 3) best first
        t = target[i : i + 512, None]  # (n, 1)
        known = t[:, 0] != 0
        hit1[i : i + 512] = known & (top[:, 0] == t[:, 0])
        hit3[i : i + 512] = known & (top == t).any(1)
    return hit1, hit3


def message_positions(ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """For each test word, how many words of its message come before it (0 = first word)."""
    bos = int(ids[0])
    last_bos = np.maximum.accumulate(np.where(ids == bos, np.arange(len(ids)), 0))  # (N,)
    return pos - last_bos[pos] - 1


def ksr_of(scorer, vocab: KeyboardVocab, words: list[str], pos: np.ndarray) -> float:
    """Keystroke savings with 3 suggestions over `words` (the prefix filters the cached
    distribution at the word's position)."""

    def suggest(i: int, prefix: str) -> list[str]:
        return vocab.top_words(scorer.logp_before(int(pos[i])), prefix, 3)

    return keystroke_savings(words, suggest, n=3)["ksr"] if words else float("nan")


def keystroke_latency_ms(
    step_fn: Callable[[int], np.ndarray],
    vocab: KeyboardVocab,
    words: list[str],
    n_keystrokes: int,
) -> dict[str, float]:
    """Time each keystroke on one thread: step at word start, prefix filter inside the word.

    `step_fn(prev_id)` advances the cached state by one word and returns log-probs (V,).
    Each keystroke is timed in the thread's CPU time (CLOCK_THREAD_CPUTIME_ID): what the work
    costs a core of its own, as on the phone. Wall-clock time on a shared machine adds whatever
    other processes took (measured at load 12 on 2 cores: p95 of a 50 KB model 0.2-4.7 ms from
    run to run), which would make the 5 ms budget a lottery.
    """
    from shared.lifecycle import torch_threads

    clock = time.thread_time
    times = []
    with torch_threads(1):
        prev = vocab.stoi["<s>"]
        for w in words:
            if len(times) >= n_keystrokes:
                break
            t0 = clock()
            lp = step_fn(prev)  # the word boundary: one step + vocabulary head
            vocab.top_words(lp, "", 3)
            times.append(clock() - t0)
            for p in range(1, len(w)):
                t0 = clock()
                vocab.top_words(lp, w[:p], 3)  # a letter: filter the cached distribution
                times.append(clock() - t0)
            prev = vocab.stoi.get(w, 0)
    ms = np.asarray(times) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def next_word_step_fn(nw: KeyboardNextWord) -> Callable[[int], np.ndarray]:
    """The predictor's per-keystroke step, its state carried between calls."""
    state = {"s": None}

    def step(prev_id: int) -> np.ndarray:
        state["s"], lp = nw.step(state["s"], prev_id)
        return lp

    return step


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


def score_next_word(
    nw: KeyboardNextWord,
    vocab: KeyboardVocab,
    stream: tuple[np.ndarray, list[str], np.ndarray],
    ksr_words: int,
    latency_keystrokes: int,
) -> tuple[dict[str, float], np.ndarray]:
    """top1, top3, ksr and p95 ms per keystroke of one model on (ids, words, pos); also the
    per-word top-1 hits (for paired intervals and cohorts)."""
    ids, words, pos = stream
    scorer = NextWordScorer(nw, ids)
    hit1, hit3 = next_word_hits(scorer, vocab, words, pos)
    n_ksr = min(len(words), ksr_words)
    lat = keystroke_latency_ms(next_word_step_fn(nw), vocab, words, latency_keystrokes)
    row = {
        "top1": float(hit1.mean()) if len(words) else float("nan"),
        "top3": float(hit3.mean()) if len(words) else float("nan"),
        "ksr": ksr_of(scorer, vocab, words[:n_ksr], pos),
        "ms_per_keystroke_p95": lat["p95"],
    }
    return row, hit1


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


def evaluate_spell(
    corrector: KeyboardSpellCorrector,
    pairs: Sequence[tuple[str, str]],
    chunk: int = 50,
) -> dict[str, dict[str, float]]:
    """acc@1, acc@3, words_per_s for symspellpy and the corrector, timed in alternating chunks."""
    res = {name: {"hit1": 0, "hit3": 0, "seconds": 0.0} for name in ("symspell", "noisy_channel")}
    fns = {"symspell": symspell_baseline, "noisy_channel": corrector.correct}
    for i in range(0, len(pairs), chunk):
        block = pairs[i : i + chunk]
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs = [fn(typo) for typo, _ in block]
            res[name]["seconds"] += time.perf_counter() - t0
            for (_, correct), out in zip(block, outs, strict=True):
                res[name]["hit1"] += int(out[:1] == [correct])
                res[name]["hit3"] += int(correct in out[:3])
    n = max(len(pairs), 1)
    return {
        name: {
            "acc@1": r["hit1"] / n,
            "acc@3": r["hit3"] / n,
            "words_per_s": n / max(r["seconds"], 1e-9),
            "n": len(pairs),
        }
        for name, r in res.items()
    }


# ---------------------------------------------------------------------------------------------
# The run's report: the candidate table, the test tables, cohorts, packaging, spelling, figures
# ---------------------------------------------------------------------------------------------


def evaluate(
    cfg: KeyboardConfig,
    trained,
    corpus,
    report,
    seed: int = 0,
    spell_tests: Sequence[tuple[str, list[tuple[str, str]]]] = (),
    personalization: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Fill `report` from a `train.KeyboardTrained`; the shipped row is scored on the model
    loaded from the artifact (what serves). Returns the shipped model's test top-1 by cohort
    (what promotion compares)."""
    t0 = time.perf_counter()
    _candidate_section(cfg, trained, corpus.name, report)
    hits, rows = _test_tables(cfg, trained, corpus, report, seed, log)
    cohorts = _position_cohorts(trained, hits, report, seed)
    report.timing("next_word_eval_s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    _packaging_section(trained, report)
    report.timing("packaging_s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    _spell_tables(cfg, trained, report, seed, spell_tests, log)
    report.timing("spell_s", time.perf_counter() - t0)
    study = None
    if personalization:
        t0 = time.perf_counter()
        study = _personalization_section(cfg, trained, report, seed, log)
        report.timing("personalization_s", time.perf_counter() - t0)
    _plots(report, rows, trained.validation, trained.shipped, study, cfg.phone_budget_bytes)
    report.production_model = trained.shipped
    report.extra["lstm_train"] = trained.lstm_info
    return cohorts


def _candidate_section(cfg: KeyboardConfig, trained, corpus_name: str, report) -> None:
    rows = {n: dict(r) for n, r in trained.validation.items()}
    report.table(
        f"candidates:{corpus_name}",
        rows,
        baseline="kn_full",
        note="VALIDATION; this table decides what ships. Budget: "
        f"{cfg.phone_budget_bytes:,} bytes on disk, p95 <= {cfg.phone_budget_ms:g} ms per "
        "keystroke (one thread; measured under whatever load the machine had).",
    )
    lines = [
        "| candidate | bytes | validation top1 | ksr | p95 ms | decision |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in rows.items():
        lines.append(
            f"| {n} | {r['model_bytes']:,} | {r['top1']:.4f} | {r['ksr']:.4f} | "
            f"{r['ms_per_keystroke_p95']:.3f} | {trained.why[n]} |"
        )
    notes = "\n".join(f"- {n}: {c.note}" for n, c in trained.candidates.items())
    mix = ", ".join(f"{w:g}: {t:.4f}" for w, t in trained.mix_top1.items())
    report.section(
        "The shipped model",
        f"**Ships: `{trained.shipped}`** ({trained.why[trained.shipped]}).\n\n"
        + "\n".join(lines)
        + f"\n\n{notes}\n\nMixture: validation top-1 by trigram weight {{{mix}}}.",
    )
    report.extra["shipped"] = {
        "name": trained.shipped,
        "why": trained.why,
        "mix_weight": trained.candidates[trained.shipped].next_word.mix_weight,
        "mix_top1_by_weight": {str(w): t for w, t in trained.mix_top1.items()},
    }


def _test_tables(cfg, trained, corpus, report, seed, log):
    from shared.cohorts import ratio_ci

    from .predictor import KeyboardPredictor

    vocab = trained.vocab
    stream = test_stream(corpus.test, vocab, cfg.eval_tokens)
    served = KeyboardPredictor.load(trained.artifact, with_spell=False).model
    rows, hits = {}, {}
    for name, cand in trained.candidates.items():
        nw = served if name == trained.shipped else cand.next_word
        row, hits[name] = score_next_word(nw, vocab, stream, cfg.ksr_words, cfg.latency_keystrokes)
        rows[name] = {**row, "model_bytes": cand.n_bytes}
        log(f"  test {name}: {rows[name]}")
    ratios = {}
    for name in rows:
        if name != "kn_full":
            point, low, high = ratio_ci(hits[name], hits["kn_full"], seed=seed)
            ratios[name] = {"ratio": point, "low": low, "high": high}
    report.extra["top1_ratio_to_kn"] = ratios
    n_words = len(stream[1])
    report.table(
        f"next_word:{corpus.name}",
        rows,
        baseline="kn_full",
        note=f"TEST, {n_words} words ({min(n_words, cfg.ksr_words)} for ksr), vocabulary "
        f"{len(vocab)}, LSTM {trained.lstm.n_params():,} parameters (E={cfg.embed_dim}, "
        f"H={cfg.hidden_dim}); shipped: {trained.shipped} (scored on the artifact). top1 over "
        "kn_full's, with a 95% paired-bootstrap interval: "
        + "; ".join(
            f"{n} {r['ratio']:.3f}x [{r['low']:.3f}, {r['high']:.3f}]" for n, r in ratios.items()
        )
        + ".",
    )
    return (stream, hits), rows


def _position_cohorts(trained, hits_of, report, seed) -> dict[str, float]:
    """Top-1 by the word's place in its message (where the LSTM's longer memory pays)."""
    from shared.cohorts import cohort_markdown, cohort_table

    (ids, _, pos), hits = hits_of
    at = message_positions(ids, pos)
    by_pos = {
        "first word": at == 0,
        "second word": at == 1,
        "words 3-5": (at >= 2) & (at <= 4),
        "words 6-10": (at >= 5) & (at <= 9),
        "word 11 on": at >= 10,
        "all": np.ones(len(at), bool),
    }
    names = list(dict.fromkeys(["kn_full", "lstm_fp32", trained.shipped]))
    coh = cohort_table({f"{n} top1": hits[n].astype(float) for n in names}, by_pos, seed=seed)
    report.cohort(
        "next_word_by_position",
        coh,
        markdown="Next-word top-1 by the word's place in its message (95% bootstrap "
        "intervals). The trigram sees two words back; the LSTM the whole message.\n\n"
        + cohort_markdown(coh),
    )
    shipped = hits[trained.shipped]
    return {c: float(shipped[m].mean()) for c, m in by_pos.items() if m.any()}


def _packaging_section(trained, report) -> None:
    """ONNX parity of the fp32 step graph, and why the int8 package is not an int8 ONNX file."""
    import tempfile
    from pathlib import Path

    from shared.onnx_utils import quantize_dynamic_onnx

    from .model import export_step_onnx

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, parity = export_step_onnx(trained.lstm, Path(tmp) / "keyboard_step.onnx")
        q = quantize_dynamic_onnx(onnx_path, Path(tmp) / "keyboard_step_int8.onnx")
        onnx_bytes, onnx_int8_bytes = onnx_path.stat().st_size, q.stat().st_size
    packaging = {
        "shipped": trained.shipped,
        "shipped_bytes": trained.candidates[trained.shipped].n_bytes,
        "lstm_fp32_bytes": trained.candidates["lstm_fp32"].n_bytes,
        "lstm_int8_package_bytes": trained.candidates["lstm_int8"].n_bytes,
        "onnx_fp32_step_bytes": onnx_bytes,
        "onnx_int8_step_bytes": onnx_int8_bytes,
        "onnx_max_abs_diff": parity,
        "n_params": trained.lstm.n_params(),
    }
    report.extra["packaging"] = packaging
    report.section(
        "On-device packaging",
        "\n".join(
            f"- {k}: {v:,}" if isinstance(v, int) else f"- {k}: {v}" for k, v in packaging.items()
        )
        + "\n\nonnxruntime's dynamic int8 quantization stores the tied embedding twice (the "
        "Gather table and the output MatMul), so its file is larger than the int8 package, "
        "which keeps one int8 copy and a scale per row; the package is what ships.",
    )


def _spell_tables(cfg, trained, report, seed, spell_tests, log) -> None:
    from .data import generated_spell_pairs
    from .spell import KeyboardSpellCorrector
    from .train import spell_word_lists

    em = trained.error_model
    corrector = KeyboardSpellCorrector(em, prior_weight=cfg.spell_prior_weight)
    if not spell_tests:
        _, eval_words = spell_word_lists(cfg)
        spell_tests = [("builtin", generated_spell_pairs(eval_words, seed=50_000 + seed))]
    for stem, pairs in spell_tests:
        res = evaluate_spell(corrector, pairs)
        report.table(
            f"spell:{stem}",
            res,
            baseline="symspell",
            note=f"{len(pairs)} misspellings; error model trained on {em.n_pairs_:,} pairs.",
        )
        log(f"  spell:{stem}: {res}")


def _personalization_section(cfg, trained, report, seed, log) -> dict:
    from .personalize import personalization_study

    study = personalization_study(trained.lstm, trained.vocab, cfg, seed, log)
    coh = study["cohorts"]
    lines = [
        "| cohort | users | words | base top1 | +cache | fedavg | fedavg+cache |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, r in coh.items():
        lines.append(
            f"| {c} | {r['users']} | {r['words']} | {r['base_top1']:.3f} | "
            f"{r['cache_top1']:.3f} | {r['fedavg_top1']:.3f} | {r['fedavg_cache_top1']:.3f} |"
        )
    report.cohort(
        "personalization",
        {"cohorts": coh, "fedavg_rounds": study["fedavg_rounds"]},
        markdown="Next-word top-1 of the fp32 LSTM on each simulated user's later messages (a "
        "study of the mechanisms, whichever model ships). The cache and the local training "
        "data never leave the phone; FedAvg uploads only clipped weight deltas.\n\n"
        + "\n".join(lines),
    )
    return study


def _plots(
    report, rows: dict, validation: dict, shipped: str, study: dict | None, budget_bytes: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(rows)
    width = 0.8 / len(names)
    xs = np.arange(3)
    for i, n in enumerate(names):
        vals = [rows[n]["top1"], rows[n]["top3"], rows[n]["ksr"]]
        ax.bar(xs + i * width, vals, width=width, label=n + (" (ships)" if n == shipped else ""))
    ax.set_xticks(xs + 0.4 - width / 2, ["top1", "top3", "ksr"])
    ax.set_ylabel("fraction (test)")
    ax.legend(fontsize=7)
    report.figure(fig, "next_word.png", "Next-word top-1/top-3 and keystroke savings per model")
    fig, ax = plt.subplots(figsize=(6, 3))
    for n, r in validation.items():
        ax.scatter(r["model_bytes"] / 1e6, r["top1"], label=n, marker="*" if n == shipped else "o")
    ax.axvline(budget_bytes / 1e6, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"MB on disk (dashed: the {budget_bytes / 1e6:g} MB budget)")
    ax.set_ylabel("validation top-1")
    ax.legend(fontsize=7)
    report.figure(fig, "candidates.png", "Candidates: validation top-1 against size")
    if study is not None:
        coh = {c: r for c, r in study["cohorts"].items() if c != "all"}
        fig, ax = plt.subplots(figsize=(6, 3))
        keys = ["base_top1", "cache_top1", "fedavg_top1", "fedavg_cache_top1"]
        xs = np.arange(len(coh))
        for i, k in enumerate(keys):
            ax.bar(xs + i * 0.2, [coh[c][k] for c in coh], width=0.2, label=k.replace("_top1", ""))
        ax.set_xticks(xs + 0.3, list(coh))
        ax.set_ylabel("next-word top-1")
        ax.legend(fontsize=7)
        report.figure(fig, "personalization.png", "Personalization gain per user cohort")
