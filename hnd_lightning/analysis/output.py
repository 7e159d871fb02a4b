"""What the analysis writes: the markdown report (analysis.md), analysis.json, the latency plot, and
each side's timings file (timings_device.json, timings_server.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hnd_lightning.analysis.latency import STRATEGIES
from hnd_lightning.analysis.parts import PART_LABELS
from hnd_lightning.files import atomic_write_text, write_json
from hnd_lightning.models.quantization import QUANTIZATION_HEADER_BYTES
from hnd_lightning.reporting.plots import line_plot
from hnd_lightning.reporting.tables import Column, count, markdown_table

ANALYSIS_JSON = "analysis.json"
ANALYSIS_MARKDOWN = "analysis.md"
PLOT_FILE = "latency_vs_bandwidth.png"
ROLES = ("both", "device", "server", "combine")


def timings_file(role: str) -> str:
    return f"timings_{role}.json"


def _shape(shape: list[int]) -> str:
    return " x ".join(str(size) for size in shape)


def _compute_section(compute: dict[str, Any]) -> list[str]:
    rows = [{"part": label, **compute[name]} for name, label in PART_LABELS.items()]
    columns = [
        Column("part"),
        Column("parameters", "params", format=count, align="right"),
        Column("macs", "MACs", format=count, align="right"),
    ]
    share = compute["student_device"]["macs"] / compute["teacher_device"]["macs"]
    return [
        "## Compute per image",
        "",
        markdown_table(rows, columns),
        f"HND device part MACs = {100 * share:.1f} % of the teacher head's.",
        "",
    ]


def _payload_section(model: dict[str, Any], payload: dict[str, Any]) -> list[str]:
    jpeg, size = payload["jpeg"], model["input_size"]
    rows = [
        {
            "tensor": f"{label} {_shape(payload[key]['shape'])}",
            "elements": payload[key]["elements"],
            **{fmt: payload[key]["bytes"][fmt] for fmt in ("float32", "float16", "uint8")},
            "percent": payload[key]["percent_of_input"]["uint8"],
            "jpeg": payload[key]["ratio_to_jpeg"]["uint8"],
        }
        for key, label in (("student", "HND bottleneck"), ("teacher", "teacher split tensor"))
    ]
    columns = [
        Column("tensor"),
        Column("elements", format=","),
        Column("float32", format=","),
        Column("float16", format=","),
        Column("uint8", "8-bit", format=","),
        Column("percent", "8-bit % of input", format=".2f"),
        Column("jpeg", "8-bit / JPEG", format=lambda ratio: f"{ratio:.2f}x", align="right"),
    ]
    return [
        "## Payload per image (bytes)",
        "",
        f"Input uint8 3 x {size} x {size} = {payload['input']['bytes_uint8']:,}; JPEG quality {jpeg['quality']} = "
        f"{jpeg['bytes']:,.0f} ({jpeg['percent_of_input']:.1f} % of the input), from {jpeg['source']}.",
        "",
        markdown_table(rows, columns),
        f"8-bit: uint8 values + {QUANTIZATION_HEADER_BYTES} bytes of scale and zero point.",
        "",
    ]


def _latency_section(side: str, latency: dict[str, Any]) -> list[str]:
    settings, machine = latency["settings"], latency["machine"]
    batch = max(settings["batch_sizes"])
    # files written before the machine description named the device kept a GPU's name under "gpu"
    name = machine.get("device_name") or machine.get("gpu")
    rows = [{"part": PART_LABELS[part], **times} for part, times in latency["parts"].items()]
    columns = [Column("part"), Column("batch_1_ms", "batch 1 ms", format=".2f")]
    if batch > 1:
        columns.append(Column(f"batch_{batch}_ms_per_image", f"batch {batch} ms/image", format=".2f"))
    lines = [
        f"## Latency on the {side}",
        "",
        f"{machine['device']}{', ' + name if name else ''}, {machine['torch_threads']} threads, host {machine['host']}: "
        f"median of {settings['repeats']} runs after {settings['warmup']} warm-up.",
        "",
    ]
    weak = latency.get("weak_device")
    if weak:
        reached = ", ".join(f"{PART_LABELS[part]} {ratio:.2f}x" for part, ratio in weak["measured_slowdown"].items())
        lines += [
            f"Timed on a weak device ({weak['mechanism']}, asked {weak['asked_slowdown']:.3g}x slower than this "
            f"machine{'; ' + weak['fallback'] if weak['fallback'] else ''}); reached, against the same parts "
            f"unthrottled in turn: {reached}.",
            "",
        ]
    if latency.get("profile"):
        lines += [f"Profile: {latency['profile']['source']}.", ""]
    return [*lines, markdown_table(rows, columns)]


def _crossing_text(crossing: dict[str, Any], other: str) -> str:
    wins = crossing["split_wins"]
    if wins in ("always", "never"):
        return f"- HND split against {other}: faster at {'every' if wins == 'always' else 'no'} bandwidth."
    return f"- HND split against {other}: faster {wins} {crossing['mbps']:.3g} Mbit/s."


def _crossover_section(analysis: dict[str, Any]) -> list[str]:
    crossings, band = analysis["crossovers"], analysis["crossovers"]["split_fastest"]
    if band is None:
        fastest = "- The split is the fastest of the three at no bandwidth."
    else:
        high = "no upper end" if band["to_mbps"] is None else f"{band['to_mbps']:.3g} Mbit/s"
        fastest = f"- The split is the fastest of the three from {band['from_mbps']:.3g} Mbit/s to {high}."
    return [
        "",
        "## Crossover bandwidths (closed form of the latency model)",
        "",
        _crossing_text(crossings["split_vs_server_only"], STRATEGIES["server_only"]),
        _crossing_text(crossings["split_vs_device_only"], STRATEGIES["device_only"]),
        fastest,
        "",
    ]


def _end_to_end_section(analysis: dict[str, Any]) -> list[str]:
    def cell(key: str):
        return lambda row: f"{row['latency_ms'][key]:.1f}" + (" *" if row["fastest"] == key else "")

    columns = [Column("bandwidth_mbps", "Mbit/s", format="g")]
    columns += [Column(key, label, value=cell(key), align="right") for key, label in STRATEGIES.items()]
    return [
        f"## End-to-end latency per image, batch 1, ms (round trip {analysis['link']['rtt_ms']} ms; * = fastest)",
        "",
        markdown_table(analysis["end_to_end"], columns),
    ]


def format_analysis(analysis: dict[str, Any]) -> str:
    """The markdown report: parts' compute, payload, latency per side, end-to-end latency per bandwidth."""
    model = analysis["model"]
    lines = [
        f"# {model['architecture']}, bottleneck B = {model['bottleneck_channels']}, input 3 x {model['input_size']} x "
        f"{model['input_size']}, {model['num_classes']} classes",
        "",
        f"Source: {model['source']}.",
        "",
        *_compute_section(analysis["compute"]),
        *_payload_section(model, analysis["payload"]),
    ]
    for side in ("device", "server"):
        lines += _latency_section(side, analysis["latency"][side])
    lines += _end_to_end_section(analysis)
    if "crossovers" in analysis:  # analyses written before crossovers were computed have none
        lines += _crossover_section(analysis)
    lines += [f"- {note}" for note in analysis["notes"]]
    return "\n".join(lines) + "\n"


def plot_latency(analysis: dict[str, Any], path: Path) -> Path:
    """PNG of end-to-end latency against link bandwidth (log axis), one line per strategy."""
    rows, model = analysis["end_to_end"], analysis["model"]
    return line_plot(
        path,
        [row["bandwidth_mbps"] for row in rows],
        {label: [row["latency_ms"][key] for row in rows] for key, label in STRATEGIES.items()},
        xlabel="link bandwidth (Mbit/s)",
        ylabel="end-to-end latency per image (ms)",
        title=f"{model['architecture']}, B = {model['bottleneck_channels']}, input {model['input_size']}",
        log_x=True,
        vertical_lines=crossover_lines(analysis.get("crossovers")),
    )


def crossover_lines(crossings: dict[str, Any] | None) -> dict[str, float]:
    """Plot labels -> Mbit/s of the closed-form crossovers that exist."""
    lines = {}
    for key, other in (("split_vs_server_only", "server_only"), ("split_vs_device_only", "device_only")):
        crossing = (crossings or {}).get(key) or {}
        if crossing.get("mbps"):
            lines[f"split = {STRATEGIES[other]} ({crossing['mbps']:.3g} Mbit/s)"] = crossing["mbps"]
    return lines


def write_analysis(analysis: dict[str, Any], output_dir: Path) -> str:
    """Write analysis.json, analysis.md and the plot into `output_dir`; return the markdown."""
    report = format_analysis(analysis)
    write_json(output_dir / ANALYSIS_JSON, analysis)
    atomic_write_text(output_dir / ANALYSIS_MARKDOWN, report)
    plot_latency(analysis, output_dir / PLOT_FILE)
    return report


def read_timings(path: str | None, role: str) -> dict[str, Any]:
    """The timings report written by `analyze role=<role>` at `path`; a clear error when it is missing."""
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"role=combine needs {role}_timings=PATH to a {timings_file(role)} written by "
            f"`python -m hnd_lightning.analyze role={role}`; got {path!r}."
        )
    return json.loads(Path(path).read_text())
