"""What the benchmark measures, each built once: every method's Lightning step, the plain PyTorch HND
step, and the student's parts at inference."""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from hnd_lightning.benchmark.settings import autocast, method_config
from hnd_lightning.benchmark.steps import Batch, plain_hnd_step, time_lightning_step, time_loop
from hnd_lightning.models import SplitModel, build_student, build_teacher
from hnd_lightning.runs.training import build_method
from hnd_lightning.weak_device import WeakDevice


@dataclass
class Subject:
    """One measured thing: `run()` times one turn of it; `rounds` gathers every turn's timed steps."""

    method: str
    phase: str
    part: str | None
    modules: list[nn.Module]  # whose weights count toward its peak memory
    run: Callable[[], list[float]]
    rounds: list[list[float]] = field(default_factory=list)  # timed seconds, one list per round
    peak_mb: float | None = None
    memory_scope: str | None = None


def make_batch(cfg: DictConfig, device: torch.device, seed: int) -> Batch:
    """A seeded (N, 3, S, S) float32 image batch and (N,) labels, on `device`, in the chosen memory format."""
    generator = torch.Generator().manual_seed(seed)
    size = cfg.model.input_size
    images = torch.randn(cfg.batch, 3, size, size, generator=generator)
    labels = torch.randint(0, cfg.model.num_classes, (cfg.batch,), generator=generator)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images.to(device), labels.to(device)


def _prepare(module: nn.Module, cfg: DictConfig, device: torch.device) -> nn.Module:
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if cfg.channels_last else module


def _student_and_teacher_head(cfg: DictConfig, device: torch.device) -> tuple[SplitModel, nn.Module, nn.Module]:
    """The student, the frozen teacher head it distils from, and the whole teacher, on `device`."""
    model_cfg = cfg.model
    teacher = build_teacher(
        model_cfg.architecture,
        model_cfg.num_classes,
        weights=model_cfg.teacher.weights,
        checkpoint=model_cfg.teacher.checkpoint,
    )
    student, teacher_head = build_student(
        teacher, model_cfg.architecture, model_cfg.bottleneck_channels, model_cfg.input_size
    )
    frozen = teacher_head.requires_grad_(False).eval()
    return _prepare(student, cfg, device), _prepare(frozen, cfg, device), _prepare(teacher.eval(), cfg, device)


def train_subject(cfg: DictConfig, name: str, device: torch.device, batch: Batch) -> Subject:
    """A method's optimizer step through its LightningModule and a Lightning Trainer."""
    method = _prepare(build_method(method_config(cfg, name)), cfg, device)
    return Subject(name, "train", None, [method], lambda: time_lightning_step(method, cfg, device, batch))


def plain_hnd_subject(cfg: DictConfig, device: torch.device, batch: Batch) -> Subject:
    """The HND step as a plain PyTorch loop: the same models, optimizer config and batch, no framework."""
    student, teacher_head, _ = _student_and_teacher_head(cfg, device)
    head = student.head.train()  # a plain HND loop needs only the two heads
    optimizer = instantiate(cfg.methods.hnd.optimizer)(head.parameters())
    step = plain_hnd_step(teacher_head, head, optimizer, autocast(cfg, device))
    return Subject("hnd", "plain_pytorch", None, [teacher_head, head], lambda: time_loop(step, cfg, device, batch))


def inference_subjects(
    cfg: DictConfig, device: torch.device, batch: Batch, weak_device: WeakDevice | None = None
) -> list[Subject]:
    """The student at inference (eval, no grad): `device` (encoder), `server` (decoder + tail), `student`
    (all), and the whole `teacher` (all on one side). On a throttling `weak_device` they run on it
    (phase `infer`) and, with its reference, also unthrottled (phase `infer_unthrottled`), in turns."""
    student, _, teacher = _student_and_teacher_head(cfg, device)
    student.eval()
    images = batch[0]
    with torch.inference_mode():
        bottleneck = student.encoder(images)
    parts = {
        "device": (student.encoder, images),
        "server": (nn.Sequential(student.decoder, student.tail), bottleneck),
        "student": (student, images),
        "teacher": (teacher.requires_grad_(False), images),
    }
    weak = weak_device if weak_device is not None and weak_device.mechanism != "none" else None
    phases = {"infer": weak} if weak is None or not weak.reference else {"infer": weak, "infer_unthrottled": None}
    cast = autocast(cfg, device)
    subjects = []
    for phase, on in phases.items():
        for part, (source, inputs) in parts.items():
            module = copy.deepcopy(source)  # its own weights: the memory a deployment of this part alone needs
            run = module if on is None else on.wrap(module)
            throttled = nullcontext if on is None else on.throttled
            scale = 1.0 if on is None else on.time_scale

            def step(_: torch.Tensor, run=run, inputs=inputs, throttled=throttled) -> None:
                with torch.inference_mode(), cast(), throttled():
                    run(inputs)

            def timed(step=step, scale=scale) -> list[float]:
                return [seconds * scale for seconds in time_loop(step, cfg, device, batch)]

            subjects.append(Subject("student" if part != "teacher" else "teacher", phase, part, [module], timed))
    return subjects
