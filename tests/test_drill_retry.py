"""The retry policy (shared.retry): idempotent calls only, bounded attempts, backoff."""

import asyncio
import random

import pytest

from shared.retry import (
    NO_RETRY,
    RetryPolicy,
    call_with_retry,
    post_with_retry,
    replica_lost,
    retry_sync,
)


class ActorDiedError(Exception):  # named like Ray's: replica_lost goes by the class name
    pass


class RayTaskError(Exception):
    def __init__(self, cause):
        super().__init__("task failed")
        self.cause = cause


def test_only_idempotent_requests_are_retried():
    p = RetryPolicy(idempotent_routes=frozenset({"/suggest"}))
    assert p.idempotent("GET") and p.idempotent("delete")
    assert p.idempotent("POST", "/suggest")
    assert not p.idempotent("POST", "/reload") and not p.idempotent("POST")


def test_backoff_grows_is_capped_and_jittered():
    p = RetryPolicy(attempts=6, base_delay_s=0.1, max_delay_s=0.5, jitter=0.5)
    rng = random.Random(0)
    d = [p.delay(k, rng) for k in range(1, 6)]
    for k, x in enumerate(d, 1):
        base = min(0.5, 0.1 * 2 ** (k - 1))
        assert base * 0.5 <= x <= base
    assert RetryPolicy(jitter=0).delay(3) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_replica_lost_sees_through_a_task_error_but_not_a_model_error():
    assert replica_lost(ActorDiedError("replica died"))
    assert replica_lost(RayTaskError(ActorDiedError("x")))
    assert not replica_lost(ValueError("the model raised"))
    assert not replica_lost(RayTaskError(ValueError("x")))


def test_call_with_retry_retries_a_lost_replica_a_bounded_number_of_times():
    calls, sleeps = [], []

    async def sleep(s):
        sleeps.append(s)

    async def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise ActorDiedError("killed")
        return "ok"

    assert asyncio.run(call_with_retry(flaky, RetryPolicy(attempts=3), sleep=sleep)) == "ok"
    assert len(calls) == 2 and len(sleeps) == 1

    async def dead():
        calls.append(1)
        raise ActorDiedError("still dead")

    calls.clear()
    with pytest.raises(ActorDiedError):
        asyncio.run(call_with_retry(dead, RetryPolicy(attempts=3), sleep=sleep))
    assert len(calls) == 3  # bounded

    async def bug():
        calls.append(1)
        raise ValueError("a bug is not retried")

    calls.clear()
    with pytest.raises(ValueError):
        asyncio.run(call_with_retry(bug, RetryPolicy(attempts=3), sleep=sleep))
    assert len(calls) == 1


class _Resp:
    def __init__(self, code):
        self.status_code = code


class _Session:
    """Answers from a script: a status code, or an exception to raise."""

    def __init__(self, script):
        self.script, self.sent = list(script), 0

    def post(self, url, **kw):
        self.sent += 1
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return _Resp(item)


def test_post_with_retry_over_http(monkeypatch):
    import requests

    monkeypatch.setattr("time.sleep", lambda s: None)
    p = RetryPolicy(attempts=3, idempotent_routes=frozenset({"/suggest"}))
    s = _Session([requests.ConnectionError("reset"), 500, 200])
    assert post_with_retry(s, "http://127.0.0.1:1", "/suggest", b"{}", p) == (200, 3)
    s = _Session([422, 200])  # a 4xx is the client's fault: never retried
    assert post_with_retry(s, "http://127.0.0.1:1", "/suggest", b"{}", p) == (422, 1)
    s = _Session([500, 200])  # not idempotent: sent once
    assert post_with_retry(s, "http://127.0.0.1:1", "/reload", b"{}", p) == (500, 1)
    s = _Session([requests.Timeout("slow")])  # may still be running: not re-sent
    assert post_with_retry(s, "http://127.0.0.1:1", "/suggest", b"{}", p) == ("Timeout", 1)
    s = _Session([503, 503, 503, 200])  # bounded: 3 attempts, then the last answer
    assert post_with_retry(s, "http://127.0.0.1:1", "/suggest", b"{}", p) == (503, 3)


def test_retry_sync_without_retries():
    r, e, n = retry_sync(lambda: 1 / 0, NO_RETRY, retry_on=lambda r, e: True)
    assert r is None and isinstance(e, ZeroDivisionError) and n == 1
