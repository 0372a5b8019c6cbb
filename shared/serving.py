"""Ray Serve glue: a FastAPI app with input limits and clear 4xx errors, the standard routes,
hot reload, and starting a local Ray.

Every case's serve.py follows this shape (ray is imported by the case's serve.py, never at
import time of a shared module):

    app = make_app("mobile-keyboard")          # /health, body-size limit, error handlers

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1})
    @serve.ingress(app)
    @standard_routes(app)                      # /version, /reload, /status from self.model
    class KeyboardServer:
        def __init__(self, registry_root: str):
            # golden check on every load; live monitor from the artifact's reference
            self.model = ReloadableModel(registry_root, KeyboardPredictor.load,
                                         monitor="mobile-keyboard")

        @app.post("/predict")
        async def predict(self, req: KeyboardRequest) -> dict:   # pydantic: bad fields -> 422
            return await self.batched(req.model_dump())

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
        async def batched(self, reqs: list[dict]) -> list[dict]:
            answers = self.model.get().suggest_batch(reqs)
            self.model.observe(reqs, answers)     # the monitor's window (shared.golden)
            return answers

    run_app(KeyboardServer.bind(str(registry)), port=8000)   # `casebook serve`; tests: serve.run

The standard routes, the same in every app:
  GET  /health   200 {"status": "ok"} once the replica is up
  GET  /version  the served version, its alias and `artifact_sha256` (sha256 of its MANIFEST.json)
  POST /reload   loads the registry's champion: 200 with the new version, or 409 with the reason
                 (corrupt file, failed golden set) while the model already in memory keeps
                 serving; the answer names the replica's pid. Open on loopback; an app bound
                 beyond it needs `Authorization: Bearer $CASEBOOK_RELOAD_TOKEN` (`reload_refusal`)
  GET  /         the case's page (`make_app(..., page=...)`, cases/<case>/page/index.html): try
                 the API in a browser
  GET  /status   /version's fields (with the golden check's line), the last reload error, the
                 replica's pid, the live monitor's figures and alarms (`ReloadableModel(...,
                 monitor=...)` or a `self.monitor` of the deployment; shared.monitor), and
                 `status_info()`
An app of several deployments passes `standard_routes(app, downstream=("retriever", ...))`
so that /reload reaches them too. Other code that needs Ray and Serve (a load test, a benchmark)
uses `local_ray()` / `start_local_ray()` for the project's Serve settings.

Batching: `@serve.batch(max_batch_size=B)` can only gather requests that the replica has
accepted, and a replica accepts at most `max_ongoing_requests` at once (default 5). So set
`max_ongoing_requests >= max_batch_size` (ideally about 2x, so one batch fills while another
runs); with the default 5, batches are silently capped at 5 whatever `max_batch_size` says.

Status codes for bad input, always with a JSON body {"error": "<one line>", ...}:
  400 body that is not JSON (malformed, binary, wrong content), or a CasebookError from the model
  413 body larger than MAX_BODY_BYTES (by Content-Length, or counted while streaming)
  422 JSON that does not match the request model (missing field, wrong type, out of range)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from shared.artifacts import MANIFEST, Registry, artifact_hash, load_with_fallback
from shared.errors import ArtifactError, CasebookError, first_line

logger = logging.getLogger("casebook")

T = TypeVar("T")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any single prediction request in the cases

# /reload changes what serves. The interface the app listens on reaches its replicas (other
# processes) in SERVE_HOST_ENV (`serve_runtime_env`); beyond loopback, a reload must carry the
# secret the operator put in RELOAD_TOKEN_ENV when starting it.
SERVE_HOST_ENV = "CASEBOOK_SERVE_HOST"
RELOAD_TOKEN_ENV = "CASEBOOK_RELOAD_TOKEN"


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"; False for 0.0.0.0, ::, a name, or None."""
    import ipaddress

    if host is None:
        return False
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def reload_refusal(
    host: str | None,
    token: str | None,
    authorization: str | None,
    arrived_on: str | None = None,
) -> tuple[int, str] | None:
    """Why a POST /reload is refused, as (status, one line), or None when it may go ahead.

    host: the interface the app listens on ($CASEBOOK_SERVE_HOST in the replica; None when
    unknown: Ray started by `serve run`, not `start_local_ray`; then `arrived_on`, the
    interface this request came in on, decides). token: the operator's secret
    ($CASEBOOK_RELOAD_TOKEN in the replica), None or "" when unset. authorization: the request's
    Authorization header. On loopback: always allowed. Beyond it: 403 when no token is set (the
    route stays off), 401 unless the header is `Bearer <token>` (compared in constant time).
    """
    import hmac

    if is_loopback(host if host else arrived_on):
        return None
    where = (
        f"listens on {host}"
        if host
        else f"got this request on {arrived_on} and {SERVE_HOST_ENV} is not set"
    )
    if not token:
        return 403, (
            f"POST /reload is off: this app {where}, beyond loopback, and {RELOAD_TOKEN_ENV} is "
            f"not set; start it with {RELOAD_TOKEN_ENV}=<secret> in the environment and send "
            "'Authorization: Bearer <secret>', or serve on 127.0.0.1"
        )
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return 401, (
            f"POST /reload needs a token here (this app {where}): send "
            f"'Authorization: Bearer <the value of {RELOAD_TOKEN_ENV}>'"
        )
    return None


def _http_error(status: int, message: str) -> Exception:
    from fastapi import HTTPException

    return HTTPException(status_code=status, detail=message)


def _format_errors(errors: list[dict[str, Any]], limit: int = 3) -> str:
    """Pydantic errors as one line: 'ids.0: Input should be a valid integer; ...'."""
    parts = []
    for err in errors[:limit]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def _clean_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep loc/msg/type only: inputs can be huge or binary, contexts hold exception objects."""
    return [
        {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")}
        for e in errors[:20]
    ]


def validated(model_cls: Any, payload: Any, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """Parse and validate a request into `model_cls` (a pydantic model), or raise HTTPException.

    `payload` may be raw bytes / str (a request body) or already-decoded JSON (dict, list).
    Raises HTTPException 413 if the raw body exceeds `max_bytes`, 400 if it is not JSON,
    422 (with a one-line message naming the fields) if it does not match `model_cls`.
    """
    from pydantic import ValidationError

    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        payload = bytes(payload)
        if len(payload) > max_bytes:
            raise _http_error(
                413, f"request body is {len(payload)} bytes; the limit is {max_bytes}"
            )
        try:
            payload = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise _http_error(400, "request body is not valid JSON") from None
    try:
        return model_cls.model_validate(payload)
    except ValidationError as e:
        raise _http_error(422, f"invalid request: {_format_errors(e.errors())}") from None


class _BodyLimitMiddleware:
    """ASGI middleware: 413 on a declared Content-Length over the limit; counts streamed bytes."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes or declared < 0:
                    from fastapi.responses import JSONResponse

                    msg = (
                        f"request body is {declared} bytes; the limit is {self.max_bytes}"
                        if declared >= 0
                        else "bad Content-Length header"
                    )
                    response = JSONResponse(
                        {"error": msg, "status": 413 if declared >= 0 else 400},
                        status_code=413 if declared >= 0 else 400,
                    )
                    await response(scope, receive, send)
                    return
        seen = 0
        limit = self.max_bytes

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException passes through FastAPI's body parsing (anything else
                    # becomes a generic 400) and reaches the handler as a 413.
                    raise _http_error(413, f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)


def add_health_route(app: Any, info: Callable[[], dict] | None = None) -> Any:
    """Add `GET /health` -> 200 {"status": "ok", **info()} to a FastAPI app; return the app."""

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", **(info() if info else {})}

    return app


def install_error_handlers(app: Any) -> Any:
    """Turn bad input into 4xx JSON answers with a one-line "error" message (see module doc)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def answer(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, "status": status, **extra}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Any, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        not_json = any(
            e.get("type") == "json_invalid"
            or (
                tuple(e.get("loc", ())) == ("body",)
                and isinstance(e.get("input"), (bytes, bytearray))
            )
            for e in errors
        )
        if not_json:
            return answer(400, "request body is not valid JSON")
        return answer(
            422, f"invalid request: {_format_errors(errors)}", detail=_clean_errors(errors)
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Any, exc: StarletteHTTPException) -> JSONResponse:
        return answer(exc.status_code, str(exc.detail))

    @app.exception_handler(CasebookError)
    async def on_casebook(request: Any, exc: CasebookError) -> JSONResponse:
        return answer(400, str(exc))

    return app


def make_app(
    title: str = "casebook",
    max_body_bytes: int = MAX_BODY_BYTES,
    health: bool = True,
    page: str | os.PathLike | None = None,
) -> Any:
    """A FastAPI app for `@serve.ingress(app)`: body-size limit, error handlers, `/health`, and
    with `page=` the case's browser page on `GET /` (`add_page_route`).

    Pass `health=False` if the deployment defines its own `/health` method.
    """
    from fastapi import FastAPI

    app = FastAPI(title=title)
    app.add_middleware(_BodyLimitMiddleware, max_bytes=max_body_bytes)
    install_error_handlers(app)
    if health:
        add_health_route(app)
    if page is not None:
        add_page_route(app, page)
    return app


# --- The case's page on GET / (issue 27)

PAGE_ASSETS = Path(__file__).with_name("page")  # casebook.css and casebook.js, shared by the pages
PAGE_MARKER = "<!-- casebook:common -->"


def page_html(page: str | os.PathLike) -> str:
    """A case's page (`cases/<case>/page/index.html`) with the shared CSS and JavaScript
    (shared/page/) inlined where it holds PAGE_MARKER, so the page is one self-contained
    answer: no CDN, no second request, and it works under any route prefix.

    Raises CasebookError if the page is missing or lacks the marker.
    """
    path = Path(page)
    try:
        html = path.read_text("utf-8")
    except OSError as e:
        raise CasebookError(f"page {path}: cannot read it ({e.strerror})") from None
    if PAGE_MARKER not in html:
        raise CasebookError(f"page {path}: no {PAGE_MARKER} in its <head>")
    css = (PAGE_ASSETS / "casebook.css").read_text("utf-8")
    js = (PAGE_ASSETS / "casebook.js").read_text("utf-8")
    return html.replace(PAGE_MARKER, f"<style>\n{css}</style>\n<script>\n{js}</script>", 1)


def add_page_route(app: Any, page: str | os.PathLike) -> Any:
    """Add `GET /` -> the case's page (`page_html`) to a FastAPI app; return the app.

    The page is read once, here, in the process that builds the app, and travels with it to
    the replicas (which need not see the checkout). It calls the app's own routes, relative
    to its URL, and leaves the OpenAPI schema (so the drills do not fuzz it).
    """
    from fastapi.responses import HTMLResponse

    html = page_html(page)

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(html, headers={"cache-control": "no-cache"})

    return app


class ReloadableModel(Generic[T]):
    """The model a replica serves, swapped only for a new one that loaded completely and passed
    its golden check; with `monitor=`, the live monitor of what it serves.

    At start-up the registry's champion is loaded with `load_with_fallback` (so a corrupt
    champion, or one that fails its golden set, falls back to `previous`); `registry_root` may
    also be one artifact folder. `reload()` loads the current champion again; if that fails
    (corrupt file, failed sanity or golden check), the error is logged and returned and the
    model already in memory keeps serving.

    The golden check (`shared.golden.check_golden`) runs on every load when the artifact ships
    `golden.json`; a version promoted with `Registry.promote(v, force=True)` is loaded without
    it, with a warning. With `monitor="<case>"` and a `monitor_reference.json` in the artifact,
    `self.monitor` is a `shared.monitor.Monitor` against that reference (a fresh one on each
    reload), fed by `observe(requests, answers)` from the handler.

    Attributes:
        version: the served version's name ("v0002", or the artifact folder's name).
        alias: "champion", "previous" or "artifact".
        artifact_sha256: `shared.artifacts.artifact_hash` of the served artifact.
        last_error: the last failed reload's one-line reason (None after a good one).
        golden: the served version's golden check, one line.
        monitor: the live Monitor, or None (no `monitor=` name, or no reference shipped).
    """

    def __init__(
        self,
        registry_root: str | os.PathLike,
        loader: Callable[[Path], T],
        *,
        monitor: str | None = None,
        golden: bool = True,
    ) -> None:
        self.root = Path(registry_root)
        self.loader = loader
        self.monitor_name = monitor
        self.check_golden = golden
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._checks: dict[Path, str] = {}
        self._observe_error: str | None = None
        self.model, self.alias = load_with_fallback(self.root, self._load)
        path = self._path_of(self.alias)
        self.version, self.artifact_sha256 = path.name, _hash_or_none(path)
        self.golden = self._checks.get(path, "not checked")
        self.monitor = self._make_monitor(path)

    def _path_of(self, alias: str) -> Path:
        if alias == "artifact" or (self.root / MANIFEST).is_file():
            return self.root
        return Registry(self.root).resolve(alias)

    def _forced(self, path: Path) -> bool:
        if path == self.root:
            return False
        try:
            return Registry(self.root).aliases().get("forced") == path.name
        except ArtifactError:
            return False

    def _load(self, path: Path) -> T:
        """The loader, then the golden check (unless switched off or forced by the registry)."""
        model = self.loader(path)
        if not self.check_golden:
            line = "not checked (golden=False)"
        elif self._forced(path):
            line = f"skipped: {path.name} was promoted with force=True (operator's override)"
            logger.warning("serving %s without its golden check: %s", path.name, line)
        else:
            from shared.golden import check_golden

            line = check_golden(model, path)
        self._checks[path] = line
        return model

    def _make_monitor(self, path: Path) -> Any:
        if not self.monitor_name:
            return None
        from shared.golden import read_reference
        from shared.monitor import Monitor

        try:
            ref = read_reference(path)
        except ArtifactError as e:
            logger.warning("no monitor for %s: %s", path.name, first_line(e))
            return None
        return None if ref is None else Monitor(ref, name=self.monitor_name)

    def get(self) -> T:
        """The model to use for this request."""
        return self.model

    def observe(self, requests: list[dict], answers: list[Any] | None = None) -> None:
        """Feed the monitor this batch (`model.observation(requests, answers)`). Never raises:
        monitoring must not fail a request; the first error is logged and kept for /status."""
        monitor = self.monitor
        if monitor is None:
            return
        try:
            features, scores = self.model.observation(requests, answers)  # type: ignore[attr-defined]
            monitor.observe(features, scores)
        except Exception as e:
            if self._observe_error is None:
                logger.warning("monitor %s: observation failed: %s", self.monitor_name, e)
            self._observe_error = first_line(e)

    def status(self) -> dict[str, Any]:
        """{"serving": version, "alias", "artifact_sha256", "last_error", "golden"}."""
        return {
            "serving": self.version,
            "alias": self.alias,
            "artifact_sha256": self.artifact_sha256,
            "last_error": self.last_error,
            "golden": self.golden,
        }

    def monitor_status(self) -> dict[str, Any]:
        """The monitor's verdict for /status, or why there is none."""
        if self.monitor is None:
            why = (
                "no monitor name given"
                if not self.monitor_name
                else "no monitor_reference.json in the artifact"
            )
            return {"enabled": False, "why": why}
        # "observed": live, where the verdict's own count is from its last check (every 50).
        out = {"enabled": True, **self.monitor.status(), "observed": self.monitor.observed}
        if self._observe_error:
            out["observe_error"] = self._observe_error
        return out

    def reload(self) -> dict[str, Any]:
        """Load the champion again; keep the current model if that fails.

        Returns:
            {"ok": bool, "serving", "alias", "artifact_sha256", "golden", "error": message or
            None, "pid"}.
        """
        try:
            path = self._path_of("champion")
            digest = _hash_or_none(path)
            model = self._load(path)
            monitor = self._make_monitor(path)
        except Exception as e:
            msg = first_line(e)
            self.last_error = msg
            logger.warning("reload refused, still serving %s: %s", self.version, msg)
            return {"ok": False, **self.status(), "error": msg, "pid": os.getpid()}
        with self._lock:
            self.model, self.alias = model, "artifact" if path == self.root else "champion"
            self.version, self.artifact_sha256 = path.name, digest
            self.golden = self._checks.get(path, "not checked")
            self.monitor = monitor
            self._observe_error = None
            self.last_error = None
        return {"ok": True, **self.status(), "error": None, "pid": os.getpid()}


def _hash_or_none(path: Path) -> str | None:
    try:
        return artifact_hash(path)
    except ArtifactError:
        return None


def standard_routes(
    app: Any, *, model: str = "model", downstream: tuple[str, ...] = ()
) -> Callable[[type], type]:
    """Class decorator: give a Serve ingress class the standard routes (see the module doc).

    Put it under `@serve.ingress(app)`. It adds three methods to the class and registers them on
    `app` (fresh functions per class, named `<Class>.<method>` so Serve binds them to the
    replica, whatever else the class defines):

        GET  /version  {"serving": "v0002", "alias": "champion", "artifact_sha256": hex, ...}
        POST /reload   200 and the new version, or 409 {"error": why, "serving": the old one}:
                       the model in memory keeps serving when the champion does not load;
                       401/403 {"error": why} beyond loopback without the token
                       (`reload_refusal`, read from the replica's environment per request)
        GET  /status   /version's fields, "last_error", the replica's "pid", the live
                       monitor's verdict under "monitor" when the instance has
                       `self.monitor` (a `shared.monitor.Monitor`), and `status_info()` if any

    (`/health` comes from `make_app`.) `self.<model>` must be a `ReloadableModel`. With
    `downstream=("retriever", ...)`, `/reload` first calls `await self.retriever.reload.remote()`
    on those deployment handles (each such deployment defines `def reload(self) -> dict:
    return self.model.reload()`), and reloads the ingress only if they all succeeded.
    A reload reaches the replica that receives the request (and one replica of each
    downstream deployment): run one replica per deployment, as the cases do, or call /reload
    once per replica.
    """

    from fastapi import Request

    def decorate(cls: type) -> type:
        def version(self) -> dict:
            return getattr(self, model).status()

        async def reload(self, request: Request) -> Any:
            import asyncio

            from fastapi.responses import JSONResponse

            refused = reload_refusal(
                os.environ.get(SERVE_HOST_ENV),
                os.environ.get(RELOAD_TOKEN_ENV),
                request.headers.get("authorization"),
                arrived_on=(request.scope.get("server") or (None,))[0],
            )
            if refused is not None:
                code, why = refused
                headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
                body = {"ok": False, "error": why, "status": code, "pid": os.getpid()}
                return JSONResponse(body, status_code=code, headers=headers)
            for name in downstream:
                res = await getattr(self, name).reload.remote()
                if not res.get("ok"):
                    err = f"{name}: {res.get('error')}"
                    body = {
                        **getattr(self, model).status(),
                        "ok": False,
                        "error": err,
                        "pid": os.getpid(),
                    }
                    return JSONResponse({**body, "status": 409}, status_code=409)
            res = await asyncio.get_running_loop().run_in_executor(
                None, getattr(self, model).reload
            )
            code = 200 if res["ok"] else 409
            return JSONResponse({**res, "status": code}, status_code=code)

        def status(self) -> dict:
            extra = getattr(self, "status_info", None)
            served = getattr(self, model)
            out = {**served.status(), "pid": os.getpid()}
            monitor = getattr(self, "monitor", None)
            if monitor is not None:  # a shared.monitor.Monitor kept by the replica itself
                out["monitor"] = monitor.status()
            elif hasattr(served, "monitor_status"):  # ReloadableModel(monitor=...)
                out["monitor"] = served.monitor_status()
            return {**out, **(extra() if extra else {})}

        for name, fn, method, path in (
            ("version", version, "GET", "/version"),
            ("reload", reload, "POST", "/reload"),
            ("status", status, "GET", "/status"),
        ):
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__}.{name} is a standard route; remove it")
            if name == "reload":  # FastAPI must see the class, not this module's string
                fn.__annotations__["request"] = Request
            fn.__qualname__ = f"{cls.__qualname__}.{name}"
            fn.__name__ = name
            setattr(cls, name, fn)
            app.add_api_route(path, fn, methods=[method])
        return cls

    return decorate


# Ray Serve's request-path settings for the Ray processes (controller, proxy, replicas): the
# parts of Ray's RAY_SERVE_THROUGHPUT_OPTIMIZED mode (Ray >= 2.56) that any topology can use.
# Calls between deployments (and from the proxy) go over gRPC instead of Ray tasks; a replica
# runs user code and its handles' router on its main event loop instead of handing every request
# to another thread; the per-request log path buffers and skips stderr. They reach Ray's workers
# through `ray.init(runtime_env=serve_runtime_env())`, not the driver's own environment: a
# handle used from plain (non-async) driver code needs the router's own loop. The mode's other
# part, direct ingress, is `direct_ingress_env`. Measured on 2 cores (video recommendation,
# 100K videos, 8 in flight, `--load-test`), through the proxy: 6.3 ms of CPU per request
# against 8.5, p99 42-59 ms over several runs against 58-73.
SERVE_ENV = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",  # errors still flush at once
}


def direct_ingress_env(port: int) -> dict[str, str]:
    """Ray Serve's direct ingress (Ray >= 2.56), pinned to `port`.

    The ingress replica runs its own HTTP server, so a request no longer crosses the proxy
    actor, and the replica no longer calls the proxy back for the request body. Measured on 2
    cores (video recommendation, 100K videos, 8 in flight): half the CPU per request and half
    the p99 of the proxy path. Serve gives each ingress replica the lowest free port of
    [MIN, MAX); a one-port range pins it to `port`, so this suits one application with one
    ingress replica (what `casebook serve` runs). The proxy still starts, on its own port.
    """
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),
        # How long a stopping replica stays open for a load balancer to deregister it (default
        # 30 s); no load balancer stands in front of a local app.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
    }


def serve_runtime_env(
    direct_ingress_port: int | None = None, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """`runtime_env` for `ray.init`: SERVE_ENV (plus `direct_ingress_env` when a port is given)
    for every Ray worker; a value already set in this process's environment wins. Also switches
    Ray's usage statistics off here unless the environment says otherwise (no network at run
    time). The replicas also get `host`, the interface Serve listens on (SERVE_HOST_ENV), and
    RELOAD_TOKEN_ENV when it is set here: /reload checks both (`reload_refusal`).

    With user code on the replica's event loop, a deployment's `async def` method must not
    block for long (a few ms of model work per batch is fine); a plain `def` method still runs
    in Serve's thread pool.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = dict(SERVE_ENV)
    if direct_ingress_port is not None:
        env.update(direct_ingress_env(direct_ingress_port))
    env_vars = {k: os.environ.get(k, v) for k, v in env.items()}
    env_vars[SERVE_HOST_ENV] = host  # what this process binds, whatever the environment says
    if os.environ.get(RELOAD_TOKEN_ENV):
        env_vars[RELOAD_TOKEN_ENV] = os.environ[RELOAD_TOKEN_ENV]
    return {"env_vars": env_vars}


def wait_for_http(url: str, timeout_s: float = 20.0) -> bool:
    """True once `url` answers HTTP at all (any status), False if it has not within timeout_s."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with opener.open(url, timeout=2.0):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP answer, even a 404, means the server is up
        except (OSError, urllib.error.URLError):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True if a TCP server could bind host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# --- Who is listening: the sockets of a process tree, from /proc (Linux; no psutil)

LOOPBACK = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class ListeningSocket:
    """One TCP socket in the LISTEN state, and the process that holds it."""

    pid: int
    name: str  # the process's command name (/proc/<pid>/comm), e.g. "raylet", "ray::ServeRepli"
    host: str  # "127.0.0.1", "0.0.0.0", "::", ...
    port: int

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK or self.host.startswith("127.")


def process_tree(root_pid: int) -> list[int]:
    """`root_pid` and every process descended from it (by the parent ids in /proc/<pid>/stat).

    Ray's processes (GCS, raylet, workers holding Serve's controller, proxy and replicas) all
    descend from the driver that called `ray.init`, so this is the app's process set.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended while we looked
        # Fields after the command name, which is in parentheses and may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return sorted(out)


def _hex_address(text: str) -> tuple[str, int]:
    """'0100007F:1F90' (tcp) or 32 hex digits:port (tcp6) from /proc/net/tcp* -> (host, port)."""
    import ipaddress

    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    # The kernel prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv4 socket seen as IPv6
    return str(mapped or ip), int(port, 16)


def _listening_inodes(pid: int) -> dict[int, tuple[str, int]]:
    """{socket inode: (host, port)} for the TCP sockets in LISTEN state in pid's namespace."""
    found = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # 0A = TCP_LISTEN
                found[int(fields[9])] = _hex_address(fields[1])
    return found


def listening_sockets(pids: list[int]) -> list[ListeningSocket]:
    """Every TCP socket in LISTEN state held by one of `pids` (a socket shared by a parent and
    its child is listed for each). Reads /proc/<pid>/fd and /proc/<pid>/net/tcp{,6}; processes
    that end while this runs are skipped."""
    out: list[ListeningSocket] = []
    table: dict[int, tuple[str, int]] | None = None
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = os.listdir(fd_dir)
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue  # ended, or not ours to read
        inodes = set()
        for fd in fds:
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:
                continue  # closed meanwhile (listdir's own descriptor, for one)
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
        if not inodes:
            continue
        if table is None:
            table = _listening_inodes(pid)
        for inode in sorted(inodes & table.keys()):
            host, port = table[inode]
            out.append(ListeningSocket(pid, name, host, port))
    return out


@dataclass
class LocalRay:
    """A local Ray with Serve started by `start_local_ray` (pass it to `stop_local_ray`)."""

    host: str
    port: int  # Serve's proxy
    direct_port: int | None  # the ingress replica's own HTTP server, when direct ingress is on
    started_ray: bool  # False when Ray was already running (then only Serve was started)

    @property
    def url(self) -> str:
        """The URL clients should use: the direct ingress if on, else the proxy."""
        return f"http://{self.host}:{self.direct_port or self.port}"


# `ray.init(_node_ip_address="127.0.0.1")` alone is not enough: Ray swaps a loopback node
# address for the machine's routable one, unless "Ray clusters" are off (its setting for
# laptops, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; that setting only decides the node address).
# With the node address 127.0.0.1, the GCS, raylet, object manager, workers and agents bind
# 127.0.0.1 instead of every interface. Checked with `listening_sockets` (tests/test_serving.py).
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """For the duration of `ray.init`: this process and the Ray processes it starts (they
    inherit the environment) take 127.0.0.1 as the node address."""
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(_CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = old_env


def loopback_worker_setup() -> None:
    """Ray worker start-up hook of a local Ray: Serve replicas' gRPC server on 127.0.0.1.

    Ray Serve 2.60 binds each replica's inter-deployment gRPC server to "[::]:0" (every
    interface; hard-coded in ray/serve/_private/replica.py), whatever the node address. Callers
    reach it at the node address, 127.0.0.1 here, so loopback is all it needs.
    """
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "casebook_loopback", False):
        return

    def add_port(server: Any, address: str) -> int:
        if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    add_port.casebook_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port


def start_local_ray(
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    direct_ingress_port: int | None = None,
    num_cpus: int | None = None,
    logging_config: dict | None = None,
    address: str | None = None,
) -> LocalRay:
    """Start Ray (unless it is running) with the project's Serve settings, then Serve's proxy.

    Args:
        host: interface for the proxy and the direct ingress (127.0.0.1 in tests).
        port: the proxy's port (default: a free one).
        direct_ingress_port: pin the ingress replica's own HTTP server to this port
            (`direct_ingress_env`); only possible when Ray is started here, ignored otherwise.
        num_cpus: CPUs Ray may place replicas on (default: all).
        logging_config: Serve's logging config, e.g. {"enable_access_log": False}.
        address: a Ray cluster to join ("ray://...", "host:port", "auto"; default the
            RAY_ADDRESS environment variable). Without one, a local Ray is started.

    A Ray started here gets `serve_runtime_env()` (Serve's fast request path, no usage
    statistics: no network at run time), no dashboard, workers' logs kept out of the driver,
    and every process it can on loopback: the node address (GCS, raylet, object manager, the
    workers' gRPC servers) and the dashboard agent on 127.0.0.1, so nothing is reachable from
    the network (`listening_sockets(process_tree(os.getpid()))` shows it). A cluster address
    is the user asking for the network; then Ray's own settings apply.
    """
    import ray
    from ray import serve

    address = address or os.environ.get("RAY_ADDRESS") or None
    started = not ray.is_initialized()
    if not started or address:
        direct_ingress_port = None
    port = int(port) if port else free_port(host)
    if started and address:
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env=serve_runtime_env(host=host),
        )
    elif started:
        with loopback_node():
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                dashboard_host="127.0.0.1",
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
                logging_level=logging.WARNING,
                runtime_env={
                    **serve_runtime_env(direct_ingress_port, host),
                    "worker_process_setup_hook": "shared.serving.loopback_worker_setup",
                },
            )
    if not is_loopback(host) and not os.environ.get(RELOAD_TOKEN_ENV):
        logger.warning(
            "serving on %s, beyond loopback: POST /reload stays off (403) until %s is set "
            "when the app starts",
            host,
            RELOAD_TOKEN_ENV,
        )
    kwargs = {"logging_config": logging_config} if logging_config else {}
    serve.start(http_options={"host": host, "port": port}, **kwargs)
    return LocalRay(host, port, direct_ingress_port, started)


def stop_local_ray(local: LocalRay, timeout_s: float = 30.0) -> None:
    """Shut Serve down, and Ray too if `start_local_ray` started it.

    `serve.shutdown()` waits on the controller, which can hang on a busy machine; it gets
    `timeout_s` seconds in a helper thread, after which a Ray this process started is shut down
    anyway (that stops Serve with it), so Ctrl-C always ends `casebook serve`.
    """
    import ray
    from ray import serve

    done = threading.Event()

    def serve_down() -> None:
        try:
            serve.shutdown()
        except Exception as e:  # noqa: BLE001 - shutting down: report, then stop Ray anyway
            logger.warning("Serve shutdown failed: %s", first_line(e))
        finally:
            done.set()

    threading.Thread(target=serve_down, name="serve-shutdown", daemon=True).start()
    if not done.wait(timeout_s):
        logger.warning("Serve did not shut down in %.0f s; stopping Ray", timeout_s)
    if local.started_ray:
        ray.shutdown()


@contextlib.contextmanager
def local_ray(*args: Any, **kwargs: Any) -> Iterator[LocalRay]:
    """`start_local_ray(...)` for the block, `stop_local_ray` after it (even on an error)."""
    local = start_local_ray(*args, **kwargs)
    try:
        yield local
    finally:
        stop_local_ray(local)


def run_app(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    blocking: bool = True,
    name: str = "default",
    route_prefix: str = "/",
    direct_ingress: bool = True,
) -> Any:
    """Start Ray (if needed) and Ray Serve on host:port and deploy `app` (a bound deployment).

    With `blocking=True` it prints the URL and waits until Ctrl-C, then shuts Serve (and the Ray
    instance it started) down. With `blocking=False` it returns the deployment handle.
    A deployment that fails to start raises CasebookError (one line; the replica's traceback is
    in Ray's serve logs). Check the model loads in the driver first for a precise message.
    A Ray started here gets `start_local_ray`'s settings, and with `direct_ingress` the ingress
    replica itself answers on host:port (the proxy moves to a free port; if the replica's server
    does not come up, the proxy's URL is printed instead). Into a Ray that is already running,
    the app is deployed behind the proxy on host:port.
    """
    import ray
    from ray import serve

    direct = direct_ingress and not ray.is_initialized()
    if direct and not port_is_free(host, int(port)):
        raise CasebookError(f"port {port} on {host} is in use; pass another with --port")
    local = start_local_ray(
        host, free_port(host) if direct else int(port), direct_ingress_port=port if direct else None
    )
    try:
        handle = serve.run(app, name=name, route_prefix=route_prefix, blocking=False)
    except RuntimeError as e:  # a replica failed to start (e.g. no loadable model)
        if local.started_ray:
            stop_local_ray(local)
        first = first_line(e)
        raise CasebookError(
            f"{first} (the replica's error is in /tmp/ray/session_latest/logs/serve/)"
        ) from None
    prefix = route_prefix.rstrip("/")
    if direct and not wait_for_http(f"http://{host}:{port}{prefix}/health"):
        logger.warning(
            "direct ingress did not come up on port %s; serving through the proxy on %s",
            port,
            local.port,
        )
        port, direct = local.port, False
    if not blocking:
        return handle
    via = f"; Ray's log line names the proxy, also up on port {local.port}" if direct else ""
    health = f"{prefix}/health{via}"
    block_until_interrupt(
        local, f"serving on http://{host}:{port}{prefix}/ (health: {health}); Ctrl-C to stop"
    )
    return handle


def block_until_interrupt(local: LocalRay, message: str) -> None:
    """Print `message`, serve until Ctrl-C, then stop the Ray this process started."""
    print(message, flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping")
    finally:
        stop_local_ray(local)
