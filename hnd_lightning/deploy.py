"""Export a finished run as two ONNX files, one for the device and one for the server, and check them.

    python -m hnd_lightning.deploy artifacts=outputs/runs/<date>/<time>/artifacts

Writes into the run directory (`outputs/deploy/<date>/<time>/` by default):

    device.onnx   normalized image (N, 3, H, W) float32 -> bottleneck (N, B, h, w) uint8, scale (N,) float32,
                  zero_point (N,) uint8   (with `quantized=false`: bottleneck float32 only)
    server.onnx   the device's outputs -> logits (N, num_classes) float32
    deploy.json   inputs and outputs of both files, preprocessing, payload bytes, class names and
                  the onnxruntime check against the PyTorch modules
    model_repository/           the server part for a Triton with the ONNX Runtime backend (`triton.*`)
    triton_python_repository/   the same for Triton's Python backend (the Triton pip installs)
    kserve/  mlserver/          a KServe ModelServer and an MLServer runtime of the server part
                                (`hosted.*`; docs/howto/serving.md says how to start each)
    device_int8.onnx  with int8.enabled=true: device.onnx quantized by onnxruntime's static quantization,
                  calibrated on int8.calibration_images; deploy.json's `int8` holds top-1 of both device
                  files on int8.eval_images and their device ms

An entropy-coded split (`method=entropic_student`) exports device.onnx = encoder (image -> float32
latent) and server.onnx = decoder + tail (latent -> logits); the range coder runs in Python on both
sides between them (deploy.json's `what_runs_where`), so no Triton repository is written for it.

Both files need only onnxruntime (and numpy) to run. They are exported with the TorchScript-based
exporter (`dynamo=False`), which needs no `onnxscript`; the batch dimension is dynamic.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from hnd_lightning.files import write_json
from hnd_lightning.models.artifacts import SplitArtifacts, load_split_artifacts
from hnd_lightning.runtime.export.coded_onnx import export_coded_onnx, verify_coded_onnx
from hnd_lightning.runtime.export.hosted import (
    KSERVE_DIR,
    MLSERVER_DIR,
    TRITON_PYTHON_REPOSITORY,
    write_kserve_server,
    write_mlserver_runtime,
    write_triton_python_repository,
)
from hnd_lightning.runtime.export.int8 import build_int8_device_part, check_int8_settings, format_int8
from hnd_lightning.runtime.export.onnx_export import (
    DEPLOY_JSON,
    SERVER_FILE,
    VERIFY_TOLERANCE,
    export_onnx,
    format_description,
    verify_onnx,
)
from hnd_lightning.runtime.export.triton_repository import MODEL_REPOSITORY, write_model_repository

log = logging.getLogger(__name__)


def write_hosted(cfg: DictConfig, output_dir: Path, server: dict[str, Any]) -> dict[str, str]:
    """The server part for Triton's Python backend, KServe and MLServer, as `cfg.hosted` asks; their folders."""
    hosted, triton = cfg.get("hosted"), cfg.get("triton")
    if hosted is None or not (hosted.triton_python or hosted.kserve or hosted.mlserver):
        return {}
    if not cfg.quantized:
        log.warning("hosted.*: the adapters serve the 8-bit server part; quantized=false writes none of them")
        return {}
    onnx, threads, written = output_dir / SERVER_FILE, hosted.intra_op_threads, {}
    if hosted.triton_python:
        batching = (triton.max_batch_size, triton.max_queue_delay_ms, triton.max_queue) if triton else ()
        written["triton_python"] = write_triton_python_repository(
            output_dir / TRITON_PYTHON_REPOSITORY, onnx, server, *batching, intra_op_threads=threads
        )
    if hosted.kserve:
        written["kserve"] = write_kserve_server(output_dir / KSERVE_DIR, onnx, threads)
    if hosted.mlserver:
        written["mlserver"] = write_mlserver_runtime(output_dir / MLSERVER_DIR, onnx, server, threads)
    return {name: str(path) for name, path in written.items()}


def deploy(cfg: DictConfig) -> dict[str, Any]:
    """Export, check and describe the artifacts at `cfg.artifacts`; return the `deploy.json` contents."""
    check_int8_settings(cfg.get("int8"))
    artifacts = load_split_artifacts(cfg.artifacts)
    output_dir = Path(cfg.paths.output_dir)
    if artifacts.entropy_coded:  # an Entropic Student: encoder and decoder + tail, the range coder between
        return deploy_coded(cfg, artifacts, output_dir)
    description = export_onnx(artifacts, output_dir, cfg.quantized, cfg.opset)
    description["artifacts"] = str(Path(cfg.artifacts).resolve())
    if cfg.verify.enabled:
        description["verification"] = verify_onnx(
            artifacts,
            output_dir,
            cfg.quantized,
            cfg.verify.batch_size,
            cfg.verify.seed,
            cfg.verify.get("tolerance", VERIFY_TOLERANCE),
        )
    triton = cfg.get("triton")
    if triton is not None and triton.enabled:  # the server part for Triton Inference Server / KServe
        repository = write_model_repository(
            output_dir / MODEL_REPOSITORY,
            output_dir / SERVER_FILE,
            description["server"],
            triton.max_batch_size,
            triton.max_queue_delay_ms,
            triton.max_queue,
        )
        description["model_repository"] = str(repository)
    hosted = write_hosted(cfg, output_dir, description["server"])
    if hosted:
        description["hosted"] = hosted
    int8 = cfg.get("int8")
    if int8 is not None and int8.enabled:  # device_int8.onnx: the device part in 8 bits, beside float32
        description["int8"] = build_int8_device_part(output_dir, artifacts.metadata, int8)
    write_json(output_dir / DEPLOY_JSON, description)
    print(format_description(description, output_dir))
    if "int8" in description:
        print(format_int8(description["int8"]))
    return description


def deploy_coded(cfg: DictConfig, artifacts: SplitArtifacts, output_dir: Path) -> dict[str, Any]:
    """device.onnx (encoder) and server.onnx (decoder + tail) of an entropy-coded split, checked; no Triton
    repository: Triton would need a Python backend around the range coder (`runtime.export.coded_onnx`)."""
    description = export_coded_onnx(artifacts, output_dir, cfg.opset)
    description["artifacts"] = str(Path(cfg.artifacts).resolve())
    if cfg.verify.enabled:
        tolerance = cfg.verify.get("tolerance", VERIFY_TOLERANCE)
        description["verification"] = verify_coded_onnx(
            artifacts, output_dir, cfg.verify.batch_size, cfg.verify.seed, tolerance
        )
    description["model_repository"] = None
    write_json(output_dir / DEPLOY_JSON, description)
    print(format_description(description, output_dir))
    return description


@hydra.main(version_base="1.3", config_path="../conf", config_name="deploy")
def main(cfg: DictConfig) -> None:
    deploy(cfg)


if __name__ == "__main__":
    main()
