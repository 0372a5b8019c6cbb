"""The served funnel, from an artifact: retrieval (faiss) -> ranking (onnxruntime) -> re-ranking.

No training imports: the predictor rebuilds the retrieval towers from `model.py` and the saved
weights, and runs the ranker through onnxruntime.

    p = VideoRecPredictor.load(Path("runs/video-recommendation/registry/versions/v0001"))
    p.recommend(user_id=12, history=None, k=10)
    -> {"items": [{"item": 431, "score": 2.1, "source": "sasrec"}, ...], "cold_start": False, ...}

Candidate sources: the learned retriever(s) via a faiss inner-product index (exact `IndexFlatIP`
for catalogs up to 50K videos, HNSW above), trending (recent popularity) and fresh uploads.
Re-ranking: remove watched and blocked videos, a freshness bonus, then MMR over topics with a
per-topic cap. An unknown user with no history gets the cold-start list (trending + fresh).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from shared.artifacts import load_artifact, sanity_check
from shared.errors import ArtifactError, CasebookError

from .model import VideoRecSASRec, VideoRecTwoTower

logger = logging.getLogger("casebook")
DAY_S = 86400
EXACT_INDEX_MAX = 50000  # above this many videos the index is HNSW (approximate)


def build_index(vectors: np.ndarray):
    """A faiss inner-product index over item vectors (N, D)."""
    import faiss

    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(v) <= EXACT_INDEX_MAX:
        index = faiss.IndexFlatIP(v.shape[1])
    else:
        index = faiss.IndexHNSWFlat(v.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
    index.add(v)
    return index


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
    exclude = exclude or set()
    keep = np.array([int(i) not in exclude for i in item_ids], dtype=bool)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return []
    s = scores[idx].astype(np.float64)
    s = (s - s.min()) / (s.max() - s.min() + 1e-12)
    if upload_age_days is not None:
        s = s + freshness_boost * np.exp(-np.maximum(upload_age_days[idx], 0.0) / 3.0)
    t = topics[idx]
    chosen: list[int] = []
    per_topic: dict[int, int] = {}
    available = np.ones(idx.size, dtype=bool)
    while len(chosen) < k and available.any():
        seen = np.zeros(idx.size, dtype=bool)
        for c in chosen:
            if t[c] >= 0:
                seen |= t == t[c]
        mmr = mmr_lambda * s - (1.0 - mmr_lambda) * seen
        capped = np.array([tt >= 0 and per_topic.get(int(tt), 0) >= max_per_topic for tt in t])
        mmr = np.where(available & ~capped, mmr, -np.inf)
        if not np.isfinite(mmr).any():  # every remaining topic is capped: relax the cap
            mmr = np.where(available, lambda_only(s, mmr_lambda), -np.inf)
        j = int(np.argmax(mmr))
        chosen.append(j)
        available[j] = False
        per_topic[int(t[j])] = per_topic.get(int(t[j]), 0) + 1
    return [int(idx[j]) for j in chosen]


def lambda_only(s: np.ndarray, lam: float) -> np.ndarray:
    return lam * s


class VideoRecPredictor:
    """Loads an artifact; `recommend` runs the funnel for one request, `recommend_batch` many."""

    def __init__(self, art, fail_ranker: bool = False):
        cfg = art.config
        self.cfg = cfg
        self.version = art.path.name
        t = art.tensors
        self.n_items = int(cfg["n_items"])
        self.item_ids = np.asarray(cfg["item_ids"]) if cfg.get("item_ids") else None
        self.item_topic = t["item_topic"].numpy().astype(np.int64)
        self.item_age_days = t["item_age_days"].numpy().astype(np.float32)
        self.item_views = t["item_views"].numpy().astype(np.float32)
        self.item_log_duration = t["item_log_duration"].numpy().astype(np.float32)
        self.trending = t["trending"].numpy().astype(np.int64)
        self.fresh = t["fresh"].numpy().astype(np.int64)
        self.user_histories = json.loads(art.files["histories.json"].decode())
        hp = cfg["hparams"]
        n_topics = int(cfg["n_topics"])
        self.seq_len = int(hp["seq_len"])
        self.tower = VideoRecTwoTower(self.n_items, n_topics, hp["embed_dim"])
        self.tower.load_state_dict(_prefixed(t, "tower."))
        self.tower.eval()
        self.sasrec = None
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
        self.sasrec_index = None
        if self.sasrec is not None:
            self.sasrec_index = build_index(self.sasrec.item_emb.weight[1:].detach().numpy())
        self.ranker = None
        if "ranker.onnx" in art.files:
            from shared.onnx_utils import make_session

            path = art.path / "ranker.onnx"
            self.ranker = make_session(path, threads=1)
        self.fail_ranker = fail_ranker
        self.n_candidates = int(hp["retrieval_candidates"])
        self.rerank_kw = {
            "freshness_boost": float(hp["freshness_boost"]),
            "mmr_lambda": float(hp["mmr_lambda"]),
            "max_per_topic": int(hp["max_per_topic"]),
        }
        self.ranker_failures = 0

    @classmethod
    def load(cls, path: Path, fail_ranker: bool = False) -> VideoRecPredictor:
        art = load_artifact(path)
        if art.config.get("case") != "video-recommendation":
            raise ArtifactError(f"{path} is not a video-recommendation artifact")
        p = cls(art, fail_ranker=fail_ranker)
        out = p.recommend_batch([None], [list(map(int, p.trending[:3]))], 5)
        sanity_check(np.array([x["score"] for x in out[0]["items"]], dtype=np.float32))
        return p

    # --- stages ---
    @torch.no_grad()
    def retrieve(self, histories: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray, list]]:
        """Candidates per request: (items, scores, sources) from learned + trending + fresh."""
        n = self.n_candidates
        out: list[tuple[np.ndarray, np.ndarray, list]] = [None] * len(histories)  # type: ignore
        has = [i for i, h in enumerate(histories) if h]
        found: dict[int, dict[int, tuple[float, str]]] = {i: {} for i in range(len(histories))}
        if has:
            seqs = [np.asarray(histories[i][-self.seq_len :], dtype=np.int64) for i in has]
            x = torch.from_numpy(_pad_left(seqs, self.seq_len))
            u = self.tower.user_vectors(x).numpy()  # (B, D)
            D, I = self.tower_index.search(np.ascontiguousarray(u), n)
            for r, i in enumerate(has):
                for item, s in zip(I[r], D[r], strict=True):
                    if item >= 0:
                        found[i].setdefault(int(item), (float(s), "two_tower"))
            if self.sasrec_index is not None:
                h = self.sasrec.hidden(x)[:, -1].numpy()  # (B, D)
                D, I = self.sasrec_index.search(np.ascontiguousarray(h), n)
                for r, i in enumerate(has):
                    for item, s in zip(I[r], D[r], strict=True):
                        if item >= 0:
                            found[i][int(item)] = (float(s), "sasrec")  # sasrec label wins
        for i in range(len(histories)):
            extra = [(int(t), "trending") for t in self.trending[:50]]
            extra += [(int(f), "fresh") for f in self.fresh[:20]]
            for item, src in extra:
                found[i].setdefault(item, (-1e3, src))
            items = np.fromiter(found[i].keys(), dtype=np.int64)
            scores = np.array([found[i][j][0] for j in items], dtype=np.float32)
            out[i] = (items, scores, [found[i][j][1] for j in items])
        return out

    def rank(self, histories: list[list[int]], cands) -> list[np.ndarray]:
        """Ranker scores per request (watch log-odds + log P(satisfied)); raises on failure."""
        if self.fail_ranker:
            raise RuntimeError("ranker unavailable (fault injected)")
        if self.ranker is None:
            return [c[1] for c in cands]
        rows_item, rows_topic, rows_dense, sizes = [], [], [], []
        n_topics = int(self.cfg["n_topics"])
        with torch.no_grad():  # every request's user vector in one forward pass, (B, D)
            x = torch.from_numpy(
                _pad_left([np.asarray(h[-self.seq_len :]) for h in histories], self.seq_len)
            )
            users = self.tower.user_vectors(x).numpy()
        for r, (h, (items, _, _)) in enumerate(zip(histories, cands, strict=True)):
            share = np.zeros(n_topics, np.float32)
            if h:
                share = np.bincount(self.item_topic[h], minlength=n_topics) / len(h)
            u = users[r] if h else np.zeros(self.tower_items.shape[1], np.float32)
            dense = np.stack(
                [
                    self.item_log_duration[items],
                    np.log1p(np.maximum(self.item_age_days[items], 0.0)),
                    np.log1p(self.item_views[items]),
                    share[self.item_topic[items]],
                    self.tower_items[items] @ u,
                    np.zeros(len(items), np.float32),  # example age: 0 at serving
                ],
                1,
            ).astype(np.float32)
            rows_item.append(items + 1)
            rows_topic.append(self.item_topic[items] + 1)
            rows_dense.append(dense)
            sizes.append(len(items))
        logits = self.ranker.run(
            None,
            {
                "item": np.concatenate(rows_item).astype(np.int64),
                "topic": np.concatenate(rows_topic).astype(np.int64),
                "dense": np.concatenate(rows_dense),
            },
        )[0]
        score = logits[:, 1] - np.logaddexp(0.0, -logits[:, 2])
        if not np.all(np.isfinite(score)):
            raise RuntimeError("ranker returned non-finite scores")
        return np.split(score, np.cumsum(sizes)[:-1])

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
            scores = [np.where(np.asarray(c[2]) == "trending", -1e3, c[1]) for c in cands]
        results = []
        for i, (items, _, sources) in enumerate(cands):
            exclude = set(hists[i]) | set(blocked[i] if blocked else [])
            if cold[i]:  # cold start: trending then fresh, in list order, topic-diversified
                src = [j for j, s in enumerate(sources) if s in ("trending", "fresh")]
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
                chosen = [src[j] for j in pick]
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
            out = []
            for j in chosen:
                row = {
                    "item": int(items[j]),
                    "score": float(s_final[j]),
                    "source": "cold_start" if cold[i] else sources[j],
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

    def _external(self, item: int):
        if self.item_ids is None:
            return item
        v = self.item_ids[item]
        return v.item() if hasattr(v, "item") else v


def _prefixed(t: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in t.items() if k.startswith(prefix)}


def _pad_left(seqs: list[np.ndarray], L: int) -> np.ndarray:
    out = np.zeros((len(seqs), L), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-L:]
        if len(s):
            out[r, L - len(s) :] = s + 1
    return out
