"""The device part in 8 bits: `device_int8.onnx`, `device.onnx` quantized by onnxruntime's static
quantization, calibrated on training images, and its accuracy beside float32's.

`quantize_device_part` runs `onnxruntime.quantization.quantize_static` (QDQ format, int8 weights per
channel, uint8 activations, MinMax calibration) over `device.onnx`. Only the encoder's convolutions
and matrix products are quantized: the 8-bit link at the end (min / max, scale, round, cast to uint8)
stays float, so the payload keeps its format and the server part is unchanged. Calibration reads the
images with the device's own preprocessing (`camera_view`, `model_input`). `compare_device_parts` runs
both device files into `server.onnx` on a labelled split and reports top-1 of each, how often their
answers agree, the largest bottleneck code difference and each file's device time (medians, in turns).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hnd_lightning.runtime.common.images import camera_view, list_images, model_input

INT8_DEVICE_FILE = "device_int8.onnx"
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


def _arrays(folder: str | Path, metadata: dict[str, Any], num_images: int | None) -> list[tuple[np.ndarray, Any]]:
    """(normalized (1, 3, H, W) float32, label) of up to `num_images` images of `folder`, spread over it."""
    out = []
    for item in list_images(folder, num_images, metadata.get("classes")):
        with Image.open(item.path) as image:
            out.append((model_input(camera_view(image, metadata), metadata)[None], item.label))
    return out


def _calibration_reader(arrays: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds the device part's `image` input one calibration image at a time."""

        def __init__(self) -> None:
            self._batches = iter(arrays)

        def get_next(self) -> dict[str, np.ndarray] | None:
            array = next(self._batches, None)
            return None if array is None else {"image": array}

    return ImageCalibrationReader()


def quantize_device_part(
    output_dir: str | Path, metadata: dict[str, Any], calibration_images: str | Path, num_images: int = 64
) -> dict[str, Any]:
    """Write `device_int8.onnx` beside `device.onnx` in `output_dir`; return how it was made."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output_dir = Path(output_dir)
    arrays = [array for array, _ in _arrays(calibration_images, metadata, num_images)]
    with tempfile.TemporaryDirectory() as scratch:
        # onnxruntime's recommended first step: shape inference and graph optimization (batch norms folded)
        prepared = Path(scratch) / "device_prepared.onnx"
        quant_pre_process(str(output_dir / "device.onnx"), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(output_dir / INT8_DEVICE_FILE),
            _calibration_reader(arrays),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return {
        "file": INT8_DEVICE_FILE,
        "method": "onnxruntime.quantization.quant_pre_process, then quantize_static: QDQ, int8 weights per channel, "
        f"uint8 activations, MinMax calibration; quantized ops {QUANTIZED_OPS} (the 8-bit link at the end stays float)",
        "calibration": {"images": len(arrays), "folder": str(Path(calibration_images).resolve())},
        "bytes": (output_dir / INT8_DEVICE_FILE).stat().st_size,
        "float32_bytes": (output_dir / "device.onnx").stat().st_size,
    }


def compare_device_parts(
    output_dir: str | Path, metadata: dict[str, Any], eval_images: str | Path, num_images: int | None = None
) -> dict[str, Any]:
    """Top-1 of device.onnx and device_int8.onnx, each into server.onnx, on the labelled split `eval_images`
    (one image at a time, onnxruntime on one CPU thread), their agreement and each device file's ms."""
    import onnxruntime

    output_dir = Path(output_dir)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1

    def session(name: str) -> onnxruntime.InferenceSession:
        return onnxruntime.InferenceSession(str(output_dir / name), options, providers=["CPUExecutionProvider"])

    devices = {"float32": session("device.onnx"), "int8": session(INT8_DEVICE_FILE)}
    server = session("server.onnx")
    names = [tensor.name for tensor in server.get_inputs()]
    images = _arrays(eval_images, metadata, num_images)
    predictions = {kind: [] for kind in devices}
    device_ms = {kind: [] for kind in devices}
    code_difference = 0
    for index, (array, _) in enumerate(images):
        payloads = {}
        for kind in list(devices)[:: 1 if index % 2 else -1]:  # in turns, alternating which runs first
            started = time.perf_counter()
            payloads[kind] = devices[kind].run(None, {"image": array})
            device_ms[kind].append(1000 * (time.perf_counter() - started))
            logits = server.run(None, dict(zip(names, payloads[kind])))[0]
            predictions[kind].append(int(logits[0].argmax()))
        codes = payloads["int8"][0].astype(np.int32) - payloads["float32"][0].astype(np.int32)
        code_difference = max(code_difference, int(np.abs(codes).max()))
    labels = [label for _, label in images]
    labelled = [index for index, label in enumerate(labels) if label is not None]

    def top1(kind: str) -> float | None:
        return sum(predictions[kind][i] == labels[i] for i in labelled) / len(labelled) if labelled else None

    return {
        "images": len(images),
        "folder": str(Path(eval_images).resolve()),
        "top1": {kind: top1(kind) for kind in devices},
        "same_prediction": sum(a == b for a, b in zip(predictions["float32"], predictions["int8"])) / len(images),
        "max_bottleneck_code_difference": code_difference,
        "device_ms_p50": {kind: statistics.median(values) for kind, values in device_ms.items()},
        "timing": f"onnxruntime {onnxruntime.__version__}, 1 thread, batch 1, medians over the images, in turns",
    }


def check_int8_settings(settings: Any) -> None:
    """Refuse `int8.enabled=true` without calibration images, before anything is exported."""
    if settings is not None and settings.enabled and not settings.get("calibration_images"):
        raise ValueError(
            "int8.enabled=true calibrates on training images: pass int8.calibration_images=<folder> (an ImageFolder "
            "split such as <data root>/train, or a folder of images)."
        )


def build_int8_device_part(output_dir: str | Path, metadata: dict[str, Any], settings: Any) -> dict[str, Any]:
    """`deploy`'s `int8` settings applied: quantize (and, with `eval_images`, compare); the deploy.json entry."""
    check_int8_settings(settings)
    entry = quantize_device_part(output_dir, metadata, settings.calibration_images, settings.num_calibration_images)
    if settings.get("eval_images"):
        entry["comparison"] = compare_device_parts(output_dir, metadata, settings.eval_images, settings.num_eval_images)
    return entry


def format_int8(entry: dict[str, Any]) -> str:
    """The int8 device part in two or three lines for the terminal."""
    lines = [
        f"  {entry['file']:<16} {entry['bytes'] / 1e6:7.2f} MB  (device.onnx {entry['float32_bytes'] / 1e6:.2f} MB), "
        f"calibrated on {entry['calibration']['images']} images of {entry['calibration']['folder']}"
    ]
    comparison = entry.get("comparison")
    if comparison:
        top1 = {kind: "-" if value is None else f"{100 * value:.2f} %" for kind, value in comparison["top1"].items()}
        ms = comparison["device_ms_p50"]
        lines.append(
            f"  on {comparison['images']} images of {comparison['folder']}: top-1 float32 {top1['float32']}, "
            f"int8 {top1['int8']} (same answer {100 * comparison['same_prediction']:.1f} %); device part "
            f"{ms['float32']:.2f} ms float32, {ms['int8']:.2f} ms int8"
        )
    return "\n".join(lines)
