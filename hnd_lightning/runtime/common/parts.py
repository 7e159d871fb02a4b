"""The parts a split runtime runs, loaded from a finished run: which models, which teacher, which runner.

find_split_artifacts(artifacts)  -> {"server": folder} or {"server_b3": folder/b3, ...} (fused run)
load_teacher(teacher, ...)       -> the whole teacher for full offloading / all-on-device, or None
TorchRunner / OnnxRunner         -> numpy arrays in, numpy logits out, on cpu or cuda
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hnd_lightning.models.artifacts import SPLIT_JSON
from hnd_lightning.models.teacher import build_teacher
from hnd_lightning.profiling import resolve_device

RUNTIMES = ("torch", "onnxruntime")
SERVER_MODEL = "server"
TEACHER_MODEL = "teacher"
RUN_CONFIG = Path(".hydra") / "config.yaml"


def find_split_artifacts(directory: str | Path) -> dict[str, Path]:
    """Model name -> artifact folder: `server` for a single run's `artifacts/`, `server_b<B>` per
    student folder (`b3/`, `b6/`, ...) of a fused run's `artifacts/`."""
    directory = Path(directory)
    if (directory / SPLIT_JSON).is_file():
        return {SERVER_MODEL: directory}
    students = (
        [folder for folder in directory.glob("b*") if (folder / SPLIT_JSON).is_file()] if directory.is_dir() else []
    )
    if not students:
        raise FileNotFoundError(
            f"No {SPLIT_JSON} in {str(directory)!r} nor in its b<B>/ folders: pass artifacts=<run>/artifacts of a "
            f"finished naive, kd or hnd run (a fused run's artifacts/ serves one model per size)."
        )
    students.sort(key=lambda folder: int(re.sub(r"\D", "", folder.name) or 0))
    return {f"{SERVER_MODEL}_{folder.name}": folder for folder in students}


def run_teacher(artifacts: str | Path) -> dict[str, Any] | None:
    """`model.teacher` (`checkpoint`, `weights`) of the run that wrote `artifacts`, from its Hydra
    `.hydra/config.yaml` (beside `artifacts/`, or one level up for a fused run's `artifacts/b<B>`)."""
    from omegaconf import OmegaConf

    artifacts = Path(artifacts).absolute()  # not resolve(): a linked artifacts/ belongs to the run it sits in
    for run_dir in (artifacts.parent, artifacts.parent.parent):
        if (run_dir / RUN_CONFIG).is_file():
            teacher = OmegaConf.select(OmegaConf.load(run_dir / RUN_CONFIG), "model.teacher")
            return None if teacher is None else OmegaConf.to_container(teacher)
    return None


def load_teacher(teacher: str | None, metadata: dict[str, Any], artifacts: str | Path) -> tuple[nn.Module | None, str]:
    """The whole teacher of a split, and where its weights come from.

    Args:
        teacher: None (no teacher), "run" (the teacher the run distilled from, per its Hydra config:
            its checkpoint, or its `weights` such as the bundled teacher), "random" (random weights:
            latency only, its predictions mean nothing) or a path to a `teacher.safetensors` / `.ckpt`
            of a `method=original` run.
        metadata: the artifacts' `split.json` (architecture, number of classes, input size).
        artifacts: the artifacts folder (to find the run's config for "run").

    Returns:
        (teacher in eval mode or None, a description of its weights).
    """
    if teacher in (None, "", "none", "null"):
        return None, "none"
    architecture, num_classes = metadata["architecture"], metadata["num_classes"]
    if teacher == "random":
        return build_teacher(architecture, num_classes, weights=None), "random weights (latency only)"
    if teacher != "run":
        return build_teacher(architecture, num_classes, checkpoint=teacher), f"checkpoint {teacher}"
    recorded = run_teacher(artifacts) or {}
    if recorded.get("checkpoint"):
        return build_teacher(
            architecture, num_classes, checkpoint=recorded["checkpoint"]
        ), f"checkpoint {recorded['checkpoint']}"
    if recorded.get("weights"):
        module = build_teacher(
            architecture, num_classes, weights=recorded["weights"], input_size=metadata["input"]["shape"][-1]
        )
        return module, f"{recorded['weights']} weights (the run's model.teacher.weights)"
    raise ValueError(
        f"teacher=run, but the run of {str(artifacts)!r} records no teacher checkpoint or weights in {RUN_CONFIG} "
        f"(found {recorded or 'no config'}); pass teacher=PATH (a teacher.safetensors) or teacher=random (latency only)."
    )


class TorchRunner:
    """Runs a module on numpy inputs: arrays in the module's argument order -> its output(s) as numpy
    (a tuple for a module that returns one; bf16 results come back as float32).

    On a GPU each runner queues its work on its own CUDA stream and waits for that stream only, so
    models served side by side on one GPU neither serialize on the default stream nor count each
    other's kernels in their compute time.
    """

    def __init__(self, module: nn.Module, device: str = "cpu", bf16_autocast: bool = False) -> None:
        self.device = resolve_device(device)
        self.module = module.eval().to(self.device)
        self.bf16_autocast = bf16_autocast
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        if self.stream is not None:  # the weights were copied on the default stream
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        self.description = f"torch {torch.__version__} on {self.device}" + (" (bf16 autocast)" if bf16_autocast else "")

    @torch.inference_mode()
    def __call__(self, *arrays: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True) for a in arrays]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast):
                output = self.module(*tensors)
            outputs = output if isinstance(output, tuple) else (output,)
            # on the GPU the copies back wait for this stream's kernels, not for other models'
            results = tuple(_to_numpy(tensor) for tensor in outputs)
        return results if isinstance(output, tuple) else results[0]


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).cpu().numpy()


def onnx_providers(device: torch.device, available: Sequence[str]) -> list[Any]:
    """onnxruntime's execution providers for `device`: the CUDA provider on GPU `device.index` (0 for plain
    "cuda"), or the CPU's. Raises on a GPU `device` without the CUDA provider in `available`."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(
            f"device={device} with runtime=onnxruntime needs onnxruntime's CUDAExecutionProvider; this onnxruntime "
            f"has {list(available)}. Install the GPU build matching your CUDA (pip install onnxruntime-gpu, in place "
            "of onnxruntime), or serve with runtime=torch, or device=cpu."
        )
    return [("CUDAExecutionProvider", {"device_id": device.index or 0})]


def check_session_providers(device: torch.device, providers: Sequence[str], version: str) -> None:
    """Refuse a session that onnxruntime quietly put on the CPU although `device` is a GPU (its CUDA
    provider failed to load: a CUDA or cuDNN library missing or of the wrong version)."""
    if device.type == "cuda" and (not providers or providers[0] != "CUDAExecutionProvider"):
        raise RuntimeError(
            f"device={device}: onnxruntime {version} could not start its CUDA provider and would run on {providers}. "
            "Its CUDA and cuDNN libraries must match the onnxruntime-gpu build (onnxruntime's log above names the "
            "missing library); or serve with runtime=torch, or device=cpu."
        )


class OnnxRunner:
    """Runs an ONNX file written by `deploy` with onnxruntime: named numpy inputs -> its first output."""

    def __init__(
        self, path: str | Path, input_names: Sequence[str], device: str = "cpu", threads: int | None = None
    ) -> None:
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError('runtime=onnxruntime needs onnxruntime: pip install -e ".[deploy]"') from error
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(path)!r} does not exist: run `python -m hnd_lightning.deploy artifacts=...` and pass deploy_dir=<its folder>."
            )
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # idle intra-op threads that spin take the cores the server's front end and other processes need:
        # with spinning, a thread per core halved a loaded 2-core machine's throughput (docs/results/serving.md)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = resolve_device(device)
        providers = onnx_providers(wanted, onnxruntime.get_available_providers())
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        check_session_providers(wanted, self.session.get_providers(), onnxruntime.__version__)
        names = [node.name for node in self.session.get_inputs()]
        if names != list(input_names):
            raise ValueError(
                f"{str(path)!r} takes inputs {names}, expected {list(input_names)}: is it the right deploy output?"
            )
        self.input_names = list(input_names)
        self.description = (
            f"onnxruntime {onnxruntime.__version__} ({', '.join(self.session.get_providers())}) on {path.name}"
        )

    def __call__(self, *arrays: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        outputs = self.session.run(None, dict(zip(self.input_names, arrays)))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
