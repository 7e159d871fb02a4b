"""The deployable form of an entropy-coded split (an Entropic Student): two ONNX files and the coder between them.

The range coder is not an ONNX operator, so the files stop where it starts:

    device.onnx   normalized image (N, 3, H, W) float32 -> latent y (N, C, h, w) float32     (encoder)
    (device)      round(y - median) + median and CompressAI's compress() in Python, one framed string per
                  image (`runtime.common.bitstream`), sent as the OIP BYTES tensor `bitstream`
    (server)      frame checks, then CompressAI's decompress() in Python, with the tables of the artifacts
    server.onnx   latent (N, C, h, w) float32 -> logits (N, num_classes) float32              (decoder + tail)

Both sides need the artifacts' `head.safetensors` (its entropy model and tables) and CompressAI, besides
onnxruntime. `verify_coded_onnx` checks both files against PyTorch and the coded path end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hnd_lightning.models.artifacts import SplitArtifacts
from hnd_lightning.runtime.common.bitstream import BITSTREAM_INPUT, HEADER_BYTES
from hnd_lightning.runtime.export.onnx_export import (
    DEPLOY_EXTRA_HINT,
    DEVICE_FILE,
    SERVER_FILE,
    VERIFY_TOLERANCE,
    _export,
    _tensor_spec,
    check_verification,
)

LATENT = "latent"
WHAT_RUNS_WHERE = {
    "device": f"{DEVICE_FILE} (encoder), then in Python: round(y - median) + median, CompressAI compress(), framing",
    "server": f"in Python: frame checks, CompressAI decompress() with the artifacts' tables, then {SERVER_FILE} "
    "(decoder + tail)",
    "why": "the range coder is C++ called from Python (compressai.ans); ONNX has no operator for it",
}


@torch.no_grad()
def export_coded_onnx(artifacts: SplitArtifacts, output_dir: str | Path, opset: int = 17) -> dict[str, Any]:
    """Write `device.onnx` (encoder) and `server.onnx` (decoder + tail); return deploy.json's description."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metadata = artifacts.metadata
    encoder, server = artifacts.head.encoder.eval(), nn.Sequential(artifacts.head.decoder, artifacts.tail).eval()
    image = torch.zeros(1, *metadata["input"]["shape"])
    latent = encoder(image)
    _export(encoder, (image,), output_dir / DEVICE_FILE, ["image"], [LATENT], opset)
    logits = server(latent)
    _export(server, (latent,), output_dir / SERVER_FILE, [LATENT], ["logits"], opset)
    return {
        "architecture": metadata["architecture"],
        "method": metadata["method"],
        "bottleneck_channels": metadata["bottleneck_channels"],
        "num_classes": metadata["num_classes"],
        "classes": metadata.get("classes"),
        "input": metadata["input"],
        "quantized": False,
        "entropy_coded": True,
        "entropy_bottleneck": metadata["entropy_bottleneck"],
        "what_runs_where": WHAT_RUNS_WHERE,
        "sent": {"tensor": BITSTREAM_INPUT, "datatype": "BYTES", "frame_header_bytes": HEADER_BYTES},
        # coded sizes depend on the image: see the run's results.json (coded_bytes_mean / _p95)
        "payload_bytes_per_image": None,
        "device": {
            "file": DEVICE_FILE,
            "inputs": [_tensor_spec("image", image)],
            "outputs": [_tensor_spec(LATENT, latent)],
        },
        "server": {
            "file": SERVER_FILE,
            "inputs": [_tensor_spec(LATENT, latent)],
            "outputs": [_tensor_spec("logits", logits)],
        },
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=False)",
        "torch": torch.__version__,
    }


@torch.no_grad()
def verify_coded_onnx(
    artifacts: SplitArtifacts,
    output_dir: str | Path,
    batch_size: int = 2,
    seed: int = 0,
    tolerance: float = VERIFY_TOLERANCE,
) -> dict[str, Any]:
    """Run both files with onnxruntime on seeded images, the coder between them, against PyTorch.

    Returns `max_abs_logit_difference` (ONNX encoder -> compress -> decompress -> ONNX decoder + tail,
    against the PyTorch coded path), `server_max_abs_logit_difference` (ONNX decoder + tail on PyTorch's
    decoded latent), `max_abs_latent_difference` and `symbols_differing` (rounded latent values that
    land on another integer; a value on a rounding boundary may). Raises ValueError (`check_verification`).
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"Checking the ONNX files needs onnxruntime. {DEPLOY_EXTRA_HINT}") from error
    output_dir = Path(output_dir)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, *artifacts.metadata["input"]["shape"], generator=generator)
    model = artifacts.model()  # its coder tables are the artifacts', never rebuilt
    expected, _ = model.coded_logits(images)
    latent = model.encoder(images)

    def session(name: str) -> onnxruntime.InferenceSession:
        return onnxruntime.InferenceSession(str(output_dir / name), providers=["CPUExecutionProvider"])

    onnx_latent = torch.from_numpy(session(DEVICE_FILE).run([LATENT], {"image": images.numpy()})[0])
    decoded = model.head.decompress(model.head.compress(onnx_latent), onnx_latent.shape[-2:])
    server = session(SERVER_FILE)
    end_to_end = server.run(["logits"], {LATENT: decoded.numpy()})[0]
    reference_latent = model.head.round_latent(latent)
    server_only = server.run(["logits"], {LATENT: reference_latent.numpy()})[0]
    result = {
        "images": f"{batch_size} seeded random images (seed {seed})",
        "onnxruntime": onnxruntime.__version__,
        "max_abs_logit_difference": float((torch.from_numpy(end_to_end) - expected).abs().max()),
        "server_max_abs_logit_difference": float((torch.from_numpy(server_only) - expected).abs().max()),
        "max_abs_logit": float(expected.abs().max()),
        "max_abs_latent_difference": float((onnx_latent - latent).abs().max()),
        "symbols_differing": int((model.head.round_latent(onnx_latent) != reference_latent).sum()),
    }
    check_verification(result, output_dir, tolerance)
    return result
