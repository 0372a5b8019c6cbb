"""shared.floor.load_test_with_floor: a case's app and the no-op floor alternated in one run, on
the session's Serve (proxy path; the cases' load tests run it on their own Ray with direct
ingress)."""

import pytest
import requests

pytestmark = pytest.mark.serve

SLEEP_S = 0.05  # the test app's "model" on /slow: a floor of latency the no-op app cannot have


def _two_route_app():
    import asyncio

    from ray import serve

    from shared.serving import make_app

    app = make_app("floor-test")

    @serve.deployment(max_ongoing_requests=16)
    @serve.ingress(app)
    class TwoRoutes:
        @app.post("/slow")
        async def slow(self, body: dict) -> dict:
            await asyncio.sleep(SLEEP_S)
            return {"echo": body, "words": ["a"] * 50}

        @app.post("/fast")
        async def fast(self, body: dict) -> dict:
            return {"n": len(body)}

    return TwoRoutes.bind()


def test_app_and_floor_alternate_with_same_bodies_and_answer_sizes(serve_port):
    from ray import serve

    from shared.floor import (
        FLOOR_APP,
        build_floor_app,
        describe_against_floor,
        load_test_with_floor,
    )

    routes = {"/slow": [{"x": i} for i in range(4)], "/fast": [{"y": 1}, {"y": 2}]}
    out = load_test_with_floor(
        _two_route_app(),
        routes,
        name="floortest",
        in_flight=2,
        requests=12,
        seconds=20,
        repeats=2,
        warmup=4,
        route_prefix="/floortest",
        proxy_port=serve_port,
    )
    assert out["path"] == "proxy" and out["repeats"] == 2
    assert set(out["rows"]) == {"/slow", "/slow floor", "/fast", "/fast floor"}
    for route in routes:
        runs = out["runs"][route]
        assert len(runs["app"]) == len(runs["floor"]) == 2
        assert all(r["n"] == 12 and r["errors"] == 0 for r in runs["app"] + runs["floor"])
        row = out["rows"][route]
        assert row["requests"] == 24 and row["errors"] == 0
        pairs = zip(runs["app"], runs["floor"], strict=True)
        ratios = [a["p50_ms"] / f["p50_ms"] for a, f in pairs]
        assert min(ratios) - 1e-9 <= row["p50_x_floor"] <= max(ratios) + 1e-9
    slow = out["rows"]["/slow"]
    assert slow["p50_ms"] >= 1e3 * SLEEP_S  # the app's own wait is in its latency, not the floor's
    assert describe_against_floor("/fast", out).startswith("/fast: 24 requests at 2 in flight")
    # Both apps are gone afterwards; the session's Serve keeps running.
    apps = serve.status().applications
    assert "floortest" not in apps and FLOOR_APP not in apps

    # The multi-route floor answers each route's body, 404 with a message elsewhere, 4xx on bad
    # JSON like a case's ingress.
    answers = {"/slow": {"words": ["a"] * 50}, "/fast": {"n": 1}}
    serve.run(build_floor_app(answers=answers), name="floor2", route_prefix="/floor2")
    try:
        url = f"http://127.0.0.1:{serve_port}/floor2"
        assert requests.post(f"{url}/slow", json={"x": 1}, timeout=30).json() == answers["/slow"]
        assert requests.post(f"{url}/fast", json={}, timeout=30).json() == answers["/fast"]
        r = requests.post(f"{url}/other", json={}, timeout=30)
        assert r.status_code == 404 and r.json()["error"]
        r = requests.post(
            f"{url}/fast", data=b"{oops", headers={"content-type": "application/json"}, timeout=30
        )
        assert r.status_code == 400
        assert requests.get(f"{url}/health", timeout=30).json()["app"] == "floor"
    finally:
        serve.delete("floor2")
