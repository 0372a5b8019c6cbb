"""shared.batching.batch_when_free: batches close when the model is free (no Ray needed)."""

import asyncio
import threading
import time

import pytest

from shared.batching import batch_when_free, stats


class _Model:
    def __init__(self, delay_s: float = 0.0, fail_on: int | None = None):
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.sizes: list[int] = []
        self.threads: set[str] = set()

    @batch_when_free(max_batch_size=4)
    def double(self, xs: list[int]) -> list[int]:
        self.sizes.append(len(xs))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)  # the model's work, off the event loop
        if self.fail_on is not None and self.fail_on in xs:
            raise ValueError(f"bad item {self.fail_on}")
        return [2 * x for x in xs]


def test_answers_match_their_requests_and_batches_are_capped():
    m = _Model(delay_s=0.02)

    async def go():
        return await asyncio.gather(*(m.double(i) for i in range(10)))

    assert asyncio.run(go()) == [2 * i for i in range(10)]
    # All ten queued before the first batch started: batches of at most 4, oldest first.
    assert m.sizes == [4, 4, 2]
    assert "MainThread" not in m.threads  # the model ran in a worker thread
    assert stats(m, "double") == {
        "batches": len(m.sizes),
        "requests": 10,
        "mean_batch": 10 / len(m.sizes),
    }
    assert stats(m, "double")["batches"] == 0  # reset


def test_requests_arriving_during_a_batch_form_the_next_one():
    m = _Model(delay_s=0.05)

    async def go():
        first = asyncio.create_task(m.double(0))
        await asyncio.sleep(0.01)  # the first batch is running now
        rest = [asyncio.create_task(m.double(i)) for i in range(1, 4)]
        return await asyncio.gather(first, *rest)

    assert asyncio.run(go()) == [0, 2, 4, 6]
    assert m.sizes == [1, 3]


def test_an_error_reaches_every_request_of_its_batch_only():
    m = _Model(delay_s=0.02, fail_on=3)

    async def go():
        first = asyncio.create_task(m.double(0))
        await asyncio.sleep(0.005)
        rest = [asyncio.create_task(m.double(i)) for i in (1, 3, 5)]
        later = asyncio.create_task(m.double(7))
        return await asyncio.gather(first, *rest, later, return_exceptions=True)

    out = asyncio.run(go())
    assert out[0] == 0
    assert all(isinstance(e, ValueError) for e in out[1:4])
    # 7 joined the failed batch too (it queued while 0 ran); a later call still works.
    m.fail_on = None
    assert asyncio.run(m.double(8)) == 16


def test_wrong_answer_count_is_an_error():
    class Bad:
        @batch_when_free(max_batch_size=2, in_thread=False)
        def f(self, xs):
            return xs[:1]  # one answer whatever the batch

    async def one():
        return await Bad().f(1)

    async def two():
        b = Bad()
        return await asyncio.gather(b.f(1), b.f(2), return_exceptions=True)

    assert asyncio.run(one()) == 1
    assert all(isinstance(e, RuntimeError) for e in asyncio.run(two()))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        batch_when_free(max_batch_size=0)
    with pytest.raises(ValueError):
        batch_when_free(wait_s=-1)


def test_after_hook_runs_on_the_event_loop_after_the_answers():
    seen: list[tuple] = []

    class Observed:
        @batch_when_free(
            max_batch_size=8,
            after=lambda self, xs, ys: seen.append(
                (threading.current_thread().name, list(xs), list(ys), self.answered)
            ),
        )
        def add_one(self, xs: list[int]) -> list[int]:
            return [x + 1 for x in xs]

    m = Observed()
    m.answered = 0

    async def ask(x):
        y = await m.add_one(x)
        m.answered += 1
        return y

    async def go():
        out = await asyncio.gather(*(ask(i) for i in range(3)))
        await asyncio.sleep(0)  # let the hook scheduled after the answers run
        return out

    assert asyncio.run(go()) == [1, 2, 3]
    # One batch; the hook saw its items and answers on the loop's thread, after all 3 resumed.
    assert seen == [("MainThread", [0, 1, 2], [1, 2, 3], 3)]


def test_a_failing_after_hook_never_reaches_a_request():
    def boom(self, xs, ys):
        raise RuntimeError("hook failed")

    class Hooked:
        @batch_when_free(max_batch_size=4, after=boom)
        def same(self, xs: list[int]) -> list[int]:
            return xs

    m = Hooked()

    async def go():
        first = await asyncio.gather(*(m.same(i) for i in range(3)))
        await asyncio.sleep(0.01)
        return first, await m.same(7)

    assert asyncio.run(go()) == ([0, 1, 2], 7)
