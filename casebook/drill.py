"""`casebook drill <case|all>`: failure drills against a case's live Ray Serve app (issue 17).

    casebook drill mobile-keyboard                      # trains a fresh artifact first
    casebook drill video-recommendation --artifact runs/video-recommendation/registry
    casebook drill all --quick

For each case: an artifact (the case's own `run()` at its default preset into a temporary run
folder, or `--artifact`, copied into a scratch registry so no drill touches the user's), the
case's app (`cases/<pkg>/serve.py: build_app`) with 2 replicas of its ingress on a local Ray
bound to 127.0.0.1, then the drills, in this order:

  bad_input      >= 200 malformed requests per POST route, generated with hypothesis from the
                 route's request schema in the app's /openapi.json, plus hand-written hostile
                 cases (empty, not JSON, wrong types, missing/extra fields, 1e400, 2**64, NaN,
                 deep nesting, 10 MB, invalid UTF-8, wrong content type). Pass: no 5xx, no hang,
                 every hand-written case a 4xx with a message, every generated 4xx has a
                 message, and a good request still answers 200 afterwards. hypothesis comes
                 with the dev extra only; without it the generated part is a fixed built-in
                 set (`builtin_fuzz_bodies`, a few dozen per route) and the figure says so.
  corrupt_model  a registered copy of the champion with one flipped byte is promoted and
                 /reload called while requests flow. Pass: 409 with a reason, the served hash
                 unchanged, no request failed.
  silent_failure a copy of the champion with every float tensor shuffled (safetensors, ONNX
                 initializers, .npy) and its manifest rewritten (valid sha256), offered for
                 promotion: the case's LOADER + golden check (shared.lifecycle.check_candidate)
                 must refuse it, and promoted anyway, /reload must answer 409 on every replica
                 with the old hash still served. Then forced live (Registry.promote(force=True),
                 the operator's override) and fed the golden requests: the live monitor must
                 raise a model alarm (collapse, score_drift or decision_rate) on a replica
                 within replicas x (min_count + check_every) requests + one chunk (the design
                 bound: one verdict per check_every once min_count are in). Champion restored.
  drift          the golden requests as traffic (control: no drift alarm allowed), then the
                 same requests shifted (main text 5x longer, its words replaced by random
                 letters, its letters moved to the Cyrillic alphabet), each phase on fresh
                 monitor windows: every replica must report the shift, a drift alarm naming
                 the input features that moved or a score_drift alarm on the scores. PSI/KS
                 per feature in metrics.json.
  load           32 requests in flight for a bounded time (shared.loadgen): p50, p99, errors,
                 and the app's CPU per request (CPU seconds of the Ray processes / requests).
  replica_kill   one ingress replica's process is killed (SIGKILL, by its pid from /status)
                 under 8 in flight, twice: without retries, then with the client-side retry
                 policy (shared.retry.post_with_retry: the route is a pure prediction, so
                 idempotent; 3 attempts, backoff). A single-deployment app has no code that
                 outlives its replica and Serve's proxy does not re-send a request a replica
                 died with, so for it the retry is the client's (see shared.retry). Pass:
                 without retries, failures no more than the requests in flight; with them,
                 none; the replica replaced both times (time to recover reported).
  bad_batch      shared.gate refuses a duplicated, a bot-flooded, a label-flipped and a
                 schema-drifted batch and passes a fresh one. Generic: the gate with a schema of
                 its own (the cases expose no common gate schema yet), refused batches
                 quarantined under the drill folder.
  sockets        every listening socket of the app's processes is on 127.0.0.1.

silent_failure and drift need the case to ship a golden set and a monitor reference
(shared.golden: golden.json, monitor_reference.json, the predictor's `observation`, the serve
module's LOADER); without them they fail, saying so.

Everything started here is stopped here (Serve's API, then the Ray it started; by pid for the
killed replica, never by name). Writes runs/drill/<case>/<UTC time>/metrics.json + report.md and
prints one pass/fail line per drill; `casebook drill all` also writes the reliability table of
every case to runs/drill/summary.md (or <--out>/summary.md) and prints it. Exit status 1 when a
drill fails.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from casebook.catalog import add_common_run_flags, available_cases, load_case
from shared.errors import CasebookError, first_line

DRILLS = (
    "bad_input",
    "corrupt_model",
    "silent_failure",
    "drift",
    "load",
    "replica_kill",
    "bad_batch",
    "sockets",
)
MODEL_ALARMS = ("collapse", "score_drift", "decision_rate")  # the monitor's model-health checks
ALARM_CHUNK = 20  # requests between two looks at /status while counting to an alarm
FUZZ_PER_ROUTE = 200  # the floor: at least 200 generated requests per route
TIMEOUT_S = 30.0  # a request unanswered after this long is a hang
BIG_BODY = 10 * 1024 * 1024  # the "10 MB body" hostile case


@dataclass
class DrillResult:
    """One drill's verdict: its headline figure (one line) and the numbers behind it."""

    name: str
    passed: bool
    figure: str
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:14s} {self.figure}"


# --- Requests: the app's schema, good examples, hostile and generated bodies -----------------


def _resolve(schema: dict, components: dict) -> dict:
    """Follow one `$ref` into components/schemas (FastAPI's request bodies are refs)."""
    ref = schema.get("$ref")
    if ref and ref.startswith("#/components/schemas/"):
        return components.get(ref.rsplit("/", 1)[1], {})
    return schema


def post_routes(openapi: dict) -> dict[str, dict]:
    """{path: resolved JSON schema of the request body} for every POST route that takes JSON."""
    components = openapi.get("components", {}).get("schemas", {})
    routes = {}
    for path, ops in openapi.get("paths", {}).items():
        body = (ops.get("post") or {}).get("requestBody")
        if not body:
            continue
        schema = body.get("content", {}).get("application/json", {}).get("schema")
        if schema:
            routes[path] = _resolve(schema, components)
    return routes


def good_request(case: str, path: str, schema: dict) -> tuple[dict | None, str]:
    """A request the route should answer 200: the first of the schema's `examples`.

    Each case's request model carries it (`json_schema_extra={"examples": [...]}`), so the drill
    holds no case knowledge. Returns (request or None, where it came from: "openapi examples" /
    "none").
    """
    examples = schema.get("examples")
    if isinstance(examples, list) and examples and isinstance(examples[0], dict):
        return examples[0], "openapi examples"
    return None, "none"


def _prop_limits(prop: dict) -> dict:
    """A property's maxLength/maximum/minimum/maxItems, looking inside anyOf too."""
    out = {}
    for part in [prop, *prop.get("anyOf", [])]:
        for key in ("maxLength", "maximum", "minimum", "maxItems", "type"):
            if key in part and key not in out:
                out[key] = part[key]
    return out


def hostile_cases(schema: dict, good: dict) -> list[tuple[str, bytes, str]]:
    """The hand-written hostile requests: [(label, body bytes, content type)].

    Each must get a 4xx with a message, except those labelled "(edge)": a huge number where the
    schema allows any integer may be a valid request, so those must only not fail (2xx or 4xx).
    """
    props = list(schema.get("properties", {}))
    required = list(schema.get("required", []))
    field_ = required[0] if required else (props[0] if props else "x")
    js = "application/json"

    def body(obj: Any) -> bytes:
        return json.dumps(obj, allow_nan=True).encode()

    def with_raw(raw: str) -> bytes:  # a JSON number literal Python's json would not write
        return body({**good, field_: "@@"}).replace(b'"@@"', raw.encode())

    cases = [
        ("empty body", b"", js),
        ("not JSON", b"this is not json", js),
        ("truncated JSON", body(good)[:-1], js),
        ("JSON list instead of object", body([good]), js),
        ("JSON string instead of object", body("hello"), js),
        # With no required field, {} is a valid request: it must only not fail.
        ("empty object" + ("" if required else " (edge)"), b"{}", js),
        (f"wrong type: {field_} is a dict", body({**good, field_: {"a": 1}}), js),
        (f"wrong type: {field_} is a list", body({**good, field_: [1, 2]}), js),
        (f"1e400 in {field_}", with_raw("1e400"), js),
        (f"2**64 in {field_}", body({**good, field_: 2**64}), js),
        (f"NaN in {field_}", with_raw("NaN"), js),
        (f"-Infinity in {field_}", with_raw("-Infinity"), js),
        ("extra field", body({**good, "zz_extra_field": 1}), js),
        ("deep nesting (100k)", b"[" * 100_000 + b"]" * 100_000, js),
        ("deep nesting in a field", with_raw("[" * 5000 + "]" * 5000), js),
        ("10 MB body", body({**good, "pad": "x" * BIG_BODY}), js),
        ("invalid UTF-8", body(good)[:-1] + b', "zz": "\xff\xfe\xfd"}', js),
        ("lone surrogate escape", body({**good, field_: "\ud800"}), js),
        ("wrong content type (text/plain)", b"context=hello", "text/plain"),
        ("binary content type", b"\x89PNG\r\n\x1a\n", "image/png"),
    ]
    for name in props:
        lim = _prop_limits(schema["properties"][name])
        if lim.get("type") == "array":  # e.g. {"blocked": [10**30]}: an overflow downstream
            cases.append((f"[2**64] in {name} (edge)", body({**good, name: [2**64]}), js))
            cases.append((f"[-2**63-1] in {name} (edge)", body({**good, name: [-(2**63) - 1]}), js))
        elif lim.get("type") in ("integer", "number"):
            cases.append((f"2**64 in {name} (edge)", body({**good, name: 2**64}), js))
            cases.append((f"1e308 in {name} (edge)", body({**good, name: 1e308}), js))
    if required:
        for name in required:
            cases.append(
                (f"missing {name}", body({k: v for k, v in good.items() if k != name}), js)
            )
    for name in props:
        lim = _prop_limits(schema["properties"][name])
        if "maxLength" in lim:
            long = "a " * (int(lim["maxLength"]) // 2 + 1)
            cases.append((f"{name} over maxLength", body({**good, name: long}), js))
        if "maximum" in lim:
            cases.append((f"{name} over maximum", body({**good, name: lim["maximum"] + 1}), js))
        if "minimum" in lim:
            cases.append((f"{name} under minimum", body({**good, name: lim["minimum"] - 1}), js))
        if "maxItems" in lim:
            items = [1] * (int(lim["maxItems"]) + 1)
            cases.append((f"{name} over maxItems", body({**good, name: items}), js))
    return cases


def fuzz_source() -> str:
    """Where the generated bad requests come from: "hypothesis" when it is installed (the dev
    extra: `pip install -e '.[dev]'`), else "built-in" (`builtin_fuzz_bodies`)."""
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        return "built-in"
    return "hypothesis"


def fuzz_bodies(schema: dict, good: dict, n: int = FUZZ_PER_ROUTE) -> list[tuple[str, bytes]]:
    """`fuzz_bodies_uncached`, remembered per (schema, good request, n): generation is the
    slow part (seconds for 200 on a busy 2-core machine) and its result never changes. Without
    hypothesis: `builtin_fuzz_bodies` (at most n)."""
    if fuzz_source() != "hypothesis":
        return builtin_fuzz_bodies(schema, good)[:n]
    return list(_fuzz_cached(json.dumps(schema, sort_keys=True), json.dumps(good), n))


# Values a field is replaced by when hypothesis is missing: each JSON type, its extremes, and
# strings a parser or a tokenizer may choke on.
_BUILTIN_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**70,
    -(2**70),
    1e308,
    -1e308,
    "",
    "ab " * 2000,
    "\u0000\u202e\ufeff",
    "\u00e9\u4e2d\U0001f600",
    [],
    [None, [1, [2.5]]],
    {},
    {"a": {"b": [None]}},
)


def builtin_fuzz_bodies(schema: dict, good: dict) -> list[tuple[str, bytes]]:
    """A fixed set of malformed bodies, for when hypothesis is not installed: the good request
    with each field replaced by each of `_BUILTIN_VALUES`, each field dropped, extra fields, and
    whole bodies of every other JSON type. Deterministic; the same labels as the generated ones.
    """
    props = list(schema.get("properties", {}))
    cases: list[tuple[str, Any]] = []
    for name in props:
        cases += [(f"{name} replaced", {**good, name: v}) for v in _BUILTIN_VALUES]
        cases.append((f"{name} dropped", {k: v for k, v in good.items() if k != name}))
    for key in ("zz", "", "__proto__"):
        cases.append(("extra field", {**good, key: {"x": 1}}))
    for v in (None, [], [good], 0, "text", 2**70, {"a": 1}):
        cases.append(("any JSON body", v))
    return [(label, json.dumps(v).encode()) for label, v in cases]


@functools.lru_cache(maxsize=32)
def _fuzz_cached(schema_json: str, good_json: str, n: int) -> tuple[tuple[str, bytes], ...]:
    return tuple(fuzz_bodies_uncached(json.loads(schema_json), json.loads(good_json), n))


def fuzz_bodies_uncached(
    schema: dict, good: dict, n: int = FUZZ_PER_ROUTE
) -> list[tuple[str, bytes]]:
    """`n` malformed bodies from hypothesis: the good request with one field replaced by any
    JSON value, a field dropped, an extra field, a bound crossed, or any JSON at all.

    Deterministic (derandomized). Some results can be valid requests (dropping an optional
    field); the drill then expects a 200, not a 4xx, and never a 5xx.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    props = list(schema.get("properties", {}))
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
    )
    values = st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=8,
    )
    options = [values.map(lambda v: ("any JSON body", v))]
    if props:
        options.append(
            st.tuples(st.sampled_from(props), values).map(
                lambda t: (f"{t[0]} replaced", {**good, t[0]: t[1]})
            )
        )
        options.append(
            st.sampled_from(props).map(
                lambda p: (f"{p} dropped", {k: v for k, v in good.items() if k != p})
            )
        )
        options.append(
            st.tuples(st.sampled_from(props), st.integers(-(2**70), 2**70)).map(
                # a huge or negative number, or a long string (built, not drawn char by char)
                lambda t: (
                    f"{t[0]} bounds",
                    {**good, t[0]: t[1] if t[1] % 2 else "ab " * (t[1] % 4000)},
                )
            )
        )
    options.append(
        st.tuples(st.text(min_size=1, max_size=12).filter(lambda k: k not in props), values).map(
            lambda t: ("extra field", {**good, t[0]: t[1]})
        )
    )
    bodies: list[tuple[str, bytes]] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(options))
    def collect(case: tuple[str, Any]) -> None:
        bodies.append((case[0], json.dumps(case[1], allow_nan=True).encode()))

    while len(bodies) < n:  # hypothesis may stop early when it runs out of new examples
        collect()
    return bodies[:n]


def _session() -> Any:
    import requests

    s = requests.Session()
    s.trust_env = False  # loopback only: never through a proxy from the environment
    return s


def _send_big(url: str, data: bytes, content_type: str) -> tuple[int | str, str]:
    """POST a large body with http.client, and read the answer even if the server answered
    (413) and closed before the whole body went out: `requests` then reports only a broken
    pipe, which depends on timing, not on the server."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT_S)
    try:
        try:
            conn.request("POST", u.path, body=data, headers={"Content-Type": content_type})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading; its answer may be waiting
        try:
            r = conn.getresponse()
            raw = r.read()
        except TimeoutError:
            return "hang", f"no answer in {TIMEOUT_S:.0f} s"
        except OSError as e:
            return "ConnectionError", first_line(e)[:200]
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        msg = (doc.get("error") or doc.get("detail") or "") if isinstance(doc, dict) else ""
        return r.status, str(msg)[:200]
    finally:
        conn.close()


def send(session: Any, url: str, data: bytes, content_type: str) -> tuple[int | str, str]:
    """POST once: (status code, or "hang"/"ConnectionError"; the answer's message or text)."""
    import requests

    if len(data) > 1 << 20:
        return _send_big(url, data, content_type)

    try:
        r = session.post(url, data=data, headers={"Content-Type": content_type}, timeout=TIMEOUT_S)
    except requests.Timeout:
        return "hang", f"no answer in {TIMEOUT_S:.0f} s"
    except requests.RequestException as e:
        return type(e).__name__, first_line(e)[:200]
    try:
        doc = r.json()
    except ValueError:
        doc = None
    msg = (doc.get("error") or doc.get("detail") or "") if isinstance(doc, dict) else ""
    return r.status_code, str(msg)[:200] if msg else ""


def _is_4xx(code: int | str) -> bool:
    return isinstance(code, int) and 400 <= code < 500


# --- The drills -----------------------------------------------------------------------------


def drill_bad_input(url: str, routes: dict[str, tuple[dict, dict]], n: int) -> DrillResult:
    """routes: {path: (schema, good request)}."""
    session = _session()
    per_route, failures = {}, []
    total = 0
    source = fuzz_source()
    for path, (schema, good) in routes.items():
        counts: Counter[str] = Counter()
        for label, data, ctype in hostile_cases(schema, good):
            code, msg = send(session, url + path, data, ctype)
            counts[str(code)] += 1
            if label.endswith("(edge)"):
                ok = code == 200 or (_is_4xx(code) and msg)
            else:
                ok = _is_4xx(code) and msg
            if not ok:
                request = data[:300].decode("utf-8", "replace")
                failures.append(
                    {"route": path, "case": label, "status": code, "answer": msg, "body": request}
                )
        for label, data in fuzz_bodies(schema, good, n):
            code, msg = send(session, url + path, data, "application/json")
            counts[str(code)] += 1
            bad = not isinstance(code, int) or code >= 500 or (_is_4xx(code) and not msg)
            if bad:
                request = data[:300].decode("utf-8", "replace")
                failures.append(
                    {"route": path, "case": label, "status": code, "answer": msg, "body": request}
                )
        code, _ = send(session, url + path, json.dumps(good).encode(), "application/json")
        if code != 200:
            failures.append({"route": path, "case": "good request afterwards", "status": code})
        per_route[path] = dict(counts)
        total += sum(counts.values())
    fives = sum(1 for f in failures if isinstance(f["status"], int) and f["status"] >= 500)
    hangs = sum(1 for f in failures if f["status"] == "hang")
    figure = (
        f"{total} malformed requests over {len(routes)} route(s): {fives} 5xx, {hangs} hangs, "
        f"{len(failures)} failures; good request 200 after"
    )
    if source != "hypothesis":
        figure += (
            "; generated part: the built-in set, not hypothesis (not installed; "
            "`pip install -e '.[dev]'` for the generated requests)"
        )
    details = {"per_route": per_route, "failures": failures[:50], "generated_by": source}
    return DrillResult("bad_input", not failures, figure, details)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


class _Background:
    """Good requests, one at a time, in a thread while something else happens."""

    def __init__(self, url: str, body: dict) -> None:
        self.url, self.body = url, json.dumps(body).encode()
        self.codes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = _session()
        while not self._stop.is_set():
            code, _ = send(session, self.url, self.body, "application/json")
            self.codes[str(code)] += 1

    def __enter__(self) -> _Background:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=TIMEOUT_S + 5)

    @property
    def failed(self) -> int:
        return sum(c for k, c in self.codes.items() if k != "200")


def drill_corrupt_model(url: str, route: str, good: dict, registry_root: Path) -> DrillResult:
    from shared.artifacts import Registry

    session = _session()
    before = session.get(f"{url}/version", timeout=TIMEOUT_S).json()
    registry = Registry(registry_root)
    champion = registry.resolve("champion")
    with _Background(url + route, good) as load:
        time.sleep(1.0)
        version = registry.register(champion).name
        registry.promote(version)
        files = sorted(
            (
                p
                for p in (registry.versions_dir / version).iterdir()
                if p.name not in ("MANIFEST.json", "golden.json", "monitor_reference.json")
            ),
            key=lambda p: p.stat().st_size,
        )
        _flip_byte(files[-1])  # the largest file: the weights, or an ONNX model
        r = session.post(f"{url}/reload", timeout=120)
        reload_code, reload_body = r.status_code, r.json()
        time.sleep(1.0)
    after = session.get(f"{url}/version", timeout=TIMEOUT_S).json()
    registry.rollback()  # leave the scratch registry's champion whole for the next drills
    same = after.get("artifact_sha256") == before.get("artifact_sha256")
    passed = reload_code == 409 and same and load.failed == 0 and sum(load.codes.values()) > 0
    figure = (
        f"/reload {reload_code} (...{first_line(str(reload_body.get('error')))[-70:]}); "
        f"still serving {after.get('serving')}; {load.failed} of {sum(load.codes.values())} "
        "requests failed"
    )
    details = {
        "corrupted_file": files[-1].name,
        "reload_status": reload_code,
        "reload_answer": reload_body,
        "served_before": before,
        "served_after": after,
        "requests": dict(load.codes),
    }
    return DrillResult("corrupt_model", passed, figure, details)


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given processes, in seconds (from /proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def _app_pids() -> list[int]:
    from shared.serving import process_tree

    return [p for p in process_tree(os.getpid()) if p != os.getpid()]


def drill_load(url: str, route: str, good: dict, seconds: float, concurrency: int) -> DrillResult:
    from shared.loadgen import closed_loop

    pids = _app_pids()
    cpu0 = _cpu_seconds(pids)
    res = closed_loop(url + route, [good], concurrency, 10**6, seconds, timeout_s=TIMEOUT_S)
    cpu = _cpu_seconds(pids) - cpu0
    cpu_ms = 1e3 * cpu / max(res.n, 1)
    figure = (
        f"{concurrency} in flight for {res.wall_s:.0f} s: {res.n} requests, {res.rps:.0f} req/s, "
        f"p50 {res.p50_ms:.0f} ms, p99 {res.p99_ms:.0f} ms, {res.errors} errors, "
        f"{cpu_ms:.1f} ms CPU per request"
    )
    details = {**res.to_dict(), "cpu_ms_per_request": cpu_ms, "app_cpu_s": cpu}
    return DrillResult("load", res.errors == 0 and res.n > 0, figure, details)


def _replica_pids(url: str, tries: int = 40) -> set[int]:
    session = _session()
    pids = set()
    for _ in range(tries):
        try:
            pid = session.get(f"{url}/status", timeout=TIMEOUT_S).json().get("pid")
        except Exception:
            continue
        if pid:
            pids.add(int(pid))
    return pids


def _retry_loop(
    url: str, route: str, good: dict, in_flight: int, seconds: float, policy: Any
) -> dict[str, Any]:
    """`in_flight` clients posting `good` for `seconds`, each with `post_with_retry`."""
    from shared.retry import post_with_retry

    data = json.dumps(good).encode()
    codes: Counter[str] = Counter()
    retried = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        session = _session()
        while time.perf_counter() < deadline:
            code, attempts = post_with_retry(session, url, route, data, policy, TIMEOUT_S)
            with lock:
                codes[str(code)] += 1
                retried[0] += attempts > 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 3 * TIMEOUT_S)
    n = sum(codes.values())
    return {"n": n, "errors": n - codes.get("200", 0), "codes": dict(codes), "retried": retried[0]}


def _kill_under_load(
    url: str, replicas: int, seconds: float, load: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Kill one replica (by pid) while `load()` runs in a thread; wait for its replacement."""
    pids = _replica_pids(url)
    if len(pids) < 2:
        return {"error": f"found {len(pids)} ingress replica pid(s) via /status, need 2"}
    victim = min(pids)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(load=load()), daemon=True)
    thread.start()
    time.sleep(min(3.0, seconds / 4))
    t_kill = time.perf_counter()
    os.kill(victim, signal.SIGKILL)  # by pid: the replica's own process, nothing else
    recovered_s = None
    while time.perf_counter() - t_kill < 120:
        now = _replica_pids(url, tries=10)
        if len(now - {victim}) >= replicas:
            recovered_s = time.perf_counter() - t_kill
            break
        time.sleep(0.5)
    thread.join(timeout=seconds + 3 * TIMEOUT_S + 10)
    return {"victim_pid": victim, "recovered_s": recovered_s, "load": result.get("load")}


def drill_replica_kill(
    url: str, route: str, good: dict, replicas: int, seconds: float = 20.0, in_flight: int = 8
) -> DrillResult:
    from shared.loadgen import closed_loop
    from shared.retry import RetryPolicy

    def plain() -> dict[str, Any]:
        r = closed_loop(url + route, [good], in_flight, 10**6, seconds, timeout_s=TIMEOUT_S)
        return {"n": r.n, "errors": r.errors, "codes": r.status_counts}

    policy = RetryPolicy(attempts=3, idempotent_routes=frozenset({route}))
    runs = {
        "without retry": _kill_under_load(url, replicas, seconds, plain),
        "with retry": _kill_under_load(
            url,
            replicas,
            seconds,
            lambda: _retry_loop(url, route, good, in_flight, seconds, policy),
        ),
    }
    parts, passed = [], True
    for name, run in runs.items():
        if "error" in run:
            return DrillResult("replica_kill", False, run["error"], runs)
        res, rec = run["load"], run["recovered_s"]
        failed = res["errors"] if res else -1
        bound = in_flight if name == "without retry" else 0
        passed = passed and res is not None and 0 <= failed <= bound and rec is not None
        extra = f", {res['retried']} retried" if res and "retried" in res else ""
        rec_s = f"{rec:.1f} s" if rec is not None else "not within 120 s"
        parts.append(
            f"{name}: {failed} of {res['n'] if res else 0} failed{extra} (bound {bound}), "
            f"replaced in {rec_s}"
        )
    figure = f"replica killed under {in_flight} in flight, " + "; ".join(parts)
    details = {
        **runs,
        "retry_policy": {**asdict(policy), "idempotent_routes": sorted(policy.idempotent_routes)},
        "retry_where": "client (a single-deployment app: see shared.retry)",
    }
    return DrillResult("replica_kill", passed, figure, details)


# --- Silent failure and drift: the golden set and the live monitor (shared.golden) ----------


def _by_replica(url: str, method: str, path: str, replicas: int, tries: int = 0) -> dict:
    """Call `path` until `replicas` distinct replica pids answered (each answer carries "pid");
    {pid: (status code, body)}. A reload or a /status reaches one replica per request."""
    session = _session()
    seen: dict[int, tuple[int, dict]] = {}
    for _ in range(tries or 12 * replicas):
        try:
            r = session.request(method, url + path, timeout=120)
            body = r.json()
        except Exception:
            continue
        pid = body.get("pid") if isinstance(body, dict) else None
        if pid is not None and int(pid) not in seen:
            seen[int(pid)] = (r.status_code, body)
        if len(seen) >= replicas:
            break
    return seen


def _send_all(url: str, route: str, bodies: list[dict], concurrency: int = 4) -> Counter:
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def one(body: dict) -> str:
        if not hasattr(local, "s"):
            local.s = _session()
        code, _ = send(local.s, url + route, json.dumps(body).encode(), "application/json")
        return str(code)

    with ThreadPoolExecutor(concurrency) as pool:
        return Counter(pool.map(one, bodies))


def _golden_requests(registry_root: Path) -> list[dict] | None:
    from shared.artifacts import Registry
    from shared.golden import read_golden

    golden = read_golden(Registry(registry_root).resolve("champion"))
    return None if golden is None else [r for r in golden["requests"] if isinstance(r, dict)]


def drill_silent_failure(
    url: str,
    route: str,
    registry_root: Path,
    loader: Callable[[Path], Any] | None,
    replicas: int,
    seed: int = 0,
    max_requests: int = 2000,
) -> DrillResult:
    from shared.artifacts import Registry
    from shared.golden import shuffle_weights
    from shared.lifecycle import check_candidate
    from shared.monitor import MonitorThresholds

    golden = _golden_requests(registry_root)
    if not golden:
        return DrillResult(
            "silent_failure", False, "the artifact ships no golden set (shared.golden contract)"
        )
    registry = Registry(registry_root)
    champion = registry.aliases()["champion"]
    session = _session()
    before = session.get(f"{url}/version", timeout=TIMEOUT_S).json()
    with tempfile.TemporaryDirectory(prefix="casebook-drill-broken-") as tmp:
        broken = Path(tmp) / "broken"
        shutil.copytree(registry.resolve("champion"), broken)
        shuffled = shuffle_weights(broken, seed)
        if not shuffled:
            return DrillResult(
                "silent_failure", False, "no float tensor in the artifact to shuffle"
            )
        promotion = "no LOADER in the serve module: not checked"
        promotion_refused = False
        if loader is not None:
            try:
                line = check_candidate(broken, loader)
                promotion = f"ACCEPTED ({line})"
            except Exception as e:
                promotion, promotion_refused = first_line(e), True
        version = registry.register(broken).name
    details: dict[str, Any] = {"shuffled": shuffled, "promotion_check": promotion}
    try:
        registry.promote(version)  # as a pipeline that skipped the check would
        with _Background(url + route, golden[0]) as bg:
            reloads = _by_replica(url, "POST", "/reload", replicas)
        after = session.get(f"{url}/version", timeout=TIMEOUT_S).json()
        refused = (
            len(reloads) == replicas
            and all(code == 409 for code, _ in reloads.values())
            and after.get("artifact_sha256") == before.get("artifact_sha256")
        )
        reason = next(iter(reloads.values()), (0, {}))[1].get("error", "")
        details.update(
            reload_codes={str(k): c for k, (c, _) in reloads.items()},
            reload_error=reason,
            background=dict(bg.codes),
        )
        # Forced live: the operator's override; the monitor is what is left to catch it.
        registry.promote(version, force=True)
        forced = _by_replica(url, "POST", "/reload", replicas)
        forced_ok = len(forced) == replicas and all(c == 200 for c, _ in forced.values())
        th = MonitorThresholds()
        bound = replicas * (th.min_count + th.check_every) + ALARM_CHUNK
        sent, first, per_replica, codes = 0, None, {}, Counter()
        while forced_ok and sent < max_requests and len(per_replica) < replicas:
            chunk = [golden[(sent + i) % len(golden)] for i in range(ALARM_CHUNK)]
            codes += _send_all(url, route, chunk)
            sent += ALARM_CHUNK
            for pid, (_, st) in _by_replica(url, "GET", "/status", replicas).items():
                alarms = (st.get("monitor") or {}).get("alarms") or {}
                fired = {k: v for k, v in alarms.items() if k in MODEL_ALARMS}
                if fired and pid not in per_replica:
                    per_replica[pid] = {"after": sent, "alarms": fired}
                    first = first or (sent, fired)
        details.update(
            forced_reload={str(k): c for k, (c, _) in forced.items()},
            alarm_bound=bound,
            requests_sent=sent,
            request_codes=dict(codes),
            alarms_by_replica={str(k): v for k, v in per_replica.items()},
        )
    finally:
        registry.promote(champion)  # a plain promote: the override mark goes too
        restored = _by_replica(url, "POST", "/reload", replicas)
        details["restored"] = {str(k): c for k, (c, _) in restored.items()}
    alarm_ok = first is not None and first[0] <= bound
    passed = promotion_refused and refused and forced_ok and alarm_ok and bg.failed == 0
    if first is not None:
        name, line = next(iter(first[1].items()))
        alarm = f"alarm {name} after {first[0]} requests (bound {bound}): {line[:80]}"
    else:
        alarm = f"no model alarm within {sent} requests"
    codes_txt = "/".join(str(c) for c, _ in reloads.values())
    figure = (
        f"{len(shuffled)} weight file(s) shuffled, sha256 valid; promotion: "
        f"{'refused' if promotion_refused else 'NOT refused'} ({_short(promotion, 110)}); /reload "
        f"{codes_txt} on {len(reloads)} replica(s), still serving {after.get('serving')}; "
        f"forced live: {alarm}"
    )
    return DrillResult("silent_failure", passed, figure, details)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3].rstrip() + "..."


_CYRILLIC = dict(zip("abcdefghijklmnopqrstuvwxyz", "абцдефгхийклмнопярстужвхыз", strict=True))


def main_text_field(requests: list[dict]) -> str | None:
    """The string field with the most characters over `requests` (the text a model reads)."""
    sizes: Counter[str] = Counter()
    for r in requests:
        for k, v in r.items():
            if isinstance(v, str):
                sizes[k] += len(v)
    return sizes.most_common(1)[0][0] if sizes and sizes.most_common(1)[0][1] > 0 else None


def shifted_requests(
    requests: list[dict], field_: str, max_length: int | None = None, seed: int = 0
) -> dict[str, list[dict]]:
    """Three shifted versions of `requests`, changing only `field_` (cut at `max_length`):
    '5x longer texts', 'random letters' (each word replaced by random letters of its length),
    'another alphabet' (a-z moved to Cyrillic letters)."""
    import random

    rng = random.Random(seed)
    cap = max_length or 10**9

    def longer(t: str) -> str:
        return " ".join([t] * 5)[:cap]

    def letters(t: str) -> str:
        return " ".join(
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in w) for w in t.split(" ")
        )

    def alphabet(t: str) -> str:
        return "".join(_CYRILLIC.get(c, _CYRILLIC.get(c.lower(), c)) for c in t)

    out = {}
    for name, fn in (("5x longer texts", longer), ("random letters", letters),
                     ("another alphabet", alphabet)):  # fmt: skip
        out[name] = [
            {**r, field_: fn(r[field_])} if isinstance(r.get(field_), str) else r for r in requests
        ]
    return out


def _moved(alarms: dict[str, str]) -> str:
    """'n_words (PSI 12.3, KS 1.00), scores (PSI 0.9, KS 0.31)' from a replica's alarms."""
    parts = []
    if alarms.get("drift"):
        parts.append(alarms["drift"].replace("inputs moved: ", ""))
    if alarms.get("score_drift"):
        parts.append("scores (" + alarms["score_drift"].replace("scores moved: ", "") + ")")
    return ", ".join(parts)


def drill_drift(
    url: str,
    route: str,
    schema: dict,
    registry_root: Path,
    replicas: int,
    per_replica: int = 160,
    hook: Callable[[list[dict]], dict[str, list[dict]]] | None = None,
) -> DrillResult:
    """hook: the serve module's `drift_requests(golden) -> {shift name: requests}` when the
    case defines one (requests without a text field: a new user cohort, unseen items);
    otherwise the generic text shifts of `shifted_requests`."""
    golden = _golden_requests(registry_root)
    if not golden:
        return DrillResult(
            "drift", False, "the artifact ships no golden set (shared.golden contract)"
        )
    field_ = main_text_field(golden)
    if hook is not None:
        shifts, field_ = hook(golden), "per-case hook (serve.drift_requests)"
    elif field_ is None:
        return DrillResult(
            "drift",
            False,
            "the golden requests have no text field to shift; define drift_requests(golden) "
            "in the case's serve.py",
        )
    else:
        max_length = _prop_limits(schema.get("properties", {}).get(field_, {})).get("maxLength")
        shifts = shifted_requests(golden, field_, max_length)
    n = replicas * per_replica
    phases = {"control (golden requests)": golden, **shifts}
    details: dict[str, Any] = {"field": field_, "requests_per_phase": n}
    verdicts = {}
    for name, reqs in phases.items():
        _by_replica(url, "POST", "/reload", replicas)  # fresh monitor windows on every replica
        bodies = [reqs[i % len(reqs)] for i in range(n)]
        codes = _send_all(url, route, bodies)
        status = _by_replica(url, "GET", "/status", replicas)
        per = {}
        for pid, (_, st) in status.items():
            mon = st.get("monitor") or {}
            per[str(pid)] = {
                "ready": mon.get("ready"),
                "n": mon.get("n"),
                "alarms": mon.get("alarms"),
                "features": mon.get("features"),
                "scores": mon.get("scores"),
            }
        # The shift is reported by a drift alarm on the inputs or a score_drift alarm on the
        # model's scores (the issue: "PSI or KS per input feature and on the scores").
        drift = [p for p in per.values() if {"drift", "score_drift"} & set(p["alarms"] or {})]
        ready = [p for p in per.values() if p["ready"]]
        verdicts[name] = {"codes": dict(codes), "replicas": per}
        if name.startswith("control"):
            ok = len(ready) == replicas and not drift
            worst = max(
                (f.get("psi") or 0.0 for p in ready for f in (p["features"] or {}).values()),
                default=0.0,
            )
            verdicts[name]["summary"] = (
                f"control: {'no drift alarm' if not drift else 'FALSE ALARM'} (max PSI {worst:.2f})"
            )
        else:
            ok = len(drift) == replicas
            moved = _moved(drift[0]["alarms"]) if drift else "none"
            verdicts[name]["summary"] = f"{name}: {moved}"
        verdicts[name]["passed"] = ok
    details["phases"] = verdicts
    passed = all(v["passed"] for v in verdicts.values())
    figure = f"{n} requests per phase over {replicas} replica(s); " + "; ".join(
        v["summary"] for v in verdicts.values()
    )
    return DrillResult("drift", passed, figure, details)


def _gate_batch(rng: np.random.Generator, n: int, first_id: int) -> dict[str, np.ndarray]:
    """A clean batch of events: an id, 300 users, 5 countries, a duration, a 20%-positive label."""
    return {
        "event_id": np.arange(first_id, first_id + n),
        "user": rng.integers(0, 300, n),
        "country": rng.choice(np.array(["de", "fr", "in", "us", "br"]), n),
        "seconds": rng.gamma(2.0, 60.0, n),
        "label": (rng.random(n) < 0.2).astype(np.int64),
    }


def drill_bad_batch(out: Path, seed: int = 0) -> DrillResult:
    """The data gate on four corrupted batches and one fresh one (generic schema; see doc)."""
    from shared.gate import ColumnSpec, Schema, build_reference, check_batch, quarantine

    schema = Schema(
        {
            "event_id": ColumnSpec("int", drift=False),
            "user": ColumnSpec("category"),
            "country": ColumnSpec("category"),
            "seconds": ColumnSpec("float", min=0.0, max=86400.0),
            "label": ColumnSpec("int", min=0, max=1),
        },
        target="label",
        key=("event_id",),
    )
    rng = np.random.default_rng(seed)
    reference = build_reference(_gate_batch(rng, 5000, 0), schema)
    fresh = _gate_batch(rng, 2000, 10_000)
    dup = {k: np.concatenate([v[:1000], v[:1000]]) for k, v in fresh.items()}
    bots = {k: v.copy() for k, v in fresh.items()}
    bots["user"][:1200] = 7  # 60% of the rows from one account
    bots["seconds"][:1200] = 1.0
    flipped = {**fresh, "label": 1 - fresh["label"]}
    drifted = {**fresh, "seconds": fresh["seconds"].astype(str)}  # a column's type changed
    batches = {
        "duplicated": dup,
        "bot-flooded": bots,
        "label-flipped": flipped,
        "schema-drifted": drifted,
    }
    verdicts, ok = {}, True
    for name, batch in batches.items():
        res = check_batch(batch, schema, reference)
        fired = sorted({c.name for c in res.failed})
        if res.passed:
            ok = False
        else:
            quarantine(batch, res, out / "quarantine")
        verdicts[name] = {"refused": not res.passed, "checks": fired}
    control = check_batch(fresh, schema, reference)
    ok = ok and control.passed
    verdicts["fresh (control)"] = {
        "refused": not control.passed,
        "checks": sorted({c.name for c in control.failed}),
    }
    figure = "; ".join(
        f"{k}: {'refused (' + ', '.join(v['checks']) + ')' if v['refused'] else 'passed'}"
        for k, v in verdicts.items()
    )
    return DrillResult("bad_batch", ok, figure, {"schema": "generic (drill's own)", **verdicts})


def drill_sockets() -> DrillResult:
    from shared.serving import listening_sockets

    sockets = listening_sockets(_app_pids())
    open_ = [s for s in sockets if not s.loopback]
    figure = f"{len(sockets)} listening sockets, {len(open_)} not on loopback"
    if open_:
        figure += ": " + ", ".join(f"{s.name}@{s.host}:{s.port}" for s in open_[:5])
    details = {"sockets": [asdict(s) for s in sockets]}
    return DrillResult("sockets", bool(sockets) and not open_, figure, details)


# --- One case end to end --------------------------------------------------------------------


def _scratch_registry(artifact: Path, scratch: Path) -> Path:
    """A registry the drills may corrupt: a copy of `artifact` (registry or artifact folder)."""
    from shared.artifacts import MANIFEST, Registry

    registry = Registry(scratch / "registry")
    if (artifact / MANIFEST).is_file():
        registry.promote(registry.register(artifact).name)
    elif (artifact / "aliases.json").is_file():
        champion = Registry(artifact).resolve("champion")
        registry.promote(registry.register(champion).name)
    else:
        raise CasebookError(f"{artifact} is neither an artifact folder nor a registry")
    return registry.root


def _build_fresh(case: str, preset: str | None, seed: int, out: Path) -> Path:
    """Run the case's own `run()` (default preset unless given) into `out`; return its registry."""
    from shared.lifecycle import registry_root

    module = load_case(case)
    p = argparse.ArgumentParser()
    add_common_run_flags(p, tuple(getattr(module, "PRESETS", ())))
    module.add_arguments(p)
    argv = ["--seed", str(seed), "--out", str(out)]
    if preset:
        argv += ["--preset", preset]
    module.run(p.parse_args(argv))
    return registry_root(out, case)


def _two_replicas(app: Any, replicas: int) -> Any:
    """The same bound app with `replicas` replicas of its ingress deployment."""
    dep = app._bound_deployment  # Ray Serve's Application keeps the bound deployment here
    return dep.options(num_replicas=replicas).bind(*dep.init_args, **dep.init_kwargs)


def drill_case(
    case: str,
    *,
    artifact: Path | None = None,
    preset: str | None = None,
    seed: int = 0,
    out: Path | None = None,
    drills: tuple[str, ...] = DRILLS,
    load_seconds: float = 20.0,
    fuzz: int = FUZZ_PER_ROUTE,
    replicas: int = 2,
    log: Callable[[str], None] = print,
) -> tuple[Path, list[DrillResult]]:
    """Run the drills on one case; return (metrics.json path, results)."""
    import importlib

    from shared.io import atomic_write_json
    from shared.lifecycle import run_folder
    from shared.serving import start_local_ray, stop_local_ray, wait_for_http

    cases = available_cases()
    if case not in cases:
        raise CasebookError(f"unknown case {case!r}; available: {', '.join(cases)}")
    unknown = set(drills) - set(DRILLS)
    if unknown:
        raise CasebookError(f"unknown drill(s) {sorted(unknown)}; available: {', '.join(DRILLS)}")
    folder = run_folder(f"drill/{case}", out)
    scratch = Path(tempfile.mkdtemp(prefix=f"casebook-drill-{cases[case]}-"))
    results: list[DrillResult] = []
    t0 = time.perf_counter()
    local = None
    try:
        if artifact is None:
            log(f"drill {case}: training a fresh artifact (default preset) in {scratch}/run")
            source = _build_fresh(case, preset, seed, scratch / "run")
        else:
            source = Path(artifact)
            if not source.exists():
                raise CasebookError(f"--artifact {source} not found")
        registry = _scratch_registry(source, scratch)
        serve_mod = importlib.import_module(f"cases.{cases[case]}.serve")
        from ray import serve

        log(f"drill {case}: starting the app on 127.0.0.1 ({replicas} ingress replicas)")
        local = start_local_ray("127.0.0.1", num_cpus=4)
        app = serve_mod.build_app(str(registry))
        replicas_now = 1
        if replicas > 1 and "replica_kill" in drills:
            app = _two_replicas(app, replicas)
            replicas_now = replicas
        serve.run(app, name=cases[case], route_prefix="/", blocking=False)
        url = local.url
        if not wait_for_http(f"{url}/health", timeout_s=120):
            raise CasebookError(f"{case}: the app did not answer /health within 120 s")
        openapi = _session().get(f"{url}/openapi.json", timeout=TIMEOUT_S).json()
        routes: dict[str, tuple[dict, dict]] = {}
        sources = {}
        for path, schema in post_routes(openapi).items():
            good, where = good_request(case, path, schema)
            if good is not None:
                routes[path] = (schema, good)
                sources[path] = where
        if not routes:
            raise CasebookError(f"{case}: no POST route with a known good request")
        main_route = next(iter(routes))
        main_good = routes[main_route][1]
        log(f"drill {case}: routes {', '.join(routes)} (good requests from: {sources})")
        for name in drills:
            t = time.perf_counter()
            if name == "bad_input":
                r = drill_bad_input(url, routes, fuzz)
            elif name == "corrupt_model":
                r = drill_corrupt_model(url, main_route, main_good, registry)
            elif name == "silent_failure":
                loader = getattr(serve_mod, "LOADER", None)
                r = drill_silent_failure(url, main_route, registry, loader, replicas_now, seed)
            elif name == "drift":
                schema = routes[main_route][0]
                hook = getattr(serve_mod, "drift_requests", None)
                r = drill_drift(url, main_route, schema, registry, replicas_now, hook=hook)
            elif name == "load":
                r = drill_load(url, main_route, main_good, load_seconds, 32)
            elif name == "replica_kill":
                if replicas < 2:
                    continue
                r = drill_replica_kill(url, main_route, main_good, replicas, load_seconds)
            elif name == "bad_batch":
                r = drill_bad_batch(folder, seed)
            else:
                r = drill_sockets()
            r.details["seconds"] = round(time.perf_counter() - t, 1)
            results.append(r)
            log(r.line())
    finally:
        if local is not None:
            stop_local_ray(local)
        shutil.rmtree(scratch, ignore_errors=True)
    doc = {
        "case": case,
        "kind": "drill",
        "artifact": str(artifact) if artifact else f"fresh ({preset or 'default'} preset)",
        "seconds": round(time.perf_counter() - t0, 1),
        "passed": all(r.passed for r in results),
        "good_requests": sources,
        "note": "timings on a shared 2-core machine under other work",
        "drills": {r.name: asdict(r) for r in results},
    }
    metrics = atomic_write_json(folder / "metrics.json", _jsonable(doc))
    from shared.io import atomic_write_text

    atomic_write_text(folder / "report.md", report_markdown(case, results, doc))
    return metrics, results


def report_markdown(case: str, results: list[DrillResult], doc: dict) -> str:
    lines = [
        f"# Reliability drills: {case}",
        "",
        f"Artifact: {doc['artifact']}; {doc['seconds']:.0f} s in all; {doc['note']}.",
        f"Good requests from: {doc['good_requests']}.",
        "",
        "| drill | figure | pass |",
        "|---|---|---|",
    ]
    for r in results:
        figure = r.figure.replace("|", "\\|")  # a pipe would end the table cell
        lines.append(f"| {r.name} | {figure} | {'yes' if r.passed else '**no**'} |")
    fails = [f for r in results for f in r.details.get("failures", [])]
    if fails:
        lines += ["", "## Requests that failed the bad-input drill", ""]
        for f in fails[:30]:
            lines.append(f"- `{json.dumps(_jsonable(f))[:400]}`")
    return "\n".join(lines) + "\n"


def _jsonable(x: Any) -> Any:
    from shared.io import to_jsonable

    def sets_to_lists(v: Any) -> Any:
        if isinstance(v, (set, frozenset)):
            return sorted(v, key=str)
        if isinstance(v, dict):
            return {k: sets_to_lists(w) for k, w in v.items()}
        if isinstance(v, (list, tuple)):
            return [sets_to_lists(w) for w in v]
        return v

    return to_jsonable(sets_to_lists(x))


# --- The sub-command ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, cases: list[str]) -> None:
    parser.add_argument("case", choices=[*cases, "all"], help="which case, or all")
    parser.add_argument(
        "--artifact",
        type=Path,
        default=None,
        help="artifact folder or registry to drill (default: train a fresh one)",
    )
    parser.add_argument("--preset", default=None, help="preset for the fresh artifact")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default runs/drill/<case>/<time>)"
    )
    parser.add_argument(
        "--only", default=",".join(DRILLS), help=f"comma-separated drills ({', '.join(DRILLS)})"
    )
    parser.add_argument("--load-seconds", type=float, default=20.0, help="load drill length")
    parser.add_argument("--quick", action="store_true", help="short load, 200 fuzz requests")


def summary_markdown(by_case: dict[str, list[DrillResult] | str], when: str) -> str:
    """The reliability table of `casebook drill all`: case, drill, figure, pass (a case that
    could not be drilled gets one row with its error)."""
    lines = [
        f"# Reliability drills ({when})",
        "",
        "From `casebook drill all` (shared 2-core machine: timings are pessimistic).",
        "",
        "| case | drill | figure | pass |",
        "|---|---|---|---|",
    ]
    for case, results in by_case.items():
        if isinstance(results, str):
            err = results.replace("|", "\\|")
            lines.append(f"| {case} | (all) | error: {err} | **no** |")
            continue
        for r in results:
            figure = r.figure.replace("|", "\\|")  # a pipe would end the table cell
            lines.append(f"| {case} | {r.name} | {figure} | {'yes' if r.passed else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace, cases: list[str]) -> int:
    names = cases if args.case == "all" else [args.case]
    drills = tuple(d.strip() for d in args.only.split(",") if d.strip())
    failed = []
    by_case: dict[str, list[DrillResult] | str] = {}
    for name in names:
        out = None if args.out is None else (args.out / name if args.case == "all" else args.out)
        artifact = args.artifact if args.case != "all" else None
        print(f"\n=== casebook drill {name} ===", flush=True)
        try:
            metrics, results = drill_case(
                name,
                artifact=artifact,
                preset=args.preset,
                seed=args.seed,
                out=out,
                drills=drills,
                load_seconds=5.0 if args.quick else args.load_seconds,
            )
        except CasebookError as e:
            print(f"casebook: drill {name}: error: {e}", flush=True)
            failed.append(name)
            by_case[name] = first_line(e)
            continue
        by_case[name] = results
        print(f"wrote {metrics} and {metrics.parent / 'report.md'}")
        if not all(r.passed for r in results):
            failed.append(name)
    if args.case == "all":
        from shared.io import atomic_write_text
        from shared.lifecycle import RUNS

        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        table = summary_markdown(by_case, when)
        path = atomic_write_text((args.out or RUNS / "drill") / "summary.md", table)
        print(f"\n{table}\nwrote {path}")
    if failed:
        print(f"drills failed: {', '.join(failed)}")
        return 1
    return 0
