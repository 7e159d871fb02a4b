"""Benchmark every method on one batch: `python -m hnd_lightning.bench model=densenet169 batch=8`.

In one process, builds every subject below once, then `rounds` times gives each a turn of `warmup`
untimed and `repeats` timed steps on the same batch (interleaved, so a busy spell of a shared machine
slows every subject alike); medians and spread are over all timed steps. The subjects:

- `train`: one optimizer step of each method (original, naive, KD, HND) through the real Lightning
  path: its LightningModule (`training_step`, `configure_optimizers`) run by a Lightning `Trainer`;
  a step is the time between two consecutive `on_train_batch_end` hooks, so batch fetching, hooks,
  logging, backward and the optimizer step all count.
- `plain_pytorch`: the same HND step written as a plain PyTorch loop over the same models, optimizer
  and batches, with no framework; its ratio to the Lightning step is the framework's overhead.
- `infer`: the student at inference, part by part: `device` (encoder: image -> bottleneck tensor),
  `server` (decoder + tail: bottleneck tensor -> logits) and `student` (the whole split model).
- `data` (with `data_root=PATH`): images/s of JPEG decoding + training augmentation of the ImageFolder
  `PATH/train`, for each DataLoader worker count in `data_workers` (after `warmup` batches; images/s
  over the whole timed span, since workers deliver batches in bursts).

Peak memory (`peak_memory_mb`, the largest over a subject's turns): the bytes of the subject's own
parameters and buffers plus the peak growth during its turn (optimizer state, gradients, activations)
over the memory in use right before it. Growth is measured on CUDA by `torch.cuda.max_memory_allocated`
and on the CPU by this process's peak resident set size (VmHWM, reset before each turn through
/proc/self/clear_refs, after handing freed heap back with malloc_trim); None where neither works.

Speed ratios (HND over KD, Lightning over the plain loop, ...) are medians over rounds of each
round's ratio. Prints the settings and a table; `output=PATH` also writes JSON: {"settings": {...}, "results":
[{"method", "phase", "part", "images_per_s", "peak_memory_mb", ...}], "ratios": {...}}.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import logging
import os
import platform
import re
import statistics
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from hnd_lightning.methods import SplitComputingMethod
from hnd_lightning.models import SplitModel, build_student, build_teacher
from hnd_lightning.runs.training import build_method

log = logging.getLogger(__name__)

METHOD_NAMES = ("original", "naive", "kd", "hnd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LIGHTNING_PRECISION = {"float32": "32-true", "bfloat16": "bf16-mixed"}
INFER_PARTS = ("device", "server", "student")


# --------------------------------------------------------------------------------------- settings
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"Unknown device {name!r}. Allowed: auto, cpu, cuda.")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is visible; use device=cpu.")
    return torch.device(name)


def _cpu_name() -> str:
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        return match.group(1).strip() if match else platform.processor()
    except OSError:
        return platform.processor()


def collect_settings(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """What the numbers depend on: hardware, threads, dtype, batch, input size, memory format, versions."""
    return {
        "architecture": cfg.model.architecture,
        "bottleneck_channels": cfg.model.bottleneck_channels,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "dtype": cfg.dtype,
        "autocast": cfg.dtype != "float32",
        "batch": cfg.batch,
        "input_size": cfg.model.input_size,
        "num_classes": cfg.model.num_classes,
        "memory_format": "channels_last" if cfg.channels_last else "contiguous",
        "rounds": cfg.rounds,
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
        "memory_measured": bool(cfg.memory),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {
            "torch": torch.__version__,
            "lightning": pl.__version__,
            "python": platform.python_version(),
        },
    }


# --------------------------------------------------------------------------------------- memory
def _tensor_bytes(module: nn.Module) -> int:
    storages = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _proc_status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_cpu_peak() -> bool:
    """Return freed heap to the OS and reset this process's peak RSS; False where Linux does not allow it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


class PeakMemory:
    """Peak memory of the code run between `start()` and `stop()`, for the models in `modules`."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.device = device
        self.enabled = enabled
        self.peak_mb: float | None = None

    def start(self, modules: list[nn.Module]) -> None:
        if not self.enabled:
            return
        self._model_bytes = sum(_tensor_bytes(module) for module in modules)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.enabled = _reset_cpu_peak()
            self._baseline_bytes = (_proc_status_kib("VmRSS") or 0) * 1024

    def stop(self) -> float | None:
        if not self.enabled:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            peak_bytes = (_proc_status_kib("VmHWM") or 0) * 1024
        self.peak_mb = (self._model_bytes + max(peak_bytes - self._baseline_bytes, 0)) / 2**20
        return self.peak_mb


# --------------------------------------------------------------------------------------- timing
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(
    method: str, phase: str, part: str | None, batch: int, rounds: list[list[float]], peak_mb: float | None
) -> dict[str, Any]:
    """One result record: median images/s over all timed steps (seconds, one list per round), their
    spread, the median step of each round and the peak memory."""
    seconds = [s for round_seconds in rounds for s in round_seconds]
    median = statistics.median(seconds)
    return {
        "method": method,
        "phase": phase,
        "part": part,
        "images_per_s": batch / median,
        "images_per_s_min": batch / max(seconds),
        "images_per_s_max": batch / min(seconds),
        "step_ms_median": median * 1e3,
        # relative spread of the timed steps: (slowest - fastest) / median
        "spread": (max(seconds) - min(seconds)) / median,
        "step_ms": [s * 1e3 for s in seconds],
        "round_median_ms": [statistics.median(r) * 1e3 for r in rounds],
        "peak_memory_mb": peak_mb,
    }


class RepeatedBatch(Dataset):
    """The same (images, labels) batch `length` times, served by a DataLoader with `batch_size=None`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, length: int) -> None:
        self.images, self.labels, self.length = images, labels, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels


class StepTimer(pl.Callback):
    """Timestamps every `on_train_batch_end`; consecutive differences are whole Trainer steps."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _synchronize(self.device)
        self.ends.append(time.perf_counter())


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    # The Trainer's banners ("GPU available", "model summary") would drown the table.
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def make_batch(cfg: DictConfig, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded (N, 3, S, S) float32 image batch and (N,) labels, on `device`, in the chosen memory format."""
    generator = torch.Generator().manual_seed(seed)
    size = cfg.model.input_size
    images = torch.randn(cfg.batch, 3, size, size, generator=generator)
    labels = torch.randint(0, cfg.model.num_classes, (cfg.batch,), generator=generator)
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images.to(device), labels.to(device)


def _loader(images: torch.Tensor, labels: torch.Tensor, steps: int) -> DataLoader:
    return DataLoader(RepeatedBatch(images, labels, steps), batch_size=None, shuffle=False, num_workers=0)


def _prepare(module: nn.Module, cfg: DictConfig, device: torch.device) -> nn.Module:
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if cfg.channels_last else module


def _timed(ends: list[float], warmup: int) -> list[float]:
    # The first `warmup` steps are untimed; each timed step runs from the previous step's end to its own.
    return [ends[k] - ends[k - 1] for k in range(warmup, len(ends))]


def time_lightning_step(
    method: SplitComputingMethod, cfg: DictConfig, device: torch.device, batch: tuple[torch.Tensor, torch.Tensor]
) -> list[float]:
    """Seconds per optimizer step of `method` run by a Lightning Trainer, for the `repeats` timed steps."""
    timer = StepTimer(device)
    with _quiet_lightning(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(no `val_dataloader`|LeafSpec|does not have many workers).*")
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            precision=LIGHTNING_PRECISION[cfg.dtype],
            max_epochs=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        trainer.fit(method, train_dataloaders=_loader(*batch, cfg.warmup + cfg.repeats))
    return _timed(timer.ends, cfg.warmup)


def plain_hnd_step(
    teacher_head: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, autocast: Callable[[], Any]
) -> Callable[[torch.Tensor], None]:
    """The HND step with no framework: frozen teacher head, MSE (sum) of the student head, Adam step."""

    def step(images: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            with torch.no_grad():
                target = teacher_head(images)
            loss = F.mse_loss(head(images), target, reduction="sum")
        loss.backward()
        optimizer.step()

    return step


def time_loop(step: Callable[[torch.Tensor], Any], cfg: DictConfig, device: torch.device, batch) -> list[float]:
    """Seconds of each iteration of `for images, labels in loader: step(images)` over the same batch."""
    ends = []
    for images, _ in _loader(*batch, cfg.warmup + cfg.repeats):
        step(images.to(device, non_blocking=True))
        _synchronize(device)
        ends.append(time.perf_counter())
    return _timed(ends, cfg.warmup)


def _autocast(cfg: DictConfig, device: torch.device) -> Callable[[], Any]:
    if cfg.dtype == "float32":
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=DTYPES[cfg.dtype])


def _method_cfg(cfg: DictConfig, name: str) -> DictConfig:
    if name not in cfg.methods:
        raise ValueError(f"Unknown method {name!r} in method_names. Allowed: {', '.join(cfg.methods)}.")
    return OmegaConf.create({"model": OmegaConf.to_container(cfg.model, resolve=True), "method": cfg.methods[name]})


# --------------------------------------------------------------------------------------- subjects
@dataclass
class Subject:
    """One measured thing: `run()` times one turn of it; its records gather every round's steps."""

    method: str
    phase: str
    part: str | None
    modules: list[nn.Module]  # whose weights count toward its peak memory
    run: Callable[[], list[float]]
    rounds: list[list[float]] = field(default_factory=list)  # timed seconds, one list per round
    peak_mb: float | None = None


def _student_and_teacher_head(cfg: DictConfig, device: torch.device) -> tuple[SplitModel, nn.Module]:
    model_cfg = cfg.model
    teacher = build_teacher(model_cfg.architecture, model_cfg.num_classes, weights=model_cfg.teacher.weights,
                            checkpoint=model_cfg.teacher.checkpoint)
    student, teacher_head = build_student(teacher, model_cfg.architecture, model_cfg.bottleneck_channels, model_cfg.input_size)
    return _prepare(student, cfg, device), _prepare(teacher_head.requires_grad_(False).eval(), cfg, device)


def train_subject(cfg: DictConfig, name: str, device: torch.device, batch) -> Subject:
    """A method's optimizer step through its LightningModule and a Lightning Trainer."""
    method = _prepare(build_method(_method_cfg(cfg, name)), cfg, device)
    return Subject(name, "train", None, [method], lambda: time_lightning_step(method, cfg, device, batch))


def plain_hnd_subject(cfg: DictConfig, device: torch.device, batch) -> Subject:
    """The HND step as a plain PyTorch loop: the same models, optimizer config and batch, no framework."""
    student, teacher_head = _student_and_teacher_head(cfg, device)
    head = student.head.train()  # a plain HND loop needs only the two heads
    optimizer = instantiate(cfg.methods.hnd.optimizer)(head.parameters())
    step = plain_hnd_step(teacher_head, head, optimizer, _autocast(cfg, device))
    return Subject("hnd", "plain_pytorch", None, [teacher_head, head], lambda: time_loop(step, cfg, device, batch))


def inference_subjects(cfg: DictConfig, device: torch.device, batch) -> list[Subject]:
    """The student at inference (eval, no grad): `device` (encoder), `server` (decoder + tail), `student` (all)."""
    student, _ = _student_and_teacher_head(cfg, device)
    student.eval()
    images = batch[0]
    with torch.inference_mode():
        bottleneck = student.encoder(images)
    parts = {
        "device": (student.encoder, images),
        "server": (nn.Sequential(student.decoder, student.tail), bottleneck),
        "student": (student, images),
    }
    autocast = _autocast(cfg, device)
    subjects = []
    for part, (source, inputs) in parts.items():
        module = copy.deepcopy(source)  # its own weights: the memory a deployment of this part alone needs

        def step(_: torch.Tensor, module=module, inputs=inputs) -> None:
            with torch.inference_mode(), autocast():
                module(inputs)

        subjects.append(Subject("student", "infer", part, [module], lambda step=step: time_loop(step, cfg, device, batch)))
    return subjects


def bench_data_pipeline(cfg: DictConfig) -> list[dict[str, Any]]:
    """Images/s of decoding + training augmentation of a JPEG ImageFolder (`data_root/train`), per
    worker count in `data_workers`: the rate a run's loading can feed, to set against the train steps."""
    from torchvision import datasets

    from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD, train_transform

    folder = Path(cfg.data_root).expanduser() / "train"
    if not folder.is_dir():
        raise FileNotFoundError(f"data_root={cfg.data_root!r} has no train/ folder; pass an ImageFolder root or data_root=null.")
    transform = train_transform(cfg.model.input_size, cfg.model.resize_size, IMAGENET_MEAN, IMAGENET_STD)
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    records = []
    for workers in cfg.data_workers:
        loader = DataLoader(dataset, batch_size=cfg.batch, shuffle=True, num_workers=workers, drop_last=True)
        ends = []
        for _ in zip(range(cfg.warmup + cfg.data_batches), loader):
            ends.append(time.perf_counter())
        if len(ends) <= cfg.warmup:
            raise ValueError(
                f"{str(folder)!r} holds {len(dataset)} images: too few for warmup={cfg.warmup} plus one timed "
                f"batch of {cfg.batch}; lower data_batches or batch."
            )
        seconds = _timed(ends, cfg.warmup)
        record = summarize("pipeline", "data", f"{workers}_workers", cfg.batch, [seconds], None)
        # Workers deliver batches in bursts, so the rate is images over the whole timed span, not a median.
        record["images_per_s"] = cfg.batch * len(seconds) / sum(seconds)
        records.append(record)
    return records


def measure(subjects: list[Subject], cfg: DictConfig, device: torch.device) -> None:
    """Time every subject `rounds` times, interleaved, so a busy spell of a shared machine hits them alike."""
    for round_index in range(cfg.rounds):
        for subject in subjects:
            meter = PeakMemory(device, cfg.memory)
            meter.start(subject.modules)
            subject.rounds.append(subject.run())
            peak = meter.stop()
            if peak is not None:
                subject.peak_mb = max(peak, subject.peak_mb or 0.0)
            log.info("round %d %s %s %s: %.2f images/s", round_index + 1, subject.method, subject.phase,
                     subject.part or "", cfg.batch / statistics.median(subject.rounds[-1]))


def _paired_speedup(fast: dict[str, Any], slow: dict[str, Any]) -> float:
    # Median over rounds of the per-round ratio: both ran back to back, under the same machine load.
    return statistics.median(s / f for f, s in zip(fast["round_median_ms"], slow["round_median_ms"]))


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """HND's speed-up over the other methods, and the Lightning path's speed relative to the plain loop
    (images/s ratios, each the median over rounds of that round's ratio)."""
    train = {r["method"]: r for r in results if r["phase"] == "train"}
    plain = next((r for r in results if r["phase"] == "plain_pytorch"), None)
    out = {}
    if "hnd" in train:
        for other in ("kd", "naive", "original"):
            if other in train:
                out[f"hnd_over_{other}"] = _paired_speedup(train["hnd"], train[other])
        if plain:
            out["lightning_hnd_over_plain_pytorch"] = _paired_speedup(train["hnd"], plain)
    return out


def format_table(report: dict[str, Any]) -> str:
    settings = report["settings"]
    lines = [
        "Settings: " + ", ".join(
            f"{key}={settings[key]}" for key in (
                "architecture", "bottleneck_channels", "device", "device_name", "threads", "dtype", "batch",
                "input_size", "memory_format", "rounds", "warmup", "repeats",
            )
        ),
        f"{'method':<9} {'phase':<14} {'part':<8} {'images/s':>10} {'min..max':>17} {'ms/step':>9} {'spread':>7} {'peak MB':>9}",
    ]
    for r in report["results"]:
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        span = f"{r['images_per_s_min']:.1f}..{r['images_per_s_max']:.1f}"
        lines.append(
            f"{r['method']:<9} {r['phase']:<14} {r['part'] or '':<8} {r['images_per_s']:>10.2f} {span:>17} "
            f"{r['step_ms_median']:>9.1f} {r['spread']:>6.0%} {peak:>9}"
        )
    lines += [f"{key}: {value:.2f}x" for key, value in report["ratios"].items()]
    return "\n".join(lines)


def run_benchmark(cfg: DictConfig) -> dict[str, Any]:
    """Run every phase for the composed `bench.yaml` config; return {"settings", "results", "ratios"}."""
    if cfg.dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {cfg.dtype!r}. Allowed: {', '.join(DTYPES)}.")
    if cfg.warmup < 1 or cfg.repeats < 1 or cfg.rounds < 1 or cfg.batch < 1:
        raise ValueError(
            f"Need warmup, repeats, rounds and batch >= 1; got {cfg.warmup}, {cfg.repeats}, {cfg.rounds}, {cfg.batch}."
        )
    for name in cfg.method_names:
        _method_cfg(cfg, name)  # fail on a misspelt method before anything is timed
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    settings = collect_settings(cfg, device)
    log.info("Benchmark settings: %s", json.dumps(settings))
    batch = make_batch(cfg, device, cfg.seed)
    torch.manual_seed(cfg.seed)
    subjects = [train_subject(cfg, name, device, batch) for name in cfg.method_names]
    subjects += [plain_hnd_subject(cfg, device, batch), *inference_subjects(cfg, device, batch)]
    measure(subjects, cfg, device)
    results = [summarize(s.method, s.phase, s.part, cfg.batch, s.rounds, s.peak_mb) for s in subjects]
    if cfg.data_root:
        results += bench_data_pipeline(cfg)
    report = {"settings": settings, "results": results, "ratios": ratios(results)}
    if cfg.output:
        output = Path(cfg.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    report = run_benchmark(cfg)
    print(format_table(report), flush=True)
    if cfg.output:
        print(f"JSON written to {cfg.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
