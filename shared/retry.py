"""A bounded retry policy for requests that a dead replica lost, and where it belongs.

What Ray Serve 2.60 does by itself: its router retries replica *selection* (a replica that died
before the request was sent to it is skipped, `router.py: _pick_and_reserve_replica`), but a
request already running on a replica that dies fails: the HTTP proxy answers 500 or drops the
connection, and a deployment handle's call raises `ActorDiedError` / `ActorUnavailableError`.
Serve does not re-send it (it cannot know the request is safe to run twice).

So the retry belongs with whoever knows the call is idempotent:
  - an app with downstream deployments: in the ingress, around the handle call
    (`await call_with_retry(lambda: self.ranker.remote(x), POLICY)`): a killed ranker replica
    then loses nothing, the router sends the retry to the surviving replica.
  - a single-deployment app (the ingress is the model): no code of the app runs after its own
    replica died, and Serve's proxy does not retry; the retry is the client's (or a load
    balancer's) job: `post_with_retry`, the same policy over HTTP.

Only idempotent calls are retried (GET/HEAD/OPTIONS/PUT/DELETE, and POST routes named as
idempotent: a prediction route computes an answer and changes nothing); attempts are bounded and
spaced by exponential backoff with jitter, so a real outage is not multiplied into a storm.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Answers a retry can fix: the replica died (500 from Serve's proxy when a replica died
# mid-request), or nothing could take the request (502/503/504). A 4xx never is retried.
RETRY_STATUS = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """attempts: tries in all (3: the first and two retries; a replica kill needs one).
    base_delay_s, max_delay_s: backoff base * 2**k, capped, each times a random factor in
    [1 - jitter, 1] (jitter spreads clients that failed together).
    idempotent_routes: POST paths that are safe to send twice (prediction routes)."""

    attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0
    jitter: float = 0.5
    idempotent_routes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least 1 attempt")
        if not 0 <= self.jitter <= 1 or self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry policy: jitter in [0, 1], delays >= 0")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        base = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        u = (rng or random).random()
        return base * (1 - self.jitter * u)

    def idempotent(self, method: str, route: str = "") -> bool:
        """True if a request may be sent twice: an idempotent HTTP method, or a POST route
        listed in `idempotent_routes`."""
        method = method.upper()
        return method in IDEMPOTENT_METHODS or (
            method == "POST" and route in self.idempotent_routes
        )

    def with_routes(self, routes: Iterable[str]) -> RetryPolicy:
        return RetryPolicy(
            self.attempts,
            self.base_delay_s,
            self.max_delay_s,
            self.jitter,
            frozenset(self.idempotent_routes) | frozenset(routes),
        )


NO_RETRY = RetryPolicy(attempts=1)


def replica_lost(exc: BaseException) -> bool:
    """True for the errors of a call whose replica died or could not be reached (Ray's
    ActorDiedError, ActorUnavailableError, RayActorError, Serve's replica-unavailable errors),
    also when wrapped in a RayTaskError; False for an error the model raised itself."""
    names = {"ActorDiedError", "ActorUnavailableError", "RayActorError", "ReplicaUnavailableError"}
    seen = 0
    while exc is not None and seen < 5:
        if any(c.__name__ in names for c in type(exc).__mro__):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return False


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy = RetryPolicy(),
    *,
    retryable: Callable[[BaseException], bool] = replica_lost,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """`await call()`, again (a new call: a new replica pick) while it fails with a retryable
    error, at most `policy.attempts` times in all. The caller vouches that it is idempotent
    (a handle call of a pure model). The last error propagates."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except Exception as e:
            if attempt == policy.attempts or not retryable(e):
                raise
            await sleep(policy.delay(attempt))
    raise AssertionError("unreachable")


def retry_sync(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    retry_on: Callable[[T | None, BaseException | None], bool],
    sleep: Callable[[float], Any] = time.sleep,
) -> tuple[T | None, BaseException | None, int]:
    """Run `call()` up to `policy.attempts` times while `retry_on(result, error)` says so.

    Returns (last result or None, last error or None, attempts made); never raises the call's
    error (the caller decides what a failure is)."""
    result: T | None = None
    error: BaseException | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            result, error = call(), None
        except Exception as e:
            result, error = None, e
        if attempt == policy.attempts or not retry_on(result, error):
            return result, error, attempt
        sleep(policy.delay(attempt))
    return result, error, policy.attempts


def post_with_retry(
    session: Any,
    url: str,
    route: str,
    data: bytes,
    policy: RetryPolicy,
    timeout_s: float = 30.0,
) -> tuple[int | str, int]:
    """POST over HTTP with the policy: retried on a transport error or a RETRY_STATUS answer,
    only when `route` is idempotent under the policy. Returns (status code or the error's
    class name, attempts made)."""
    import requests

    attempts_policy = policy if policy.idempotent("POST", route) else NO_RETRY

    def once() -> Any:
        return session.post(
            url + route,
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=timeout_s,
        )

    def retry_on(r: Any, e: BaseException | None) -> bool:
        if e is not None:
            return isinstance(e, requests.ConnectionError)  # not a timeout: it may be running
        return r.status_code in RETRY_STATUS

    r, e, n = retry_sync(once, attempts_policy, retry_on=retry_on)
    return (type(e).__name__ if e is not None else r.status_code), n
