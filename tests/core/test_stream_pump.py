"""An answer streamed to a socket (#19): its synchronous iterator runs start to end in one thread of the stream
pool, never on the event loop or asyncio's default pool; its items reach the loop in order, in batches; an
error is raised on the loop after the items before it; a listener that stops listening gets the iterator
closed in its own thread; tokens that arrive together leave as one delta."""

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import pytest

from saas.core import threads
from saas.core.consumers import merge_deltas


def _run(coroutine: Any) -> Any:
    """The coroutine on a loop of its own in a thread of its own (the browser tests' loop may run in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class Recorder:
    def __init__(self, items: list[Any], fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.items, self.fail_at, self.gate = items, fail_at, gate
        self.threads: set[str] = set()
        self.closed_in: str | None = None
        self.produced = 0
        self.finished = False  # ran to its natural end

    def __iter__(self) -> Iterator[Any]:
        try:
            for index, item in enumerate(self.items):
                self.threads.add(threading.current_thread().name)
                if self.gate is not None and index == 1:
                    self.gate.wait(timeout=30)  # the listener stops before this item is produced
                if index == self.fail_at:
                    raise RuntimeError("the model went away")
                self.produced += 1
                yield item
            self.finished = True
        except GeneratorExit:
            self.closed_in = threading.current_thread().name
            raise


def test_items_arrive_in_order_from_one_stream_thread():
    recorder = Recorder(list(range(50)))
    received: list[int] = []
    batches: list[int] = []

    async def main() -> str:
        async def deliver(batch: list[int]) -> None:
            batches.append(len(batch))
            received.extend(batch)

        await threads.stream_to(iter(recorder), deliver, enter=nullcontext)
        return threading.current_thread().name

    loop_thread = _run(main())
    assert received == list(range(50))
    assert sum(batches) == 50 and len(batches) <= 50
    assert len(recorder.threads) == 1  # the whole iterator in one thread, start to end
    (name,) = recorder.threads
    assert name.startswith("crewdesk-stream") and name != loop_thread


def test_an_error_is_raised_on_the_loop_after_the_items_before_it():
    recorder = Recorder(["a", "b", "c", "d"], fail_at=2)
    received: list[str] = []

    async def deliver(batch: list[str]) -> None:
        received.extend(batch)

    with pytest.raises(RuntimeError, match="the model went away"):
        _run(threads.stream_to(iter(recorder), deliver, enter=nullcontext))
    assert received == ["a", "b"]


def test_a_listener_that_stops_gets_the_iterator_closed_in_its_thread():
    gate = threading.Event()
    recorder = Recorder(["a", "b", "c", "d"], gate=gate)
    generator = iter(recorder)

    async def main() -> None:
        async def deliver(batch: list[str]) -> None:
            raise ConnectionError("the client went away")

        with pytest.raises(ConnectionError):
            await threads.stream_to(generator, deliver, enter=nullcontext)
        gate.set()  # the producer goes on only now that nobody listens

    _run(main())
    for _ in range(600):  # the producer closes the iterator after its next item
        if recorder.closed_in is not None:
            break
        threading.Event().wait(0.05)
    assert recorder.closed_in is not None and recorder.closed_in.startswith("crewdesk-stream")
    # It stopped right after the item the listener refused, or after the next one (whichever it was producing
    # when the listener stopped): the rest of the answer was never asked for.
    assert recorder.produced in (1, 2)


def test_the_context_is_entered_in_the_stream_thread():
    entered: list[str] = []

    class Scope:
        def __enter__(self) -> None:
            entered.append(threading.current_thread().name)

        def __exit__(self, *exc: Any) -> None:
            entered.append("exit")

    async def deliver(batch: list[int]) -> None:
        pass

    _run(threads.stream_to(iter([1, 2]), deliver, enter=Scope))
    assert entered[0].startswith("crewdesk-stream") and entered[1:] == ["exit"]


def test_deltas_that_arrive_together_leave_as_one():
    events = [
        {"type": "started", "message": "m"},
        {"type": "delta", "message": "m", "text": "The "},
        {"type": "delta", "message": "m", "text": "quick "},
        {"type": "delta", "message": "n", "text": "other "},  # another message: not merged
        {"type": "delta", "message": "n", "text": "fox"},
        {"type": "done", "message": "n"},
        {"type": "delta", "text": "a"},
        {"type": "delta", "text": "b", "extra": 1},  # other fields: not merged
    ]
    assert merge_deltas(events) == [
        {"type": "started", "message": "m"},
        {"type": "delta", "message": "m", "text": "The quick "},
        {"type": "delta", "message": "n", "text": "other fox"},
        {"type": "done", "message": "n"},
        {"type": "delta", "text": "a"},
        {"type": "delta", "text": "b", "extra": 1},
    ]


def test_it_returns_after_the_last_event_while_the_iterator_finishes_in_its_thread():
    recorder = Recorder(["a", "done", "after"])
    received: list[str] = []

    async def deliver(batch: list[str]) -> None:
        received.extend(batch)

    async def main() -> list[str]:
        await threads.stream_to(iter(recorder), deliver, enter=nullcontext, last=lambda item: item == "done")
        returned_with = list(received)
        # The loop lives on, as a server's does (a closed loop means nobody listens: the producer stops).
        for _ in range(600):
            if recorder.finished or recorder.closed_in is not None:
                break
            await asyncio.sleep(0.05)
        return returned_with

    assert _run(main())[:2] == ["a", "done"]  # "after" may share the batch "done" came in
    # what follows the last event still ran, in the stream thread, to its natural end
    assert recorder.produced == 3 and recorder.finished and recorder.closed_in is None
