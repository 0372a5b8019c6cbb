"""The response set: which replies may ever be suggested, and how three of them are picked.

Smart Reply (Kannan et al. 2016) never generates free text at serving time: it scores a fixed,
curated set of replies. This module builds that set and picks a diverse three from it.

    rs = build_response_set(replies, thread_ids, k_anon=5)   # the privacy rule is applied here
    labels = cluster_responses(embed(rs.texts), n_clusters=40, seed=0)
    pol = np.array([polarity(t) for t in rs.texts])
    top3 = select_diverse(scores, labels, pol, k=3)          # indices into rs.texts

1. Normalisation (`normalize_reply`): replies that differ only in case, spacing, the apostrophe
   character or trailing punctuation ("Thanks!", "thanks .", "THANKS") share one key. What is
   shown is the most common surface form of the key (counted over threads), tidied.
2. Privacy (`build_response_set`): a reply enters the set only when at least `k_anon` DISTINCT
   threads used it (k-anonymity over threads, not over uses). A sentence one person repeated
   fifty times in one thread is still one person's words and never enters; "Sounds good!" written
   in five unrelated threads may. Every suggestion is therefore something at least k people wrote.
3. Diversity (`cluster_responses`, `polarity`, `select_diverse`, `diversity`): replies are
   clustered by meaning; the three shown never share a cluster unless they differ in polarity
   (a yes and a no are not paraphrases), and a yes/no message gets one positive and one
   negative option (the rule is in `select_diverse`).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# DailyDialog and other tokenised corpora put spaces before punctuation and around apostrophes
# ("great . Thanks !", "I ' m"); these undo that so "I'm" stays one readable word.
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:%)])")
_SPACE_AFTER_OPEN = re.compile(r"([(])\s+")
_SPACED_APOSTROPHE = re.compile(r"(\w)\s*'\s*(s|m|re|ve|ll|d|t)\b", re.IGNORECASE)
_SPACED_NT = re.compile(r"(\w)\s+(n't)\b", re.IGNORECASE)
_WS = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s.,!?;:~\-]+$")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def display_form(text: str) -> str:
    """Tidy a surface form for display: one apostrophe character, no space before punctuation.

    Case and punctuation are kept ("That would be great . Thanks !" -> "That would be great.
    Thanks!"; "I ' m" -> "I'm"; "can ' t" -> "can't").
    """
    t = str(text).replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    t = _WS.sub(" ", t).strip()
    t = _SPACED_NT.sub(r"\1\2", t)
    t = _SPACED_APOSTROPHE.sub(r"\1'\2", t)
    t = _SPACE_BEFORE_PUNCT.sub(r"\1", t)
    t = _SPACE_AFTER_OPEN.sub(r"\1", t)
    return t


def normalize_reply(text: str) -> str:
    """The key two replies share when they are "the same reply".

    display_form (apostrophes unified, tokeniser spaces removed, so contractions stay readable:
    "I ' m fine" -> "i'm fine"), then lower case, whitespace collapsed, trailing punctuation and
    spaces dropped ("Thanks !!" -> "thanks"). Inner punctuation is kept ("ok, thanks" differs from
    "ok thanks" only by the comma and keeps it: it is part of the displayed text). An empty or
    punctuation-only reply gives "".
    """
    return _TRAILING.sub("", display_form(text).lower())


def reply_words(text: str) -> list[str]:
    """The lower-case words of a reply (contractions are one word); punctuation dropped."""
    return _WORD.findall(display_form(text).lower())


@dataclass
class ResponseSet:
    """The replies that may be suggested, most widely used first.

    texts[i] is the displayed form, keys[i] its `normalize_reply` key, counts[i] how many times
    it was used in all, n_threads[i] in how many distinct threads (always >= k_anon).
    """

    texts: list[str]
    counts: np.ndarray  # (R,) int64, uses
    n_threads: np.ndarray  # (R,) int64, distinct threads, >= k_anon
    keys: list[str] = field(default_factory=list)
    k_anon: int = 5
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._index = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.texts)

    def index_of(self, reply: str) -> int:
        """Index of the entry whose key equals `normalize_reply(reply)`, or -1 if none."""
        return self._index.get(normalize_reply(reply), -1)


def build_response_set(
    replies: Sequence[str],
    thread_ids: Sequence[object],
    k_anon: int = 5,
    max_size: int = 500,
    max_words: int = 12,
) -> ResponseSet:
    """Build the response set from observed replies under the k-anonymity rule.

    A key (see `normalize_reply`) enters only when at least `k_anon` distinct thread ids used it;
    among those, replies of 1..`max_words` words are kept, ordered by the number of distinct
    threads, then total uses, then the key (so the order is deterministic), and the first
    `max_size` form the set. The displayed text of a key is its surface form (after
    `display_form`) used by the most distinct threads, ties broken by total uses then
    alphabetically, so one thread repeating an odd spelling cannot choose what everybody sees.

    Args:
        replies: reply texts, one per (message, reply) pair.
        thread_ids: the thread (conversation) each reply belongs to, same length; any hashable.
        k_anon: minimum number of distinct threads (>= 1).
        max_size: the most entries kept.
        max_words: longest reply kept, in words (suggestions are short).

    Raises:
        ValueError: lengths differ, or k_anon < 1, max_size < 1 or max_words < 1.
    """
    if len(replies) != len(thread_ids):
        raise ValueError(f"{len(replies)} replies but {len(thread_ids)} thread ids")
    if k_anon < 1 or max_size < 1 or max_words < 1:
        raise ValueError("k_anon, max_size and max_words must be >= 1")
    uses: Counter[str] = Counter()
    threads: dict[str, set] = defaultdict(set)
    surface_threads: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    surface_uses: dict[str, Counter[str]] = defaultdict(Counter)
    for reply, tid in zip(replies, thread_ids, strict=True):
        key = normalize_reply(reply)
        if not key:
            continue
        uses[key] += 1
        threads[key].add(tid)
        surface = display_form(reply)
        surface_threads[key][surface].add(tid)
        surface_uses[key][surface] += 1

    eligible = [
        k for k in uses if len(threads[k]) >= k_anon and 1 <= len(reply_words(k)) <= max_words
    ]
    eligible.sort(key=lambda k: (-len(threads[k]), -uses[k], k))
    eligible = eligible[:max_size]
    texts = []
    for k in eligible:
        forms = surface_threads[k]
        best = min(forms, key=lambda s: (-len(forms[s]), -surface_uses[k][s], s))
        texts.append(best)
    return ResponseSet(
        texts=texts,
        counts=np.array([uses[k] for k in eligible], dtype=np.int64),
        n_threads=np.array([len(threads[k]) for k in eligible], dtype=np.int64),
        keys=eligible,
        k_anon=k_anon,
    )


def cluster_responses(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster reply embeddings by meaning with k-means on the unit sphere.

    Rows are L2-normalised first, so Euclidean k-means follows cosine similarity (the geometry
    the sentence encoders are trained for). n_clusters is capped at the number of rows.

    Args:
        embeddings: (R, D) float reply embeddings.
        n_clusters: wanted number of clusters (>= 1).
        seed: k-means initialisation seed.

    Returns:
        (R,) int64 cluster labels in [0, min(n_clusters, R)).
    """
    from sklearn.cluster import KMeans

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (R, D), got shape {x.shape}")
    if n_clusters < 1:
        raise ValueError("n_clusters must be >= 1")
    r = x.shape[0]
    if r == 0:
        return np.zeros(0, dtype=np.int64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # (R, D) unit rows
    n = min(n_clusters, r)
    if n == 1:
        return np.zeros(r, dtype=np.int64)
    km = KMeans(n_clusters=n, n_init=4, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


# The polarity lexicon: is a reply a yes or a no? Phrases are matched first, longest first, so
# "no problem" counts as a yes and "not sure" as a no before "no"/"sure" alone are looked at.
POSITIVE_PHRASES = (
    "no problem",
    "no worries",
    "not a problem",
    "why not",
    "sounds good",
    "sounds great",
    "of course",
    "all right",
    "i'd love to",
    "i would love to",
    "count me in",
    "that works",
    "works for me",
    "see you",
    "will do",
    "i agree",
    "i can",
    "i will",
    "i'll",
    "let's",
)
NEGATIVE_PHRASES = (
    "not sure",
    "not really",
    "not yet",
    "no way",
    "i'm afraid",
    "i am afraid",
    "i don't think so",
    "i disagree",
    "no thanks",
    "no thank you",
)
POSITIVE_WORDS = frozenset(
    "yes yeah yep yup sure ok okay okey certainly absolutely definitely great perfect "
    "agreed alright fine gladly".split()
)
NEGATIVE_WORDS = frozenset(
    "no nope nah sorry can't cannot won't unfortunately not don't didn't couldn't wouldn't "
    "shouldn't isn't aren't wasn't never unable decline".split()
)
_PHRASES = sorted(
    [(tuple(reply_words(p)), 1) for p in POSITIVE_PHRASES]
    + [(tuple(reply_words(p)), -1) for p in NEGATIVE_PHRASES],
    key=lambda pv: -len(pv[0]),
)


def polarity(text: str) -> int:
    """+1 for a yes-like reply, -1 for a no-like reply, 0 for neither (or a tie).

    A transparent lexicon, not a model: scan the reply's words left to right; at each position
    take the longest matching phrase from POSITIVE_PHRASES / NEGATIVE_PHRASES (+1 / -1) or else a
    single word from POSITIVE_WORDS / NEGATIVE_WORDS; the sign of the sum is the polarity.
    "Sure, see you then" -> +1, "Sorry, I can't make it" -> -1 ("sorry", "can't"), "No problem!"
    -> +1 (the phrase wins), "Thanks!" -> 0 (gratitude is not an answer to a yes/no question).
    """
    words = reply_words(text)
    total, i = 0, 0
    while i < len(words):
        for phrase, value in _PHRASES:
            if tuple(words[i : i + len(phrase)]) == phrase:
                total += value
                i += len(phrase)
                break
        else:
            total += (words[i] in POSITIVE_WORDS) - (words[i] in NEGATIVE_WORDS)
            i += 1
    return int(np.sign(total))


def select_diverse(
    scores: np.ndarray,
    clusters: np.ndarray,
    polarities: np.ndarray,
    k: int = 3,
    window: int = 10,
) -> list[int]:
    """Pick up to k replies: best first, no two from one cluster, both polarities when it fits.

    The rule, in order. A "meaning" is a (cluster, polarity) pair: sentence embeddings put short
    answers like "Yes." and "No." close together, and k-means often puts them in one cluster,
    but a yes and a no are never paraphrases of each other.
    1. Walk the replies by score, best first (ties by index), and keep one per meaning until k
       are kept. The best reply is always kept. With fewer than k meanings, fewer than k come
       back (a repeat of a meaning is worse than one suggestion fewer).
    2. Polarity (after Kannan et al. 2016, sec. 5): if the kept replies contain a positive but no
       negative (or a negative but no positive), the best reply of the missing polarity whose
       meaning is not kept yet replaces the lowest-scored kept reply other than the first (and
       not the only one of the other polarity), or joins if fewer than k were kept, but only if
       it is "reasonable": ranked within the top `window` replies overall. A message that draws
       no yes/no replies (all kept have polarity 0) is left alone: "Thanks!" gets no forced "No".

    Args:
        scores: (R,) higher is better (cosine, log-probability: any scale; only order is used).
        clusters: (R,) cluster label per reply.
        polarities: (R,) -1, 0 or +1 per reply.
        k: how many to return (>= 1).
        window: how deep in the overall ranking a reply of the missing polarity may come from.

    Returns:
        Indices into the R replies, highest score first, at most k.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(clusters)
    p = np.asarray(polarities)
    if not (s.shape == c.shape == p.shape) or s.ndim != 1:
        raise ValueError("scores, clusters and polarities must be 1-d and of one length")
    if k < 1:
        raise ValueError("k must be >= 1")
    order = np.argsort(-s, kind="stable")  # (R,) best first, ties by index
    kept: list[int] = []
    used: set = set()  # meanings kept: (cluster, polarity)
    for i in order:
        if (c[i], p[i]) not in used:
            kept.append(int(i))
            used.add((c[i], p[i]))
            if len(kept) == k:
                break
    if len(kept) >= 2:
        present = {int(p[i]) for i in kept}
        for want in (-1, 1):
            if -want in present and want not in present:
                swap = next(
                    (int(i) for i in order[:window] if p[i] == want and (c[i], p[i]) not in used),
                    None,
                )
                if swap is None:
                    continue
                if len(kept) < k:  # room left (fewer clusters than k): add, replace nothing
                    kept.append(swap)
                    used.add((c[swap], p[swap]))
                    present.add(want)
                    continue
                # Replace the lowest-scored reply after the first that is not the only one of
                # the other polarity (so fixing one side never undoes the other).
                for j in range(len(kept) - 1, 0, -1):
                    others = [kept[m] for m in range(len(kept)) if m != j]
                    if p[kept[j]] != -want or any(p[o] == -want for o in others):
                        used.discard((c[kept[j]], p[kept[j]]))
                        kept[j] = swap
                        used.add((c[swap], p[swap]))
                        break
                present = {int(p[i]) for i in kept}
    kept.sort(key=lambda i: (-s[i], i))
    return kept


def diversity(embeddings: np.ndarray) -> float:
    """1 - the mean pairwise cosine similarity of the suggestions shown together.

    0 means the k suggestions point the same way (three paraphrases); 1 means orthogonal on
    average. For k < 2 there is no pair and the value is 0.0.

    Args:
        embeddings: (k, D) embeddings of the suggestions shown for one message.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (k, D), got shape {x.shape}")
    k = x.shape[0]
    if k < 2:
        return 0.0
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # (k, D)
    sim = x @ x.T  # (k, k) cosine
    iu = np.triu_indices(k, 1)
    return float(1.0 - sim[iu].mean())
