"""What runs on the server for an entropy-coded split (an Entropic Student), behind `models.CodedSplitServerModel`.

    bitstream BYTES [N] (one frame per image, `runtime.common.bitstream`) -> logits FP32 [N, classes]

What runs where on the server: the frames are checked in `CodedSplitServerModel.prepare` (before the
request queues, so a bad one is a 400 naming the tensor and never fails a batch); the batch's strings
are decoded by CompressAI's range coder (`decompress`, C++ called from Python on the CPU: there is no
ONNX operator for it) with the tables shipped in the artifacts, never rebuilt here; the decoded latent
goes through decoder + tail in PyTorch or in onnxruntime (`server.onnx` of `deploy`, whose input is the
float32 latent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hnd_lightning.models.artifacts import SplitArtifacts
from hnd_lightning.runtime.common.bitstream import BITSTREAM_INPUT, frames_array
from hnd_lightning.runtime.common.parts import OnnxRunner, TorchRunner
from hnd_lightning.runtime.common.protocol import TensorSpec

LATENT_INPUT = "latent"


class CodedServerRunner:
    """Checked payload strings (N) -> logits (N, classes): decompress on the CPU, then decoder + tail."""

    def __init__(self, split: SplitArtifacts, decoder_and_tail: TorchRunner | OnnxRunner) -> None:
        self.head = split.head
        self.head.entropy_bottleneck.cpu()  # the tables stay where the range coder runs
        self.latent_shape = list(split.metadata["bottleneck_tensor"]["shape"])
        self.decoder_and_tail = decoder_and_tail
        self.description = f"CompressAI decompress (Python, CPU), then {decoder_and_tail.description}"

    @torch.inference_mode()
    def __call__(self, strings: list[bytes]) -> np.ndarray:
        latent = self.head.decompress(strings, self.latent_shape[1:])
        return self.decoder_and_tail(latent.numpy())

    @torch.inference_mode()
    def example_frames(self) -> np.ndarray:
        """The `bitstream` tensor of one all-zero latent, coded and framed (the server's warm-up input)."""
        return frames_array(self.head.compress(torch.zeros((1, *self.latent_shape))), self.latent_shape)


def coded_runner(
    split: SplitArtifacts,
    server_onnx: str | Path | None = None,
    device: str = "cpu",
    bf16_autocast: bool = False,
    threads: int | None = None,
) -> CodedServerRunner:
    """The runner of an entropy-coded split; decoder + tail from `server_onnx` (onnxruntime) when given."""
    if server_onnx is not None:
        decoder_and_tail: Any = OnnxRunner(server_onnx, [LATENT_INPUT], device, threads)
    else:
        decoder_and_tail = TorchRunner(nn.Sequential(split.head.decoder, split.tail), device, bf16_autocast)
    return CodedServerRunner(split, decoder_and_tail)


def coded_specs(metadata: dict[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an entropy-coded split's server model."""
    return [TensorSpec(BITSTREAM_INPUT, "BYTES", (-1,))], [TensorSpec("logits", "FP32", (-1, metadata["num_classes"]))]
