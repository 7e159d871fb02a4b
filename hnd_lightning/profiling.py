"""Measuring models: device resolution, synchronization, timing, the machine, and operation counting.

One home for what `analyze`, `bench`, the split-inference server and its client all measure with:

- `resolve_device(name)`, `synchronize(device)`: "auto" / "cpu" / "cuda[:N]" to a torch device; wait
  for its queued work so a wall-clock reading covers it.
- `median_latencies_ms(calls, warmup, repeats, device)`: median milliseconds of several calls timed
  in turn (interleaved), so a change in a shared machine's load hits all of them alike.
- `machine_description(device)`, `cpu_name()`: what a timing depends on (host, CPU or GPU name,
  threads, torch version, load average).
- `count_macs(module, *inputs)`: multiply-accumulates per image, from `torch.utils.flop_counter`.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when visible, else CPU; "cpu" / "cuda" as named, "cuda" only when visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICE_CHOICES and not str(name).startswith("cuda:"):
        raise ValueError(f"Unknown device {name!r}. Allowed: {', '.join(DEVICE_CHOICES)} (or cuda:N).")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} but no CUDA device is visible; use device=cpu or device=auto.")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------- timing
@torch.inference_mode()
def median_latencies_ms(
    calls: dict[str, tuple[Callable[..., Any], tuple[torch.Tensor, ...]]],
    warmup: int,
    repeats: int,
    device: torch.device,
    contexts: Mapping[str, Callable[[], AbstractContextManager]] | None = None,
) -> dict[str, float]:
    """Median wall time in milliseconds of each `module(*inputs)` in `calls`, after `warmup` runs each.

    The calls take turns within every repeat, so a change in the machine's load hits all of them alike.
    `contexts[name]()` (e.g. a weak device's `throttled`) is entered around each timed call of `name`,
    outside its timer.
    """
    contexts = contexts or {}
    # Not torch.utils.benchmark.Timer: its timeit(1) adds two untimed warm-up calls before every timed
    # one, which would triple the cost of taking turns call by call.
    for module, inputs in calls.values():
        for _ in range(warmup):
            module(*inputs)
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (module, inputs) in calls.items():
            with contexts.get(name, nullcontext)():
                started = time.perf_counter()
                module(*inputs)
                synchronize(device)
                times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


# --------------------------------------------------------------------------------------- machine
def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. "Intel(R) Xeon(R) ..."), else `platform.processor()`."""
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    except OSError:
        match = None
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def machine_description(device: torch.device) -> dict[str, Any]:
    """Where a measurement ran: host, OS, CPU, the device and its name (GPU or CPU), threads, torch,
    and the 1/5/15-minute load average at the call (None where the OS has none)."""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------------------------- operations
@torch.no_grad()
def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates per image of `module(*inputs)`: the call's count divided by the batch size
    (the first dimension of the first input).

    Counted by `torch.utils.flop_counter.FlopCounterMode`, one MAC per two of its FLOPs: convolutions
    (any dimension, transposed included) and matrix products (linear layers, matmul, bmm, attention).
    Element-wise work (batch norm, activations, pooling, bias additions, (de)quantization) is not
    counted. For Conv2d and Linear layers this is exactly the usual hand count
    (output elements x input channels per group x kernel area; output features x input features).
    """
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    batch_size = inputs[0].shape[0] if inputs and inputs[0].dim() > 0 else 1
    return counter.get_total_flops() // (2 * batch_size)
