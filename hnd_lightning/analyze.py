"""Split-computing analysis: compute, payload and latency of the HND split against the teacher's.

    python -m hnd_lightning.analyze model=densenet169 model.bottleneck_channels=12
    python -m hnd_lightning.analyze artifacts=outputs/runs/<date>/<time>/artifacts

For the HND student split (device: encoder + 8-bit quantization; server: dequantization + decoder +
tail) and the teacher split at the same module (device: teacher head; server: teacher tail) it
reports parameters and multiply-accumulates per part, the payload per image (float32, float16,
8-bit; against the raw uint8 image and its JPEG), the parts' latency on this machine, and the
end-to-end latency per link bandwidth of three strategies: all on the device (whole teacher), all on
the server (the JPEG is sent, whole teacher), and the HND split (8-bit bottleneck sent).

The device is usually not the machine that trains, so timing can run separately:

    python -m hnd_lightning.analyze role=device ...   # on the device: writes timings_device.json
    python -m hnd_lightning.analyze role=server ...   # on the server: writes timings_server.json
    python -m hnd_lightning.analyze role=combine device_timings=PATH server_timings=PATH

`role=both` (default) times everything here and combines at once. Outputs in the run directory
(`outputs/analyze/<date>/<time>/`): analysis.txt (the table), analysis.json, latency_vs_bandwidth.png.
Counts and timings do not depend on weight values, so without `artifacts` the teacher and student
have random weights and nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import logging
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.utils import instantiate
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn
from torchvision import transforms

from hnd_lightning.analysis.latency import STRATEGIES, end_to_end
from hnd_lightning.profiling import resolve_device
from hnd_lightning.methods.base import count_parameters
from hnd_lightning.models import build_student, build_teacher, split_teacher
from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.models.quantization import QUANTIZATION_HEADER_BYTES, payload_bytes, split_parts

log = logging.getLogger(__name__)

ROLES = ("both", "device", "server", "combine")
# Timed parts per side. The whole teacher is timed on both sides: it is the all-on-device and the
# all-on-server strategy.
ROLE_PARTS = {
    "device": ("student_device", "teacher_device", "teacher_full"),
    "server": ("student_server", "teacher_server", "teacher_full"),
}
PART_LABELS = {
    "student_device": "HND split, device: encoder + 8-bit quantization",
    "student_server": "HND split, server: dequantization + decoder + tail",
    "teacher_device": "teacher split, device: teacher head",
    "teacher_server": "teacher split, server: teacher tail",
    "teacher_full": "whole teacher",
}
ANALYSIS_JSON = "analysis.json"
ANALYSIS_TEXT = "analysis.txt"
PLOT_FILE = "latency_vs_bandwidth.png"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def timings_file(role: str) -> str:
    return f"timings_{role}.json"


# --------------------------------------------------------------------------------------- models
class SplitUnderAnalysis:
    """The HND student and the teacher, both cut at the architecture's split module.

    `parts` maps each part name of `PART_LABELS` to its module; `inputs(name, batch_size)` makes what
    that module takes (random images, or what the part before it sends).
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, architecture: str, input_size: int, resize_size: int, description: dict
    ) -> None:
        self.description = description
        self.input_size = input_size
        self.resize_size = resize_size
        self.student_device, self.student_server = split_parts(student.eval(), quantized=True)
        self.teacher = teacher.eval()
        self.teacher_head, self.teacher_tail = split_teacher(self.teacher, architecture)

    def images(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, 3, self.input_size, self.input_size)

    @property
    def parts(self) -> dict[str, nn.Module]:
        return {
            "student_device": self.student_device,
            "student_server": self.student_server,
            "teacher_device": self.teacher_head,
            "teacher_server": self.teacher_tail,
            "teacher_full": self.teacher,
        }

    @torch.no_grad()
    def inputs(self, part: str, batch_size: int) -> tuple[torch.Tensor, ...]:
        """Inputs of `part` for `batch_size` random images, on the CPU."""
        images = self.images(batch_size)
        if part == "student_server":
            return self.student_device(images)  # (bottleneck uint8, scale, zero_point)
        if part == "teacher_server":
            return (self.teacher_head(images),)
        return (images,)


def load_split_under_analysis(cfg: DictConfig) -> SplitUnderAnalysis:
    """From `cfg.artifacts` (a trained run) when set, else from `cfg.model` with random weights."""
    if cfg.get("artifacts"):
        artifacts = load_split_artifacts(cfg.artifacts)
        meta = artifacts.metadata
        architecture, input_size = meta["architecture"], meta["input"]["shape"][-1]
        resize_size = meta["input"].get("resize_size") or input_size
        teacher = build_teacher(architecture, meta["num_classes"], weights=None)
        description = {
            "source": f"artifacts {Path(cfg.artifacts).resolve()} (trained student; teacher of the same shape, random weights)",
            "method": meta["method"],
            "num_classes": meta["num_classes"],
        }
        student, bottleneck_channels = artifacts.model(), meta["bottleneck_channels"]
    else:
        architecture, input_size = cfg.model.architecture, cfg.model.input_size
        resize_size = cfg.model.get("resize_size") or input_size
        bottleneck_channels = cfg.model.bottleneck_channels
        teacher = build_teacher(architecture, cfg.model.num_classes, weights=None)
        student, _ = build_student(teacher, architecture, bottleneck_channels, input_size)
        description = {
            "source": "model config, random weights (counts and timings do not depend on weight values)",
            "method": None,
            "num_classes": cfg.model.num_classes,
        }
    description = {
        "architecture": architecture,
        "bottleneck_channels": bottleneck_channels,
        "input_size": input_size,
        **description,
    }
    return SplitUnderAnalysis(student, teacher, architecture, input_size, resize_size, description)


# --------------------------------------------------------------------------------------- compute
@torch.no_grad()
def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates per image of the Conv2d and Linear layers run by `module(*inputs)`.

    Batch norm, activations, pooling and (de)quantization are element-wise and not counted.
    """
    total = 0

    def conv(layer: nn.Conv2d, _: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)

    def linear(layer: nn.Linear, _: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * layer.in_features

    hooks = [
        layer.register_forward_hook(conv if isinstance(layer, nn.Conv2d) else linear)
        for layer in module.modules()
        if isinstance(layer, (nn.Conv2d, nn.Linear))
    ]
    try:
        module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return total  # hooks count output[0], one image


def compute_report(split: SplitUnderAnalysis) -> dict[str, dict[str, int]]:
    """Parameters and MACs per image of every part of `PART_LABELS`."""
    report = {}
    for name, module in split.parts.items():
        report[name] = {"parameters": count_parameters(module), "macs": count_macs(module, *split.inputs(name, 1))}
    return report


# --------------------------------------------------------------------------------------- payload
def _real_images(cfg: DictConfig, input_size: int, resize_size: int) -> tuple[list[Image.Image], str] | None:
    root = cfg.data.get("root")
    if not root:
        return None
    instantiate(cfg.data).prepare_data()  # e.g. the bundled dataset writes its image files here
    # ImageFolder layouts: the test images; other layouts (Caltech-101): any image under the root
    folder = Path(root).expanduser() / cfg.data.get("test_dir", "")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{str(folder)!r} does not exist: no real images to measure JPEG sizes on. Set data.root to the "
            f"dataset root, or leave it unset to use a generated image."
        )
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[:: max(1, len(files) // cfg.payload.num_images)][: cfg.payload.num_images]  # spread over classes
    if not files:
        raise FileNotFoundError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {str(folder)!r}.")
    # the evaluation preprocessing without normalization: what the camera image becomes before the model
    crop = transforms.Compose([transforms.Resize(resize_size), transforms.CenterCrop(input_size)])
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(crop(image.convert("RGB")))
    return images, f"{len(images)} real images from {folder}, resized to {resize_size} and center-cropped to {input_size}"


def generated_image(input_size: int, seed: int) -> Image.Image:
    """A deterministic stand-in photo: smooth colour gradients plus mild noise, (input_size, input_size) RGB."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, input_size)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    channels = []
    for _ in range(3):
        waves = sum(
            rng.uniform(20, 60) * np.sin(2 * np.pi * (rng.uniform(0.5, 3) * x + rng.uniform(0.5, 3) * y) + rng.uniform(0, 6))
            for _ in range(3)
        )
        channels.append(128 + waves + rng.normal(0, 8, (input_size, input_size)))
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int) -> int:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.tell()


def tensor_payload(shape: tuple[int, ...], input_bytes: int, jpeg_size: float) -> dict[str, Any]:
    """Bytes of one image's tensor of `shape` as float32, float16 and 8-bit, and their share of the input."""
    elements = math.prod(shape)
    sizes = payload_bytes(elements)
    return {
        "shape": list(shape),
        "elements": elements,
        "bytes": sizes,
        "percent_of_input": {key: 100 * value / input_bytes for key, value in sizes.items()},
        "ratio_to_jpeg": {key: value / jpeg_size for key, value in sizes.items()},
    }


@torch.no_grad()
def payload_report(cfg: DictConfig, split: SplitUnderAnalysis) -> dict[str, Any]:
    """Bytes per image on the link: raw uint8 input, its JPEG, the HND bottleneck and the teacher split tensor."""
    size = split.input_size
    quality = cfg.payload.jpeg_quality
    if not 1 <= quality <= 100:
        raise ValueError(f"payload.jpeg_quality must be in 1..100 (PIL's JPEG quality), got {quality}.")
    real = _real_images(cfg, size, split.resize_size)
    if real is None:
        images, source = [generated_image(size, cfg.seed)], (
            "a generated image (smooth gradients plus noise; no data.root set): real photos give other JPEG "
            "sizes, set data.root to use them"
        )
    else:
        images, source = real
    sizes = [jpeg_bytes(image, quality) for image in images]
    jpeg_size = statistics.mean(sizes)
    input_bytes = 3 * size * size
    images_1 = split.images(1)
    bottleneck_shape = tuple(split.student_device.encoder(images_1).shape[1:])
    teacher_shape = tuple(split.teacher_head(images_1).shape[1:])
    return {
        "input": {"shape": [3, size, size], "elements": input_bytes, "bytes_uint8": input_bytes},
        "jpeg": {
            "quality": quality,
            "bytes": jpeg_size,
            "min_bytes": min(sizes),
            "max_bytes": max(sizes),
            "percent_of_input": 100 * jpeg_size / input_bytes,
            "source": source,
        },
        "student": tensor_payload(bottleneck_shape, input_bytes, jpeg_size),
        "teacher": tensor_payload(teacher_shape, input_bytes, jpeg_size),
    }


# --------------------------------------------------------------------------------------- latency
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def median_latencies_ms(
    calls: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]], warmup: int, repeats: int, device: torch.device
) -> dict[str, float]:
    """Median wall time in milliseconds of each `module(*inputs)` in `calls`, after `warmup` runs each.

    The calls take turns within every repeat, so a change in the machine's load hits all of them alike.
    """
    for module, inputs in calls.values():
        for _ in range(warmup):
            module(*inputs)
    _synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (module, inputs) in calls.items():
            started = time.perf_counter()
            module(*inputs)
            _synchronize(device)
            times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def machine_description(device: torch.device) -> dict[str, Any]:
    description = {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
    return description


def measure_latency(cfg: DictConfig, split: SplitUnderAnalysis, part_names: tuple[str, ...]) -> dict[str, Any]:
    """Time `part_names` at batch 1 and `cfg.timing.batch_size` on `cfg.timing.device`.

    Returns settings, the machine, and per part `batch_1_ms` and `batch_<n>_ms_per_image` (medians).
    """
    timing = cfg.timing
    if timing.repeats < 1 or timing.warmup < 0 or timing.batch_size < 1:
        raise ValueError(
            f"timing.repeats must be >= 1, timing.warmup >= 0 and timing.batch_size >= 1; got "
            f"{timing.repeats}, {timing.warmup}, {timing.batch_size}."
        )
    if timing.get("threads"):
        torch.set_num_threads(timing.threads)
    device = resolve_device(timing.device)
    batch_sizes = sorted({1, timing.batch_size})
    results: dict[str, dict[str, float]] = {name: {} for name in part_names}
    for batch_size in batch_sizes:
        calls = {
            name: (split.parts[name], tuple(tensor.to(device) for tensor in split.inputs(name, batch_size)))
            for name in part_names
        }
        for module, _ in calls.values():
            module.to(device)
        milliseconds = median_latencies_ms(calls, timing.warmup, timing.repeats, device)
        for module, _ in calls.values():
            module.to("cpu")  # `split.inputs` runs the parts on the CPU
        key = "batch_1_ms" if batch_size == 1 else f"batch_{batch_size}_ms_per_image"
        for name in part_names:
            results[name][key] = milliseconds[name] / batch_size
        log.info("batch %d: %s", batch_size, milliseconds)
    settings = {
        "warmup": timing.warmup,
        "repeats": timing.repeats,
        "batch_sizes": batch_sizes,
        "statistic": "median, parts timed in turn",
    }
    return {"settings": settings, "machine": machine_description(device), "parts": results}


# --------------------------------------------------------------------------------------- roles
def role_report(role: str, split: SplitUnderAnalysis, static: dict[str, Any], latency: dict[str, Any]) -> dict[str, Any]:
    """The timings JSON of one side: the model, what does not depend on the machine, and that side's latency."""
    return {
        "role": role,
        "model": split.description,
        "compute": static["compute"],
        "payload": static["payload"],
        "latency": {**latency, "parts": {name: latency["parts"][name] for name in ROLE_PARTS[role]}},
    }


def combine(cfg: DictConfig, device: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    """Build the analysis from a device and a server timings report of the same model."""
    if device.get("role") != "device" or server.get("role") != "server":
        raise ValueError(
            f"device_timings must come from role=device and server_timings from role=server; got roles "
            f"{device.get('role')!r} and {server.get('role')!r}."
        )
    same = ("architecture", "bottleneck_channels", "input_size", "num_classes")
    mismatched = {key: (device["model"].get(key), server["model"].get(key)) for key in same if device["model"].get(key) != server["model"].get(key)}
    if mismatched:
        raise ValueError(f"The device and server timings describe different models (device, server): {mismatched}. Rerun one side with the other's model settings.")
    link = cfg.link
    return {
        "model": device["model"],
        "compute": device["compute"],
        "payload": device["payload"],
        "latency": {"device": device["latency"], "server": server["latency"]},
        "link": {"bandwidths_mbps": list(link.bandwidths_mbps), "rtt_ms": link.rtt_ms},
        "end_to_end": end_to_end(device, server, list(link.bandwidths_mbps), link.rtt_ms),
        "notes": [
            "End-to-end latency is per image at batch 1: device time + payload bytes x 8 / bandwidth + rtt_ms + server time.",
            "All on device and all on server run the whole teacher; JPEG encoding and decoding time and the reply with the result are not included.",
            "MACs count Conv2d and Linear layers only.",
        ],
    }


# --------------------------------------------------------------------------------------- output
def _count(value: float) -> str:
    for divisor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= divisor:
            return f"{value / divisor:,.2f} {unit}"
    return f"{value:.0f}"


def format_analysis(analysis: dict[str, Any]) -> str:
    """The terminal table: parts, payload, latency and end-to-end latency per bandwidth."""
    model, compute, payload = analysis["model"], analysis["compute"], analysis["payload"]
    lines = [
        f"{model['architecture']}, bottleneck B = {model['bottleneck_channels']}, input 3 x {model['input_size']} x "
        f"{model['input_size']}, {model['num_classes']} classes",
        f"Source: {model['source']}",
        "",
        f"{'Part':<54}{'params':>12}{'MACs':>14}",
    ]
    for name, label in PART_LABELS.items():
        lines.append(f"{label:<54}{_count(compute[name]['parameters']):>12}{_count(compute[name]['macs']):>14}")
    device_macs = compute["student_device"]["macs"] / compute["teacher_device"]["macs"]
    lines.append(f"HND device part MACs = {100 * device_macs:.1f} % of the teacher head's")

    jpeg = payload["jpeg"]
    lines += [
        "",
        f"Payload per image (bytes). Input uint8 3 x {model['input_size']} x {model['input_size']} = "
        f"{payload['input']['bytes_uint8']:,}; JPEG quality {jpeg['quality']} = {jpeg['bytes']:,.0f} "
        f"({jpeg['percent_of_input']:.1f} % of the input)",
        f"  JPEG from {jpeg['source']}",
        f"{'tensor':<34}{'elements':>10}{'float32':>10}{'float16':>10}{'8-bit':>10}{'8-bit % input':>15}{'8-bit / JPEG':>14}",
    ]
    for key, label in (("student", "HND bottleneck"), ("teacher", "teacher split tensor")):
        tensor = payload[key]
        shape = " x ".join(str(size) for size in tensor["shape"])
        lines.append(
            f"{label + ' ' + shape:<34}{tensor['elements']:>10,}{tensor['bytes']['float32']:>10,}"
            f"{tensor['bytes']['float16']:>10,}{tensor['bytes']['8bit']:>10,}"
            f"{tensor['percent_of_input']['8bit']:>14.2f}%{tensor['ratio_to_jpeg']['8bit']:>13.2f}x"
        )
    lines.append(f"  (8-bit: uint8 values + {QUANTIZATION_HEADER_BYTES} bytes of scale and zero point)")

    lines.append("")
    for side in ("device", "server"):
        latency = analysis["latency"][side]
        settings, machine = latency["settings"], latency["machine"]
        batch = max(settings["batch_sizes"])
        lines.append(
            f"Latency on the {side} ({machine['device']}{', ' + machine['gpu'] if 'gpu' in machine else ''}, "
            f"{machine['torch_threads']} threads, host {machine['host']}): median of {settings['repeats']} runs after "
            f"{settings['warmup']} warm-up"
        )
        lines.append(f"  {'part':<52}{'batch 1 ms':>12}{f'batch {batch} ms/image':>22}")
        for name, times in latency["parts"].items():
            batched = times.get(f"batch_{batch}_ms_per_image", times["batch_1_ms"])
            lines.append(f"  {PART_LABELS[name]:<52}{times['batch_1_ms']:>12.2f}{batched:>22.2f}")

    link = analysis["link"]
    lines += ["", f"End-to-end latency per image, batch 1, ms (round trip {link['rtt_ms']} ms; * = fastest)"]
    lines.append(f"{'Mbit/s':>8}" + "".join(f"{label:>24}" for label in STRATEGIES.values()))
    for row in analysis["end_to_end"]:
        cells = "".join(
            f"{row['latency_ms'][key]:>22.1f}{' *' if row['fastest'] == key else '  '}" for key in STRATEGIES
        )
        lines.append(f"{row['bandwidth_mbps']:>8g}{cells}")
    lines += [f"Note: {note}" for note in analysis["notes"]]
    return "\n".join(lines)


def plot_latency(analysis: dict[str, Any], path: Path) -> Path:
    """PNG of end-to-end latency against link bandwidth (log axis), one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = analysis["end_to_end"]
    bandwidths = [row["bandwidth_mbps"] for row in rows]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for key, label in STRATEGIES.items():
        axes.plot(bandwidths, [row["latency_ms"][key] for row in rows], marker="o", label=label)
    model = analysis["model"]
    axes.set_xscale("log")
    axes.set_xticks(bandwidths, [f"{bandwidth:g}" for bandwidth in bandwidths])
    axes.minorticks_off()
    axes.set_ylim(bottom=0)
    axes.set_xlabel("link bandwidth (Mbit/s)")
    axes.set_ylabel("end-to-end latency per image (ms)")
    axes.set_title(f"{model['architecture']}, B = {model['bottleneck_channels']}, input {model['input_size']}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_analysis(analysis: dict[str, Any], output_dir: Path) -> str:
    """Write analysis.json, analysis.txt and the plot into `output_dir`; return the table."""
    table = format_analysis(analysis)
    (output_dir / ANALYSIS_JSON).write_text(json.dumps(analysis, indent=2))
    (output_dir / ANALYSIS_TEXT).write_text(table + "\n")
    plot_latency(analysis, output_dir / PLOT_FILE)
    return table


def _read_timings(path: str | None, role: str) -> dict[str, Any]:
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"role=combine needs {role}_timings=PATH to a {timings_file(role)} written by "
            f"`python -m hnd_lightning.analyze role={role}`; got {path!r}."
        )
    return json.loads(Path(path).read_text())


def analyze(cfg: DictConfig) -> dict[str, Any]:
    """Run the role `cfg.role`; return the analysis (both, combine) or the side's timings (device, server)."""
    if cfg.role not in ROLES:
        raise ValueError(f"role={cfg.role!r} is not one of {ROLES}.")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.role == "combine":
        analysis = combine(cfg, _read_timings(cfg.device_timings, "device"), _read_timings(cfg.server_timings, "server"))
        print(write_analysis(analysis, output_dir))
        return analysis

    torch.manual_seed(cfg.seed)
    split = load_split_under_analysis(cfg)
    static = {"compute": compute_report(split), "payload": payload_report(cfg, split)}
    roles = ("device", "server") if cfg.role == "both" else (cfg.role,)
    part_names = tuple(dict.fromkeys(name for role in roles for name in ROLE_PARTS[role]))
    latency = measure_latency(cfg, split, part_names)
    reports = {role: role_report(role, split, static, latency) for role in roles}
    for role, report in reports.items():
        (output_dir / timings_file(role)).write_text(json.dumps(report, indent=2))
    if cfg.role != "both":
        print(f"Timings of the {cfg.role} part written to {output_dir / timings_file(cfg.role)}:")
        print(json.dumps(reports[cfg.role]["latency"], indent=2))
        return reports[cfg.role]
    analysis = combine(cfg, reports["device"], reports["server"])
    print(write_analysis(analysis, output_dir))
    log.info("Settings: %s", OmegaConf.to_container(cfg.timing))
    return analysis


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    analyze(cfg)


if __name__ == "__main__":
    main()
