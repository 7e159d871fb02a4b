"""Training cost per step of each method next to HND's, on the bundled data, measured interleaved.

    PYTHONPATH=. python scripts/measure_training_cost.py [--rounds 3] [--steps 8] [--out cost.json]

Each method's training step (its loss, backward and optimizer step, as its LightningModule runs it; fused
runs: the teacher once, then every student) runs `--steps` times on the same bundled training batches
(batch 32, 32 x 32, the bundled teacher), round after round, methods interleaved, on one thread. The cost
is the process's CPU time per step (robust to other processes on the machine), and per epoch the step
times 140 (the bundled training split at batch 32); validation and test are not included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from hnd_lightning.data import BundledDataModule
from hnd_lightning.methods import EntropicStudentMethod, FusedGHNDMethod, FusedHNDMethod, GHNDMethod, HNDMethod
from hnd_lightning.models import build_teacher

STEPS_PER_EPOCH = 140


def adam(parameters):
    return torch.optim.Adam(parameters, lr=1e-3)


def single(method):
    optimizer = adam(method.trainable_parameters())

    def step(images, labels):
        loss = method.training_loss(images, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def fused(method):
    optimizers = [adam([p for p in s.head.parameters() if p.requires_grad]) for s in method.students.values()]

    def step(images, labels):
        with torch.no_grad():
            targets = method.teacher_targets(images)
        for student, optimizer in zip(method.students.values(), optimizers):
            loss = method.student_loss(student, images, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--root", default="outputs/datasets/fashion_mnist_subset")
    parser.add_argument("--out", default="training_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = BundledDataModule(
        root=args.root, num_classes=10, input_size=32, resize_size=36, batch_size=32, num_workers=0,
        holdout=0.1, persistent_workers=False, mean=[0.2873] * 3, std=[0.3544] * 3,
    )  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    batches = [batch for _, batch in zip(range(args.steps), data.train_dataloader())]
    teacher = build_teacher("densenet169", 10, weights="bundled", input_size=32)
    stage_one = EntropicStudentMethod(teacher, "densenet169", 10, 32, stage=1, beta=0.1)
    exported = os.path.join(os.path.dirname(args.out) or ".", "cost_stage1_artifacts")
    stage_one.export_model(stage_one.model, exported, {"normalization": {}, "resize_size": 36, "classes": None})
    stage_two = EntropicStudentMethod(teacher, "densenet169", 10, 32, stage=2, init_from=exported)
    methods = {
        "HND B=12": single(HNDMethod(teacher, "densenet169", 10, 32, 12)),
        "GHND B=12": single(GHNDMethod(teacher, "densenet169", 10, 32, 12)),
        "Entropic Student stage 1": single(stage_one),
        "Entropic Student stage 2": single(stage_two),
        "fused HND B=3,6,9,12": fused(FusedHNDMethod(teacher, "densenet169", 10, 32, [3, 6, 9, 12])),
        "fused GHND B=3,6,9,12": fused(FusedGHNDMethod(teacher, "densenet169", 10, 32, [3, 6, 9, 12])),
    }
    for method in (stage_one, stage_two):
        method.log = lambda *args, **kwargs: None
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, step in methods.items():
            step(*batches[0])  # warm-up, untimed
            started = time.process_time()
            for images, labels in batches:
                step(images, labels)
            seconds[name].append((time.process_time() - started) / len(batches))
    hnd = statistics.median(seconds["HND B=12"])
    rows = [
        {
            "method": name,
            "cpu_seconds_per_step": statistics.median(values),
            "cpu_seconds_per_epoch": STEPS_PER_EPOCH * statistics.median(values),
            "relative_to_hnd": statistics.median(values) / hnd,
            "rounds": values,
        }
        for name, values in seconds.items()
    ]
    report = {"load_average": list(os.getloadavg()), "steps": args.steps, "rounds": args.rounds, "rows": rows}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    for row in rows:
        print(f"{row['method']:<28} {row['cpu_seconds_per_epoch']:8.1f} CPU s / epoch  x{row['relative_to_hnd']:.2f}")


if __name__ == "__main__":
    main()
