"""The analysis as data: compute per part, latency per part on this machine, one side's report, and
the device and server reports combined into end-to-end latency per link bandwidth."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig

from hnd_lightning.analysis.latency import crossovers, end_to_end
from hnd_lightning.analysis.parts import ROLE_PARTS, SplitUnderAnalysis
from hnd_lightning.methods.evaluation import count_parameters
from hnd_lightning.profiling import count_macs, machine_description, median_latencies_ms, resolve_device
from hnd_lightning.weak_device import WeakDevice

log = logging.getLogger(__name__)
WEAK_SUFFIX = "@weak_device"  # a device part timed on the weak device, beside its unthrottled time

# the model settings a device and a server report must share to be combined
SAME_MODEL_KEYS = ("architecture", "bottleneck_channels", "input_size", "num_classes")
NOTES = [
    "End-to-end latency is per image at batch 1: device time + payload bytes x 8 / bandwidth + rtt_ms + server time.",
    "All on device and all on server run the whole teacher; JPEG encoding and decoding time and the reply with the result are not included.",
    "MACs: multiply-accumulates of convolutions and matrix products (torch.utils.flop_counter FLOPs / 2); "
    "batch norm, activations, pooling and (de)quantization are not counted.",
]


def compute_report(split: SplitUnderAnalysis) -> dict[str, dict[str, int]]:
    """Parameters and MACs per image of every part: {part: {"parameters": int, "macs": int}}."""
    return {
        name: {"parameters": count_parameters(module), "macs": count_macs(module, *split.inputs(name, 1))}
        for name, module in split.parts.items()
    }


def measure_latency(
    timing: DictConfig,
    split: SplitUnderAnalysis,
    part_names: tuple[str, ...],
    weak_device: WeakDevice | None = None,
    weak_parts: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Time `part_names` at batch 1 and `timing.batch_size` on `timing.device`, the parts in turn; the
    `weak_parts` also on `weak_device` (throttled), in turn with the rest.

    Returns {"settings", "machine", "parts": {part: {"batch_1_ms", "batch_<n>_ms_per_image"}}} (medians),
    and "weak_device_parts" (the same for `weak_parts` on the weak device) when it throttles.
    """
    weak_parts = weak_parts if weak_device is not None and weak_device.mechanism != "none" else ()
    if timing.repeats < 1 or timing.warmup < 0 or timing.batch_size < 1:
        raise ValueError(
            f"timing.repeats must be >= 1, timing.warmup >= 0 and timing.batch_size >= 1; got "
            f"{timing.repeats}, {timing.warmup}, {timing.batch_size}."
        )
    if timing.get("threads"):
        torch.set_num_threads(timing.threads)
    device = resolve_device(timing.device)
    batch_sizes = sorted({1, timing.batch_size})
    names = (*part_names, *(name + WEAK_SUFFIX for name in weak_parts))
    results: dict[str, dict[str, float]] = {name: {} for name in names}
    for batch_size in batch_sizes:
        calls = {
            name: (split.parts[name], tuple(tensor.to(device) for tensor in split.inputs(name, batch_size)))
            for name in part_names
        }
        for module, _ in calls.values():
            module.to(device)
        for name in weak_parts:
            module = split.parts[name].to(device)
            calls[name + WEAK_SUFFIX] = (weak_device.wrap(module), calls[name][1])
        contexts = {name + WEAK_SUFFIX: weak_device.throttled for name in weak_parts}
        milliseconds = median_latencies_ms(calls, timing.warmup, timing.repeats, device, contexts)
        for name in weak_parts:
            milliseconds[name + WEAK_SUFFIX] *= weak_device.time_scale
        for name in split.parts:
            split.parts[name].to("cpu")  # `split.inputs` runs the parts on the CPU
        key = "batch_1_ms" if batch_size == 1 else f"batch_{batch_size}_ms_per_image"
        for name in names:
            results[name][key] = milliseconds[name] / batch_size
        log.info("batch %d: %s", batch_size, milliseconds)
    settings = {
        "warmup": timing.warmup,
        "repeats": timing.repeats,
        "batch_sizes": batch_sizes,
        "statistic": "median, parts timed in turn",
    }
    report = {
        "settings": settings,
        "machine": machine_description(device),
        "parts": {name: results[name] for name in part_names},
    }
    if weak_parts:
        report["weak_device_parts"] = {name: results[name + WEAK_SUFFIX] for name in weak_parts}
    return report


def role_report(
    role: str, split: SplitUnderAnalysis, static: dict[str, Any], latency: dict[str, Any]
) -> dict[str, Any]:
    """The timings JSON of one side: the model, what does not depend on the machine, and that side's latency
    (the device's on the weak device when one throttled it, with this machine's times and the record beside)."""
    side = {key: value for key, value in latency.items() if key not in ("weak_device_parts", "weak_device")}
    side["parts"] = {name: latency["parts"][name] for name in ROLE_PARTS[role]}
    if role == "device" and latency.get("weak_device_parts"):
        weak = latency["weak_device_parts"]
        side["weak_device"] = {
            **latency["weak_device"],
            "this_machine_parts": side["parts"],
            "measured_slowdown": {name: weak[name]["batch_1_ms"] / side["parts"][name]["batch_1_ms"] for name in weak},
        }
        side["parts"] = {name: weak[name] for name in ROLE_PARTS[role]}
    return {
        "role": role,
        "model": split.description,
        "compute": static["compute"],
        "payload": static["payload"],
        "latency": side,
    }


def combine(
    device: dict[str, Any], server: dict[str, Any], bandwidths_mbps: list[float], rtt_ms: float
) -> dict[str, Any]:
    """The analysis from a device and a server report of the same model, at each link bandwidth."""
    if device.get("role") != "device" or server.get("role") != "server":
        raise ValueError(
            f"device_timings must come from role=device and server_timings from role=server; got roles "
            f"{device.get('role')!r} and {server.get('role')!r}."
        )
    mismatched = {
        key: (device["model"].get(key), server["model"].get(key))
        for key in SAME_MODEL_KEYS
        if device["model"].get(key) != server["model"].get(key)
    }
    if mismatched:
        raise ValueError(
            f"The device and server timings describe different models (device, server): {mismatched}. "
            f"Rerun one side with the other's model settings."
        )
    return {
        "model": device["model"],
        "compute": device["compute"],
        "payload": device["payload"],
        "latency": {"device": device["latency"], "server": server["latency"]},
        "link": {"bandwidths_mbps": list(bandwidths_mbps), "rtt_ms": rtt_ms},
        "end_to_end": end_to_end(device, server, list(bandwidths_mbps), rtt_ms),
        "crossovers": crossovers(device, server, rtt_ms),
        "notes": NOTES,
    }
