"""Triton Python-backend model of a split's server part (`model.py`, written by `deploy` with its config).

Runs `model.onnx` beside it through `split_server_part.py` (onnxruntime and numpy alone: Triton's stub
venv cannot hold torch). Triton's dynamic batcher hands `execute` a list of requests without joining
them: each request is checked on its own (a bad one gets its own 400, the others run), the good ones
are concatenated, run once and split back. Config `parameters` read here: `intra_op_threads`
(0: onnxruntime's default, a thread per core) and `allow_spinning` ("true" / "false"; absent:
onnxruntime's default). Triton 2.51's responses take no parameters: batch sizes are in Triton's
`/v2/models/server/stats` (`batch_stats`), queue and compute times in its metrics.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils
from split_server_part import INPUTS, OUTPUT, InvalidInput, SplitServerPart


def _parameter(config: dict, key: str, default: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    """The server part: bottleneck UINT8 [N, B, h, w], scale FP32 [N, 1], zero_point UINT8 [N, 1] -> logits FP32 [N, C]."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        onnx_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        spinning = {"true": True, "false": False}.get(_parameter(config, "allow_spinning", "").lower())
        self.part = SplitServerPart(onnx_path, int(_parameter(config, "intra_op_threads", "1")), spinning)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        checked, indices = [], []
        for index, request in enumerate(requests):
            try:
                arrays = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in INPUTS}
                checked.append(self.part.check(arrays))
                indices.append(index)
            except InvalidInput as error:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                )
        if checked:
            for index, logits in zip(indices, self.part.run_requests(checked)):
                responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, logits)])
        return responses

    def finalize(self) -> None:
        self.part = None
