"""Dynamic batching with Triton's semantics and a bounded queue, one per served model.

Requests wait in a queue; whenever the model is free, the batcher takes the oldest requests whose
rows fit `max_batch_size`, waiting at most `max_delay_ms` after the oldest one arrived for more to
come (0: never wait, batch only what is already queued, as Triton's default). One batch computes at
a time, in a worker thread, so the event loop keeps taking requests meanwhile. Past `max_queue`
waiting requests a new one is refused at once (`InferenceError` "unavailable": 503 / UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from hnd_lightning.runtime.common.protocol import InferenceError
from hnd_lightning.runtime.server.models import ServedModel


@dataclass
class BatchResult:
    """One request's outputs and how it was served."""

    outputs: dict[str, np.ndarray]
    queue_ms: float
    compute_ms: float
    batch_size: int


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    rows: int
    arrived: float
    future: asyncio.Future


class DynamicBatcher:
    """Queue + batch former + compute thread of one model. Create and use inside a running event loop."""

    def __init__(
        self, model: ServedModel, max_batch_size: int, max_delay_ms: float, max_queue: int, metrics: Any = None
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError(
                f"batching needs max_batch_size >= 1, max_queue >= 1 and max_delay_ms >= 0; got "
                f"{max_batch_size}, {max_queue}, {max_delay_ms}"
            )
        self.model, self.metrics = model, metrics
        self.max_batch_size, self.max_delay_s, self.max_queue = max_batch_size, max_delay_ms / 1000, max_queue
        self._queue: deque[_Pending] = deque()
        self._arrival = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"compute-{model.name}")
        self._busy = False
        self._task = asyncio.get_running_loop().create_task(self._serve())

    @property
    def waiting(self) -> int:
        """Requests queued, not yet in a running batch."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """No request waiting or computing."""
        return not self._queue and not self._busy

    async def submit(self, inputs: dict[str, np.ndarray], rows: int) -> BatchResult:
        """Queue one request of `rows` rows; return its outputs once its batch has run."""
        if rows > self.max_batch_size:
            raise InferenceError(
                f"a request of {rows} rows exceeds max_batch_size {self.max_batch_size} of model '{self.model.name}'"
            )
        if len(self._queue) >= self.max_queue:
            raise InferenceError(
                f"model '{self.model.name}' has {len(self._queue)} requests waiting (max_queue); try again later",
                "unavailable",
            )
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(inputs, rows, time.perf_counter(), future))
        self._arrival.set()
        return await future

    def _ready_rows(self) -> int:
        rows = 0
        for pending in self._queue:
            if rows + pending.rows > self.max_batch_size:
                break
            rows += pending.rows
        return rows

    async def _next_batch(self) -> list[_Pending]:
        while not self._queue:
            self._arrival.clear()
            await self._arrival.wait()
        deadline = self._queue[0].arrived + self.max_delay_s
        while self._ready_rows() < self.max_batch_size and self._ready_rows() == sum(p.rows for p in self._queue):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch, rows = [], 0
        while self._queue and rows + self._queue[0].rows <= self.max_batch_size:
            pending = self._queue.popleft()
            rows += pending.rows
            batch.append(pending)
        return batch

    def _compute(self, batch: list[_Pending]) -> tuple[dict[str, np.ndarray], float]:
        started = time.perf_counter()
        names = batch[0].inputs.keys()
        stacked = {name: np.concatenate([pending.inputs[name] for pending in batch]) for name in names}
        outputs = self.model.run(stacked)
        return outputs, 1000 * (time.perf_counter() - started)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            batch = [pending for pending in batch if not pending.future.done()]  # drop requests whose caller left
            if not batch:
                continue
            self._busy = True
            started = time.perf_counter()
            rows = sum(pending.rows for pending in batch)
            try:
                outputs, compute_ms = await loop.run_in_executor(self._executor, self._compute, batch)
            except Exception as error:  # a failing model answers this batch with 500, the next batch runs
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(
                            InferenceError(
                                f"model '{self.model.name}' failed: {type(error).__name__}: {error}", "internal"
                            )
                        )
                continue
            finally:
                self._busy = False
            if self.metrics is not None:
                self.metrics.observe_batch(
                    self.model.name, rows, [started - p.arrived for p in batch], compute_ms / 1000
                )
            offset = 0
            for pending in batch:
                result = {name: array[offset : offset + pending.rows] for name, array in outputs.items()}
                offset += pending.rows
                if not pending.future.done():
                    pending.future.set_result(BatchResult(result, 1000 * (started - pending.arrived), compute_ms, rows))

    async def close(self) -> None:
        """Wait for queued and running requests to finish, then stop."""
        while not self.idle:
            await asyncio.sleep(0.01)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._executor.shutdown(wait=True)
