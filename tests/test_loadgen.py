"""The closed-loop load generator against a tiny local HTTP server."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import CasebookError
from shared.loadgen import check_loopback, closed_loop


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real server

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/slow":
            time.sleep(0.05)
        if body.get("x", 0) < 0:
            self._reply(422, {"error": "x must be >= 0"})
        else:
            self._reply(200, {"y": body["x"] * 2})

    def do_GET(self):  # noqa: N802
        self._reply(200, {"status": "ok"})

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_bounded_by_count(server):
    r = closed_loop(f"{server}/predict", [{"x": 1}, {"x": 2}], 4, 60, 20)
    assert r.n == 60 and r.errors == 0 and r.status_counts == {"200": 60}
    assert 0 < r.p50_ms <= r.p95_ms <= r.p99_ms and r.rps > 0


def test_counts_errors_by_status(server):
    r = closed_loop(f"{server}/predict", [{"x": 1}, {"x": -1}], 2, 20, 20)
    assert r.status_counts == {"200": 10, "422": 10} and r.errors == 10
    assert r.error_samples and "422" in r.error_samples[0]


def test_bounded_by_time(server):
    t0 = time.perf_counter()
    r = closed_loop(f"{server}/slow", [{"x": 1}], 2, 10_000, 0.3)
    assert time.perf_counter() - t0 < 2.0
    # Two in flight, 50 ms each, 0.3 s: about 12 requests, far below the count bound.
    assert 4 <= r.n <= 30


def test_get_when_no_payloads(server):
    r = closed_loop(f"{server}/health", [], 1, 3, 5)
    assert r.status_counts == {"200": 3}


def test_connection_refused_is_counted_not_raised():
    from shared.serving import free_port

    r = closed_loop(f"http://127.0.0.1:{free_port()}/x", [{"x": 1}], 1, 2, 5, timeout_s=2)
    assert r.n == 2 and r.errors == 2 and "ConnectionError" in r.status_counts


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/predict", "http://example.com/", "https://8.8.8.8", "ftp://127.0.0.1/"]
)
def test_non_loopback_is_refused(url):
    with pytest.raises(CasebookError):
        closed_loop(url, [{"x": 1}], 1, 1, 1)


@pytest.mark.parametrize("url", ["http://localhost:1/", "http://127.0.0.2:8/", "http://[::1]:80/"])
def test_loopback_forms_are_allowed(url):
    check_loopback(url)
