"""Data: a platform simulator with ground truth, real-data loaders, and the data gate.

Every source ends in a `VideoRecData`, whose `interactions` are columns
    user (int64, 0..U-1), item (int64, 0..I-1), timestamp (int64 seconds), weight (float32)
The simulator also emits the impression log the ranker trains on, one row per shown video:
    session, day, user, item, timestamp, position, propensity, click, watch_frac, watch_time,
    satisfied
and its watch events (click rows) are the interactions, weight = watch fraction.

Real formats (`--data FORMAT:PATH`):
    movielens:DIR        100K `u.data`, 1M `ratings.dat` or latest `ratings.csv` (layout detected);
                         every rating counts as a watch (explicit -> implicit), weight = rating / 5
    interactions:FILE    CSV user,item,timestamp[,weight] or user,item[,weight]: with a header,
                         columns are found by name (a `timestamp`/`time`/`ts` column or none);
                         without one, 2 columns are user,item and 3+ user,item,timestamp[,weight]
    lastfm:DIR           `user_artists.dat` (userID, artistID, plays); no timestamps in that file

Data without timestamps (`has_time=False`: Last.fm, a CSV without a time column) keeps a
`timestamp` column of zeros: its order means nothing, so the split is a seeded random
leave-one-out and the models that need an order are skipped (`train.make_split`, `cli.py`).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import DataError

from .config import VideoRecConfig

INTERACTION_COLUMNS = ("user", "item", "timestamp", "weight")
IMPRESSION_COLUMNS = (
    "session",
    "day",
    "user",
    "item",
    "timestamp",
    "position",
    "propensity",
    "click",
    "watch_frac",
    "watch_time",
    "satisfied",
)
DAY_S = 86400
# Largest (users x videos) block the simulator allocates at once (32 MB of float64): a `fast`
# day is one block, 100K videos go 40 users at a time. Blocks do not change any result (checked
# bit for bit on the `fast` and `full` logs and on the off-policy truth).
CHUNK_ELEMS = 4_000_000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class VideoRecData:
    """One data source, remapped to contiguous ids."""

    interactions: dict[str, np.ndarray]
    n_users: int
    n_items: int
    source: str
    item_topic: np.ndarray  # (I,) int; -1 where unknown
    item_upload_s: np.ndarray | None = None  # (I,) upload time in seconds, simulator only
    user_ids: np.ndarray | None = None  # original ids, index = contiguous id
    item_ids: np.ndarray | None = None
    impressions: dict[str, np.ndarray] | None = None  # simulator only
    simulator: VideoRecSimulator | None = None
    notes: list[str] = field(default_factory=list)
    # False when the source has no timestamps: file order is not time (HetRec Last.fm is sorted
    # by artist id within each user), so no model may be trained or scored on that order.
    has_time: bool = True
    # True when `weight` is a count (plays): count-derived confidence weights are then tried
    # against binary interactions (`train.confidence`).
    weight_is_count: bool = False


# ---------------------------------------------------------------------------------------------
# Simulator


class VideoRecSimulator:
    """A video platform with known ground truth.

    Users have a latent taste vector (a Dirichlet mixture of topic centroids) and an activity
    cohort (new: joins late; casual; heavy). Videos have a topic, a taste vector near the topic's
    centroid, quality, clickbait, duration, an upload day and a creator whose popularity follows a
    power law. Outcomes at slot k of a slate:
        examine ~ Bernoulli(1 / (k + 1) ** position_decay)               position bias
        click   ~ Bernoulli(sigmoid(1.2 a + 1.5 bait + 0.4 log-pop + fresh - 0.8))
        watch_frac ~ Beta(8 p, 8 (1 - p)), p = sigmoid(1.5 a + quality - 2 bait)   E = p exactly
        satisfied ~ Bernoulli(sigmoid(2 a + 1.2 quality - 2.5 bait - 0.5))        given a click
    with affinity a = 2.5 u.v. Clickbait raises clicks and lowers watch time and satisfaction, so a
    click-trained ranker and a watch-time-trained one disagree in a measurable way.
    """

    def __init__(
        self,
        cfg: VideoRecConfig,
        seed: int = 0,
        n_users: int | None = None,
        n_items: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        rng = np.random.default_rng(seed)
        U = n_users or cfg.n_users
        I = n_items or cfg.n_items
        T, d = cfg.n_topics, cfg.latent_dim
        self.n_users, self.n_items, self.n_days = U, I, cfg.n_days
        centroids = rng.normal(size=(T, d))
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)  # (T, d)
        mix = rng.dirichlet(np.full(T, 0.3), size=U)  # (U, T) sparse-ish interests
        u = mix @ centroids + 0.3 * rng.normal(size=(U, d)) / math.sqrt(d)
        self.user_vec = u / np.linalg.norm(u, axis=1, keepdims=True)  # (U, d)
        self.user_interest = mix
        # Cohorts: new users join in the last 20% of days; heavy ones come about daily.
        r = rng.random(U)
        self.user_cohort = np.where(
            r < cfg.new_user_fraction,
            "new",
            np.where(r < cfg.new_user_fraction + cfg.heavy_user_fraction, "heavy", "casual"),
        )
        self.user_rate = np.select(
            [self.user_cohort == "new", self.user_cohort == "heavy"], [0.6, 0.9], 0.25
        )
        late = int(cfg.n_days * 0.8)
        self.user_join_day = np.where(
            self.user_cohort == "new", rng.integers(late, max(late + 1, cfg.n_days), U), 0
        )
        self.item_topic = rng.integers(0, T, I)
        v = centroids[self.item_topic] + 0.6 * rng.normal(size=(I, d)) / math.sqrt(d) * 2
        self.item_vec = v / np.linalg.norm(v, axis=1, keepdims=True)  # (I, d)
        self.item_quality = rng.normal(size=I)
        self.item_bait = rng.beta(1.0, 4.0, size=I) * 2.0  # mostly small, a few strong clickbaits
        self.item_duration_s = np.exp(rng.normal(math.log(300.0), 0.8, size=I))
        # Uploads spread over the 60 days before logging starts and the logging window itself.
        self.item_upload_day = rng.uniform(-60, cfg.n_days, size=I)
        # Creator popularity: Zipf over creators (exponent 1.1), items assigned uniformly.
        n_creators = max(2, min(cfg.n_creators, I))
        creator_pop = 1.0 / np.arange(1, n_creators + 1) ** 1.1
        self.item_creator = rng.integers(0, n_creators, I)
        pop = creator_pop[self.item_creator]
        self.item_logpop = np.log(pop / pop.max())  # <= 0, head creators near 0
        # The legacy logging policy's noisy view of user taste (a previous model's estimate).
        self._user_est = self.user_vec + 0.8 * rng.normal(size=(U, d)) / math.sqrt(d)

    # --- ground truth ---
    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """True affinity a = 2.5 u.v; users (S,) and items (S, K) -> (S, K)."""
        S, K = items.shape
        rows = max(1, CHUNK_ELEMS // max(K * self.item_vec.shape[1], 1))
        if S <= rows:
            return 2.5 * np.einsum("sd,skd->sk", self.user_vec[users], self.item_vec[items])
        # A large catalog (the off-policy truth scores every video): gathering item_vec[items]
        # at once would be S x K x d floats (GBs at 100K videos), so go a block of rows at a time.
        out = np.empty((S, K))
        for b in range(0, S, rows):
            u, it = self.user_vec[users[b : b + rows]], self.item_vec[items[b : b + rows]]
            out[b : b + rows] = 2.5 * np.einsum("sd,skd->sk", u, it)
        return out

    def freshness(self, items: np.ndarray, day: float) -> np.ndarray:
        """Click bonus of a new upload: 0.8 on its first day, decaying with a 3-day scale."""
        age = np.maximum(day - self.item_upload_day[items], 0.0)
        return 0.8 * np.exp(-age / 3.0)

    def examine_prob(self, k: int) -> np.ndarray:
        return 1.0 / (np.arange(k) + 1.0) ** self.cfg.position_decay  # (K,)

    def probabilities(self, users: np.ndarray, slates: np.ndarray, day: float) -> dict:
        """Per-slot outcome probabilities, (S, K) each, with no position effect (slot 0)."""
        a = self.affinity(users, slates)
        p_click = _sigmoid(
            1.2 * a
            + 1.5 * self.item_bait[slates]
            + 0.4 * self.item_logpop[slates]
            + self.freshness(slates, day)
            - 0.8
        )
        p_watch = _sigmoid(1.5 * a + self.item_quality[slates] - 2.0 * self.item_bait[slates])
        p_sat = _sigmoid(
            2.0 * a + 1.2 * self.item_quality[slates] - 2.5 * self.item_bait[slates] - 0.5
        )
        return {"click": p_click, "watch_frac": p_watch, "satisfied": p_sat}

    def expected_value(self, users: np.ndarray, slates: np.ndarray, day: float) -> dict:
        """Expected watch seconds, satisfied views and clicks per request for slates (S, K)."""
        p = self.probabilities(users, slates, day)
        e = self.examine_prob(slates.shape[1])[None, :]  # (1, K)
        clicks = e * p["click"]
        watch = clicks * p["watch_frac"] * self.item_duration_s[slates]
        return {
            "watch_time": watch.sum(1),
            "satisfied": (clicks * p["satisfied"]).sum(1),
            "clicks": clicks.sum(1),
        }

    def sample_outcomes(self, users, slates, day, rng) -> dict:
        """Sample clicks, watch fractions and satisfaction for slates (S, K)."""
        p = self.probabilities(users, slates, day)
        S, K = slates.shape
        examine = rng.random((S, K)) < self.examine_prob(K)[None, :]
        click = examine & (rng.random((S, K)) < p["click"])
        kappa = 8.0
        pw = np.clip(p["watch_frac"], 1e-4, 1 - 1e-4)
        frac = np.where(click, rng.beta(kappa * pw, kappa * (1 - pw)), 0.0)
        sat = click & (rng.random((S, K)) < p["satisfied"])
        return {
            "click": click.astype(np.int8),
            "watch_frac": frac.astype(np.float32),
            "watch_time": (frac * self.item_duration_s[slates]).astype(np.float32),
            "satisfied": sat.astype(np.int8),
        }

    # --- the logging policy ---
    def logging_probs(self, users: np.ndarray, day: float, exclude: np.ndarray | None = None):
        """The legacy policy's distribution over the catalog per request, (S, I); rows sum to 1.

        Score = 0.7 log-popularity + noisy taste estimate + freshness, softmax at the configured
        temperature, over videos already uploaded and not yet watched by the user.
        """
        # In place on one (S, I) buffer: the same arithmetic in the same order as the plain
        # expression, without five (S, I) temporaries (each 0.8 GB at 1,000 users x 100K videos).
        score = 2.5 * self._user_est[users] @ self.item_vec.T  # (S, I)
        all_items = np.arange(self.n_items)[None, :]
        score += 0.7 * self.item_logpop[None, :]
        score += self.freshness(all_items, day)
        score /= self.cfg.logging_temperature
        score[:, self.item_upload_day > day] = -np.inf
        if exclude is not None:
            score[exclude] = -np.inf
        score -= score.max(1, keepdims=True)
        np.exp(score, out=score)
        score /= score.sum(1, keepdims=True)
        return score

    def _logged_slates(self, users, day, watched, rng) -> tuple[np.ndarray, np.ndarray]:
        """The logging policy's slates (S, K) for `users` and each shown video's propensity.

        A block of users at a time, so memory stays at CHUNK_ELEMS floats per buffer whatever
        the catalog size. The random stream is drawn in the same order as in one block, so the
        logs do not depend on the block size (checked: identical logs for the `fast` and `full`
        presets with one block and with blocks).
        """
        K = self.cfg.slate_size
        rows = max(1, CHUNK_ELEMS // self.n_items)
        slates, props = [], []
        for b in range(0, len(users), rows):
            u = users[b : b + rows]
            probs = self.logging_probs(u, day, exclude=watched[u])  # (s, I)
            s = gumbel_top_k(np.log(probs + 1e-30), K, rng)
            slates.append(s)
            props.append(np.take_along_axis(probs, s, 1))
        return np.concatenate(slates), np.concatenate(props)

    def simulate(
        self, rng: np.random.Generator | None = None, policy=None
    ) -> dict[str, np.ndarray]:
        """Log `n_days` of home-feed sessions; returns the impression log (columns).

        `policy(users, day, watched) -> (slates (S, K), propensities (S, K))`; the default samples
        slates from `logging_probs` by Plackett-Luce (Gumbel top-k) and records each shown video's
        first-draw probability as its propensity.
        """
        rng = rng or np.random.default_rng(self.seed + 1)
        K = self.cfg.slate_size
        watched = np.zeros((self.n_users, self.n_items), dtype=bool)
        cols: dict[str, list[np.ndarray]] = {c: [] for c in IMPRESSION_COLUMNS}
        session0 = 0
        for day in range(self.n_days):
            active = np.flatnonzero(
                (self.user_join_day <= day) & (rng.random(self.n_users) < self.user_rate)
            )
            if active.size == 0:
                continue
            if policy is None:
                slates, prop = self._logged_slates(active, day, watched, rng)
            else:
                slates, prop = policy(active, day, watched[active])
            out = self.sample_outcomes(active, slates, day, rng)
            S = active.size
            start = day * DAY_S + rng.integers(0, DAY_S - 3600, S)
            cols["session"].append(np.repeat(np.arange(session0, session0 + S), K))
            cols["day"].append(np.full(S * K, day))
            cols["user"].append(np.repeat(active, K))
            cols["item"].append(slates.reshape(-1))
            # Slot k is seen about k * 20 s after the session starts: watches stay time-ordered.
            cols["timestamp"].append((start[:, None] + 20 * np.arange(K)[None, :]).reshape(-1))
            cols["position"].append(np.tile(np.arange(K), S))
            cols["propensity"].append(prop.reshape(-1))
            for c in ("click", "watch_frac", "watch_time", "satisfied"):
                cols[c].append(out[c].reshape(-1))
            watched[active[:, None], slates] |= out["click"].astype(bool)
            session0 += S
        dtypes = {
            "propensity": np.float32,
            "click": np.int8,
            "satisfied": np.int8,
            "watch_frac": np.float32,
            "watch_time": np.float32,
        }
        return {
            c: np.concatenate(v).astype(dtypes.get(c, np.int64)) if v else np.zeros(0)
            for c, v in cols.items()
        }


def gumbel_top_k(logits: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct columns per row, sampled in Plackett-Luce order; (S, I) -> (S, k)."""
    g = rng.random(logits.shape)  # g = logits - log(-log(u + eps) + eps), in place
    g += 1e-12
    np.log(g, out=g)
    np.negative(g, out=g)
    g += 1e-12
    np.log(g, out=g)
    np.subtract(logits, g, out=g)
    top = np.argpartition(-g, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(g, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def impressions_to_interactions(imp: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Watch events (clicked impressions) in the shared interaction schema, time-ordered."""
    m = imp["click"] > 0
    order = np.lexsort((imp["timestamp"][m], imp["user"][m]))
    return {
        "user": imp["user"][m][order].astype(np.int64),
        "item": imp["item"][m][order].astype(np.int64),
        "timestamp": imp["timestamp"][m][order].astype(np.int64),
        "weight": imp["watch_frac"][m][order].astype(np.float32),
    }


def make_builtin(cfg: VideoRecConfig, seed: int = 0) -> VideoRecData:
    """Simulate the platform and return its logs."""
    sim = VideoRecSimulator(cfg, seed=seed)
    imp = sim.simulate(np.random.default_rng(seed + 1))
    inter = impressions_to_interactions(imp)
    return VideoRecData(
        interactions=inter,
        n_users=sim.n_users,
        n_items=sim.n_items,
        source="builtin",
        item_topic=sim.item_topic.astype(np.int64),
        item_upload_s=(sim.item_upload_day * DAY_S).astype(np.int64),
        impressions=imp,
        simulator=sim,
    )


# ---------------------------------------------------------------------------------------------
# Real-data loaders


def _remap(
    users: np.ndarray,
    items: np.ndarray,
    ts: np.ndarray,
    w: np.ndarray,
    source: str,
    topics: dict | None = None,
) -> VideoRecData:
    """Contiguous ids; one row per (user, item), keeping the first time it happened; time order."""
    if users.size == 0:
        raise DataError(f"{source}: no interactions found")
    if not np.all(np.isfinite(w)):
        raise DataError(f"{source}: non-numeric or infinite weights")
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    order = np.lexsort((np.arange(u.size), ts, u))  # by user, then time, ties by file order
    u, i, ts, w = u[order], i[order], ts[order], w[order]
    key = u.astype(np.int64) * len(item_ids) + i
    _, first = np.unique(key, return_index=True)
    keep = np.sort(first)
    topic = np.full(len(item_ids), -1, dtype=np.int64)
    if topics:
        names = {}
        for j, orig in enumerate(item_ids):
            g = topics.get(str(orig))
            if g is not None:
                topic[j] = names.setdefault(g, len(names))
    return VideoRecData(
        interactions={
            "user": u[keep].astype(np.int64),
            "item": i[keep].astype(np.int64),
            "timestamp": ts[keep].astype(np.int64),
            "weight": w[keep].astype(np.float32),
        },
        n_users=len(user_ids),
        n_items=len(item_ids),
        source=source,
        item_topic=topic,
        user_ids=user_ids,
        item_ids=item_ids,
    )


def _read_rows(path: Path, sep: str, n_min: int, header_word: str | None = None):
    rows = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        if sep == ",":
            reader = csv.reader(f)
        else:
            reader = (line.rstrip("\r\n").split(sep) for line in f)
        for lineno, row in enumerate(reader, 1):
            if not row or all(not c.strip() for c in row):
                continue
            if lineno == 1 and header_word and header_word in row[0].lower():
                continue
            if len(row) < n_min:
                raise DataError(f"{path}:{lineno}: expected {n_min}+ fields, got {len(row)}")
            rows.append(row)
    return rows


def _numbers(rows, col: int, path: Path, what: str, dtype=float) -> np.ndarray:
    try:
        return np.array([dtype(r[col]) for r in rows])
    except ValueError as e:
        raise DataError(f"{path}: column {what} is not numeric ({e})") from None


def load_movielens(directory: str | Path) -> VideoRecData:
    """MovieLens 100K (u.data), 1M (ratings.dat) or latest (ratings.csv); genres as topics."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise DataError(f"movielens: {d} is not a directory")
    topics: dict[str, str] = {}
    if (d / "ratings.csv").exists():
        path, rows = d / "ratings.csv", _read_rows(d / "ratings.csv", ",", 4, "userid")
        movies = d / "movies.csv"
        if movies.exists():
            for r in _read_rows(movies, ",", 3, "movieid"):
                topics[r[0]] = r[-1].split("|")[0]
    elif (d / "ratings.dat").exists():
        path, rows = d / "ratings.dat", _read_rows(d / "ratings.dat", "::", 4)
        movies = d / "movies.dat"
        if movies.exists():
            with open(movies, encoding="latin-1") as f:
                for line in f:
                    p = line.rstrip("\n").split("::")
                    if len(p) >= 3:
                        topics[p[0]] = p[2].split("|")[0]
    elif (d / "u.data").exists():
        path, rows = d / "u.data", _read_rows(d / "u.data", "\t", 4)
    else:
        raise DataError(f"movielens: {d} has none of ratings.csv, ratings.dat, u.data")
    users = np.array([r[0].strip() for r in rows])
    items = np.array([r[1].strip() for r in rows])
    rating = _numbers(rows, 2, path, "rating")
    ts = _numbers(rows, 3, path, "timestamp", int)
    users, items = _as_int_if_possible(users), _as_int_if_possible(items)
    data = _remap(users, items, ts, rating / 5.0, f"movielens:{d}", topics)
    data.notes.append("every rating counts as a watch (implicit feedback), weight = rating / 5")
    return data


def _as_int_if_possible(x: np.ndarray) -> np.ndarray:
    try:
        return x.astype(np.int64)
    except ValueError:
        return x


TIME_NAMES = ("timestamp", "time", "ts", "datetime", "unixtime")
WEIGHT_NAMES = ("weight", "rating", "plays", "count", "playcount", "score")


def load_interactions(file: str | Path) -> VideoRecData:
    """CSV user,item,timestamp[,weight] or user,item[,weight] (no timestamps).

    A first row that names columns (`_is_header`) is a header, and then columns are found by
    name (TIME_NAMES, WEIGHT_NAMES; no time column = no timestamps). Without a header, 2 columns
    are user,item and 3 or more user,item,timestamp[,weight].
    """
    path = Path(file).expanduser()
    if not path.is_file():
        raise DataError(f"interactions: {path} is not a file")
    rows = _read_rows(path, ",", 2)
    header = None
    if rows and _is_header([c.strip().lower() for c in rows[0]]):
        header, rows = [c.strip().lower() for c in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"interactions: {path} has no rows")
    if header is not None:
        t_col = next((k for k, c in enumerate(header) if c in TIME_NAMES), None)
        w_col = next((k for k, c in enumerate(header) if c in WEIGHT_NAMES), None)
    else:
        width = min(len(r) for r in rows)
        t_col = 2 if width >= 3 else None
        w_col = 3 if width >= 4 else None
    need = 1 + max(c for c in (1, t_col, w_col) if c is not None)
    short = next((k for k, r in enumerate(rows) if len(r) < need), None)
    if short is not None:
        raise DataError(f"interactions: {path}: row {short + 1} has fewer than {need} fields")
    users = _as_int_if_possible(np.array([r[0].strip() for r in rows]))
    items = _as_int_if_possible(np.array([r[1].strip() for r in rows]))
    has_time = t_col is not None
    if has_time:
        ts = _numbers(rows, t_col, path, "timestamp", float).astype(np.int64)
    else:
        ts = np.zeros(len(rows), dtype=np.int64)
    has_w = w_col is not None and all(r[w_col].strip() for r in rows)
    w = _numbers(rows, w_col, path, "weight") if has_w else np.ones(len(rows))
    data = _remap(users, items, ts, w, f"interactions:{path}")
    data.has_time = has_time
    # Non-negative whole numbers in a weight column are counts (plays, views, purchases).
    data.weight_is_count = bool(has_w and np.all(w >= 0) and np.all(w == np.round(w)))
    if not has_time:
        data.notes.append(f"{path.name} has no timestamp column: its row order is not time")
    return data


def _is_header(row: list[str]) -> bool:
    """A first row that names columns: a known column name, or words where numbers go."""
    named = any(c in TIME_NAMES + WEIGHT_NAMES for c in row) or row[0] in ("user", "userid")
    return named or (len(row) >= 3 and not _is_number(row[1]) and not _is_number(row[2]))


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_lastfm(directory: str | Path) -> VideoRecData:
    """HetRec Last.fm `user_artists.dat` (userID, artistID, weight = play count), tab-separated."""
    d = Path(directory).expanduser()
    path = d / "user_artists.dat" if d.is_dir() else d
    if not path.is_file():
        raise DataError(f"lastfm: {path} not found (expected user_artists.dat)")
    rows = _read_rows(path, "\t", 3, "userid")
    users = _numbers(rows, 0, path, "userID", int)
    items = _numbers(rows, 1, path, "artistID", int)
    plays = _numbers(rows, 2, path, "weight")
    if np.any(plays < 0):
        raise DataError(f"lastfm: {path} has negative play counts")
    ts = np.zeros(len(rows), dtype=np.int64)  # no timestamps (the file is sorted by artist id)
    data = _remap(users, items, ts, plays, f"lastfm:{d}")
    data.has_time, data.weight_is_count = False, True
    data.notes.append(
        "user_artists.dat has no timestamps (rows are sorted by user, then artist id); "
        "weight = play count"
    )
    return data


def load_data(spec: str, cfg: VideoRecConfig, seed: int = 0) -> VideoRecData:
    """`builtin` or FORMAT:PATH (movielens, interactions, lastfm)."""
    if spec == "builtin":
        return make_builtin(cfg, seed)
    fmt, sep, path = spec.partition(":")
    if not sep or not path:
        raise DataError(f"--data {spec!r}: expected 'builtin' or FORMAT:PATH")
    loaders = {
        "movielens": load_movielens,
        "interactions": load_interactions,
        "lastfm": load_lastfm,
    }
    if fmt not in loaders:
        raise DataError(f"--data: unknown format {fmt!r}; choose from {', '.join(loaders)}")
    data = loaders[fmt](path)
    if data.n_users < 3 or data.n_items < 3:
        raise DataError(f"{spec}: too little data ({data.n_users} users, {data.n_items} items)")
    return data


# ---------------------------------------------------------------------------------------------
# The data gate: every daily impression batch is checked before it may be trained on.


def impression_schema(slate_size: int):
    """The impression log's schema for shared.gate; watch_time in seconds (at most 6 h)."""
    from shared.gate import ColumnSpec, Schema

    return Schema(
        columns={
            "session": ColumnSpec("int", min=0, drift=False),
            "day": ColumnSpec("int", min=0, drift=False),
            "timestamp": ColumnSpec("int", min=0, drift=False),
            "user": ColumnSpec("int", min=0, drift=False),  # ids move day to day: no shift check
            "item": ColumnSpec("int", min=0, drift=False),
            "position": ColumnSpec("int", min=0, max=slate_size - 1, drift=False),
            "propensity": ColumnSpec("float", min=0.0, max=1.0),
            "click": ColumnSpec("int", min=0, max=1),
            "watch_frac": ColumnSpec("float", min=0.0, max=1.0),
            "watch_time": ColumnSpec("float", min=0.0, max=6 * 3600.0),
            "satisfied": ColumnSpec("int", min=0, max=1),
        },
        target="click",
        key=("session", "item"),
    )


def split_batches(imp: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """One batch per simulated day."""
    out = []
    for day in np.unique(imp["day"]):
        m = imp["day"] == day
        out.append({c: v[m] for c, v in imp.items()})
    return out


def corrupt_batch(batch: dict[str, np.ndarray], kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A copy of `batch` with one realistic failure injected.

    duplicates: 30% of rows logged twice (a retrying client); bot_flood: one user with 20x the
    batch's clicks, every one a click; zero_watch: watch_time all zero (a broken player beacon);
    schema_drift: watch_time reported in milliseconds.
    """
    rng = np.random.default_rng(seed)
    b = {c: v.copy() for c, v in batch.items()}
    n = b["user"].size
    if kind == "duplicates":
        idx = np.concatenate([np.arange(n), rng.choice(n, int(0.3 * n), replace=False)])
        return {c: v[idx] for c, v in b.items()}
    if kind == "bot_flood":
        m = 5 * n
        src = rng.integers(0, n, m)
        bot = {c: v[src].copy() for c, v in b.items()}
        bot["user"][:] = b["user"].max() + 1
        bot["session"] = b["session"].max() + 1 + np.arange(m) // 10
        bot["item"] = rng.integers(0, int(b["item"].max()) + 1, m)
        bot["click"][:] = 1
        bot["watch_frac"][:] = 0.01
        bot["watch_time"][:] = 1.0
        return {c: np.concatenate([b[c], bot[c]]) for c in b}
    if kind == "zero_watch":
        b["watch_time"][:] = 0.0
        b["watch_frac"][:] = 0.0
        return b
    if kind == "schema_drift":
        b["watch_time"] = b["watch_time"] * 1000.0
        return b
    raise ValueError(f"unknown corruption {kind!r}")


CORRUPTIONS = ("duplicates", "bot_flood", "zero_watch", "schema_drift")


def gate_log(data: VideoRecData, cfg: VideoRecConfig, quarantine_dir: Path, seed: int = 0):
    """Check every daily impression batch; inject one corrupted copy of a day per failure kind.

    Only passed days are kept: `data.impressions` and `data.interactions` are rebuilt from them.
    The first day is the reference (the simulator's days come from one policy). Returns
    (data, {"rows": table rows, "failures": one line per quarantined or injected batch}).
    """
    from shared.gate import build_reference, check_batch, quarantine

    schema = impression_schema(cfg.slate_size)
    batches = split_batches(data.impressions)
    reference = build_reference(batches[0], schema)
    kept, rows, failures = [], {}, []
    for i, b in enumerate(batches):
        res = check_batch(b, schema, reference)
        if res.passed:
            kept.append(b)
        else:
            quarantine(b, res, quarantine_dir)
            failures.append(f"day {i}: " + "; ".join(c.message for c in res.failed))
    if not kept:
        raise DataError(f"the data gate quarantined all {len(batches)} daily batches")
    rows["clean_days"] = {
        "batches": len(batches),
        "passed": len(kept),
        "quarantined": len(batches) - len(kept),
    }
    victim = batches[len(batches) // 2]
    for kind in CORRUPTIONS:
        bad = corrupt_batch(victim, kind, seed)
        res = check_batch(bad, schema, reference)
        path = None if res.passed else quarantine(bad, res, quarantine_dir)
        rows[f"injected_{kind}"] = {
            "batches": 1,
            "passed": int(res.passed),
            "quarantined": int(not res.passed),
        }
        caught = "; ".join(c.message for c in res.failed) + f" -> {path.name if path else ''}"
        failures.append(f"injected {kind}: " + ("PASSED (not caught)" if res.passed else caught))
    imp = {c: np.concatenate([b[c] for b in kept]) for c in kept[0]}
    data.impressions = imp
    data.interactions = impressions_to_interactions(imp)
    return data, {"rows": rows, "failures": failures}


# The data gate on real --data: the interaction log is checked in batches before training.
GATE_BATCHES = 10  # time windows (or seeded random parts without timestamps)


def interaction_schema(weight_is_count: bool):
    """The interaction log's schema for shared.gate.

    `item` is a category so the gate sees one item's share of a batch (a bot replaying one
    video); as a key column it is exempt from the distribution-shift checks, since ids move
    window to window by nature.
    """
    from shared.gate import ColumnSpec, Schema

    return Schema(
        columns={
            # Users rate in bursts (ml-latest-small's last time window: one user is 24.6% of
            # its rows), so a user's share of a batch is not checked; an item's is.
            "user": ColumnSpec("int", min=0, drift=False),
            "item": ColumnSpec("category"),
            "timestamp": ColumnSpec("int", min=0, drift=False),
            # Ratings (scaled to [0, 1]) are range-checked only: their scale is fixed, and
            # MovieLens added half stars in 2003, a real shift that is no fault (weight PSI
            # 1.5-1.7 between its pre-2003 windows and the whole log, measured on
            # ml-latest-small). Counts have no upper bound, so their shift is what is checked.
            "weight": ColumnSpec(
                "float", min=0.0, max=None if weight_is_count else 1.0, drift=weight_is_count
            ),
        },
        key=("user", "item"),
    )


def interaction_thresholds():
    """Limits for real logs, looser than the simulator's where real data moves for good reasons.

    unseen_rate 1.0: new users and items appear in every later window (a catalogue and an
    audience grow); psi 0.5 on play counts: one window's listening may differ from the whole
    log's; top_value_share keeps its default (5x the reference's top item, at least 2% of a
    batch): a bot replaying one item still trips it.
    """
    from shared.gate import GateThresholds

    return GateThresholds(max_unseen_rate=1.0, max_psi=0.5)


def gate_interactions(data: VideoRecData, quarantine_dir: Path, seed: int = 0):
    """Check a real interaction log in GATE_BATCHES batches; train only on the ones that pass.

    Batches are time windows when the data has timestamps (how a production log arrives) and
    seeded random parts when it has none. The reference is a seeded random sample of the whole
    log of one batch's size, not one of the batches, so no batch is checked against itself.
    Returns (data, {"rows", "failures"}) like `gate_log`; a DataError (one line) when more than
    half of the batches are refused.
    """
    from shared.gate import build_reference, check_batches

    inter = data.interactions
    n = inter["user"].size
    rng = np.random.default_rng(seed)
    order = np.argsort(inter["timestamp"], kind="stable") if data.has_time else rng.permutation(n)
    parts = np.array_split(order, min(GATE_BATCHES, max(1, n // 200)))
    schema, th = interaction_schema(data.weight_is_count), interaction_thresholds()
    # The gate sees the log's own item ids, so a refusal names the item a person can look up.
    cols = {
        **inter,
        "item": data.item_ids[inter["item"]] if data.item_ids is not None else inter["item"],
    }
    take = lambda idx: {c: v[idx] for c, v in cols.items()}  # noqa: E731
    reference = build_reference(take(rng.choice(n, len(parts[0]), replace=False)), schema)
    passed, failures = check_batches(
        [take(idx) for idx in parts], schema, reference, th, quarantine_dir
    )
    what = "time windows" if data.has_time else "random parts (no timestamps)"
    rows = {what: {"batches": len(parts), "passed": len(passed), "quarantined": len(failures)}}
    if 2 * len(passed) < len(parts):
        raise DataError(
            f"the data gate refused {len(failures)} of {len(parts)} batches of {data.source} "
            f"({failures[0]}); see {quarantine_dir}"
        )
    if failures:
        keep = np.sort(np.concatenate([parts[i] for i in passed]))
        data.interactions = {c: v[keep] for c, v in inter.items()}
    return data, {"rows": rows, "failures": failures or ["no batch refused"]}
