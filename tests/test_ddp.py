"""Scaling out: DDP with frozen teachers and tails, rank-zero outputs, and the SLURM launcher config.

The two-process runs are the real train command on the CPU (gloo); `DistributedProbe` (configured as
`+callbacks.probe._target_=test_ddp.DistributedProbe`, tests/ on PYTHONPATH) records inside every rank
what the tests compare: the collectives each training step makes and who made them, the trained heads,
the images each rank evaluated, and where a rank stopped.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from conftest import compose_config, make_image_folder, tiny_overrides
from omegaconf import OmegaConf
from safetensors import safe_open

TESTS_DIR = Path(__file__).resolve().parent
# torch.distributed's entry points that Lightning, torchmetrics, DDP's buffer sync and the project call
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_object",
    "all_gather_into_tensor",
    "broadcast",
    "broadcast_object_list",
    "barrier",
    "reduce",
    "gather",
    "scatter",
    "_broadcast_coalesced",
)
# frames skipped when naming who made a collective: the wrappers between a caller and torch.distributed
PLUMBING = ("torch.distributed", "lightning.fabric.utilities", "lightning.pytorch.strategies", "test_ddp")


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(PLUMBING):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode() + tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class DistributedProbe(pl.Callback):
    """Inside each rank of a DDP run: writes `<folder>/rank<R>.json` at the end of the run (or its failure).

    Records per training step the collectives made between its start and end ("caller:function" counts),
    the trained parameters of every evaluated model at the end of training, the full state (buffers too)
    after each validation, the images each rank validated and tested, the accuracy of the first model on
    the whole test set computed without any sampler (rank zero), and the exception that stopped the rank.
    `nan_rank`, `nan_batch`: fill that rank's images of that training batch with NaN.
    """

    def __init__(self, folder: str, nan_rank: int = -1, nan_batch: int = -1) -> None:
        self.folder, self.nan_rank, self.nan_batch = Path(folder), nan_rank, nan_batch
        self.record: dict[str, Any] = {"steps": [], "evaluated": Counter(), "validated_states": []}
        self._counts: Counter = Counter()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or getattr(torch.distributed, "_probe_wrapped", False):
            return
        for name in COLLECTIVES:
            original = getattr(torch.distributed, name)

            def counted(*args: Any, _original=original, _name=name, **kwargs: Any) -> Any:
                self._counts[f"{_caller()}:{_name}"] += 1
                return _original(*args, **kwargs)

            setattr(torch.distributed, name, counted)
        torch.distributed._probe_wrapped = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.nan_rank and batch_idx == self.nan_batch and trainer.current_epoch == 0:
            batch[0].fill_(math.nan)
        self._step_start = Counter(self._counts)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        made = self._counts - self._step_start
        self.record["steps"].append({"epoch": trainer.current_epoch, "batch": batch_idx, "collectives": dict(made)})

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.record["evaluated"]["val"] += int(batch[1].shape[0])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.record["validated_states"].append({n: _digest(m.state_dict()) for n, m in pl_module.models.items()})

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.record["evaluated"]["test"] += int(batch[1].shape[0])

    def on_train_end(self, trainer, pl_module) -> None:
        self.record["trained_heads"] = {
            name: _digest({k: p for k, p in model.named_parameters() if p.requires_grad})
            for name, model in pl_module.models.items()
        }
        self.record["full_test_acc1_after_training"] = self._full_test_acc1(trainer, pl_module)

    def on_test_end(self, trainer, pl_module) -> None:
        self.record["full_test_acc1"] = self._full_test_acc1(trainer, pl_module)
        self._write(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.record["exception"] = {
            "type": type(exception).__name__,
            "epoch": trainer.current_epoch,
            "batch": trainer.fit_loop.epoch_loop.batch_idx,
            "global_step": trainer.global_step,
            "time": time.time(),
        }
        self._write(trainer)

    @torch.no_grad()
    def _full_test_acc1(self, trainer, pl_module) -> float | None:
        if trainer.global_rank != 0:
            return None
        loader = torch.utils.data.DataLoader(trainer.datamodule.test_set, batch_size=4)
        model = pl_module.model.eval()
        correct = sum(int((model(images).argmax(1) == labels).sum()) for images, labels in loader)
        return correct / len(trainer.datamodule.test_set)

    def _write(self, trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


def probe_env() -> dict[str, str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    return env


def run_cli(output_root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the train command to its end, and every process it started (DDP ranks hold its output pipes
    until they exit): `finished_at` is when the last of them was gone."""
    command = [sys.executable, "-m", "hnd_lightning.train", *args, f"paths.output_root={output_root}"]
    output_root.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        command,
        cwd=output_root,
        env=probe_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test can stop every rank it started
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever is left (nothing, when all went well)
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    result.finished_at = time.time()
    return result


def run_dirs(output_root: Path) -> list[Path]:
    return sorted(path.parent.parent for path in output_root.glob("runs/*/*/.hydra/config.yaml"))


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}


def test_two_process_ddp_on_cpu_writes_the_same_artifacts_as_one_process(image_folder, tmp_path):
    # two training steps per rank: with find_unused_parameters=false a trainable parameter that got no
    # gradient in the first step would make DDP fail in the second
    tiny = tiny_overrides("densenet169", "hnd", image_folder, ["trainer.fast_dev_run=2"])
    single = run_cli(tmp_path / "single", *tiny)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli(tmp_path / "ddp", *tiny, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "Starting with 2 processes" in ddp.stdout + ddp.stderr

    # both ranks worked in one run directory (no stray second one), and rank zero wrote the outputs once
    [single_dir], [ddp_dir] = run_dirs(tmp_path / "single"), run_dirs(tmp_path / "ddp")
    assert (ddp_dir / "train_ddp_process_1.log").is_file()
    assert sorted(p.name for p in (ddp_dir / "artifacts").iterdir()) == sorted(
        p.name for p in (single_dir / "artifacts").iterdir()
    )
    assert sorted(p.name for p in (ddp_dir / "artifacts").iterdir()) == [
        "head.safetensors",
        "split.json",
        "tail.safetensors",
    ]
    for name in ("head.safetensors", "tail.safetensors"):
        assert tensor_shapes(ddp_dir / "artifacts" / name) == tensor_shapes(single_dir / "artifacts" / name)
    split_single, split_ddp = (json.loads((d / "artifacts" / "split.json").read_text()) for d in (single_dir, ddp_dir))
    # the same description; the digests differ only for the head, which trained on other batches
    digests_single, digests_ddp = split_single.pop("sha256"), split_ddp.pop("sha256")
    assert split_ddp == split_single
    assert digests_ddp["tail"] == digests_single["tail"]  # the frozen tail is bit-identical

    results_single, results_ddp = (json.loads((d / "results.json").read_text()) for d in (single_dir, ddp_dir))
    assert results_ddp["status"] == "ok" and set(results_ddp) == set(results_single)
    # DDP registers only the head: the frozen teacher head and tail are neither trained nor synchronized
    assert results_ddp["trainable_parameters"] == results_single["trainable_parameters"]
    assert {"test/acc1", "test/acc5"} <= set(results_ddp["metrics"])


def ddp_overrides(data_root: Path, probe: Path, method: str, *extra: str) -> list[str]:
    """A short real (not fast_dev_run) two-process CPU run with the probe."""
    base = [o for o in tiny_overrides("densenet169", method, data_root) if o != "debug=fast_dev_run"]
    return [
        *base,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "+callbacks.probe._target_=test_ddp.DistributedProbe",
        f"+callbacks.probe.folder={probe}",
        *extra,
    ]


def read_ranks(probe: Path) -> list[dict[str, Any]]:
    return [json.loads((probe / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def odd_image_folder(tmp_path_factory) -> Path:
    # 15 training, 3 validation (holdout=1 per class) and 9 test images: no split divides by 2 ranks
    return make_image_folder(tmp_path_factory.mktemp("odd"), per_class={"train": 6, "val": 3})


def test_fused_hnd_under_ddp_trains_identical_heads_without_per_step_collectives_and_counts_each_image_once(
    odd_image_folder, tmp_path
):
    probe = tmp_path / "probe"
    overrides = ddp_overrides(
        odd_image_folder,
        probe,
        "fused_hnd",
        "model.bottleneck_channels=[3,6]",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "+callbacks.curve._target_=hnd_lightning.callbacks.EpochTestCurve",
        f"+callbacks.curve.dirpath={tmp_path / 'curve'}",
    )
    result = run_cli(tmp_path / "runs", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = run_dirs(tmp_path / "runs")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and sorted(results["models"]) == ["b3", "b6"]
    ranks = read_ranks(probe)

    # one backward of the summed losses, then each student's step: both ranks end with the same heads
    assert ranks[0]["trained_heads"] == ranks[1]["trained_heads"]
    # every validation saw rank zero's batch-norm statistics on both ranks (broadcast_buffers is off)
    assert len(ranks[0]["validated_states"]) == 2
    assert ranks[0]["validated_states"] == ranks[1]["validated_states"]

    # collectives inside the 6 training steps of each rank: none from the project's code except the
    # recovery checkpoint's first clock check, no DDP buffer broadcast; Lightning 2.6 itself broadcasts
    # a SIGTERM flag every step (loops/training_epoch_loop.py, _broadcast_sigterm_tensor)
    for rank in ranks:
        steps = [Counter(step["collectives"]) for step in rank["steps"]]
        assert len(steps) == 6
        project = [Counter({k: n for k, n in step.items() if k.startswith("hnd_lightning")}) for step in steps]
        assert project[0] == Counter({"hnd_lightning.callbacks.checkpointing:broadcast_object_list": 1})
        assert all(not made for made in project[1:]), project
        assert all(not any(key.endswith("_broadcast_coalesced") for key in step) for step in steps), steps
        assert all(sum(step.values()) == sum(steps[-1].values()) <= 1 for step in steps[1:]), steps

    # every validation and test image counted once over both ranks, and the DDP test accuracy is the
    # accuracy on the whole test set (computed on rank zero without any sampler)
    assert sum(rank["evaluated"]["val"] for rank in ranks) == 2 * 3
    assert sum(rank["evaluated"]["test"] for rank in ranks) == 9
    assert results["metrics"]["test/acc1"] == pytest.approx(ranks[0]["full_test_acc1"], abs=1e-6)
    # the epoch curve tests each image once too, and matches the whole test set after training
    curve = json.loads((tmp_path / "curve" / "epoch_curve.json").read_text())
    assert [point["test_images"] for point in curve] == [9, 9, 9]
    assert curve[-1]["test_acc1"] == pytest.approx(ranks[0]["full_test_acc1_after_training"], abs=1e-6)


def test_a_nan_on_one_rank_stops_every_rank_in_the_same_step_and_is_recorded_as_the_cause(image_folder, tmp_path):
    probe = tmp_path / "probe"
    overrides = ddp_overrides(
        image_folder,
        probe,
        "hnd",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "+callbacks.probe.nan_rank=1",
        "+callbacks.probe.nan_batch=1",
    )
    result = run_cli(tmp_path / "runs", *overrides, timeout=300)
    assert result.returncode != 0
    [run_dir] = run_dirs(tmp_path / "runs")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed"
    error = results["error"]
    assert error.startswith("NonFiniteLossError: Non-finite training loss nan on rank 1 of 2"), error
    assert "at epoch 0, step 1 (batch 1 of the epoch)" in error and "method=hnd" in error

    # both ranks stopped in that step, before its optimizer step: one step done, the same exception
    ranks = read_ranks(probe)
    for rank in ranks:
        assert [step["batch"] for step in rank["steps"]] == [0]
        assert rank["exception"]["type"] == "NonFiniteLossError"
        assert (rank["exception"]["batch"], rank["exception"]["global_step"]) == (1, 1)
    # and no rank was left waiting: within seconds of the NaN every process is gone
    stopped = [rank["exception"]["time"] for rank in ranks]
    assert max(stopped) - min(stopped) < 10
    assert result.finished_at - max(stopped) < 60


def test_ddp_inside_a_basic_multirun_is_refused_with_the_alternatives(image_folder, tmp_path):
    sweep_dir = tmp_path / "sweep"
    tiny = tiny_overrides("densenet169", "hnd", image_folder)
    result = run_cli(
        tmp_path,
        "-m",
        *tiny,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 1
    with (sweep_dir / "summary.csv").open() as handle:
        [row] = list(csv.DictReader(handle))
    assert row["status"] == "failed"
    assert (
        "cannot start its processes inside a Hydra multirun" in row["error"] and "hydra/launcher=slurm" in row["error"]
    )
    assert "Starting with 2 processes" not in result.stdout + result.stderr


def test_ddp_trainer_writes_checkpoints_atomically_and_keeps_the_recovery_callbacks(tmp_path):
    from hydra.utils import instantiate

    from hnd_lightning.callbacks import AtomicCheckpointIO, FiniteLossGuard, RecoveryCheckpoint

    cfg = compose_config("train", ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"], tmp_path)
    trainer = instantiate(cfg.trainer, callbacks=[instantiate(c) for c in cfg.callbacks.values()], logger=False)
    # the strategy (DDP, built from the config) writes through the atomic CheckpointIO on rank zero
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert {FiniteLossGuard, RecoveryCheckpoint} <= {type(callback) for callback in trainer.callbacks}
    assert torch.backends.cudnn.benchmark  # trainer.benchmark: cuDNN autotuning for the fixed crops


def test_slurm_launcher_config_composes_one_task_per_gpu():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the `slurm` extra")
    import hnd_lightning.runs.sweep  # noqa: F401 - registers the config's resolvers, as the train command does

    overrides = [
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=8",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "data.num_workers=6",
    ]
    cfg = compose_config("train", overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 8, 8)
    # the 6 DataLoader workers and the training process itself
    assert launcher["cpus_per_task"] == 7 and launcher["partition"] == "gpu"
    assert cfg.trainer.strategy.find_unused_parameters is False and cfg.trainer.sync_batchnorm is False
    assert cfg.trainer.strategy.broadcast_buffers is False
