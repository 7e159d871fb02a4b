"""A short split inference over loopback, in one call (the quickstart's last stage uses it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hnd_lightning.models.quantization import payload_bytes
from hnd_lightning.runtime.common.bitstream import BITSTREAM_INPUT
from hnd_lightning.runtime.common.images import list_images
from hnd_lightning.runtime.device.device_client import SplitClient
from hnd_lightning.runtime.device.link import EmulatedLink
from hnd_lightning.runtime.device.measure import measure_strategies, summarize
from hnd_lightning.runtime.device.transport import connect
from hnd_lightning.runtime.server.models import load_served_models
from hnd_lightning.runtime.server.server import ServerSettings, ServerThread
from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService


def measure_split_over_loopback(
    artifacts_dir: str | Path,
    images: str | Path | Sequence[Image.Image],
    num_images: int = 32,
    protocol: str = "grpc",
    labels: Sequence[int] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Serve a run's split on free 127.0.0.1 ports in this process, send `num_images` images through the
    device client, check every answer against in-process inference, stop the server, report.

    Args:
        artifacts_dir: a single run's `artifacts/` (split.json, head and tail safetensors) or one
            student folder `artifacts/b<B>` of a fused run.
        images: PIL images, or a folder: an ImageFolder split (`<root>/val`: labelled by class
            folder, matched to split.json's classes) or a flat folder of images.
        num_images: how many to send (spread over the folder's sorted files; the first of a list).
        protocol: "grpc" or "http" (REST with binary tensors).
        labels: class indices of `images` when they are PIL images (for top-1).
        device: torch device of both parts ("cpu", "cuda").

    Returns:
        `images`, `protocol`, `bytes_sent` (request body per image), `bytes_payload` (the 8-bit
        tensor alone; an entropy-coded split's framed string), `latency_ms` with `device`, `transfer`, `server` (queue + compute),
        `server_queue`, `server_compute` and `end_to_end`, each `{"p50": ms, "p95": ms}`,
        `top1` (None without labels), `predictions_match` (every top-1 class equals in-process
        inference's) and `max_abs_logit_difference` (against in-process inference).
    """
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol={protocol!r}; allowed: 'grpc', 'http'")
    if isinstance(images, (str, Path)):
        listed = list_images(images, num_images)
        pil_images, labels = [Image.open(item.path) for item in listed], [item.label for item in listed]
    else:
        pil_images = list(images)[:num_images]
        labels = list(labels)[:num_images] if labels is not None else [None] * len(pil_images)
    models = load_served_models(artifacts_dir, device=device)
    service = InferenceService(models, BatchingSettings(max_batch_size=8, max_delay_ms=0.0, max_queue=64))
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        url = server.http_url if protocol == "http" else f"grpc://{server.grpc_url}"
        transport = connect(url, EmulatedLink())
        try:
            client = SplitClient(artifacts_dir, transport, device=device)
            prepared = [client.prepare(image, label) for image, label in zip(pil_images, labels)]
            records = measure_strategies(client, prepared, ["split"], [None], warmup=2)
            # the same payloads through the server model in this process
            differences, matches, coded_bytes = [], [], []
            for image, record in zip(prepared, records):
                payload, _ = client.payload(image)
                coded_bytes += [len(item) for item in payload.get(BITSTREAM_INPUT, [])]
                expected = models[client.model].run(payload)["logits"]
                differences.append(float(np.abs(expected - record["logits"]).max()))
                matches.append(int(expected[0].argmax()) == record["prediction"])
        finally:
            transport.close()
    row = summarize(records)[0]
    latency = {
        name: {"p50": row[f"{key}_p50"], "p95": row[f"{key}_p95"]}
        for name, key in (
            ("device", "device_ms"),
            ("transfer", "transfer_ms"),
            ("server_queue", "server_queue_ms"),
            ("server_compute", "server_compute_ms"),
            ("end_to_end", "end_to_end_ms"),
        )
    }
    servers = [r["server_queue_ms"] + r["server_compute_ms"] for r in records]
    latency["server"] = {"p50": float(np.median(servers)), "p95": float(np.percentile(servers, 95))}
    elements = int(np.prod(client.metadata["bottleneck_tensor"]["shape"]))
    return {
        "images": len(records),
        "protocol": protocol,
        "model": client.model,
        "bytes_sent": row["bytes_sent"],
        # the 8-bit tensor, or an entropy-coded split's mean frame (header included)
        "bytes_payload": float(np.mean(coded_bytes)) if coded_bytes else payload_bytes(elements)["uint8"],
        "latency_ms": latency,
        "top1": row["top1"],
        "predictions_match": all(matches),
        "max_abs_logit_difference": max(differences),
    }
