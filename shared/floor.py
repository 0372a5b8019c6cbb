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
    `answer` of the size the case returns, so that only the model's work differs.
    """
    from ray import serve

    app = make_app("serving-floor", max_body_bytes=max_body_bytes, health=False)
    add_health_route(app, lambda: {"app": "floor"})
    body_out = dict(answer or {"ok": True})
    opts: dict[str, Any] = {"ray_actor_options": {"num_cpus": num_cpus}}
    if logging_config:
        opts["logging_config"] = logging_config

    @serve.deployment(max_ongoing_requests=max_ongoing_requests, **opts)
    @serve.ingress(app)
    class ServingFloor:
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
