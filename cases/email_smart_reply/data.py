"""Message -> reply pairs: a built-in email-thread generator and loaders for real formats.

    data = load_data("builtin", cfg, seed=0)                 # generated threads, offline
    data = load_data("dailydialog:dialogues_text.txt", cfg)  # one dialogue a line, "__eou__" turns
    data = load_data("pairs:pairs.tsv", cfg)                 # message<TAB>reply per line
    data = load_data("mbox:~/mail/inbox.mbox", cfg)          # threads from In-Reply-To/References
    data = load_data("maildir:~/Maildir", cfg)

Every pair is (message, reply, thread id). A reply is the next message of the same thread, after
`clean_email` removed quoted text (`>` lines, "On ... wrote:" blocks, forwarded originals) and
the signature (after a `-- ` line). Splits are by thread (`split_by_thread`) so no thread gives
pairs to both training and test. `gate_pairs` runs the data gate on every input batch.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import CasebookError, DataError

INTENTS = ("scheduling", "thanks", "question", "request", "bad_news", "fyi")
FORMATS = ("builtin", "dailydialog", "pairs", "mbox", "maildir")
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


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path} not found (or not a file)")
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise DataError(f"{path} is a binary file, not text")
    return data.decode("utf-8", errors="replace")


def _pairs_data(
    pairs: list[tuple[str, str, int]], source: str, contexts: list[list[str]] | None = None
) -> SmartReplyData:
    keep = [k for k, (m, r, _) in enumerate(pairs) if m and r]
    if not keep:
        raise DataError(f"{source}: no (message, reply) pairs found")
    m, r, t = zip(*[pairs[k] for k in keep], strict=True)
    return SmartReplyData(
        list(m),
        list(r),
        np.asarray(t, dtype=np.int64),
        ["unknown"] * len(m),
        source,
        contexts=[contexts[k] for k in keep] if contexts else [],
    )


def load_dailydialog(path: Path) -> SmartReplyData:
    """One dialogue a line, turns separated by `__eou__`; consecutive turns are pairs; a dialogue
    is a thread; the turns before a message are its context."""
    pairs, contexts = [], []
    for i, line in enumerate(_read_text(path).splitlines()):
        turns = [" ".join(x.split()) for x in line.split("__eou__")]
        turns = [x for x in turns if x]
        pairs += [(turns[j], turns[j + 1], i) for j in range(len(turns) - 1)]
        contexts += [turns[max(0, j - MAX_CONTEXT_TURNS) : j] for j in range(len(turns) - 1)]
    return _pairs_data(pairs, f"dailydialog:{path}", contexts)


def load_pairs(path: Path) -> SmartReplyData:
    """`message<TAB>reply` per line; each line is its own thread. A line without a tab is an
    error naming the line."""
    pairs = []
    for i, line in enumerate(_read_text(path).splitlines()):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{i + 1}: expected message<TAB>reply")
        m, r = line.split("\t", 1)
        pairs.append((" ".join(m.split()), " ".join(r.replace("\t", " ").split()), i))
    return _pairs_data(pairs, f"pairs:{path}")


def _body(msg: email.message.Message) -> str:
    """The text/plain body of a message (the first text/plain part of a multipart one)."""
    part = msg
    if msg.is_multipart():
        part = next((p for p in msg.walk() if p.get_content_type() == "text/plain"), None)
        if part is None:
            return ""
    payload = part.get_payload(decode=True)
    if payload is None:
        return str(part.get_payload() or "")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", errors="replace")


def _ids(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


def threads_from_messages(msgs: list[email.message.Message], source: str) -> SmartReplyData:
    """Pairs (parent body, reply body) from In-Reply-To (else the last References id); the
    thread is the root of the References chain (or of the parent walk)."""
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
    pairs = [(bodies[p], bodies[k], root(k)) for k, p in sorted(parent.items())]

    def earlier(p: int) -> list[str]:  # the parent's ancestors, oldest first
        out, seen = [], {p}
        while p in parent and parent[p] not in seen and len(out) < MAX_CONTEXT_TURNS:
            p = parent[p]
            seen.add(p)
            out.append(bodies[p])
        return out[::-1]

    return _pairs_data(pairs, source, [earlier(p) for _, p in sorted(parent.items())])


def load_mailbox(path: Path, kind: str) -> SmartReplyData:
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
    return threads_from_messages(msgs, f"{kind}:{path}")


def load_data(spec: str, cfg, seed: int = 0) -> SmartReplyData:
    """`builtin` or `FORMAT:PATH` with FORMAT in dailydialog, pairs, mbox, maildir."""
    if spec in ("builtin", "", None):
        return builtin_threads(cfg.n_threads, seed)
    fmt, sep, path = str(spec).partition(":")
    if not sep or fmt not in FORMATS[1:] or not path:
        raise CasebookError(
            f"unknown data {spec!r}: use builtin or FORMAT:PATH with FORMAT one of "
            f"{', '.join(FORMATS[1:])}"
        )
    p = Path(path).expanduser()
    if fmt == "dailydialog":
        return load_dailydialog(p)
    if fmt == "pairs":
        return load_pairs(p)
    return load_mailbox(p, fmt)


# ----------------------------------------------------------------------------- splits and gate


def split_by_thread(data: SmartReplyData, cfg, seed: int) -> tuple[np.ndarray, ...]:
    """(train, val, test) pair indices; all pairs of one thread land in one part."""
    from shared.splits import group_split

    f_test, f_val = cfg.test_fraction, cfg.val_fraction
    return group_split(data.threads, (1 - f_val - f_test, f_val, f_test), seed=seed)


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

    Duplicates: 10%, as DailyDialog repeats a few dialogues (measured 1-3% per batch on the dev
    copy); the schema checks (empty, binary, oversized) keep their zero limits.
    """
    from shared.gate import GateThresholds

    return GateThresholds(max_duplicate_rate=0.1, max_psi=0.5, max_unseen_rate=1.0)


def gate_pairs(data: SmartReplyData, cfg, quarantine_dir: Path, reference=None):
    """Check the pairs in `cfg.gate_batches` file-order batches; drop the refused ones.

    The reference is the first batch (or `reference`, e.g. the training data's, for a test file).
    Returns (kept data, rows for the report table, refused-batch messages, the reference).
    Raises DataError (one line) when more than half of the batches are refused.
    """
    from shared.gate import build_reference, check_batch, quarantine

    schema, th = pair_schema(), gate_thresholds()
    n_batches = max(1, min(cfg.gate_batches, len(data) // 50))
    batches = np.array_split(np.arange(len(data)), n_batches)
    cols = pair_columns(data.messages, data.replies)
    take = lambda idx: {k: v[idx] for k, v in cols.items()}  # noqa: E731
    if reference is None:
        reference = build_reference(take(batches[0]), schema)
    kept, failures = [], []
    for i, idx in enumerate(batches):
        res = check_batch(take(idx), schema, reference, th)
        if res.passed:
            kept.append(idx)
        else:
            quarantine(take(idx), res, quarantine_dir)
            failures.append(f"batch {i}: " + "; ".join(c.message for c in res.failed[:3]))
    row = {"batches": n_batches, "passed": len(kept), "quarantined": n_batches - len(kept)}
    if 2 * len(kept) < n_batches:
        raise DataError(
            f"data gate refused {n_batches - len(kept)} of {n_batches} batches of "
            f"{data.source} ({failures[0]}); see {quarantine_dir}"
        )
    out = data.subset(np.concatenate(kept))
    out.no_reply, out.no_reply_threads = data.no_reply, data.no_reply_threads  # trigger negatives
    out.raw_example = data.raw_example
    return out, row, failures, reference


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
