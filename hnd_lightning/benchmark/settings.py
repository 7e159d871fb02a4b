"""The benchmark's options, checked, and the settings its numbers depend on."""

from __future__ import annotations

import platform
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from hnd_lightning.profiling import machine_description

METHOD_NAMES = ("original", "naive", "kd", "hnd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LIGHTNING_PRECISION = {"float32": "32-true", "bfloat16": "bf16-mixed"}


def check_options(cfg: DictConfig) -> None:
    """Fail on a bad dtype, count or method name before anything is built or timed."""
    if cfg.dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {cfg.dtype!r}. Allowed: {', '.join(DTYPES)}.")
    if cfg.warmup < 1 or cfg.repeats < 1 or cfg.rounds < 1 or cfg.batch < 1:
        raise ValueError(
            f"Need warmup, repeats, rounds and batch >= 1; got {cfg.warmup}, {cfg.repeats}, {cfg.rounds}, {cfg.batch}."
        )
    for name in cfg.method_names:
        method_config(cfg, name)


def method_config(cfg: DictConfig, name: str) -> DictConfig:
    """The {"model", "method"} config that `runs.training.build_method` takes for method `name`."""
    if name not in cfg.methods:
        raise ValueError(f"Unknown method {name!r} in method_names. Allowed: {', '.join(cfg.methods)}.")
    return OmegaConf.create({"model": OmegaConf.to_container(cfg.model, resolve=True), "method": cfg.methods[name]})


def autocast(cfg: DictConfig, device: torch.device) -> Callable[[], Any]:
    """A context factory: `torch.autocast` to `cfg.dtype`, or a no-op for float32."""
    if cfg.dtype == "float32":
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=DTYPES[cfg.dtype])


def collect_settings(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """What the numbers depend on: hardware, threads, dtype, batch, input size, memory format, versions."""
    machine = machine_description(device)
    return {
        "architecture": cfg.model.architecture,
        "bottleneck_channels": cfg.model.bottleneck_channels,
        "device": machine["device"],
        "device_name": machine["device_name"],
        "cpu_count": machine["cpu_count"],
        "threads": machine["torch_threads"],
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
        "load_average_at_start": machine["load_average"],
        "versions": {"torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version()},
    }
