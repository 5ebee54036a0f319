"""Storage round-trip counters (dicomserver.opcount)."""

from __future__ import annotations

import asyncio
import contextvars
import threading

from dicomserver import opcount


def test_header_value_round_trips() -> None:
    ops = opcount.Operations(blob=2, index=3, queue=1, request_charge=12.5)
    assert ops.header_value() == "blob=2;index=3;queue=1;ru=12.50"
    again = opcount.Operations.parse(ops.header_value())
    assert (again.blob, again.index, again.queue, again.request_charge) == (2, 3, 1, 12.5)


def test_records_go_to_the_innermost_open_counter_only() -> None:
    opcount.record("blob")  # no counter open: ignored
    with opcount.counting() as outer:
        opcount.record("index", 2.0)
        with opcount.counting() as inner:
            opcount.record("queue")
        opcount.record("blob")
    assert (outer.blob, outer.index, outer.queue, outer.request_charge) == (1, 1, 0, 2.0)
    assert (inner.blob, inner.index, inner.queue) == (0, 0, 1)


def test_worker_threads_started_with_to_thread_are_counted() -> None:
    async def request() -> opcount.Operations:
        ops = opcount.start()
        await asyncio.gather(*(asyncio.to_thread(opcount.record, "index") for _ in range(50)))
        return ops

    assert asyncio.run(request()).index == 50


def test_concurrent_records_are_not_lost() -> None:
    with opcount.counting() as ops:
        context = contextvars.copy_context()

        def work() -> None:
            for _ in range(1000):
                opcount.record("blob")

        threads = [threading.Thread(target=context.copy().run, args=(work,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert ops.blob == 8000
