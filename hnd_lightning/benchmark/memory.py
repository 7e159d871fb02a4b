"""Peak memory of one subject's turn: its own weights plus the peak growth while it runs.

On CUDA the growth is `torch.cuda.max_memory_allocated` over the memory allocated before the turn.
On the CPU it is this process's peak resident set size (VmHWM) over the resident set before the turn,
after handing freed heap back with malloc_trim and resetting VmHWM through /proc/self/clear_refs.
Where that file cannot be written (not Linux, or a container that forbids it) the peak cannot be
reset: the meter then reports the process's peak since it started (scope "process"), an upper bound
shared by every subject measured after the largest one. Each reading says its scope.
"""

from __future__ import annotations

import ctypes
import gc
import re
import sys
from pathlib import Path

import torch
from torch import nn

CLEAR_REFS = Path("/proc/self/clear_refs")
PROC_STATUS = Path("/proc/self/status")
SCOPES = {
    "turn": "peak during each turn (weights + growth over the memory in use before it)",
    "process": "peak of the whole process since it started (/proc/self/clear_refs not writable): an upper bound",
}


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers of `module`, each storage counted once."""
    storages = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"{field}:\s+(\d+) kB", PROC_STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def process_peak_bytes() -> int | None:
    """This process's peak resident set size: VmHWM, else getrusage's ru_maxrss; None where neither exists."""
    peak_kib = _status_kib("VmHWM")
    if peak_kib is not None:
        return peak_kib * 1024
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def reset_cpu_peak() -> bool:
    """Return freed heap to the OS and reset this process's peak RSS; False where that is not allowed."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """Peak memory in MB of the code run between `start(modules)` and `stop()`.

    After `stop()`, `scope` is "turn" (weights of `modules` + peak growth during the turn), "process"
    (the process's peak since it started; see the module docstring) or None (not measured).
    """

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.device = device
        self.enabled = enabled
        self.scope: str | None = None

    def start(self, modules: list[nn.Module]) -> None:
        self.scope = None
        if not self.enabled:
            return
        self._model_bytes = sum(tensor_bytes(module) for module in modules)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline_bytes = torch.cuda.memory_allocated(self.device)
            self.scope = "turn"
        elif reset_cpu_peak():
            self._baseline_bytes = (_status_kib("VmRSS") or 0) * 1024
            self.scope = "turn"
        else:
            self.scope = "process"

    def stop(self) -> float | None:
        if self.scope == "process":
            peak = process_peak_bytes()
            if peak is None:
                self.scope = None
                return None
            return peak / 2**20
        if self.scope != "turn":
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            peak_bytes = (_status_kib("VmHWM") or 0) * 1024
        return (self._model_bytes + max(peak_bytes - self._baseline_bytes, 0)) / 2**20
