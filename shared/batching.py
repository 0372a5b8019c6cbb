"""Batching that closes a batch when the model is free, not when a timer fires.

    class KeyboardServer:
        @batch_when_free(max_batch_size=32)
        def predict_batch(self, bodies: list[dict]) -> list[dict]:   # plain def: runs in a thread
            return self.model.predict(bodies)

        @app.post("/predict")
        async def predict(self, req: Request) -> dict:
            return await self.predict_batch(req.model_dump())         # one item in, one answer out

Why not `@serve.batch` alone: its loop cuts a batch `batch_wait_timeout_s` after the batch's
first request, whether or not the model is still busy with the previous batch, and a model
called from an `async def` runs on the replica's event loop (Serve's fast path,
`shared.serving.SERVE_ENV`), where it stops the loop from reading the next requests. Over HTTP
each request costs the event loop a few hundred microseconds of parsing before it can join a
batch, so within a 2 ms window only a few arrive: `casebook bench serving` measured a mean batch
of 2.6-3.7 over HTTP at 32 in flight against 7-8 through a deployment handle (issue 18).

Here the model runs in a worker thread (PyTorch and onnxruntime release the GIL while they
compute), so the event loop keeps accepting and parsing requests meanwhile; when the model
returns, everything that queued up forms the next batch at once (up to `max_batch_size`). Under
load a batch is what arrived during one model call; with one request in flight a request waits
at most `wait_s` (default 0) for company, so light load pays no batching delay.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("casebook")


class _Queue:
    """One method's pending requests on one instance, and whether a drain task runs."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, asyncio.Future]] = []
        self.running = False
        self.batches = 0
        self.requests = 0


def batch_when_free(
    max_batch_size: int = 32,
    wait_s: float = 0.0,
    in_thread: bool = True,
    after: Callable[[Any, list, list], Any] | None = None,
) -> Callable[[Callable], Callable]:
    """Decorate `def fn(self, items: list) -> list` (one answer per item, in order) into
    `async def fn(self, item) -> answer`.

    Requests that arrive while a batch runs wait in a queue; when it returns, the next batch is
    up to `max_batch_size` of them, oldest first. The first request after an idle spell waits
    `wait_s` seconds for company. With `in_thread` (default) `fn` runs in the event loop's
    default thread pool, one batch at a time per instance; set it False for a model call too
    short to be worth a thread hop. An exception in `fn` is raised to every request of that
    batch. `after(self, items, answers)`, if given, runs on the event loop once a batch's
    answers are handed out (`loop.call_soon`, so the requests resume first): the place for
    work that must stay on the loop but must not delay the answers, such as feeding a live
    monitor that is not thread-safe (`shared.monitor`); an exception there is logged, never
    raised to a request. `stats(self, fn_name)` gives {"batches", "requests", "mean_batch"}
    since the last call (and resets them).
    """
    if max_batch_size < 1 or wait_s < 0:
        raise ValueError("max_batch_size must be >= 1 and wait_s >= 0")

    def decorate(fn: Callable) -> Callable:
        attr = f"_batch_when_free_{fn.__name__}"

        def queue_of(self: Any) -> _Queue:
            q = self.__dict__.get(attr)
            if q is None:
                q = self.__dict__[attr] = _Queue()
            return q

        async def drain(self: Any, q: _Queue) -> None:
            loop = asyncio.get_running_loop()
            try:
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                while q.items:
                    batch, q.items = q.items[:max_batch_size], q.items[max_batch_size:]
                    inputs = [item for item, _ in batch]
                    q.batches += 1
                    q.requests += len(batch)
                    try:
                        if in_thread:
                            call = functools.partial(fn, self, inputs)
                            answers = await loop.run_in_executor(None, call)
                        else:
                            answers = fn(self, inputs)
                        if len(answers) != len(batch):
                            raise RuntimeError(
                                f"{fn.__name__} returned {len(answers)} answers for "
                                f"{len(batch)} requests"
                            )
                    except Exception as e:  # every request of the batch gets the error
                        for _, fut in batch:
                            if not fut.done():
                                fut.set_exception(e)
                        continue
                    for (_, fut), answer in zip(batch, answers, strict=True):
                        if not fut.done():  # a cancelled request (client gone) is skipped
                            fut.set_result(answer)
                    if after is not None:
                        loop.call_soon(_run_after, after, self, inputs, answers)
            finally:
                q.running = False

        @functools.wraps(fn)
        async def submit(self: Any, item: Any) -> Any:
            q = queue_of(self)
            fut = asyncio.get_running_loop().create_future()
            q.items.append((item, fut))
            if not q.running:
                q.running = True
                task = asyncio.create_task(drain(self, q))
                q.task = task  # type: ignore[attr-defined]  # keep a reference while it runs
            return await fut

        submit.batch_queue_attr = attr  # type: ignore[attr-defined]
        return submit

    return decorate


def _run_after(after: Callable, instance: Any, items: list, answers: list) -> None:
    try:
        after(instance, items, answers)
    except Exception:  # noqa: BLE001 - the answers are out; this must not break the loop
        logger.exception("batch_when_free: the after-batch hook failed")


def stats(instance: Any, fn_name: str) -> dict[str, float]:
    """{"batches", "requests", "mean_batch"} of `instance`'s `fn_name` since the last call; the
    counters restart at zero."""
    q = instance.__dict__.get(f"_batch_when_free_{fn_name}")
    if q is None:
        return {"batches": 0, "requests": 0, "mean_batch": 0.0}
    out = {
        "batches": q.batches,
        "requests": q.requests,
        "mean_batch": q.requests / max(q.batches, 1),
    }
    q.batches = q.requests = 0
    return out
