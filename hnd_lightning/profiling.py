"""Measuring models: device resolution, synchronization, timing and operation counting.

One home for what `analyze`, `bench`, the split-inference server and its client all measure with.
"""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when visible, else CPU; "cpu" / "cuda" as named, "cuda" only when visible."""
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
