"""What both transports share: the served models, their batchers, health, metadata and one `infer`.

REST (`rest_app.py`) and gRPC (`grpc_servicer.py`) only translate their wire format to `WireTensor`s
and back; checking, queueing, batching, timing and counting happen here, once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hnd_lightning import __version__
from hnd_lightning.runtime.common.protocol import InferenceError, WireTensor, decode_inputs
from hnd_lightning.runtime.server.batcher import DynamicBatcher
from hnd_lightning.runtime.server.metrics import ServerMetrics
from hnd_lightning.runtime.server.models import ServedModel

SERVER_NAME = "hnd-lightning"
# the package's one version (pyproject.toml reads the same constant)
SERVER_VERSION = __version__
EXTENSIONS = ["binary_tensor_data", "model_metadata"]


@dataclass(frozen=True)
class BatchingSettings:
    """Triton's dynamic batcher: up to `max_batch_size` rows, waiting up to `max_delay_ms` for them;
    at most `max_queue` requests waiting."""

    max_batch_size: int = 16
    max_delay_ms: float = 0.0
    max_queue: int = 64


class InferenceService:
    """Models, batchers, metrics and the server's state; `start()` inside the serving event loop (it runs
    one warm-up batch through every model first, so the server is ready only once each has computed)."""

    def __init__(
        self, models: dict[str, ServedModel], batching: BatchingSettings, max_request_bytes: int = 16 << 20
    ) -> None:
        if not models:
            raise ValueError("a server needs at least one model")
        self.models, self.batching, self.max_request_bytes = models, batching, max_request_bytes
        self.metrics = ServerMetrics()
        self.batchers: dict[str, DynamicBatcher] = {}
        self.accepting = False
        self.in_flight = 0

    async def start(self) -> None:
        # ready only once every model has run one batch (see ServedModel.warm_up)
        for model in self.models.values():
            await asyncio.to_thread(model.warm_up)
        settings = self.batching
        self.batchers = {
            name: DynamicBatcher(
                model, settings.max_batch_size, settings.max_delay_ms, settings.max_queue, self.metrics
            )
            for name, model in self.models.items()
        }
        self.accepting = True

    @property
    def ready(self) -> bool:
        return self.accepting

    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise InferenceError(f"unknown model '{name}'; this server serves {sorted(self.models)}", "not_found")
        return self.models[name]

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def check_size(self, num_bytes: int) -> None:
        if num_bytes > self.max_request_bytes:
            raise InferenceError(
                f"request body of {num_bytes:,} bytes exceeds max_request_bytes={self.max_request_bytes:,}"
            )

    async def infer(
        self, model_name: str, tensors: Sequence[WireTensor], outputs: Sequence[str] | None, protocol: str
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Check, queue and run one request; return the requested outputs (all when None) and the
        response parameters: `queue_ms`, `compute_ms` (the batch's, plus decoding for `teacher`), `batch_size`."""
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            if not self.accepting:
                raise InferenceError("the server is shutting down and takes no new requests", "unavailable")
            model = self.model(model_name)
            names = [spec.name for spec in model.outputs]
            unknown = [name for name in outputs or [] if name not in names]
            if unknown:
                raise InferenceError(f"unknown outputs {unknown} for model '{model_name}'; it has {names}")
            arrays, rows = decode_inputs(model.inputs, tensors)
            arrays, prepare_ms = model.prepare(arrays)
            result = await self.batchers[model_name].submit(arrays, rows)
        except InferenceError as error:
            self.metrics.observe_request(model_name if model_name in self.models else "<unknown>", protocol, error.kind)
            raise
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
        self.metrics.observe_request(model_name, protocol)
        selected = {name: result.outputs[name] for name in (outputs or names)}
        parameters = {
            "queue_ms": result.queue_ms,
            "compute_ms": result.compute_ms + prepare_ms,
            "batch_size": result.batch_size,
        }
        return selected, parameters

    def reject(self, model_name: str, protocol: str, error: InferenceError) -> None:
        """Count a request refused before it reached `infer` (e.g. an unreadable body)."""
        self.metrics.observe_request(model_name if model_name in self.models else "<unknown>", protocol, error.kind)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests, then wait until those in flight are answered (at most `timeout_s`)."""
        self.accepting = False
        deadline = time.monotonic() + timeout_s
        while (self.in_flight or not all(b.idle for b in self.batchers.values())) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.close()
