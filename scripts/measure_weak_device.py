"""The split as the papers tell it: a weak device beside a full-speed server, measured (issue 16).

    PYTHONPATH=. python scripts/measure_weak_device.py --out outputs/weak_device
    PYTHONPATH=. python scripts/measure_weak_device.py --models densenet169 --quotas 1,0.1 --images 4   # reduced

Per model (DenseNet-169, ResNet-152; input 224, B = 12, 8-bit link, random weights: latency only):
1. artifacts of a random-weight student, and `--images` images generated at 224 (a class colour plus
   noise, as the tests' make_image_folder makes them);
2. `analyze role=both` (one thread) times every part on this machine; `analyze role=combine` with
   `device_profile.speed=<quota>` gives the prediction for each device speed;
3. `serve` in its own process at full speed (one thread, never throttled), `teacher=random` for full
   offloading;
4. per quota, one `client` process with `weak_device.cpu_quota=<quota>`, one thread, the emulated link at
   every `--bandwidths`, the three strategies taking turns per image, `analysis=` the prediction;
5. with `--int8`: `deploy int8.enabled=true` (calibrated on the generated images), then device.onnx and
   device_int8.onnx timed in turns on the weak device at each quota (onnxruntime, one thread).
Writes into `--out`: every run's folder, `weak_device.json` (all numbers), `weak_device.md` (the tables)
and `latency_vs_bandwidth.png` (a row per model, a panel per device speed). Load averages are recorded
before and after every run: the machine may be shared.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("split", "server_only", "device_only")


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def run(command: list[str], log: Path) -> None:
    """A command of this project in its own process (one torch thread), its output into `log`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with log.open("w") as handle:
        result = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}); see {log}")


def make_artifacts(architecture: str, directory: Path, bottleneck: int, num_classes: int) -> Path:
    import torch

    from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD
    from hnd_lightning.models import build_student, build_teacher
    from hnd_lightning.models.artifacts import save_split_artifacts, split_metadata

    if (directory / "split.json").is_file():
        return directory
    torch.manual_seed(0)
    student, _ = build_student(build_teacher(architecture, num_classes), architecture, bottleneck, 224)
    with torch.no_grad():  # batch-norm statistics that are not the identity
        student.train()(torch.randn(4, 3, 224, 224))
    normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    classes = [f"class{index}" for index in range(num_classes)]
    metadata = split_metadata(
        student.eval(), architecture, bottleneck, num_classes, 224, "hnd", normalization, 224, classes
    )
    save_split_artifacts(directory, student, metadata)
    return directory


def make_images(folder: Path, count: int, size: int = 224) -> Path:
    """`count` JPEGs of a class colour plus Gaussian noise (sigma 30), as the tests' make_image_folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        base = np.zeros(3)
        base[index % 3] = 200
        pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:03d}.jpg")
    return folder


def link_payload(folder: Path, artifacts: Path) -> dict[str, Any]:
    """What the client's prediction sends: the images' mean JPEG (quality 90) and the 8-bit bottleneck."""
    from hnd_lightning.models.quantization import payload_bytes

    sizes = []
    for path in sorted(folder.glob("*.jpg")):
        buffer = io.BytesIO()
        with Image.open(path) as image:
            image.convert("RGB").save(buffer, format="JPEG", quality=90)
        sizes.append(buffer.tell())
    shape = json.loads((artifacts / "split.json").read_text())["bottleneck_tensor"]["shape"]
    return {"jpeg": {"bytes": float(np.mean(sizes))}, "student": {"bytes": payload_bytes(int(np.prod(shape)))}}


def measured_crossings(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The crossover bandwidths of the measured medians (the model's form fitted to them)."""
    from hnd_lightning.analysis.latency import measured_crossing

    latency: dict[float, dict[str, float]] = {}
    for row in summary:
        latency.setdefault(row["bandwidth_mbps"], {})[row["strategy"]] = row["end_to_end_ms_p50"]
    return {other: measured_crossing(latency, other) for other in ("server_only", "device_only")}


def crossings(summary: list[dict[str, Any]], analysis: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Crossover bandwidths: measured (the model's form fitted to the medians), predicted (closed form on
    analyze's parts) and the closed form on this run's own part medians (the model without timing drift)."""
    from hnd_lightning.analysis.latency import crossovers
    from hnd_lightning.runtime.device.report import measured_parts

    def closed_form(device: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
        found = crossovers({**device, "payload": payload}, server, 0.0)
        return {"server_only": found["split_vs_server_only"], "device_only": found["split_vs_device_only"]}

    own_device, own_server = measured_parts(summary)
    return {
        "measured": measured_crossings(summary),
        "predicted": closed_form(
            {"latency": analysis["latency"]["device"]}, {"latency": analysis["latency"]["server"]}
        ),
        "model_on_measured_parts": closed_form(own_device, own_server),
    }


def measure_model(args: argparse.Namespace, architecture: str, out: Path) -> dict[str, Any]:
    from hnd_lightning.runtime.server.process import ServerProcess

    folder = out / architecture
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = make_artifacts(architecture, folder / "artifacts", args.bottleneck, args.num_classes)
    images = make_images(folder / "images", args.images)
    bandwidths = "[" + ",".join(f"{b:g}" for b in args.bandwidths) + "]"
    python = [sys.executable, "-m"]
    result: dict[str, Any] = {"architecture": architecture, "runs": {}, "load": {"start": load()}}

    analyze_dir = folder / "analyze"
    run(
        [*python, "hnd_lightning.analyze", f"artifacts={artifacts}", "timing.threads=1", "timing.batch_size=1"]
        + [
            f"timing.repeats={args.timing_repeats}",
            f"link.bandwidths_mbps={bandwidths}",
            f"hydra.run.dir={analyze_dir}",
        ],
        folder / "analyze.log",
    )
    serve = [f"artifacts={artifacts}", "teacher=random", "threads=1", "http_port=0", "grpc_port=0"]
    with ServerProcess([*serve, f"hydra.run.dir={folder / 'serve'}"], threads=1) as server:
        for quota in args.quotas:
            name = f"q{quota:g}"
            prediction_dir = folder / f"analyze_{name}"
            run(
                [
                    *python,
                    "hnd_lightning.analyze",
                    "role=combine",
                    f"device_timings={analyze_dir / 'timings_device.json'}",
                ]
                + [f"server_timings={analyze_dir / 'timings_server.json'}", f"device_profile.speed={quota:g}"]
                + [f"link.bandwidths_mbps={bandwidths}", f"hydra.run.dir={prediction_dir}"],
                folder / f"analyze_{name}.log",
            )
            client_dir, before = folder / f"client_{name}", load()
            started = time.monotonic()
            run(
                [*python, "hnd_lightning.client", f"artifacts={artifacts}", f"server={server.url('grpc')}"]
                + [f"images={images}", f"num_images={args.images}", "teacher=random", "threads=1", "warmup=1"]
                + [f"link.bandwidth_mbps={bandwidths}", f"weak_device.cpu_quota={quota:g}"]
                + [f"analysis={prediction_dir / 'analysis.json'}", f"hydra.run.dir={client_dir}"],
                folder / f"client_{name}.log",
            )
            client = json.loads((client_dir / "client.json").read_text())
            analysis = json.loads((prediction_dir / "analysis.json").read_text())
            result["runs"][name] = {
                "quota": quota,
                "summary": client["summary"],
                "weak_device": client["weak_device"],
                "crossovers": crossings(client["summary"], analysis, link_payload(images, artifacts)),
                "load": {"before": before, "after": load()},
                "wall_s": time.monotonic() - started,
            }
            print(f"{architecture} {name}: {time.monotonic() - started:.0f} s, load {load()}", flush=True)
    if args.int8:
        result["int8"] = measure_int8(args, artifacts, images, folder)
    result["load"]["end"] = load()
    return result


def measure_int8(args: argparse.Namespace, artifacts: Path, images: Path, folder: Path) -> dict[str, Any]:
    """device_int8.onnx against device.onnx: deploy's comparison, then both timed on the weak device at each
    quota (onnxruntime, one thread, batch 1, the two files in turns, `--int8-repeats` calls each)."""
    import onnxruntime

    from hnd_lightning.runtime.common.images import camera_view, model_input
    from hnd_lightning.weak_device import WeakDevice

    deploy_dir = folder / "deploy"
    run(
        [sys.executable, "-m", "hnd_lightning.deploy", f"artifacts={artifacts}", "int8.enabled=true"]
        + [f"int8.calibration_images={images}", f"int8.eval_images={images}", "triton.enabled=false"]
        + [f"hydra.run.dir={deploy_dir}"],
        folder / "deploy.log",
    )
    metadata = json.loads((artifacts / "split.json").read_text())
    arrays = []
    for path in sorted(images.glob("*.jpg")):
        with Image.open(path) as image:
            arrays.append(model_input(camera_view(image, metadata), metadata)[None])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    files = ("device.onnx", "device_int8.onnx")
    sessions = {
        name: onnxruntime.InferenceSession(str(deploy_dir / name), options, providers=["CPUExecutionProvider"])
        for name in files
    }
    out = {"deploy": json.loads((deploy_dir / "deploy.json").read_text())["int8"], "timed": {}}
    for quota in args.quotas:
        with WeakDevice(cpu_quota=quota) as weak:
            for index in range(args.int8_repeats):
                for name in files[:: 1 if index % 2 else -1]:
                    weak.timed(name, sessions[name].run, None, {"image": arrays[index % len(arrays)]})
        out["timed"][f"q{quota:g}"] = weak.record()["computations"]
    return out


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """A row per model, a panel per device speed: measured medians (solid) and predictions (dashed) per
    strategy against bandwidth; the measured crossovers as dotted vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import LogLocator, NullLocator, ScalarFormatter

    from hnd_lightning.analysis.latency import STRATEGIES

    quotas = list(results[0]["runs"])
    figure, axes = plt.subplots(
        len(results), len(quotas), figsize=(4.2 * len(quotas), 3.6 * len(results)), squeeze=False
    )
    for row, result in enumerate(results):
        for column, name in enumerate(quotas):
            ax, data = axes[row][column], result["runs"][name]
            for index, strategy in enumerate(STRATEGIES):
                points = sorted(
                    (r["bandwidth_mbps"], r["end_to_end_ms_p50"], r["predicted_ms"])
                    for r in data["summary"]
                    if r["strategy"] == strategy
                )
                x = [p[0] for p in points]
                ax.plot(x, [p[1] for p in points], "o-", color=f"C{index}", label=f"{STRATEGIES[strategy]}, measured")
                ax.plot(x, [p[2] for p in points], "x--", color=f"C{index}", alpha=0.6, label="predicted")
            for other, color in (("server_only", "C1"), ("device_only", "C0")):
                crossing = data["crossovers"]["measured"][other]
                if crossing["mbps"] and crossing.get("inside_grid", True):
                    ax.axvline(crossing["mbps"], linestyle=":", color=color)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(x, [f"{b:g}" for b in x])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_locator(NullLocator())
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{result['architecture']}, device at {data['quota']:g} core", fontsize=9)
            ax.set_xlabel("link (Mbit/s, emulated)", fontsize=8)
            if column == 0:
                ax.set_ylabel("end to end per image (ms, median)", fontsize=8)
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _crossing(crossing: dict[str, Any]) -> str:
    if crossing["mbps"] is not None:
        text = f"{crossing['split_wins']} {crossing['mbps']:.3g}"
        if "inside_grid" in crossing:  # measured: the fit's crossing, and how often the medians changed sign
            text += (
                "" if crossing["inside_grid"] else " (outside the grid)"
            ) + f", {crossing['sign_changes']} sign changes"
        return text
    return {"always": "always", "never": "never"}.get(crossing["split_wins"], "-")


def tables(results: list[dict[str, Any]]) -> str:
    """Markdown: the device times and crossovers per model and quota, then every median beside its prediction."""
    lines = [
        "| model | device | device part ms (unthrottled) | reached / asked | wall / CPU | whole teacher on device ms "
        "(unthrottled) | reached / asked | wall / CPU | nr_throttled / periods | load before, after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        for data in result["runs"].values():
            weak, stat = data["weak_device"], data["weak_device"]["cpu_stat"]
            split, teacher = weak["computations"]["split"], weak["computations"]["device_only"]
            asked = weak["asked_slowdown"]
            lines.append(
                f"| {result['architecture']} | {data['quota']:g} core | {split['device_ms_p50']:.1f} ({split['reference_ms_p50']:.1f}) "
                f"| {split['measured_slowdown_p50']:.2f} / {asked:g} | {split['device_ms_p50'] / split['cpu_ms_p50']:.2f} "
                f"| {teacher['device_ms_p50']:.0f} ({teacher['reference_ms_p50']:.0f}) "
                f"| {teacher['measured_slowdown_p50']:.2f} / {asked:g} | {teacher['device_ms_p50'] / teacher['cpu_ms_p50']:.2f} "
                f"| {stat['nr_throttled']} / {stat['nr_periods']} "
                f"| {data['load']['before'][0]:.1f}, {data['load']['after'][0]:.1f} |"
            )
    lines += [
        "",
        "| model | device | split beats JPEG (Mbit/s): measured | predicted (analyze) | model on this run's parts "
        "| split beats all on device (Mbit/s): measured | predicted (analyze) | model on this run's parts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for data in result["runs"].values():
            found = data["crossovers"]
            cells = [
                _crossing(found[kind][other])
                for other in ("server_only", "device_only")
                for kind in ("measured", "predicted", "model_on_measured_parts")
            ]
            lines.append(f"| {result['architecture']} | {data['quota']:g} core | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| model | device | Mbit/s | split measured | predicted | JPEG (server only) measured | predicted "
        "| all on device measured | predicted | fastest measured | fastest predicted |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for result in results:
        for data in result["runs"].values():
            rows: dict[float, dict[str, dict[str, Any]]] = {}
            for row in data["summary"]:
                rows.setdefault(row["bandwidth_mbps"], {})[row["strategy"]] = row
            for bandwidth, by_strategy in sorted(rows.items()):
                cells = " | ".join(
                    f"{by_strategy[s]['end_to_end_ms_p50']:.0f} | {by_strategy[s]['predicted_ms']:.0f}"
                    for s in STRATEGIES
                )
                fastest = min(STRATEGIES, key=lambda s: by_strategy[s]["end_to_end_ms_p50"])
                predicted = min(STRATEGIES, key=lambda s: by_strategy[s]["predicted_ms"])
                lines.append(
                    f"| {result['architecture']} | {data['quota']:g} | {bandwidth:g} | {cells} | {fastest} | {predicted} |"
                )
    int8 = [result for result in results if "timed" in result.get("int8", {})]
    if int8:
        lines += [
            "",
            "| model | device | device.onnx ms | CPU ms | device_int8.onnx ms | CPU ms | int8 / float32 (wall) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
    for result in int8:
        for name, timed in result["int8"]["timed"].items():
            fp, q8 = timed["device.onnx"], timed["device_int8.onnx"]
            lines.append(
                f"| {result['architecture']} | {name[1:]} | {fp['device_ms_p50']:.1f} | {fp['cpu_ms_p50']:.1f} "
                f"| {q8['device_ms_p50']:.1f} | {q8['cpu_ms_p50']:.1f} | {q8['device_ms_p50'] / fp['device_ms_p50']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "weak_device")
    parser.add_argument("--models", default="densenet169,resnet152")
    parser.add_argument("--quotas", default="1,0.25,0.1", help="device CPU quotas, fractions of one core")
    parser.add_argument("--bandwidths", default="1,2,5,10,20,50", help="emulated link, Mbit/s")
    parser.add_argument("--images", type=int, default=6, help="images per run (every one at every bandwidth)")
    parser.add_argument("--bottleneck", type=int, default=12)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--timing-repeats", type=int, default=10, help="analyze's timed runs per part")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--int8-repeats", type=int, default=30, help="timed calls of each device file per quota")
    parser.add_argument("--report-only", action="store_true", help="redraw the tables and figure from --out")
    parser.add_argument("--int8-only", action="store_true", help="redo the int8 step on the models in --out")
    args = parser.parse_args()
    args.quotas = [float(q) for q in args.quotas.split(",")]
    args.bandwidths = [float(b) for b in args.bandwidths.split(",")]
    if args.int8_only:  # the int8 step again, on the artifacts and images of an earlier run in --out
        report = json.loads((args.out / "weak_device.json").read_text())
        for result in report["results"]:
            folder = args.out / result["architecture"]
            result["int8"] = measure_int8(args, folder / "artifacts", folder / "images", folder)
        (args.out / "weak_device.json").write_text(json.dumps(report, indent=1, default=str))
        args.report_only = True
    if args.report_only:
        results = json.loads((args.out / "weak_device.json").read_text())["results"]
        for result in results:  # the crossings again, as this version of the script finds them
            folder = args.out / result["architecture"]
            payload = link_payload(folder / "images", folder / "artifacts")
            for name, data in result["runs"].items():
                analysis = json.loads((folder / f"analyze_{name}" / "analysis.json").read_text())
                data["crossovers"] = crossings(data["summary"], analysis, payload)
        (args.out / "weak_device.md").write_text(tables(results))
        plot(results, args.out / "latency_vs_bandwidth.png")
        print(tables(results))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started, results = time.monotonic(), []
    print(f"load at start {load()}", flush=True)
    for architecture in args.models.split(","):
        results.append(measure_model(args, architecture, args.out))
    report = {
        "settings": {**vars(args), "out": str(args.out), "started_load": results[0]["load"]["start"]},
        "wall_s": time.monotonic() - started,
        "results": results,
    }
    (args.out / "weak_device.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "weak_device.md").write_text(tables(results))
    plot(results, args.out / "latency_vs_bandwidth.png")
    print(tables(results))
    print(f"Written to {args.out} in {report['wall_s']:.0f} s; load at the end {load()}")


if __name__ == "__main__":
    main()
