"""Data: a deterministic generator of posts and ads with policy labels, real-format loaders,
leakage-free splits and the data gate.

    data = generate_posts(cfg, seed=0)              # posts + ads, 4 text policies, identities
    data = load_source("olid:~/data/olid", cfg, seed=0)
    evals = [load_eval("hatecheck:hatecheck.csv")]

Every dataset is a `ModerationData`: texts, a (N, P) 0/1 label matrix over `policies`, the kind
of each item (post or ad), identity masks found in the text, and a train/val/test split in which
near-duplicate texts (same text after `dedup_key`) always land on the same side.

Real formats (README, "Data"):
    olid:DIR            OLID v1.0: olid-training-v1.0.tsv (id, tweet, subtask_a OFF/NOT, ...);
                        with testset-levela.tsv + labels-levela.csv the test set is OffensEval's
    davidson:FILE       Davidson et al. 2017 csv: index,count,hate_speech,offensive_language,
                        neither,class,tweet (class 0 hate, 1 offensive, 2 neither)
    sms-spam:FILE       SMS Spam Collection: "ham|spam<TAB>text" per line
    csv:FILE            text,label[,identity columns of 0/1]; label 0/1 (offensive) or a policy
Evaluation-only (`--eval`): hatecheck:FILE, toxicity-pairs:NONFUZZED,FUZZED, csv:FILE.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import DataError
from shared.splits import group_split

# Text policies. "offensive" covers insults, profanity aimed at someone and harassment (OLID's
# OFF); "hate" is offence aimed at a protected identity (Davidson's hate class); "spam" is
# unsolicited promotion; "scam" asks for money or credentials under a false pretext.
POLICIES = ("offensive", "hate", "spam", "scam")
# How bad one view of a violating item is, for the review queue (relative units).
SEVERITY = {"offensive": 2.0, "hate": 3.0, "spam": 1.0, "scam": 3.0, "image": 3.0}

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

    def __len__(self) -> int:
        return len(self.texts)

    def identities(self, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
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


def dedup_key(text: str) -> str:
    """Near-duplicate key: NFKC, lower case, no URLs/mentions/digits/punctuation, one space.

    Retweets and copy-paste campaigns differ only in these parts; the key puts them in one
    split group so the test set never holds a copy of a training text.
    """
    t = unicodedata.normalize("NFKC", text).lower()
    t = _URL_RE.sub(" ", t)
    t = _MENTION_RE.sub(" ", t)
    t = re.sub(r"\brt\b", " ", t)
    t = _NON_ALNUM.sub(" ", re.sub(r"\d+", " ", t))
    return " ".join(t.split())


def grouped_split(
    texts: list[str], fractions: tuple[float, ...], seed: int
) -> tuple[np.ndarray, ...]:
    """`shared.splits.group_split` with near-duplicate groups from `dedup_key`."""
    keys = np.array([dedup_key(t) for t in texts], dtype=object).astype(str)
    return group_split(keys, fractions, seed=seed)


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
    )
    tr, va, te = grouped_split(texts, cfg.split_fractions, seed)
    data.split = {"train": tr, "val": va, "test": te}
    return data


# ----------------------------------------------------------------------------- real loaders


def _path(p: str, what: str, folder: bool = False) -> Path:
    path = Path(p).expanduser()
    if folder and not path.is_dir():
        raise DataError(f"{what}: {path} is not a folder")
    if not folder and not path.is_file():
        raise DataError(f"{what}: file {path} not found")
    return path


def _read_text(path: Path, what: str, fallback: str | None = None) -> str:
    """The file as UTF-8; with `fallback` (an encoding that decodes any bytes, e.g. latin-1),
    a file that is not UTF-8 is read with it instead of refused."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if fallback is None:
            raise DataError(f"{what}: {path} is not UTF-8 text") from None
        return raw.decode(fallback)


def _rows(path: Path, what: str, delimiter: str = ",") -> list[dict[str, str]]:
    text = _read_text(path, what)
    try:
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
        rows = list(reader)
    except csv.Error as e:
        raise DataError(f"{what}: {path} is not valid csv ({e})") from None
    if not rows:
        raise DataError(f"{what}: {path} has no data rows")
    return rows


def _need(row0: dict, cols: tuple[str, ...], path: Path, what: str) -> None:
    missing = [c for c in cols if c not in row0]
    if missing:
        raise DataError(f"{what}: {path} lacks column(s) {', '.join(missing)}")


def _finish(data: ModerationData, cfg, seed: int, fixed_test: np.ndarray | None) -> ModerationData:
    """Grouped split; with `fixed_test` (an official test set) only train/val are split."""
    n = len(data.texts)
    data.kinds = np.array(["post"] * n)
    rng = np.random.default_rng(seed + 17)
    # Real data has no view counts: a log-normal stand-in for the review-queue simulation.
    data.reach = rng.lognormal(mean=np.log(100), sigma=1.5, size=n)
    if fixed_test is not None:
        pool = np.setdiff1d(np.arange(n), fixed_test)
        tr, va = grouped_split([data.texts[i] for i in pool], (0.85, 0.15), seed)
        data.split = {"train": pool[tr], "val": pool[va], "test": np.sort(fixed_test)}
    else:
        h = cfg.holdout_fraction
        tr, va, te = grouped_split(data.texts, (1 - 2 * h, h, h), seed)
        data.split = {"train": tr, "val": va, "test": te}
    for part, idx in data.split.items():
        if len(idx) == 0:
            raise DataError(f"{data.name}: too few texts for a {part} split ({n} in all)")
    y_train = data.labels[data.split["train"]]
    for j, p in enumerate(data.policies):
        if y_train[:, j].min() == y_train[:, j].max():
            raise DataError(f"{data.name}: the training split has only one class for {p!r}")
    return data


def load_olid(spec: str, cfg, seed: int) -> ModerationData:
    """OLID v1.0 folder; with testset-levela.tsv + labels-levela.csv, test = OffensEval test A."""
    what = "olid"
    root = _path(spec, what, folder=True)
    train_path = root / "olid-training-v1.0.tsv"
    if not train_path.is_file():
        raise DataError(f"olid: {root} has no olid-training-v1.0.tsv")
    rows = _rows(train_path, what, delimiter="\t")
    _need(rows[0], ("tweet", "subtask_a"), train_path, what)
    texts, y = [], []
    for i, r in enumerate(rows):
        lab = (r.get("subtask_a") or "").strip()
        if lab not in ("OFF", "NOT"):
            raise DataError(f"olid: {train_path} row {i + 2}: subtask_a is {lab!r}, not OFF/NOT")
        texts.append(r["tweet"] or "")
        y.append(int(lab == "OFF"))
    test_idx, test_name = None, "olid-holdout"
    test_path, labels_path = root / "testset-levela.tsv", root / "labels-levela.csv"
    if test_path.is_file() and labels_path.is_file():
        trows = _rows(test_path, what, delimiter="\t")
        _need(trows[0], ("id", "tweet"), test_path, what)
        gold = {}
        for k, line in enumerate(_read_text(labels_path, what).splitlines()):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.strip().split(",")]
            if k == 0 and len(parts) == 2 and parts[1] not in ("OFF", "NOT"):
                continue  # a header row ("id,label"): the official file has none, copies may
            if len(parts) != 2 or parts[1] not in ("OFF", "NOT"):
                raise DataError(f"olid: {labels_path}: expected 'id,OFF|NOT', got {line[:60]!r}")
            gold[parts[0]] = int(parts[1] == "OFF")
        start = len(texts)
        for r in trows:
            key = (r.get("id") or "").strip()
            if key not in gold:
                raise DataError(f"olid: test id {key!r} has no label in {labels_path.name}")
            texts.append(r["tweet"] or "")
            y.append(gold[key])
        test_idx, test_name = np.arange(start, len(texts)), "olid-test-a"
    data = ModerationData(
        name="olid",
        texts=texts,
        labels=np.array(y, np.int8)[:, None],
        policies=("offensive",),
        kinds=np.array([]),
        test_name=test_name,
    )
    return _finish(data, cfg, seed, test_idx)


def load_davidson(spec: str, cfg, seed: int) -> ModerationData:
    """Davidson et al. csv: offensive = class 0 or 1, hate = class 0; keeps annotator counts."""
    what = "davidson"
    path = _path(spec, what)
    rows = _rows(path, what)
    cols = ("count", "hate_speech", "offensive_language", "neither", "class", "tweet")
    _need(rows[0], cols, path, what)
    texts, y, counts = [], [], []
    for i, r in enumerate(rows):
        try:
            cls = int(r["class"])
            votes = [int(r["hate_speech"]), int(r["offensive_language"]), int(r["neither"])]
        except (TypeError, ValueError):
            raise DataError(
                f"davidson: {path} row {i + 2}: class and counts must be integers"
            ) from None
        if cls not in (0, 1, 2):
            raise DataError(f"davidson: {path} row {i + 2}: class {cls} is not 0, 1 or 2")
        texts.append(r["tweet"] or "")
        y.append([int(cls in (0, 1)), int(cls == 0)])
        counts.append(votes)
    c = np.array(counts, np.int64)
    data = ModerationData(
        name="davidson",
        texts=texts,
        labels=np.array(y, np.int8),
        policies=("offensive", "hate"),
        kinds=np.array([]),
        test_name="davidson-holdout",
        annotator_counts=c,
        agreement=c.max(1) / np.maximum(c.sum(1), 1),
    )
    return _finish(data, cfg, seed, None)


def load_sms_spam(spec: str, cfg, seed: int) -> ModerationData:
    """SMS Spam Collection: 'ham<TAB>text' / 'spam<TAB>text'; a seeded split stratified by the
    label (so the rare spam class has the same share in every part)."""
    what = "sms-spam"
    path = _path(spec, what)
    texts, y = [], []
    # Copies of the collection circulate in UTF-8 and in Latin-1 (its "£" is one byte,
    # 0xA3, in the latter): read either rather than refuse, so "£" survives as a feature.
    for i, line in enumerate(_read_text(path, what, fallback="latin-1").splitlines()):
        if not line.strip():
            continue
        lab, sep, text = line.partition("\t")
        if not sep or lab.strip() not in ("ham", "spam"):
            raise DataError(f"sms-spam: {path} line {i + 1}: expected 'ham|spam<TAB>text'")
        texts.append(text)
        y.append(int(lab.strip() == "spam"))
    if not texts:
        raise DataError(f"sms-spam: {path} has no messages")
    data = ModerationData(
        name="sms-spam",
        texts=texts,
        labels=np.array(y, np.int8)[:, None],
        policies=("spam",),
        kinds=np.array([]),
        test_name="sms-spam",
    )
    data = _finish(data, cfg, seed, None)
    # Stratify: the grouped split per class, so both classes are cut by the same fractions.
    h = cfg.holdout_fraction
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    ya = data.labels[:, 0]
    for cls in (0, 1):
        pool = np.flatnonzero(ya == cls)
        if len(pool) == 0:
            continue
        tr, va, te = grouped_split([texts[i] for i in pool], (1 - 2 * h, h, h), seed)
        for name, idx in zip(("train", "val", "test"), (tr, va, te), strict=True):
            parts[name].append(pool[idx])
    data.split = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    return data


def _csv_labels(rows: list[dict[str, str]], path: Path, what: str) -> tuple[np.ndarray, tuple]:
    """label column: 0/1 (-> offensive) or a policy name / 'none' per row (multi-class)."""
    raw = [(r.get("label") or "").strip().lower() for r in rows]
    if all(v in ("0", "1") for v in raw):
        return np.array([[int(v)] for v in raw], np.int8), ("offensive",)
    allowed = set(POLICIES) | {"none", "ok", "0"}
    bad = sorted({v for v in raw if v not in allowed})
    if bad:
        raise DataError(
            f"{what}: {path}: label must be 0/1 or one of {', '.join(POLICIES)}, none; "
            f"got {bad[0]!r}"
        )
    pols = tuple(p for p in POLICIES if p in raw)
    if not pols:
        raise DataError(f"{what}: {path}: no violating label in the file")
    y = np.array([[int(v == p) for p in pols] for v in raw], np.int8)
    return y, pols


def load_csv(spec: str, cfg, seed: int) -> ModerationData:
    """csv with text,label (see `_csv_labels`); other 0/1 columns are ignored here (the identity
    cohorts come from the text; see `load_eval` for identity columns)."""
    what = "csv"
    path = _path(spec, what)
    rows = _rows(path, what)
    _need(rows[0], ("text", "label"), path, what)
    y, pols = _csv_labels(rows, path, what)
    data = ModerationData(
        name=path.stem,
        texts=[r["text"] or "" for r in rows],
        labels=y,
        policies=pols,
        kinds=np.array([]),
        test_name=f"{path.stem}-holdout",
    )
    return _finish(data, cfg, seed, None)


LOADERS = {"olid": load_olid, "davidson": load_davidson, "sms-spam": load_sms_spam, "csv": load_csv}


def load_source(source: str, cfg, seed: int) -> ModerationData:
    """'builtin' or FORMAT:PATH (see the module doc) -> ModerationData with its split."""
    if source in ("", "builtin"):
        return generate_posts(cfg, seed)
    fmt, sep, rest = source.partition(":")
    if not sep or fmt not in LOADERS or not rest:
        raise DataError(
            f"--data {source!r}: use builtin or FORMAT:PATH with FORMAT one of {', '.join(LOADERS)}"
        )
    return LOADERS[fmt](rest, cfg, seed)


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


def load_hatecheck(spec: str) -> EvalSet:
    what = "hatecheck"
    path = _path(spec, what)
    rows = _rows(path, what)
    _need(rows[0], ("test_case", "label_gold"), path, what)
    y = []
    for i, r in enumerate(rows):
        lab = (r["label_gold"] or "").strip()
        if lab not in ("hateful", "non-hateful"):
            raise DataError(
                f"hatecheck: {path} row {i + 2}: label_gold {lab!r} is not hateful/non-hateful"
            )
        y.append(int(lab == "hateful"))
    return EvalSet(
        name="hatecheck",
        policy="hate",
        texts=[r["test_case"] or "" for r in rows],
        labels=np.array(y, np.int8),
        identity=np.array([(r.get("target_ident") or "").strip() for r in rows]),
        functionality=np.array([(r.get("functionality") or "").strip() for r in rows]),
    )


def load_toxicity_pairs(spec: str) -> EvalSet:
    """Dixon et al. 2018 sets: NONFUZZED.csv,FUZZED.csv with rev_id,comment,toxic; rows are
    paired by rev_id (the fuzzed text has its identity terms swapped)."""
    what = "toxicity-pairs"
    parts = spec.split(",")
    if len(parts) != 2:
        raise DataError("toxicity-pairs: use toxicity-pairs:NONFUZZED.csv,FUZZED.csv")
    tables = []
    for p in parts:
        path = _path(p, what)
        rows = _rows(path, what)
        _need(rows[0], ("rev_id", "comment", "toxic"), path, what)
        tables.append((path, rows))
    fuzzed = {r["rev_id"]: r["comment"] or "" for r in tables[1][1]}
    texts, twins, y = [], [], []
    for i, r in enumerate(tables[0][1]):
        if r["rev_id"] not in fuzzed:
            continue
        try:
            tox = int(float(r["toxic"]) >= 0.5)  # the released files hold True/False or 0/1
        except ValueError:
            tox = {"true": 1, "false": 0}.get((r["toxic"] or "").strip().lower(), -1)
        if tox < 0:
            raise DataError(f"toxicity-pairs: {tables[0][0]} row {i + 2}: toxic {r['toxic']!r}")
        texts.append(r["comment"] or "")
        twins.append(fuzzed[r["rev_id"]])
        y.append(tox)
    if not texts:
        raise DataError("toxicity-pairs: no rev_id is in both files")
    return EvalSet("toxicity-pairs", "offensive", texts, np.array(y, np.int8), pair_texts=twins)


def load_eval_csv(spec: str) -> EvalSet:
    """csv text,label (0/1, policy 'offensive', or one policy name per row vs 'none')."""
    what = "csv"
    path = _path(spec, what)
    rows = _rows(path, what)
    _need(rows[0], ("text", "label"), path, what)
    y, pols = _csv_labels(rows, path, what)
    if len(pols) != 1:
        raise DataError(f"csv: {path}: an evaluation csv must hold one policy, got {pols}")
    ident_cols = [c for c in rows[0] if c not in ("text", "label")]
    ident = None
    if ident_cols:
        ident = np.array(
            [
                ",".join(c for c in ident_cols if (r.get(c) or "").strip() in ("1", "true"))
                for r in rows
            ]
        )
    return EvalSet(path.stem, pols[0], [r["text"] or "" for r in rows], y[:, 0], identity=ident)


EVAL_LOADERS = {
    "hatecheck": load_hatecheck,
    "toxicity-pairs": load_toxicity_pairs,
    "csv": load_eval_csv,
}


def load_eval(spec: str) -> EvalSet:
    fmt, sep, rest = spec.partition(":")
    if not sep or fmt not in EVAL_LOADERS or not rest:
        raise DataError(
            f"--eval {spec!r}: use FORMAT:PATH with FORMAT one of {', '.join(EVAL_LOADERS)}"
        )
    return EVAL_LOADERS[fmt](rest)


# ----------------------------------------------------------------------------- the data gate


def gate_schema(policies: tuple[str, ...]):
    """Schema of a training batch for shared.gate: the text, its length, one 0/1 column per
    policy (the first is the gate's target), key = the text (exact copies count as duplicates)."""
    from shared.gate import ColumnSpec, Schema

    cols = {
        "text": ColumnSpec("str"),
        "n_chars": ColumnSpec("int", min=1, max=20_000),  # an empty text is out of range
    }
    for p in policies:
        cols[f"label_{p}"] = ColumnSpec("int", min=0, max=1)
    return Schema(columns=cols, target=f"label_{policies[0]}", key=("text",))


def gate_batch(texts: list[str], labels: np.ndarray, policies: tuple[str, ...]) -> dict:
    """The columns the gate checks, from texts and a (N, P) label matrix."""
    batch = {
        "text": np.array(texts, dtype=object),
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


def check_training_data(data: ModerationData, out: Path, seed: int, inject_bad: bool) -> dict:
    """Run the data gate on every input batch: the two halves of train (each against a
    reference profiled on the other), validation and test (against all of train). A batch that
    fails is quarantined under out/quarantine and the run stops with a one-line DataError.
    With `inject_bad` a deliberately broken batch is checked too and must be refused.

    Returns {"batches": {name: {"passed", "rows", "failed": [...]}}, "injected": {...}}.
    """
    from shared.gate import GateThresholds, build_reference, check_batch, quarantine

    schema = gate_schema(data.policies)
    # A split part is smaller than train by design: volume is not a signal here.
    th = GateThresholds(volume_ratio=(0.02, 50.0))
    rng = np.random.default_rng(seed)
    train = rng.permutation(data.split["train"])
    halves = {
        "train[a]": np.sort(train[: len(train) // 2]),
        "train[b]": np.sort(train[len(train) // 2 :]),
    }

    def batch(idx):
        return gate_batch([data.texts[i] for i in idx], data.labels[idx], data.policies)

    def reference(idx):
        b = batch(idx)
        ok = b["n_chars"] > 0  # profile the non-empty rows; empty ones fail the range check
        return build_reference({k: v[ok] for k, v in b.items()}, schema)

    plan = [
        ("train[a]", halves["train[a]"], halves["train[b]"]),
        ("train[b]", halves["train[b]"], halves["train[a]"]),
        ("val", data.split["val"], data.split["train"]),
        ("test", data.split["test"], data.split["train"]),
    ]
    summary: dict = {"batches": {}}
    for name, idx, ref_idx in plan:
        b = batch(idx)
        res = check_batch(b, schema, reference(ref_idx), th)
        failed = [
            f"{c.name}[{c.column}] {c.value!s:.6} > {c.limit!s:.6}" if c.column else c.name
            for c in res.failed
        ]
        summary["batches"][name] = {"passed": res.passed, "rows": len(idx), "failed": failed}
        if not res.passed:
            path = quarantine(b, res, out / "quarantine")
            raise DataError(
                f"the data gate refused the {name} batch of {data.name} ({len(idx)} rows): "
                f"{'; '.join(failed[:3])} (report beside {path})"
            )
    if inject_bad:
        texts, labels = bad_batch_example(data, seed)
        b = gate_batch(texts, labels, data.policies)
        res = check_batch(b, schema, reference(data.split["train"]), th)
        path = None if res.passed else quarantine(b, res, out / "quarantine")
        summary["injected"] = {
            "passed": res.passed,
            "rows": len(texts),
            "failed": [f"{c.name}[{c.column}]" if c.column else c.name for c in res.failed],
            "quarantined_to": str(path) if path else None,
        }
    return summary
