"""The device part of an entropy-coded split: encoder, then the coder's rounding and range coding, then framing.

What runs where on the device: the encoder runs in PyTorch or in onnxruntime (`device.onnx` of
`deploy`, whose output is the float32 latent y); rounding, round(y - median) + median, and the range
coder (CompressAI's `compress`, C++ called from Python: no ONNX operator exists for it) run in Python
with the tables shipped in the artifacts; each image's string is framed (`runtime.common.bitstream`)
and sent as one element of the `bitstream` BYTES tensor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hnd_lightning.models.artifacts import SplitArtifacts
from hnd_lightning.runtime.common.bitstream import BITSTREAM_INPUT, frames_array
from hnd_lightning.runtime.common.parts import OnnxRunner, TorchRunner

DEVICE_ONNX = "device.onnx"


class CodedDevicePart:
    """(N, 3, H, W) normalized images -> {"bitstream": object array (N,) of framed strings}."""

    def __init__(
        self, split: SplitArtifacts, runtime: str = "torch", device: str = "cpu", deploy_dir: str | Path | None = None
    ) -> None:
        self.head = split.head.eval()
        self.latent_shape = list(split.metadata["bottleneck_tensor"]["shape"])
        if runtime == "onnxruntime":
            if deploy_dir is None:
                raise ValueError("runtime=onnxruntime runs device.onnx: pass deploy_dir=<a deploy output folder>.")
            self.encoder = OnnxRunner(Path(deploy_dir) / DEVICE_ONNX, ["image"], device)
        else:
            self.encoder = TorchRunner(split.head.encoder, device)
        self.head.entropy_bottleneck.cpu()  # the coder and its tables run on the CPU

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        latent = torch.from_numpy(np.ascontiguousarray(self.encoder(images)))
        return {BITSTREAM_INPUT: frames_array(self.head.compress(latent), self.latent_shape)}
