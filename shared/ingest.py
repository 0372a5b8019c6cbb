"""Reading a user's own files: decoding, delimited tables, labels, skipped rows, exact-duplicate
cleaning, and the data section that every run's report and `casebook check` print.

    spec = parse_spec("csv:comments.csv?text=body&label=is_toxic", ("csv", "jigsaw"))
    log = LoadLog(spec.raw)
    text = read_text(path, log)                         # BOM, UTF-8, else cp1252, else Latin-1
    table = read_table(path, log, known=("text", "label"))   # header by name, any delimiter
    t = table.column(("comment_text", "text"), "the text")   # a column index by name
    for line, row in table: ...                         # rows with the file line they start on
    y = parse_binary(" True ")                          # 1; None when it is no label at all
    keep, y = dedupe(keys, y, log, texts)               # before the split; conflicts by majority
    print(data_section(log, splits={"train": 900, ...}, balance={...}, gate=[...]))

What a real file brings and what this module does with it:
    UTF-8 with a BOM, UTF-16 with a BOM      decoded; the BOM is dropped
    not UTF-8 (Latin-1, Windows-1252)        decoded as Windows-1252, else Latin-1 (noted)
    NUL bytes (no UTF-16 BOM)                refused: a binary file, not text
    CRLF, CR                                 one line ending (`split_lines`, the csv module)
    quoted newlines in a csv field           kept inside the field (the whole text is parsed)
    header or none, column order, extras     columns are found by name; extras are ignored
    ; | or tab instead of ,                  the delimiter is the most frequent one on line 1
    fields over csv's 128 KB default         read (the field size limit is raised)
    empty, whitespace-only, short rows       skipped and counted with their line numbers
A file with no usable row is a DataError; a bad row never is.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import DataError

# Line numbers kept per skip reason for the report (the count is always exact).
MAX_LINES_SHOWN = 20
# Examples kept per removal reason for the report.
MAX_EXAMPLES = 3
DELIMITERS = (",", "\t", ";", "|")
_TRUE = frozenset({"1", "1.0", "true", "t", "yes", "y", "positive", "pos"})
_FALSE = frozenset({"0", "0.0", "false", "f", "no", "n", "negative", "neg"})
_NEWLINE = re.compile(r"\r\n|\r|\n")


@dataclass
class LoadLog:
    """What happened to a source's rows on the way in: read, skipped (with line numbers),
    removed while cleaning (with examples), and notes a person should see.

    `skip` is for a row that could not be used (empty, no label, too few fields); `remove` is
    for a usable row that cleaning took out (an exact duplicate, a conflicting label).
    """

    source: str
    encoding: str = ""
    rows_read: int = 0
    skipped: dict[str, list[int]] = field(default_factory=dict)  # reason -> line numbers
    n_skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    removed: dict[str, int] = field(default_factory=dict)  # reason -> rows removed
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few examples
    notes: list[str] = field(default_factory=list)

    def skip(self, line: int, reason: str) -> None:
        """Count one unusable row; keep its line number (the first MAX_LINES_SHOWN per reason)."""
        self.n_skipped[reason] = self.n_skipped.get(reason, 0) + 1
        lines = self.skipped.setdefault(reason, [])
        if len(lines) < MAX_LINES_SHOWN:
            lines.append(int(line))

    def remove(self, reason: str, count: int, examples: Sequence[str] = ()) -> None:
        """Count `count` rows removed for `reason`, with up to MAX_EXAMPLES examples."""
        if count <= 0:
            return
        self.removed[reason] = self.removed.get(reason, 0) + int(count)
        kept = self.examples.setdefault(reason, [])
        for e in examples:
            if len(kept) >= MAX_EXAMPLES:
                break
            kept.append(_short(e))

    @property
    def total_skipped(self) -> int:
        return sum(self.n_skipped.values())

    @property
    def total_removed(self) -> int:
        return sum(self.removed.values())

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.total_skipped - self.total_removed

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "encoding": self.encoding,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "skipped": {
                r: {"count": n, "lines": self.skipped[r]} for r, n in self.n_skipped.items()
            },
            "removed": {
                r: {"count": n, "examples": self.examples.get(r, [])}
                for r, n in self.removed.items()
            },
            "notes": list(self.notes),
        }

    def markdown(self) -> str:
        """The reading and cleaning steps as a table, then skipped lines, examples and notes."""
        n = max(self.rows_read, 1)
        enc = f" ({self.encoding})" if self.encoding else ""
        lines = [
            f"Source: `{self.source}`{enc}",
            "",
            "| step | rows | share of read |",
            "|---|---|---|",
            f"| read | {self.rows_read:,} | 100% |",
        ]
        for reason, count in self.n_skipped.items():
            lines.append(f"| skipped: {reason} | {count:,} | {count / n:.2%} |")
        for reason, count in self.removed.items():
            lines.append(f"| removed: {reason} | {count:,} | {count / n:.2%} |")
        lines.append(f"| kept | {self.rows_kept:,} | {self.rows_kept / n:.2%} |")
        for reason, at in self.skipped.items():
            more = self.n_skipped[reason] - len(at)
            where = ", ".join(map(str, at)) + (f" and {more:,} more" if more > 0 else "")
            lines.append(f"- skipped ({reason}): line{'s' if len(at) > 1 else ''} {where}")
        for reason, shown in self.examples.items():
            if shown:
                lines.append(f"- removed ({reason}), e.g. " + "; ".join(f"`{e}`" for e in shown))
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def _short(text: str, limit: int = 80) -> str:
    t = " ".join(str(text).split()).replace("`", "'")
    return t if len(t) <= limit else t[: limit - 3] + "..."


# ----------------------------------------------------------------------------- --data specs


@dataclass
class DataSpec:
    """`--data FORMAT:PATH[?NAME=COLUMN&...]`: the format, the path, and column options.

    The query-style suffix names the columns of a file whose header differs from what the
    format expects, the same way in every case: `csv:posts.csv?text=body&label=is_toxic`,
    `interactions:log.tsv?user=visitor&item=video&time=ts`, `csv:chat.csv?message=q&reply=a`.
    """

    fmt: str
    path: Path
    options: dict[str, str]
    raw: str

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)


def parse_spec(spec: str, formats: Sequence[str], allowed: Sequence[str] = ()) -> DataSpec:
    """Parse FORMAT:PATH[?NAME=VALUE&...]; a DataError that lists the formats (or the allowed
    option names) when the spec does not fit."""
    fmt, sep, rest = str(spec).partition(":")
    if not sep or fmt not in formats or not rest:
        raise DataError(
            f"--data {spec!r}: use builtin or FORMAT:PATH[?column options] with FORMAT one of "
            f"{', '.join(formats)}"
        )
    path, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq or not name or not value:
            raise DataError(f"--data {spec!r}: expected NAME=COLUMN after '?', got {part!r}")
        if allowed and name not in allowed:
            raise DataError(
                f"--data {spec!r}: unknown option {name!r} for {fmt}; use {', '.join(allowed)}"
            )
        options[name] = value
    return DataSpec(fmt, Path(path).expanduser(), options, str(spec))


# ----------------------------------------------------------------------------- text


def decode(raw: bytes, what: str) -> tuple[str, str]:
    """Bytes -> (text, encoding name).

    A BOM decides (UTF-8, UTF-16 LE/BE) and is dropped. Otherwise strict UTF-8, then
    Windows-1252 (Latin-1 with printable 0x80-0x9F, what spreadsheets on Windows write), then
    Latin-1, which decodes any bytes. NUL bytes in a file without a UTF-16 BOM mean a binary
    file: a DataError naming `what`.
    """
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if raw.startswith(bom):
            return raw.decode(enc, errors="replace").lstrip("\ufeff"), enc
    if b"\x00" in raw[:65536]:
        raise DataError(f"{what} is a binary file (NUL bytes), not text")
    for enc in ("utf-8", "cp1252"):
        try:
            return raw.decode(enc), enc
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1"), "latin-1"


def read_text(path: str | Path, log: LoadLog | None = None, what: str | None = None) -> str:
    """A text file in any of `decode`'s encodings; the encoding goes into `log`."""
    path = Path(path).expanduser()
    what = what or str(path)
    if not path.is_file():
        raise DataError(f"{what}: file {path} not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{what}: cannot read {path}: {e.strerror}") from None
    text, enc = decode(raw, what)
    if log is not None:
        log.encoding = log.encoding or enc
        if enc not in ("utf-8", "utf-8-sig") and f"read as {enc}" not in " ".join(log.notes):
            log.notes.append(f"{path.name} is not UTF-8: read as {enc}")
    return text


def split_lines(text: str) -> list[str]:
    """Lines on \\n, \\r\\n or \\r only (str.splitlines also splits on \\x85, \\x0c and
    \\u2028, which Latin-1 text and pasted messages hold inside a line)."""
    lines = _NEWLINE.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ----------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A delimited file: its header (names lower-cased and stripped; [] without one), its rows
    and the file line each row starts on (1-based, so a report can point at it)."""

    path: Path
    what: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    delimiter: str

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return iter(zip(self.lines, self.rows, strict=True))

    def column(self, names: Sequence[str], role: str, required: bool = True) -> int | None:
        """The index of the first header name in `names` (case-insensitive), else None; a
        DataError naming the header when `required`."""
        for name in names:
            if name.lower() in self.header:
                return self.header.index(name.lower())
        if required:
            have = ", ".join(self.header) if self.header else "no header row"
            raise DataError(
                f"{self.what}: {self.path.name} has no {role} column (looked for "
                f"{', '.join(names)}; the file has {have})"
            )
        return None


def sniff_delimiter(first_line: str, path: Path) -> str:
    """Tab for .tsv/.tab files; else whichever of , TAB ; | occurs most on the first line."""
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def read_table(
    path: str | Path,
    log: LoadLog,
    what: str | None = None,
    known: Sequence[str] = (),
    header: bool | None = None,
    delimiter: str | None = None,
    min_fields: int = 1,
) -> Table:
    """A csv/tsv file as a `Table`.

    header: True, False, or None to decide: the first row is a header when one of its cells is
    a `known` column name (case-insensitive). Rows that are blank, whitespace-only or have fewer
    than `min_fields` fields are skipped into `log` with their line numbers; `log.rows_read`
    counts every data row. A DataError when no row is usable.
    """
    path = Path(path).expanduser()
    what = what or log.source
    text = read_text(path, log, what)
    first = next((ln for ln in split_lines(text[:65536]) if ln.strip()), "")
    delim = delimiter or sniff_delimiter(first, path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a 1 MB pasted comment is still one row
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    rows, lines, names, end = [], [], [], 0
    known_l = {k.lower() for k in known}
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                log.rows_read += 1
                log.skip(start, "blank row")
                continue
            if not names and not rows and header is not False:
                lowered = [c.lower().lstrip("\ufeff") for c in cells]
                if header or known_l.intersection(lowered):
                    names = lowered
                    continue
            log.rows_read += 1
            if len(row) < min_fields:
                log.skip(start, f"fewer than {min_fields} fields")
                continue
            rows.append(row)
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"{what}: {path.name} line {end + 1}: not valid csv ({e})") from None
    if not rows:
        raise DataError(f"{what}: {path.name} has no usable rows ({log.rows_read} read)")
    return Table(path, what, names, rows, lines, delim)


# ----------------------------------------------------------------------------- labels


def parse_binary(
    value: str | None, positive: Sequence[str] = (), negative: Sequence[str] = ()
) -> int | None:
    """A 0/1 label from what files hold, or None when the value is no label.

    1: 1, true, t, yes, y, positive, a number in [0.5, 1] (a share of annotators, as in
    Jigsaw's `target`), or a name in `positive`; 0: 0, false, no, ..., a number in [0, 0.5),
    or a name in `negative`. Case and surrounding spaces and quotes are ignored.
    """
    if value is None:
        return None
    v = value.strip().strip("\"'").strip().lower()
    if v in _TRUE or v in {p.lower() for p in positive}:
        return 1
    if v in _FALSE or v in {n.lower() for n in negative}:
        return 0
    try:
        x = float(v)
    except ValueError:
        return None
    if 0.0 <= x <= 1.0:
        return int(x >= 0.5)
    return None


# ----------------------------------------------------------------------------- cleaning


def dedupe(
    keys: Sequence[str],
    labels: np.ndarray | None,
    log: LoadLog | None = None,
    shown: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One row per key, before any split, so no text sits in both train and test.

    keys: the case's normalised form of each row (N,). labels: (N,) or (N, P) ints, or None.
    shown: what a report shows for each row (default: the key).
    Within a group of equal keys the first row is kept. When the group's labels disagree, the
    kept row takes the most frequent label (vector); a tie for the most frequent drops the
    whole group. Counts go to `log` as "exact duplicates", "conflicting labels (majority
    kept)" and "conflicting labels (tie, dropped)".

    Returns (kept indices in file order, their labels or None).
    """
    n = len(keys)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    y = None if labels is None else np.asarray(labels).copy()
    keep: list[int] = []
    dup, dup_ex, maj, maj_ex, tie, tie_ex = 0, [], 0, [], 0, []
    show = shown if shown is not None else keys
    for idx in groups.values():
        if len(idx) == 1:
            keep.append(idx[0])
            continue
        votes = Counter() if y is None else Counter(_label_key(y[i]) for i in idx)
        if len(votes) <= 1:
            keep.append(idx[0])
            dup += len(idx) - 1
            dup_ex.append(f"{show[idx[0]]} (x{len(idx)})")
            continue
        (top, c1), (_, c2) = votes.most_common(2)
        if c1 == c2:
            tie += len(idx)
            tie_ex.append(f"{show[idx[0]]} ({_votes(votes)})")
            continue
        first = idx[0]
        y[first] = np.array(top, dtype=y.dtype).reshape(y[first].shape)
        keep.append(first)
        maj += len(idx) - 1
        maj_ex.append(f"{show[first]} ({_votes(votes)})")
    kept = np.array(sorted(keep), dtype=np.int64)
    if log is not None:
        log.remove("exact duplicates", dup, dup_ex)
        log.remove("conflicting labels (majority kept)", maj, maj_ex)
        log.remove("conflicting labels (tie, dropped)", tie, tie_ex)
    assert len(kept) + dup + maj + tie == n
    return kept, (None if y is None else y[kept])


def _label_key(row) -> tuple:
    return tuple(np.atleast_1d(row).tolist())


def _votes(votes: Counter) -> str:
    return ", ".join(
        f"{'/'.join(map(str, k)) if len(k) > 1 else k[0]}: {c}" for k, c in votes.most_common()
    )


# ----------------------------------------------------------------------------- the report


def data_section(
    log: LoadLog,
    splits: dict[str, int],
    balance: dict[str, dict[str, float]] | None = None,
    gate: Sequence[str] = (),
    unit: str = "rows",
) -> str:
    """The "Data" section of a report and of `casebook check`'s data_report.md.

    splits: part -> size (in `unit`). balance: label -> {part: positive share}. gate: one line
    per gate verdict.
    """
    out = [log.markdown(), ""]
    out.append("Split: " + ", ".join(f"{k} {v:,}" for k, v in splits.items()) + f" {unit}")
    if balance:
        out += ["", "| label | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
        for name, shares in balance.items():
            cells = " | ".join(f"{shares.get(p, float('nan')):.2%}" for p in splits)
            out.append(f"| {name} | {cells} |")
    if gate:
        out += ["", "Data gate:"] + [f"- {g}" for g in gate]
    return "\n".join(out)
