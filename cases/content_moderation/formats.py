"""Readers for the real formats `--data` and `--eval` take, through shared.ingest.

    data, fixed_test, stratify = read_source("jigsaw:train.csv")   # rows read, nothing cleaned
    ev = read_eval("hatecheck:hatecheck.csv")

Training formats (`--data FORMAT:PATH[?text=COL&label=COL]`):
    olid:DIR          olid-training-v1.0.tsv (id, tweet, subtask_a OFF/NOT, ...); with
                      testset-levela.tsv + labels-levela.csv the test set is OffensEval's test A
    davidson:FILE     index,count,hate_speech,offensive_language,neither,class,tweet
    sms-spam:FILE     "ham|spam<TAB>text" per line (UCI); the Kaggle copy spam.csv (v1,v2) too
    csv:FILE          a text column and a label column, by name (aliases below)
    jigsaw:FILE       id,comment_text,toxic,severe_toxic,obscene,threat,insult,identity_hate
    jigsaw-bias:FILE  id,comment_text,target in [0,1] + identity columns in [0,1] or empty
Evaluation only (`--eval`): hatecheck:FILE, toxicity-pairs:NONFUZZED,FUZZED, csv:FILE.

Every reader skips a row it cannot use (no text, no label, an unknown label, too few fields)
into the LoadLog with its line number; only a file with no usable row is a DataError. Texts are
stripped and clipped to data.MAX_TEXT_CHARS (counted). Decoding (BOM, UTF-8, cp1252, Latin-1),
delimiters, headers by name, quoted newlines and CRLF are shared.ingest's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.errors import DataError
from shared.ingest import (
    LoadLog,
    Table,
    parse_binary,
    parse_spec,
    read_table,
    read_text,
    split_lines,
)

from .data import MAX_TEXT_CHARS, POLICIES, EvalSet, ModerationData

TEXT_ALIASES = ("text", "comment_text", "comment", "message", "content", "body", "tweet",
                "post", "sentence", "sms", "v2")  # fmt: skip
LABEL_ALIASES = (
    "label",
    "class",
    "target",
    "toxic",
    "is_spam",
    "is_toxic",
    "is_offensive",
    "offensive",
    "spam",
    "category",
    "labels",
    "y",
    "v1",
)
# Label names for a clean text, and names for a violation -> the policy they name.
NEGATIVE_NAMES = frozenset({
    "none", "ok", "ham", "not", "clean", "normal", "neither", "neutral", "benign", "safe",
    "legit", "legitimate", "acceptable", "non-toxic", "nontoxic", "non_toxic", "not toxic",
    "not_toxic", "non-offensive", "not offensive", "not_offensive", "non-hateful",
    "not hateful", "not_hate", "not hate", "no_violation",
})  # fmt: skip
POSITIVE_NAMES = {
    "off": "offensive", "offensive": "offensive", "abusive": "offensive", "abuse": "offensive",
    "hate": "hate", "hateful": "hate", "hate_speech": "hate", "hate speech": "hate",
    "spam": "spam", "scam": "scam", "fraud": "scam", "phishing": "scam", "toxic": "toxic",
}  # fmt: skip
# A 0/1 label column named like a policy labels that policy; any other name: offensive.
COLUMN_POLICY = {
    "is_spam": "spam",
    "spam": "spam",
    "is_toxic": "toxic",
    "toxic": "toxic",
    "toxicity": "toxic",
    "is_offensive": "offensive",
    "is_hate": "hate",
    "hate": "hate",
    "hateful": "hate",
    "is_scam": "scam",
    "scam": "scam",
}
JIGSAW_POLICIES = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
JIGSAW_IDENTITIES = (
    "male", "female", "transgender", "other_gender", "heterosexual",
    "homosexual_gay_or_lesbian", "bisexual", "other_sexual_orientation", "christian", "jewish",
    "muslim", "hindu", "buddhist", "atheist", "other_religion", "black", "white", "asian",
    "latino", "other_race_or_ethnicity", "physical_disability",
    "intellectual_or_learning_disability", "psychiatric_or_mental_illness", "other_disability",
)  # fmt: skip
OPTIONS = {"csv": ("text", "label"), "jigsaw": ("text",), "jigsaw-bias": ("text", "label")}
CSV_HINT = (
    "a label must be 0/1, true/false, a share in [0, 1] or a name (offensive, hate, spam, "
    "scam, toxic, OFF/NOT, spam/ham, none, ...); name other columns with ?text=COL&label=COL"
)


class _Rows:
    """Usable rows as they are read: text, label vector, line; skips and clips into `log`."""

    def __init__(self, log: LoadLog) -> None:
        self.log, self.texts, self.labels, self.lines, self.clipped = log, [], [], [], 0

    def text(self, line: int, raw: str | None) -> str | None:
        """The stripped text, clipped to MAX_TEXT_CHARS; None (skipped) when empty."""
        t = (raw or "").strip()
        if not t:
            self.log.skip(line, "empty text")
            return None
        if len(t) > MAX_TEXT_CHARS:
            self.clipped += 1
            t = t[:MAX_TEXT_CHARS]
        return t

    def add(self, line: int, text: str, label) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.lines.append(line)

    def close(self, what: str, path: Path, hint: str) -> None:
        """Note clipped texts; a DataError (one line, `hint`) when no row was usable."""
        if self.clipped:
            self.log.notes.append(
                f"{self.clipped:,} text{'s' * (self.clipped > 1)} longer than "
                f"{MAX_TEXT_CHARS:,} characters clipped to that length"
            )
        if not self.texts:
            why = ", ".join(
                f"{r} {n} (line {self.log.skipped[r][0]})" for r, n in self.log.n_skipped.items()
            )
            raise DataError(
                f"{what}: {path.name} has no usable row ({self.log.rows_read} read; skipped: "
                f"{why or 'none'}); {hint}"
            )


def _cell(row: list[str], idx: int | None) -> str | None:
    return row[idx] if idx is not None and idx < len(row) else None


def _dataset(name, rows: _Rows, labels: np.ndarray, policies, test_name, **extra) -> ModerationData:
    return ModerationData(
        name=name,
        texts=rows.texts,
        labels=np.asarray(labels, np.int8).reshape(len(rows.texts), -1),
        policies=tuple(policies),
        kinds=np.array([]),
        test_name=test_name,
        log=rows.log,
        **extra,
    )


def _options(spec, fmt: str) -> None:
    extra = set(spec.options) - set(OPTIONS.get(fmt, ()))
    if extra:
        allowed = ", ".join(OPTIONS.get(fmt, ())) or "none"
        raise DataError(
            f"--data {spec.raw!r}: {fmt} takes no option {sorted(extra)[0]!r} (options: {allowed})"
        )


def read_source(source: str) -> tuple[ModerationData, np.ndarray | None, bool]:
    """FORMAT:PATH[?options] -> (data as read, the fixed test rows or None, stratify?)."""
    fmt = source.partition(":")[0]
    spec = parse_spec(source, tuple(LOADERS), OPTIONS.get(fmt, ()))
    _options(spec, spec.fmt)
    return LOADERS[spec.fmt](spec)


# ----------------------------------------------------------------------------- OLID


def read_olid(spec) -> tuple[ModerationData, np.ndarray | None, bool]:
    """OLID v1.0 folder; with testset-levela.tsv + labels-levela.csv, test = OffensEval test A.
    Plain grouped split (the published protocol), not stratified."""
    root = spec.path
    if not root.is_dir():
        raise DataError(f"olid: {root} is not a folder")
    train_path = root / "olid-training-v1.0.tsv"
    if not train_path.is_file():
        raise DataError(f"olid: {root} has no olid-training-v1.0.tsv")
    rows = _Rows(LoadLog(spec.raw))
    _olid_rows(train_path, rows, ("tweet", "subtask_a"), None)
    test_idx, test_name = None, "olid-holdout"
    test_path, labels_path = root / "testset-levela.tsv", root / "labels-levela.csv"
    if test_path.is_file() and labels_path.is_file():
        start = len(rows.texts)
        sub = LoadLog(f"{spec.raw}/{test_path.name}")
        _olid_rows(test_path, _Rows(sub), ("tweet",), _olid_gold(labels_path), into=rows)
        _merge(rows.log, sub, test_path.name)
        test_idx, test_name = np.arange(start, len(rows.texts)), "olid-test-a"
    rows.close("olid", train_path, "expected id<TAB>tweet<TAB>subtask_a (OFF/NOT) per line")
    data = _dataset("olid", rows, rows.labels, ("offensive",), test_name)
    return data, test_idx, False


def _olid_rows(path: Path, rows: _Rows, names, gold: dict | None, into: _Rows | None = None):
    """Rows of an OLID tsv (header by name; without one: id, tweet, subtask_a by position).
    `gold`: id -> label for the test file; else the label is the subtask_a column."""
    table = read_table(path, rows.log, "olid", known=("id", *names))
    t = table.column(("tweet", "text"), "tweet") if table.header else 1
    a = (table.column(("subtask_a",), "subtask_a") if table.header else 2) if gold is None else None
    k = table.column(("id",), "id") if table.header else 0
    dest = into or rows  # the test file's rows join the training file's
    for line, r in table:
        if gold is None:
            lab = {"OFF": 1, "NOT": 0}.get((_cell(r, a) or "").strip().upper())
            reason = "subtask_a not OFF/NOT"
        else:
            lab = gold.get((_cell(r, k) or "").strip())
            reason = "id without a label in labels-levela.csv"
        if lab is None:
            rows.log.skip(line, reason)
            continue
        text = rows.text(line, _cell(r, t))
        if text is not None:
            dest.add(line, text, [lab])
    if into is not None:
        into.clipped += rows.clipped


def _olid_gold(path: Path) -> dict[str, int]:
    """labels-levela.csv: `id,OFF|NOT` per line (copies may carry a header); bad lines are
    left out, so their test rows are skipped as unlabelled."""
    table = read_table(path, LoadLog(path.name), "olid", known=("id", "label"), min_fields=2)
    gold = {}
    for _, r in table:
        lab = {"OFF": 1, "NOT": 0}.get(r[1].strip().upper())
        if lab is not None:
            gold[r[0].strip()] = lab
    return gold


def _merge(log: LoadLog, sub: LoadLog, prefix: str) -> None:
    """Fold a second file's log into `log`, its skip reasons prefixed with the file name."""
    log.rows_read += sub.rows_read
    for reason, n in sub.n_skipped.items():
        key = f"{prefix}: {reason}"
        log.n_skipped[key] = n
        log.skipped[key] = sub.skipped[reason]
    log.notes += sub.notes


# ----------------------------------------------------------------------------- Davidson


def read_davidson(spec) -> tuple[ModerationData, None, bool]:
    """Davidson et al. csv: offensive = class 0 or 1, hate = class 0; keeps annotator counts
    (a row whose counts do not read is kept with none, out of the human-level figure).
    Plain grouped split (as published figures use), not stratified."""
    rows = _Rows(LoadLog(spec.raw))
    table = read_table(spec.path, rows.log, "davidson", known=("tweet", "class", "hate_speech"))
    if table.header:
        t, c = table.column(("tweet", "text"), "tweet"), table.column(("class",), "class")
        votes = [
            table.column((n,), n, required=False)
            for n in ("hate_speech", "offensive_language", "neither")
        ]
    else:  # the published column order: index,count,hate_speech,offensive_language,...
        t, c, votes = 6, 5, [2, 3, 4]
    has_votes = all(v is not None for v in votes)
    counts, bad_votes = [], 0
    for line, r in table:
        cls = (_cell(r, c) or "").strip()
        if cls not in ("0", "1", "2", "0.0", "1.0", "2.0"):
            rows.log.skip(line, "class not 0, 1 or 2")
            continue
        text = rows.text(line, _cell(r, t))
        if text is None:
            continue
        k = int(float(cls))
        rows.add(line, text, [int(k in (0, 1)), int(k == 0)])
        try:
            counts.append([int(float(_cell(r, v))) for v in votes] if has_votes else [0, 0, 0])
        except (TypeError, ValueError):
            counts.append([0, 0, 0])
            bad_votes += 1
    rows.close(
        "davidson",
        spec.path,
        "expected count,hate_speech,offensive_language,neither,"
        "class (0 hate, 1 offensive, 2 neither),tweet",
    )
    if bad_votes:
        rows.log.notes.append(f"{bad_votes:,} rows without readable annotator counts (kept)")
    cnt = np.array(counts, np.int64)
    data = _dataset(
        "davidson",
        rows,
        rows.labels,
        ("offensive", "hate"),
        "davidson-holdout",
        annotator_counts=cnt if has_votes else None,
        agreement=cnt.max(1) / np.maximum(cnt.sum(1), 1) if has_votes else None,
    )
    return data, None, False


# ----------------------------------------------------------------------------- SMS spam


def read_sms_spam(spec) -> tuple[ModerationData, None, bool]:
    """UCI SMS Spam Collection: `ham|spam<TAB>text` per line, no header (one is skipped if
    present), UTF-8 or Latin-1 ("£" kept), CRLF; a line without a tab or with another label is
    skipped and counted. A file with commas and no tab is read as the Kaggle copy (spam.csv:
    v1 = label, v2 = text). Stratified split."""
    log = LoadLog(spec.raw)
    text = read_text(spec.path, log, "sms-spam")
    lines = split_lines(text)
    head = [ln for ln in lines[:50] if ln.strip()]
    if head and not any("\t" in ln for ln in head) and "," in head[0]:
        return _sms_csv(spec, LoadLog(spec.raw)), None, True
    rows = _Rows(log)
    first = next((i for i, ln in enumerate(lines) if ln.strip()), -1)
    for i, ln in enumerate(lines):
        lab, sep, body = ln.partition("\t")
        lab = lab.strip().strip("\"'").lower()
        if i == first and lab in ("label", "class", "category", "type", "v1"):
            continue  # a header line
        log.rows_read += 1
        if not ln.strip():
            log.skip(i + 1, "blank line")
        elif not sep:
            log.skip(i + 1, "no tab")
        elif lab not in ("ham", "spam"):
            log.skip(i + 1, "label not ham/spam")
        elif (t := rows.text(i + 1, body)) is not None:
            rows.add(i + 1, t, [int(lab == "spam")])
    rows.close("sms-spam", spec.path, "expected 'ham|spam<TAB>text' per line")
    return _dataset("sms-spam", rows, rows.labels, ("spam",), "sms-spam"), None, True


def _sms_csv(spec, log: LoadLog) -> ModerationData:
    rows = _Rows(log)
    table = read_table(
        spec.path, log, "sms-spam", known=("v1", "v2", "label", "text", "message"), min_fields=2
    )
    lab_i = table.column(("v1", "label", "category", "class"), "label") if table.header else 0
    txt_i = table.column(("v2", "text", "message", "sms"), "text") if table.header else 1
    for line, r in table:
        lab = (_cell(r, lab_i) or "").strip().lower()
        if lab not in ("ham", "spam"):
            log.skip(line, "label not ham/spam")
        elif (t := rows.text(line, _cell(r, txt_i))) is not None:
            rows.add(line, t, [int(lab == "spam")])
    rows.close("sms-spam", spec.path, "expected v1 (ham/spam), v2 (text) columns")
    return _dataset("sms-spam", rows, rows.labels, ("spam",), "sms-spam")


# ----------------------------------------------------------------------------- csv


def _label_of(value: str | None, binary_policy: str) -> str | None:
    """A csv label -> the policy it violates, "" for clean, None for no label at all."""
    b = parse_binary(value)
    if b is not None:
        return binary_policy if b else ""
    v = (value or "").strip().strip("\"'").strip().lower()
    if v in NEGATIVE_NAMES:
        return ""
    return POSITIVE_NAMES.get(v)


def _text_label_columns(table: Table, spec, what: str) -> tuple[int, int, str]:
    """(text index, label index, the policy of a 0/1 label) by header name; without a header,
    the label is the column whose values read as labels and the text the longest other one."""
    if table.header:
        tname, lname = spec.option("text"), spec.option("label")
        t = table.column((tname,) if tname else TEXT_ALIASES, "text")
        lab = table.column((lname,) if lname else LABEL_ALIASES, "label")
        return t, lab, COLUMN_POLICY.get(table.header[lab], "offensive")
    if spec.options:
        raise DataError(
            f"{what}: {table.path.name} has no header row to find {', '.join(spec.options)} by name"
        )
    sample = table.rows[:500]
    width = min(len(r) for r in sample)
    share = [np.mean([_label_of(r[c], "x") is not None for r in sample]) for c in range(width)]
    lab = int(np.argmax(share))
    if share[lab] < 0.9 or width < 2:
        raise DataError(
            f"{what}: {table.path.name} has no header row and no column of labels; "
            "add a header (text,label)"
        )
    length = [np.mean([len(r[c]) for r in sample]) if c != lab else -1 for c in range(width)]
    t = int(np.argmax(length))
    table.header = []
    return t, lab, "offensive"


def _csv_rows(spec, what: str) -> tuple[_Rows, list[str], Table, tuple[int, int]]:
    """(rows with their label names, the policies in order, the table, (text, label) index)."""
    rows = _Rows(LoadLog(spec.raw))
    # A header is a row naming a text column: label names ("spam", "toxic") are also values.
    known = TEXT_ALIASES + tuple(spec.options.values())
    table = read_table(spec.path, rows.log, what, known=known, min_fields=2)
    t, lab, binary_policy = _text_label_columns(table, spec, what)
    if not table.header:
        rows.log.notes.append(f"no header row: text is column {t + 1}, label column {lab + 1}")
    binary = False  # a 0/1-style label seen: its policy is in the set even without positives
    for line, r in table:
        value = _cell(r, lab)
        pol = _label_of(value, binary_policy)
        if pol is None:
            rows.log.skip(line, "unknown label" if (value or "").strip() else "no label")
            continue
        text = rows.text(line, _cell(r, t))
        if text is not None:
            rows.add(line, text, pol)
            binary = binary or parse_binary(value) is not None
    rows.close(what, spec.path, CSV_HINT)
    named = {p for p in rows.labels if p}
    pols = [p for p in POLICIES if p in named] + sorted(named - set(POLICIES))
    if binary and binary_policy not in pols:
        pols.insert(0, binary_policy)
    if not pols:
        raise DataError(
            f"{what}: {spec.path.name}: only one class: no row is labelled as a "
            f"violation; {CSV_HINT}"
        )
    return rows, pols, table, (t, lab)


def read_csv(spec) -> tuple[ModerationData, None, bool]:
    """csv with a text and a label column by name (TEXT_ALIASES, LABEL_ALIASES, or ?text=,
    ?label=); a 0/1 label is one policy (named by the column: is_spam -> spam, else
    offensive); names make one policy per name seen (multi-class, `none` clean). Other columns
    are ignored. Stratified split."""
    rows, pols, _, _ = _csv_rows(spec, "csv")
    y = np.array([[int(p == q) for q in pols] for p in rows.labels], np.int8)
    return _dataset(spec.path.stem, rows, y, pols, f"{spec.path.stem}-holdout"), None, True


# ----------------------------------------------------------------------------- Jigsaw


def read_jigsaw(spec) -> tuple[ModerationData, None, bool]:
    """Jigsaw Toxic Comment Classification: comment_text + one 0/1 column per policy (those of
    JIGSAW_POLICIES the file has). A row with a label that does not read (the test labels' -1,
    "not scored") is skipped. Stratified by the rarest policy a comment violates."""
    rows = _Rows(LoadLog(spec.raw))
    table = read_table(spec.path, rows.log, "jigsaw", known=("comment_text", *JIGSAW_POLICIES))
    t = table.column((spec.option("text"),) if spec.option("text") else TEXT_ALIASES, "text")
    cols = [(p, table.header.index(p)) for p in JIGSAW_POLICIES if p in table.header]
    if not cols:
        raise DataError(
            f"jigsaw: {spec.path.name} has none of the label columns {', '.join(JIGSAW_POLICIES)}"
        )
    for line, r in table:
        y = [parse_binary(_cell(r, c)) for _, c in cols]
        if any(v is None for v in y):
            rows.log.skip(line, "a label not 0/1")
            continue
        text = rows.text(line, _cell(r, t))
        if text is not None:
            rows.add(line, text, y)
    rows.close(
        "jigsaw",
        spec.path,
        "expected id,comment_text,toxic,severe_toxic,obscene,"
        "threat,insult,identity_hate with 0/1 labels",
    )
    data = _dataset("jigsaw", rows, rows.labels, [p for p, _ in cols], "jigsaw-holdout")
    return data, None, True


def read_jigsaw_bias(spec) -> tuple[ModerationData, None, bool]:
    """Jigsaw Unintended Bias: comment_text, target (share of raters calling it toxic; toxic at
    >= 0.5; `toxicity` in the released test files) and identity columns (share of raters
    hearing the identity; present at >= 0.5, empty = absent), which become the bias cohorts.
    Other columns (severe_toxicity, ..., created_date, rating, funny, ...) are ignored."""
    rows = _Rows(LoadLog(spec.raw))
    table = read_table(spec.path, rows.log, "jigsaw-bias", known=("comment_text", "target"))
    t = table.column((spec.option("text"),) if spec.option("text") else TEXT_ALIASES, "text")
    lname = spec.option("label")
    lab = table.column((lname,) if lname else ("target", "toxicity", "label"), "target")
    ident = [(n, table.header.index(n)) for n in JIGSAW_IDENTITIES if n in table.header]
    masks = []
    for line, r in table:
        y = parse_binary(_cell(r, lab))
        if y is None:
            rows.log.skip(line, "target not a share in [0, 1]")
            continue
        text = rows.text(line, _cell(r, t))
        if text is not None:
            rows.add(line, text, [y])
            masks.append([parse_binary(_cell(r, c)) == 1 for _, c in ident])
    rows.close("jigsaw-bias", spec.path, "expected id,comment_text,target in [0, 1]")
    given = None
    if ident:
        m = np.array(masks, bool).reshape(len(rows.texts), len(ident))
        given = {n: m[:, k] for k, (n, _) in enumerate(ident)}
    else:
        rows.log.notes.append("no identity columns: bias cohorts from the identity term lists")
    data = _dataset(
        "jigsaw-bias", rows, rows.labels, ("toxic",), "jigsaw-bias-holdout", given_identities=given
    )
    return data, None, True


LOADERS = {
    "olid": read_olid,
    "davidson": read_davidson,
    "sms-spam": read_sms_spam,
    "csv": read_csv,
    "jigsaw": read_jigsaw,
    "jigsaw-bias": read_jigsaw_bias,
}


# ----------------------------------------------------------------------------- evaluation sets


def read_eval(source: str) -> EvalSet:
    """hatecheck:FILE, toxicity-pairs:NONFUZZED,FUZZED or csv:FILE[?text=COL&label=COL]."""
    fmt, sep, rest = source.partition(":")
    if not sep or fmt not in EVAL_LOADERS or not rest:
        raise DataError(
            f"--eval {source!r}: use FORMAT:PATH with FORMAT one of {', '.join(EVAL_LOADERS)}"
        )
    spec = parse_spec(source, tuple(EVAL_LOADERS), OPTIONS.get(fmt, ()))
    _options(spec, fmt)
    return EVAL_LOADERS[fmt](spec)


def read_hatecheck(spec) -> EvalSet:
    """HateCheck csv: test_case, label_gold hateful/non-hateful, target_ident, functionality."""
    rows = _Rows(LoadLog(spec.raw))
    table = read_table(spec.path, rows.log, "hatecheck", known=("test_case", "label_gold"))
    t = table.column(("test_case",), "test_case")
    g = table.column(("label_gold",), "label_gold")
    ident = table.column(("target_ident",), "target_ident", required=False)
    func = table.column(("functionality",), "functionality", required=False)
    tags = []
    for line, r in table:
        lab = {"hateful": 1, "non-hateful": 0}.get((_cell(r, g) or "").strip().lower())
        if lab is None:
            rows.log.skip(line, "label_gold not hateful/non-hateful")
        elif (text := rows.text(line, _cell(r, t))) is not None:
            rows.add(line, text, lab)
            tags.append(((_cell(r, ident) or "").strip(), (_cell(r, func) or "").strip()))
    rows.close("hatecheck", spec.path, "expected test_case,label_gold (hateful/non-hateful)")
    return EvalSet(
        "hatecheck",
        "hate",
        rows.texts,
        np.array(rows.labels, np.int8),
        identity=np.array([a for a, _ in tags]),
        functionality=np.array([b for _, b in tags]),
        log=rows.log,
    )


def read_toxicity_pairs(spec) -> EvalSet:
    """Dixon et al. 2018 sets: NONFUZZED.csv,FUZZED.csv with rev_id,comment,toxic; rows are
    paired by rev_id (the fuzzed text has its identity terms swapped)."""
    parts = spec.raw.partition(":")[2].split(",")
    if len(parts) != 2:
        raise DataError("toxicity-pairs: use toxicity-pairs:NONFUZZED.csv,FUZZED.csv")
    tables = []
    log = LoadLog(spec.raw)
    for p in parts:
        table = read_table(
            Path(p).expanduser(),
            log if not tables else LoadLog(p),
            "toxicity-pairs",
            known=("rev_id", "comment", "toxic"),
        )
        cols = [table.column((c,), c) for c in ("rev_id", "comment", "toxic")]
        tables.append((table, cols))
    (t0, (i0, c0, y0)), (t1, (i1, c1, _)) = tables
    fuzzed = {(_cell(r, i1) or "").strip(): _cell(r, c1) or "" for _, r in t1}
    rows, twins = _Rows(log), []
    for line, r in t0:
        key, tox = (_cell(r, i0) or "").strip(), parse_binary(_cell(r, y0))
        if key not in fuzzed:
            log.skip(line, "rev_id not in the fuzzed file")
        elif tox is None:
            log.skip(line, "toxic not 0/1 or true/false")
        elif (text := rows.text(line, _cell(r, c0))) is not None:
            rows.add(line, text, tox)
            twins.append(fuzzed[key])
    rows.close("toxicity-pairs", t0.path, "expected rev_id,comment,toxic in both files")
    return EvalSet(
        "toxicity-pairs",
        "offensive",
        rows.texts,
        np.array(rows.labels, np.int8),
        pair_texts=twins,
        log=log,
    )


def read_eval_csv(spec) -> EvalSet:
    """csv text,label of one policy (as `read_csv`); other columns of 0/1 are identity tags."""
    rows, pols, table, (t, lab) = _csv_rows(spec, "csv")
    if len(pols) != 1:
        raise DataError(
            f"csv: {spec.path.name}: an evaluation csv must hold one policy, got {', '.join(pols)}"
        )
    y = np.array([int(p == pols[0]) for p in rows.labels], np.int8)
    ident = None
    others = [(c, k) for k, c in enumerate(table.header) if k not in (t, lab) and c != "id"]
    if others:
        by_line = dict(iter(table))
        ident = np.array(
            [
                ",".join(c for c, k in others if parse_binary(_cell(by_line[ln], k)) == 1)
                for ln in rows.lines
            ]
        )
    return EvalSet(spec.path.stem, pols[0], rows.texts, y, identity=ident, log=rows.log)


EVAL_LOADERS = {
    "hatecheck": read_hatecheck,
    "toxicity-pairs": read_toxicity_pairs,
    "csv": read_eval_csv,
}
