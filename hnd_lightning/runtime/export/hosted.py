"""The server part for servers without an ONNX backend: Triton's Python backend, KServe, MLServer.

Each adapter is a template file shipped beside this module (`templates/`), copied as it is, beside
`split_server_part.py` (onnxruntime + numpy on `model.onnx`, no torch) and `model.onnx` (a hard link
to deploy's `server.onnx` where the file system allows, else a copy). What differs per server lives
in the files written from data: `config.pbtxt`, `model-settings.json`, `settings.json`.

    triton_python_repository/server/   config.pbtxt (backend "python", dynamic batching, bounded queue)
                                       1/model.py  1/split_server_part.py  1/model.onnx
    kserve/                            kserve_server.py  settings.json  split_server_part.py  model.onnx
    mlserver/                          settings.json (127.0.0.1, parallel_workers 0)
                                       server/model-settings.json  server/mlserver_runtime.py
                                       server/split_server_part.py  server/model.onnx
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from hnd_lightning.files import atomic_write_text
from hnd_lightning.runtime.export.triton_repository import model_config

TEMPLATES = Path(__file__).resolve().parent / "templates"
SERVER_PART = "split_server_part.py"
TRITON_PYTHON_REPOSITORY = "triton_python_repository"
KSERVE_DIR = "kserve"
MLSERVER_DIR = "mlserver"
MODEL_NAME = "server"
# deploy.json dtype names -> the Open Inference Protocol's
OIP_TYPES = {"uint8": "UINT8", "float32": "FP32"}


def _link_or_copy(source: str | Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, target)


def _copy_adapter(folder: Path, template: str, name: str, server_onnx: str | Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEMPLATES / template, folder / name)
    shutil.copyfile(TEMPLATES / SERVER_PART, folder / SERVER_PART)
    _link_or_copy(server_onnx, folder / "model.onnx")


def write_triton_python_repository(
    directory: str | Path,
    server_onnx: str | Path,
    server: dict[str, Any],
    max_batch_size: int = 16,
    max_queue_delay_ms: float = 0.0,
    max_queue: int = 64,
    intra_op_threads: int = 1,
) -> Path:
    """A Triton model repository whose model `server` runs `server_onnx` in Triton's Python backend.

    `server`: deploy.json's `server` entry. Batching and queue as in `model_config`. Returns `directory`.
    """
    directory = Path(directory)
    model_dir = directory / MODEL_NAME
    _copy_adapter(model_dir / "1", "triton_model.py", "model.py", server_onnx)
    parameters = {"intra_op_threads": str(int(intra_op_threads)), "allow_spinning": "false"}
    config = model_config(
        server["inputs"],
        server["outputs"],
        MODEL_NAME,
        max_batch_size,
        max_queue_delay_ms,
        max_queue,
        "python",
        parameters,
    )
    atomic_write_text(model_dir / "config.pbtxt", config)
    return directory


def write_kserve_server(directory: str | Path, server_onnx: str | Path, intra_op_threads: int = 1) -> Path:
    """`kserve_server.py` (a KServe ModelServer of model `server`) with what it runs and its default
    settings (`settings.json`). Returns `directory`."""
    directory = Path(directory)
    _copy_adapter(directory, "kserve_server.py", "kserve_server.py", server_onnx)
    settings = {"model_name": MODEL_NAME, "intra_op_threads": int(intra_op_threads)}
    atomic_write_text(directory / "settings.json", json.dumps(settings, indent=2) + "\n")
    return directory


def _oip_tensor(tensor: dict[str, Any]) -> dict[str, Any]:
    shape = [-1 if size == "batch" else int(size) for size in tensor["shape"]]
    return {"name": tensor["name"], "datatype": OIP_TYPES[tensor["dtype"]], "shape": shape}


def write_mlserver_runtime(
    directory: str | Path, server_onnx: str | Path, server: dict[str, Any], intra_op_threads: int = 1
) -> Path:
    """An MLServer folder (`mlserver start <directory>`) serving model `server`. Returns `directory`.

    `settings.json` binds 127.0.0.1 with `parallel_workers: 0` (MLServer 1.7.1's worker processes fail
    to start with uvloop >= 0.22) and leaves the ports to MLServer (8080, 8081, 8082; MLSERVER_HTTP_PORT,
    MLSERVER_GRPC_PORT, MLSERVER_METRICS_PORT move them).
    """
    directory = Path(directory)
    _copy_adapter(directory / MODEL_NAME, "mlserver_runtime.py", "mlserver_runtime.py", server_onnx)
    # no ports here: MLServer's defaults (8080, 8081, 8082) apply, and MLSERVER_HTTP_PORT etc. can move them
    settings = {"host": "127.0.0.1", "parallel_workers": 0}
    atomic_write_text(directory / "settings.json", json.dumps(settings, indent=2) + "\n")
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_runtime.SplitServerRuntime",
        "inputs": [_oip_tensor(tensor) for tensor in server["inputs"]],
        "outputs": [_oip_tensor(tensor) for tensor in server["outputs"]],
        "parameters": {"uri": "./model.onnx", "extra": {"intra_op_threads": int(intra_op_threads)}},
    }
    atomic_write_text(directory / MODEL_NAME / "model-settings.json", json.dumps(model_settings, indent=2) + "\n")
    return directory
