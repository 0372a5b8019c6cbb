"""Data for the keyboard: built-in message text, real corpora, and misspelling sets.

Built-in text: `KeyboardTextGenerator` writes everyday phone messages from its own small grammar
(topics, agreement, time and place phrases) with Zipf-like word choice inside every slot, so the
word-frequency curve has a realistic long tail and some structure spans more than two words (the
topic of a message, subject-verb agreement across an adverb), which an n-gram cannot see.
Simulated users share the grammar but each has private words (friends' names, a hobby's jargon,
slang) and their own habits, which is what personalization has to pick up.

Loaders:
    load_corpus(path)                   a .txt file or a folder of them -> train/val/test sentences
    load_spell_pairs("tsv:FILE")        header `misspelling<TAB>correct`
    load_spell_pairs("birkbeck:FILE")   `$correct` line, then its misspellings, one per line
    load_spell_pairs("norvig:FILE")     `correct: miss1, miss2*5` (Norvig's spell-errors.txt)
Malformed files raise DataError with the file and line.

Keyboard noise: `keyboard_misspell(word, rng)` applies the typing and spelling errors of a phone
keyboard (adjacent keys, transpositions, doubled and dropped letters, sound-alike spellings).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from shared.errors import DataError
from shared.synth import power_law_weights

# A token is a lower-case word, optionally with an apostrophe part ("don't", "it's").
WORD_RE = re.compile(r"[a-z]+(?:'[a-z]+)*")
SENT_SPLIT_RE = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; punctuation and digits are dropped."""
    return WORD_RE.findall(text.lower())


# ---------------------------------------------------------------------------------------------
# Built-in message generator
# ---------------------------------------------------------------------------------------------

# Slot vocabularies. Order matters: earlier words are drawn more often (Zipf within a slot).
_NAMES = (
    "sam alex jo mum dad emma tom lucy ben kate max anna jack mia leo zoe noah ella adam ruby "
    "olly finn grace isla jake amy dan beth rob sophie harry chloe luke megan josh holly ryan "
    "lily sean nina owen tara ivan rosa omar lena"
).split()
_TOPICS = {
    "food": dict(
        thing="dinner,lunch,pizza,coffee,breakfast,tea,pasta,a curry,burgers,sushi,cake,soup,"
        "a salad,tacos,noodles,sandwiches,pancakes,dessert,wine,a beer,chips,brunch,a takeaway,"
        "ice cream,a kebab,dumplings,a roast,biscuits,smoothies,ramen,falafel,a pie",
        place="the pub,the cafe,the kitchen,that new place,the restaurant,the market,home,"
        "the bakery,the food court,the canteen,the diner,the chippy,the deli,the bar",
        verb="grab,have,get,make,cook,order,try,share,bring,pick up,split,heat up,book",
        adj="amazing,good,nice,lovely,delicious,great,tasty,awful,spicy,cheap,cold,huge,bland",
    ),
    "work": dict(
        thing="the meeting,the report,the call,the deadline,the presentation,the email,"
        "the project,the slides,the review,the interview,the budget,the contract,the invoice,"
        "the spreadsheet,the agenda,the proposal,the workshop,the appraisal,the rota,the audit",
        place="the office,work,the meeting room,home,the client site,the station,the lab,"
        "head office,the warehouse,the studio,the conference",
        verb="finish,send,check,review,start,sort out,prepare,move,update,cancel,print,sign,"
        "forward,reschedule,approve",
        adj="busy,late,stressful,fine,long,boring,quick,important,urgent,tricky,useful,awkward",
    ),
    "travel": dict(
        thing="the train,the bus,the flight,a taxi,the tickets,the car,the ferry,the hotel,"
        "the bags,the passports,the tram,the coach,a lift,the boarding passes,the tube,the map",
        place="the airport,the station,the city,the beach,town,the hotel,the coast,london,paris,"
        "the border,the motorway,the platform,the car park,the terminal,the harbour,edinburgh",
        verb="catch,book,miss,take,pack,find,meet,drive,board,change,collect,check in,hire",
        adj="delayed,packed,early,late,cancelled,fine,quick,slow,full,cheap,rammed,freezing",
    ),
    "plans": dict(
        thing="the movie,the party,the game,the gig,the match,a walk,a drink,the show,"
        "the concert,the wedding,the birthday,the quiz,the festival,the barbecue,a run,"
        "the exhibition,the play,karaoke,the picnic,the reunion",
        place="the park,the cinema,the gym,the stadium,the club,town,the beach,my place,"
        "your place,the garden,the theatre,the museum,the pool,the arena,the river",
        verb="see,watch,join,come to,go to,skip,plan,organise,book,leave,sort,host,invite",
        adj="fun,great,brilliant,fine,quiet,busy,epic,chill,awesome,rubbish,mental,packed,sold out",
    ),
    "home": dict(
        thing="the washing,the dishes,the shopping,the kids,the dog,the bins,the keys,"
        "the heating,the rent,the laundry,the plants,the cat,the hoover,the boiler,the fridge,"
        "the post,the parcel,the car,the garden,the gutters",
        place="home,the house,the flat,upstairs,the garden,the shop,the school,the vet,"
        "the garage,nursery,the tip,the chemist,the dentist,the supermarket",
        verb="do,walk,feed,clean,pay,fix,buy,collect,tidy,water,empty,hang out,put away,drop off",
        adj="done,sorted,fine,messy,quiet,cold,warm,clean,broken,tidy,leaking,filthy,noisy",
    ),
}
_TOPICS = {t: {k: v.split(",") for k, v in slots.items()} for t, slots in _TOPICS.items()}
_TIME_PHRASES = [
    "tonight",
    "tomorrow",
    "later",
    "today",
    "now",
    "soon",
    "this evening",
    "this morning",
    "at lunch",
    "on friday",
    "on saturday",
    "on sunday",
    "next week",
    "at the weekend",
    "in a bit",
    "after work",
    "in ten minutes",
    "at five",
    "at six",
    "at seven",
    "on monday",
]
_FEELINGS = "tired happy excited sorry starving bored ready late stuck free sick glad".split()
_ADVERBS = "really just still so totally actually probably definitely".split()
_SUBJECTS = (("i", "am", "was", "have"), ("we", "are", "were", "have"),
             ("you", "are", "were", "have"), ("they", "are", "were", "have"),
             ("he", "is", "was", "has"), ("she", "is", "was", "has"))  # fmt: skip
_OPENERS = "hey hi ok hello morning yo oh so well right".split()
_CLOSER_PHRASES = ["thanks", "see you soon", "love you", "cheers", "lol", "haha", "xx", "bye",
                   "speak later", "no worries", "talk soon", "take care"]  # fmt: skip

# Private words for simulated users: a hobby's jargon, slang, and a group of friends.
_HOBBIES = {
    "climbing": "bouldering crag belay chalk crimps harness topo beta carabiner rope".split(),
    "gaming": "raid respawn loot ranked lobby patch noob grind quest server".split(),
    "knitting": "yarn purl cardigan stitches needles wool pattern skein mittens scarf".split(),
    "cycling": "peloton cadence sportive chainring cleats bidon gravel saddle spokes".split(),
    "baking": "sourdough levain proofing crumb brioche starter ganache meringue dough oven".split(),
    "sailing": "mooring tack jib regatta dinghy keel halyard marina spinnaker bow".split(),
}
_SLANG = "gonna wanna gotta tbh ngl omg idk rn fr innit".split()
_PRIVATE_NAMES = (
    "xavi quentin yusuf priya siobhan ngozi bartek ingrid tomasz keanu delphine rafferty "
    "anwen marisol dmitri oksana ciaran aoife jurgen mireille kofi ulrika thandi wojtek"
).split()


@functools.lru_cache(maxsize=256)
def _zipf_cdf(n: int, s: float) -> np.ndarray:
    return np.cumsum(power_law_weights(n, s))  # P(rank r) proportional to r^-s


def _zipf_choice(rng: np.random.Generator, items: list, s: float = 1.1):
    """Draw one item with P(rank r) proportional to r^-s (Zipf's law inside a slot)."""
    i = int(np.searchsorted(_zipf_cdf(len(items), s), rng.random(), side="right"))
    return items[min(i, len(items) - 1)]


@dataclass
class KeyboardUser:
    """A simulated phone user: private vocabulary and habits. Nothing here leaves the device."""

    user_id: str
    cohort: str  # "mainstream" (base vocabulary) or "niche" (hobby jargon, slang, private names)
    friends: list[str] = field(default_factory=list)
    hobby: str | None = None
    slang: float = 0.0  # probability of a slang word at a message edge
    favourite_topic: str = "food"


class KeyboardTextGenerator:
    """Deterministic generator of everyday phone messages (a few grammar rules, Zipf slots)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    # -- one message ------------------------------------------------------------------------
    def _message(self, rng: np.random.Generator, user: KeyboardUser | None = None) -> str:
        topics = list(_TOPICS)
        if user is not None and rng.random() < 0.5:
            topic = user.favourite_topic
        else:
            topic = topics[rng.integers(len(topics))]
        t = _TOPICS[topic]
        names = _NAMES
        if user is not None and user.friends and rng.random() < 0.6:
            names = user.friends + _NAMES
        subj, be, be_past, have = _SUBJECTS[min(int(rng.zipf(1.6)) - 1, len(_SUBJECTS) - 1)]
        adv = _zipf_choice(rng, _ADVERBS) if rng.random() < 0.35 else None
        parts: list[str] = []
        if rng.random() < 0.45:
            parts.append(_zipf_choice(rng, _OPENERS))
            if rng.random() < 0.5:
                parts.append(_zipf_choice(rng, names))
        if user is not None and user.slang and rng.random() < user.slang:
            parts.append(_zipf_choice(rng, _SLANG))
        time_p = _zipf_choice(rng, _TIME_PHRASES)
        kind = rng.random()
        if kind < 0.28:  # "do you want to grab dinner at the pub tonight"
            parts += ["do", "you", "want", "to", _zipf_choice(rng, t["verb"]),
                      _zipf_choice(rng, t["thing"])]  # fmt: skip
            if rng.random() < 0.6:
                parts += ["at" if rng.random() < 0.5 else "near", _zipf_choice(rng, t["place"])]
            parts.append(time_p)
        elif kind < 0.5:  # "we are really running late for the train"
            parts += [subj, be] + ([adv] if adv else [])
            parts += [_zipf_choice(rng, ["running late for", "on the way to", "stuck at",
                                         "heading to", "waiting at", "almost at"]),  # fmt: skip
                      _zipf_choice(rng, t["place"])]  # fmt: skip
        elif kind < 0.68:  # "she has just finished the report, it was long"
            parts += [subj, have] + ([adv] if adv else [])
            parts += [_zipf_choice(rng, ["got to", "finished", "forgotten", "booked", "seen",
                                         "sorted"]), _zipf_choice(rng, t["thing"])]  # fmt: skip
            if rng.random() < 0.5:
                parts += ["it", "was", _zipf_choice(rng, t["adj"])]
        elif kind < 0.84:  # "i am so tired, can you pick up the kids"
            parts += [subj, be] + ([adv] if adv else []) + [_zipf_choice(rng, _FEELINGS)]
            if rng.random() < 0.6:
                parts += ["can", "you", _zipf_choice(rng, t["verb"]), _zipf_choice(rng, t["thing"])]
        else:  # "what time is the party tomorrow"
            parts += ["what", "time", "is", _zipf_choice(rng, t["thing"]), time_p]
        if user is not None and user.hobby and rng.random() < 0.45:
            jargon = _HOBBIES[user.hobby]
            parts += ["and", "the", _zipf_choice(rng, jargon), "was",
                      _zipf_choice(rng, t["adj"] + ["sick", "mint"])]  # fmt: skip
        if rng.random() < 0.3:
            parts.append(_zipf_choice(rng, _CLOSER_PHRASES))
        if user is not None and user.slang and rng.random() < user.slang:
            parts.append(_zipf_choice(rng, _SLANG))
        return " ".join(parts)

    def messages(self, n: int, offset: int = 0) -> list[str]:
        """`n` base messages (no user-specific words); `offset` selects a disjoint stream."""
        rng = np.random.default_rng([self.seed, 1, offset])
        return [self._message(rng) for _ in range(n)]

    def users(self, n: int) -> list[KeyboardUser]:
        """`n` simulated users; every other one is a 'niche' user with private vocabulary."""
        rng = np.random.default_rng([self.seed, 2])
        users = []
        topics = list(_TOPICS)
        for i in range(n):
            niche = i % 2 == 1
            user = KeyboardUser(
                user_id=f"user{i:03d}",
                cohort="niche" if niche else "mainstream",
                favourite_topic=topics[rng.integers(len(topics))],
            )
            if niche:
                k = int(rng.integers(3, 6))
                user.friends = [str(x) for x in rng.choice(_PRIVATE_NAMES, size=k, replace=False)]
                user.hobby = list(_HOBBIES)[int(rng.integers(len(_HOBBIES)))]
                user.slang = float(rng.uniform(0.2, 0.6))
            else:
                user.friends = [str(x) for x in rng.choice(_NAMES[:20], size=3, replace=False)]
            users.append(user)
        return users

    def user_messages(self, user: KeyboardUser, n: int) -> list[str]:
        """`n` messages typed by `user` (deterministic per user)."""
        rng = np.random.default_rng([self.seed, 3, int(user.user_id[4:])])
        return [self._message(rng, user) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------------


@dataclass
class KeyboardCorpus:
    """Sentences (lists of tokens) split into train / val / test, and where they came from."""

    name: str  # "builtin" or the file/folder stem; used in table names (next_word:<name>)
    train: list[list[str]]
    val: list[list[str]]
    test: list[list[str]]

    def n_tokens(self) -> dict[str, int]:
        return {k: sum(map(len, getattr(self, k))) for k in ("train", "val", "test")}


def _assign_split(key: str, fractions: tuple[float, float, float]) -> int:
    """Deterministic split of a block by the hash of its key: 0 train, 1 val, 2 test."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return 0 if h < fractions[0] else (1 if h < fractions[0] + fractions[1] else 2)


def builtin_corpus(n_messages: int, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> KeyboardCorpus:
    """Generated base messages, split by message (each message is one 'document')."""
    msgs = KeyboardTextGenerator(seed).messages(n_messages)
    parts: list[list[list[str]]] = [[], [], []]
    for i, m in enumerate(msgs):
        toks = tokenize(m)
        if toks:
            parts[_assign_split(f"builtin:{seed}:{i}", fractions)].append(toks)
    return KeyboardCorpus("builtin", *parts)


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read corpus file {path}: {e.strerror}") from e
    if b"\x00" in raw[:4096]:
        raise DataError(f"corpus file {path} looks binary (NUL bytes); give plain text")
    return raw.decode("utf-8", errors="replace")


def load_corpus(
    path: str | Path, fractions=(0.8, 0.1, 0.1), block_lines: int = 20
) -> KeyboardCorpus:
    """A text file or a folder of `.txt` files, split deterministically into train/val/test.

    Each file is cut into blocks of `block_lines` lines; a block goes wholly to one part, chosen
    by a hash of (file name, block index). Blocks keep neighbouring lines together so a test
    sentence never has its own previous line in training, while every part still sees every
    author and style. Within a block, text is split into sentences at . ! ? ; : and blank lines.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"corpus folder {path} has no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"corpus path {path} does not exist")
    parts: list[list[list[str]]] = [[], [], []]
    for f in files:
        lines = _read_text(f).splitlines()
        for b in range(0, len(lines), block_lines):
            block = "\n".join(lines[b : b + block_lines])
            part = _assign_split(f"{f.name}:{b // block_lines}", fractions)
            for sent in SENT_SPLIT_RE.split(block):
                toks = tokenize(sent)
                if toks:
                    parts[part].append(toks)
    corpus = KeyboardCorpus(path.stem or path.name, *parts)
    n = corpus.n_tokens()
    if n["train"] < 50 or n["test"] < 10:
        raise DataError(
            f"corpus {path} is too small after splitting ({n}); give at least a few pages of text"
        )
    return corpus


def subsample_train(corpus: KeyboardCorpus, fraction: float, runs: int = 100) -> KeyboardCorpus:
    """The same corpus with only `fraction` of its training sentences, for data-scaling studies.

    The training sentences are cut into `runs` equal runs in file order and the leading
    `fraction` of each is kept: every book or site stays represented, and neighbouring
    sentences stay neighbours (training windows carry the state across them). Validation and
    test are untouched, so runs at different fractions score the same words.

    Raises:
        DataError: fraction not in (0, 1].
    """
    if not 0 < fraction <= 1:
        raise DataError(f"the training fraction must be in (0, 1], got {fraction}")
    n = len(corpus.train)
    edges = np.linspace(0, n, runs + 1).astype(int)
    keep = [
        s
        for a, b in zip(edges[:-1], edges[1:], strict=True)
        for s in corpus.train[a : a + int(np.ceil((b - a) * fraction))]
    ]
    return replace(corpus, train=keep)


# ---------------------------------------------------------------------------------------------
# Misspelling sets
# ---------------------------------------------------------------------------------------------


def _clean_word(w: str) -> str:
    return w.strip().lower()


def load_spell_pairs(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """Read misspelling pairs from `FORMAT:PATH`; returns (file stem, [(misspelling, correct)]).

    Formats: `tsv` (header misspelling<TAB>correct), `birkbeck` ($correct, then misspellings),
    `norvig` (correct: miss1, miss2*count). Repeated pairs in `norvig` are kept once.
    """
    if ":" not in spec:
        raise DataError(f"misspelling file {spec!r}: write FORMAT:PATH (tsv:, birkbeck:, norvig:)")
    fmt, _, raw_path = spec.partition(":")
    path = Path(raw_path).expanduser()
    if fmt not in ("tsv", "birkbeck", "norvig"):
        raise DataError(
            f"unknown misspelling format {fmt!r} in {spec!r}; use tsv, birkbeck, norvig"
        )
    if not path.is_file():
        raise DataError(f"misspelling file {path} does not exist")
    text = _read_text(path)
    pairs: list[tuple[str, str]] = []
    lines = text.splitlines()
    if fmt == "tsv":
        if not lines or [c.strip().lower() for c in lines[0].split("\t")] != [
            "misspelling",
            "correct",
        ]:
            raise DataError(f"{path}: line 1 must be the header 'misspelling<TAB>correct'")
        for i, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
                raise DataError(f"{path}:{i}: expected 'misspelling<TAB>correct', got {line!r}")
            pairs.append((_clean_word(cols[0]), _clean_word(cols[1])))
    elif fmt == "birkbeck":
        correct = None
        for i, line in enumerate(lines, start=1):
            s = line.strip()
            if not s:
                continue
            if s.startswith("$"):
                correct = _clean_word(s[1:])
                if not correct:
                    raise DataError(f"{path}:{i}: empty '$' line (expected $correct)")
                continue
            if correct is None:
                raise DataError(f"{path}:{i}: misspelling before any '$correct' line")
            if len(s.split()) != 1:
                raise DataError(f"{path}:{i}: expected one misspelling per line, got {line!r}")
            pairs.append((_clean_word(s), correct))
    else:  # norvig
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if ":" not in line:
                raise DataError(f"{path}:{i}: expected 'correct: miss1, miss2', got {line!r}")
            correct, _, rest = line.partition(":")
            for item in rest.split(","):
                miss = item.strip().split("*")[0]
                if miss:
                    pairs.append((_clean_word(miss), _clean_word(correct)))
    if not pairs:
        raise DataError(f"{path}: no misspelling pairs found")
    return path.stem, pairs


# QWERTY rows as on a phone; neighbours are the keys touching a key (same row and the rows
# above and below, offset by half a key).
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_ROW_OFFSET = (0.0, 0.5, 1.0)


def _key_positions() -> dict[str, tuple[float, float]]:
    return {
        c: (x + _ROW_OFFSET[r], float(r)) for r, row in enumerate(_ROWS) for x, c in enumerate(row)
    }


KEY_POS = _key_positions()
KEY_NEIGHBOURS: dict[str, str] = {
    a: "".join(
        b
        for b, (bx, by) in KEY_POS.items()
        if b != a
        and abs(bx - KEY_POS[a][0]) <= 1.01
        and abs(by - KEY_POS[a][1]) <= 1.01
        and not (abs(by - KEY_POS[a][1]) > 0 and abs(bx - KEY_POS[a][0]) > 0.6)
    )
    for a in KEY_POS
}

# Sound-alike and spelling-rule confusions (correct -> misspelt), the kind people make when they
# know the sound but not the spelling. Used in both directions by the generator.
SOUND_ALIKES = (
    ("ph", "f"), ("ie", "ei"), ("ei", "ie"), ("ance", "ence"), ("ence", "ance"), ("ant", "ent"),
    ("ent", "ant"), ("able", "ible"), ("ible", "able"), ("tion", "sion"), ("sion", "tion"),
    ("c", "s"), ("s", "c"), ("c", "k"), ("k", "c"), ("ck", "k"), ("ough", "ow"), ("gh", ""),
    ("wh", "w"), ("y", "ie"), ("er", "or"), ("or", "er"), ("ar", "er"), ("ful", "full"),
    ("ly", "ley"), ("ise", "ize"), ("ize", "ise"), ("x", "cks"), ("qu", "kw"), ("sc", "s"),
    ("ce", "se"), ("se", "ce"), ("ai", "ay"), ("ee", "ea"), ("ea", "ee"), ("oo", "u"),
    ("ous", "us"), ("tch", "ch"), ("dge", "ge"), ("kn", "n"), ("wr", "r"), ("mb", "m"),
)  # fmt: skip
VOWELS = "aeiou"


def keyboard_misspell(word: str, rng: np.random.Generator, max_edits: int = 2) -> str:
    """One plausible misspelling of `word` from a phone keyboard and a hurried speller.

    Error types and their rough shares (typing errors on a touch keyboard, plus the cognitive
    errors of spelling-error corpora): adjacent-key substitution 22%, insertion of a neighbouring
    key 8%, deletion 14%, transposition 10%, doubled or dropped double letter 16%, vowel
    confusion 15%, sound-alike spelling 15%. One edit, sometimes two.
    """
    n_edits = 1 if rng.random() < 0.75 or max_edits < 2 else 2
    w = word
    for _ in range(n_edits):
        for _attempt in range(6):
            new = _one_error(w, rng)
            if new != w and new:
                w = new
                break
    return w


def _one_error(w: str, rng: np.random.Generator) -> str:
    r = rng.random()
    n = len(w)
    i = int(rng.integers(n)) if n else 0
    # Typists rarely get the first letter wrong; move most edits off position 0.
    if i == 0 and n > 2 and rng.random() < 0.8:
        i = int(rng.integers(1, n))
    c = w[i] if n else ""
    if r < 0.22:  # adjacent-key substitution
        nb = KEY_NEIGHBOURS.get(c, "")
        return w[:i] + nb[rng.integers(len(nb))] + w[i + 1 :] if nb else w
    if r < 0.30:  # insertion of a neighbouring key (fat finger)
        nb = KEY_NEIGHBOURS.get(c, "") or c
        return w[: i + 1] + nb[rng.integers(len(nb))] + w[i + 1 :]
    if r < 0.44:  # deletion
        return w[:i] + w[i + 1 :] if n > 2 else w
    if r < 0.54:  # transposition of neighbours
        return w[:i] + w[i + 1] + w[i] + w[i + 2 :] if i + 1 < n else w
    if r < 0.70:  # dropped double letter, or a doubled single one
        doubles = [j for j in range(n - 1) if w[j] == w[j + 1]]
        if doubles and rng.random() < 0.6:
            j = doubles[rng.integers(len(doubles))]
            return w[:j] + w[j + 1 :]
        return w[: i + 1] + c + w[i + 1 :] if c not in VOWELS or rng.random() < 0.3 else w
    if r < 0.85:  # vowel confusion (unstressed vowels: seperate, definately)
        vs = [j for j in range(1, n) if w[j] in VOWELS]
        if not vs:
            return w
        j = vs[rng.integers(len(vs))]
        others = [v for v in VOWELS if v != w[j]]
        return w[:j] + others[rng.integers(len(others))] + w[j + 1 :]
    # sound-alike spelling
    hits = [(a, b) for a, b in SOUND_ALIKES if a in w[1:]]
    if not hits:
        return w
    a, b = hits[rng.integers(len(hits))]
    starts = [m.start() for m in re.finditer(re.escape(a), w) if m.start() > 0]
    if not starts:
        return w
    s = starts[rng.integers(len(starts))]
    return w[:s] + b + w[s + len(a) :]


def generated_spell_pairs(words: list[str], seed: int, per_word: int = 1) -> list[tuple[str, str]]:
    """(misspelling, correct) pairs from `keyboard_misspell`; words shorter than 3 are skipped."""
    rng = np.random.default_rng([seed, 4])
    out = []
    for w in words:
        if len(w) < 3:
            continue
        for _ in range(per_word):
            m = keyboard_misspell(w, rng)
            if m != w:
                out.append((m, w))
    return out
