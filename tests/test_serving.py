"""Ray Serve glue: a real local app around a registry model, bad input, and corrupt artifacts.

One Ray instance for the module; every deployment uses num_cpus=0 so a 2-core CI machine fits.
"""

import pytest
import requests
import torch
from fastapi import HTTPException, Request
from pydantic import BaseModel, Field

from shared.artifacts import Registry, artifact_hash, load_artifact, sanity_check, save_artifact
from shared.serving import (
    MAX_BODY_BYTES,
    ReloadableModel,
    free_port,
    listening_sockets,
    make_app,
    process_tree,
    run_app,
    standard_routes,
    validated,
)


class ToyRequest(BaseModel):
    x: list[float] = Field(min_length=3, max_length=3)


class ToyModel:
    """y = w . x, loaded from an artifact; the sanity check runs before it is accepted."""

    def __init__(self, w: torch.Tensor, version: str) -> None:
        self.w = w
        self.version = version

    @classmethod
    def load(cls, path):
        art = load_artifact(path)
        w = art.tensors["w"]
        sanity_check(w @ torch.eye(3))
        return cls(w, path.name)

    def predict(self, x: list[float]) -> float:
        return float(self.w @ torch.tensor(x))


def _register(reg: Registry, tmp, w, name):
    src = save_artifact(tmp / f"src-{name}", {"w": torch.tensor(w)}, {}, {}, "toy")
    return reg.register(src, name=name)


def _registry_with_v1(tmp):
    """A registry whose champion v1 has w = [1, 2, 3]."""
    reg = Registry(tmp / "registry")
    _register(reg, tmp, [1.0, 2.0, 3.0], "v1")
    reg.promote("v1")
    return reg


def _corrupt(version_dir):
    path = version_dir / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _build_deployment():
    from ray import serve

    app = make_app("toy")

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=8)
    @serve.ingress(app)
    @standard_routes(app)
    class ToyServer:
        def __init__(self, registry_root: str) -> None:
            self.model = ReloadableModel(registry_root, ToyModel.load)
            self.requests = 0

        @app.post("/predict")
        def predict(self, req: ToyRequest) -> dict:
            self.requests += 1
            m = self.model.get()
            return {"y": m.predict(req.x), "version": m.version}

        def status_info(self) -> dict:
            return {"requests": self.requests}

    return ToyServer


def _build_two_stage():
    """An ingress and a downstream deployment, each holding the registry's model."""
    from ray import serve

    app = make_app("toy-two")

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class ToyScorer:
        def __init__(self, registry_root: str) -> None:
            self.model = ReloadableModel(registry_root, ToyModel.load)

        async def __call__(self, x: list[float]) -> float:
            return self.model.get().predict(x)

        def reload(self) -> dict:
            return self.model.reload()

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    @standard_routes(app, downstream=("scorer",))
    class ToyFront:
        def __init__(self, registry_root: str, scorer) -> None:
            self.model = ReloadableModel(registry_root, ToyModel.load)
            self.scorer = scorer

        @app.post("/predict")
        async def predict(self, req: ToyRequest) -> dict:
            y = await self.scorer.remote(req.x)
            return {"y": y, "version": self.model.get().version}

    return lambda root: ToyFront.bind(root, ToyScorer.bind(root))


@pytest.fixture(scope="module")
def serve_url(serve_port):
    # One Ray + Serve for the session (tests/conftest.py); this module's apps go after it.
    return f"http://127.0.0.1:{serve_port}"


def _deploy(name: str, registry_root, url: str) -> str:
    # run_app with blocking=False: Ray and Serve are already up, so it only deploys.
    port = int(url.rsplit(":", 1)[1])
    app = _build_deployment().bind(str(registry_root))
    run_app(app, "127.0.0.1", port, blocking=False, name=name, route_prefix=f"/{name}")
    return f"{url}/{name}"


@pytest.mark.serve
def test_requests_and_bad_input(serve_url, tmp_path):
    reg = _registry_with_v1(tmp_path)
    base = _deploy("toy", reg.root, serve_url)

    r = requests.post(f"{base}/predict", json={"x": [1, 1, 1]}, timeout=30)
    assert r.status_code == 200 and r.json() == {"y": 6.0, "version": "v1"}
    assert requests.get(f"{base}/health", timeout=10).json() == {"status": "ok"}

    bad = [
        ({"data": b"{not json"}, 400, "not valid JSON"),
        (
            {"data": b"\x00\xff\xfe binary", "headers": {"Content-Type": "application/json"}},
            400,
            "JSON",
        ),
        ({"json": {"x": ["a", 1, 2]}}, 422, "x.0"),
        ({"json": {"x": [1, 2]}}, 422, "x"),
        ({"json": {"y": [1, 2, 3]}}, 422, "x: Field required"),
        ({"json": [1, 2, 3]}, 422, "invalid request"),
        ({"data": b"\x89PNG", "headers": {"Content-Type": "image/png"}}, 400, "JSON"),
        ({"data": b"x" * (MAX_BODY_BYTES + 1)}, 413, "limit"),
        ({"data": iter([b" " * 65536] * 20)}, 413, "limit"),  # chunked: no Content-Length
    ]
    for kwargs, status, text in bad:
        r = requests.post(f"{base}/predict", timeout=30, **kwargs)
        assert r.status_code == status, (kwargs.get("json"), r.status_code, r.text[:200])
        assert text in r.json()["error"], r.text[:200]
    assert requests.get(f"{base}/nope", timeout=10).status_code == 404


@pytest.mark.serve
def test_corrupt_champion_on_reload_keeps_serving_the_old_model(serve_url, tmp_path):
    reg = _registry_with_v1(tmp_path)
    base = _deploy("reload", reg.root, serve_url)
    assert requests.post(f"{base}/predict", json={"x": [1, 0, 0]}, timeout=30).json()["y"] == 1.0

    # A new champion lands, then a byte of it is damaged on disk before the replica reloads.
    v2 = _register(reg, tmp_path, [10.0, 20.0, 30.0], "v2")
    reg.promote("v2")
    _corrupt(v2)
    r = requests.post(f"{base}/reload", timeout=30)
    assert r.status_code == 409
    assert r.json()["serving"] == "v1"
    assert "weights.safetensors" in r.json()["error"] and "corrupt" in r.json()["error"]
    for _ in range(5):
        r = requests.post(f"{base}/predict", json={"x": [1, 0, 0]}, timeout=30)
        assert r.status_code == 200 and r.json() == {"y": 1.0, "version": "v1"}
    status = requests.get(f"{base}/status", timeout=10).json()
    assert "weights.safetensors" in status["last_error"] and status["requests"] == 6
    # /version still names the artifact in memory (v1), not the corrupt champion on disk.
    v1_hash = artifact_hash(reg.versions_dir / "v1")
    assert requests.get(f"{base}/version", timeout=10).json()["artifact_sha256"] == v1_hash

    # Once a good champion is promoted, reload picks it up.
    _register(reg, tmp_path, [5.0, 0.0, 0.0], "v3")
    reg.promote("v3")
    assert requests.post(f"{base}/reload", timeout=30).json()["serving"] == "v3"
    assert requests.post(f"{base}/predict", json={"x": [1, 0, 0]}, timeout=30).json()["y"] == 5.0
    version = requests.get(f"{base}/version", timeout=10).json()
    assert version["serving"] == "v3" and version["alias"] == "champion"
    assert version["artifact_sha256"] == artifact_hash(reg.versions_dir / "v3")


@pytest.mark.serve
def test_reload_reaches_the_downstream_deployment(serve_url, tmp_path):
    reg = _registry_with_v1(tmp_path)
    port = int(serve_url.rsplit(":", 1)[1])
    app = _build_two_stage()(str(reg.root))
    run_app(app, "127.0.0.1", port, blocking=False, name="two", route_prefix="/two")
    base = f"{serve_url}/two"
    assert requests.post(f"{base}/predict", json={"x": [1, 0, 0]}, timeout=30).json()["y"] == 1.0

    # A corrupt champion: the downstream refuses it, so nothing changes anywhere.
    v2 = _register(reg, tmp_path, [7.0, 0.0, 0.0], "v2")
    reg.promote("v2")
    _corrupt(v2)
    r = requests.post(f"{base}/reload", timeout=30)
    assert r.status_code == 409 and r.json()["error"].startswith("scorer:")
    assert r.json()["serving"] == "v1"
    assert requests.post(f"{base}/predict", json={"x": [1, 0, 0]}, timeout=30).json()["y"] == 1.0

    # A good champion: both deployments move to it.
    _register(reg, tmp_path, [9.0, 0.0, 0.0], "v3")
    reg.promote("v3")
    r = requests.post(f"{base}/reload", timeout=30)
    assert r.status_code == 200 and r.json()["serving"] == "v3"
    r = requests.post(f"{base}/predict", json={"x": [1, 0, 0]}, timeout=30).json()
    assert r == {"y": 9.0, "version": "v3"}


@pytest.mark.serve
def test_corrupt_champion_at_start_up_serves_previous(serve_url, tmp_path):
    reg = Registry(tmp_path / "registry")
    _register(reg, tmp_path, [1.0, 2.0, 3.0], "v1")
    _register(reg, tmp_path, [4.0, 5.0, 6.0], "v2")
    reg.promote("v1")
    reg.promote("v2")
    _corrupt(reg.resolve("champion"))
    base = _deploy("fallback", reg.root, serve_url)
    r = requests.post(f"{base}/predict", json={"x": [0, 0, 1]}, timeout=30)
    assert r.status_code == 200 and r.json() == {"y": 3.0, "version": "v1"}
    assert requests.get(f"{base}/status", timeout=10).json()["alias"] == "previous"


@pytest.mark.serve
def test_no_loadable_model_is_a_one_line_error(serve_url, tmp_path):
    from shared.errors import CasebookError

    port = int(serve_url.rsplit(":", 1)[1])
    app = (
        _build_deployment()
        .options(max_constructor_retry_count=1)
        .bind(str(tmp_path / "no-registry"))
    )
    with pytest.raises(CasebookError, match="broken"):
        run_app(app, "127.0.0.1", port, blocking=False, name="broken", route_prefix="/broken")


def test_standard_routes_refuse_a_class_that_defines_them():
    app = make_app("clash")

    class Clash:
        def reload(self) -> dict:
            return {}

    with pytest.raises(TypeError, match="standard route"):
        standard_routes(app)(Clash)


def test_validated_without_ray():
    assert validated(ToyRequest, b'{"x": [1, 2, 3]}').x == [1.0, 2.0, 3.0]
    assert validated(ToyRequest, {"x": [1, 2, 3]}).x == [1.0, 2.0, 3.0]
    for payload, status in [
        (b"{bad", 400),
        (b"\xff\xfe\x00", 400),
        ({"x": "abc"}, 422),
        (b"1" * (MAX_BODY_BYTES + 1), 413),
    ]:
        with pytest.raises(HTTPException) as e:
            validated(ToyRequest, payload)
        assert e.value.status_code == status and e.value.detail


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_make_app_error_mapping_without_ray():
    """The same FastAPI app under plain uvicorn (fast): model errors are 400, limits hold."""
    import threading
    import time

    import uvicorn

    from shared.errors import DataError

    app = make_app("plain", max_body_bytes=1000)

    @app.post("/predict")
    def predict(req: ToyRequest) -> dict:
        if req.x[0] < 0:
            raise DataError("x[0] must be >= 0")
        return {"y": sum(req.x)}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        assert requests.post(f"{url}/predict", json={"x": [1, 2, 3]}, timeout=5).json() == {
            "y": 6.0
        }
        r = requests.post(f"{url}/predict", json={"x": [-1, 2, 3]}, timeout=5)
        assert r.status_code == 400 and r.json()["error"] == "x[0] must be >= 0"
        r = requests.post(f"{url}/predict", json={"x": [1.0] * 400}, timeout=5)
        assert r.status_code == 413
        r = requests.post(f"{url}/predict", json={"x": [1.0] * 4}, timeout=5)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "x"]
        assert requests.get(f"{url}/health", timeout=5).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def test_listening_sockets_sees_this_process_and_its_interface():
    import os
    import socket

    with socket.socket() as s4, socket.socket(socket.AF_INET6) as s6:
        s4.bind(("127.0.0.1", 0))
        s4.listen()
        s6.bind(("::", 0))
        s6.listen()
        found = {(x.host, x.port): x for x in listening_sockets([os.getpid()])}
        mine4 = found[("127.0.0.1", s4.getsockname()[1])]
        mine6 = found[("::", s6.getsockname()[1])]
    assert mine4.loopback and mine4.pid == os.getpid()
    assert not mine6.loopback  # every interface: what the drill flags
    assert os.getpid() in process_tree(os.getpid())
    assert process_tree(1)[0] == 1


@pytest.mark.serve
def test_local_ray_listens_on_loopback_only(serve_url, tmp_path):
    """Every socket of the Ray the project starts (GCS, raylet, agents, replicas) is 127.0.0.1."""
    import os

    reg = _registry_with_v1(tmp_path)
    base = _deploy("toy-sockets", reg.root, serve_url)
    assert requests.post(f"{base}/predict", json={"x": [1, 1, 1]}, timeout=30).status_code == 200
    sockets = listening_sockets(process_tree(os.getpid()))
    names = {s.name for s in sockets}
    assert "raylet" in names and "gcs_server" in names
    assert any("ServeRepli" in s.name for s in sockets)  # a replica's own gRPC server
    assert [s for s in sockets if not s.loopback] == []
    replica = requests.get(f"{base}/status", timeout=30).json()["pid"]
    assert replica in process_tree(os.getpid())  # /status names the replica's process


# --- /reload's credential (issue 26): open on loopback, a token beyond it


class _FakeServed:
    """What standard_routes needs of a ReloadableModel, counting the reloads."""

    def __init__(self) -> None:
        self.reloads = 0

    def reload(self) -> dict:
        self.reloads += 1
        return {"ok": True, "serving": "v2"}

    def status(self) -> dict:
        return {"serving": "v1"}


def _post_reload(monkeypatch, host, token, authorization=None, arrive_on="10.0.0.9"):
    """POST /reload through the standard route of a plain FastAPI app (no Ray): the app runs
    with SERVE_HOST_ENV=host and RELOAD_TOKEN_ENV=token, as `serve_runtime_env` sets them in a
    replica; the request comes in on the interface `arrive_on`. Returns (response, how many
    reloads the model saw)."""
    import inspect

    from fastapi.testclient import TestClient

    from shared.serving import RELOAD_TOKEN_ENV, SERVE_HOST_ENV

    for name, value in ((SERVE_HOST_ENV, host), (RELOAD_TOKEN_ENV, token)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    app = make_app("guarded")

    @standard_routes(app)
    class Server:
        model = _FakeServed()

    server = Server()
    # FastAPI hands the route the request (Serve then binds `self` to the replica).
    assert inspect.signature(Server.reload).parameters["request"].annotation is Request
    front = make_app("front")  # here one instance stands in for the replica

    @front.post("/reload")
    async def reload_route(request: Request):
        return await Server.reload(server, request)

    headers = {"Authorization": authorization} if authorization else {}
    r = TestClient(front, base_url=f"http://{arrive_on}").post("/reload", headers=headers)
    return r, server.model.reloads


def test_reload_is_open_on_loopback(monkeypatch):
    for host in ("127.0.0.1", "::1", "localhost"):
        r, n = _post_reload(monkeypatch, host, None)
        assert r.status_code == 200 and r.json()["serving"] == "v2" and n == 1, host


def test_reload_beyond_loopback_without_a_token_set_is_off_and_says_how(monkeypatch):
    for host in ("0.0.0.0", "::", "10.0.0.5", None):  # None: started outside start_local_ray
        # The bind host decides, not the interface a request came in on.
        r, n = _post_reload(monkeypatch, host, None, "Bearer anything", arrive_on="127.0.0.1")
        if host is None:  # `serve run` of a loopback config: the request's interface decides
            assert r.status_code == 200 and n == 1
            r, n = _post_reload(monkeypatch, host, None, "Bearer anything", arrive_on="10.0.0.9")
        assert r.status_code == 403 and n == 0, host
        assert "CASEBOOK_RELOAD_TOKEN=<secret>" in r.json()["error"]


def test_reload_beyond_loopback_needs_the_token(monkeypatch):
    for auth in (None, "Bearer wrong", "s3cret", "Basic s3cret", "Bearer s3cre"):
        r, n = _post_reload(monkeypatch, "0.0.0.0", "s3cret", auth)
        assert r.status_code == 401 and n == 0, auth
        assert "Authorization: Bearer" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    r, n = _post_reload(monkeypatch, "0.0.0.0", "s3cret", "Bearer s3cret")
    assert r.status_code == 200 and n == 1


def test_replicas_learn_the_bind_host_and_the_token(monkeypatch):
    from shared.serving import RELOAD_TOKEN_ENV, SERVE_HOST_ENV, serve_runtime_env

    monkeypatch.delenv(RELOAD_TOKEN_ENV, raising=False)
    env = serve_runtime_env(host="0.0.0.0")["env_vars"]
    assert env[SERVE_HOST_ENV] == "0.0.0.0" and RELOAD_TOKEN_ENV not in env
    monkeypatch.setenv(RELOAD_TOKEN_ENV, "s3cret")
    monkeypatch.setenv(SERVE_HOST_ENV, "127.0.0.1")  # the host passed in wins over a stale one
    env = serve_runtime_env(9000, host="::")["env_vars"]
    assert env[SERVE_HOST_ENV] == "::" and env[RELOAD_TOKEN_ENV] == "s3cret"
