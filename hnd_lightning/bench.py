"""Benchmark every method on one batch: `python -m hnd_lightning.bench model=densenet169 batch=8`.

In one process, builds every subject below once, then `rounds` times gives each a turn of `warmup`
untimed and `repeats` timed steps on the same batch (interleaved, so a busy spell of a shared machine
slows every subject alike); medians and spread are over all timed steps. The subjects:

- `train`: one optimizer step of each method (original, naive, KD, HND) through the real Lightning
  path: its LightningModule (`training_step`, `configure_optimizers`) run by a Lightning `Trainer`;
  a step is the time between two consecutive `on_train_batch_end` hooks, so batch fetching, hooks,
  logging, backward and the optimizer step all count.
- `plain_pytorch`: the same HND step written as a plain PyTorch loop over the same models, optimizer
  and batches, with no framework; its ratio to the Lightning step is the framework's overhead.
- `infer`: the student at inference, part by part: `device` (encoder: image -> bottleneck tensor),
  `server` (decoder + tail: bottleneck tensor -> logits) and `student` (the whole split model), and the
  whole `teacher` (all on the device, or all on the server). With `weak_device.cpu_quota` or
  `weak_device.slowdown` they run as a weaker device does (`infer`) and also unthrottled
  (`infer_unthrottled`), in turns; the ratios give the slowdown reached. A bench report is a speed
  profile of its machine for `analyze` (`device_profile.measured=PATH`).
- `data` (with `data_root=PATH`): images/s of JPEG decoding + training augmentation of the ImageFolder
  `PATH/train`, for each DataLoader worker count in `data_workers`.

Peak memory per subject and its scope: `hnd_lightning/benchmark/memory.py`. Speed ratios (HND over
KD, Lightning over the plain loop, ...) are medians over rounds of each round's ratio. Prints the
settings and a markdown table; `output=PATH` also writes the JSON report {"settings": {...},
"results": [{"method", "phase", "part", "images_per_s", "peak_memory_mb", ...}], "ratios": {...}}
and the table as `<stem>.md` and `<stem>.csv` beside it. The pieces live in `hnd_lightning/benchmark/`.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from hnd_lightning.benchmark.report import format_table, write_report
from hnd_lightning.benchmark.run import run_benchmark


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    report = run_benchmark(cfg)
    print(format_table(report), flush=True)
    if cfg.output:
        paths = write_report(report, cfg.output)
        print(f"Written: {', '.join(str(path) for path in paths.values())}", file=sys.stderr)


if __name__ == "__main__":
    main()
