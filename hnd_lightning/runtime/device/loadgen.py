"""Load generation: K concurrent device clients sending payloads to a server, bounded in time and requests.

Each client is a thread with its own connection (as K devices would have), sending one request after
another (closed loop: the next leaves when the previous answer is back). Collected per request:
round trip, the server's queue and compute time, the batch it ran in, or the error kind.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.models.quantization import split_parts
from hnd_lightning.runtime.common.credentials import ClientTls
from hnd_lightning.runtime.common.protocol import InferenceError
from hnd_lightning.runtime.device.transport import connect

# name in `loadtest.protocols` -> (URL scheme, binary tensors)
PROTOCOL_VARIANTS = {"grpc": ("grpc", True), "http": ("http", True), "http_json": ("http", False)}


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    array = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(array, q)) for q in (50, 95, 99)}


def device_payloads(artifacts: str, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` 8-bit payloads (batch 1) of the artifacts' device part on seeded random images."""
    split = load_split_artifacts(artifacts)
    device_part = split_parts(split.model(), quantized=True)[0]
    generator = torch.Generator().manual_seed(seed)
    payloads = []
    with torch.inference_mode():
        for _ in range(count):
            values, scale, zero_point = device_part(
                torch.randn(1, *split.metadata["input"]["shape"], generator=generator)
            )
            payloads.append({"bottleneck": values.numpy(), "scale": scale.numpy(), "zero_point": zero_point.numpy()})
    return payloads


def run_load(
    url: str,
    model: str,
    payloads: Sequence[dict[str, np.ndarray]],
    concurrency: int,
    duration_s: float,
    max_requests: int = 100_000,
    binary: bool = True,
    warmup_requests: int = 1,
    tls: ClientTls | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """`concurrency` clients send `payloads` (round robin, each client starting at its own offset) to
    `model` at `url` for `duration_s` seconds or `max_requests` requests in all, whichever ends first.

    Each client first sends `warmup_requests` untimed requests; `tls` and `token` go to `connect`.
    Returns the counts (`requests`, `ok`, `errors` by kind), `images_per_s` and `requests_per_s` over
    the timed window, `latency_ms` and `overhead_ms` (round trip minus server queue and compute) as
    p50 / p95 / p99, the server's `queue_ms` and `compute_ms` p50, and `batch_sizes` (requests per
    size of the batch they ran in).
    """
    if concurrency < 1 or duration_s <= 0 or not payloads:
        raise ValueError(
            f"need concurrency >= 1, duration_s > 0 and payloads; got {concurrency}, {duration_s}, {len(payloads)}"
        )
    lock = threading.Lock()
    results: list[dict[str, Any]] = []
    budget = [max_requests]
    window: dict[str, float] = {}
    # the timed window opens when every client has warmed up (the action runs before any is released)
    ready = threading.Barrier(
        concurrency + 1, action=lambda: window.update(start=time.perf_counter(), end=time.perf_counter() + duration_s)
    )

    def client(index: int) -> None:
        transport = connect(url, binary=binary, tls=tls, token=token)
        try:
            for _ in range(warmup_requests):
                try:
                    transport.infer(model, payloads[index % len(payloads)], ["logits"])
                except InferenceError:
                    pass
            ready.wait()
            sent = 0
            while time.perf_counter() < window["end"]:
                with lock:
                    if budget[0] <= 0:
                        break
                    budget[0] -= 1
                payload = payloads[(index + sent) % len(payloads)]
                sent += 1
                rows = len(next(iter(payload.values())))
                try:
                    reply = transport.infer(model, payload, ["logits"])
                except InferenceError as error:
                    record = {"error": error.kind, "message": str(error)}
                else:
                    parameters = reply.parameters
                    queue_ms, compute_ms = float(parameters.get("queue_ms", 0)), float(parameters.get("compute_ms", 0))
                    record = {
                        "rows": rows,
                        "latency_ms": reply.round_trip_ms,
                        "queue_ms": queue_ms,
                        "compute_ms": compute_ms,
                        "overhead_ms": reply.round_trip_ms - queue_ms - compute_ms,
                        "batch_size": int(parameters.get("batch_size", rows)),
                    }
                with lock:
                    results.append(record)
        finally:
            transport.close()

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - window["start"]
    served = [r for r in results if "error" not in r]
    errors = Counter(r["error"] for r in results if "error" in r)
    return {
        "concurrency": concurrency,
        "duration_s": elapsed,
        "requests": len(results),
        "ok": len(served),
        "errors": dict(errors),
        "error_examples": sorted({r["message"] for r in results if "error" in r})[:3],
        "requests_per_s": len(served) / elapsed,
        "images_per_s": sum(r["rows"] for r in served) / elapsed,
        "latency_ms": _percentiles([r["latency_ms"] for r in served]),
        "overhead_ms": _percentiles([r["overhead_ms"] for r in served]),
        "queue_ms_p50": _percentiles([r["queue_ms"] for r in served])["p50"],
        "compute_ms_p50": _percentiles([r["compute_ms"] for r in served])["p50"],
        "batch_sizes": dict(sorted(Counter(r["batch_size"] for r in served).items())),
    }


def format_load_table(results: Sequence[dict[str, Any]]) -> str:
    """One line per (mode, protocol): throughput, latency percentiles, overhead, errors, batch sizes."""
    header = f"{'mode':<10} {'protocol':<10} {'clients':>7} {'img/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'overhead p50':>12} {'errors':>7}  batch sizes (requests)"
    lines = [header, "-" * len(header)]
    for result in results:
        latency = result["latency_ms"]
        sizes = " ".join(f"{size}:{count}" for size, count in result["batch_sizes"].items())
        lines.append(
            f"{result['mode']:<10} {result['protocol']:<10} {result['concurrency']:>7} {result['images_per_s']:>8.2f} {latency['p50']:>8.1f} "
            f"{latency['p95']:>8.1f} {latency['p99']:>8.1f} {result['overhead_ms']['p50']:>12.2f} {sum(result['errors'].values()):>7}  {sizes}"
        )
    return "\n".join(lines)
