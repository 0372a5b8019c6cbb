"""The no-op floor: what Serve's HTTP path costs with no model behind it, in the same run.

    from shared.floor import alternate, build_floor_app, floor_multiples, measure_http

    serve.run(build_floor_app("/recommend", answer=example), name="floor", route_prefix="/floor")
    runs = alternate({"case": lambda: measure_http(case_url, payloads, 8, 500, 30),
                      "floor": lambda: measure_http(floor_url, payloads, 8, 500, 30)}, repeats=3)
    floor_multiples(runs["case"][0], runs["floor"][0])  # {"p50_x": 2.1, "p99_x": 2.4, ...}

On a 2-core machine shared with other jobs, a load test's absolute p99 and CPU per request swing
2-3x from one run to the next (issue 18). The floor app has the same ingress as a case's app
(`shared.serving.make_app`: the body-size limit, the error handlers, FastAPI's JSON parsing and
routing), receives the same request bodies on the same route and answers a fixed body of the
case's answer size, but runs no model. Its p50, p99 and CPU per request are what Serve, the
HTTP stack and the load generator cost on this machine at this moment; a case's figures as
multiples of the floor, measured alternately in one run (`alternate`), hold where the absolute
ones do not. Ray and FastAPI are imported inside the functions that need them.
"""

# No `from __future__ import annotations`: FastAPI must see the route's annotations as classes
# (Ray Serve ships the floor's class by value, so string annotations would not resolve there).
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shared.serving import (
    MAX_BODY_BYTES,
    LocalRay,
    add_health_route,
    make_app,
    port_is_free,
    start_local_ray,
)

FLOOR_APP = "serving-floor"  # the application name `build_floor_app` is deployed under


def build_floor_app(
    route: str = "/predict",
    answer: dict | None = None,
    *,
    answers: dict[str, dict] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_ongoing_requests: int = 64,
    num_cpus: float = 0.0,
    logging_config: dict | None = None,
) -> Any:
    """A bound Serve deployment: POST `route` parses the JSON body and answers `answer`.

    The same ingress as a case's app (`make_app(max_body_bytes=...)`, so the body limit and the
    4xx handlers sit in front), one replica on the replica's event loop, and GET /health
    answering {"status": "ok", "app": "floor"} (how a caller tells it from the case's app on a
    direct-ingress port). Pass the case's `logging_config` (access log on or off) and an
    `answer` of the size the case returns, so that only the model's work differs. For an app
    with several POST routes, `answers` maps each route to its answer (one path-parameter
    route serves them all; `route` and `answer` are then unused).
    """
    from fastapi import HTTPException
    from ray import serve

    app = make_app("serving-floor", max_body_bytes=max_body_bytes, health=False)
    add_health_route(app, lambda: {"app": "floor"})
    opts: dict[str, Any] = {"ray_actor_options": {"num_cpus": num_cpus}}
    if logging_config:
        opts["logging_config"] = logging_config
    deployment = serve.deployment(max_ongoing_requests=max_ongoing_requests, **opts)

    if answers:
        bodies = {"/" + r.strip("/"): dict(a) for r, a in answers.items()}

        @deployment
        @serve.ingress(app)
        class ServingFloor:
            @app.post("/{name:path}")
            async def noop(self, name: str, body: dict) -> dict:
                out = bodies.get("/" + name.strip("/"))
                if out is None:
                    raise HTTPException(404, f"no route /{name}")
                return out

        return ServingFloor.bind()

    body_out = dict(answer or {"ok": True})

    @deployment
    @serve.ingress(app)
    class ServingFloor:  # noqa: F811 - one of the two shapes is bound
        @app.post(route)
        async def noop(self, body: dict) -> dict:  # FastAPI parses and checks the JSON object
            return body_out

    return ServingFloor.bind()


def tree_cpu_s(root_pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by `root_pid` (default this process) and every
    process descended from it, read from /proc; NaN where there is no /proc.

    A local Ray's processes (GCS, raylet, proxy, replicas) descend from the driver that started
    it, and the load generator's threads are in the driver, so the difference over a load run
    divided by its requests is the whole stack's CPU per request: a figure that other jobs on the
    machine slow down much less than latency (they take cores, not this tree's CPU seconds).
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return float("nan")
    parent, ticks = {}, {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        f = stat[stat.rfind(")") + 2 :].split()  # fields after "pid (name) "
        parent[int(d.name)] = int(f[1])
        ticks[int(d.name)] = int(f[11]) + int(f[12])  # utime + stime, clock ticks
    root = os.getpid() if root_pid is None else root_pid
    tree, frontier = {root}, {root}
    while frontier:
        kids = {p for p, pp in parent.items() if pp in frontier and p not in tree}
        tree.update(kids)
        frontier = kids
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def measure_http(
    url: str,
    payloads: list[dict],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    warmup: int = 0,
) -> dict[str, Any]:
    """One closed-loop run (`shared.loadgen.closed_loop`) and the process tree's CPU over it.

    Returns the LoadResult's fields plus `cpu_ms_per_request` (`tree_cpu_s` difference / n).
    `warmup` requests are sent first and not counted.
    """
    from shared.loadgen import closed_loop

    if warmup:
        closed_loop(url, payloads, concurrency, warmup, 60.0)
    cpu0 = tree_cpu_s()
    res = closed_loop(url, payloads, concurrency, max_requests, max_seconds)
    cpu_ms = 1e3 * (tree_cpu_s() - cpu0) / max(res.n, 1)
    return {**res.to_dict(), "cpu_ms_per_request": cpu_ms}


def floor_multiples(case: dict[str, Any], floor: dict[str, Any]) -> dict[str, float]:
    """A case's run over the floor's: p50_x = p50 / floor p50, p99_x, cpu_x (CPU per request)
    and rps_x (requests/s, below 1 when the case is slower). NaN where the floor's figure is
    missing or zero."""

    def ratio(key: str) -> float:
        a, b = case.get(key), floor.get(key)
        if a is None or not b:
            return float("nan")
        return float(a) / float(b)

    return {
        "p50_x": ratio("p50_ms"),
        "p99_x": ratio("p99_ms"),
        "cpu_x": ratio("cpu_ms_per_request"),
        "rps_x": ratio("rps"),
    }


def alternate(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[Any]]:
    """Run every variant once per repeat, the order rotated each repeat (A B C, B C A, C A B,
    ...), so a drift in the machine's load reaches all of them alike; {name: [result per
    repeat]}. Repeat r of one variant pairs with repeat r of another (`bench.paired_ratios`)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    names = list(variants)
    out: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(variants[name]())
    return out


# --- Direct ingress for several applications side by side

_MAX_PORT_ENV = "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"


@contextlib.contextmanager
def _env_var(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def free_port_run(n: int, host: str = "127.0.0.1", start: int = 20000, stop: int = 29000) -> int:
    """The first port p in [start, stop) with p .. p + n - 1 all free on `host` right now."""
    p = start
    while p + n <= stop:
        bad = next((q for q in range(p, p + n) if not port_is_free(host, q)), None)
        if bad is None:
            return p
        p = bad + 1
    raise OSError(f"no {n} consecutive free ports in [{start}, {stop}) on {host}")


def start_local_ray_direct(
    host: str = "127.0.0.1",
    port: int | None = None,
    n_apps: int = 1,
    spare: int = 2,
    **kwargs: Any,
) -> tuple[LocalRay, list[int]]:
    """`shared.serving.start_local_ray` with direct ingress on `n_apps + spare` consecutive
    ports, so that a case's app and the floor app (or several variants) each get their own HTTP
    server in their ingress replica. Returns (LocalRay, the ports; [] when Ray was already
    running, where only the proxy serves). Serve gives each new ingress replica the lowest free
    port of the range and holds a stopped replica's port back for a while, so a replica
    restarted on a loaded machine needs a spare (without one its app fails to deploy with
    NoAvailablePortError). Find which app got which port with `direct_port_of`.

    `shared.serving.direct_ingress_env` pins a one-port range; a variable already set in the
    environment wins there, so the range's end is set here for the start-up only.
    """
    import ray

    if ray.is_initialized():
        return start_local_ray(host, port, **kwargs), []
    n = n_apps + spare
    first = free_port_run(n, host)
    with _env_var(_MAX_PORT_ENV, str(first + n)):
        local = start_local_ray(host, port, direct_ingress_port=first, **kwargs)
    return local, list(range(first, first + n)) if local.direct_port else []


def direct_port_of(
    host: str, ports: list[int], route_prefix: str, timeout_s: float = 20.0
) -> int | None:
    """The port among `ports` whose direct-ingress app answers GET <route_prefix>/health with
    200, or None if none does within `timeout_s` (a replica's server takes a moment to start).
    Apps deployed side by side need distinct route prefixes for this to tell them apart."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    prefix = route_prefix.rstrip("/")
    deadline = time.monotonic() + timeout_s
    while ports:
        for p in ports:
            try:
                with opener.open(f"http://{host}:{p}{prefix}/health", timeout=2.0) as r:
                    if r.status == 200:
                        return p
            except (OSError, urllib.error.URLError):
                continue
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return None


# --- One case's load test against the floor


def example_answer(url: str, payload: dict, timeout_s: float = 30.0) -> dict:
    """The JSON answer of POST `url` with `payload` (loopback: what the floor should answer)."""
    import json
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with opener.open(req, timeout=timeout_s) as r:
        return json.loads(r.read())


ROW_KEYS = ("p50_ms", "p95_ms", "p99_ms", "rps", "cpu_ms_per_request")


def summarize_runs(runs: list[dict], floor_runs: list[dict] | None = None) -> dict[str, Any]:
    """One table row from a variant's repeats: the median of each of ROW_KEYS, the requests and
    errors summed, and with `floor_runs` (the floor's repeats, paired by index) p50_x_floor,
    p99_x_floor and cpu_x_floor (`shared.bench.paired_ratios`: the median of the per-repeat
    ratios) with their `*_range` (min-max of those ratios)."""
    import numpy as np

    from shared.bench import paired_ratios

    row: dict[str, Any] = {k: float(np.median([r[k] for r in runs])) for k in ROW_KEYS}
    row.update(requests=int(sum(r["n"] for r in runs)), errors=int(sum(r["errors"] for r in runs)))
    if floor_runs is not None:
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("cpu_ms_per_request", "cpu")):
            ratio = paired_ratios([r[key] for r in runs], [r[key] for r in floor_runs])
            row[f"{label}_x_floor"] = ratio["median"]
            row[f"{label}_x_floor_range"] = f"{ratio['min']:.2f}-{ratio['max']:.2f}"
    return row


def load_test_with_floor(
    app: Any,
    routes: dict[str, list[dict]],
    *,
    name: str,
    in_flight: int = 8,
    requests: int = 600,
    seconds: float = 20.0,
    repeats: int = 3,
    warmup: int = 100,
    num_cpus: int = 2,
    logging_config: dict | None = None,
    route_prefix: str = "/",
    proxy_port: int | None = None,
) -> dict[str, Any]:
    """A case's HTTP load test beside the no-op floor, alternated in one run (issue 18).

    Starts a local Ray on 127.0.0.1 (`num_cpus`) with direct ingress for two apps
    (`start_local_ray_direct`), deploys `app` (the case's bound app) under `name` at
    `route_prefix` and a floor app (`build_floor_app`) whose routes answer what the case
    answers to each route's first payload (the same answer size), then per route of `routes`
    ({"/suggest": [request bodies]}): `warmup` requests to the case (a quarter to the floor),
    then `repeats` closed-loop runs of each at `in_flight` requests in flight (`measure_http`:
    up to `requests` requests or `seconds`), the case and the floor alternated (`alternate`).
    Both are measured through direct ingress (the replica's own HTTP server, what `casebook
    serve` gives clients), or both through Serve's proxy when direct ingress did not come up.

    Into a Ray that is already running (tests), pass the running Serve's `proxy_port`: only
    the proxy is measured and only the two apps are deleted afterwards; otherwise the Ray
    started here is shut down. Returns {"path": "direct" | "proxy", "rows": {route: the case's
    row (`summarize_runs`, with the multiples of the floor), route + " floor": the floor's},
    "runs": {route: {"app": [...], "floor": [...]}}, "deploy_s", "in_flight", "repeats"}.
    """
    import ray
    from ray import serve

    from shared.serving import LocalRay, stop_local_ray

    if not routes or any(not p for p in routes.values()):
        raise ValueError("load_test_with_floor needs at least one route with payloads")
    host = "127.0.0.1"
    if ray.is_initialized():
        if proxy_port is None:
            raise ValueError("Ray is already running: pass the running Serve's proxy_port")
        local, ports = LocalRay(host, proxy_port, None, False), []
    else:
        local, ports = start_local_ray_direct(
            host, n_apps=2, num_cpus=num_cpus, logging_config=logging_config
        )
    prefix = route_prefix.rstrip("/")
    floor_prefix = f"{prefix}-floor" if prefix else "/floor"
    log = {"logging_config": logging_config} if logging_config else {}
    t0 = time.perf_counter()
    out: dict[str, Any] = {"rows": {}, "runs": {}, "in_flight": in_flight, "repeats": repeats}
    try:
        serve.run(app, name=name, route_prefix=prefix or "/", **log)
        out["deploy_s"] = time.perf_counter() - t0
        case_port = direct_port_of(host, ports, prefix or "/") if ports else None
        base = f"http://{host}:{case_port or local.port}{prefix}"
        answers = {r: example_answer(f"{base}{r}", p[0]) for r, p in routes.items()}
        floor = build_floor_app(answers=answers, logging_config=logging_config)
        serve.run(floor, name=FLOOR_APP, route_prefix=floor_prefix, **log)
        rest = [p for p in ports if p != case_port]
        floor_port = direct_port_of(host, rest, floor_prefix) if case_port and rest else None
        if case_port and floor_port:
            out["path"] = "direct"
            floor_base = f"http://{host}:{floor_port}{floor_prefix}"
        else:
            out["path"] = "proxy"
            base = f"http://{host}:{local.port}{prefix}"
            floor_base = f"http://{host}:{local.port}{floor_prefix}"
        for route, payloads in routes.items():
            urls = {"app": f"{base}{route}", "floor": f"{floor_base}{route}"}
            for who, url in urls.items():
                n = max(warmup // 4, 1) if who == "floor" else warmup
                if n:
                    measure_http(url, payloads, in_flight, n, 60.0)
            runs = alternate(
                {
                    who: lambda u=url, p=payloads: measure_http(u, p, in_flight, requests, seconds)
                    for who, url in urls.items()
                },
                repeats,
            )
            out["runs"][route] = runs
            out["rows"][route] = summarize_runs(runs["app"], runs["floor"])
            out["rows"][f"{route} floor"] = summarize_runs(runs["floor"])
    finally:
        if local.started_ray:
            stop_local_ray(local)
        else:
            for app_name in (name, FLOOR_APP):
                with contextlib.suppress(Exception):
                    serve.delete(app_name)
    return out


def describe_against_floor(route: str, result: dict[str, Any]) -> str:
    """One sentence: the case's p50, p99 and CPU per request on `route` and their multiples
    of the floor, from `load_test_with_floor`'s result."""
    row, floor = result["rows"][route], result["rows"][f"{route} floor"]
    return (
        f"{route}: {row['requests']:,} requests at {result['in_flight']} in flight in "
        f"{result['repeats']} runs ({result['path']}): p50 {row['p50_ms']:.1f} ms, p99 "
        f"{row['p99_ms']:.1f} ms, {row['rps']:.0f} requests/s, {row['errors']} errors, "
        f"{row['cpu_ms_per_request']:.2f} ms of CPU per request; the no-op floor in the same "
        f"run: p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms, "
        f"{floor['cpu_ms_per_request']:.2f} ms of CPU; the case is {row['p50_x_floor']:.1f}x / "
        f"{row['p99_x_floor']:.1f}x / {row['cpu_x_floor']:.1f}x the floor (p50 / p99 / CPU)."
    )
