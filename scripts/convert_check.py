"""`convert` measured: the largest logit difference per layout and architecture, and the command's wall time.

    PYTHONPATH=$PWD:$PWD/tests python scripts/convert_check.py --output /tmp/convert_check.json

For each architecture and layout, a file is built from a model with random weights and random BatchNorm
statistics in that library's exact layout (tests/convert_sources.py), at the papers' input size (224;
299 for Inception-v3) and with the original's AvgPool2d(7) where it had one; it is converted and the
artifacts' logits are compared with the source model's on two random images. Then the wall time of
`python -m hnd_lightning.convert` for a DenseNet-169 head-only file (B = 12, the original's legacy
format, its teacher in a warm torch hub cache of random weights) is taken `--runs` times, with the
load average around each run. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PAPER_SIZE = {"densenet169": 224, "densenet201": 224, "resnet152": 224, "inception_v3": 299}
LAYOUTS = ["original_head", "original_naive", "original_kd", "torchdistill", "sc2bench_idx7", "sc2bench_idx8"]


def logit_differences(work: Path) -> list[dict]:
    from convert_sources import CHANNELS, Sources, source_file

    from hnd_lightning.models.conversion import import_checkpoint

    os.environ["TORCH_HOME"] = str(work / "torch")  # the random teachers' V1 files, never a download
    sources = Sources(work / "torch", PAPER_SIZE)
    rows = []
    for architecture, size in PAPER_SIZE.items():
        for layout in LAYOUTS:
            case = work / f"{architecture}-{layout}"
            file, model = source_file(layout, architecture, sources, case, original_pool=True)
            started = time.perf_counter()
            artifacts = import_checkpoint(file, case / "artifacts")
            seconds = time.perf_counter() - started
            images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(7))
            with torch.no_grad():
                expected = model(images)
                difference = (artifacts.model()(images) - expected).abs().max().item()
            rows.append(
                {
                    "architecture": architecture,
                    "layout": layout,
                    "bottleneck_channels": CHANNELS[architecture],
                    "input_size": size,
                    "max_abs_logit_difference": difference,
                    "max_abs_logit": expected.abs().max().item(),
                    "convert_seconds_in_process": round(seconds, 2),
                }
            )
            print(
                f"{architecture:13s} {layout:15s} {difference:.3g} (|logit| <= {rows[-1]['max_abs_logit']:.3g})",
                flush=True,
            )
            shutil.rmtree(case)
        sources.teachers.pop(architecture), sources.heads.pop(architecture)
    return rows


def command_times(work: Path, runs: int) -> dict:
    from convert_sources import Sources, save

    sources = Sources(work / "torch_command", PAPER_SIZE)
    head = sources.head("densenet169")
    sources.cache_teacher("densenet169")
    file = work / "hnd" / "imagenet-densenet169_head_mimic-ver2b-12ch.pt"
    save({"type": "densenet169", "model": head.state_dict(), "epoch": 20, "best_valid_value": 0.0}, file, legacy=True)
    env = {
        **os.environ,
        "TORCH_HOME": str(work / "torch_command"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    times, cpu, loads = [], [], []
    for run in range(runs):
        output = work / f"artifacts{run}"
        command = [sys.executable, "-m", "hnd_lightning.convert", f"checkpoint={file}", f"output_dir={output}"]
        command.append(f"paths.output_root={work / 'outputs'}")
        before, children = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        times.append(round(time.perf_counter() - started, 2))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(round(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime, 2))
        loads.append([round(before, 2), round(os.getloadavg()[0], 2)])
        shutil.rmtree(output)
    return {
        "command": "python -m hnd_lightning.convert checkpoint=<head file> output_dir=<dir>",
        "file": file.name,
        "file_bytes": file.stat().st_size,
        "seconds": times,
        "median_seconds": statistics.median(times),
        # user + system CPU of the command: what it costs whatever else the machine runs
        "cpu_seconds": cpu,
        "median_cpu_seconds": statistics.median(cpu),
        "load_average_1min_before_after": loads,
        "omp_num_threads": env["OMP_NUM_THREADS"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="where the JSON record goes")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of the command")
    parser.add_argument("--skip-logits", action="store_true", help="only time the command")
    args = parser.parse_args()
    torch.set_num_threads(1)

    def no_download(url, *_, **__):
        raise RuntimeError(f"convert_check never downloads ({url})")

    torch.hub.download_url_to_file = no_download
    with tempfile.TemporaryDirectory(prefix="convert_check_") as work:
        record = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "command_timing": command_times(Path(work), args.runs),
        }
        args.output.write_text(json.dumps(record, indent=2))
        print(json.dumps(record["command_timing"], indent=2), flush=True)
        if not args.skip_logits:
            record["logit_differences"] = logit_differences(Path(work))
    args.output.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
