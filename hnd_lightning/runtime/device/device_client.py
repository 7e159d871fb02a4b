"""The device's side of split computing, and of the two strategies it is compared with.

`SplitClient` holds the device part (encoder + 8-bit quantization, in PyTorch or `device.onnx`), an
optional local teacher, and a transport to the edge server. Per image, each strategy of
`analysis.latency.STRATEGIES` returns one record of what it measured:

    split         device part here, 8-bit payload to the server's `server` model (an entropy-coded split:
                  its framed bitstream, `runtime.device.coded`)
    server_only   the camera view as JPEG to the server's `teacher` model (full offloading)
    device_only   the whole teacher here

Record keys (milliseconds unless said): device_ms, bytes_sent, bytes_received, round_trip_ms,
server_queue_ms, server_compute_ms, transfer_ms (round trip minus the server's queue and compute:
network, emulated link, protocol), end_to_end_ms (device_ms + round_trip_ms), prediction. Device
computations run on `weak_device` (a `WeakDevice`: this machine, a CPU quota or a slowdown); with its
reference, records also carry device_reference_ms (the same computation unthrottled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.models.quantization import payload_bytes, split_parts
from hnd_lightning.runtime.common.bitstream import BITSTREAM_INPUT
from hnd_lightning.runtime.common.images import camera_view, jpeg_bytes, model_input
from hnd_lightning.runtime.common.parts import SERVER_MODEL, TEACHER_MODEL, OnnxRunner, TorchRunner, load_teacher
from hnd_lightning.runtime.device.coded import CodedDevicePart
from hnd_lightning.runtime.device.transport import GrpcTransport, HttpTransport
from hnd_lightning.weak_device import WeakDevice

DEVICE_ONNX = "device.onnx"


@dataclass
class PreparedImage:
    """One image ready for every strategy: normalized `array` (1, 3, H, W), its `jpeg`, its `label`."""

    array: np.ndarray
    jpeg: bytes
    label: int | None = None


class SplitClient:
    """A device running the split's device part against an edge server (see the module docstring)."""

    def __init__(
        self,
        artifacts: str | Path,
        transport: HttpTransport | GrpcTransport,
        runtime: str = "torch",
        device: str = "cpu",
        deploy_dir: str | Path | None = None,
        teacher: str | None = None,
        model: str | None = None,
        jpeg_quality: int = 90,
        weak_device: WeakDevice | None = None,
        device_onnx: str = DEVICE_ONNX,
    ) -> None:
        split = load_split_artifacts(artifacts)
        self.metadata, self.transport, self.jpeg_quality = split.metadata, transport, jpeg_quality
        self.weak_device = weak_device or WeakDevice()
        self.coded = split.entropy_coded
        if self.coded:
            self.device_part = CodedDevicePart(split, runtime, device, deploy_dir)
        elif runtime == "onnxruntime":
            if deploy_dir is None:
                raise ValueError(f"runtime=onnxruntime runs {device_onnx}: pass deploy_dir=<a deploy output folder>.")
            # as many intra-op threads as torch has (the client's `threads`), so both runtimes share one setting
            self.device_part = OnnxRunner(Path(deploy_dir) / device_onnx, ["image"], device, torch.get_num_threads())
        else:
            self.device_part = TorchRunner(split_parts(split.model(), quantized=True)[0], device)
        module, self.teacher_source = load_teacher(teacher, self.metadata, artifacts)
        self.teacher = None if module is None else TorchRunner(module, device)
        self.model, self.payload_shapes = self._server_model(model)

    def _server_model(self, requested: str | None) -> tuple[str, dict[str, list[int]]]:
        """The server's model for this split and the shapes its inputs declare (Triton declares `scale` as
        [-1, 1] where this project's server says [-1]; the payload is shaped to what the server declares)."""
        channels, height, width = self.metadata["bottleneck_tensor"]["shape"]
        candidates = (
            [requested] if requested else [SERVER_MODEL, f"{SERVER_MODEL}_b{self.metadata['bottleneck_channels']}"]
        )
        seen = {}
        for name in candidates:
            description = self.transport.metadata(name)
            if description is None:
                continue
            shapes = {tensor["name"]: tensor["shape"] for tensor in description["inputs"]}
            seen[name] = shapes
            if self.coded and set(shapes) == {BITSTREAM_INPUT}:
                return name, shapes
            if not self.coded and (
                shapes.get("bottleneck", [])[1:] == [channels, height, width]
                and {"scale", "zero_point"} <= shapes.keys()
            ):
                return name, shapes
        raise ValueError(
            f"The server has no model for this split (bottleneck {[channels, height, width]} uint8): tried {candidates}, "
            f"found {seen or 'none of them'}. Serve these artifacts, or name the model with model=NAME."
        )

    def prepare(self, image: Image.Image, label: int | None = None) -> PreparedImage:
        """Resize + center crop once; normalize for the models and encode as JPEG for full offloading."""
        view = camera_view(image, self.metadata)
        return PreparedImage(model_input(view, self.metadata)[None], jpeg_bytes(view, self.jpeg_quality), label)

    def _remote(self, model: str, inputs: dict[str, np.ndarray], device: dict[str, float]) -> dict[str, Any]:
        reply = self.transport.infer(model, inputs, ["logits"])
        queue_ms = float(reply.parameters.get("queue_ms", 0.0))
        compute_ms = float(reply.parameters.get("compute_ms", 0.0))
        device_ms = device["device_ms"]
        return {
            **device,
            "bytes_sent": reply.bytes_sent,
            "bytes_received": reply.bytes_received,
            "round_trip_ms": reply.round_trip_ms,
            "server_queue_ms": queue_ms,
            "server_compute_ms": compute_ms,
            "transfer_ms": reply.round_trip_ms - queue_ms - compute_ms,
            "end_to_end_ms": device_ms + reply.round_trip_ms,
            "logits": reply.outputs["logits"],
        }

    def link_payload(self, images: list[PreparedImage]) -> dict[str, Any]:
        """What analyze's latency model sends per image: the 8-bit bottleneck and the images' mean JPEG."""
        elements = int(np.prod(self.metadata["bottleneck_tensor"]["shape"]))
        jpeg = float(np.mean([len(image.jpeg) for image in images])) if images else float("nan")
        student = payload_bytes(elements)
        if self.coded and images:  # the latency model reads the split's bytes under the 8-bit link's name
            frames = [len(self.device_part(image.array)[BITSTREAM_INPUT][0]) for image in images]  # unthrottled
            student = {"uint8": float(np.mean(frames))}
        return {"jpeg": {"bytes": jpeg, "quality": self.jpeg_quality}, "student": {"bytes": student}}

    def _payload(self, image: PreparedImage) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        if self.coded:  # an entropy-coded split: its `bitstream` of one frame
            return self.weak_device.timed("split", self.device_part, image.array)
        (bottleneck, scale, zero_point), device = self.weak_device.timed("split", self.device_part, image.array)
        inputs = {"bottleneck": bottleneck, "scale": scale, "zero_point": zero_point}
        for name in ("scale", "zero_point"):
            inputs[name] = inputs[name].reshape(len(bottleneck), *([1] * (len(self.payload_shapes[name]) - 1)))
        return inputs, device

    def payload(self, image: PreparedImage) -> tuple[dict[str, np.ndarray], float]:
        """The device part on one image: the 8-bit payload shaped as the server declares it, and its ms."""
        inputs, device = self._payload(image)
        return inputs, device["device_ms"]

    def split(self, image: PreparedImage) -> dict[str, Any]:
        return self._remote(self.model, *self._payload(image))

    def server_only(self, image: PreparedImage) -> dict[str, Any]:
        jpeg = np.empty(1, dtype=object)
        jpeg[0] = image.jpeg
        return self._remote(TEACHER_MODEL, {"image": jpeg}, {"device_ms": 0.0})

    def device_only(self, image: PreparedImage) -> dict[str, Any]:
        if self.teacher is None:
            raise ValueError(
                "device_only runs the whole teacher on the device: pass teacher=PATH, teacher=run or teacher=random."
            )
        logits, device = self.weak_device.timed("device_only", self.teacher, image.array)
        zeros = dict.fromkeys(
            ("bytes_sent", "bytes_received", "round_trip_ms", "server_queue_ms", "server_compute_ms", "transfer_ms"), 0
        )
        return {**device, **zeros, "end_to_end_ms": device["device_ms"], "logits": logits}

    def run(self, strategy: str, image: PreparedImage) -> dict[str, Any]:
        """One image through `strategy`; the record gets `strategy`, `prediction` and `label`."""
        record = getattr(self, strategy)(image)
        record.update(strategy=strategy, prediction=int(np.argmax(record["logits"][0])), label=image.label)
        return record
