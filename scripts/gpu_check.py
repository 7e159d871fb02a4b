"""The first measurement on a GPU, prepared before any GPU was lent: one script, about 8 minutes.

    python scripts/gpu_check.py --output outputs/gpu_check            # on a machine with one CUDA GPU
    python scripts/gpu_check.py --plan                                 # print and compose the commands only
    python scripts/gpu_check.py --dry-run --output /tmp/gpu_check      # the same steps, tiny, on the CPU

With the project's own commands, on one device (`--device`, default cuda):
  1. a synthetic JPEG ImageFolder (ImageNet-like 500 x 375 photos) for the loader and the serving run;
  2. `bench`: HND and KD training steps (and the plain PyTorch HND step, the student's parts at inference)
     at batch 32, 224 x 224, in float32, bfloat16 (Lightning bf16-mixed) and bfloat16 + channels-last,
     with the DataLoader's decode + augmentation rate per worker count beside the step rates;
  3. `train` (one fast_dev_run step, random teacher) for a split's artifacts, then `loadtest`: 16 clients
     against the server on the device, dynamic batching versus one request at a time.
Writes `gpu_check.json` (settings, every command, its seconds and results) and `gpu_check.md` into
`--output`, prints the settings and the medians. Each step has a time limit; a step that fails or runs
out of the budget is recorded as such and the others still run. docs/results/gpu.md says how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# (name, bench dtype, channels_last, also time the data loader)
BENCH_VARIANTS = [
    ("fp32", "float32", False, True),
    ("bf16", "bfloat16", False, False),
    ("bf16_cl", "bfloat16", True, False),
]
FULL = {
    "input_size": 224,
    "resize_size": 256,
    "batch": 32,
    "rounds": 3,
    "warmup": 3,
    "repeats": 10,
    "images_per_class": 96,
    "image_size": (500, 375),
    "workers": [0, 4, 8],
    "data_batches": 10,
    "duration_s": 10,
    "concurrency": 16,
    "budget_s": 480,
    "methods": "[kd,hnd]",
}
DRY = {
    "input_size": 32,
    "resize_size": 36,
    "batch": 2,
    "rounds": 1,
    "warmup": 1,
    "repeats": 1,
    "images_per_class": 4,
    "image_size": (40, 40),
    "workers": [0],
    "data_batches": 2,
    "duration_s": 1,
    "concurrency": 2,
    "budget_s": 900,
    "methods": "[hnd]",
}


def write_images(root: Path, sizes: dict[str, Any], classes: int = 3) -> Path:
    """A JPEG ImageFolder `root/{train,val}/class<k>/` of smooth random photos (the loader's real work)."""
    rng = np.random.default_rng(0)
    width, height = sizes["image_size"]
    for split, count in (("train", sizes["images_per_class"]), ("val", max(2, sizes["images_per_class"] // 8))):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
                photo = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
                photo.save(folder / f"img{index}.jpg", quality=90)
    return root


def commands(out: Path, device: str, sizes: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step: {"name", "config", "overrides", "output"} for `python -m hnd_lightning.<config>`."""
    data, size = out / "data", f"model.input_size={sizes['input_size']} model.resize_size={sizes['resize_size']}"
    steps = []
    for name, dtype, channels_last, loader in BENCH_VARIANTS:
        overrides = [
            "model=densenet169",
            *size.split(),
            f"method_names={sizes['methods']}",
            f"batch={sizes['batch']}",
            f"dtype={dtype}",
            f"channels_last={str(channels_last).lower()}",
            f"device={device}",
            f"rounds={sizes['rounds']}",
            f"warmup={sizes['warmup']}",
            f"repeats={sizes['repeats']}",
            f"output={out / f'bench_{name}.json'}",
        ]
        if loader:
            workers = ",".join(str(w) for w in sizes["workers"])
            overrides += [f"data_root={data}", f"data_workers=[{workers}]", f"data_batches={sizes['data_batches']}"]
        steps.append(
            {"name": f"bench_{name}", "config": "bench", "overrides": overrides, "output": out / f"bench_{name}.json"}
        )
    train_dir, gpu = out / "train_run", device.partition(":")[2] or "0"
    steps.append(
        {
            "name": "train_artifacts",
            "config": "train",
            "overrides": [
                "model=densenet169",
                "method=hnd",
                "debug=fast_dev_run",
                *(
                    ["trainer.accelerator=cpu"]
                    if device == "cpu"
                    else ["trainer.accelerator=gpu", f"trainer.devices=[{gpu}]"]
                ),
                f"data.root={data}",
                "data.num_classes=3",
                f"data.batch_size={sizes['batch']}",
                "data.eval_batch_size=8",
                *size.split(),
                "model.teacher.weights=null",
                f"hydra.run.dir={train_dir}",
            ],
            "output": train_dir / "artifacts" / "split.json",
        }
    )
    loadtest_dir = out / "loadtest"
    steps.append(
        {
            "name": "loadtest",
            "config": "loadtest",
            "overrides": [
                f"artifacts={train_dir / 'artifacts'}",
                f"server.device={device}",
                f"concurrency={sizes['concurrency']}",
                f"duration_s={sizes['duration_s']}",
                "protocols=[grpc]",
                f"hydra.run.dir={loadtest_dir}",
            ],
            "output": loadtest_dir / "loadtest.json",
        }
    )
    return steps


def compose_all(steps: list[dict[str, Any]]) -> None:
    """Compose every step's config with Hydra as its command would (raises on an override that rotted)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    for step in steps:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            overrides = [o for o in step["overrides"] if not o.startswith("hydra.")]
            compose(config_name=step["config"], overrides=overrides)
    GlobalHydra.instance().clear()


def run_step(step: dict[str, Any], deadline: float, log_dir: Path) -> dict[str, Any]:
    """Run one command within what is left of the budget; its record (seconds, status, output)."""
    left = deadline - time.monotonic()
    command = [sys.executable, "-m", f"hnd_lightning.{step['config']}", *step["overrides"]]
    record = {"name": step["name"], "command": " ".join(command[1:]), "status": "skipped (budget spent)"}
    if left < 5:
        return record
    started = time.monotonic()
    env = {
        **os.environ,
        "HYDRA_FULL_ERROR": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log = log_dir / f"{step['name']}.log"
    with log.open("w") as handle:
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=left)
            record["status"] = (
                "ok" if done.returncode == 0 and Path(step["output"]).is_file() else f"failed ({done.returncode})"
            )
        except subprocess.TimeoutExpired:
            record["status"] = f"timed out after {left:.0f} s"
    record["seconds"] = round(time.monotonic() - started, 1)
    record["log"] = str(log)
    if record["status"] == "ok" and str(step["output"]).endswith(".json"):
        record["result"] = json.loads(Path(step["output"]).read_text())
    return record


def medians(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measured thing: step rates of every bench variant, loader rates, serving rates."""
    rows = []
    for record in records:
        result = record.get("result") or {}
        if record["name"].startswith("bench_"):
            variant = record["name"].removeprefix("bench_")
            for item in result.get("results", []):
                rows.append(
                    {
                        "what": f"{item['method']} {item['phase']} {item['part'] or ''}".strip(),
                        "variant": variant,
                        "images_per_s": item["images_per_s"],
                        "ms": item.get("step_ms_median"),
                        "peak_mb": item.get("peak_memory_mb"),
                    }
                )
        elif record["name"] == "loadtest":
            for item in result.get("results", []):
                rows.append(
                    {
                        "what": f"serve {item['mode']} {item['protocol']}",
                        "variant": f"{item['concurrency']} clients",
                        "images_per_s": item["images_per_s"],
                        "ms": item["latency_ms"]["p50"],
                        "peak_mb": None,
                    }
                )
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# GPU check",
        "",
        f"Settings: {json.dumps(report['settings'])}",
        "",
        "| what | variant | images/s | ms (step median; serving: p50 latency) | peak MB |",
        "|---|---|---:|---:|---:|",
    ]
    for row in report["medians"]:
        peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] else ""
        ms = f"{row['ms']:.1f}" if row["ms"] is not None else ""
        lines.append(f"| {row['what']} | {row['variant']} | {row['images_per_s']:.1f} | {ms} | {peak} |")
    lines += ["", "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {r['name']} | {r['status']} | {r.get('seconds', '')} |" for r in report["steps"]]
    return "\n".join(lines) + "\n"


def machine(device: str) -> dict[str, Any]:
    import torch

    name = torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else "cpu"
    return {
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "gpu_check")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu, which --dry-run implies)")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at tiny sizes (HND only)")
    parser.add_argument("--plan", action="store_true", help="print and compose the commands, run nothing")
    args = parser.parse_args(argv)
    sizes, device = (DRY, "cpu") if args.dry_run else (FULL, args.device)
    out = args.output.resolve()
    steps = commands(out, device, sizes)
    compose_all(steps)
    settings = {**machine(device), **{k: v for k, v in sizes.items() if k != "image_size"}, "dry_run": args.dry_run}
    print("GPU check settings:", json.dumps(settings), flush=True)
    if args.plan:
        for step in steps:
            print("python -m hnd_lightning." + step["config"], " ".join(step["overrides"]))
        return 0
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            print("No CUDA device is visible: run with --dry-run (CPU) or on a GPU machine.", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + sizes["budget_s"]
    write_images(out / "data", sizes)
    records = []
    for step in steps:
        records.append(run_step(step, deadline, out))
        print(f"{step['name']}: {records[-1]['status']} ({records[-1].get('seconds', 0)} s)", flush=True)
    report = {"settings": settings, "steps": records, "medians": medians(records)}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report), flush=True)
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
