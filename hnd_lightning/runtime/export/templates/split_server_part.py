"""The split's server part on `server.onnx`, with onnxruntime and numpy alone (no torch, numpy 1 or 2).

`deploy` copies this file beside each adapter it writes for another server (Triton's Python backend,
a KServe ModelServer, an MLServer runtime), which imports it from its own folder. It checks what this
project's `serve` checks and runs a list of requests as one batch:

    part = SplitServerPart("server.onnx", intra_op_threads=1)
    arrays = part.check({"bottleneck": uint8 [N, B, h, w], "scale": float32 [N] or [N, 1],
                         "zero_point": uint8 [N] or [N, 1]})          # InvalidInput names what is wrong
    logits = part.run_requests([arrays, ...])                          # float32 [N_i, classes] each
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

INPUTS = {"bottleneck": "UINT8", "scale": "FP32", "zero_point": "UINT8"}
OUTPUT = "logits"
NUMPY_TYPES = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype(np.float32)}
# onnxruntime's tensor types -> the Open Inference Protocol's
ONNX_TYPES = {"tensor(uint8)": "UINT8", "tensor(float)": "FP32"}


class InvalidInput(ValueError):
    """A request this server part refuses: the client's fault (400 / INVALID_ARGUMENT); the message says why."""


class SplitServerPart:
    """`server.onnx` in one onnxruntime session, with the input checks of `hnd_lightning.serve`."""

    def __init__(self, onnx_path: str | Path, intra_op_threads: int = 1, spinning: bool | None = False) -> None:
        """`intra_op_threads` 0 and `spinning` None keep onnxruntime's defaults (a thread per core, spinning)."""
        options = onnxruntime.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        if spinning is not None:  # a spinning pool burns the cores the front end and other processes need
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        found = {node.name: ONNX_TYPES.get(node.type) for node in self.session.get_inputs()}
        if found != INPUTS:
            raise ValueError(f"{onnx_path} takes inputs {found}, a split's server part takes {INPUTS}")
        bottleneck = next(node for node in self.session.get_inputs() if node.name == "bottleneck")
        self.bottleneck_shape = [int(size) for size in bottleneck.shape[1:]]
        self.num_classes = int(self.session.get_outputs()[0].shape[1])

    def specs(self) -> tuple[list[dict], list[dict]]:
        """Inputs and output as model metadata lists them: `{"name", "datatype", "shape"}` (-1: the batch)."""
        inputs = [
            {"name": "bottleneck", "datatype": "UINT8", "shape": [-1, *self.bottleneck_shape]},
            {"name": "scale", "datatype": "FP32", "shape": [-1]},
            {"name": "zero_point", "datatype": "UINT8", "shape": [-1]},
        ]
        return inputs, [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, self.num_classes]}]

    def check(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request's inputs -> the arrays `run` takes (per-image values as [N]); `InvalidInput` otherwise."""
        names = sorted(arrays)
        if names != sorted(INPUTS):
            raise InvalidInput(f"inputs {names}: the model takes {list(INPUTS)}")
        checked = {}
        for name, datatype in INPUTS.items():
            array = np.asarray(arrays[name])
            if array.dtype != NUMPY_TYPES[datatype]:
                raise InvalidInput(f"input '{name}' has dtype {array.dtype}, the model expects {datatype}")
            if name == "bottleneck":
                if array.ndim != 4 or list(array.shape[1:]) != self.bottleneck_shape:
                    raise InvalidInput(
                        f"input 'bottleneck' has shape {list(array.shape)}, the model expects [-1, "
                        f"{', '.join(map(str, self.bottleneck_shape))}]"
                    )
            elif array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] != 1):
                raise InvalidInput(f"input '{name}' has shape {list(array.shape)}, the model expects [-1] or [-1, 1]")
            checked[name] = array.reshape(len(array), *array.shape[1:]) if name == "bottleneck" else array.reshape(-1)
        rows = {name: len(array) for name, array in checked.items()}
        if len(set(rows.values())) != 1 or not rows["bottleneck"]:
            raise InvalidInput(f"inputs disagree on the batch size or it is 0: {rows}")
        scale = checked["scale"]
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise InvalidInput(f"input 'scale' must be finite and positive, got {scale[:4].tolist()}")
        return checked

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Checked inputs of N images -> logits float32 [N, classes]."""
        return self.session.run([OUTPUT], batch)[0]

    def run_requests(self, requests: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """Checked inputs of several requests -> each one's logits, from one onnxruntime run over all of them."""
        if len(requests) == 1:
            return [self.run(requests[0])]
        batch = {name: np.concatenate([request[name] for request in requests]) for name in INPUTS}
        logits = self.run(batch)
        ends = np.cumsum([len(request["bottleneck"]) for request in requests])
        return np.split(logits, ends[:-1])
