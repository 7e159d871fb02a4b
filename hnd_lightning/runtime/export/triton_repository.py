"""A Triton model repository for the server part, so Triton Inference Server or KServe can host it.

    model_repository/
      server/
        config.pbtxt   platform onnxruntime_onnx, the inputs and output of server.onnx, dynamic batching
        1/model.onnx   a copy of deploy's server.onnx

Start it with `tritonserver --model-repository=model_repository`; the project's client talks to it
unchanged. Triton counts the batch dimension outside `dims`, so the per-image `scale` and
`zero_point` (shape [N] in the ONNX file) are declared as dims [1] with `reshape { shape: [] }`:
clients send them as [N, 1], which the client does when Triton's metadata says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hnd_lightning.files import atomic_write_text

MODEL_REPOSITORY = "model_repository"
# numpy / torch dtype names (as deploy.json writes them) -> Triton's model-config data types
TRITON_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64"}


def _tensor_block(tensor: dict[str, Any]) -> str:
    dims = [int(size) for size in tensor["shape"][1:]]  # the batch dimension is Triton's, not in dims
    dtype = TRITON_TYPES.get(tensor["dtype"])
    if dtype is None:
        raise ValueError(
            f"tensor {tensor['name']!r} has dtype {tensor['dtype']!r}; Triton types known here: {sorted(TRITON_TYPES)}"
        )
    lines = [
        f'    name: "{tensor["name"]}"',
        f"    data_type: {dtype}",
        f"    dims: [ {', '.join(map(str, dims or [1]))} ]",
    ]
    if not dims:
        lines.append("    reshape: { shape: [ ] }")  # one value per image: [N] in the model
    return "  {\n" + "\n".join(lines) + "\n  }"


def model_config(
    inputs: Sequence[dict[str, Any]],
    outputs: Sequence[dict[str, Any]],
    name: str = "server",
    max_batch_size: int = 16,
    max_queue_delay_ms: float = 0.0,
    max_queue: int = 64,
    backend: str | None = None,
    parameters: dict[str, str] | None = None,
) -> str:
    """The `config.pbtxt` text of an ONNX model with `inputs` / `outputs` as deploy.json describes them
    (`{"name", "shape": ["batch", ...], "dtype"}`): dynamic batching with a bounded queue, as `serve` does.

    `backend=None` serves the file with Triton's ONNX Runtime backend (`platform: "onnxruntime_onnx"`);
    `backend="python"` runs a `model.py` on one CPU instance (as `serve` computes one batch at a time),
    with `parameters` (string values) for it to read.
    """
    if backend is None:
        head = 'platform: "onnxruntime_onnx"\n'
    else:
        head = f'backend: "{backend}"\ninstance_group [ {{ count: 1, kind: KIND_CPU }} ]\n'
    blocks = [
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
        for key, value in (parameters or {}).items()
    ]
    return (
        f'name: "{name}"\n'
        + head
        + f"max_batch_size: {int(max_batch_size)}\n"
        + "input [\n"
        + ",\n".join(_tensor_block(t) for t in inputs)
        + "\n]\n"
        + "output [\n"
        + ",\n".join(_tensor_block(t) for t in outputs)
        + "\n]\n"
        + "dynamic_batching {\n"
        + f"  max_queue_delay_microseconds: {int(round(1000 * max_queue_delay_ms))}\n"
        + f"  default_queue_policy {{ max_queue_size: {int(max_queue)} }}\n"
        + "}\n"
        + "".join(blocks)
    )


def write_model_repository(
    directory: str | Path,
    server_onnx: str | Path,
    server: dict[str, Any],
    max_batch_size: int = 16,
    max_queue_delay_ms: float = 0.0,
    max_queue: int = 64,
) -> Path:
    """Write `directory/server/config.pbtxt` and `directory/server/1/model.onnx` (a copy of `server_onnx`).

    `server`: deploy.json's `server` entry (its `inputs` and `outputs`). Returns `directory`.
    """
    directory = Path(directory)
    model_dir = directory / "server"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server_onnx, model_dir / "1" / "model.onnx")
    config = model_config(server["inputs"], server["outputs"], "server", max_batch_size, max_queue_delay_ms, max_queue)
    atomic_write_text(model_dir / "config.pbtxt", config)
    return directory
