"""Scaling out: DDP with frozen teachers and tails, rank-zero outputs, and the SLURM launcher config."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config, tiny_overrides
from omegaconf import OmegaConf
from safetensors import safe_open


def run_cli(output_root: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hnd_lightning.train", *args, f"paths.output_root={output_root}"]
    output_root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(command, cwd=output_root, env=env, capture_output=True, text=True, timeout=600)


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


def test_slurm_launcher_config_composes_one_task_per_gpu():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the `slurm` extra")
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
    assert launcher["cpus_per_task"] == 6 and launcher["partition"] == "gpu"
    assert cfg.trainer.strategy.find_unused_parameters is False and cfg.trainer.sync_batchnorm is False
