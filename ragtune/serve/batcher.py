"""Server-side batching: texts of requests that arrive together share one forward pass.

A CPU runs one forward pass of 32 texts far faster than 32 passes of one text (one matrix multiply
instead of 32 thin ones). :class:`MicroBatcher` queues the texts of every request; one worker task
takes the first waiting request, then keeps taking requests until the batch holds ``max_batch_size``
texts or the first request has waited ``max_wait_s``, runs the model once on all of them in its
model thread, and hands each request its own slice of the results. A request is never split: one
with more texts than ``max_batch_size`` runs alone (the model function batches inside).

Under load the wait hardly matters: while the model is busy, requests pile up in the queue and the
next batch takes them all at once.

If ``fn`` raises on a batch of several requests, each request is run again alone, so only the
request(s) that make it fail get the error and the others get their results. ``max_wait_s`` only delays a request that arrives at an idle
server, by at most that long, in the hope that company arrives.

All model work (batched or not, see :meth:`MicroBatcher.call`) runs in one thread, so the model and
its tokenizer, whose settings ``encode`` changes per call, are never used by two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    """Queue items of many requests; run ``fn`` on batches of them in one model thread.

    Args:
        fn: ``fn(items) -> results``, one result per item, in order (e.g. ``Predictor.predict``).
        max_batch_size: the most items one call of ``fn`` gets from several requests.
        max_wait_s: how long the first queued request waits for others (seconds).
        on_batch: called with the size of every batch run (the ``/metrics`` histogram).
    """

    def __init__(self, fn: Callable[[list], list], max_batch_size: int, max_wait_s: float,
                 on_batch: Callable[[int], None] | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1 (got {max_batch_size})")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be 0 or more (got {max_wait_s})")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragtune-model")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker task on the running event loop (the app's lifespan calls it)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._worker(), name="ragtune-batcher")

    async def stop(self) -> None:
        """Cancel the worker; requests still queued get a RuntimeError."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))

    # -- use ---------------------------------------------------------------------------------------
    async def submit(self, items: Sequence) -> list:
        """The results of ``fn`` for ``items``, computed in a batch with other requests' items."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called (the app's lifespan starts it)")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((list(items), future))
        return await future

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the model thread, unbatched (explanations, retrieval)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # -- the worker --------------------------------------------------------------------------------
    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        assert queue is not None  # start() set it
        while True:
            batch = [await queue.get()]
            size = len(batch[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch_size:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                if size + len(nxt[0]) > self.max_batch_size:  # keep it for the next batch
                    await self._run(loop, batch)
                    batch, size = [nxt], len(nxt[0])
                    deadline = loop.time() + self.max_wait_s
                    continue
                batch.append(nxt)
                size += len(nxt[0])
            await self._run(loop, batch)

    async def _run(self, loop, batch: list) -> None:
        batch = [(items, future) for items, future in batch if not future.cancelled()]  # clients gone
        if not batch:
            return
        flat = [item for items, _ in batch for item in items]
        if self.on_batch is not None:
            self.on_batch(len(flat))
        try:
            results = await loop.run_in_executor(self.executor, self.fn, flat)
        except Exception as exc:
            if len(batch) == 1:  # the request alone failed: it gets the error (the app maps it to a status)
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            for request in batch:  # one request's failure never reaches another: retry each alone
                await self._run(loop, [request])
            return
        start = 0
        for items, future in batch:
            if not future.done():
                future.set_result(results[start : start + len(items)])
            start += len(items)
