"""Data: a platform simulator with ground truth, real-data loaders, and the data gate.

Every source ends in a `VideoRecData`, whose `interactions` are columns
    user (int64, 0..U-1), item (int64, 0..I-1), timestamp (int64 seconds), weight (float32)
The simulator also emits the impression log the ranker trains on, one row per shown video:
    session, day, user, item, timestamp, position, propensity, click, watch_frac, watch_time,
    satisfied
and its watch events (click rows) are the interactions, weight = watch fraction.

Real formats (`--data FORMAT:PATH`; README section 3 has the full table):
    movielens:DIR        100K `u.data`, 1M `ratings.dat` or latest `ratings.csv` (layout detected);
                         every rating counts as a watch (explicit -> implicit), weight = rating / 5
    interactions:FILE    csv/tsv user,item[,rating/weight][,timestamp], any column order: with a
                         header, columns are found by name and alias (ROLE_NAMES) or named with
                         `?user=COL&item=COL&rating=COL&time=COL`; without one, 2 columns are
                         user,item and 3+ user,item,timestamp[,weight] (user,item,rating,
                         timestamp when the values say so). Times: unix s or ms, ISO.
    lastfm:DIR           `user_artists.dat` (userID, artistID, plays); no timestamps in that file
Every file is read through shared.ingest (encodings, delimiters, quoted fields, blank rows): a
row that cannot be used (empty id, a time or weight that does not parse) is skipped and counted
with its line number in `data.log`; a repeated (user, item) pair is one interaction.

`prepare` is the pipeline `casebook run` and `casebook check` share: load -> clean -> the data
gate (each batch against the rest of the log) -> split sizes -> the report's Data section.

Data without timestamps (`has_time=False`: Last.fm, a CSV without a time column) keeps a
`timestamp` column of zeros: its order means nothing, so the split is a seeded random
leave-one-out and the models that need an order are skipped (`train.make_split`, `cli.py`).
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.errors import DataError
from shared.ingest import (
    LoadLog,
    Table,
    data_section,
    parse_spec,
    read_table,
    read_text,
    sniff_delimiter,
    split_lines,
)

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
    # What reading and cleaning did: rows read, skipped (line numbers), removed (shared.ingest).
    log: LoadLog | None = None


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

# Header names of each column, compared after lower-casing and dropping spaces, `_`, `-` and
# `.` (so `userId`, `user_id` and `User ID` are all `userid`); the first name present wins.
USER_NAMES = ("user", "userid", "visitorid", "customerid", "customer", "memberid", "member",
              "viewerid", "viewer", "accountid", "clientid", "uid", "username")  # fmt: skip
ITEM_NAMES = ("item", "itemid", "movieid", "movie", "videoid", "video", "artistid", "artist",
              "productid", "product", "trackid", "track", "songid", "song", "contentid", "iid",
              "asin", "sku")  # fmt: skip
WEIGHT_NAMES = ("rating", "weight", "plays", "playcount", "count", "score", "watchtime",
                "watchseconds", "stars", "views", "value")  # fmt: skip
TIME_NAMES = ("timestamp", "time", "ts", "datetime", "unixtime", "date", "eventtime",
              "eventdate", "createdat", "watchedat", "when")  # fmt: skip
# Explicit ratings: weight = rating / the largest rating, never play counts.
RATING_NAMES = ("rating", "stars")
ROLE_NAMES = {"user": USER_NAMES, "item": ITEM_NAMES, "weight": WEIGHT_NAMES, "time": TIME_NAMES}
# `--data interactions:FILE?user=COL&item=COL&rating=COL&time=COL` (weight, timestamp: synonyms)
OPTION_ROLES = {"user": "user", "item": "item", "rating": "weight", "weight": "weight",
                "time": "time", "timestamp": "time"}  # fmt: skip
FORMATS = ("movielens", "interactions", "lastfm")
# Unix times above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
MS_ABOVE = 1e11
_DATE_SLASHES = re.compile(r"^\d{4}/\d{1,2}/\d{1,2}")


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name.strip().lstrip("\ufeff").lower())


def parse_time(value: str) -> tuple[int | None, str]:
    """A timestamp in seconds and its form ("s", "ms", "iso"), or (None, "") when the value is
    no time: empty, junk, infinite or before 1970 (-1 and the like mark a missing time).

    Numbers are unix seconds, or milliseconds above MS_ABOVE (divided by 1000). Anything else
    is read as an ISO 8601 date or date-time (`2018-03-01`, `2018-03-01 12:30:00`,
    `2018-03-01T12:30:00.5Z`, `2018/03/01`); one without a zone is taken as UTC.
    """
    s = value.strip().strip("\"'").strip()
    if not s:
        return None, ""
    try:
        x = float(s)
    except ValueError:
        if _DATE_SLASHES.match(s):
            s = s.replace("/", "-", 2)
        try:
            d = datetime.fromisoformat(s)
        except ValueError:
            return None, ""
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        t = d.timestamp()
        return (int(math.floor(t)), "iso") if t >= 0 else (None, "")
    if not math.isfinite(x) or x < 0:
        return None, ""
    return (int(x // 1000), "ms") if x > MS_ABOVE else (int(x), "s")


def parse_weight(value: str) -> float | None:
    """A rating, count or weight: a finite number >= 0, else None."""
    try:
        x = float(value.strip().strip("\"'"))
    except ValueError:
        return None
    return x if math.isfinite(x) and x >= 0 else None


def _remap(
    users: np.ndarray,
    items: np.ndarray,
    ts: np.ndarray,
    w: np.ndarray,
    source: str,
    topics: dict | None = None,
    log: LoadLog | None = None,
) -> VideoRecData:
    """Contiguous ids; one row per (user, item), keeping the first time it happened; time order.

    A repeated (user, item) pair (a re-watch, a re-rating, a logged retry) is one interaction:
    the later rows are counted into `log` as "repeated user-item events", with examples.
    """
    if users.size == 0:
        raise DataError(f"{source}: no interactions found")
    if not np.all(np.isfinite(w)):
        raise DataError(f"{source}: non-numeric or infinite weights")
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    order = np.lexsort((np.arange(u.size), ts, u))  # by user, then time, ties by file order
    u, i, ts, w = u[order], i[order], ts[order], w[order]
    key = u.astype(np.int64) * len(item_ids) + i
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    if log is not None and len(uniq) < len(key):
        rep = np.flatnonzero(counts > 1)[:3]
        log.remove(
            "repeated user-item events (the first kept)",
            len(key) - len(uniq),
            [
                f"user {user_ids[u[first[k]]]}, item {item_ids[i[first[k]]]} (x{counts[k]})"
                for k in rep
            ],
        )
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
        log=log,
    )


def _as_int_if_possible(x: np.ndarray) -> np.ndarray:
    try:
        return x.astype(np.int64)
    except (ValueError, OverflowError):
        return x


def _read_log_table(path: Path, log: LoadLog, options: dict[str, str] | None = None) -> Table:
    """A csv/tsv interaction log via shared.ingest.read_table. Its first non-blank row is a
    header when a cell, normalised (`_norm`), is a known column name of any role or a column
    named in `options`."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{log.source}: {path} is a folder; pass the file")
    text = read_text(path, None, log.source)
    first = next((ln for ln in split_lines(text[:65536]) if ln.strip()), "")
    delim = sniff_delimiter(first, path)
    cells = next(csv.reader([first], delimiter=delim), [])
    known = {n for names in ROLE_NAMES.values() for n in names}
    known |= {_norm(v) for v in (options or {}).values()}
    header = any(_norm(c) in known for c in cells)
    return read_table(path, log, header=header, delimiter=delim, min_fields=2)


def _dat_rows(path: Path, log: LoadLog, sep: str) -> list[tuple[int, list[str]]]:
    """Rows of a `sep`-separated file the csv module cannot read (MovieLens 1M's `::`)."""
    rows = []
    for k, line in enumerate(split_lines(read_text(path, log, log.source)), 1):
        log.rows_read += 1
        if not line.strip():
            log.skip(k, "blank row")
        else:
            rows.append((k, line.split(sep)))
    return rows


def _columns(
    header: list[str], options: dict[str, str], positional: tuple[str, ...], width: int, what: str
) -> dict[str, int | None]:
    """role -> column index (None: the file has no such column).

    With a header: `options` (role -> column name) first, then the ROLE_NAMES aliases. Without
    one: an option may give a 1-based position; the rest follow `positional` over `width`.
    """
    cols: dict[str, int | None] = {}
    norm = [_norm(h) for h in header]
    for option, name in options.items():
        role = OPTION_ROLES[option]
        if header and _norm(name) in norm:
            cols[role] = norm.index(_norm(name))
        elif not header and name.isdigit() and int(name) >= 1:
            cols[role] = int(name) - 1
        else:
            have = f"its header is {', '.join(header)}" if header else "it has no header row"
            raise DataError(
                f"{what}: ?{option}={name} names no column ({have}; without a header give a "
                f"1-based position, e.g. ?{option}=3)"
            )
    for role, names in ROLE_NAMES.items():
        if role in cols:
            continue
        if header:
            cols[role] = next((norm.index(n) for n in names if n in norm), None)
        else:
            k = positional.index(role) if role in positional else None
            cols[role] = k if k is not None and k < width else None
    for role in ("user", "item"):
        if cols[role] is None:
            raise DataError(
                f"{what}: no {role} column (looked for {', '.join(ROLE_NAMES[role][:8])}, ...; "
                f"the header is {', '.join(header)}); name it with ?{role}=COLUMN"
            )
    return cols


def _parse_rows(
    rows: list[tuple[int, list[str]]], cols: dict[str, int | None], log: LoadLog, names: dict
) -> dict[str, list]:
    """Each row's user, item, time and weight strings parsed; unusable rows skipped into `log`
    with their line numbers. A time or weight column in which no value parses is dropped (a
    note says so) rather than every row skipped."""
    need = 1 + max(c for c in cols.values() if c is not None)
    ok = []
    for line, row in rows:
        if len(row) < need:
            log.skip(line, f"fewer than {need} fields")
        elif not row[cols["user"]].strip() or not row[cols["item"]].strip():
            log.skip(line, "empty user or item")
        else:
            ok.append((line, row))
    t_col, w_col = cols["time"], cols["weight"]
    times = [parse_time(r[t_col]) for _, r in ok] if t_col is not None else None
    weights = [parse_weight(r[w_col]) for _, r in ok] if w_col is not None else None
    if times is not None and ok and all(t is None for t, _ in times):
        log.notes.append(f"column `{names['time']}` holds no time: read without timestamps")
        times, cols["time"] = None, None
    if weights is not None and ok and all(w is None for w in weights):
        log.notes.append(f"column `{names['weight']}` holds no number >= 0: every weight is 1")
        weights, cols["weight"] = None, None
    out: dict[str, list] = {"user": [], "item": [], "time": [], "weight": [], "form": []}
    for k, (line, row) in enumerate(ok):
        t, form = times[k] if times is not None else (0, "")
        w = weights[k] if weights is not None else 1.0
        if t is None:
            log.skip(line, "timestamp is not a time")
        elif w is None:
            empty = not row[w_col].strip().strip("\"'").strip()
            log.skip(
                line, "rating/weight is empty" if empty else "rating/weight is not a number >= 0"
            )
        else:
            out["user"].append(row[cols["user"]].strip())
            out["item"].append(row[cols["item"]].strip())
            out["time"].append(t)
            out["weight"].append(w)
            out["form"].append(form)
    return out


# A column of unix times has a median after this (1973); ratings and counts rarely do.
TIME_LIKE = 1e8


def _time_after_rating(rows: list[tuple[int, list[str]]], cols: dict, log: LoadLog) -> bool:
    """Without a header, 4+ columns are user,item,timestamp,weight, unless the third column is
    no time (its median below TIME_LIKE: ratings) and the fourth is (Amazon's and MovieLens'
    user,item,rating,timestamp): then the two swap, a note says so, and True is returned."""
    t, w = cols["time"], cols["weight"]
    if t is None or w is None:
        return False

    def median_time(c: int) -> float:
        v = [parse_time(r[c])[0] for _, r in rows[:2000] if len(r) > c]
        v = [x for x in v if x is not None]
        return float(np.median(v)) if v else -1.0

    if median_time(t) < TIME_LIKE <= median_time(w):
        cols["time"], cols["weight"] = w, t
        log.notes.append(
            f"no header: column {t + 1} holds ratings and column {w + 1} times "
            "(read as user,item,rating,timestamp)"
        )
        return True
    return False


def _interactions(
    rows: list[tuple[int, list[str]]],
    header: list[str],
    log: LoadLog,
    positional: tuple[str, ...],
    kind: str = "auto",
    options: dict[str, str] | None = None,
    scale: float | None = None,
    topics: dict | None = None,
) -> VideoRecData:
    """Rows of a log -> `VideoRecData`: columns found (`_columns`), rows parsed (`_parse_rows`),
    weights made (`_weights`), ids remapped with repeated pairs collapsed (`_remap`)."""
    what = log.source
    width = Counter(len(r) for _, r in rows).most_common(1)[0][0] if rows else 0
    cols = _columns(header, options or {}, positional, width, what)
    if not header and not {"time", "weight"} & {OPTION_ROLES[o] for o in options or {}}:
        kind = "rating" if _time_after_rating(rows, cols, log) else kind
    names = {
        r: (header[c] if header else f"column {c + 1}") for r, c in cols.items() if c is not None
    }
    p = _parse_rows(rows, cols, log, names)
    if not p["user"]:
        raise DataError(
            f"{what}: no usable row ({log.rows_read:,} read, {log.total_skipped:,} skipped: "
            + ", ".join(f"{r} {n:,}" for r, n in log.n_skipped.items())
            + ")"
        )
    users = _as_int_if_possible(np.array(p["user"]))
    items = _as_int_if_possible(np.array(p["item"]))
    w, is_count = _weights(np.array(p["weight"], dtype=np.float64), cols, names, kind, scale, log)
    data = _remap(users, items, np.array(p["time"], dtype=np.int64), w, what, topics, log)
    data.has_time, data.weight_is_count = cols["time"] is not None, is_count
    used = ", ".join(f"{r} `{n}`" for r, n in names.items() if cols[r] is not None)
    log.notes.insert(0, f"columns: {used}" + ("" if header else " (no header row)"))
    forms = Counter(p["form"])
    if forms["ms"]:
        log.notes.append(f"{forms['ms']:,} timestamps in milliseconds, read as seconds")
    if forms["iso"]:
        log.notes.append(f"{forms['iso']:,} timestamps are ISO dates (UTC unless they say)")
    return data


def _weights(w, cols, names, kind: str, scale: float | None, log: LoadLog):
    """(weights, weight_is_count). kind "count": play counts as they are. Otherwise a column
    named as a rating (RATING_NAMES), or with fractions, is scaled into [0, 1] by `scale` or
    its largest value (the gate checks that range); non-negative whole numbers are counts."""
    if cols["weight"] is None:
        return w, False
    name = names["weight"]
    if kind == "count":
        return w, True
    rating = kind == "rating" or _norm(name) in RATING_NAMES
    if not rating and np.all(w == np.round(w)):
        return w, True
    top = scale or float(w.max())
    if scale or top > 1.0:
        w = w / top
        log.notes.append(f"weight = {name} / {top:g}" + ("" if scale else " (its largest value)"))
    if rating:
        log.notes.append("every rating counts as a watch (implicit feedback)")
    return w, False


def load_movielens(directory: str | Path, log: LoadLog | None = None) -> VideoRecData:
    """MovieLens 100K (u.data), 1M (ratings.dat) or latest (ratings.csv); genres as topics.

    Columns are user, item, rating, timestamp (by header name in ratings.csv; by position in
    the others); weight = rating / 5."""
    d = Path(directory).expanduser()
    log = log or LoadLog(f"movielens:{d}")
    if not d.is_dir():
        raise DataError(f"movielens: {d} is not a directory")
    topics: dict[str, str] = {}
    positional = ("user", "item", "weight", "time")
    if (d / "ratings.csv").exists():
        table = _read_log_table(d / "ratings.csv", log)
        rows, header = list(table), table.header
        if (d / "movies.csv").exists():
            movies = read_table(d / "movies.csv", LoadLog("movies.csv"), known=("movieid",))
            m = movies.column(("movieId",), "movieId", required=False)
            g = movies.column(("genres",), "genres", required=False)
            for _, r in movies if m is not None and g is not None else ():
                if len(r) > max(m, g):
                    topics[r[m].strip()] = r[g].split("|")[0]
    elif (d / "ratings.dat").exists():
        rows, header = _dat_rows(d / "ratings.dat", log, "::"), []
        if (d / "movies.dat").exists():
            for line in split_lines(read_text(d / "movies.dat")):
                p = line.split("::")
                if len(p) >= 3:
                    topics[p[0].strip()] = p[2].split("|")[0]
    elif (d / "u.data").exists():
        table = read_table(d / "u.data", log, header=False, delimiter="\t", min_fields=2)
        rows, header = list(table), []
    else:
        raise DataError(f"movielens: {d} has none of ratings.csv, ratings.dat, u.data")
    return _interactions(rows, header, log, positional, "rating", scale=5.0, topics=topics)


def load_interactions(
    file: str | Path, options: dict[str, str] | None = None, log: LoadLog | None = None
) -> VideoRecData:
    """A csv/tsv log of user, item[, rating/weight][, timestamp], columns in any order.

    With a header, columns are found by name (ROLE_NAMES; `options` name them otherwise); no
    time column = no timestamps. Without one, 2 columns are user,item and 3 or more
    user,item,timestamp[,weight]. Times: `parse_time`; weights: `_weights`.
    """
    path = Path(file).expanduser()
    log = log or LoadLog(f"interactions:{path}")
    if not path.exists():
        raise DataError(f"interactions: {path} is not a file")
    table = _read_log_table(path, log, options)
    data = _interactions(list(table), table.header, log, ("user", "item", "time", "weight"),
                         options=options)  # fmt: skip
    if not data.has_time:
        data.notes.append(f"{path.name} has no timestamp column: its row order is not time")
    return data


def load_lastfm(directory: str | Path, log: LoadLog | None = None) -> VideoRecData:
    """HetRec Last.fm `user_artists.dat` (userID, artistID, weight = play count), tab-separated."""
    d = Path(directory).expanduser()
    path = d / "user_artists.dat" if d.is_dir() else d
    log = log or LoadLog(f"lastfm:{d}")
    if not path.is_file():
        raise DataError(f"lastfm: {path} not found (expected user_artists.dat)")
    table = _read_log_table(path, log)
    data = _interactions(list(table), table.header, log, ("user", "item", "weight"), "count")
    data.has_time = False  # no timestamps (the file is sorted by artist id)
    data.notes.append(
        "user_artists.dat has no timestamps (rows are sorted by user, then artist id); "
        "weight = play count"
    )
    return data


def load_data(spec: str, cfg: VideoRecConfig, seed: int = 0) -> VideoRecData:
    """`builtin` or FORMAT:PATH[?user=COL&item=COL&rating=COL&time=COL] (the options:
    interactions only). The data's `log` holds what reading did (shared.ingest.LoadLog)."""
    if spec == "builtin":
        data = make_builtin(cfg, seed)
        data.log = LoadLog("builtin")
        data.log.rows_read = int(data.interactions["user"].size)
        data.log.notes.append(
            f"simulated: {data.impressions['user'].size:,} impressions over {cfg.n_days} days; "
            "the watch events (clicks) are the interactions"
        )
        return data
    ds = parse_spec(spec, FORMATS, tuple(OPTION_ROLES))
    if ds.options and ds.fmt != "interactions":
        raise DataError(f"--data {spec!r}: column options (?name=column) are for interactions")
    log = LoadLog(spec)
    if ds.fmt == "interactions":
        data = load_interactions(ds.path, ds.options, log)
    else:
        data = {"movielens": load_movielens, "lastfm": load_lastfm}[ds.fmt](ds.path, log)
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
    seeded random parts when it has none. Each batch is judged against the REST of the log
    (every row outside it), so the gate refuses what is anomalous within this log (a flood of
    one item, a window of broken weights) and never a property the whole log shares. The
    volume check compares the batch with the mean size of the others (rest rows / (k - 1)).
    A log too small for two batches of 200 rows is not gated (one line says so).
    Returns (data, {"rows", "failures"}) like `gate_log`; a DataError (one line) when more than
    half of the batches are refused.
    """
    from shared.gate import build_reference, check_batch, quarantine

    inter = data.interactions
    n = inter["user"].size
    rng = np.random.default_rng(seed)
    order = np.argsort(inter["timestamp"], kind="stable") if data.has_time else rng.permutation(n)
    k = min(GATE_BATCHES, n // 200)
    what = "time windows" if data.has_time else "random parts (no timestamps)"
    if k < 2:
        rows = {what: {"batches": 0, "passed": 0, "quarantined": 0}}
        why = f"not gated: {n:,} rows are too few for two batches of 200 to compare"
        return data, {"rows": rows, "failures": [why]}
    parts = np.array_split(order, k)
    schema, th = interaction_schema(data.weight_is_count), interaction_thresholds()
    # The gate sees the log's own item ids, so a refusal names the item a person can look up.
    cols = {
        **inter,
        "item": data.item_ids[inter["item"]] if data.item_ids is not None else inter["item"],
    }
    take = lambda idx: {c: v[idx] for c, v in cols.items()}  # noqa: E731
    passed, failures = [], []
    for j, idx in enumerate(parts):
        rest = np.concatenate(parts[:j] + parts[j + 1 :])
        reference = build_reference(take(rest), schema)
        reference.n_rows = round(rest.size / (k - 1))  # the other batches' mean size
        res = check_batch(take(idx), schema, reference, th)
        if res.passed:
            passed.append(j)
        else:
            quarantine(take(idx), res, quarantine_dir)
            failures.append(f"batch {j}: " + "; ".join(c.message for c in res.failed[:3]))
    rows = {what: {"batches": k, "passed": len(passed), "quarantined": len(failures)}}
    if 2 * len(passed) < k:
        raise DataError(
            f"the data gate refused {len(failures)} of {k} batches ({what}) of {data.source}, "
            f"so too little is left to train on ({failures[0]}): look at the refused rows in "
            f"{quarantine_dir} and fix them in the file, or name its columns with "
            "?user=&item=&rating=&time="
        )
    if failures:
        keep = np.sort(np.concatenate([parts[i] for i in passed]))
        data.interactions = {c: v[keep] for c, v in inter.items()}
    return data, {"rows": rows, "failures": failures or ["no batch refused"]}


# ---------------------------------------------------------------------------------------------
# The pipeline `run` and `check` share: load, clean, gate, split sizes, the data section.


def split_sizes(data: VideoRecData) -> dict[str, int]:
    """Rows in train / validation / test under `train.make_split`'s protocol: per user with 3+
    interactions the last two (by time, or seeded random keys without time; the sizes do not
    depend on the keys) are validation and test; everything else is train."""
    from shared.splits import leave_last_out

    it = data.interactions
    tr, va, te = leave_last_out(it["user"], it["timestamp"], n_holdout=2)
    return {"train": len(tr), "validation": len(va), "test": len(te)}


def prepare(
    spec: str, cfg: VideoRecConfig, seed: int, quarantine_dir: Path
) -> tuple[VideoRecData, dict, str]:
    """Load `spec`, clean it, gate it: what `casebook run` trains on and `casebook check` shows.

    Returns (data with only the rows that passed the gate, the gate's {"rows", "failures"},
    the report's Data section as Markdown: shared.ingest.data_section). A DataError (one line)
    when nothing sensible is left to train on.
    """
    data = load_data(spec, cfg, seed)
    log = data.log
    n_before = data.interactions["user"].size
    if data.simulator is not None:
        data, gate = gate_log(data, cfg, quarantine_dir, seed)
    else:
        data, gate = gate_interactions(data, quarantine_dir, seed)
    log.remove("in a batch the data gate refused", n_before - data.interactions["user"].size)
    log.notes += [n for n in data.notes if n not in log.notes]
    sizes = split_sizes(data)
    n_users = int(np.unique(data.interactions["user"]).size)
    n_items = int(np.unique(data.interactions["item"]).size)
    held = "last two watches" if data.has_time else "two random watches (no timestamps)"
    unit = (
        f"interactions ({n_users:,} users, {n_items:,} items; validation and test hold the "
        f"{held} of each of the {sizes['test']:,} users with 3 or more)"
    )
    lines = [
        f"{name}: {r['batches']} batch{'es' * (r['batches'] != 1)}, {r['passed']} passed, "
        f"{r['quarantined']} quarantined"
        for name, r in gate["rows"].items()
    ] + list(gate["failures"])
    return data, gate, data_section(log, sizes, gate=lines, unit=unit)
