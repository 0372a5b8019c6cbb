"""Data: a deterministic generator of posts and ads with policy labels, real-format loaders,
cleaning, leakage-free splits and the data gate: the one pipeline `run` and `check` share.

    data, gate, markdown = prepare_data("sms-spam:SMSSpamCollection", cfg, seed=0, out=out)
    data = generate_posts(cfg, seed=0)              # posts + ads, 4 text policies, identities
    data = load_source("olid:~/data/olid", cfg, seed=0)     # read, clean, split (no gate)
    evals = [load_eval("hatecheck:hatecheck.csv")]

Every dataset is a `ModerationData`: texts, a (N, P) 0/1 label matrix over `policies`, the kind
of each item (post or ad), identity masks (given by the file, else found in the text), what
happened to the file's rows (`log`), and a train/val/test split in which near-duplicate texts
(same text after `dedup_key`) always land on the same side.

The pipeline (`prepare_data`):
    read      formats.py, through shared.ingest: a bad row is skipped and counted with its line
              number; texts longer than MAX_TEXT_CHARS are clipped and counted
    clean     exact copies (after `exact_key`: NFKC, case-folded, one space) removed BEFORE the
              split, conflicting labels by majority, a tie dropped (shared.ingest.dedupe)
    split     grouped by `dedup_key` (near-duplicates on one side); stratified by the rarest
              policy a text violates for formats without a fixed protocol; a policy without
              positives in every part is dropped with a note
    gate      `check_training_data`: each half of train against the other, val and test
              against train; a refused half is quarantined and the run trains on the rest
    report    `data_report`: shared.ingest.data_section, the same text in report.md and check

Real formats: see formats.py and the README's formats table.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import DataError
from shared.ingest import LoadLog, data_section, dedupe
from shared.splits import group_split

# Text policies. "offensive" covers insults, profanity aimed at someone and harassment (OLID's
# OFF); "hate" is offence aimed at a protected identity (Davidson's hate class); "spam" is
# unsolicited promotion; "scam" asks for money or credentials under a false pretext.
POLICIES = ("offensive", "hate", "spam", "scam")
# How bad one view of a violating item is, for the review queue (relative units). The Jigsaw
# names rank as their built-in kin: insult and obscene as offensive (obscene a little lower:
# profanity that targets no one), threat, severe toxicity and identity hate as hate.
SEVERITY = {
    "offensive": 2.0, "hate": 3.0, "spam": 1.0, "scam": 3.0, "image": 3.0,
    "toxic": 2.0, "severe_toxic": 3.0, "obscene": 1.5, "threat": 3.0, "insult": 2.0,
    "identity_hate": 3.0,
}  # fmt: skip
DEFAULT_SEVERITY = 2.0  # a policy named by a user's file: as bad as offensive until told
# The built-in policy a file's policy name stands for (rules baseline, evaluation-only sets).
POLICY_FAMILY = {
    "toxic": "offensive", "severe_toxic": "offensive", "obscene": "offensive",
    "threat": "offensive", "insult": "offensive", "identity_hate": "hate",
}  # fmt: skip
# Longest text kept (characters); longer texts are clipped on reading and counted. The gate's
# n_chars range ends here too. The longest Jigsaw comments are about 5,000 characters.
MAX_TEXT_CHARS = 20_000
# Every part (train, val, test) must hold at least this many positives of a policy, else the
# policy is dropped (thresholds and the test table need positives to mean anything).
MIN_POSITIVES_PER_PART = 1

# Identity terms: one swappable term per group, plus the other words that mark the group.
IDENTITIES: dict[str, tuple[str, ...]] = {
    "muslim": ("muslim", "muslims", "islam"),
    "jewish": ("jewish", "jews", "jew"),
    "christian": ("christian", "christians"),
    "gay": ("gay", "lesbian", "lgbt", "queer"),
    "trans": ("trans", "transgender"),
    "black": ("black",),
    "white": ("white",),
    "women": ("women", "woman", "female", "girls"),
    "immigrant": ("immigrant", "immigrants", "refugees", "mexicans"),
}
SWAP_TERMS = ("muslim", "jewish", "christian", "gay", "trans", "black", "white", "immigrant")
_IDENTITY_RE = {
    name: re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.I)
    for name, words in IDENTITIES.items()
}
_SWAP_RE = re.compile(r"\b(" + "|".join(SWAP_TERMS) + r")\b", re.I)


@dataclass
class ModerationData:
    """A labelled text set with its split. `labels[i, j]` = 1 iff text i violates policies[j]."""

    name: str
    texts: list[str]
    labels: np.ndarray  # (N, P) int8
    policies: tuple[str, ...]
    kinds: np.ndarray  # (N,) str: "post" or "ad"
    split: dict[str, np.ndarray] = field(default_factory=dict)  # train/val/test -> indices
    test_name: str = "test"  # how tables name the test part ("olid-test-a", "holdout", ...)
    reach: np.ndarray | None = None  # (N,) expected views if left up (for the review queue)
    agreement: np.ndarray | None = None  # (N,) share of annotators agreeing (Davidson)
    annotator_counts: np.ndarray | None = None  # (N, 3) Davidson votes hate/offensive/neither
    image_ids: np.ndarray | None = None  # (N,) index of the ad's image, -1 for none
    # {identity: (N,) bool} given by the file (Jigsaw unintended bias: column >= 0.5); None:
    # found in the text by the term lists (`identity_masks`)
    given_identities: dict[str, np.ndarray] | None = None
    log: LoadLog | None = None  # rows read, skipped, removed (shared.ingest)

    def __len__(self) -> int:
        return len(self.texts)

    def identities(self, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """{identity: (n,) bool} for rows `idx` (all rows when None): the file's own identity
        columns when it has them, else the term lists matched in the text."""
        if self.given_identities is not None:
            return {k: (m if idx is None else m[idx]) for k, m in self.given_identities.items()}
        texts = self.texts if idx is None else [self.texts[i] for i in idx]
        return identity_masks(texts)

    def subset(self, part: str) -> tuple[list[str], np.ndarray]:
        idx = self.split[part]
        return [self.texts[i] for i in idx], self.labels[idx]


def identity_masks(texts: list[str]) -> dict[str, np.ndarray]:
    """{identity: (N,) bool}: the text mentions a word of that identity group."""
    return {
        name: np.fromiter((bool(rx.search(t)) for t in texts), dtype=bool, count=len(texts))
        for name, rx in _IDENTITY_RE.items()
    }


def swap_identity(text: str, rng: np.random.Generator) -> str | None:
    """The text with each swappable identity term replaced by another (None if it has none)."""
    if not _SWAP_RE.search(text):
        return None
    return _SWAP_RE.sub(
        lambda m: rng.choice([t for t in SWAP_TERMS if t != m.group(1).lower()]), text
    )


_URL_RE = re.compile(r"https?://\S+|www\.\S+|\bURL\b", re.I)
_MENTION_RE = re.compile(r"@\w+")
_NON_ALNUM = re.compile(r"[^a-z0-9 ]+")
_NON_WORD = re.compile(r"[\W_]+")  # anything but letters (any script) and digits


def dedup_key(text: str) -> str:
    """Near-duplicate key: NFKC, lower case, no URLs/mentions/digits/punctuation, one space.

    Retweets and copy-paste campaigns differ only in these parts; the key puts them in one
    split group so the test set never holds a copy of a training text. A text whose letters
    are mostly outside a-z (Russian, Hindi, Arabic) keys on its letters of every script; one
    with no letters at all ("!!!", "12:30") keys on its exact form, so such texts do not all
    fall into one group. (Mostly-Latin text keeps the a-z key, accents dropped, so the split
    of an English set is the same as it has always been.)
    """
    t = unicodedata.normalize("NFKC", text).lower()
    t = _URL_RE.sub(" ", t)
    t = _MENTION_RE.sub(" ", t)
    t = re.sub(r"\brt\b", " ", t)
    t = re.sub(r"\d+", " ", t)
    letters = [c for c in t if c.isalpha()]
    foreign = sum(not ("a" <= c <= "z") for c in letters)
    rx = _NON_WORD if 2 * foreign > len(letters) else _NON_ALNUM
    key = " ".join(rx.sub(" ", t).split())
    return key or "\x00" + exact_key(text)


def exact_key(text: str) -> str:
    """Exact-copy key for cleaning: NFKC, case-folded, whitespace collapsed to one space."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def grouped_split(
    texts: list[str], fractions: tuple[float, ...], seed: int
) -> tuple[np.ndarray, ...]:
    """`shared.splits.group_split` with near-duplicate groups from `dedup_key`."""
    keys = np.array([dedup_key(t) for t in texts], dtype=object).astype(str)
    return group_split(keys, fractions, seed=seed)


def stratified_split(
    texts: list[str], labels: np.ndarray, fractions: tuple[float, ...], seed: int
) -> tuple[np.ndarray, ...]:
    """A grouped split (near-duplicates on one side) stratified by label.

    Each near-duplicate group gets a stratum: the rarest policy any of its texts violates
    (policies ranked by positives in the whole set), or "clean". Each stratum's groups are
    shuffled with `seed` and cut by `fractions`, and a stratum of at least one group per part
    gives every part one group (taken from the largest part), so a policy at 0.3% (Jigsaw's
    threat) has positives in validation and test. With one policy this is a split per class.
    """
    keys = np.array([dedup_key(t) for t in texts], dtype=object).astype(str)
    uniq, inv = np.unique(keys, return_inverse=True)
    y = np.asarray(labels).reshape(len(texts), -1)
    n_pol = y.shape[1]
    rank = np.empty(n_pol, np.int64)
    rank[np.argsort(y.sum(0), kind="stable")] = np.arange(n_pol)  # 0 = rarest policy
    row_stratum = np.where(y.any(1), np.where(y > 0, rank, n_pol).min(1), n_pol)
    group_stratum = np.full(len(uniq), n_pol, np.int64)
    np.minimum.at(group_stratum, inv.reshape(-1), row_stratum)
    f = np.asarray(fractions, np.float64)
    part_of_group = np.zeros(len(uniq), np.int64)
    rng = np.random.default_rng(seed)
    for s in np.unique(group_stratum):
        groups = rng.permutation(np.flatnonzero(group_stratum == s))
        sizes = np.diff(np.concatenate([[0], np.rint(np.cumsum(f) * len(groups))])).astype(int)
        sizes[-1] = len(groups) - sizes[:-1].sum()
        if len(groups) >= len(f):  # one group per part at least
            for k in np.flatnonzero(sizes == 0):
                sizes[sizes.argmax()] -= 1
                sizes[k] = 1
        part_of_group[groups] = np.repeat(np.arange(len(f)), sizes)
    row_part = part_of_group[inv.reshape(-1)]
    return tuple(np.flatnonzero(row_part == k).astype(np.int64) for k in range(len(f)))


# ----------------------------------------------------------------------------- built-in data

_BENIGN = [
    "just finished a long run by the river and feeling great",
    "anyone know a good recipe for banana bread",
    "the new album is on repeat all week",
    "traffic on the bridge was slow again this morning",
    "our team finally won the match last night",
    "reading a great book about the history of maps",
    "happy birthday to my little sister",
    "the coffee place on main street has new pastries",
    "cannot wait for the weekend hike with friends",
    "the sunset over the lake was beautiful tonight",
    "my garden tomatoes are finally turning red",
    "watching the debate tonight with the family",
    "does anyone have tips for learning to code",
    "new job starts monday and i am nervous",
    "the museum has a free exhibit this month",
    "fixed my bike chain all by myself",
    "the school play was lovely this evening",
    "rainy day perfect for soup and a movie",
    "election day tomorrow remember to vote",
    "the concert was loud but amazing",
]
_BENIGN_TRIGGER = [  # blocklist words in benign use: the rules baseline's false positives
    "this heat is killing me today",
    "the referee was trash tonight but we still won",
    "he called me an idiot so i reported him",
    "my code is so stupid it took hours to find the bug",
    "that exam was a total scam honestly so hard",
    "click the link in my bio for the bake sale photos",
    "free pizza at the office today",
    "i hate mondays and rainy buses",
    "win or lose we love this team",
    "that movie was damn good",
]
_IDENTITY_BENIGN = [
    "as a {id} person i love hiking on weekends",
    "proud to be {id} and proud of my community",
    "my {id} neighbours invited us for dinner",
    "the {id} community center is hosting a food drive",
    "learning about {id} history at the library today",
    "{id} people deserve the same respect as anyone",
    "our {id} students won the science fair",
    "i am {id} and i work as a nurse",
]
_INSULTS = ["idiot", "moron", "loser", "clown", "fool", "scumbag", "jerk", "pathetic"]
_OBFUSCATED = {
    "idiot": "1d10t",
    "moron": "m0r0n",
    "loser": "l0s3r",
    "jerk": "j3rk",
    "clown": "c1own",
    "fool": "f00l",
    "scumbag": "scumb@g",
    "pathetic": "pathet1c",
}
_OFFENSIVE = [
    "you are a {ins} and everyone knows it",
    "shut up you {ins}",
    "what a {ins}, nobody asked for your opinion",
    "only a {ins} would post this garbage",
    "go away {ins} nobody likes you",
    "i will find you and make you regret this",
    "you should be ashamed, you worthless {ins}",
    "delete your account you {ins}",
]
_HATE = [
    "{id} people are vermin and should be driven out",
    "all {id} are a disease on this country",
    "{id} should be banned from this country",
    "send every {id} back where they came from",
    "i can not stand {id} they ruin everything",
    "{id} are subhuman and do not deserve rights",
]
_SPAM = [
    "win a free {prize} now click {url}",
    "cheap {prize} best price guaranteed visit {url}",
    "follow me and i follow back 100 percent",
    "limited offer buy now {url} only today",
    "earn money from home fast click {url}",
    "hot deals on {prize} {url} {url}",
    "get 1000 followers instantly {url}",
]
_SCAM = [
    "send {amount} in gift cards to claim your prize",
    "your account is locked verify your password at {url}",
    "double your bitcoin in 24 hours send to my wallet",
    "i am a prince and need help moving funds send your bank details",
    "you won the lottery pay a small fee of {amount} to receive it",
    "urgent your parcel is held pay {amount} customs fee at {url}",
    "investment guaranteed 300 percent return wire {amount} today",
]
_AD_TITLES_OK = [
    "summer sale on running shoes",
    "fresh coffee delivered weekly",
    "learn spanish in 10 minutes a day",
    "handmade furniture for your home",
    "new phone plans for families",
]
_AD_BODIES_OK = [
    "free shipping on orders over 50 dollars",
    "cancel any time",
    "rated 4.8 by our customers",
    "visit our store downtown",
]
_AD_TITLES_SCAM = [
    "miracle pill melts fat overnight",
    "crypto that always doubles",
    "government grant waiting for you",
    "celebrity secret to instant wealth",
]
_AD_BODIES_SCAM = [
    "send a deposit of {amount} to reserve",
    "enter your card number to claim",
    "guaranteed returns wire {amount} now",
    "pay {amount} processing fee today",
]
_PRIZES = ["iphone", "gift card", "vacation", "laptop", "sneakers", "watches"]
_AMOUNTS = ["200 dollars", "500 dollars", "50 pounds", "1000 usd"]
_FILLER = ("lol really honestly today tonight again just so very like seriously ok well "
           "guys folks yeah wow hmm").split()  # fmt: skip


def _fill(template: str, rng: np.random.Generator, identity: str | None = None) -> str:
    ins = str(rng.choice(_INSULTS))
    if rng.random() < 0.25:  # users dodge word filters
        ins = _OBFUSCATED[ins]
    ident = identity or str(rng.choice(SWAP_TERMS))
    text = template.format(
        ins=ins,
        id=ident,
        prize=rng.choice(_PRIZES),
        amount=rng.choice(_AMOUNTS),
        url=f"http://{rng.choice(['bit.ly', 'tinyurl.com', 'deals.example'])}/{rng.integers(1e5)}",
    )
    words = text.split()
    for _ in range(rng.integers(0, 3)):  # filler words at random places: fewer exact copies
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_FILLER)))
    if rng.random() < 0.3:
        words.insert(0, f"@user{rng.integers(1000)}")
    return " ".join(words)


def generate_posts(cfg, seed: int = 0) -> ModerationData:
    """Posts and ads with policy labels, identity mentions, label noise and a grouped split.

    Mix of posts (shares): benign 50%, benign with a blocklist word 8%, benign about an identity
    10%, offensive 12%, hate 6%, spam 8%, scam 6%. Ads are 75% legitimate and 25% scams; a
    scam ad's image violates the image policy half the time (`image_ids` point into the images
    rendered by `images.render_images`, paired in `cli`). Label noise: every label flips with
    probability `cfg.label_noise`; benign identity posts are labelled offensive with extra
    probability `cfg.identity_noise` (annotator bias).
    """
    rng = np.random.default_rng(seed)
    kinds_mix = ["benign", "trigger", "identity", "offensive", "hate", "spam", "scam"]
    probs = np.array([0.50, 0.08, 0.10, 0.12, 0.06, 0.08, 0.06])
    p_index = {p: j for j, p in enumerate(POLICIES)}
    texts, labels, kinds, reach = [], [], [], []
    kind_of = rng.choice(len(kinds_mix), size=cfg.n_posts, p=probs)
    for k in kind_of:
        kind = kinds_mix[k]
        y = np.zeros(len(POLICIES), np.int8)
        if kind == "benign":
            t = _fill(str(rng.choice(_BENIGN)), rng)
        elif kind == "trigger":
            t = _fill(str(rng.choice(_BENIGN_TRIGGER)), rng)
        elif kind == "identity":
            t = _fill(str(rng.choice(_IDENTITY_BENIGN)), rng)
            if rng.random() < cfg.identity_noise:
                y[p_index["offensive"]] = 1
        elif kind == "offensive":
            t = _fill(str(rng.choice(_OFFENSIVE)), rng)
            y[p_index["offensive"]] = 1
        elif kind == "hate":
            t = _fill(str(rng.choice(_HATE)), rng)
            y[[p_index["offensive"], p_index["hate"]]] = 1
        elif kind == "spam":
            t = _fill(str(rng.choice(_SPAM)), rng)
            y[p_index["spam"]] = 1
        else:
            t = _fill(str(rng.choice(_SCAM)), rng)
            y[p_index["scam"]] = 1
        texts.append(t)
        labels.append(y)
        kinds.append("post")
    image_ids = [-1] * len(texts)
    for i in range(cfg.n_ads):
        scam = rng.random() < 0.25
        titles, bodies = (
            (_AD_TITLES_SCAM, _AD_BODIES_SCAM) if scam else (_AD_TITLES_OK, _AD_BODIES_OK)
        )
        t = _fill(f"{rng.choice(titles)}. {rng.choice(bodies)}", rng)
        y = np.zeros(len(POLICIES), np.int8)
        y[p_index["scam"]] = int(scam)
        texts.append(t)
        labels.append(y)
        kinds.append("ad")
        image_ids.append(i)
    # Exact copies are dropped (a platform deduplicates re-posts before labelling them).
    seen: set[str] = set()
    keep = [i for i, t in enumerate(texts) if not (t in seen or seen.add(t))]
    log = LoadLog("builtin (generated)")
    log.rows_read = len(texts)
    copies = sorted(set(range(len(texts))) - set(keep))
    log.remove("exact duplicates", len(copies), [texts[i] for i in copies])
    texts = [texts[i] for i in keep]
    kinds = [kinds[i] for i in keep]
    image_ids = [image_ids[i] for i in keep]
    labels = np.stack([labels[i] for i in keep])  # (N, P)
    flip = rng.random(labels.shape) < cfg.label_noise
    labels = np.where(flip, 1 - labels, labels).astype(np.int8)
    labels[:, p_index["offensive"]] |= labels[:, p_index["hate"]]  # hate is always offensive
    # Views if the item stays up: log-normal, median 100, a heavy tail (a few posts go viral).
    reach = rng.lognormal(mean=np.log(100), sigma=1.5, size=len(texts))
    data = ModerationData(
        name="builtin",
        texts=texts,
        labels=labels,
        policies=POLICIES,
        kinds=np.array(kinds),
        reach=reach,
        image_ids=np.array(image_ids),
        test_name="builtin",
        log=log,
    )
    tr, va, te = grouped_split(texts, cfg.split_fractions, seed)
    data.split = {"train": tr, "val": va, "test": te}
    return data


# ----------------------------------------------------------------------------- real data


def load_source(source: str, cfg, seed: int) -> ModerationData:
    """'builtin' or FORMAT:PATH[?text=COL&label=COL] (formats.py) -> a cleaned, split
    ModerationData (the gate is `check_training_data`; `prepare_data` runs both)."""
    if source in ("", "builtin"):
        return generate_posts(cfg, seed)
    from .formats import read_source

    data, fixed_test, stratify = read_source(source)
    return clean_and_split(data, cfg, seed, fixed_test, stratify)


def clean_and_split(
    data: ModerationData,
    cfg,
    seed: int,
    fixed_test: np.ndarray | None = None,
    stratify: bool = True,
) -> ModerationData:
    """Remove exact copies, split, and drop a policy without positives in every part.

    Cleaning: rows with the same `exact_key` keep one row, labelled by their majority (a tie
    drops them all), so no text sits in both train and test. With `fixed_test` (an official
    test set, kept whole) only the rest is cleaned, and a training text that is also a test
    text is removed. Split: `stratified_split` when `stratify`, else the plain grouped split
    (OLID and Davidson keep their published protocol; redone stratified when it leaves a part
    without both classes), `cfg.holdout_fraction` for validation and for test; with
    `fixed_test` only train/val. Each near-duplicate group is given its part from the file as
    read, so cleaning removes rows from a part without reshuffling the others (exact copies
    share a group: none can be on the other side).
    """
    log = data.log if data.log is not None else LoadLog(data.name)
    data.log = log
    n = len(data.texts)
    keys = [exact_key(t) for t in data.texts]
    test = np.zeros(n, bool) if fixed_test is None else np.isin(np.arange(n), fixed_test)
    in_test = {keys[i] for i in np.flatnonzero(test)}
    leak = [i for i in np.flatnonzero(~test) if keys[i] in in_test]
    log.remove("also in the official test set", len(leak), [data.texts[i] for i in leak])
    pool = np.setdiff1d(np.flatnonzero(~test), leak)
    kept, y = dedupe([keys[i] for i in pool], data.labels[pool], log, [data.texts[i] for i in pool])
    part = _parts(data.texts, data.labels, test, cfg, seed, stratify)  # (N,) 0 train 1 val 2 test
    data.labels = data.labels.copy()
    data.labels[pool[kept]] = y
    sample = _sample(pool[kept], data.labels, cfg.max_texts, seed, log)
    keep = np.sort(np.concatenate([sample, np.flatnonzero(test)]))
    _take(data, keep)
    part = part[keep]
    names = ("train", "val", "test")
    data.split = {k: np.flatnonzero(part == i) for i, k in enumerate(names)}
    if not stratify and not all(_both_classes(data.labels[i]) for i in data.split.values()):
        log.notes.append(
            "split stratified by label: the grouped split left a part without both classes"
        )
        fixed = part == 2 if fixed_test is not None else np.zeros(len(keep), bool)
        part = _parts(data.texts, data.labels, fixed, cfg, seed, stratify=True)
        data.split = {k: np.flatnonzero(part == i) for i, k in enumerate(names)}
    for name, idx in data.split.items():
        if len(idx) == 0:
            raise DataError(
                f"{data.name}: too few texts for a {name} split ({len(keep)} after cleaning); "
                "a run needs a few dozen labelled texts at least"
            )
    n = len(data.texts)
    data.kinds = np.array(["post"] * n)
    # Real data has no view counts: a log-normal stand-in for the review-queue simulation.
    data.reach = np.random.default_rng(seed + 17).lognormal(np.log(100), 1.5, size=n)
    _drop_policies_without_positives(data)
    return data


# A policy with fewer positives than this keeps every one of them when the data is sampled down.
RARE_POSITIVES = 1_000


def _sample(rows: np.ndarray, labels: np.ndarray, limit: int, seed: int, log) -> np.ndarray:
    """At most about `limit` of `rows` (0: all): every row positive for a policy with fewer than
    RARE_POSITIVES positives, then a seeded sample of the others stratified by label vector
    (each combination keeps its share, at least one row).

    Why a limit: the run's cost is linear in the texts it encodes (validation and test pass
    through MiniLM several times), and the step budget sees at most max_train_steps x
    batch_size training texts anyway; 200,000 keeps Jigsaw's 160K-row training file whole and
    a 1.8M-row file to a run of tens of minutes on 2 cores, not hours.
    """
    if not limit or len(rows) <= limit:
        return rows
    y = labels[rows]
    rare = y[:, y.sum(0) < RARE_POSITIVES].any(1)
    rest = rows[~rare]
    budget = max(0, limit - int(rare.sum()))
    rng = np.random.default_rng(seed + 5)
    _, stratum = np.unique(y[~rare], axis=0, return_inverse=True)
    stratum = stratum.reshape(-1)
    picked = [rows[rare]]
    for s_id in np.unique(stratum):
        members = rest[stratum == s_id]
        n = max(1, round(len(members) * budget / max(len(rest), 1)))
        picked.append(rng.choice(members, size=min(n, len(members)), replace=False))
    out = np.sort(np.concatenate(picked))
    log.remove(f"sampled out (max_texts {limit:,}, stratified by label)", len(rows) - len(out))
    if rare.any():
        log.notes.append(
            f"sampled to {len(out):,} texts: all {int(rare.sum()):,} positives of the policies "
            f"with under {RARE_POSITIVES:,} positives kept, the rest by label share"
        )
    return out


def _parts(texts, labels, test: np.ndarray, cfg, seed: int, stratify: bool) -> np.ndarray:
    """(N,) part of each row, 0 train, 1 val, 2 test; rows in `test` (a fixed test set) are 2
    and the others are split into train/val (0.85/0.15)."""
    pool = np.flatnonzero(~test)
    h = cfg.holdout_fraction
    fr = (1 - 2 * h, h, h) if not test.any() else (0.85, 0.15)
    sub = [texts[i] for i in pool]
    cut = (
        stratified_split(sub, labels[pool], fr, seed) if stratify else grouped_split(sub, fr, seed)
    )
    part = np.full(len(texts), 2, np.int64)
    for k, idx in enumerate(cut):
        part[pool[idx]] = k
    return part


def _take(data: ModerationData, keep: np.ndarray) -> None:
    """Keep rows `keep` of every per-row field."""
    data.texts = [data.texts[i] for i in keep]
    data.labels = data.labels[keep]
    for name in ("agreement", "annotator_counts"):
        if getattr(data, name) is not None:
            setattr(data, name, getattr(data, name)[keep])
    if data.given_identities is not None:
        data.given_identities = {k: m[keep] for k, m in data.given_identities.items()}


def _both_classes(y: np.ndarray) -> bool:
    """Every policy (column of `y`) has a positive and a negative."""
    return len(y) > 0 and bool(np.all(y.max(0) > y.min(0)))


def _drop_policies_without_positives(data: ModerationData) -> None:
    """Drop (with a note) each policy that lacks a positive or a negative in some part; a
    DataError when none is left."""
    keep, why = [], {}
    for j, p in enumerate(data.policies):
        for part, idx in data.split.items():
            pos = int(data.labels[idx, j].sum())
            if pos < MIN_POSITIVES_PER_PART or pos == len(idx):
                why[p] = f"the {part} split has only one class for {p!r} ({pos} of {len(idx)})"
                break
        else:
            keep.append(j)
    if not keep:
        first = next(iter(why.values()))
        raise DataError(
            f"{data.name}: {first}; a run needs violating and clean texts of a policy in "
            "train, validation and test: add labelled examples of the rarer class"
        )
    for p, reason in why.items():
        data.log.notes.append(f"policy {p!r} dropped: {reason}")
    if why:
        data.policies = tuple(data.policies[j] for j in keep)
        data.labels = data.labels[:, keep]


# ----------------------------------------------------------------------------- evaluation sets


@dataclass
class EvalSet:
    """An evaluation-only set: texts with labels of one policy, optional identity/function tags.

    For toxicity pairs, `pair_texts` holds each text's identity-swapped twin (same order).
    """

    name: str
    policy: str
    texts: list[str]
    labels: np.ndarray  # (N,) 0/1
    identity: np.ndarray | None = None  # (N,) str target identity ("" for none)
    functionality: np.ndarray | None = None  # (N,) str, HateCheck's test functionality
    pair_texts: list[str] | None = None
    log: LoadLog | None = None  # rows read and skipped


def load_eval(spec: str) -> EvalSet:
    """hatecheck:FILE, toxicity-pairs:NONFUZZED,FUZZED or csv:FILE[?text=COL&label=COL]."""
    from .formats import read_eval

    return read_eval(spec)


def policy_for(name: str, policies: tuple[str, ...]) -> str:
    """The trained policy that stands for `name`: itself, else one of the same family
    (Jigsaw's identity_hate for hate, toxic for offensive), else the first."""
    if name in policies:
        return name
    family = [p for p in policies if POLICY_FAMILY.get(p) == name]
    return family[0] if family else policies[0]


def severity(policy: str) -> float:
    """The review queue's harm weight of one view of a `policy` violation (SEVERITY)."""
    return SEVERITY.get(policy, SEVERITY.get(POLICY_FAMILY.get(policy, ""), DEFAULT_SEVERITY))


# ----------------------------------------------------------------------------- the data gate


def gate_schema(policies: tuple[str, ...]):
    """Schema of a training batch for shared.gate: the text, its length, one 0/1 column per
    policy (the first is the gate's target), key = `text_id`, a 64-bit digest of the exact text
    (exact copies count as duplicates; the gate compares keys as fixed-width strings, which
    for 50K Jigsaw comments of up to 5,000 characters would take 1 GB as the texts)."""
    from shared.gate import ColumnSpec, Schema

    cols = {
        "text": ColumnSpec("str"),
        "text_id": ColumnSpec("str"),
        "n_chars": ColumnSpec("int", min=1, max=MAX_TEXT_CHARS),  # an empty text is out of range
    }
    for p in policies:
        cols[f"label_{p}"] = ColumnSpec("int", min=0, max=1)
    return Schema(columns=cols, target=f"label_{policies[0]}", key=("text_id",))


def gate_batch(texts: list[str], labels: np.ndarray, policies: tuple[str, ...]) -> dict:
    """The columns the gate checks, from texts and a (N, P) label matrix."""
    batch = {
        "text": np.array(texts, dtype=object),
        "text_id": np.array(
            [hashlib.blake2b(t.encode(), digest_size=8).hexdigest() for t in texts]
        ),
        "n_chars": np.array([len(t.strip()) for t in texts], np.int64),
    }
    for j, p in enumerate(policies):
        batch[f"label_{p}"] = np.asarray(labels)[:, j]
    return batch


def bad_batch_example(data: ModerationData, seed: int) -> tuple[list[str], np.ndarray]:
    """A broken batch for the built-in run to show the gate at work: a scraper bug that
    delivers empty texts, and a labelling bug that marks every row as violating."""
    rng = np.random.default_rng(seed + 99)
    idx = rng.choice(data.split["train"], size=min(400, len(data.split["train"])), replace=False)
    texts = [data.texts[i] if k % 4 else "" for k, i in enumerate(idx)]
    return texts, np.ones((len(idx), len(data.policies)), np.int8)


def train_halves(data: ModerationData, seed: int) -> dict[str, np.ndarray]:
    """The two training batches the gate judges: a seeded random half each (sorted rows)."""
    train = np.random.default_rng(seed).permutation(data.split["train"])
    return {
        "train[a]": np.sort(train[: len(train) // 2]),
        "train[b]": np.sort(train[len(train) // 2 :]),
    }


def check_training_data(data: ModerationData, out: Path, seed: int, inject_bad: bool) -> dict:
    """Run the data gate on every input batch, each against the rest of the data: each half of
    train against the other half plus validation and test, then validation and test against
    the train rows kept.

    A refused half is quarantined under out/quarantine and dropped from `data.split["train"]`
    (the run trains on the rest; counted in `data.log`). The run stops with a one-line
    DataError only when nothing sensible is left: both halves refused, validation or test
    refused, or a policy without a positive in the train rows kept. The duplicate limit is
    relative (shared.gate: the reference's own rate + 0.02), so a property the whole dataset
    shares passes. With `inject_bad` a deliberately broken batch is checked too and must be
    refused.

    Returns {"batches": {name: {"passed", "rows", "failed", "quarantined_to"}},
    "injected": {...}}.
    """
    from shared.gate import GateThresholds

    # A split part is smaller than train by design: volume is not a signal here.
    gate = (gate_schema(data.policies), GateThresholds(volume_ratio=(0.02, 50.0)), out)
    summary: dict = {"batches": {}}
    halves = train_halves(data, seed)
    (a, ia), (b, ib) = halves.items()
    held = np.concatenate([data.split["val"], data.split["test"]])
    for name, idx, other in ((a, ia, ib), (b, ib, ia)):
        summary["batches"][name] = _judge(data, idx, np.concatenate([other, held]), *gate)
    refused = [k for k in halves if not summary["batches"][k]["passed"]]
    _stop_if(data, summary, refused if len(refused) == 2 else [], "the whole training data")
    if refused:
        data.split["train"] = halves[a if refused == [b] else b]
        data.log.remove(f"quarantined by the data gate ({refused[0]})", len(halves[refused[0]]))
        _require_train_positives(data, refused[0])
    for name in ("val", "test"):
        summary["batches"][name] = _judge(data, data.split[name], data.split["train"], *gate)
        _stop_if(data, summary, [] if summary["batches"][name]["passed"] else [name], name)
    if inject_bad:
        res = _judge(data, bad_batch_example(data, seed), data.split["train"], *gate)
        res["failed"] = [f.split(" ")[0] for f in res["failed"]]
        summary["injected"] = res
    return summary


def _judge(data: ModerationData, batch, ref_idx: np.ndarray, schema, th, out: Path) -> dict:
    """One batch (rows of `data`, or (texts, labels)) against a profile of rows `ref_idx`;
    a refused batch is quarantined under out/quarantine."""
    from shared.gate import build_reference, check_batch, quarantine

    texts, labels = batch if isinstance(batch, tuple) else _rows(data, batch)
    b = gate_batch(texts, labels, data.policies)
    ref = gate_batch(*_rows(data, ref_idx), data.policies)
    # Profile the rows in range only: an empty or overlong text fails the range check itself.
    ok = (ref["n_chars"] > 0) & (ref["n_chars"] <= MAX_TEXT_CHARS)
    res = check_batch(b, schema, build_reference({k: v[ok] for k, v in ref.items()}, schema), th)
    failed = [
        f"{c.name}[{c.column}] {c.value!s:.6} > {c.limit!s:.6}" if c.column else c.name
        for c in res.failed
    ]
    path = None if res.passed else quarantine(b, res, out / "quarantine")
    return {"passed": res.passed, "rows": len(texts), "failed": failed,
            "quarantined_to": str(path) if path else None}  # fmt: skip


def _rows(data: ModerationData, idx: np.ndarray) -> tuple[list[str], np.ndarray]:
    return [data.texts[i] for i in idx], data.labels[idx]


def _stop_if(data: ModerationData, summary: dict, names: list[str], what: str) -> None:
    if not names:
        return
    g = summary["batches"][names[0]]
    raise DataError(
        f"the data gate refused the {' and '.join(names)} batch of {data.name} ({g['rows']} "
        f"rows): {'; '.join(g['failed'][:3])}; {what} differs from the rest of the file: "
        f"look at the quarantined rows (report beside {g['quarantined_to']}) and fix the file"
    )


def _require_train_positives(data: ModerationData, refused: str) -> None:
    y = data.labels[data.split["train"]]
    for j, p in enumerate(data.policies):
        if y[:, j].min() == y[:, j].max():
            raise DataError(
                f"{data.name}: after the data gate quarantined {refused}, the training rows "
                f"left have only one class for {p!r}: look at the quarantined rows and fix the file"
            )


# ----------------------------------------------------------------------------- the pipeline


def prepare_data(source: str, cfg, seed: int, out: Path) -> tuple[ModerationData, dict, str]:
    """Read, clean, split and gate `source` exactly as a run does, without training: the one
    pipeline `casebook run` and `casebook check` share. The built-in data also feeds the gate a
    deliberately broken batch, which must be refused.

    Returns (data, gate summary, the report's Markdown "Data" section).
    """
    data = load_source(source, cfg, seed)
    gate = check_training_data(data, Path(out), seed, inject_bad=source in ("", "builtin"))
    return data, gate, data_report(data, gate)


def data_report(data: ModerationData, gate: dict) -> str:
    """The "Data" section: rows read, skipped, removed and quarantined (shared.ingest), the split
    sizes, each policy's positive share per part, and one line per gate verdict."""
    splits = {part: len(idx) for part, idx in data.split.items()}
    balance = {
        p: {part: float(data.labels[idx, j].mean()) for part, idx in data.split.items()}
        for j, p in enumerate(data.policies)
    }
    lines = []
    for name, g in gate["batches"].items():
        verdict = "pass" if g["passed"] else "quarantined, the run trains on the rest"
        failed = f"; failed {', '.join(g['failed'])}" if g["failed"] else ""
        lines.append(f"{name}: {verdict} ({g['rows']:,} texts){failed}")
    if "injected" in gate:
        inj = gate["injected"]
        lines.append(
            "injected broken batch (empty texts, every label 1): "
            + ("pass" if inj["passed"] else "quarantined")
            + (", failed " + ", ".join(inj["failed"]) if inj["failed"] else "")
        )
    source = "identity columns of the file" if data.given_identities else "identity term lists"
    text = data_section(data.log or LoadLog(data.name), splits, balance, lines, unit="texts")
    return text + f"\n\nPolicies: {', '.join(data.policies)}; bias cohorts from the {source}."
