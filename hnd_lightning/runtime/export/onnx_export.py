"""The deployable form of a split: `device.onnx` and `server.onnx`, exported and checked against PyTorch.

`export_onnx` writes both files from loaded artifacts and returns their description (the body of
`deploy.json`); `verify_onnx` runs them with onnxruntime on seeded images and `check_verification`
refuses files whose logits are not finite or differ from PyTorch's; `format_description` says what
was written. Both files need only onnxruntime (and numpy) to run. They are exported with the
TorchScript-based exporter (`dynamo=False`), which needs no `onnxscript`; the batch is dynamic.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hnd_lightning.models.artifacts import SplitArtifacts
from hnd_lightning.models.quantization import payload_bytes, split_parts

log = logging.getLogger(__name__)

DEVICE_FILE = "device.onnx"
SERVER_FILE = "server.onnx"
DEPLOY_JSON = "deploy.json"
# Largest |logit difference| between onnxruntime and PyTorch accepted, relative to max(1, max |logit|)
VERIFY_TOLERANCE = 1e-3
DEPLOY_EXTRA_HINT = 'Install the deployment extra: pip install -e ".[deploy]" (onnx, onnxruntime).'


def payload_names(quantized: bool) -> list[str]:
    """Names of the tensors sent from the device to the server, in order."""
    return ["bottleneck", "scale", "zero_point"] if quantized else ["bottleneck"]


def _export(
    module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str], opset: int
) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which would add onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
            opset_version=opset,
            dynamo=False,
        )


def _tensor_spec(name: str, tensor: torch.Tensor) -> dict[str, Any]:
    return {"name": name, "shape": ["batch", *tensor.shape[1:]], "dtype": str(tensor.dtype).removeprefix("torch.")}


@torch.no_grad()
def export_onnx(
    artifacts: SplitArtifacts, output_dir: str | Path, quantized: bool = True, opset: int = 17
) -> dict[str, Any]:
    """Write `device.onnx` and `server.onnx` of `artifacts` into `output_dir`.

    Returns the deployment description (also the body of `deploy.json`, without the verification).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metadata = artifacts.metadata
    device, server = split_parts(artifacts.model(), quantized)
    image = torch.zeros(1, *metadata["input"]["shape"])
    payload = device(image)
    payload = payload if isinstance(payload, tuple) else (payload,)
    names = payload_names(quantized)
    _export(device, (image,), output_dir / DEVICE_FILE, ["image"], names, opset)
    logits = server(*payload)
    _export(server, payload, output_dir / SERVER_FILE, names, ["logits"], opset)
    elements = payload[0][0].numel()
    return {
        "architecture": metadata["architecture"],
        "method": metadata["method"],
        "bottleneck_channels": metadata["bottleneck_channels"],
        "num_classes": metadata["num_classes"],
        "classes": metadata.get("classes"),
        # what the device does before device.onnx: resize, center crop, scale to [0, 1], normalize
        "input": metadata["input"],
        "quantized": quantized,
        "payload_bytes_per_image": payload_bytes(elements)["uint8" if quantized else "float32"],
        "device": {
            "file": DEVICE_FILE,
            "inputs": [_tensor_spec("image", image)],
            "outputs": [_tensor_spec(name, tensor) for name, tensor in zip(names, payload)],
        },
        "server": {
            "file": SERVER_FILE,
            "inputs": [_tensor_spec(name, tensor) for name, tensor in zip(names, payload)],
            "outputs": [_tensor_spec("logits", logits)],
        },
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=False)",
        "torch": torch.__version__,
    }


@torch.no_grad()
def verify_onnx(
    artifacts: SplitArtifacts,
    output_dir: str | Path,
    quantized: bool = True,
    batch_size: int = 2,
    seed: int = 0,
    tolerance: float = VERIFY_TOLERANCE,
) -> dict[str, Any]:
    """Run both ONNX files with onnxruntime on seeded random images and compare with PyTorch.

    Raises ValueError (`check_verification`) on non-finite logits or a difference over `tolerance`.

    Returns:
        `max_abs_logit_difference` (onnxruntime device -> server against the PyTorch parts, end to end),
        `server_max_abs_logit_difference` (onnxruntime server fed PyTorch's payload) and, when
        quantized, `max_bottleneck_code_difference` (uint8 codes; a value on a rounding boundary may
        land one code apart).
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"Checking the ONNX files needs onnxruntime. {DEPLOY_EXTRA_HINT}") from error
    output_dir = Path(output_dir)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, *artifacts.metadata["input"]["shape"], generator=generator)
    device, server = split_parts(artifacts.model(), quantized)
    payload = device(images)
    payload = payload if isinstance(payload, tuple) else (payload,)
    expected = server(*payload).numpy()
    names = payload_names(quantized)

    def session(name: str) -> onnxruntime.InferenceSession:
        return onnxruntime.InferenceSession(str(output_dir / name), providers=["CPUExecutionProvider"])

    onnx_payload = session(DEVICE_FILE).run(names, {"image": images.numpy()})
    server_session = session(SERVER_FILE)
    end_to_end = server_session.run(["logits"], dict(zip(names, onnx_payload)))[0]
    server_only = server_session.run(["logits"], {name: tensor.numpy() for name, tensor in zip(names, payload)})[0]
    result = {
        "images": f"{batch_size} seeded random images (seed {seed})",
        "onnxruntime": onnxruntime.__version__,
        "max_abs_logit_difference": float(abs(end_to_end - expected).max()),
        "server_max_abs_logit_difference": float(abs(server_only - expected).max()),
        "max_abs_logit": float(abs(expected).max()),
    }
    if quantized:
        codes = onnx_payload[0].astype("int32") - payload[0].numpy().astype("int32")
        result["max_bottleneck_code_difference"] = int(abs(codes).max())
    check_verification(result, output_dir, tolerance)
    return result


def check_verification(result: dict[str, Any], output_dir: Path, tolerance: float = VERIFY_TOLERANCE) -> None:
    """Raise ValueError when the logits are not finite or ONNX and PyTorch differ by more than
    `tolerance` x max(1, max |logit|) (e.g. artifacts exported from diverged, NaN weights)."""
    values = {
        key: result[key] for key in ("max_abs_logit", "max_abs_logit_difference", "server_max_abs_logit_difference")
    }
    if not all(math.isfinite(value) for value in values.values()):
        raise ValueError(
            f"The ONNX check of {output_dir} found non-finite logits ({values}): the artifacts' weights are not "
            "finite (a diverged run?). Deploy the artifacts of a run whose results.json says status ok."
        )
    limit = tolerance * max(1.0, values["max_abs_logit"])
    worst = max(values["max_abs_logit_difference"], values["server_max_abs_logit_difference"])
    if worst > limit:
        raise ValueError(
            f"The ONNX files in {output_dir} disagree with PyTorch: max |logit difference| {worst:.3g} exceeds "
            f"{limit:.3g} ({tolerance:g} x max(1, max |logit| {values['max_abs_logit']:.3g})); do not deploy them."
        )


def format_description(description: dict[str, Any], output_dir: Path) -> str:
    """What was written, the payload per image and the onnxruntime check, for the terminal."""
    lines = [f"Written to {output_dir}:"]
    for side in ("device", "server"):
        part = description[side]
        size = (output_dir / part["file"]).stat().st_size
        inputs = ", ".join(f"{t['name']} {t['dtype']}{t['shape']}" for t in part["inputs"])
        outputs = ", ".join(f"{t['name']} {t['dtype']}{t['shape']}" for t in part["outputs"])
        lines.append(f"  {part['file']:<12} {size / 1e6:7.2f} MB  {inputs} -> {outputs}")
    lines.append(f"  {DEPLOY_JSON}")
    if description.get("entropy_coded"):
        lines.append("Payload per image: one entropy-coded string; between the files, in Python:")
        lines += [f"  {side}: {what}" for side, what in description["what_runs_where"].items()]
    else:
        link = "8-bit" if description["quantized"] else "float32"
        lines.append(f"Payload per image ({link}): {description['payload_bytes_per_image']:,} bytes")
    check = description.get("verification")
    if check:
        lines.append(
            f"onnxruntime {check['onnxruntime']} vs PyTorch on {check['images']}: max |logit difference| "
            f"{check['max_abs_logit_difference']:.3g} end to end, {check['server_max_abs_logit_difference']:.3g} "
            f"server only (max |logit| {check['max_abs_logit']:.3g})"
        )
        if "max_bottleneck_code_difference" in check:
            lines.append(f"  max difference of the uint8 bottleneck codes: {check['max_bottleneck_code_difference']}")
    return "\n".join(lines)
