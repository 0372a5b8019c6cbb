"""The served funnel, from an artifact: retrieval (faiss) -> ranking (onnxruntime) -> re-ranking.

No training imports: the predictor rebuilds the retrieval towers from `model.py` and the saved
weights, and runs the ranker through onnxruntime.

    p = VideoRecPredictor.load(Path("runs/video-recommendation/registry/versions/v0001"))
    p.recommend(user_id=12, history=None, k=10)
    -> {"items": [{"item": 431, "score": 2.1, "source": "sasrec", "pre_rank": 2}, ...],
        "cold_start": False, ...}

Candidate sources: the learned retriever(s) via a faiss inner-product index
(`shared.ann.build_index`: exact up to 50K videos, HNSW above), the shipped item-item model's
table (EASE or item-kNN) or popularity list when one of those ships, trending (recent
popularity) and fresh uploads. The shipped retriever's source is named `production_model` in
the artifact. Re-ranking: remove watched and blocked videos, a freshness bonus, then MMR over
topics with a per-topic cap. An unknown user with no
history gets the cold-start list (trending + fresh).

Each served item carries `pre_rank`: its 0-based position in the list the re-rank stage starts
from (`ranked_positions`: the ranker's order, or the fallback / cold-start list order, watched
and blocked videos removed). Its re-rank move is pre_rank minus its position in `items`
(positive: moved up); with re-rank weight 0 every move is 0.

A predictor can hold only some stages (`stages=("retrieve",)`): each Ray Serve deployment loads
the part it runs, so only the retrieval replica builds the faiss indexes (about 7 s each for
100K videos on one core) and holds the towers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from shared.ann import build_index
from shared.artifacts import load_artifact, sanity_check
from shared.errors import ArtifactError, CasebookError

from .model import (
    VideoRecSASRec,
    VideoRecTwoTower,
    pad_left,
    ranker_inputs,
    serving_score,
    tower_score,
)

logger = logging.getLogger("casebook")
DAY_S = 86400
STAGES = ("prepare", "retrieve", "rank", "finish")  # prepare + finish = the ingress's part
N_TRENDING, N_FRESH = 50, 20  # fill-in candidates per request from each list
FILL_SCORE = -1e3  # retrieval score of a fill-in candidate: below every learned score


class VideoRecCandidates(NamedTuple):
    """One request's candidates, in the order their sources first listed them."""

    items: np.ndarray  # (N,) int64 video ids
    scores: np.ndarray  # (N,) float32 score from the source whose label the item carries
    sources: np.ndarray  # (N,) str: two_tower, sasrec, ease, trending or fresh
    tower_score: np.ndarray  # (N,) float32 <user vector, item vector>: a ranker feature


def rerank(
    item_ids: np.ndarray,
    scores: np.ndarray,
    topics: np.ndarray,
    k: int,
    exclude: set[int] | None = None,
    upload_age_days: np.ndarray | None = None,
    freshness_boost: float = 0.05,
    mmr_lambda: float = 0.8,
    max_per_topic: int = 3,
) -> list[int]:
    """Pick k positions from candidates: filter, freshness bonus, MMR with a topic cap.

    MMR step: argmax_i lambda * s_i - (1 - lambda) * max_{j chosen} [topic_i == topic_j]
    (similarity = same topic), scores min-max normalised to [0, 1] first. Topic -1 (unknown)
    never counts as similar and has no cap. Returns indices into `item_ids`.
    """
    item_ids = np.asarray(item_ids)
    keep = np.ones(item_ids.size, dtype=bool)
    if exclude:
        keep = ~np.isin(item_ids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return []
    s = scores[idx].astype(np.float64)
    s = (s - s.min()) / (s.max() - s.min() + 1e-12)
    if upload_age_days is not None:
        s = s + freshness_boost * np.exp(-np.maximum(upload_age_days[idx], 0.0) / 3.0)
    relevance = mmr_lambda * s  # (n,)
    if not np.isfinite(relevance).all():
        return [
            int(idx[j]) for j in _mmr_scan(relevance, topics[idx], k, mmr_lambda, max_per_topic)
        ]
    # Every candidate of a topic carries the same penalty and cap, so each step's argmax is the
    # first eligible candidate, in order of relevance (ties by position, as np.argmax breaks
    # them), among the unpenalised topics, or the first among the penalised ones: sort once and
    # scan from the top, which stops within a few dozen candidates; a step costs that much plain
    # Python instead of a dozen numpy passes over all n candidates.
    order = np.lexsort((np.arange(idx.size), -relevance)).tolist()  # (n,) best first
    rel = relevance.tolist()
    topic = topics[idx].tolist()
    penalty = 1.0 - mmr_lambda
    count: dict[int, int] = {}  # known topic -> times chosen; topic -1 is never seen or capped
    taken = [False] * idx.size
    chosen: list[int] = []
    while len(chosen) < k:
        fresh = seen_one = first = None
        for j in order:
            if taken[j]:
                continue
            if first is None:
                first = j
            t = topic[j]
            c = count.get(t, 0) if t >= 0 else 0
            if c == 0 and (t < 0 or max_per_topic > 0):
                if fresh is None:
                    fresh = j
            elif c < max_per_topic and seen_one is None:
                seen_one = j
            if fresh is not None and seen_one is not None:
                break
            if fresh is not None and rel[j] - penalty < rel[fresh] and seen_one is None:
                # every later penalised candidate scores below `fresh`: stop looking
                break
        if first is None:
            break
        if fresh is None and seen_one is None:  # every remaining topic is capped: relax the cap
            j = first
        elif seen_one is None:
            j = fresh
        elif fresh is None:
            j = seen_one
        else:
            vf, vs = rel[fresh], rel[seen_one] - penalty
            j = fresh if vf > vs or (vf == vs and fresh < seen_one) else seen_one
        chosen.append(j)
        taken[j] = True
        if topic[j] >= 0:
            count[topic[j]] = count.get(topic[j], 0) + 1
    return [int(idx[j]) for j in chosen]


def ranked_positions(scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(N,) each kept candidate's 0-based position in the ranked list before re-ranking: by
    score, best first, ties by position (the order `rerank` starts from); -1 where not kept.

    One sort of the N candidates per request; no scoring.
    """
    idx = np.flatnonzero(keep)  # (n,)
    order = idx[np.lexsort((idx, -np.asarray(scores, dtype=np.float64)[idx]))]  # best first
    pos = np.full(len(keep), -1, dtype=np.int64)
    pos[order] = np.arange(len(order))
    return pos


def _mmr_scan(
    relevance: np.ndarray, topics: np.ndarray, k: int, mmr_lambda: float, max_per_topic: int
) -> list[int]:
    """`rerank`'s MMR loop over every candidate each step (for non-finite relevance, where the
    sorted queues' order is undefined); positions into `relevance`."""
    uniq, code = np.unique(topics, return_inverse=True)  # (T',), (n,)
    known = uniq >= 0  # (T',)
    chosen_topic = np.zeros(uniq.size, dtype=bool)
    per_topic = np.zeros(uniq.size, dtype=np.int64)
    chosen: list[int] = []
    available = np.ones(relevance.size, dtype=bool)
    while len(chosen) < k and available.any():
        seen = chosen_topic[code]  # (n,)
        capped = (per_topic >= max_per_topic)[code] & known[code]  # (n,)
        mmr = relevance - (1.0 - mmr_lambda) * seen
        mmr = np.where(available & ~capped, mmr, -np.inf)
        if not np.isfinite(mmr).any():  # every remaining topic is capped: relax the cap
            mmr = np.where(available, relevance, -np.inf)
        j = int(np.argmax(mmr))
        chosen.append(j)
        available[j] = False
        chosen_topic[code[j]] = known[code[j]]
        per_topic[code[j]] += 1
    return chosen


def rerank_settings(hp: dict, weight: float | None) -> dict:
    """`rerank`'s keyword arguments for a re-rank weight w (the MMR diversity weight).

    w = 0: no re-ranking beyond removing watched and blocked videos (relevance order, no topic
    cap, no freshness bonus). w > 0: MMR with mmr_lambda = 1 - w, the configured topic cap and
    freshness bonus. None (an artifact from before the weight was chosen): the configured
    mmr_lambda, cap and bonus as they are.
    """
    if weight is None:
        return {
            "freshness_boost": float(hp["freshness_boost"]),
            "mmr_lambda": float(hp["mmr_lambda"]),
            "max_per_topic": int(hp["max_per_topic"]),
        }
    if weight <= 0:
        return {"freshness_boost": 0.0, "mmr_lambda": 1.0, "max_per_topic": 1 << 30}
    return {
        "freshness_boost": float(hp["freshness_boost"]),
        "mmr_lambda": 1.0 - float(weight),
        "max_per_topic": int(hp["max_per_topic"]),
    }


def recency_weights(history: np.ndarray, tau: float | None, floor: float = 0.0) -> np.ndarray:
    """Weight of each history position, oldest first: floor + (1 - floor) exp(-r / tau).

    r = 0 for the newest watch, 1 for the one before, ...; tau None or <= 0 means every watch
    weighs 1 (plain EASE). `train.recency_weights` applies this rule offline.
    """
    n = len(history)
    if not tau or tau <= 0:
        return np.ones(n)
    r = np.arange(n - 1, -1, -1, dtype=np.float64)  # (n,) 0 = newest
    return floor + (1.0 - floor) * np.exp(-r / tau)


def i2i_table(idx: np.ndarray, w: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """The served item-item table as a CSR matrix (R, C) from idx (R, K) neighbour positions
    (-1 = none) and w (R, K) weights: float32 data, int32 indices, 8 bytes an entry. Without
    -1 entries the arrays are used in place (no copy)."""
    R, K = idx.shape
    idx = idx.astype(np.int32, copy=False)
    w = w.astype(np.float32, copy=False)
    ok = idx >= 0
    if ok.all():
        indptr = np.arange(0, R * K + 1, K, dtype=np.int64)
        return sp.csr_matrix((w.reshape(-1), idx.reshape(-1), indptr), shape=(R, n_cols))
    indptr = np.r_[0, np.cumsum(ok.sum(1))].astype(np.int64)
    return sp.csr_matrix((w[ok], idx[ok], indptr), shape=(R, n_cols))


def i2i_candidates(
    histories: list[np.ndarray],
    table: sp.csr_matrix,
    row_of: np.ndarray,
    n: int,
    tau: float | None = None,
    floor: float = 0.0,
    cols: np.ndarray | None = None,
    exclude_history: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Item-to-item candidates: the top `n` videos by recency-weighted neighbour weight.

    score_j = sum over the distinct videos h of the history of rw_h * table[row(h), col(j)],
    where rw_h is the recency weight of h's newest watch (`recency_weights`; a video watched
    twice counts once, at its more recent weight, as the offline scorer does). table (R, C)
    (`i2i_table`) holds each row's neighbours (any sign: EASE's negative weights are kept);
    row_of (I,) the table row of each video (-1 = no row); cols (C,) the video id of each
    column (None: column = video id). A video whose score is exactly 0 (no neighbour reaches
    it) is not a candidate; with `exclude_history` the history's own videos are not either
    (they are filtered before serving anyway, and a heavy user's watched videos would
    otherwise fill the n places). Cost per history: one sparse (m, C)^T x (m,) product over
    its m rows' entries. Returns per history (items, scores), best first, ties by video id.
    """
    n_cols = table.shape[1]
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for h in histories:
        h = np.asarray(h, dtype=np.int64)
        rw = recency_weights(h, tau, floor)  # (n,)
        # The newest watch of each distinct video: unique over the reversed history.
        uniq, first = np.unique(h[::-1], return_index=True)
        rw = rw[::-1][first]
        rows = row_of[uniq]
        has = rows >= 0
        if not has.any():
            out.append((np.zeros(0, np.int64), np.zeros(0, np.float32)))
            continue
        score = table[rows[has]].T @ rw[has].astype(np.float32)  # (C,)
        if exclude_history:
            pos = uniq if cols is None else np.searchsorted(cols, uniq)
            inside = pos < n_cols
            pos = pos[inside]
            real = (cols[pos] if cols is not None else pos) == uniq[inside]
            score[pos[real]] = 0.0
        cand = np.flatnonzero(score)  # ascending column positions = ascending video ids
        s = score[cand]
        if cand.size > n:
            keep = np.argpartition(-s, n - 1)[:n]
            keep.sort()  # back to id order, so the stable sort below breaks ties by id
            cand, s = cand[keep], s[keep]
        order = np.argsort(-s, kind="stable")  # best first, ties by video id
        items = cand[order] if cols is None else cols[cand[order]]
        out.append((items.astype(np.int64), s[order].astype(np.float32)))
    return out


def merge_sources(parts: list[tuple[np.ndarray, np.ndarray, str, bool]]) -> tuple:
    """One candidate list from several sources: (items, scores, labels) in first-seen order.

    parts: (items, scores, label, overrides) in source order. An item listed by several
    sources keeps the position of its first listing; its score and label come from the last
    overriding source that lists it (the learned retrievers: a later one wins), or else from
    the first non-overriding one (the trending and fresh fill-ins).
    """
    items = np.concatenate([p[0] for p in parts]).astype(np.int64)  # (M,)
    scores = np.concatenate([p[1] for p in parts]).astype(np.float32)
    labels = np.array([p[2] for p in parts])
    if items.size == 0:
        return items, scores, labels[:0]
    src = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts])  # (M,) source of each
    # Precedence: overriding sources above fill-ins; later overriders and earlier fill-ins win.
    prec = np.array([len(parts) + q if p[3] else -q for q, p in enumerate(parts)])[src]
    uniq, first = np.unique(items, return_index=True)  # uniq ascending
    o = np.lexsort((-prec, items))  # by item, the winning entry first
    starts = np.r_[0, np.flatnonzero(np.diff(items[o])) + 1]
    win = o[starts]  # (U,) winning entry per item in uniq order
    win = win[np.argsort(first)]  # back to first-seen order
    return items[win], scores[win], labels[src[win]]


class VideoRecPredictor:
    """Loads an artifact; `recommend` runs the funnel for one request, `recommend_batch` many."""

    def __init__(self, art, fail_ranker: bool = False, stages: tuple[str, ...] = STAGES):
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise CasebookError(f"unknown predictor stages {sorted(unknown)}; choose from {STAGES}")
        cfg = art.config
        self.cfg = cfg
        self.stages = tuple(stages)
        self.version, self.path = art.path.name, art.path
        t = art.tensors
        hp = cfg["hparams"]
        self.n_items = int(cfg["n_items"])
        self.n_topics = int(cfg["n_topics"])
        self.seq_len = int(hp["seq_len"])
        self.n_candidates = int(hp["retrieval_candidates"])
        self.item_ids = np.asarray(cfg["item_ids"]) if cfg.get("item_ids") else None
        self.item_topic = t["item_topic"].numpy().astype(np.int64)
        self.item_age_days = t["item_age_days"].numpy().astype(np.float32)
        self.item_views = t["item_views"].numpy().astype(np.float32)
        self.item_log_duration = t["item_log_duration"].numpy().astype(np.float32)
        self.trending = t["trending"].numpy().astype(np.int64)
        self.fresh = t["fresh"].numpy().astype(np.int64)
        self.user_histories = (
            json.loads(art.files["histories.json"].decode()) if "prepare" in stages else {}
        )
        self.tower = self.sasrec = self.tower_index = self.sasrec_index = self.i2i = None
        self.primary_list = None
        if "retrieve" in stages:
            self._load_retrieval(t, hp)
        self.ranker = None
        if "rank" in stages and "ranker.onnx" in art.files:
            from shared.onnx_utils import make_session

            self.ranker = make_session(art.path / "ranker.onnx", threads=1)
        # The fill-in sources every request gets, after the learned ones (they never override).
        trending, fresh = self.trending[:N_TRENDING], self.fresh[:N_FRESH]
        self._fill = [
            (trending, np.full(len(trending), FILL_SCORE, np.float32), "trending", False),
            (fresh, np.full(len(fresh), FILL_SCORE, np.float32), "fresh", False),
        ]
        self.fail_ranker = fail_ranker
        # The funnel's knobs, chosen on validation at training time (`funnel.choose_funnel`);
        # an artifact without them serves the configured re-ranking and no merge quota.
        self.merge_quota = float(hp.get("merge_quota") or 0.0)
        self.rerank_weight = hp.get("rerank_weight")
        self.rerank_kw = rerank_settings(hp, self.rerank_weight)
        self.ranker_failures = 0
        self.shipped = cfg.get("production_model") or "ease"  # the source served first

    def _load_retrieval(self, t: dict, hp: dict) -> None:
        self.tower = VideoRecTwoTower(self.n_items, self.n_topics, hp["embed_dim"])
        self.tower.load_state_dict(_prefixed(t, "tower."))
        self.tower.eval()
        if any(k.startswith("sasrec.") for k in t):
            self.sasrec = VideoRecSASRec(
                self.n_items, hp["embed_dim"], hp["seq_len"], hp["seq_layers"], hp["seq_heads"], 0.0
            )
            self.sasrec.load_state_dict(_prefixed(t, "sasrec."))
            self.sasrec.eval()
        with torch.no_grad():
            items = torch.arange(1, self.n_items + 1)
            topics = torch.from_numpy(np.r_[-1, self.item_topic] + 1)[items]
            self.tower_items = self.tower.item_vectors(items, topics).numpy()  # (I, D)
        self.tower_index = build_index(self.tower_items)
        if self.sasrec is not None:
            self.sasrec_index = build_index(self.sasrec.item_emb.weight[1:].detach().numpy())
        if "i2i_idx" in t and "i2i_w" in t:
            # (R, K) neighbour positions into `i2i_cols` (int32) and their weights, or,
            # without `i2i_cols`, video ids (int64); -1 = no neighbour.
            idx, w = t["i2i_idx"].numpy(), t["i2i_w"].numpy()
            # The table holds either one row per video (R = I) or rows for the videos listed
            # in `i2i_rows` only (EASE covers the most-watched `ease_max_items`).
            row_of = np.arange(self.n_items, dtype=np.int64)
            if "i2i_rows" in t:
                row_of = np.full(self.n_items, -1, dtype=np.int64)
                row_of[t["i2i_rows"].numpy().astype(np.int64)] = np.arange(len(idx))
            cols = t["i2i_cols"].numpy().astype(np.int64) if "i2i_cols" in t else None
            n_cols = self.n_items if cols is None else len(cols)
            self.i2i = {
                "table": i2i_table(idx, w, n_cols),  # (R, C) CSR
                "row_of": row_of,
                "cols": cols,
                "history": int(hp.get("i2i_history") or self.seq_len),
                "tau": hp.get("recency_tau") or None,
                "floor": float(hp.get("recency_floor") or 0.0),
                # labelled by the shipped item-item model (ease, ease_recency, item_knn, ...)
                "label": self.cfg.get("production_model") or "ease",
            }
        self.primary_list = None
        if "primary_list" in t:  # a popularity row ships: its order is a source of its own
            self.primary_list = t["primary_list"].numpy().astype(np.int64)

    @classmethod
    def load(
        cls, path: Path, fail_ranker: bool = False, stages: tuple[str, ...] = STAGES
    ) -> VideoRecPredictor:
        art = load_artifact(path)
        if art.config.get("case") != "video-recommendation":
            raise ArtifactError(f"{path} is not a video-recommendation artifact")
        p = cls(art, fail_ranker=fail_ranker, stages=stages)
        p._sanity()
        return p

    def _sanity(self) -> None:
        """Refuse an artifact whose loaded stages give non-finite scores on a golden request."""
        hist = [list(map(int, self.trending[:3]))]
        if set(STAGES) <= set(self.stages):
            out = self.recommend_batch([None], hist, 5)
            sanity_check(np.array([x["score"] for x in out[0]["items"]], dtype=np.float32))
            return
        if "retrieve" in self.stages:
            cands = self.retrieve(hist)
            sanity_check(np.r_[cands[0].scores, cands[0].tower_score])
        if "rank" in self.stages and self.ranker is not None and not self.fail_ranker:
            items = self.trending[:5]
            zeros = np.zeros(len(items), np.float32)
            cand = VideoRecCandidates(items, zeros, np.full(len(items), "trending"), zeros)
            sanity_check(self.rank(hist, [cand])[0])

    # --- stages ---
    @torch.no_grad()
    def retrieve(self, histories: list[list[int]]) -> list[VideoRecCandidates]:
        """Candidates per request from the learned retrievers, EASE i2i, trending and fresh.

        The user tower runs once per batch; its vector scores every candidate (`tower_score`),
        which is the ranker's two-tower feature, so the ranking stage needs no towers.
        """
        n = self.n_candidates
        has = [i for i, h in enumerate(histories) if h]
        learned: dict[int, list] = {i: [] for i in has}
        u = np.zeros((0, self.tower_items.shape[1]), np.float32)
        if has:
            seqs = [np.asarray(histories[i][-self.seq_len :], dtype=np.int64) for i in has]
            x = torch.from_numpy(pad_left(seqs, self.seq_len))  # (B, L)
            u = np.ascontiguousarray(self.tower.user_vectors(x).numpy())  # (B, D)
            self._add_faiss(learned, has, self.tower_index, u, n, "two_tower")
            if self.sasrec_index is not None:
                h = np.ascontiguousarray(self.sasrec.hidden(x)[:, -1].numpy())  # (B, D)
                self._add_faiss(learned, has, self.sasrec_index, h, n, "sasrec")
            if self.i2i is not None:
                e = self.i2i
                long = [np.asarray(histories[i][-e["history"] :], dtype=np.int64) for i in has]
                found = i2i_candidates(
                    long, e["table"], e["row_of"], n, e["tau"], e["floor"], e["cols"], True
                )
                for i, (items, scores) in zip(has, found, strict=True):
                    learned[i].append((items, scores, e["label"], True))  # last: its label wins
            if self.primary_list is not None:
                p = self.primary_list
                for i in has:  # the list's first n unwatched videos; scores fall with the rank
                    # (the first n + len(history) entries hold them: the rest are not read, so
                    # a request costs n candidates, not the whole stored list)
                    head = p[: n + len(histories[i])]
                    head = head[~np.isin(head, histories[i])][:n]
                    learned[i].append(
                        (head, -np.arange(len(head), dtype=np.float32), self.shipped, True)
                    )
        row = {i: r for r, i in enumerate(has)}
        out = []
        for i in range(len(histories)):
            items, scores, sources = merge_sources(learned.get(i, []) + self._fill)
            tower = np.zeros(len(items), np.float32)
            if i in row:  # the ranker's two-tower feature, (N,)
                tower = tower_score(u[np.full(len(items), row[i])], self.tower_items[items])
            out.append(VideoRecCandidates(items, scores, sources, tower))
        return out

    @torch.no_grad()
    def user_vectors(self, histories: list[list[int]]) -> np.ndarray:
        """The two-tower user vectors of histories, (B, D), as `retrieve` computes them."""
        seqs = [np.asarray(h[-self.seq_len :], dtype=np.int64) for h in histories]
        x = torch.from_numpy(pad_left(seqs, self.seq_len))  # (B, L)
        return np.ascontiguousarray(self.tower.user_vectors(x).numpy())

    def _retrieval_order(self, c: VideoRecCandidates, quota: float | None = None) -> np.ndarray:
        """Scores without a ranker (real data has no impression logs to train one): the shipped
        retriever's candidates (`production_model`) with their own scores, the other sources'
        in their listed order below them. With a merge quota q > 0 (`merge_quota`, chosen on
        validation) the others are interleaved instead: position p goes to another source when
        floor((p + 1) q) > floor(p q). Scores of different sources are on different scales, so
        they are never compared: another source's candidate gets a score between its merged
        neighbours' (evenly spaced), which encodes the merged order."""
        q = self.merge_quota if quota is None else quota
        main = c.sources == self.shipped
        if not main.any():
            return np.asarray(c.scores, dtype=np.float32)
        s = np.asarray(c.scores, dtype=np.float32).copy()
        # float32 must still tell the steps below apart: a spread of at least 1% of |lo|
        lo = float(s[main].min())
        spread = max(float(np.ptp(s[main])), 1e-2 * abs(lo), 1e-3)
        rest = np.flatnonzero(~main)  # listed order
        if q <= 0 or not rest.size:
            s[rest] = lo - spread * 1e-3 * (1 + np.arange(len(rest)))  # just below, in order
            return s
        mine = np.flatnonzero(main)
        mine = mine[np.argsort(-s[mine], kind="stable")]
        p = np.arange(len(c.items))
        other = np.floor((p + 1) * q) > np.floor(p * q)  # (N,) the others' positions
        a = b = 0
        run: list[int] = []  # others waiting for the next shipped candidate's score
        hi = float(s[mine[0]]) + spread  # above the first shipped candidate
        for pos in range(len(c.items)):
            if (other[pos] and b < len(rest)) or a >= len(mine):
                run.append(int(rest[b]))
                b += 1
                continue
            nxt = float(s[mine[a]])
            s[run] = hi - (hi - nxt) * (1 + np.arange(len(run))) / (len(run) + 1)
            run, hi, a = [], nxt, a + 1
        s[run] = hi - spread * 1e-3 * (1 + np.arange(len(run)))  # after the last shipped one
        return s

    @staticmethod
    def _add_faiss(learned: dict, has: list[int], index, q: np.ndarray, n: int, label: str):
        D, I = index.search(q, n)  # (B, n) scores and ids, -1 where fewer were found
        for r, i in enumerate(has):
            ok = I[r] >= 0
            learned[i].append((I[r][ok], D[r][ok], label, True))

    def rank(self, histories: list[list[int]], cands: list[VideoRecCandidates]) -> list[np.ndarray]:
        """Ranker scores per request (watch log-odds + log P(satisfied)); raises on failure.

        One ONNX call for the whole batch: every request's candidates stacked, (sum N, 6).
        """
        if self.fail_ranker:
            raise RuntimeError("ranker unavailable (fault injected)")
        if self.ranker is None:
            return [self._retrieval_order(c) for c in cands]
        feats = self.features(histories, cands)
        logits = self.ranker.run(None, feats)[0]  # (M, 3)
        score = serving_score(logits)
        if not np.all(np.isfinite(score)):
            raise RuntimeError("ranker returned non-finite scores")
        sizes = [len(c.items) for c in cands]
        return np.split(score, np.cumsum(sizes)[:-1])

    def features(self, histories: list[list[int]], cands: list[VideoRecCandidates]) -> dict:
        """The ranker inputs for every request's candidates, stacked: (sum N,) ids, (sum N, 6)
        dense, by `model.ranker_inputs` (the function training uses); example age 0."""
        sizes = np.array([len(c.items) for c in cands])
        items = np.concatenate([c.items for c in cands]).astype(np.int64)  # (M,)
        return ranker_inputs(
            items,
            np.repeat(np.arange(len(cands)), sizes),  # (M,) request of each row
            histories,
            self.item_topic,
            self.n_topics,
            self.item_log_duration[items],
            self.item_age_days[items],
            self.item_views[items],
            np.concatenate([c.tower_score for c in cands]),
            np.zeros(len(items), np.float32),  # example age: 0 at serving
        )

    def prepare(self, user_ids: list, histories: list[list[int] | None]):
        """Resolve histories (None -> the user's stored history) and validate item ids."""
        hists, cold = [], []
        for uid, h in zip(user_ids, histories, strict=True):
            if h is None:
                h = self.user_histories.get(str(uid), []) if uid is not None else []
            bad = [x for x in h if not 0 <= int(x) < self.n_items]
            if bad:
                raise CasebookError(
                    f"history has unknown item ids {bad[:3]} (valid: 0..{self.n_items - 1})"
                )
            hists.append([int(x) for x in h])
            cold.append(len(h) == 0)
        return hists, cold

    def finish(
        self, hists, cold, cands, scores, fallback: bool, k: int, blocked=None
    ) -> list[dict]:
        """Re-ranking and the response: filter, freshness, diversity; cold start as listed."""
        if scores is None:  # the ranker failed: retrieval order, trending last
            scores = [np.where(c.sources == "trending", FILL_SCORE, c.scores) for c in cands]
        results = []
        for i, c in enumerate(cands):
            items, sources = c.items, c.sources
            exclude = set(hists[i]) | set(blocked[i] if blocked else [])
            keep = np.ones(len(items), dtype=bool)  # what the re-rank stage starts from, (N,)
            if exclude:
                keep = ~np.isin(items, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
            if cold[i]:  # cold start: trending then fresh, in list order, topic-diversified
                listed = (sources == "trending") | (sources == "fresh")  # (N,)
                keep &= listed
                src = np.flatnonzero(listed)
                s_final = -np.arange(len(items), dtype=np.float32)
                pick = rerank(
                    items[src],
                    s_final[src],
                    self.item_topic[items[src]],
                    k,
                    exclude,
                    None,
                    **self.rerank_kw,
                )
                chosen = [int(src[j]) for j in pick]
            else:
                s_final = np.asarray(scores[i], dtype=np.float32)
                chosen = rerank(
                    items,
                    s_final,
                    self.item_topic[items],
                    k,
                    exclude,
                    self.item_age_days[items],
                    **self.rerank_kw,
                )
            before = ranked_positions(s_final, keep)  # (N,) pre-re-rank positions
            out = []
            for j in chosen:
                row = {
                    "item": int(items[j]),
                    "score": float(s_final[j]),
                    "source": "cold_start" if cold[i] else str(sources[j]),
                    "pre_rank": int(before[j]),
                }
                if self.item_ids is not None:
                    row["external_id"] = self._external(int(items[j]))
                out.append(row)
            results.append(
                {
                    "items": out,
                    "cold_start": cold[i],
                    "fallback": fallback,
                    "model_version": self.version,
                }
            )
        return results

    def recommend_batch(
        self,
        user_ids: list,
        histories: list[list[int] | None],
        k: int,
        blocked: list[list[int]] | None = None,
    ) -> list[dict]:
        """The whole funnel for a batch of requests, in process."""
        hists, cold = self.prepare(user_ids, histories)
        cands = self.retrieve(hists)
        try:
            scores, fallback = self.rank(hists, cands), False
        except Exception as e:  # the ranker failed: serve the fallback list and say so
            self.ranker_failures += 1
            logger.warning("ranker failed, serving the fallback list: %s", e)
            scores, fallback = None, True
        return self.finish(hists, cold, cands, scores, fallback, k, blocked)

    def recommend(self, user_id=None, history=None, k: int = 10, blocked=None) -> dict:
        return self.recommend_batch([user_id], [history], k, [blocked or []])[0]

    def observation(
        self, requests: list[dict], answers: list[dict] | None = None
    ) -> tuple[dict[str, list[float]], list[float]]:
        """What the live monitor watches and the golden set records (shared.golden): per
        request the history length, whether it is a cold start, and how many ids it blocks;
        the score, the best served item's score (0 for an empty list), which moves when any
        retriever's or the ranker's weights do. A stage-limited replica (the ingress) that must
        compute answers loads the whole funnel from its artifact for it."""
        full = self
        if answers is None:
            # The artifact is what is checked: an injected ranker fault is a runtime fault.
            whole = set(self.stages) == set(STAGES) and not self.fail_ranker
            full = self if whole else VideoRecPredictor.load(self.path)
            answers = [
                full.recommend(
                    r.get("user_id"), r.get("history"), int(r.get("k", 10)), r.get("blocked")
                )
                for r in requests
            ]
        # Known users' histories from the funnel that answered (a stage-limited replica does
        # not hold them, and the golden check compares these features too).
        hists = [
            r.get("history")
            if r.get("history") is not None
            else full.user_histories.get(str(r.get("user_id")), [])
            for r in requests
        ]
        features = {
            "history_len": [float(len(h)) for h in hists],
            "cold_start": [float(a["cold_start"]) for a in answers],
            "blocked": [float(len(r.get("blocked") or [])) for r in requests],
        }
        scores = [max((x["score"] for x in a["items"]), default=0.0) for a in answers]
        return features, scores

    def _external(self, item: int):
        if self.item_ids is None:
            return item
        v = self.item_ids[item]
        return v.item() if hasattr(v, "item") else v


def _prefixed(t: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in t.items() if k.startswith(prefix)}
