"""Training: the leave-last-out split, the retrieval models, and the multi-task ranker.

Every retriever has `score(H, seqs) -> (B, I)`: H is the history as a CSR user x item matrix,
seqs the same histories as time-ordered item arrays (the sequential models need the order).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from shared.ranking import ndcg_at_k
from shared.splits import leave_last_out

from .baseline import EASE, ItemKNN, Popularity, RecentPopularity
from .config import VideoRecConfig
from .data import DAY_S, VideoRecData
from .model import (
    VideoRecSASRec,
    VideoRecTwoTower,
    pad_left,
    ranker_inputs,
    tower_score,
)
from .predictor import VideoRecPredictor, recency_weights


@dataclass
class RetrievalSplit:
    """Leave-one-out per user: one watch -> test, another -> validation, the rest -> train.

    With timestamps the held-out watches are the last and the one before (`protocol` =
    "leave_last_out"); without them they are drawn at random with the run's seed
    ("random_leave_one_out") and the sequences are in that random order, which means nothing.
    """

    n_users: int
    n_items: int
    X_train: sp.csr_matrix  # (U, I) train watches, binary
    X_trainval: sp.csr_matrix  # (U, I) train + validation watches (the history at test time)
    seqs_train: list[np.ndarray]  # per user, time-ordered train items (random order: no time)
    seqs_trainval: list[np.ndarray]
    val_item: np.ndarray  # (U,) -1 where the user has no validation item
    test_item: np.ndarray  # (U,) -1 where the user has no test item
    train_ts: np.ndarray  # timestamps of train rows (for recent popularity)
    train_items: np.ndarray  # items of train rows
    protocol: str = "leave_last_out"
    C_train: sp.csr_matrix | None = None  # (U, I) count-derived confidence weights (counts only)

    @property
    def test_users(self) -> np.ndarray:
        return np.flatnonzero(self.test_item >= 0)

    @property
    def val_users(self) -> np.ndarray:
        return np.flatnonzero(self.val_item >= 0)


def _csr(users, items, n_users, n_items, values=None) -> sp.csr_matrix:
    v = np.ones(len(users), dtype=np.float32) if values is None else values.astype(np.float32)
    X = sp.csr_matrix((v, (users, items)), shape=(n_users, n_items))
    if values is None:
        X.data[:] = 1.0  # a repeated watch counts once
    return X


def _seqs(users, items, ts, n_users) -> list[np.ndarray]:
    order = np.lexsort((np.arange(len(users)), ts, users))
    u, i = users[order], items[order]
    bounds = np.searchsorted(u, np.arange(n_users + 1))
    return [i[bounds[k] : bounds[k + 1]] for k in range(n_users)]


def confidence(counts: np.ndarray) -> np.ndarray:
    """Count-derived confidence weights: c = log1p(count) / mean(log1p(count)).

    log1p keeps a 10,000-play artist from drowning a user's other tastes (Hu, Koren and Volinsky
    2008 use 1 + alpha log(1 + count / eps)); dividing by the mean keeps the weights near 1, so
    EASE's lambda means about the same as on binary data.
    """
    c = np.log1p(np.maximum(np.asarray(counts, dtype=np.float64), 0.0))
    return (c / max(float(c.mean()), 1e-12)).astype(np.float32)


def make_split(data: VideoRecData, seed: int = 0) -> RetrievalSplit:
    """The retrieval split: leave-last-out by time, or a seeded random leave-one-out without it.

    Random leave-one-out is leave-last-out over seeded random keys in place of time, so both
    protocols hold out two watches of every user with at least three (`shared.splits`).
    """
    it = data.interactions
    u, i, t = it["user"], it["item"], it["timestamp"]
    protocol = "leave_last_out"
    if not data.has_time:
        # Row order is not time (Last.fm is sorted by artist id): random keys, seeded.
        t = np.random.default_rng(seed).random(len(u))
        protocol = "random_leave_one_out"
    tr, va, te = leave_last_out(u, t, n_holdout=2)
    trva = np.sort(np.concatenate([tr, va]))
    val_item = np.full(data.n_users, -1, dtype=np.int64)
    val_item[u[va]] = i[va]
    test_item = np.full(data.n_users, -1, dtype=np.int64)
    test_item[u[te]] = i[te]
    C = None
    if data.weight_is_count:
        C = _csr(u[tr], i[tr], data.n_users, data.n_items, confidence(it["weight"][tr]))
    return RetrievalSplit(
        n_users=data.n_users,
        n_items=data.n_items,
        X_train=_csr(u[tr], i[tr], data.n_users, data.n_items),
        X_trainval=_csr(u[trva], i[trva], data.n_users, data.n_items),
        seqs_train=_seqs(u[tr], i[tr], t[tr], data.n_users),
        seqs_trainval=_seqs(u[trva], i[trva], t[trva], data.n_users),
        val_item=val_item,
        test_item=test_item,
        train_ts=t[tr],
        train_items=i[tr],
        protocol=protocol,
        C_train=C,
    )


# ---------------------------------------------------------------------------------------------
# Baselines behind the common interface


class BaselineRetriever:
    """A baseline behind the retriever interface; `weighted` fits on the confidence weights
    (`split.C_train`) instead of binary watches. Scoring always reads a binary history, as the
    served item-to-item table does."""

    def __init__(self, model, weighted: bool = False):
        self.model, self.weighted = model, weighted

    def fit(self, split: RetrievalSplit):
        X = split.C_train if self.weighted else split.X_train
        self.model.fit(X, split.train_ts, split.train_items)
        return self

    def score(self, H: sp.csr_matrix, seqs: list[np.ndarray]) -> np.ndarray:
        return self.model.score(H)


def make_baselines(cfg: VideoRecConfig, counts: bool = False) -> dict[str, BaselineRetriever]:
    """The baselines; with play counts also item-kNN and EASE on log1p confidence weights."""
    out = {
        "popularity": BaselineRetriever(Popularity()),
        "recent_popularity": BaselineRetriever(RecentPopularity()),
        "item_knn": BaselineRetriever(ItemKNN(k=cfg.knn_neighbours)),
        "ease": BaselineRetriever(EASE(lam=cfg.ease_lambda, max_items=cfg.ease_max_items)),
    }
    if counts:
        knn = ItemKNN(k=cfg.knn_neighbours, binary=False)
        ease = EASE(lam=cfg.ease_lambda, max_items=cfg.ease_max_items, binary=False)
        out["item_knn_log1p"] = BaselineRetriever(knn, weighted=True)
        out["ease_log1p"] = BaselineRetriever(ease, weighted=True)
    return out


def recency_matrix(seqs: list[np.ndarray], n_items: int, tau: float, floor: float):
    """Histories as a (B, I) CSR of recency weights: w_r = floor + (1 - floor) exp(-r / tau).

    r = 0 for the newest watch, 1 for the one before, ...; tau <= 0 means no decay (w = 1). A
    video watched twice keeps its larger (more recent) weight. The per-position rule is the
    served one (`predictor.recency_weights`), so offline scores and the served table agree.
    """
    rows, cols, vals = [], [], []
    for b, s in enumerate(seqs):
        if len(s) == 0:
            continue
        w = recency_weights(s, tau, floor)  # (n,) the served rule, oldest first
        rows.append(np.full(len(s), b))
        cols.append(s)
        vals.append(w)
    if not rows:
        return sp.csr_matrix((len(seqs), n_items), dtype=np.float32)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    order = np.lexsort((-v, c, r))  # per (row, item), the largest weight first
    r, c, v = r[order], c[order], v[order]
    first = np.r_[True, (r[1:] != r[:-1]) | (c[1:] != c[:-1])]
    return sp.csr_matrix(
        (v[first].astype(np.float32), (r[first], c[first])), shape=(len(seqs), n_items)
    )


class RecencyEASERetriever:
    """EASE's item-item weights applied to a recency-weighted history (the sequence-aware EASE).

    score_j = sum_r w_r B[h_r, j] with w_r from `recency_matrix`. Plain EASE counts a video
    watched three years ago as much as the one watched a minute ago; what a viewer watches next
    depends mostly on the last few watches (MovieLens users rate in sessions, YouTube viewers
    binge a topic). tau is chosen on the validation items from `cfg.recency_taus` (0 = no decay,
    which is plain EASE, so the choice can only match or beat it on validation).
    """

    def __init__(self, cfg: VideoRecConfig, ease: EASE | None = None):
        self.cfg = cfg
        # An EASE already fitted on the same training matrix (the baseline row) is reused.
        self.ease = ease or EASE(lam=cfg.ease_lambda, max_items=cfg.ease_max_items)
        self.tau_ = 0.0
        self.val_ndcg_: dict[float, float] = {}

    def fit(self, split: RetrievalSplit):
        if not hasattr(self.ease, "B_"):
            self.ease.fit(split.X_train)
        users = split.val_users
        H = split.X_train[users]
        seqs = [split.seqs_train[u] for u in users]
        target = split.val_item[users]
        for tau in self.cfg.recency_taus:
            W = recency_matrix(seqs, split.n_items, tau, self.cfg.recency_floor)
            s = self.ease.score(W, binary=False)  # (B, I)
            self.val_ndcg_[tau] = _ndcg10(s, H, target)
        self.tau_ = max(self.val_ndcg_, key=self.val_ndcg_.get)
        return self

    def score(self, H: sp.csr_matrix, seqs: list[np.ndarray]) -> np.ndarray:
        W = recency_matrix(seqs, H.shape[1], self.tau_, self.cfg.recency_floor)
        return self.ease.score(W, binary=False)


def _ndcg10(scores: np.ndarray, H: sp.csr_matrix, target: np.ndarray) -> float:
    """Mean NDCG@10 of one held-out item per row, history excluded: 1 / log2(rank + 2).

    rank = items scored above the target + half the other items tied with it (the expected rank
    under random tie-breaking; many unrelated items tie at a score of exactly 0)."""
    s = scores.astype(np.float32, copy=True)
    r, c = H.nonzero()
    s[r, c] = -np.inf
    t = s[np.arange(len(target)), target][:, None]  # (B, 1)
    rank = (s > t).sum(1) + ((s == t).sum(1) - 1) / 2.0  # (B,)
    return float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean()) if len(s) else 0.0


# ---------------------------------------------------------------------------------------------
# Sequence helpers


def sasrec_windows(seqs: list[np.ndarray], L: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-item windows of length L per sequence, newest first: (N, L) inputs and targets."""
    inp, tgt = [], []
    for s in seqs:
        s = s + 1
        end = len(s)
        while end >= 2:
            start = max(0, end - L - 1)
            chunk = s[start:end]
            x, y = np.zeros(L, np.int64), np.zeros(L, np.int64)
            x[L - len(chunk) + 1 :] = chunk[:-1]
            y[L - len(chunk) + 1 :] = chunk[1:]
            inp.append(x)
            tgt.append(y)
            end = start + 1  # the next window ends where this one's inputs began
            if start == 0:
                break
    if not inp:
        return np.zeros((0, L), np.int64), np.zeros((0, L), np.int64)
    return np.stack(inp), np.stack(tgt)


def _progress(it, desc: str):
    return tqdm(it, desc=desc, leave=False, disable=None)


def train_epochs(model, opt, loss_of, n: int, batch: int, epochs: int, rng, desc: str) -> list:
    """Minibatch training: `epochs` passes over n rows, each in a fresh permutation from `rng`;
    `loss_of(idx)` gives the mean loss of rows idx (B,). Returns the mean loss of each epoch and
    leaves the model in eval mode."""
    history = []
    model.train()
    for _ in _progress(range(epochs), desc):
        perm = torch.from_numpy(rng.permutation(n))
        total, steps = 0.0, 0
        for b in range(0, n, batch):
            loss = loss_of(perm[b : b + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        history.append(total / max(steps, 1))
    model.eval()
    return history


class SASRecRetriever:
    """Trains `VideoRecSASRec` on next-item windows of the training sequences."""

    def __init__(self, cfg: VideoRecConfig, seed: int = 0, epochs: int | None = None):
        self.cfg, self.seed = cfg, seed
        self.epochs = cfg.seq_epochs if epochs is None else epochs
        self.history_: list[float] = []

    def fit(self, split: RetrievalSplit, seqs: list[np.ndarray] | None = None):
        cfg = self.cfg
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.model = VideoRecSASRec(
            split.n_items,
            cfg.embed_dim,
            cfg.seq_len,
            cfg.seq_layers,
            cfg.seq_heads,
            cfg.seq_dropout,
        )
        X, Y = sasrec_windows(seqs if seqs is not None else split.seqs_train, cfg.seq_len)
        if len(X) == 0:
            self.model.eval()
            return self
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        self.history_ = train_epochs(
            self.model,
            opt,
            lambda idx: self.model.loss(Xt[idx], Yt[idx], cfg.seq_negatives),
            len(X),
            cfg.seq_batch,
            self.epochs,
            rng,
            "sasrec",
        )
        return self

    @torch.no_grad()
    def score(self, H: sp.csr_matrix, seqs: list[np.ndarray]) -> np.ndarray:
        out = []
        for b in range(0, len(seqs), 256):
            x = torch.from_numpy(pad_left(seqs[b : b + 256], self.cfg.seq_len))
            out.append(self.model(x)[:, 1:].numpy())  # drop the pad column -> (B, I)
        return np.concatenate(out) if out else np.zeros((0, H.shape[1]), np.float32)


def tower_pairs(seqs: list[np.ndarray], L: int) -> tuple[np.ndarray, np.ndarray]:
    """(history -> next watch) training pairs: every prefix of every sequence, its last L items
    left-padded, (N, L), and the item that followed, +1 indexed (0 is the pad), (N,)."""
    hist, pos = [], []
    for s in seqs:
        for t in range(1, len(s)):
            hist.append(s[max(0, t - L) : t])
            pos.append(s[t])
    return pad_left(hist, L), np.asarray(pos, dtype=np.int64) + 1


class TwoTowerRetriever:
    """Trains `VideoRecTwoTower` on (history -> next watch) pairs with logQ-corrected softmax."""

    def __init__(
        self, cfg: VideoRecConfig, item_topic: np.ndarray, seed: int = 0, epochs: int | None = None
    ):
        self.cfg, self.seed = cfg, seed
        self.item_topic = item_topic
        self.epochs = cfg.tower_epochs if epochs is None else epochs
        self.history_: list[float] = []

    def _topics(self, items: torch.Tensor) -> torch.Tensor:
        """items (+1 indexed) -> topic index +1 (0 = unknown or pad)."""
        t = torch.from_numpy(np.r_[-1, self.item_topic] + 1)
        return t[items]

    def fit(self, split: RetrievalSplit, seqs: list[np.ndarray] | None = None):
        cfg = self.cfg
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        n_topics = int(self.item_topic.max()) + 1 if self.item_topic.size else 0
        self.model = VideoRecTwoTower(split.n_items, n_topics, cfg.embed_dim)
        Hn, Pn = tower_pairs(seqs if seqs is not None else split.seqs_train, cfg.seq_len)
        if not len(Pn):
            self.model.eval()
            return self
        H, P = torch.from_numpy(Hn), torch.from_numpy(Pn)  # (N, L), (N,)
        counts = np.bincount(Pn - 1, minlength=split.n_items) + 1.0
        # In-batch negatives arrive in proportion to popularity: q_j = count_j / total.
        log_q = torch.from_numpy(np.log(np.r_[1.0, counts] / counts.sum()).astype(np.float32))
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)

        def loss_of(idx: torch.Tensor) -> torch.Tensor:
            p = P[idx]  # (B,) the next watch, +1 indexed
            return self.model.loss(H[idx], p, self._topics(p), log_q[p])

        self.history_ = train_epochs(
            self.model, opt, loss_of, len(P), cfg.tower_batch, self.epochs, rng, "two-tower"
        )
        self.cache_items()
        return self

    @torch.no_grad()
    def cache_items(self):
        """The item tower's vectors of every item, (I, D), kept for scoring."""
        items = torch.arange(1, self.model.item_emb.num_embeddings)
        self.item_vectors_ = self.model.item_vectors(items, self._topics(items)).numpy()  # (I, D)

    @torch.no_grad()
    def user_vectors(self, seqs: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(pad_left(seqs, self.cfg.seq_len))
        return self.model.user_vectors(x).numpy()  # (B, D)

    def score(self, H: sp.csr_matrix, seqs: list[np.ndarray]) -> np.ndarray:
        return self.user_vectors(seqs) @ self.item_vectors_.T  # (B, I)


def top_k_excluding(scores: np.ndarray, H: sp.csr_matrix, k: int) -> np.ndarray:
    """Top-k item ids per row after removing the items in each history row; (B, I) -> (B, k)."""
    s = scores.astype(np.float32, copy=True)
    r, c = H.nonzero()
    s[r, c] = -np.inf
    k = min(k, s.shape[1])
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def rank_users(
    model,
    split: RetrievalSplit,
    users: np.ndarray,
    stage: str = "test",
    k: int = 50,
    batch: int = 1024,
) -> np.ndarray:
    """Top-k lists for `users`; stage "test" uses train + validation history, "val" train only."""
    X = split.X_trainval if stage == "test" else split.X_train
    seqs = split.seqs_trainval if stage == "test" else split.seqs_train
    out = []
    for b in range(0, len(users), batch):
        u = users[b : b + batch]
        H = X[u]
        out.append(top_k_excluding(model.score(H, [seqs[x] for x in u]), H, k))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


# Models that need an order of watches, skipped on data without timestamps.
ORDERED_MODELS = {
    "recent_popularity": "counts the most recent watches; without timestamps there are none",
    "ease_recency": "weights each watch by how recent it is; without timestamps nothing is",
    "sasrec": "predicts the next watch from the ones before; without timestamps the order "
    "is the file's (Last.fm: artist id), not the viewer's",
}


@dataclass
class VideoRecTrained:
    """What training produced: the split, the fitted retrievers and the one chosen to ship."""

    split: RetrievalSplit
    models: dict  # name -> fitted retriever
    skipped: dict[str, str]  # name -> why it was not trained on this data
    val_ndcg: dict[str, float]  # name -> validation NDCG@10 (the selection metric)
    production: str  # the retriever the artifact serves first: best on validation
    learned: str  # the better learned retriever on validation (its index is served too)
    rankers: dict | None = None  # simulator only: variant -> VideoRecRanker
    rank_test: tuple | None = None  # (features, impressions) of the ranker's test days
    funnel: dict | None = None  # the funnel's knobs chosen on validation (`funnel.py`)


def train_retrievers(
    cfg: VideoRecConfig, data: VideoRecData, seed: int, timings: dict
) -> VideoRecTrained:
    """Split, fit every retriever the data allows, and pick the shipped one on validation.

    Without timestamps the models that need an order are skipped (ORDERED_MODELS); with play
    counts the log1p-weighted item-kNN and EASE are fitted beside the binary ones.
    `timings` gets fit_<name>_s per model (seconds).
    """
    split = make_split(data, seed)
    candidates = dict(make_baselines(cfg, counts=data.weight_is_count))
    candidates["ease_recency"] = RecencyEASERetriever(cfg, ease=candidates["ease"].model)
    candidates["two_tower"] = TwoTowerRetriever(cfg, data.item_topic, seed)
    candidates["sasrec"] = SASRecRetriever(cfg, seed)
    skipped = {} if data.has_time else dict(ORDERED_MODELS)
    models, val = {}, {}
    users = split.val_users
    rel = [[t] for t in split.val_item[users]]
    for name, model in candidates.items():
        if name in skipped:
            continue
        t0 = time.perf_counter()
        models[name] = model.fit(split)
        timings[f"fit_{name}_s"] = time.perf_counter() - t0
        val[name] = ndcg_at_k(rank_users(model, split, users, "val", 10), rel, 10)
    # The shipped retriever is chosen on validation NDCG@10, never on the test numbers.
    production = max(val, key=val.get)
    learned = max(("two_tower", "sasrec"), key=lambda n: val.get(n, -1.0))
    return VideoRecTrained(split, models, skipped, val, production, learned)


# ---------------------------------------------------------------------------------------------
# The multi-task ranker


def ranker_features(
    imp: dict[str, np.ndarray],
    data: VideoRecData,
    tower: TwoTowerRetriever,
    t_end: float,
    item_views: np.ndarray,
) -> dict[str, np.ndarray]:
    """Ranker inputs for impression rows, from each user's watches before the session started.

    Returns item (+1), topic (+1) and dense (N, 6) by `model.ranker_inputs` (the function the
    predictor uses): log duration, log video age (days), log item views, topic affinity (share
    of the user's past watches in this topic), two-tower score, and example age in days
    (t_end - request time; set to 0 at serving, Covington et al. 2016).
    """
    sim = data.simulator
    it = data.interactions
    order = np.lexsort((it["timestamp"], it["user"]))
    wu, wi, wt = it["user"][order], it["item"][order], it["timestamp"][order]
    bounds = np.searchsorted(wu, np.arange(data.n_users + 1))
    # One history per (user, session): watches strictly before the session's first impression.
    sess, first = np.unique(imp["session"], return_index=True)
    s_user, s_time = imp["user"][first], imp["timestamp"][first]
    hists = []
    for u, t in zip(s_user, s_time, strict=True):
        a, b = bounds[u], bounds[u + 1]
        k = a + np.searchsorted(wt[a:b], t, side="left")
        hists.append(wi[a:k])
    uvec = tower.user_vectors(hists)  # (S, D)
    row_sess = np.searchsorted(sess, imp["session"])  # impression -> session row
    # Ages are taken at the request (the session's start), as the served request sees them,
    # not at each slot's impression time (slot k is logged about 20 k seconds later).
    t_req = s_time[row_sess]
    items = imp["item"]
    return ranker_inputs(
        items,
        row_sess,
        hists,
        data.item_topic,
        int(data.item_topic.max()) + 1,
        np.log(sim.item_duration_s[items]),
        (t_req - data.item_upload_s[items]) / DAY_S,
        item_views[items],
        tower_score(uvec[row_sess], tower.item_vectors_[items]),
        (t_end - t_req) / DAY_S,
    )


def train_ranker(
    feats: dict[str, np.ndarray],
    imp: dict[str, np.ndarray],
    cfg: VideoRecConfig,
    n_items: int,
    n_topics: int,
    seed: int = 0,
    weight_watch: bool = True,
    use_position: bool = True,
):
    """Fit `VideoRecRanker` on logged impressions.

    Losses: click BCE; watch head = BCE on the click label with positives weighted by watch
    time / mean watch time and negatives by 1, so exp(logit) tracks expected watch time
    (Covington et al. 2016); `weight_watch=False` is the ablation (plain click weights);
    satisfaction BCE on clicked rows only.
    """
    from .model import VideoRecRanker

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = VideoRecRanker(
        n_items, n_topics, cfg.slate_size, cfg.rank_hidden, use_position=use_position
    )
    item = torch.from_numpy(feats["item"])
    topic = torch.from_numpy(feats["topic"])
    dense = torch.from_numpy(feats["dense"])
    pos = torch.from_numpy(imp["position"].astype(np.int64))
    click = torch.from_numpy(imp["click"].astype(np.float32))
    sat = torch.from_numpy(imp["satisfied"].astype(np.float32))
    wt = imp["watch_time"].astype(np.float32)
    mean_wt = float(wt[imp["click"] > 0].mean()) if (imp["click"] > 0).any() else 1.0
    w_watch = np.where(imp["click"] > 0, wt / mean_wt, 1.0) if weight_watch else np.ones_like(wt)
    w_watch = torch.from_numpy(w_watch.astype(np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    model.train()
    n = len(click)
    for _ in _progress(range(cfg.rank_epochs), "ranker"):
        perm = torch.from_numpy(rng.permutation(n))
        for b in range(0, n, cfg.rank_batch):
            idx = perm[b : b + cfg.rank_batch]
            out = model(item[idx], topic[idx], dense[idx], pos[idx])  # (B, 3)
            c = click[idx]
            loss = bce(out[:, 0], c) + bce(out[:, 1], c, weight=w_watch[idx])
            if c.sum() > 0:
                per = bce(out[:, 2], sat[idx], reduction="none")
                loss = loss + (per * c).sum() / c.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def ranker_logits(model, feats: dict[str, np.ndarray], position: np.ndarray | None = None):
    """(N, 3) logits; with `position` the position tower is applied (as in training)."""
    out = []
    n = len(feats["item"])
    for b in range(0, n, 8192):
        sl = slice(b, b + 8192)
        p = None if position is None else torch.from_numpy(position[sl].astype(np.int64))
        out.append(
            model(
                torch.from_numpy(feats["item"][sl]),
                torch.from_numpy(feats["topic"][sl]),
                torch.from_numpy(feats["dense"][sl]),
                p,
            ).numpy()
        )
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


RANKER_VARIANTS = {
    "multitask": {},
    "no_watch_weighting": {"weight_watch": False},
    "no_position_tower": {"use_position": False},
}


def train_rankers(cfg: VideoRecConfig, data: VideoRecData, trained: VideoRecTrained, seed: int):
    """The ranker and its ablations on the first 80% of simulated days (simulator only).

    Sets `trained.rankers` (variant -> model) and `trained.rank_test` (features and
    impressions of the last 20% of days, for evaluation and the ONNX parity check).
    """
    imp = data.impressions
    cut = int(cfg.n_days * 0.8)
    tr = imp["day"] < cut
    item_views = np.bincount(data.interactions["item"], minlength=data.n_items).astype(np.float32)
    feats = ranker_features(imp, data, trained.models["two_tower"], float(cut * DAY_S), item_views)
    sub = lambda d, m: {k: v[m] for k, v in d.items()}  # noqa: E731
    n_topics = int(data.item_topic.max()) + 1
    trained.rankers = {
        name: train_ranker(sub(feats, tr), sub(imp, tr), cfg, data.n_items, n_topics, seed, **kw)
        for name, kw in RANKER_VARIANTS.items()
    }
    trained.rank_test = (sub(feats, ~tr), sub(imp, ~tr))
    return trained


# ---------------------------------------------------------------------------------------------
# The artifact: everything the predictor needs, nothing it does not

ITEM_ITEM = ("ease", "ease_recency", "ease_log1p", "item_knn", "item_knn_log1p")
POPULARITY = ("popularity", "recent_popularity")


def item_item_table(trained: VideoRecTrained, k: int) -> dict[str, np.ndarray | float]:
    """The shipped item-item model as the served table, k neighbours per row.

    EASE rows: the k largest |weights| of each row of B, negative ones included (dropping
    them costs EASE more than any k saves: a table of positive weights only never reached
    the full model's validation NDCG@10 on MovieLens-small); item-kNN rows: its cosine
    neighbours (at most `knn_neighbours`). Each row's neighbours are sorted by |weight|, so
    the first k' < k columns are the table at k'. Returns rows (R,) and cols (C,) video ids,
    idx (R, k) int32 positions into cols (-1 = none), w (R, k) float32, and tau, the
    sequence-aware EASE's recency scale (0 = none).
    """
    name, models = trained.production, trained.models
    if name.startswith("ease"):
        ease = models[name].ease if name == "ease_recency" else models[name].model
        B = ease.B_  # (R, R) over ease.items_ (or the whole catalog)
        ids = ease.items_ if ease.items_ is not None else np.arange(ease.n_items_)
        k = min(k, B.shape[1])
        idx = np.empty((B.shape[0], k), np.int32)
        w = np.empty((B.shape[0], k), np.float32)
        for a in range(0, B.shape[0], 1024):  # row blocks: |B| of 20K x 20K is 1.6 GB at once
            blk = B[a : a + 1024]  # (b, R)
            top = np.argpartition(-np.abs(blk), k - 1, axis=1)[:, :k]
            v = np.take_along_axis(blk, top, 1)
            order = np.argsort(-np.abs(v), axis=1, kind="stable")
            idx[a : a + 1024] = np.take_along_axis(top, order, 1)
            w[a : a + 1024] = np.take_along_axis(v, order, 1)
        tau = models[name].tau_ if name == "ease_recency" else 0.0
        return {"rows": ids, "cols": ids, "idx": idx, "w": w, "tau": tau}
    sim = models[name].model.sim_.tocsr()  # (I, I): row h = h's neighbours and weights
    n = sim.shape[0]
    idx, w = np.full((n, k), -1, np.int32), np.zeros((n, k), np.float32)
    for h in range(n):
        a, b = sim.indptr[h], sim.indptr[h + 1]
        order = np.argsort(-sim.data[a:b], kind="stable")[:k]
        idx[h, : len(order)] = sim.indices[a:b][order]
        w[h, : len(order)] = sim.data[a:b][order]
    rows = np.flatnonzero((idx >= 0).any(1))  # videos without neighbours get no row
    return {"rows": rows, "cols": np.arange(n), "idx": idx[rows], "w": w[rows], "tau": 0.0}


def _i2i_tensors(trained: VideoRecTrained, cfg: VideoRecConfig) -> tuple[dict, float]:
    """The served table at the largest k of `cfg.i2i_ks` that fits `cfg.i2i_budget_mb`
    (`funnel.choose_funnel` cuts it to the k chosen on validation); (tensors, tau)."""
    from .funnel import table_mb

    models, name = trained.models, trained.production
    ease = models[name].ease if name == "ease_recency" else getattr(models[name], "model", None)
    rows = len(ease.B_) if hasattr(ease, "B_") else trained.split.n_items
    fits = [k for k in cfg.i2i_ks if table_mb(rows, k) <= cfg.i2i_budget_mb]
    table = item_item_table(trained, max(fits) if fits else min(cfg.i2i_ks))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    tensors = {
        "i2i_rows": t(np.asarray(table["rows"], np.int64)),
        "i2i_cols": t(np.asarray(table["cols"], np.int64)),
        "i2i_idx": t(table["idx"]),
        "i2i_w": t(table["w"]),
    }
    return tensors, float(table["tau"])


def build_artifact(
    trained: VideoRecTrained,
    data: VideoRecData,
    cfg: VideoRecConfig,
    spec: str,
    seed: int,
    path: Path,
) -> tuple[Path, float | None]:
    """Save the artifact the predictor serves; returns its path and the ONNX parity error.

    Served: the two-tower index always (its score is a ranker feature), SASRec's when it is the
    better learned model, the shipped retriever (`production_model`) as its own source (an
    item-item table, a popularity list, or one of the two indexes), trending and fresh lists,
    the ranker as ONNX (simulator only), and every user's train + validation history.
    """
    import torch

    from shared.artifacts import save_artifact

    from .model import export_ranker_onnx

    it, models, production = data.interactions, trained.models, trained.production
    t = lambda a, dtype: torch.from_numpy(np.ascontiguousarray(a).astype(dtype))  # noqa: E731
    tensors = {f"tower.{k}": v for k, v in models["two_tower"].model.state_dict().items()}
    if trained.learned == "sasrec":
        tensors.update({f"sasrec.{k}": v for k, v in models["sasrec"].model.state_dict().items()})
    counts = np.bincount(it["item"], minlength=data.n_items).astype(np.float32)
    recent = models.get("recent_popularity", models["popularity"]).model.counts_
    t_end = int(it["timestamp"].max())
    if data.item_upload_s is not None:
        age = (t_end - data.item_upload_s) / DAY_S
        fresh = np.argsort(np.where(age >= 0, age, np.inf))[:50]
    else:
        age, fresh = np.full(data.n_items, 365.0), np.zeros(0, np.int64)
    sim = data.simulator
    log_dur = np.log(sim.item_duration_s) if sim is not None else np.zeros(data.n_items)
    tensors.update(
        {
            "item_topic": t(data.item_topic, np.int64),
            "item_age_days": t(age, np.float32),
            "item_views": t(counts, np.float32),
            "item_log_duration": t(log_dur, np.float32),
            "trending": t(np.argsort(-recent)[:100], np.int64),
            "fresh": t(fresh, np.int64),
        }
    )
    recency_tau, sources = None, ["two_tower"] + (["sasrec"] if trained.learned == "sasrec" else [])
    if production in ITEM_ITEM:
        # Rows only for the videos that have neighbours (EASE covers `ease_max_items`), so a
        # 100K catalog does not carry 100K empty rows.
        i2i, recency_tau = _i2i_tensors(trained, cfg)
        tensors.update(i2i)
        sources.append(production)
    elif production in POPULARITY:
        order = np.argsort(-models[production].model.counts_, kind="stable")
        # long enough that removing up to `i2i_history` watched videos leaves the candidates
        tensors["primary_list"] = t(order[: cfg.retrieval_candidates + cfg.i2i_history], np.int64)
        sources.append(production)
    files = {
        "histories.json": json.dumps(
            {str(u): s.tolist() for u, s in enumerate(trained.split.seqs_trainval) if len(s)}
        ).encode()
    }
    parity = None
    config = {
        "case": "video-recommendation",
        "data": spec,
        "seed": seed,
        "protocol": trained.split.protocol,
        "n_items": data.n_items,
        "n_topics": int(max(data.item_topic.max(), 0)) + 1,
        "item_ids": data.item_ids.tolist() if data.item_ids is not None else None,
        "production_model": production,
        "served_retrievers": sources,
        "ranker": trained.rankers is not None,
        "hparams": {**cfg.to_dict(), "recency_tau": recency_tau},
    }
    with tempfile.TemporaryDirectory() as tmp:
        if trained.rankers is not None:
            onnx_path, parity = export_ranker_onnx(
                trained.rankers["multitask"], trained.rank_test[0], Path(tmp) / "ranker.onnx"
            )
            files["ranker.onnx"] = onnx_path.read_bytes()
        funnel = _choose_funnel(trained, cfg, tensors, config, files, Path(tmp))
    metrics = {"val_ndcg@10": trained.val_ndcg}
    path = save_artifact(
        path, tensors, config, metrics, data_fingerprint(data, trained.split), files
    )
    trained.funnel = funnel
    return finish_video_artifact(path, trained.split, seed), parity


def _choose_funnel(trained, cfg, tensors: dict, config: dict, files: dict, tmp: Path) -> dict:
    """Choose the funnel's knobs on validation with the artifact's own predictor (in memory,
    the ranker from `tmp`), then write them into `tensors` and `config` (`funnel.py`)."""
    from shared.artifacts import Artifact

    from .funnel import choose_funnel

    pred = VideoRecPredictor(Artifact(tmp, tensors, config, {}, "", files))
    funnel = choose_funnel(pred, trained.split, trained.val_ndcg[trained.production], cfg)
    if "i2i" in funnel:
        k = funnel["i2i"]["k"]
        tensors["i2i_idx"] = tensors["i2i_idx"][:, :k].contiguous()
        tensors["i2i_w"] = tensors["i2i_w"][:, :k].contiguous()
    config["hparams"].update(
        merge_quota=funnel["merge"]["quota"],
        rerank_weight=funnel["rerank"]["weight"],
        i2i_k=funnel.get("i2i", {}).get("k"),
    )
    config["funnel"] = _jsonable(funnel)
    return funnel


def _jsonable(x):
    """Dict keys as strings, numpy numbers as floats (the funnel's record in config.json)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x.item() if hasattr(x, "item") else x


GOLDEN_REQUESTS, REFERENCE_REQUESTS = 200, 1000  # the golden set; the monitor's reference


def monitor_requests(histories: dict, n: int, seed: int) -> list[dict]:
    """n /recommend bodies as clients send them, from {user id: history}: 70% known users by
    id, 25% explicit histories (the last 1-50 watches of a known user), 5% unknown visitors
    (the cold-start list). The golden set, the monitor's reference and the load test use it."""
    rng = np.random.default_rng(seed)
    users = list(histories)
    out = []
    for i in range(n):
        r = rng.random()
        if users and r < 0.70:
            out.append({"user_id": int(users[rng.integers(len(users))]), "k": 10})
        elif users and r < 0.95:
            h = list(histories[users[rng.integers(len(users))]])
            out.append({"history": h[-int(rng.integers(1, min(len(h), 50) + 1)) :], "k": 10})
        else:
            out.append({"user_id": f"visitor-{i}", "k": 10})
    return out


def finish_video_artifact(path: Path, split: RetrievalSplit, seed: int) -> Path:
    """Add the golden set and the monitor's reference (shared.golden) from requests of the
    training users. faiss builds its indexes on one thread here, as the replicas do, so the
    golden scores are reproduced bit for bit at serving (an HNSW graph built on several
    threads differs run to run)."""
    from shared.ann import set_threads
    from shared.golden import finish_artifact

    from .predictor import VideoRecPredictor

    set_threads(1)
    histories = {str(u): s.tolist() for u, s in enumerate(split.seqs_trainval) if len(s)}
    reqs = monitor_requests(histories, GOLDEN_REQUESTS + REFERENCE_REQUESTS, seed + 17)
    return finish_artifact(
        path,
        VideoRecPredictor.load,
        golden_requests=reqs[:GOLDEN_REQUESTS],
        reference_requests=reqs[GOLDEN_REQUESTS:],
    )


def data_fingerprint(data: VideoRecData, split: RetrievalSplit) -> str:
    """sha256 of what the model was trained and judged on: the interactions and the held-out
    items (the random leave-one-out's seed changes the latter, not the former)."""
    from shared.artifacts import fingerprint_arrays

    it = data.interactions
    return fingerprint_arrays(
        it["user"], it["item"], it["timestamp"], it["weight"], split.val_item, split.test_item
    )
