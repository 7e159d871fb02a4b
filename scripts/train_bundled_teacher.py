"""Maintainers' script: train the teacher shipped with the package, then package it.

    python scripts/train_bundled_teacher.py train    # ~1 h on 2 CPU cores: the project's own train command
    python scripts/train_bundled_teacher.py package RUN_DIR

`train` runs `python -m hnd_lightning.train` with `method=original_from_scratch` on the bundled
Fashion-MNIST subset at the quickstart's 32 x 32 setting. `package` takes that run's best weights
(`artifacts/teacher.safetensors`, chosen on the hold-out `val/acc1`), stores them as float16 in
`hnd_lightning/models/bundled/`, tests the float16 copy on the bundled test split and writes the JSON
record next to it: recipe, epochs, the validation curve, test accuracy and the file's sha256.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = [
    "data=bundled",
    "model=densenet169",
    "model.input_size=32",
    "model.resize_size=36",
    "model.teacher.weights=null",
    "method=original_from_scratch",
    "trainer.max_epochs=30",
    "trainer.log_every_n_steps=20",
    "seed=42",
]


def train(run_dir: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, "-m", "hnd_lightning.train", *RECIPE, f"hydra.run.dir={run_dir}"]
    print(" ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, env=env, check=True)


def validation_curve(run_dir: Path) -> list[dict[str, float]]:
    """Per epoch: val/acc1 and the learning rate, read back from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curve: dict[int, dict[str, float]] = {}
    for events in sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = accumulator.Tags()["scalars"]
        epochs = {event.step: int(event.value) for event in accumulator.Scalars("epoch")} if "epoch" in tags else {}
        for tag, key in (("val/acc1", "val_acc1"), ("val/loss", "val_loss"), ("train/loss_epoch", "train_loss")):
            for event in accumulator.Scalars(tag) if tag in tags else []:
                epoch = epochs.get(event.step)
                if epoch is not None:
                    curve.setdefault(epoch, {"epoch": epoch})[key] = round(float(event.value), 5)
    return [curve[epoch] for epoch in sorted(curve)]


def package(run_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from hnd_lightning.files import save_safetensors, sha256_of, write_json
    from hnd_lightning.models import bundled_teacher

    results = json.loads((run_dir / "results.json").read_text())
    if results.get("status") != "ok":
        raise SystemExit(f"{run_dir} did not finish (status {results.get('status')!r})")
    weights = load_file(str(run_dir / "artifacts" / "teacher.safetensors"))
    half = {key: value.to(torch.float16) if value.is_floating_point() else value for key, value in weights.items()}
    target = bundled_teacher.WEIGHTS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(half, target)
    record = {
        "architecture": "densenet169",
        "num_classes": 10,
        "input_size": 32,
        "resize_size": 36,
        "dataset": "bundled Fashion-MNIST subset (data=bundled)",
        "dtype": "float16",
        "sha256": sha256_of(target),
        "recipe": {
            "command": "python -m hnd_lightning.train " + " ".join(RECIPE),
            "config": read_method_config(run_dir),
        },
        "epochs": results["epochs"],
        "fit_seconds": round(results["fit_seconds"], 1),
        "best_val_acc1": results["metrics"].get("best/val/acc1"),
        "test_acc1_float32": results["metrics"].get("test/acc1"),
        "validation_curve": validation_curve(run_dir),
        "trained": datetime.date.today().isoformat(),
    }
    write_json(bundled_teacher.RECORD_FILE, record)
    # The number users reproduce: the float16 file, loaded the way `model.teacher.weights=bundled` loads it.
    tested = test_float16_copy(run_dir)
    record["test_acc1"], record["test_acc5"] = tested["test_acc1"], tested["test_acc5"]
    write_json(bundled_teacher.RECORD_FILE, record)
    print(json.dumps({k: v for k, v in record.items() if k != "validation_curve"}, indent=2))


def test_float16_copy(run_dir: Path) -> dict:
    """Test the packaged float16 teacher on the bundled test split, as the quickstart's teacher stage does."""
    from hydra import compose, initialize_config_dir

    from hnd_lightning.runs.teachers import test_bundled_teacher

    overrides = [o for o in RECIPE if not o.startswith(("method=", "trainer.max_epochs"))]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*overrides, "method=original", f"paths.output_dir={run_dir / 'float16_test'}"]
        )
    return test_bundled_teacher(cfg).row


def read_method_config(run_dir: Path) -> dict:
    import yaml

    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    return {"method": config["method"], "data": {k: config["data"][k] for k in ("batch_size", "holdout", "seed")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    train_parser = sub.add_parser("train")
    train_parser.add_argument("--run-dir", type=Path, default=REPO / "outputs" / "bundled_teacher")
    package_parser = sub.add_parser("package")
    package_parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if args.step == "train":
        train(args.run_dir)
    else:
        package(args.run_dir)


if __name__ == "__main__":
    main()
