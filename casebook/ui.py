"""`casebook ui`: the runs in a browser; `casebook compare`: two runs in the terminal.

    casebook ui                          # http://127.0.0.1:8050/ over ./runs; Ctrl-C to stop
    casebook ui --runs /data/runs --port 8051
    casebook compare runs/mobile-keyboard/20261124-101500 runs/mobile-keyboard/20261125-090000

Pages (a small standard-library HTTP server on 127.0.0.1, no framework):
  /                    every run (case, time, data, preset, production model, headline metric,
                       promoted or not), with A/B choices to compare two of them
  /run?path=REL        a run's report.md, its figures inline
  /compare?a=REL&b=REL the two runs side by side: their summaries and every table with B - A
  /file?path=REL       a figure (.png) of a run; nothing outside --runs is served

The comparison itself is `shared.compare`, the same for both commands.
"""

from __future__ import annotations

import html
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

from shared.compare import compare_runs, comparison_text, find_runs, format_diff, read_run
from shared.errors import CasebookError
from shared.report import format_number

DEFAULT_PORT = 8050  # beside `casebook serve`'s 8000

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0; color: #1d232b; background: #f6f7f9; }
header { background: #1d232b; color: #fff; padding: 14px 24px; }
header a { color: #c5ccd4; }
main { padding: 18px 24px; }
h1 { font-size: 20px; margin: 0; } h2 { font-size: 17px; } h3 { font-size: 15px; }
table { border-collapse: collapse; background: #fff; margin: 8px 0 18px; font-size: 14px; }
th, td { border: 1px solid #d8dde3; padding: 4px 8px; text-align: left; }
th { background: #eef1f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.diff { font-weight: 600; } tr.differs td { background: #fff8e6; }
img { max-width: 900px; display: block; margin: 8px 0; border: 1px solid #d8dde3; }
button { font: inherit; padding: 6px 14px; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
.error { background: #fbe2e0; border: 1px solid #eab4ae; color: #b3261e; padding: 8px 10px; }
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>"
        f'<a href="/">all runs</a></header><main>{body}</main></body></html>'
    )


def _inline(text: str) -> str:
    """Markdown inline marks on already-escaped text: `code`, **bold**, *italic*."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"(?<![*\w])\*([^*]+)\*(?![*\w])", r"<i>\1</i>", text)


def markdown_html(md: str, figure_url) -> str:
    """The Markdown a RunReport writes (headings, tables, images, bullets, paragraphs) as HTML.
    `figure_url(name)` gives an image's URL. Everything else is escaped text."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        m = re.match(r"^(#{1,4})\s+(.*)$", line)
        img = re.match(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$", line)
        if m:
            n = len(m.group(1)) + 1  # the page's own title is h1
            out.append(f"<h{n}>{_inline(html.escape(m.group(2)))}</h{n}>")
            i += 1
        elif img:
            cap, src = html.escape(img.group(1)), figure_url(img.group(2))
            out.append(f'<img src="{html.escape(src)}" alt="{cap}">')
            i += 1
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            head, *body = rows
            th = "".join(f"<th>{_inline(html.escape(c))}</th>" for c in head)
            trs = "".join(
                "<tr>" + "".join(f"<td>{_inline(html.escape(c))}</td>" for c in r) + "</tr>"
                for r in body
            )
            out.append(f"<table><tr>{th}</tr>{trs}</table>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]))
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(html.escape(t))}</li>" for t in items))
            out[-1] += "</ul>"
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\||!\[)", lines[i]):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(html.escape(' '.join(para)))}</p>")
    return "\n".join(out)


def _yes_no(promoted: Any) -> str:
    return {True: "promoted", False: "not promoted"}.get(promoted, "not registered")


def runs_page(root: Path) -> str:
    """The list of runs, with A/B choices for /compare."""
    runs = []
    for folder in find_runs(root):
        try:
            runs.append(read_run(folder))
        except CasebookError:
            continue  # a run still being written, or not a run
    if not runs:
        return _page(
            "casebook runs",
            f"<p>No runs under <code>{html.escape(str(root))}</code> yet: "
            "<code>make run</code> or <code>casebook run CASE</code> writes them.</p>",
        )
    rows = []
    for r in runs:
        rel = str(Path(r["path"]).relative_to(root))
        q = html.escape(quote(rel))
        version = f" ({html.escape(r['version'])})" if r.get("version") else ""
        rows.append(
            f'<tr data-run="{html.escape(rel)}">'
            f'<td><input type="radio" name="a" value="{html.escape(rel)}" aria-label="A"></td>'
            f'<td><input type="radio" name="b" value="{html.escape(rel)}" aria-label="B"></td>'
            f"<td>{html.escape(r['case'])}</td>"
            f'<td><a href="/run?path={q}">{html.escape(r["name"])}</a></td>'
            f"<td>{html.escape(str(r['data']))}</td><td>{html.escape(str(r['preset']))}</td>"
            f"<td>{html.escape(r['production_model'])}</td>"
            f'<td class="headline">{html.escape(r["headline"])}</td>'
            f'<td class="promoted">{_yes_no(r["promoted"])}{version}</td></tr>'
        )
    body = (
        f"<p>{len(runs)} runs under <code>{html.escape(str(root))}</code>. Pick A and B of the "
        'same case to compare them.</p><form action="/compare" method="get"><table>'
        "<tr><th>A</th><th>B</th><th>case</th><th>run (report)</th><th>data</th><th>preset</th>"
        "<th>production model</th><th>headline</th><th>registry</th></tr>"
        + "".join(rows)
        + '</table><button type="submit" id="compare">Compare A and B</button></form>'
    )
    return _page("casebook runs", body)


def run_page(root: Path, rel: str) -> str:
    folder = _inside(root, rel)
    try:
        md = (folder / "report.md").read_text("utf-8")
    except OSError:
        raise CasebookError(f"{rel}: no report.md") from None
    body = markdown_html(md, lambda name: f"/file?path={quote(str(Path(rel) / name))}")
    return _page(f"run {rel}", body)


def compare_page(root: Path, rel_a: str, rel_b: str) -> str:
    diff = compare_runs(read_run(_inside(root, rel_a)), read_run(_inside(root, rel_b)))
    esc = html.escape
    parts = [f"<p>A: <code>{esc(rel_a)}</code><br>B: <code>{esc(rel_b)}</code></p>"]
    if not diff["same_case"]:
        parts.append(
            '<p class="error">The runs are of different cases; only shared tables line up.</p>'
        )
    parts.append('<table id="summary"><tr><th></th><th>A</th><th>B</th></tr>')
    for s in diff["summary"]:
        cls = "" if s["same"] else ' class="differs"'
        a, b = (esc(format_number(x)) for x in (s["a"], s["b"]))
        parts.append(f"<tr{cls}><th>{esc(s['field'])}</th><td>{a}</td><td>{b}</td></tr>")
    parts.append("</table>")
    for t in diff["tables"]:
        parts.append(f"<h2>Table <code>{esc(t['table'])}</code></h2>")
        parts.append(
            f'<table class="diff" data-table="{esc(t["table"])}"><tr><th>model</th><th>metric</th>'
            "<th>A</th><th>B</th><th>B - A</th></tr>"
        )
        for r in t["rows"]:
            d = r["diff"]
            a = "-" if r["a"] is None else format_number(r["a"])
            b = "-" if r["b"] is None else format_number(r["b"])
            parts.append(
                f"<tr><td>{esc(r['model'])}</td><td>{esc(r['metric'])}</td>"
                f'<td class="num">{esc(a)}</td><td class="num">{esc(b)}</td>'
                f'<td class="num diff">{esc(format_diff(d, r["rel"]))}</td></tr>'
            )
        parts.append("</table>")
    return _page("casebook compare", "".join(parts))


def _inside(root: Path, rel: str) -> Path:
    """`root / rel`, refused (CasebookError) when it leaves root."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise CasebookError(f"{rel}: outside the runs folder")
    return path


class _Handler(BaseHTTPRequestHandler):
    root: Path  # set on the subclass `make_server` builds

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/":
                self._send(200, runs_page(self.root))
            elif url.path == "/run":
                self._send(200, run_page(self.root, q.get("path", "")))
            elif url.path == "/compare":
                if not q.get("a") or not q.get("b"):
                    raise CasebookError("pick a run as A and one as B")
                self._send(200, compare_page(self.root, q["a"], q["b"]))
            elif url.path == "/file":
                path = _inside(self.root, q.get("path", ""))
                if path.suffix.lower() != ".png" or not path.is_file():
                    raise CasebookError("only a run's .png figures are served")
                self._send(200, path.read_bytes(), "image/png")
            else:
                self._send(404, _page("not found", f"<p>No page {html.escape(url.path)}.</p>"))
        except CasebookError as e:
            body = f'<p class="error">{html.escape(str(e))}</p>'
            self._send(400, _page("casebook runs", body))

    def _send(self, status: int, body: str | bytes, ctype: str = "text/html") -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header(
            "content-type", f"{ctype}; charset=utf-8" if ctype == "text/html" else ctype
        )
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:  # quiet: one line per request is noise here
        pass


def make_server(root: str | Path, port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """An HTTP server for the runs under `root`, on 127.0.0.1:`port` (0: a free port); call
    `serve_forever()` on it (or `start_in_thread`)."""
    root = Path(root)
    if not root.is_dir():
        raise CasebookError(f"{root}: no such runs folder (make run writes ./runs)")
    handler = type("RunsHandler", (_Handler,), {"root": root})
    try:
        return ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
    except OSError as e:
        raise CasebookError(
            f"port {port} on 127.0.0.1: {e.strerror}; pass another with --port"
        ) from None


def start_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="casebook-ui", daemon=True)
    thread.start()
    return thread


def serve_ui(root: str | Path, port: int = DEFAULT_PORT) -> None:
    """`casebook ui`: serve until Ctrl-C."""
    server = make_server(root, port)
    print(
        f"runs of {root} on http://127.0.0.1:{server.server_address[1]}/ ; Ctrl-C to stop",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopping")
    finally:
        server.server_close()


def compare_cli(a: str | Path, b: str | Path) -> str:
    """`casebook compare A B`: the comparison as terminal text."""
    return comparison_text(compare_runs(read_run(a), read_run(b)))
