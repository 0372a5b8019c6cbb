"""Video recommendation served through a real local Ray Serve app (127.0.0.1)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def artifact(video_tiny):
    return video_tiny  # conftest: the case's own run on the tiny preset


@pytest.fixture(scope="module")
def served(artifact, serve_port):
    # The session's Ray + Serve (tests/conftest.py); both apps are deleted after this module.
    # build_app's default topology: the whole funnel in one replica.
    from ray import serve

    from cases.video_recommendation.serve import build_app

    serve.run(build_app(str(artifact)), name="ok", route_prefix="/ok")
    serve.run(build_app(str(artifact), fail_ranker=True), name="broken", route_prefix="/broken")
    return f"http://127.0.0.1:{serve_port}"


def test_known_user_gets_k_ranked_items_with_sources(served):
    r = requests.post(f"{served}/ok/recommend", json={"user_id": 1, "k": 5}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and not body["cold_start"] and not body["fallback"]
    assert all({"item", "score", "source", "pre_rank"} <= set(x) for x in body["items"])
    assert len({x["item"] for x in body["items"]}) == 5
    assert len({x["pre_rank"] for x in body["items"]}) == 5  # distinct places in one list


def test_pre_rank_is_the_place_in_the_ranked_list_before_the_rerank(served, artifact):
    from cases.video_recommendation.predictor import VideoRecPredictor, rerank_settings

    p = VideoRecPredictor.load(artifact)
    hist = p.user_histories["1"]
    [c] = p.retrieve([hist])
    [s] = p.rank([hist], [c])
    blocked = [int(c.items[int(np.argmax(s))])]  # the ranker's favourite, blocked
    # The list the re-rank starts from: by ranker score, ties by candidate position, without
    # the watched and blocked videos.
    order = sorted(range(len(s)), key=lambda j: (-float(s[j]), j))
    ranked = [int(c.items[j]) for j in order if int(c.items[j]) not in {*hist, *blocked}]
    body = {"user_id": 1, "k": 10, "blocked": blocked}
    r = requests.post(f"{served}/ok/recommend", json=body, timeout=30)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [x["pre_rank"] for x in items] == [ranked.index(x["item"]) for x in items]
    # Weight 0 (what the tiny run chose on validation) only filters: every item keeps its
    # place. Weight 0.5: MMR moves some.
    for w in (0.0, 0.5):
        p.rerank_kw = rerank_settings(p.cfg["hparams"], w)
        got = p.recommend(1, None, 10, blocked)["items"]
        assert [x["pre_rank"] for x in got] == [ranked.index(x["item"]) for x in got]
        assert ([x["pre_rank"] for x in got] != list(range(10))) == (w > 0), w


def test_history_in_the_request_and_watched_removed(served):
    r = requests.post(f"{served}/ok/recommend", json={"history": [3, 4, 5], "k": 10}, timeout=30)
    assert r.status_code == 200, r.text
    items = [x["item"] for x in r.json()["items"]]
    assert not {3, 4, 5} & set(items)


def test_unknown_user_gets_the_cold_start_list(served):
    r = requests.post(f"{served}/ok/recommend", json={"user_id": "nobody", "k": 4}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cold_start"] and len(body["items"]) == 4
    assert {x["source"] for x in body["items"]} == {"cold_start"}


@pytest.mark.parametrize(
    "payload, status",
    [
        ({"user_id": 1, "k": 0}, 422),
        ({"user_id": 1, "k": "ten"}, 422),
        ({"history": "not a list"}, 422),
        ({"history": [10**9]}, 400),
        # Past int64: refused by the schema (these overflowed in the predictor and answered 500).
        ({"user_id": 1, "blocked": [2**64]}, 422),
        ({"user_id": 1, "blocked": [-(2**63) - 1]}, 422),
        ({"user_id": 2**64}, 422),
        ({"user_id": 1, "blocke": [5]}, 422),  # a misspelt field is refused, not ignored
    ],
)
def test_bad_input_is_a_4xx_with_a_message(served, payload, status):
    r = requests.post(f"{served}/ok/recommend", json=payload, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_not_json_is_400(served):
    r = requests.post(
        f"{served}/ok/recommend",
        data=b"{oops",
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400


def test_ranker_failure_serves_the_fallback_list(served):
    r = requests.post(f"{served}/broken/recommend", json={"user_id": 1, "k": 5}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] and len(body["items"]) == 5
    s = requests.get(f"{served}/broken/status", timeout=30).json()
    assert s["ranker_failures"] >= 1


def test_concurrent_requests_are_batched_and_match_the_predictor(served, artifact):
    from cases.video_recommendation.predictor import VideoRecPredictor

    p = VideoRecPredictor.load(artifact)
    users = [int(u) for u in list(p.user_histories)[:16]]
    before = requests.get(f"{served}/ok/status", timeout=30).json()

    def call(u):
        return requests.post(f"{served}/ok/recommend", json={"user_id": u, "k": 5}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, users))
    after = requests.get(f"{served}/ok/status", timeout=30).json()
    for u, r in zip(users, answers, strict=True):
        assert r.status_code == 200, r.text
        want = [(x["item"], x["pre_rank"]) for x in p.recommend(u, None, 5)["items"]]
        assert [(x["item"], x["pre_rank"]) for x in r.json()["items"]] == want
    assert after["batched_requests"] - before["batched_requests"] == len(users)
    assert after["batches"] - before["batches"] < len(users)  # some requests shared a batch


@pytest.fixture(scope="module")
def registry(artifact, tmp_path_factory):
    """A registry whose champion is the run's artifact."""
    from shared.artifacts import Registry

    reg = Registry(tmp_path_factory.mktemp("vr-registry"))
    reg.promote(reg.register(artifact).name)
    return reg


def test_standard_routes_name_the_artifact_and_a_bad_reload_keeps_the_old_model(
    registry, serve_port
):
    from ray import serve

    from cases.video_recommendation.serve import build_app
    from shared.artifacts import artifact_hash

    serve.run(build_app(str(registry.root)), name="reg", route_prefix="/reg")
    url = f"http://127.0.0.1:{serve_port}/reg"
    try:
        assert requests.get(f"{url}/health", timeout=30).status_code == 200
        v = requests.get(f"{url}/version", timeout=30).json()
        champion = registry.resolve("champion")
        assert v["serving"] == champion.name and v["artifact_sha256"] == artifact_hash(champion)
        assert requests.post(f"{url}/reload", timeout=60).status_code == 200
        # A new champion corrupted after promotion: /reload answers 409, the old one serves on.
        name = registry.register(champion).name
        registry.promote(name)
        with open(registry.versions_dir / name / "ranker.onnx", "ab") as f:
            f.write(b"x")
        r = requests.post(f"{url}/reload", timeout=60)
        assert r.status_code == 409 and r.json()["error"]
        s = requests.get(f"{url}/status", timeout=30).json()
        assert s["serving"] == champion.name and "batches" in s
        r = requests.post(f"{url}/recommend", json={"user_id": 1, "k": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["model_version"] == champion.name
    finally:
        serve.delete("reg")


def test_casebook_serve_answers_on_its_port_through_direct_ingress(artifact):
    # `casebook serve` in its own process (its own Ray): the ingress replica itself listens on
    # --port (Serve's direct ingress); a good and a bad request, then Ctrl-C stops it cleanly.
    import os
    import signal
    import subprocess
    import sys
    import time

    from shared.serving import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "casebook", "serve", "video-recommendation"]
    cmd += ["--artifact", str(artifact), "--port", str(port)]
    env = {**os.environ, "RAY_ADDRESS": ""}  # a Ray of its own, never the tests' one
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        deadline, lines = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("serving on"):
                break
        assert lines and lines[-1].startswith(f"serving on http://127.0.0.1:{port}/"), lines[-20:]
        url = f"http://127.0.0.1:{port}/recommend"
        r = requests.post(url, json={"user_id": 1, "k": 3}, timeout=30)
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 3
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=30)  # the case's page
        assert page.status_code == 200 and "/recommend" in page.text
        r = requests.post(url, json={"user_id": 1, "k": 0}, timeout=30)
        assert r.status_code == 422 and "k" in r.json()["error"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stages_topology_answers_as_the_one_replica_default_does(served, artifact):
    from ray import serve

    from cases.video_recommendation.serve import build_app

    serve.run(build_app(str(artifact), topology="stages"), name="stages", route_prefix="/stages")
    serve.run(
        build_app(str(artifact), fail_ranker=True, topology="stages"),
        name="stages-broken",
        route_prefix="/stages-broken",
    )
    assert set(serve.status().applications["stages"].deployments) == {
        "VideoRecRecommender",
        "VideoRecRetriever",
        "VideoRecRankerDeployment",
    }
    assert set(serve.status().applications["ok"].deployments) == {"VideoRecFunnel"}
    for body in ({"user_id": 1, "k": 5}, {"history": [3, 7, 11], "k": 4, "blocked": [5]}):
        one = requests.post(f"{served}/ok/recommend", json=body, timeout=30)
        three = requests.post(f"{served}/stages/recommend", json=body, timeout=30)
        assert three.status_code == 200, three.text
        # Scores may differ in the last bits with the batch's make-up; the picks may not.
        a, b = one.json(), three.json()
        assert [(x["item"], x["source"]) for x in a["items"]] == [
            (x["item"], x["source"]) for x in b["items"]
        ]
        assert (a["cold_start"], a["fallback"]) == (b["cold_start"], b["fallback"])
    bad = requests.post(f"{served}/stages/recommend", json={"user_id": 1, "k": 0}, timeout=30)
    assert bad.status_code == 422 and "error" in bad.json()
    r = requests.post(f"{served}/stages-broken/recommend", json={"user_id": 1, "k": 5}, timeout=30)
    assert r.status_code == 200 and r.json()["fallback"] and len(r.json()["items"]) == 5
    s = requests.get(f"{served}/stages-broken/status", timeout=30).json()
    assert s["ranker_failures"] >= 1 and s["batched_requests"] >= 1
