"""Data for the keyboard: built-in message text, real corpora, and misspelling sets.

Built-in text: `KeyboardTextGenerator` writes everyday phone messages from its own small grammar
(topics, agreement, time and place phrases) with Zipf-like word choice inside every slot, so the
word-frequency curve has a realistic long tail and some structure spans more than two words (the
topic of a message, subject-verb agreement across an adverb), which an n-gram cannot see.
Simulated users share the grammar but each has private words (friends' names, a hobby's jargon,
slang) and their own habits, which is what personalization has to pick up.

Loaders (README section 4 has the formats table):
    load_data(spec, ...)                the pipeline `run` and `check` share: load, clean, split,
                                        the misspelling sets, and the report's data section
    load_corpus(path)                   text:PATH, prose: a file or a folder of text files, any
                                        extension and encoding -> train/val/test sentences
    load_messages(path, column)         messages:FILE, one message a line or a csv column
    load_spell_pairs("tsv:FILE")        `misspelling<TAB>correct`, a header optional
    load_spell_pairs("birkbeck:FILE")   `$correct` line, then its misspellings, one per line
    load_spell_pairs("norvig:FILE")     `correct: miss1, miss2*5` (Norvig's spell-errors.txt)
A bad line or file is skipped and counted in the report; only nothing usable is a DataError.

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
from shared.ingest import (
    LoadLog,
    data_section,
    dedupe,
    parse_spec,
    read_table,
    read_text,
    split_lines,
)
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

TEXT_FORMATS = ("text", "corpus", "messages")
# Characters. A longer line is a pasted document or a file without line ends: prose is wrapped
# there (at a space), a message is cut there. Both are counted in the report.
LINE_CAP = 10_000
# Files that document a folder rather than belong to it (NLTK's corpora ship a README).
DOC_STEMS = frozenset({"readme", "license", "licence", "copying", "changelog"})
# The message column of a messages csv, looked up by name when `?text=COLUMN` does not name it.
MESSAGE_COLUMNS = ("text", "message", "body", "content", "msg")
_NAMES_SHOWN = 10  # file names listed per report note
_AZ = re.compile(r"[a-z]+", re.IGNORECASE)
_LETTERS = re.compile(r"[^\W\d_]+")


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


def builtin_corpus(
    n_messages: int, seed: int = 0, fractions=(0.8, 0.1, 0.1), log: LoadLog | None = None
) -> KeyboardCorpus:
    """Generated base messages, split by message (each message is one 'document').

    Not deduplicated: about 9% of 12,000 generated messages repeat an earlier one, as short
    phone messages do, and every figure the README reports is measured on this stream; `log`
    gets the count.
    """
    msgs = KeyboardTextGenerator(seed).messages(n_messages)
    parts: list[list[list[str]]] = [[], [], []]
    seen: set[str] = set()
    for i, m in enumerate(msgs):
        toks = tokenize(m)
        if toks:
            parts[_assign_split(f"builtin:{seed}:{i}", fractions)].append(toks)
        elif log is not None:
            log.skip(i + 1, "no English words")
        seen.add(" ".join(toks))
    if log is not None:
        log.rows_read += len(msgs)
        repeats = len(msgs) - len(seen)
        share = repeats / max(len(msgs), 1)
        log.notes.append(
            f"generated messages are not deduplicated: {repeats:,} ({share:.1%}) repeat"
            " an earlier one, as short phone messages do (`messages:FILE` deduplicates)"
        )
    return KeyboardCorpus("builtin", *parts)


def load_corpus(
    path: str | Path,
    fractions=(0.8, 0.1, 0.1),
    block_lines: int = 20,
    log: LoadLog | None = None,
) -> KeyboardCorpus:
    """Prose: a text file, or every file under a folder, split deterministically.

    Each file is cut into blocks of `block_lines` lines; a block goes wholly to one part, chosen
    by a hash of (file path inside the folder, block index). Blocks keep neighbouring lines
    together so a test sentence never has its own previous line in training, while every part
    still sees every author and style. Within a block, text is split into sentences at
    . ! ? ; : and blank lines.
    Whole files are deduplicated (`_read_files`), sentences are not: "Yes." recurs in any novel,
    and removing the repeats would change the language model's statistics.
    """
    path = Path(path).expanduser()
    log = log if log is not None else LoadLog(f"text:{path}")
    files = _read_files(_text_files(path, log), path, log)
    parts: list[list[list[str]]] = [[], [], []]
    wrapped_at: list[str] = []
    for name, lines in files:
        cut = []
        for i, line in enumerate(lines, start=1):
            if len(line) > LINE_CAP:
                wrapped_at.append(f"{name}:{i}")
            cut += _wrap(line) if len(line) > LINE_CAP else [line]
        for b in range(0, len(cut), block_lines):
            block = "\n".join(cut[b : b + block_lines])
            part = _assign_split(f"{name}:{b // block_lines}", fractions)
            for sent in SENT_SPLIT_RE.split(block):
                toks = tokenize(sent)
                if toks:
                    parts[part].append(toks)
    if wrapped_at:
        log.notes.append(
            f"{len(wrapped_at):,} lines over {LINE_CAP:,} characters wrapped at a space "
            f"(at {_names(wrapped_at)})"
        )
    return _checked(KeyboardCorpus(path.stem or path.name, *parts), log)


def _text_files(path: Path, log: LoadLog) -> list[Path]:
    """`path` itself, or every file under the folder (recursively, sorted) except hidden ones
    (.DS_Store, .git/) and the folder's own documentation (README, LICENSE, ...), any extension."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{log.source}: {path} does not exist; give a text file or a folder")
    files, docs = [], []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        (docs if p.stem.lower() in DOC_STEMS else files).append(p)
    if docs:
        log.notes.append(f"not read, the folder's documentation: {_names(docs, path)}")
    if not files:
        raise DataError(
            f"{log.source}: folder {path} has no text files; put plain-text files in it"
        )
    return files


def _read_files(files: list[Path], root: Path, log: LoadLog) -> list[tuple[str, list[str]]]:
    """(name, lines) of every readable file, in order; the rows of `log` are lines.

    Skipped, one row each (the file's number in the folder as its line, its name in a note): a
    binary file (NUL bytes: an image, a zip, a .docx) or an empty one. Removed with all its
    lines: a file whose words repeat an earlier file's exactly (a copy, or the same text in
    another encoding). A file with no a-z word is read and noted; it adds nothing.
    """
    out, first, bad, odd, encodings = [], {}, [], [], {}
    for number, f in enumerate(files, start=1):
        name = f.name if f == root else f.relative_to(root).as_posix()
        text, enc = _read_one(f, number, log)
        if text is None:
            bad.append(f"#{number} {name} ({enc})")
            continue
        lines = split_lines(text)
        log.rows_read += len(lines)
        encodings.setdefault(enc, []).append(name)
        words = " ".join(tokenize(text))
        az = sum(map(len, _AZ.findall(text)))
        letters = sum(map(len, _LETTERS.findall(text)))
        if letters and az / letters < 0.7:
            odd.append(f"{name} ({1 - az / letters:.0%})")
        key = hashlib.sha256(words.encode()).hexdigest() if words else f"no words {number}"
        if key in first:
            log.remove("identical files (lines)", len(lines), [f"{name} = {first[key]}"])
            continue
        first[key] = name
        out.append((name, lines))
    if not out:
        raise DataError(f"{log.source}: no text to read ({_names(bad)}); give plain-text files")
    log.encoding = max(encodings, key=lambda e: len(encodings[e]))
    log.notes += [f"read as {e}: {_names(n)}" for e, n in encodings.items() if e != log.encoding]
    if bad:
        log.notes.append(f"skipped files, by number in the folder: {_names(bad)}")
    if odd:
        log.notes.append(
            f"letters outside a-z in {_names(odd)}: the tokenizer keeps a-z words only, so "
            "accented words break up and other scripts give no words"
        )
    return out


def _read_one(path: Path, number: int, log: LoadLog) -> tuple[str | None, str]:
    """(text, encoding), or (None, why) for a file skipped into `log` as one row."""
    one = LoadLog(log.source)
    try:
        text = read_text(path, one, log.source)
    except DataError as e:
        why = "binary file" if "binary" in str(e) else "unreadable file"
    else:
        if text.strip():
            return text, one.encoding
        why = "empty file"
    log.rows_read += 1
    log.skip(number, why)
    return None, why


def _wrap(line: str, cap: int = LINE_CAP) -> list[str]:
    """`line` in pieces of at most `cap` characters, cut at the last space before each cap."""
    out = []
    while len(line) > cap:
        cut = line.rfind(" ", 0, cap)
        cut = cut if cut > 0 else cap
        out.append(line[:cut])
        line = line[cut:].lstrip()
    return out + [line]


def _names(items: list, root: Path | None = None) -> str:
    shown = [str(p.relative_to(root)) if root else str(p) for p in items[:_NAMES_SHOWN]]
    more = len(items) - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def load_messages(
    path: str | Path,
    fractions=(0.8, 0.1, 0.1),
    column: str | None = None,
    log: LoadLog | None = None,
) -> KeyboardCorpus:
    """Chat logs: one message a line, or a csv/tsv column of messages (`column`, else a header
    named like MESSAGE_COLUMNS; quoted newlines stay inside a message).

    Each message is one document, as in the built-in corpus: exact duplicates after tokenizing
    are removed before the split (`shared.ingest.dedupe`), so no message sits in both train and
    test, and a message goes wholly to one part by the hash of its words. Inside a message,
    sentences end at . ! ? ; : as in prose. Blank lines and lines with no a-z word are skipped
    with their line numbers; a message over LINE_CAP characters is cut there.
    """
    path = Path(path).expanduser()
    log = log if log is not None else LoadLog(f"messages:{path}")
    if not path.is_file():
        raise DataError(f"{log.source}: file {path} not found; messages: takes one file")
    msgs, keys, cut = [], [], []
    for line, m in _message_rows(path, column, log):
        if len(m) > LINE_CAP:
            cut.append(line)
            m = m[:LINE_CAP]
        toks = tokenize(m)
        if not toks:
            log.skip(line, "no English words" if m.strip() else "blank message")
            continue
        msgs.append(m)
        keys.append(" ".join(toks))
    if cut:
        log.notes.append(
            f"{len(cut):,} messages over {LINE_CAP:,} characters cut (lines {_names(cut)})"
        )
    kept, _ = dedupe(keys, None, log, shown=msgs)
    parts: list[list[list[str]]] = [[], [], []]
    for i in kept:
        part = _assign_split(f"{path.name}:{keys[i]}", fractions)
        parts[part] += [t for t in map(tokenize, SENT_SPLIT_RE.split(msgs[i])) if t]
    return _checked(KeyboardCorpus(path.stem, *parts), log)


def _message_rows(path: Path, column: str | None, log: LoadLog) -> list[tuple[int, str]]:
    """(file line, message): a table's column when `column` is named or the file is .csv/.tsv,
    else every line of the file."""
    if column or path.suffix.lower() in (".csv", ".tsv"):
        names = (column,) if column else MESSAGE_COLUMNS
        table = read_table(path, log, known=names)
        try:
            c = table.column(names, "message text")
        except DataError as e:
            raise DataError(f"{e}; name it: messages:FILE?text=COLUMN") from None
        return [(line, row[c] if c < len(row) else "") for line, row in table]
    lines = split_lines(read_text(path, log, log.source))
    log.rows_read += len(lines)
    return list(enumerate(lines, start=1))


def _checked(corpus: KeyboardCorpus, log: LoadLog) -> KeyboardCorpus:
    """The corpus, or a DataError when there is nothing (or too little) to train and test on."""
    n = corpus.n_tokens()
    if not sum(n.values()):
        raise DataError(
            f"{log.source}: 0 English words in {log.rows_read:,} lines read; the keyboard's "
            "tokenizer keeps a-z words: give English text"
        )
    if n["train"] < 50 or n["val"] < 10 or n["test"] < 10:
        raise DataError(
            f"{log.source}: too small after splitting ({n} words); give at least a few pages "
            "of text"
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
# The data a run trains on: one function for `run` and `check`
# ---------------------------------------------------------------------------------------------


@dataclass
class KeyboardData:
    """What `load_data` hands a run: the corpus, the misspelling sets, and the report's data
    section (also what `casebook check mobile-keyboard` prints)."""

    corpus: KeyboardCorpus
    name: str  # the data as the report's header names it
    spell_tests: list[tuple[str, list[tuple[str, str]]]]  # (set name, pairs) per --spell-test
    spell_train: list[tuple[str, str]]  # extra real pairs for the error model
    section: str


def load_data(
    spec: str = "builtin",
    *,
    n_messages: int,
    seed: int = 0,
    fractions=(0.8, 0.1, 0.1),
    spell_test: list[str] = (),
    spell_train: list[str] = (),
    train_fraction: float = 1.0,
) -> KeyboardData:
    """Load, clean and split `--data` (builtin, text:PATH, corpus:PATH, messages:FILE[?text=C])
    and the misspelling files, as a run would; a DataError when a run could not go ahead."""
    specs = (*spell_test, *spell_train)  # read first: a bad one fails before any corpus work
    spell_logs = [LoadLog(s) for s in specs]
    loaded = [load_spell_pairs(s, g) for s, g in zip(specs, spell_logs, strict=True)]
    tests, train = loaded[: len(spell_test)], [p for _, ps in loaded[len(spell_test) :] for p in ps]
    if spec == "builtin":
        log = LoadLog(f"builtin ({n_messages:,} generated messages, seed {seed})")
        corpus, name = builtin_corpus(n_messages, seed, fractions, log), "builtin"
    else:
        s = parse_spec(spec, TEXT_FORMATS, allowed=("text",))
        log = LoadLog(s.raw)
        if s.fmt == "messages":
            corpus, name = load_messages(s.path, fractions, s.option("text"), log), s.raw
        elif s.options:
            raise DataError(
                f"--data {spec!r}: {s.fmt}: takes no column; ?text=COLUMN names the message "
                "column of messages:FILE"
            )
        else:
            corpus, name = load_corpus(s.path, fractions, log=log), str(s.path)
    if train_fraction != 1.0:
        corpus = subsample_train(corpus, train_fraction)
        name += f" (train fraction {train_fraction:g})"
        log.notes.append(f"training on {train_fraction:g} of the training split (--train-fraction)")
    return KeyboardData(corpus, name, tests, train, _data_section(corpus, log, spell_logs))


def _data_section(corpus: KeyboardCorpus, log: LoadLog, spell_logs: list[LoadLog]) -> str:
    """shared.ingest's data section in sentences, then tokens per part and each misspelling set."""
    splits = {k: len(getattr(corpus, k)) for k in ("train", "val", "test")}
    out = data_section(log, splits, unit="sentences")
    out += "\nTokens: " + ", ".join(f"{k} {v:,}" for k, v in corpus.n_tokens().items())
    for g in spell_logs:
        out += "\n\nMisspelling set:\n\n" + g.markdown()
    return out


# ---------------------------------------------------------------------------------------------
# Misspelling sets
# ---------------------------------------------------------------------------------------------

SPELL_FORMATS = ("tsv", "birkbeck", "norvig")
# Header names of a tsv's two columns (any order, extra columns ignored).
MISSPELLING_NAMES = ("misspelling", "misspelled", "misspelt", "typo", "wrong", "error", "incorrect")
CORRECT_NAMES = ("correct", "correction", "right", "target", "intended", "expected")


def _clean_word(w: str) -> str:
    return w.strip().lower()


def load_spell_pairs(spec: str, log: LoadLog | None = None) -> tuple[str, list[tuple[str, str]]]:
    """Read misspelling pairs from `FORMAT:PATH`; returns (file stem, [(misspelling, correct)]).

    Formats: `tsv` (misspelling<TAB>correct, a header optional), `birkbeck` ($correct, then its
    misspellings), `norvig` (correct: miss1, miss2*count; the count is ignored). Any encoding
    `shared.ingest.read_text` reads, CRLF or CR. A bad line is skipped into `log` with its line
    number; only a file with no pair at all is a DataError.
    """
    fmt, sep, raw_path = spec.partition(":")
    if not sep:
        raise DataError(f"misspelling file {spec!r}: write FORMAT:PATH (tsv:, birkbeck:, norvig:)")
    if fmt not in SPELL_FORMATS:
        raise DataError(
            f"unknown misspelling format {fmt!r} in {spec!r}; use tsv, birkbeck, norvig"
        )
    path = Path(raw_path).expanduser()
    if not path.is_file():
        raise DataError(f"misspelling file {path} does not exist")
    log = log if log is not None else LoadLog(spec)
    if fmt == "tsv":
        pairs = _tsv_pairs(path, log)
    else:
        lines = split_lines(read_text(path, log, spec))
        log.rows_read += len(lines)
        pairs = (_birkbeck_pairs if fmt == "birkbeck" else _norvig_pairs)(lines, log)
    if not pairs:
        raise DataError(
            f"{path}: no misspelling pairs found ({log.rows_read:,} lines read, "
            f"{log.total_skipped:,} skipped); see the {fmt} layout in the keyboard's README"
        )
    log.notes.append(f"{len(pairs):,} (misspelling, correct) pairs")
    return path.stem, pairs


def _tsv_pairs(path: Path, log: LoadLog) -> list[tuple[str, str]]:
    """Two columns: by header name when line 1 names both, else misspelling then correct."""
    table = read_table(path, log, header=False, min_fields=2)
    rows = list(table)
    cells = [c.strip().lower() for c in rows[0][1]] if rows else []
    miss = next((cells.index(n) for n in MISSPELLING_NAMES if n in cells), None)
    right = next((cells.index(n) for n in CORRECT_NAMES if n in cells), None)
    if miss is not None and right is not None:
        rows, log.rows_read = rows[1:], log.rows_read - 1  # the header is no data row
    else:
        miss, right = 0, 1
    pairs = []
    for line, row in rows:
        if max(miss, right) >= len(row) or not row[miss].strip() or not row[right].strip():
            log.skip(line, "empty misspelling or correct word")
            continue
        pairs.append((_clean_word(row[miss]), _clean_word(row[right])))
    return pairs


def _birkbeck_pairs(lines: list[str], log: LoadLog) -> list[tuple[str, str]]:
    """`$correct`, then its misspellings one a line (a trailing count, `acess 3`, is dropped)."""
    pairs, correct = [], None
    for i, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            log.skip(i, "blank line")
        elif words[0].startswith("$"):
            correct = _clean_word(line.strip()[1:]) or None
            if correct is None:
                log.skip(i, "'$' with no correct word")
        elif correct is None:
            log.skip(i, "misspelling before any $correct line")
        elif len(words) == 1 or (len(words) == 2 and words[1].isdigit()):
            pairs.append((_clean_word(words[0]), correct))
        else:
            log.skip(i, "more than one word")
    return pairs


def _norvig_pairs(lines: list[str], log: LoadLog) -> list[tuple[str, str]]:
    """`correct: miss1, miss2*5` per line."""
    pairs = []
    for i, line in enumerate(lines, start=1):
        correct, colon, rest = line.partition(":")
        misses = [m.strip().split("*")[0].strip() for m in rest.split(",")]
        misses = [m for m in misses if m]
        if not line.strip():
            log.skip(i, "blank line")
        elif not colon or not correct.strip() or not misses:
            log.skip(i, "not 'correct: miss1, miss2'")
        else:
            pairs += [(_clean_word(m), _clean_word(correct)) for m in misses]
    return pairs


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
