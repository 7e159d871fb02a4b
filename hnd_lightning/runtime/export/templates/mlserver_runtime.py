"""An MLServer runtime of a split's server part (written by `deploy` into `mlserver/server/`).

    mlserver start mlserver/        # from MLServer's venv; settings.json binds 127.0.0.1

`model-settings.json` names this class (`mlserver_runtime.SplitServerRuntime`), the model's inputs
and output (its metadata), `parameters.uri` (`model.onnx`, run through `split_server_part.py`:
onnxruntime + numpy) and `parameters.extra.intra_op_threads`. MLServer checks no inputs itself; this
runtime does (`MLServerError`: 400 / INVALID_ARGUMENT naming the problem). One request runs at a
time, unbatched; each response says `batch_size` and `compute_ms`. MLServer's REST has no binary
tensor extension: it takes JSON tensors only (its gRPC takes raw bytes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters
from mlserver.utils import get_model_uri

sys.path.insert(0, str(Path(__file__).resolve().parent))  # split_server_part.py, beside this file

from split_server_part import INPUTS, OUTPUT, InvalidInput, SplitServerPart  # noqa: E402


class SplitServerRuntime(MLModel):
    """bottleneck UINT8 [N, B, h, w], scale FP32 [N], zero_point UINT8 [N] -> logits FP32 [N, classes]."""

    async def load(self) -> bool:
        extra = self.settings.parameters.extra or {}
        self.part = SplitServerPart(await get_model_uri(self.settings), int(extra.get("intra_op_threads", 1)))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        started = time.perf_counter()
        try:
            arrays = {}
            for tensor in payload.inputs:
                if tensor.name in INPUTS and tensor.datatype != INPUTS[tensor.name]:
                    raise InvalidInput(
                        f"input '{tensor.name}' has datatype {tensor.datatype}, the model expects {INPUTS[tensor.name]}"
                    )
                try:
                    arrays[tensor.name] = NumpyCodec.decode_input(tensor)
                except (ValueError, TypeError) as error:  # data that does not fill the shape
                    raise InvalidInput(f"input '{tensor.name}' does not match its shape: {error}") from None
            checked = self.part.check(arrays)
        except InvalidInput as error:
            raise MLServerError(str(error), status_code=400) from None
        logits = self.part.run(checked)
        # the protocol's gRPC parameters are bool, int64 or string (MLServer drops a float there)
        parameters = Parameters(batch_size=len(logits), compute_ms=f"{1000 * (time.perf_counter() - started):.3f}")
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            parameters=parameters,
            outputs=[NumpyCodec.encode_output(OUTPUT, logits)],
        )
