"""The models an edge server serves: the split's server part(s) and, optionally, the whole teacher.

Each `ServedModel` declares its inputs and outputs (`TensorSpec`), checks a request's content in
`prepare` (before it queues, so one bad request never fails a batch) and runs a batch in `run`.

    server      bottleneck UINT8 [N, B, h, w], scale FP32 [N], zero_point UINT8 [N] -> logits FP32 [N, classes]
    server_b3   the same per student of a fused run
    server      (an entropy-coded split) bitstream BYTES [N] -> logits FP32 [N, classes] (`coded_models`)
    teacher     image BYTES [N] (encoded JPEG / PNG) -> logits FP32 [N, classes]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.models.quantization import split_parts
from hnd_lightning.runtime.common.bitstream import BITSTREAM_INPUT, unframe_all
from hnd_lightning.runtime.common.images import decode_jpeg
from hnd_lightning.runtime.common.parts import (
    RUNTIMES,
    TEACHER_MODEL,
    OnnxRunner,
    TorchRunner,
    find_split_artifacts,
    load_teacher,
)
from hnd_lightning.runtime.common.protocol import DATATYPES, InferenceError, TensorSpec
from hnd_lightning.runtime.server.coded_models import coded_runner, coded_specs

SPLIT_INPUTS = ("bottleneck", "scale", "zero_point")
SERVER_ONNX = "server.onnx"


class ServedModel:
    """A named model with declared inputs / outputs, a content check and a batched `run`."""

    platform = "pytorch"

    def __init__(
        self, name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], runner: Any, metadata: dict[str, Any]
    ) -> None:
        self.name, self.inputs, self.outputs, self.runner, self.metadata = name, inputs, outputs, runner, metadata

    def prepare(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Check a request's values; return the arrays to batch and the milliseconds that took."""
        return arrays, 0.0

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A batch of prepared inputs (concatenated along the first dimension) -> outputs by name."""
        return {self.outputs[0].name: self.runner(*(batch[spec.name] for spec in self.inputs))}

    def example_batch(self) -> dict[str, np.ndarray]:
        """One all-zero row per declared input, as `run` takes it (the warm-up batch)."""
        return {spec.name: np.zeros((1, *spec.shape[1:]), DATATYPES[spec.datatype]) for spec in self.inputs}

    def warm_up(self) -> None:
        """Run `example_batch` once: CUDA context, cuDNN's algorithm choice and the first allocations happen
        here, before the server reports ready, instead of in the first client's request."""
        self.run(self.example_batch())

    def describe(self) -> dict[str, Any]:
        """The protocol's model metadata."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": self.platform,
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }


class SplitServerModel(ServedModel):
    """Dequantization + decoder + frozen tail of a split, fed the device's 8-bit payload."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        scale = arrays["scale"]
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            bad = scale[~np.isfinite(scale) | (scale <= 0)][:4].tolist()
            raise InferenceError(f"input 'scale' must be finite and positive, got {bad}")
        return arrays, 0.0


class CodedSplitServerModel(ServedModel):
    """decompress + decoder + frozen tail of an entropy-coded split, fed the device's framed strings."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        unframe_all(arrays[BITSTREAM_INPUT], self.runner.latent_shape)  # every frame checked before it queues
        return arrays, 0.0

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        strings = unframe_all(batch[BITSTREAM_INPUT], self.runner.latent_shape)
        return {self.outputs[0].name: self.runner(strings)}

    def example_batch(self) -> dict[str, np.ndarray]:
        """One real frame (an all-zero latent, coded): zeros are no bitstream (the warm-up batch)."""
        return {BITSTREAM_INPUT: self.runner.example_frames()}


class TeacherModel(ServedModel):
    """The whole teacher on encoded images: full offloading. JPEG decoding counts as its compute."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        started = time.perf_counter()
        images = np.stack([decode_jpeg(data, self.metadata, "image") for data in arrays["image"].reshape(-1)])
        return {"image": images}, 1000 * (time.perf_counter() - started)

    def example_batch(self) -> dict[str, np.ndarray]:
        return {"image": np.zeros((1, *self.metadata["input"]["shape"]), np.float32)}  # a decoded image


def split_specs(metadata: dict[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a split's server part, as `deploy` names them in `server.onnx`."""
    channels, height, width = metadata["bottleneck_tensor"]["shape"]
    inputs = [
        TensorSpec("bottleneck", "UINT8", (-1, channels, height, width)),
        TensorSpec("scale", "FP32", (-1,)),
        TensorSpec("zero_point", "UINT8", (-1,)),
    ]
    return inputs, [TensorSpec("logits", "FP32", (-1, metadata["num_classes"]))]


def load_served_models(
    artifacts: str | Path,
    runtime: str = "torch",
    device: str = "cpu",
    teacher: str | None = None,
    deploy_dir: str | Path | None = None,
    bf16_autocast: bool = False,
    threads: int | None = None,
) -> dict[str, ServedModel]:
    """Every model a server of `artifacts` serves: `server` (or `server_b<B>` per fused student) and,
    with `teacher` (see `load_teacher`), `teacher`.

    `runtime=onnxruntime` runs `deploy_dir/server.onnx` (written by `deploy`) instead of PyTorch.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}; allowed: {', '.join(RUNTIMES)}")
    folders = find_split_artifacts(artifacts)
    if runtime == "onnxruntime" and (deploy_dir is None or len(folders) > 1):
        raise ValueError(
            "runtime=onnxruntime serves the server.onnx of one deploy output: pass deploy_dir=<deploy folder> "
            f"(fused runs: one server per student's artifacts/b<B>); artifacts hold {list(folders)}."
        )
    models: dict[str, ServedModel] = {}
    for name, folder in folders.items():
        split = load_split_artifacts(folder)
        if split.entropy_coded:  # an Entropic Student: the bitstream in, decoded here
            onnx = Path(deploy_dir) / SERVER_ONNX if runtime == "onnxruntime" else None
            runner = coded_runner(split, onnx, device, bf16_autocast, threads)
            models[name] = CodedSplitServerModel(name, *coded_specs(split.metadata), runner, split.metadata)
            models[name].platform = "onnxruntime_onnx" if onnx else "pytorch"
            continue
        inputs, outputs = split_specs(split.metadata)
        if runtime == "onnxruntime":
            runner = OnnxRunner(Path(deploy_dir) / SERVER_ONNX, SPLIT_INPUTS, device, threads)
        else:
            runner = TorchRunner(split_parts(split.model(), quantized=True)[1], device, bf16_autocast)
        models[name] = SplitServerModel(name, inputs, outputs, runner, split.metadata)
        if runtime == "onnxruntime":
            models[name].platform = "onnxruntime_onnx"
    metadata = next(iter(models.values())).metadata
    module, source = load_teacher(teacher, metadata, artifacts if len(folders) == 1 else next(iter(folders.values())))
    if module is not None:
        outputs = [TensorSpec("logits", "FP32", (-1, metadata["num_classes"]))]
        runner = TorchRunner(module, device, bf16_autocast)
        runner.description += f"; teacher weights: {source}"
        models[TEACHER_MODEL] = TeacherModel(
            TEACHER_MODEL, [TensorSpec("image", "BYTES", (-1,))], outputs, runner, metadata
        )
    return models
