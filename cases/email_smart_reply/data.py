"""Message -> reply pairs: a built-in email-thread generator and loaders for real formats.

    data = load_data("builtin", cfg, seed=0)                 # generated threads, offline
    data = load_data("dailydialog:dialogues_text.txt", cfg)  # one dialogue a line, "__eou__" turns
    data = load_data("pairs:pairs.tsv", cfg)                 # message<TAB>reply per line
    data = load_data("mbox:~/mail/inbox.mbox", cfg)          # threads from In-Reply-To/References
    data = load_data("maildir:~/Maildir", cfg)
    data = load_data("csv:chat.csv?message=q&reply=a", cfg)  # columns by name, aliases, or ?suffix
    inputs = prepare("csv:chat.csv", cfg, seed, out)         # load, clean, gate, split (run, check)

Every pair is (message, reply, thread id). A reply is the next message of the same thread, after
`clean_email` removed quoted text (`>` lines, "On ... wrote:" blocks, forwarded originals) and
the signature (after a `-- ` line). Loaders read any encoding `shared.ingest` decodes and skip a
bad row into the data's `LoadLog` with its line number. `clean_pairs` removes exact duplicate
pairs before the split; `split_pairs` keeps each thread's pairs in one part;
`gate_pairs` runs the data gate on every input batch, each judged against the other batches.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import DataError
from shared.ingest import (
    DataSpec,
    LoadLog,
    data_section,
    decode,
    dedupe,
    parse_spec,
    read_table,
    read_text,
    split_lines,
)

INTENTS = ("scheduling", "thanks", "question", "request", "bad_news", "fyi")
FORMATS = ("builtin", "csv", "dailydialog", "pairs", "mbox", "maildir")
MAX_CONTEXT_TURNS = 3  # earlier turns kept per pair (the encoders read `context_turns` of them)
MAX_TEXT_CHARS = 20_000  # a longer "message" is a paste or an attachment, not an email body


@dataclass
class SmartReplyData:
    """Pairs (message i -> reply i, both cleaned) with their thread, plus trigger negatives.

    `no_reply` holds messages that got no reply at all (newsletters, FYIs); they exist only in the
    built-in data and are negatives for the trigger. `intents` is "unknown" on real data.
    """

    messages: list[str]
    replies: list[str]
    threads: np.ndarray  # (N,) int64 thread id per pair
    intents: list[str]
    source: str
    no_reply: list[str] = field(default_factory=list)
    no_reply_threads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    raw_example: str = ""  # one raw email before cleaning, for the report
    notes: list[str] = field(default_factory=list)
    # Per pair, the earlier turns of its thread before the message, oldest first (at most
    # MAX_CONTEXT_TURNS); empty lists when the format has none. Same thread only, so the split
    # by thread keeps it leakage-free.
    contexts: list[list[str]] = field(default_factory=list)
    log: LoadLog | None = None  # rows read and skipped by the loader (`prepare` adds cleaning)

    def __len__(self) -> int:
        return len(self.messages)

    def subset(self, idx: np.ndarray) -> SmartReplyData:
        idx = np.asarray(idx, dtype=np.int64)
        return SmartReplyData(
            [self.messages[i] for i in idx],
            [self.replies[i] for i in idx],
            self.threads[idx],
            [self.intents[i] for i in idx],
            self.source,
            notes=list(self.notes),
            contexts=[self.contexts[i] for i in idx] if self.contexts else [],
            log=self.log,
        )

    def model_messages(self, turns: int) -> list[str]:
        """The message texts the encoders read: each message with up to `turns` earlier turns
        of its thread (`predictor.model_text`, the one format of training and serving)."""
        from .predictor import model_text

        if turns <= 0 or not self.contexts:
            return list(self.messages)
        return [model_text(m, c, turns) for m, c in zip(self.messages, self.contexts, strict=True)]


# ----------------------------------------------------------------------------- cleaning

_ON_WROTE = re.compile(r"^\s*On\b[^\n]{0,300}?(\n[^\n]{0,200}?)?wrote:\s*$", re.M)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(Original Message|Forwarded message)\s*-{2,}", re.M | re.I)
_SENT_FROM = re.compile(r"^\s*Sent from my [\w ]+$", re.M | re.I)
_GREETING = re.compile(r"^\s*(hi|hello|hey|dear)?\s*[A-Z][\w.' -]{0,40},\s*$", re.I)
_VALEDICTION = re.compile(
    r"^\s*(best|cheers|thanks|many thanks|regards|best regards|kind regards|sincerely|"
    r"thank you|all the best|warmly)\s*[,.!]?\s*$",
    re.I,
)


def clean_email(text: str) -> str:
    """The new words of an email body: quoted text, forwarded originals and signature removed.

    Cuts at the first "On <date>, <name> wrote:" line (possibly wrapped over two lines), at a
    "-----Original Message-----" or "---- Forwarded message ----" line, and at a signature
    delimiter (a line that is exactly "--" or "-- "); drops lines quoted with ">" and "Sent from
    my ..." lines, a greeting line ("Hi Ben,") at the top and a sign-off ("Best,\nAlice") of at
    most three short lines at the bottom; collapses whitespace to single spaces.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cut = len(text)
    for pat in (_ON_WROTE, _ORIGINAL):
        m = pat.search(text)
        if m:
            cut = min(cut, m.start())
    text = text[:cut]
    kept = []
    for line in text.split("\n"):
        if line.rstrip() == "--":  # RFC 3676 signature delimiter ("-- "), or its trimmed form
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    lines = [x for x in _SENT_FROM.sub("", "\n".join(kept)).split("\n") if x.strip()]
    if len(lines) > 1 and _GREETING.match(lines[0]):
        lines = lines[1:]
    for j in range(max(1, len(lines) - 4), len(lines)):
        tail = lines[j + 1 :]
        if _VALEDICTION.match(lines[j]) and all(len(x.split()) <= 6 for x in tail):
            lines = lines[:j]
            break
    return " ".join(" ".join(lines).split())


# ----------------------------------------------------------------------------- built-in threads

_NAMES = (
    "Alice",
    "Ben",
    "Carla",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kofi",
    "Lena",
    "Marta",
    "Nikhil",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "tomorrow", "next week")
_TIMES = ("9am", "10:30", "11am", "noon", "2pm", "3pm", "4:30", "after lunch")
_THINGS = (
    "the budget report",
    "the slides",
    "the contract",
    "the Q3 numbers",
    "the design doc",
    "the invoice",
    "the test plan",
    "the hiring plan",
    "the release notes",
    "the survey",
)
_EVENTS = (
    "the team sync",
    "our 1:1",
    "the kickoff",
    "the review",
    "lunch",
    "the offsite",
    "the demo",
    "the planning meeting",
)

# Message templates per intent; {n} name, {d} day, {t} time, {x} thing, {e} event.
_MESSAGES = {
    "scheduling": (
        "Can we meet {d} at {t} to go over {x}?",
        "Are you free {d} at {t} for {e}?",
        "Would {d} at {t} work for {e}? Happy to move it if not.",
        "Could we move {e} to {d}? Something came up.",
        "Do you have 30 minutes {d} to talk about {x}?",
        "Let's find a time for {e}. Does {d} at {t} suit you?",
    ),
    "thanks": (
        "Thanks so much for sending {x}, it was really helpful.",
        "Just wanted to say thank you for your help with {x}.",
        "Thank you for organising {e}, it went really well.",
        "Many thanks for the quick turnaround on {x}!",
        "Really appreciate you covering for me at {e}.",
    ),
    "question": (
        "Do you know if {x} is final yet?",
        "Have you had a chance to look at {x}?",
        "Is {e} still happening {d}?",
        "Did {n} send you {x}?",
        "Quick question: who owns {x} now?",
        "Will you be at {e} {d}?",
    ),
    "request": (
        "Could you send me {x} by {d}?",
        "Can you review {x} before {e}?",
        "Please take a look at {x} when you get a chance.",
        "Would you mind forwarding {x} to {n}?",
        "Can you add me to the invite for {e}?",
        "Could you sign off on {x} by {d}?",
    ),
    "bad_news": (
        "Unfortunately {e} has been cancelled.",
        "I'm afraid {x} is going to be late, we hit a problem.",
        "Sorry, I can't make {e} {d}, I'm off sick.",
        "Bad news: the client rejected {x}.",
        "I have to cancel our plans {d}, something urgent came up.",
    ),
    "fyi": (
        "FYI, {x} is now on the shared drive.",
        "Reminder: {e} is {d} at {t}. No action needed.",
        "Newsletter: what happened this week and what is coming {d}.",
        "Heads up, the office will be closed {d}.",
        "Sharing {x} for your records, nothing to do here.",
    ),
}

# Short replies per intent with their weights (a few dominate, as in real mail), and the
# weight of a long free-text reply. Paraphrases ("Thanks!" / "Thank you!") are deliberate: the
# response set must cluster them so three suggestions are never three thank-yous.
_REPLIES = {
    "scheduling": (
        ("Sounds good, see you then.", 6),
        ("Works for me!", 5),
        ("Yes, that works.", 4),
        ("Sorry, I can't make it then.", 4),
        ("Can we do later in the day?", 3),
        ("Sure, I'll send an invite.", 3),
        ("That time doesn't work for me, sorry.", 2),
        ("Let me check my calendar and get back to you.", 3),
    ),
    "thanks": (
        ("You're welcome!", 6),
        ("No problem!", 5),
        ("Happy to help.", 4),
        ("Anytime!", 3),
        ("Glad it was useful.", 3),
        ("My pleasure.", 2),
    ),
    "question": (
        ("Yes.", 4),
        ("No, not yet.", 4),
        ("I'm not sure, let me check.", 5),
        ("Yes, I have it.", 3),
        ("I don't know, sorry.", 3),
        ("I'll find out and let you know.", 3),
        ("Yes, I'll be there.", 3),
        ("No, I won't be there.", 2),
    ),
    "request": (
        ("Sure, will do.", 6),
        ("Will do!", 4),
        ("Sure, I'll send it over.", 4),
        ("Done.", 3),
        ("I'll take a look today.", 4),
        ("Sorry, I won't have time this week.", 3),
        ("Can it wait until next week?", 2),
    ),
    "bad_news": (
        ("Oh no, sorry to hear that.", 5),
        ("That's a shame.", 4),
        ("No worries, thanks for letting me know.", 5),
        ("Thanks for the heads up.", 4),
        ("Hope you feel better soon!", 3),
        ("Ok, let's regroup.", 2),
    ),
}
_LONG_REPLY = (
    "Thanks {n}. I looked at {x} this morning and have a few comments on the second section, "
    "mostly about the numbers; I will write them up and send them before {e}.",
    "Hi {n}, I am travelling {d} so it is hard to say. Let me look at my schedule tonight and "
    "come back to you with two or three options that might work for everyone.",
    "I talked to {n} about {x}. We think it needs another pass before {e}, and the owner should "
    "probably be someone on the platform team rather than us.",
)
_SIGNATURES = (
    "\n\n-- \n{n}\nSenior Analyst | Example Corp\n+1 555 0100",
    "\n\nBest,\n{n}\n\nSent from my iPhone",
    "\n\n--\n{n} | Product\nexample.com",
    "\n\nCheers,\n{n}",
)
_GREETINGS = ("Hi {n},\n\n", "Hello {n},\n\n", "{n},\n\n", "Hey {n},\n\n", "")


def _fill(template: str, rng: np.random.Generator) -> str:
    return template.format(
        n=rng.choice(_NAMES),
        d=rng.choice(_DAYS),
        t=rng.choice(_TIMES),
        x=rng.choice(_THINGS),
        e=rng.choice(_EVENTS),
    )


def _vary(text: str, rng: np.random.Generator) -> str:
    """Realistic surface variation of a short reply: case, punctuation, a name."""
    r = rng.random()
    if r < 0.15:
        text = text.lower()
    elif r < 0.25:
        text = text.rstrip(".!") + rng.choice(("!", " :)", "", "!!"))
    if rng.random() < 0.1:
        text = text + " " + rng.choice(("Thanks!", "Cheers.", "Best."))
    return text


def _raw_email(body: str, sender: str, recipient: str, quoted: str, rng) -> str:
    """A raw email as a mail client writes it: greeting, body, signature, quoted previous mail."""
    raw = rng.choice(_GREETINGS).format(n=recipient) + body
    raw += rng.choice(_SIGNATURES).format(n=sender)
    if quoted:
        when = f"On {rng.choice(_DAYS[:5])}, {rng.integers(1, 28)} May 2026 at {rng.choice(_TIMES)}"
        raw += f"\n\n{when}, {recipient} <{recipient.lower()}@example.com> wrote:\n"
        raw += "\n".join("> " + line for line in quoted.split("\n"))
    return raw


def builtin_threads(n_threads: int, seed: int = 0) -> SmartReplyData:
    """Deterministic email threads with intents; raw emails are generated, then cleaned.

    Each thread opens with a message of one intent; FYIs get no reply (trigger negatives); the
    others get a short reply drawn from the intent's weighted list (with surface variation) or,
    20% of the time, a long free-text reply (which no suggestion could stand in for). A third of
    threads continue with a second exchange of another intent.
    """
    rng = np.random.default_rng(seed)
    messages, replies, threads, intents, no_reply, no_reply_threads = [], [], [], [], [], []
    raw_example = ""
    weights = np.array([0.2, 0.16, 0.2, 0.18, 0.1, 0.16])  # intent mix (most mail needs no reply)
    for t in range(n_threads):
        a, b = rng.choice(_NAMES, size=2, replace=False)
        quoted = ""
        for _turn in range(1 + int(rng.random() < 0.33)):
            intent = INTENTS[rng.choice(len(INTENTS), p=weights)]
            body = _fill(_MESSAGES[intent][rng.integers(len(_MESSAGES[intent]))], rng)
            raw_msg = _raw_email(body, a, b, quoted, rng)
            if intent == "fyi":
                no_reply.append(clean_email(raw_msg))
                no_reply_threads.append(t)
                break
            if rng.random() < 0.2:
                reply = _fill(_LONG_REPLY[rng.integers(len(_LONG_REPLY))], rng)
            else:
                texts, w = zip(*_REPLIES[intent], strict=True)
                p = np.asarray(w, dtype=np.float64) / sum(w)
                reply = _vary(texts[rng.choice(len(texts), p=p)], rng)
            raw_reply = _raw_email(reply, b, a, body, rng)
            if not raw_example and quoted:
                raw_example = raw_reply
            messages.append(clean_email(raw_msg))
            replies.append(clean_email(raw_reply))
            threads.append(t)
            intents.append(intent)
            quoted = reply
    return SmartReplyData(
        messages,
        replies,
        np.asarray(threads, dtype=np.int64),
        intents,
        "builtin",
        no_reply=no_reply,
        no_reply_threads=np.asarray(no_reply_threads, dtype=np.int64),
        raw_example=raw_example,
    )


# ----------------------------------------------------------------------------- real formats

# Column names a csv header may use, first match wins (`?message=COL&reply=COL&thread=COL`
# names any other).
MESSAGE_COLUMNS = ("message", "input", "prompt", "question", "context", "email", "text")
REPLY_COLUMNS = ("reply", "response", "answer", "output", "target")
THREAD_COLUMNS = ("thread", "conversation_id", "thread_id", "conversation")
OPTIONS = ("message", "reply", "thread")  # the `?name=column` options of csv:
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")  # binary bytes, undecodable text


def _pairs_data(
    pairs: list[tuple[str, str, int, int]],
    log: LoadLog,
    source: str,
    contexts: list[list[str]] | None = None,
    expected: str = "",
) -> SmartReplyData:
    """Pairs (message, reply, thread, file line) -> SmartReplyData; a pair with an empty side,
    a side over MAX_TEXT_CHARS or control characters is skipped into `log` with its line.

    Raises DataError (one line) when no pair is left.
    """
    keep = []
    for k, (m, r, _, line) in enumerate(pairs):
        if not m or not r:
            log.skip(line, "empty message or reply")
        elif max(len(m), len(r)) > MAX_TEXT_CHARS:
            log.skip(line, f"message or reply over {MAX_TEXT_CHARS:,} characters")
        elif _CONTROL.search(m) or _CONTROL.search(r):
            log.skip(line, "control characters (binary bytes)")
        else:
            keep.append(k)
    if not keep:
        why = ", ".join(f"{r} {n:,}" for r, n in log.n_skipped.items()) or "none"
        raise DataError(
            f"{source}: no (message, reply) pairs found (rows read {log.rows_read:,}, skipped: "
            f"{why})" + (f"; expected {expected}" if expected else "")
        )
    m, r, t, _ = zip(*[pairs[k] for k in keep], strict=True)
    return SmartReplyData(
        list(m),
        list(r),
        np.asarray(t, dtype=np.int64),
        ["unknown"] * len(m),
        source,
        contexts=[contexts[k] for k in keep] if contexts else [],
        log=log,
    )


def load_dailydialog(path: Path, log: LoadLog) -> SmartReplyData:
    """One dialogue a line, turns separated by `__eou__`; consecutive turns are pairs; a dialogue
    is a thread; the turns before a message are its context. A row is a pair; a line with fewer
    than two turns is one skipped row."""
    source = f"dailydialog:{path}"
    pairs, contexts = [], []
    for i, line in enumerate(split_lines(read_text(path, log, source))):
        turns = [" ".join(x.split()) for x in line.split("__eou__")]
        turns = [x for x in turns if x]
        if len(turns) < 2:
            log.rows_read += 1
            log.skip(i + 1, "blank line" if not line.strip() else "fewer than two turns")
            continue
        log.rows_read += len(turns) - 1
        pairs += [(turns[j], turns[j + 1], i, i + 1) for j in range(len(turns) - 1)]
        contexts += [turns[max(0, j - MAX_CONTEXT_TURNS) : j] for j in range(len(turns) - 1)]
    return _pairs_data(
        pairs, log, source, contexts, "turns separated by __eou__, a dialogue a line"
    )


def load_pairs(path: Path, log: LoadLog) -> SmartReplyData:
    """`message<TAB>reply` per line (further tabs belong to the reply); each line its own thread.
    A first line that names the columns (`message<TAB>reply`) is a header; a line without a tab
    is skipped and counted."""
    source = f"pairs:{path}"
    pairs, header_seen = [], False
    for i, line in enumerate(split_lines(read_text(path, log, source))):
        cells = [c.strip().lower() for c in line.split("\t")]
        if not header_seen and line.strip():
            header_seen = True
            if len(cells) >= 2 and cells[0] in MESSAGE_COLUMNS and cells[1] in REPLY_COLUMNS:
                continue
        log.rows_read += 1
        if not line.strip():
            log.skip(i + 1, "blank line")
        elif "\t" not in line:
            log.skip(i + 1, "no tab")
        else:
            m, r = line.split("\t", 1)
            pairs.append((" ".join(m.split()), " ".join(r.split()), i, i + 1))
    return _pairs_data(pairs, log, source, expected="message<TAB>reply per line")


def load_csv(spec: DataSpec, log: LoadLog) -> SmartReplyData:
    """A csv or tsv with a header row naming a message and a reply column (any order, extra
    columns ignored; aliases in MESSAGE_COLUMNS, REPLY_COLUMNS; `?message=COL&reply=COL` for
    others) and optionally a thread column: rows of one thread stay in one split part (without
    it each row is its own thread). Each field is an email body: quoted newlines stay inside it
    and `clean_email` removes quoted text, greeting and signature."""
    source = f"csv:{spec.path}"
    names = {
        role: (spec.option(role),) if spec.option(role) else aliases
        for role, aliases in zip(
            OPTIONS, (MESSAGE_COLUMNS, REPLY_COLUMNS, THREAD_COLUMNS), strict=True
        )
    }
    table = read_table(spec.path, log, source, known=sum(names.values(), ()), header=True)
    mi = table.column(names["message"], "message")
    ri = table.column(names["reply"], "reply")
    ti = table.column(names["thread"], "thread", required=bool(spec.option("thread")))
    ids: dict[tuple[str, int], int] = {}  # (thread value, 0), or ("", row) for a row of its own
    pairs = []
    for k, (line, row) in enumerate(table):
        t = _cell(row, ti).strip()
        thread = ids.setdefault((t, 0) if t else ("", k), len(ids))
        pairs.append((clean_email(_cell(row, mi)), clean_email(_cell(row, ri)), thread, line))
    if ti is not None:
        named = sum(1 for t, _ in ids if t)
        log.notes.append(f"threads from column `{table.header[ti]}`: {named:,}")
    return _pairs_data(pairs, log, source, expected="a header with message and reply columns")


def _cell(row: list[str], j: int | None) -> str:
    """Field j of a csv row, "" when the row is short or there is no such column."""
    return row[j] if j is not None and j < len(row) else ""


def _body(msg: email.message.Message) -> str:
    """The text/plain body of a message (the first text/plain part of a multipart one), decoded
    with its declared charset, else as `shared.ingest.decode` reads a file; "" for binary."""
    part = msg
    if msg.is_multipart():
        part = next((p for p in msg.walk() if p.get_content_type() == "text/plain"), None)
        if part is None:
            return ""
    payload = part.get_payload(decode=True)
    if payload is None:
        return str(part.get_payload() or "")
    try:
        return payload.decode(part.get_content_charset() or "utf-8")
    except (LookupError, UnicodeDecodeError):  # an unknown or wrong charset name
        try:
            return decode(payload, "a message body")[0]
        except DataError:  # NUL bytes: an attachment mislabelled as text
            return ""


def _ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def threads_from_messages(
    msgs: list[email.message.Message], source: str, log: LoadLog
) -> SmartReplyData:
    """Pairs (parent body, reply body) from In-Reply-To (else the last References id); the
    thread is the root of the References chain (or of the parent walk). A row is a reply whose
    parent is in the box; its "line" in the log is the reply's position in the box."""
    by_id, parent = {}, {}
    for k, msg in enumerate(msgs):
        mid = _ids(msg.get("Message-ID"))
        if mid:
            by_id.setdefault(mid[0], k)
    for k, msg in enumerate(msgs):
        ref = _ids(msg.get("In-Reply-To")) or _ids(msg.get("References"))[-1:]
        if ref and ref[-1] in by_id and by_id[ref[-1]] != k:
            parent[k] = by_id[ref[-1]]

    def root(k: int) -> int:
        refs = _ids(msgs[k].get("References"))
        if refs and refs[0] in by_id:
            return by_id[refs[0]]
        seen = {k}
        while k in parent and parent[k] not in seen:
            k = parent[k]
            seen.add(k)
        return k

    bodies = [clean_email(_body(m)) for m in msgs]
    pairs = [(bodies[p], bodies[k], root(k), k + 1) for k, p in sorted(parent.items())]
    log.rows_read += len(pairs)
    log.notes.append(f"{len(msgs):,} messages, {len(pairs):,} of them replies to one in the box")

    def earlier(p: int) -> list[str]:  # the parent's ancestors, oldest first
        out, seen = [], {p}
        while p in parent and parent[p] not in seen and len(out) < MAX_CONTEXT_TURNS:
            p = parent[p]
            seen.add(p)
            out.append(bodies[p])
        return out[::-1]

    contexts = [earlier(p) for _, p in sorted(parent.items())]
    return _pairs_data(pairs, log, source, contexts, "replies linked by In-Reply-To/References")


def load_mailbox(path: Path, kind: str, log: LoadLog) -> SmartReplyData:
    """An mbox file or a Maildir folder through the standard library's `mailbox`."""
    if kind == "mbox" and not path.is_file():
        raise DataError(f"{path} not found (an mbox is one file)")
    if kind == "maildir" and not (path / "cur").is_dir() and not (path / "new").is_dir():
        raise DataError(f"{path} is not a Maildir (no cur/ or new/ folder)")
    factory = lambda f: email.message_from_binary_file(f, policy=email.policy.compat32)  # noqa: E731
    box = mailbox.mbox(path, create=False) if kind == "mbox" else mailbox.Maildir(path, factory)
    try:
        msgs = list(box)
    except Exception as e:  # mailbox raises several types on a malformed file
        raise DataError(f"{path}: cannot read {kind}: {e}") from None
    if not msgs:
        raise DataError(f"{path}: no messages")
    return threads_from_messages(msgs, f"{kind}:{path}", log)


def load_data(spec: str, cfg, seed: int = 0) -> SmartReplyData:
    """`builtin` or `FORMAT:PATH[?name=column&...]` with FORMAT in FORMATS; what happened to the
    rows on the way in is in the result's `log`."""
    if spec in ("builtin", "", None):
        data = builtin_threads(cfg.n_threads, seed)
        data.log = LoadLog("builtin")
        data.log.rows_read = len(data)
        return data
    ds = parse_spec(spec, FORMATS[1:], OPTIONS)
    if ds.options and ds.fmt != "csv":
        raise DataError(f"--data {spec!r}: column options (?name=column) apply to csv: only")
    log = LoadLog(ds.raw)
    p = ds.path
    if ds.fmt == "csv":
        return load_csv(ds, log)
    if ds.fmt == "dailydialog":
        return load_dailydialog(p, log)
    if ds.fmt == "pairs":
        return load_pairs(p, log)
    return load_mailbox(p, ds.fmt, log)


# ----------------------------------------------------------------------------- cleaning and splits


def norm_text(text: str) -> str:
    """The case's normal form for exact-duplicate checks: whitespace collapsed, case-folded."""
    return " ".join(text.split()).casefold()


def pair_key(message: str, reply: str) -> str:
    return norm_text(message) + "\x1f" + norm_text(reply)


def clean_pairs(data: SmartReplyData) -> SmartReplyData:
    """Exact duplicate pairs (equal `pair_key`) removed before the split, the first kept, and
    counted into `data.log` with examples (`shared.ingest.dedupe`). A message with several
    different replies is kept whole: several replies to one message are legitimate.

    Built-in threads are not deduplicated: their messages come from templates, so the same
    text in two threads is two emails by design, and the shipped figures are measured on them.
    """
    keys = [pair_key(m, r) for m, r in zip(data.messages, data.replies, strict=True)]
    if data.source == "builtin":
        data.log.notes.append(
            f"built-in threads are generated from templates and not deduplicated "
            f"({len(keys) - len(set(keys)):,} pairs repeat another pair's text in another thread)"
        )
        return data
    shown = [f"{m} -> {r}" for m, r in zip(data.messages, data.replies, strict=True)]
    kept, _ = dedupe(keys, None, data.log, shown)
    return data.subset(kept)


def drop_overlap(data: SmartReplyData, test: SmartReplyData) -> SmartReplyData:
    """Training pairs that are also in the --test file (equal `pair_key`) removed and counted:
    a model must not have seen the answer it is scored on."""
    held = {pair_key(m, r) for m, r in zip(test.messages, test.replies, strict=True)}
    pairs = list(zip(data.messages, data.replies, strict=True))
    drop = [i for i, (m, r) in enumerate(pairs) if pair_key(m, r) in held]
    data.log.remove("also in the --test file", len(drop), [" -> ".join(pairs[i]) for i in drop])
    return data.subset(np.setdiff1d(np.arange(len(data)), drop))


def split_by_thread(data: SmartReplyData, cfg, seed: int) -> tuple[np.ndarray, ...]:
    """(train, val, test) pair indices; all pairs of one thread land in one part."""
    from shared.splits import group_split

    f_test, f_val = cfg.test_fraction, cfg.val_fraction
    return group_split(data.threads, (1 - f_val - f_test, f_val, f_test), seed=seed)


def split_pairs(
    data: SmartReplyData, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, ...]:
    """(train, val, test) pair indices for `fractions` of the threads
    (`shared.splits.group_split`): all pairs of one thread land in one part, so a reply quoted
    later in its own thread cannot leak. Exact duplicate pairs are already gone (`clean_pairs`),
    so no pair sits in two parts. A common message ("Thank you .") may still open pairs in
    several parts with different replies: that is the traffic the model serves, and test keeps it.
    """
    from shared.splits import group_split

    return group_split(data.threads, fractions, seed=seed)


# ----------------------------------------------------------------------------- the data gate


def pair_columns(messages: list[str], replies: list[str]) -> dict[str, np.ndarray]:
    """The columns the data gate checks, one row per pair."""

    def bad_chars(t: str) -> int:
        return sum((ord(c) < 32 and c not in "\t\n\r") or c == "\ufffd" for c in t)

    return {
        "message": np.asarray(messages, dtype=object),
        "reply": np.asarray(replies, dtype=object),
        "message_words": np.asarray([len(m.split()) for m in messages], dtype=np.int64),
        "reply_words": np.asarray([len(r.split()) for r in replies], dtype=np.int64),
        "message_chars": np.asarray([len(m) for m in messages], dtype=np.int64),
        "bad_chars": np.asarray(
            [bad_chars(m) + bad_chars(r) for m, r in zip(messages, replies, strict=True)],
            dtype=np.int64,
        ),
    }


def pair_schema():
    from shared.gate import ColumnSpec, Schema

    return Schema(
        columns={
            "message": ColumnSpec("str"),
            "reply": ColumnSpec("str"),
            "message_words": ColumnSpec("int", min=1),
            "reply_words": ColumnSpec("int", min=1),
            "message_chars": ColumnSpec("int", min=1, max=MAX_TEXT_CHARS),
            "bad_chars": ColumnSpec("int", min=0, max=0, drift=False),  # binary, control chars
        },
        key=("message", "reply"),
    )


def gate_thresholds():
    """Loose shift limits: one file's batches differ in topic (DailyDialog is ordered by source).

    Duplicates: 5 points over the other batch's own rate. A loaded file has no exact repeats
    left after `clean_pairs`; the built-in threads are not deduplicated and repeat 0.9-3.7% of
    pairs per batch of the fast preset (templates), while a corrupted batch repeats 21%
    (`corrupt_pairs`) and a retried one up to 100%. Volume is not checked: the batches are equal
    slices of one file, and a --test file's size against the training data is the user's
    choice. The schema checks (empty, binary, oversized) keep their zero limits.
    """
    from shared.gate import GateThresholds

    return GateThresholds(
        max_duplicate_rate=0.05, max_psi=0.5, max_unseen_rate=1.0, volume_ratio=(0.0, math.inf)
    )


def gate_pairs(data: SmartReplyData, cfg, quarantine_dir: Path, reference=None):
    """Check the pairs in `cfg.gate_batches` file-order batches; drop the refused ones.

    Each batch is judged against the rest of the data, one other batch at a time, and refused
    when it fails against more than half of them: what the whole file shares (its topics, its
    own repetition) passes, what one batch alone has (a retried batch, one pair flooding it,
    empty or binary texts, a shift) does not, and one bad batch cannot get the good ones
    refused (a reference pooled over the rest would carry its shift into every other check).
    With `reference` (the training data's, for a --test file) every batch is judged against
    it; a single batch with nothing else to compare is judged against itself (schema checks).
    Returns (kept data, a row for the report table, refused-batch messages, the reference of
    all kept pairs). Raises DataError (one line) when more than half of the batches are refused.
    """
    from shared.gate import build_reference, check_batch, quarantine

    schema, th = pair_schema(), gate_thresholds()
    n_batches = max(1, min(cfg.gate_batches, len(data) // 50))
    batches = np.array_split(np.arange(len(data)), n_batches)
    cols = pair_columns(data.messages, data.replies)
    take = lambda idx: {k: v[idx] for k, v in cols.items()}  # noqa: E731
    if reference is not None:
        refs = [reference]
    else:  # every batch's own profile, each the reference for the others
        refs = [build_reference(take(idx), schema) for idx in batches]
    kept, failures = [], []
    for i, idx in enumerate(batches):
        others = [r for j, r in enumerate(refs) if j != i or len(refs) == 1]
        results = [check_batch(take(idx), schema, r, th) for r in others]
        bad = [res for res in results if not res.passed]
        if 2 * len(bad) <= len(results):
            kept.append(idx)
            continue
        quarantine(take(idx), bad[0], quarantine_dir)
        vs = (
            f" (failed against {len(bad)} of {len(results)} other batches)" if len(refs) > 1 else ""
        )
        failures.append(f"batch {i}{vs}: " + _failed(bad[0], 3))
    row = {"batches": n_batches, "passed": len(kept), "quarantined": n_batches - len(kept)}
    if 2 * len(kept) < n_batches:
        raise DataError(
            f"data gate refused {n_batches - len(kept)} of {n_batches} batches of "
            f"{data.source} ({failures[0]}); look at the batches in {quarantine_dir}, fix or "
            "remove those rows and run again"
        )
    out = data.subset(np.concatenate(kept))
    out.no_reply, out.no_reply_threads = data.no_reply, data.no_reply_threads  # trigger negatives
    out.raw_example = data.raw_example
    return out, row, failures, build_reference(take(np.concatenate(kept)), schema)


def corrupt_pairs(data: SmartReplyData, seed: int) -> SmartReplyData:
    """A copy of a batch with empty replies, binary characters and one message flooding it."""
    rng = np.random.default_rng(seed)
    n = len(data)
    messages, replies = list(data.messages), list(data.replies)
    for i in rng.choice(n, size=max(1, n // 10), replace=False):
        replies[i] = ""
    for i in rng.choice(n, size=max(1, n // 20), replace=False):
        messages[i] = messages[i] + "\x00\x01\x02"
    for i in rng.choice(n, size=max(1, n // 5), replace=False):
        messages[i], replies[i] = "WIN A PRIZE NOW", "ok"
    out = data.subset(np.arange(n))
    out.messages, out.replies = messages, replies
    return out


def _injected_batch(data: SmartReplyData, reference, seed: int) -> tuple[dict, str]:
    """The gate on a corrupted copy of the first 400 pairs (built-in data: shows it is caught)."""
    from shared.gate import check_batch

    bad = corrupt_pairs(data.subset(np.arange(min(len(data), 400))), seed)
    cols = pair_columns(bad.messages, bad.replies)
    res = check_batch(cols, pair_schema(), reference, gate_thresholds())
    row = {"batches": 1, "passed": int(res.passed), "quarantined": int(not res.passed)}
    return row, "injected batch: " + _failed(res, 4)


def _failed(res, k: int) -> str:
    """The first k failed checks of a gate result as 'check[column] value > limit: why'."""
    return "; ".join(
        f"{c.name}[{c.column}] {c.value:.4g} > {c.limit:.4g}: {c.message}"
        if isinstance(c.value, float) and isinstance(c.limit, float)
        else f"{c.name}[{c.column}]: {c.message}"
        for c in res.failed[:k]
    )


def attach_no_reply(data, train_d, val_d, test, cfg, seed) -> None:
    """Built-in no-reply messages (trigger negatives) follow their thread's split."""
    if not data.no_reply:
        return
    parts = [set(d.threads.tolist()) for d in (train_d, val_d, test)]
    rng = np.random.default_rng(seed)
    for msg, t in zip(data.no_reply, data.no_reply_threads.tolist(), strict=True):
        k = next((i for i, p in enumerate(parts) if t in p), None)
        if k is None:  # a thread with no pair at all: place it like group_split would
            k = int(
                rng.choice(
                    3,
                    p=[
                        1 - cfg.val_fraction - cfg.test_fraction,
                        cfg.val_fraction,
                        cfg.test_fraction,
                    ],
                )
            )
        (train_d, val_d, test)[k].no_reply.append(msg)


# ----------------------------------------------------------------------------- the pipeline


@dataclass
class SmartReplyInputs:
    """What `prepare` hands to training, and the data section that says how it got there."""

    data: SmartReplyData  # every pair that passed the gate, before the split
    train: SmartReplyData
    val: SmartReplyData
    test: SmartReplyData
    testset: str  # the test data's name in table titles
    gate_rows: dict[str, dict]  # the report's `data_gate` table
    failures: list[str]  # one line per refused batch
    markdown: str  # report.md's "Data" section, and what `casebook check` prints


def _file_stem(spec: str) -> str:
    """The file name of FORMAT:PATH[?options] without its suffix (a table title)."""
    return Path(str(spec).split(":", 1)[-1].split("?")[0]).stem


def prepare(spec: str, cfg, seed: int, out: Path, test_spec: str | None = None) -> SmartReplyInputs:
    """Load, clean, gate and split `--data` (and `--test`): the one way from files to the parts
    training reads, for `casebook run` and `casebook check` alike. Refused batches go to
    out/quarantine. Raises DataError (one line saying what to do) when nothing sensible is
    left to train on."""
    qdir = Path(out) / "quarantine"
    data = clean_pairs(load_data(spec, cfg, seed))
    test, test_log = None, None
    if test_spec:
        test = clean_pairs(load_data(test_spec, cfg, seed))
        test_log = test.log
        data = drop_overlap(data, test)
    data, row, failures, reference = gate_pairs(data, cfg, qdir)
    gate_rows = {"training_input": row}
    if data.source == "builtin":  # show the gate catching a corrupted batch of the same logs
        gate_rows["injected_corrupt_batch"], line = _injected_batch(data, reference, seed)
        failures.append(line)
    f_val, f_test = cfg.val_fraction, cfg.test_fraction
    if test is not None:
        test, gate_rows["test_input"], more, _ = gate_pairs(test, cfg, qdir, reference)
        failures += more
        f = f_val / (1 - f_test)
        tr, va, _ = split_pairs(data, (1 - f, f, 0.0), seed)
        testset = _file_stem(test_spec)
    else:
        tr, va, te = split_pairs(data, (1 - f_val - f_test, f_val, f_test), seed)
        test = data.subset(te)
        testset = "builtin" if data.source == "builtin" else _file_stem(spec)
    train, val = data.subset(tr), data.subset(va)
    attach_no_reply(data, train, val, test, cfg, seed)
    parts = {"train": len(train), "val": len(val), "test": len(test)}
    empty = [k for k, v in parts.items() if v == 0]
    if empty:
        raise DataError(
            f"{data.source}: {len(data):,} usable pairs leave the {empty[0]} part empty (the "
            "split keeps each thread's and each message's pairs together); add pairs from more "
            "threads"
        )
    gate = [
        f"{name.replace('_', ' ')}: {r['passed']} of {r['batches']} batch(es) passed, "
        f"{r['quarantined']} quarantined"
        for name, r in gate_rows.items()
    ]
    markdown = data_section(data.log, parts, gate=gate + failures, unit="pairs")
    if test_log is not None:
        markdown += "\n\nThe --test file:\n\n" + test_log.markdown()
    return SmartReplyInputs(data, train, val, test, testset, gate_rows, failures, markdown)


def fit_context_turns(cfg, train: SmartReplyData):
    """The config the run trains with: `context_turns` 0 when the format has no threads (the
    message alone), else `cfg` unchanged."""
    if cfg.context_turns and not any(train.contexts):
        from dataclasses import replace

        return replace(cfg, context_turns=0)
    return cfg


def trigger_labels(data: SmartReplyData, cfg) -> tuple[list[str], np.ndarray]:
    """Messages and labels: 1 when the reply is short enough for a suggestion to stand in
    (<= short_reply_words words; Kannan et al. 2016 trigger on "will a short reply do"), 0 for
    long replies and for messages that got no reply at all."""
    texts = list(data.messages) + list(data.no_reply)
    y = [len(r.split()) <= cfg.short_reply_words for r in data.replies] + [0] * len(data.no_reply)
    return texts, np.asarray(y, dtype=np.int64)
