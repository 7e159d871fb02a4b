"""Faults a long training campaign meets: kills, SIGTERM, torn and damaged files, non-finite losses.

The kill campaigns start real training processes (`python -m hnd_lightning.train`, DenseNet-169 at
32 x 32 on a tiny image folder), kill them with SIGKILL or SIGTERM at random steps and in the middle of
checkpoint writes, with TMPDIR on another filesystem, and re-run the same command after each kill.
After every kill: no torn file (every checkpoint and JSON file reads back), nothing in TMPDIR, and
the training lost is within the promise (SIGTERM: nothing; SIGKILL: at most `checkpoint.every_minutes`
plus the steps in flight). `test_kill_campaign_of_24_kills` is the one docs/results/faults.md quotes.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import re
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
from conftest import compose_train_config, tiny_overrides

from hnd_lightning.callbacks import NonFiniteLossError
from hnd_lightning.callbacks.checkpointing import (
    AtomicCheckpointIO,
    DamagedCheckpointError,
    checkpoint_damage,
    checkpoint_progress,
)
from hnd_lightning.files import TEMP_PREFIX, remove_temp_files, write_json
from hnd_lightning.runs.record import RunInterrupted, failed_results, write_results
from hnd_lightning.runs.training import train

TESTS_DIR = Path(__file__).resolve().parent
SIGTERM_EXIT = 128 + signal.SIGTERM


# ----------------------------------------------------------------------------- inside the victims
class StepProbe(pl.Callback):
    """Logs every finished training step of a victim as a JSON line; can SIGTERM its own process once.

    Configured by the tests as `+callbacks.probe._target_=test_faults.StepProbe` (tests/ on PYTHONPATH).
    It runs after the RecoveryCheckpoint callback, so a step is logged once its checkpoint (if due) is written.

    Args:
        path: the JSON-lines log.
        signal_at_step: send SIGTERM to this process when this global step is logged, if `arm` exists
            (the file is removed, so a re-run does not fire again); -1: never.
        only_job: fire only in this Hydra job number of a multirun.
    """

    def __init__(
        self, path: str, signal_at_step: int = -1, arm: str | None = None, only_job: int | None = None
    ) -> None:
        self.path, self.signal_at_step, self.arm, self.only_job = Path(path), signal_at_step, arm, only_job

    def _job(self) -> int | None:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().job.get("num") if HydraConfig.initialized() else None

    def _log(self, **record: Any) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({**record, "job": self._job(), "pid": os.getpid(), "t": time.time()}) + "\n")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(event="start", step=trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._log(event="step", step=trainer.global_step, epoch=trainer.current_epoch)
        armed = self.arm is not None and Path(self.arm).exists()
        if trainer.global_step == self.signal_at_step and armed and self.only_job in (None, self._job()):
            Path(self.arm).unlink()
            os.kill(os.getpid(), signal.SIGTERM)


# ----------------------------------------------------------------------------- helpers
def victim_overrides(data_root: Path, probe: Path, *extra: str) -> list[str]:
    """A short real (not fast_dev_run) CPU training run with the step probe."""
    base = [o for o in tiny_overrides("densenet169", "hnd", data_root) if o != "debug=fast_dev_run"]
    return [
        *base,
        "trainer.accelerator=cpu",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "+trainer.enable_progress_bar=false",
        "+callbacks.probe._target_=test_faults.StepProbe",
        f"+callbacks.probe.path={probe}",
        *extra,
    ]


def victim_env(tmpdir: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hnd_lightning.train", *args]


def other_filesystem_tmpdir(tmp_path: Path) -> Path:
    """A fresh TMPDIR on another filesystem than `tmp_path` (/dev/shm where it is one), else beside it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = shm / f"hnd-faults-{os.getpid()}-{tmp_path.name}"
    else:
        folder = tmp_path / "tmpdir"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_probe(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def strict_json(path: Path) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds the non-JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def torn_files(run_dir: Path) -> list[str]:
    """Files of a run directory that do not read back: damaged checkpoints, invalid JSON, bad safetensors."""
    from safetensors import safe_open

    torn = []
    for path in run_dir.rglob("*"):
        if not path.is_file() or path.name.startswith(TEMP_PREFIX):
            continue
        try:
            if path.suffix == ".ckpt":
                if checkpoint_damage(path) is not None:
                    raise ValueError(checkpoint_damage(path))
                checkpoint_progress(path)
            elif path.suffix == ".json":
                strict_json(path)
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as handle:
                    [handle.get_tensor(key) for key in handle.keys()]
        except Exception as error:  # noqa: BLE001 - any failure to read back is a torn file
            torn.append(f"{path}: {error}")
    return torn


def temp_files(run_dir: Path) -> set[Path]:
    return set(run_dir.rglob(f"{TEMP_PREFIX}*"))


def lost_training(records: list[dict[str, Any]], checkpoint_step: int) -> tuple[int, float, float]:
    """(steps lost, seconds of training lost, the slowest gap between two events) of one killed attempt.

    `records` are the attempt's probe events: its start (the step it resumed at) and each step.
    """
    start = next(record for record in records if record["event"] == "start")
    last = max(records, key=lambda record: record["step"])
    times = [record["t"] for record in records]
    slowest = max((b - a for a, b in zip(times, times[1:])), default=0.0)
    assert checkpoint_step >= start["step"], "a checkpoint went back before the step the attempt resumed at"
    if checkpoint_step >= last["step"]:
        return 0, 0.0, slowest
    reference = start if checkpoint_step == start["step"] else next(r for r in records if r["step"] == checkpoint_step)
    return last["step"] - checkpoint_step, last["t"] - reference["t"], slowest


def wait_for(condition, process: subprocess.Popen, timeout: float) -> bool:
    """Poll `condition` every 2 ms until it holds (True) or `process` ends / `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.002)
    return False


# ----------------------------------------------------------------------------- kill campaigns
def kill_campaign(
    image_folder: Path,
    tmp_path: Path,
    kills: list[tuple[int, str]],
    seed: int = 0,
    every_minutes: float = 0.01,
    epochs: int = 4,
    batches: int = 4,
) -> dict[str, Any]:
    """Kill one training run as `kills` says ((signal, "step" | "write") each), re-running it after each.

    Returns the counts docs/results/faults.md reports. Asserts after every kill that nothing is torn, TMPDIR
    holds nothing, leftovers of earlier kills were removed, and the training lost is within the bound.
    """
    rng = random.Random(seed)
    run_dir, probe, logs = tmp_path / "run", tmp_path / "steps.jsonl", tmp_path / "logs"
    logs.mkdir()
    tmpdir = other_filesystem_tmpdir(tmp_path)
    interval = 60.0 * every_minutes
    command = train_command(
        *victim_overrides(
            image_folder,
            probe,
            f"trainer.max_epochs={epochs}",
            f"trainer.limit_train_batches={batches}",
            f"checkpoint.every_minutes={every_minutes}",
            f"hydra.run.dir={run_dir}",
        )
    )
    stats: Counter = Counter()
    lost_steps, lost_seconds, previous_leftovers = [], [], set()
    checkpoints = run_dir / "checkpoints"
    for attempt, (signum, trigger) in enumerate(kills):
        known = len(read_probe(probe))
        with (logs / f"{attempt}.log").open("w") as log_file:
            process = subprocess.Popen(command, env=victim_env(tmpdir), stdout=log_file, stderr=subprocess.STDOUT)
            stepped = lambda count=1: sum(r["event"] == "step" for r in read_probe(probe)[known:]) >= count  # noqa: E731
            if trigger == "write":  # in the middle of writing a checkpoint (its temporary file exists)
                ready = wait_for(stepped, process, 300) and wait_for(
                    lambda: any(p not in previous_leftovers for p in checkpoints.glob(f"{TEMP_PREFIX}*")), process, 120
                )
            else:  # after a random number of steps of this attempt
                ready = wait_for(lambda: stepped(rng.randint(1, 6)), process, 300)
            if not ready:  # the run finished (or failed) before the kill: no more kills to place
                process.wait(120)
                assert process.returncode == 0, (logs / f"{attempt}.log").read_text()[-3000:]
                break
            os.kill(process.pid, signum)
            returncode = process.wait(120)
        stats[f"{signal.Signals(signum).name} during {'a checkpoint write' if trigger == 'write' else 'training'}"] += 1
        records = [r for r in read_probe(probe) if r["pid"] == process.pid]
        assert records, "the attempt logged no event before its kill"
        # nothing torn, nothing in TMPDIR, and what earlier kills left beside their targets removed
        assert torn_files(run_dir) == [], f"after kill {attempt}"
        assert list(tmpdir.iterdir()) == [], f"files left in TMPDIR after kill {attempt}"
        assert not previous_leftovers & temp_files(run_dir), "leftovers of a killed write were not removed"
        previous_leftovers = temp_files(run_dir)
        stats["temporary files left beside their targets (removed by the next run)"] += len(previous_leftovers)
        checkpoint_step = (
            checkpoint_progress(checkpoints / "last.ckpt")["global_step"]
            if (checkpoints / "last.ckpt").is_file()
            else 0
        )
        steps, seconds, slowest = lost_training(records, checkpoint_step)
        if signum == signal.SIGTERM:
            assert returncode == SIGTERM_EXIT, (logs / f"{attempt}.log").read_text()[-3000:]
            results = strict_json(run_dir / "results.json")
            assert results["status"] == "interrupted" and results["global_step"] == checkpoint_step
            assert "re-run the same command to continue" in results["error"]
            assert steps == 0, "SIGTERM must save the step it stopped at"
        else:
            assert returncode == -signal.SIGKILL
            # the promise: at most every_minutes of training, plus a step and a checkpoint write in flight
            assert seconds <= interval + 2 * slowest + 0.5, (seconds, interval, slowest)
        lost_steps.append(steps)
        lost_seconds.append(seconds)
    final = subprocess.run(command, env=victim_env(tmpdir), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    results = strict_json(run_dir / "results.json")
    assert results["status"] == "ok" and results["epochs"] == epochs
    assert checkpoint_progress(checkpoints / "last.ckpt")["global_step"] == epochs * batches  # every step trained
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("last")) == ["last.ckpt"]
    assert torn_files(run_dir) == [] and temp_files(run_dir) == set() and list(tmpdir.iterdir()) == []
    tmpdir.rmdir()
    return {
        "kills": len(lost_steps),
        "by kind": dict(stats),
        "max steps lost": max(lost_steps, default=0),
        "max seconds lost": max(lost_seconds, default=0.0),
        "interval seconds": interval,
        "restarts": len(lost_steps) + 1,
        "steps": epochs * batches,
    }


@pytest.mark.slow
def test_kill_campaign_of_24_kills(image_folder, tmp_path):
    """24 kills (half SIGKILL, half SIGTERM; half of each during a checkpoint write), each followed by a re-run.

    Prints the counts docs/results/faults.md reports.
    """
    kills = [
        (sig, trigger) for _ in range(6) for sig in (signal.SIGKILL, signal.SIGTERM) for trigger in ("write", "step")
    ]
    started = time.monotonic()
    report = kill_campaign(image_folder, tmp_path, kills, seed=12, epochs=16, batches=4)
    report["wall seconds"] = round(time.monotonic() - started)
    print("kill campaign:", json.dumps(report, indent=1))
    assert report["kills"] == 24


# ----------------------------------------------------------------------------- torn and damaged files
def _write_checkpoints_forever(path: str, tmpdir: str) -> None:
    os.environ["TMPDIR"] = tmpdir
    import tempfile

    tempfile.tempdir = tmpdir
    checkpoint_io = AtomicCheckpointIO()
    for step in range(1, 1_000_000):
        checkpoint_io.save_checkpoint({"step": step, "weights": torch.full((8_000_000,), float(step))}, path)


def test_kills_in_the_middle_of_checkpoint_writes_never_tear_the_previous_checkpoint(tmp_path):
    """SIGKILL a writer while its 32 MB checkpoint is half written: the previous checkpoint stays whole."""
    tmpdir = other_filesystem_tmpdir(tmp_path)
    folder = tmp_path / "checkpoints"
    path = folder / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 0, "weights": torch.zeros(8_000_000)}, path)
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    steps = []
    for _ in range(6):
        writer = context.Process(target=_write_checkpoints_forever, args=(str(path), str(tmpdir)))
        writer.start()
        deadline = time.monotonic() + 60
        while not list(folder.glob(f"{TEMP_PREFIX}*")) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.05))  # somewhere in the write, flush or rename
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(30)
        assert checkpoint_damage(path) is None
        checkpoint = torch.load(path, weights_only=True)
        assert torch.equal(checkpoint["weights"], torch.full((8_000_000,), float(checkpoint["step"])))
        steps.append(checkpoint["step"])
        assert list(tmpdir.iterdir()) == []  # nothing staged in (or leaked into) TMPDIR
    assert steps == sorted(steps)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    leftovers = remove_temp_files(folder)  # what the kills left beside the target, removed by the next run
    assert leftovers and all(p.name.startswith(f"{TEMP_PREFIX}last.ckpt.") for p in leftovers)
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]
    tmpdir.rmdir()


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def test_a_write_that_fails_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    path, results = tmp_path / "last.ckpt", tmp_path / "results.json"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    write_json(results, {"status": "ok", "metrics": {"val/acc1": float("nan")}})
    before = path.read_bytes(), results.read_text()
    assert strict_json(results)["metrics"]["val/acc1"] is None  # strict JSON: null, not NaN

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "weights": torch.ones(1000)}, path)
    with pytest.raises(OSError, match="No space left"):
        write_json(results, {"status": "failed"})
    assert (path.read_bytes(), results.read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "results.json"]  # no temporary file left
    for written in (path, results):
        assert written.stat().st_mode & 0o777 == 0o666 & ~_umask()


def short_run(image_folder: Path, *extra: str) -> list[str]:
    base = [o for o in tiny_overrides("densenet169", "hnd", image_folder) if o != "debug=fast_dev_run"]
    return [
        *base,
        "trainer.accelerator=cpu",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.num_workers=0",
        "data.persistent_workers=false",
        *extra,
    ]


def test_rerun_continues_the_run_and_refuses_other_settings_by_name(image_folder, tmp_path):
    train(compose_train_config(short_run(image_folder, "trainer.max_epochs=1"), tmp_path))
    results = train(compose_train_config(short_run(image_folder, "trainer.max_epochs=2"), tmp_path))
    assert results["epochs"] == 2
    assert checkpoint_progress(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4  # 2 + 2, not 2 again
    assert not [p.name for p in (tmp_path / "checkpoints").iterdir() if "-v" in p.name]  # no last-v1.ckpt
    other = short_run(image_folder, "trainer.max_epochs=3", "model.bottleneck_channels=6", "method.optimizer.lr=0.01")
    error = _raised(lambda: train(compose_train_config(other, tmp_path)))
    assert isinstance(error, ValueError) and "Cannot continue from" in str(error)
    assert "model.bottleneck_channels: 3 there, 6 now" in str(
        error
    ) and "method.optimizer.lr: 0.001 there, 0.01 now" in str(error)
    assert "resume=never" in str(error)


def _raised(call) -> BaseException:
    try:
        call()
    except BaseException as error:  # noqa: BLE001
        return error
    raise AssertionError("no error raised")


def test_a_damaged_last_checkpoint_names_the_file_and_offers_the_previous_good_one(image_folder, tmp_path):
    train(compose_train_config(short_run(image_folder, "trainer.max_epochs=1"), tmp_path))
    last = tmp_path / "checkpoints" / "last.ckpt"
    [best] = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("best-")]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # e.g. a copy cut short
    error = _raised(lambda: train(compose_train_config(short_run(image_folder, "trainer.max_epochs=2"), tmp_path)))
    assert isinstance(error, DamagedCheckpointError)
    assert str(last) in str(error) and f"ckpt_path={best}" in str(error) and "resume=never" in str(error)
    # Lightning's own loading (an explicit ckpt_path) names it the same way
    with pytest.raises(DamagedCheckpointError, match="previous good checkpoint"):
        AtomicCheckpointIO().load_checkpoint(last)


def test_resume_auto_takes_the_newest_of_last_ckpt_and_a_slurm_requeue_checkpoint(tmp_path):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from hnd_lightning.runs.resume import latest_checkpoint

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})
    trainer = SimpleNamespace(callbacks=[], default_root_dir=str(tmp_path))
    assert latest_checkpoint(cfg, trainer) is None  # a fresh run directory: train from scratch
    last, requeued = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    last.parent.mkdir()
    for age, path in ((20, last), (10, requeued)):  # Lightning wrote hpc_ckpt_1.ckpt on SLURM's signal, later
        path.write_bytes(b"checkpoint")
        os.utime(path, (time.time() - age, time.time() - age))
    assert latest_checkpoint(cfg, trainer) == requeued
    os.utime(last)  # a later epoch end (or SIGTERM) wrote last.ckpt after it
    assert latest_checkpoint(cfg, trainer) == last


def test_max_epochs_zero_is_refused_and_exports_nothing(image_folder, tmp_path):
    with pytest.raises(ValueError, match=r"trainer\.max_epochs=0 trains nothing"):
        train(compose_train_config(short_run(image_folder, "trainer.max_epochs=0"), tmp_path))
    assert not (tmp_path / "artifacts").exists()


def test_sigterm_saves_the_current_step_records_interrupted_and_a_rerun_continues(image_folder, tmp_path):
    probe, arm, run_dir = tmp_path / "steps.jsonl", tmp_path / "arm", tmp_path / "run"
    arm.touch()
    overrides = short_run(
        image_folder,
        "trainer.max_epochs=2",
        "+callbacks.probe._target_=test_faults.StepProbe",
        f"+callbacks.probe.path={probe}",
        "+callbacks.probe.signal_at_step=3",
        f"+callbacks.probe.arm={arm}",
    )
    with pytest.raises(RunInterrupted) as stopped:  # a SystemExit: `except Exception` lets it end the process
        train(compose_train_config(overrides, run_dir))
    assert stopped.value.code == SIGTERM_EXIT
    results = strict_json(run_dir / "results.json")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert results["status"] == "interrupted" and results["checkpoint"] == str(last)
    assert (results["epoch"], results["global_step"]) == (1, 3) and "SIGTERM" in results["error"]
    assert checkpoint_progress(last)["global_step"] == 3  # the step it stopped at, not the last epoch end
    assert not (run_dir / "artifacts").exists()

    again = train(compose_train_config(overrides, run_dir))
    assert again["status"] == "ok" and again["epochs"] == 2
    records = read_probe(probe)
    assert [r["step"] for r in records if r["event"] == "start"] == [0, 3]
    assert [r["step"] for r in records if r["event"] == "step"] == [1, 2, 3, 4]  # no step lost or repeated


def test_exit_codes_name_what_stopped_the_run():
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from hnd_lightning.runs.record import interruption_reason

    def ctrl_c_as_lightning_handles_it() -> SystemExit:
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                sys.exit(1)  # what Lightning does after its graceful shutdown
        except SystemExit as exit_request:
            return exit_request

    assert interruption_reason(SIGTERMException())[1] == SIGTERM_EXIT
    assert interruption_reason(ctrl_c_as_lightning_handles_it()) == ("Ctrl+C (KeyboardInterrupt)", 130)
    assert interruption_reason(SystemExit(-1))[1] == -1  # e.g. submitit exiting after a requeue
    assert interruption_reason(SystemExit(0))[1] == 1  # never 0: the run did not finish


def test_a_non_finite_loss_stops_the_run_before_it_spoils_a_checkpoint(image_folder, tmp_path):
    cfg = compose_train_config(
        short_run(image_folder, "trainer.max_epochs=2", "method.optimizer.lr=1e8", "checkpoint.every_minutes=0.0001"),
        tmp_path,
    )
    error = _raised(lambda: train(cfg))
    assert isinstance(error, NonFiniteLossError)
    assert re.search(r"training loss (nan|inf) in method=hnd at epoch 0, step [1-9]", str(error)), str(error)
    assert "method.optimizer.lr, now 1e+08" in str(error)
    assert not (tmp_path / "artifacts").exists()  # nothing exported
    # the checkpoint written before the failing step holds finite weights only
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())
    # what the train command records for it: status failed, strict JSON
    write_results(tmp_path, failed_results(cfg, error, 1.0))
    assert strict_json(tmp_path / "results.json")["status"] == "failed"


def test_summary_lists_jobs_that_never_started_from_the_sweeps_own_job_list(tmp_path):
    from omegaconf import OmegaConf

    from hnd_lightning import summarize
    from hnd_lightning.runs.sweep import write_summary

    OmegaConf.save(
        {
            "model": {"architecture": "densenet169", "bottleneck_channels": 12, "input_size": 224},
            "hydra": {
                "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
                "overrides": {"task": ["model.bottleneck_channels=3,6,9", "trainer.max_epochs=1"]},
                "runtime": {"choices": {"method": "hnd"}},
            },
        },
        tmp_path / "multirun.yaml",
    )
    for number, results in (
        (
            0,
            {
                "status": "ok",
                "architecture": "densenet169",
                "method": "hnd",
                "bottleneck_channels": 3,
                "input_size": 224,
                "metrics": {"test/acc1": 0.5},
            },
        ),
        (1, None),
    ):
        job = tmp_path / f"{number}_densenet169_hnd_b{3 * (number + 1)}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {"job": {"num": number}}}))
        (job / ".hydra" / "config.yaml").write_text(
            json.dumps({"model": {"architecture": "densenet169", "bottleneck_channels": 6}})
        )
        if results:
            (job / "results.json").write_text(json.dumps(results))
    rows = write_summary(tmp_path)["rows"]
    assert [(row["job"], row["status"]) for row in rows] == [
        ("0_densenet169_hnd_b3", "ok"),
        ("1_densenet169_hnd_b6", "missing"),
        ("2 (not started)", "missing"),
    ]
    assert (rows[2]["model"], rows[2]["method"], rows[2]["bottleneck_channels"]) == ("densenet169", "hnd", 9)
    assert "model.bottleneck_channels=9" in rows[2]["error"]
    assert summarize.main([str(tmp_path)]) == 1


# ----------------------------------------------------------------------------- a sweep under faults
@pytest.mark.slow
def test_sweep_records_nan_and_sigterm_lists_unstarted_jobs_and_a_rerun_continues(image_folder, tmp_path):
    """Job 1 diverges (lr 1e8), job 2 gets SIGTERM at its step 3, job 3 never starts; a re-run finishes."""
    import csv

    sweep_dir, probe, arm = tmp_path / "sweep", tmp_path / "steps.jsonl", tmp_path / "arm"
    arm.touch()
    overrides = victim_overrides(
        image_folder,
        probe,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "+callbacks.probe.signal_at_step=3",
        f"+callbacks.probe.arm={arm}",
        "+callbacks.probe.only_job=2",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.output_root={tmp_path}",
        "method.optimizer.lr=0.001,1e8,0.001,0.001",
    )
    first = subprocess.run(
        train_command("-m", *overrides), env=victim_env(), capture_output=True, text=True, timeout=600
    )
    assert first.returncode == SIGTERM_EXIT, first.stderr[-3000:]
    with (sweep_dir / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["ok", "failed", "interrupted", "missing"]
    assert "Non-finite training loss" in rows[1]["error"] and "method=hnd" in rows[1]["error"]
    assert rows[3]["job"] == "3 (not started)" and "never started" in rows[3]["error"]
    failed_dir, interrupted_dir = (sweep_dir / rows[1]["job"], sweep_dir / rows[2]["job"])
    assert strict_json(failed_dir / "results.json")["status"] == "failed"
    assert not (failed_dir / "artifacts").exists()  # nothing exported from diverged weights
    assert strict_json(interrupted_dir / "results.json")["global_step"] == 3

    rerun = subprocess.run(
        train_command("-m", *overrides, "skip_completed=true"),
        env=victim_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 1, rerun.stderr[-3000:]  # job 1 diverges again
    with (sweep_dir / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["ok", "failed", "ok", "ok"]
    resumed = [r for r in read_probe(probe) if r["job"] == 2 and r["event"] == "start"]
    assert [r["step"] for r in resumed] == [0, 3]  # job 2 continued at step 3
    assert strict_json(interrupted_dir / "results.json")["epochs"] == 2


# ----------------------------------------------------------------------------- deploying diverged weights
def test_deploy_check_fails_on_non_finite_logits_and_on_large_differences(tmp_path):
    pytest.importorskip("onnxruntime", reason='needs the deploy extra: pip install -e ".[deploy]"')
    from conftest import compose_config

    from hnd_lightning.deploy import deploy
    from hnd_lightning.models import build_student, build_teacher
    from hnd_lightning.models.artifacts import save_split_artifacts, split_metadata
    from hnd_lightning.runtime.export.onnx_export import check_verification

    torch.manual_seed(0)
    student, _ = build_student(build_teacher("densenet169", 3), "densenet169", 3, 32)
    with torch.no_grad():  # what a diverged run's best checkpoint would have held
        next(student.head.parameters()).fill_(float("nan"))
    normalization = {"mean": [0.5] * 3, "std": [0.2] * 3}
    save_split_artifacts(
        tmp_path / "artifacts",
        student,
        split_metadata(student.eval(), "densenet169", 3, 3, 32, "hnd", normalization, 32),
    )
    with pytest.raises(ValueError, match="non-finite logits"):
        deploy(compose_config("deploy", [f"artifacts={tmp_path / 'artifacts'}"], tmp_path / "deploy"))
    assert not (tmp_path / "deploy" / "deploy.json").exists()
    close = {"max_abs_logit": 20.0, "max_abs_logit_difference": 1e-5, "server_max_abs_logit_difference": 1e-6}
    check_verification(close, tmp_path)
    with pytest.raises(ValueError, match="disagree with PyTorch"):
        check_verification({**close, "max_abs_logit_difference": 0.5}, tmp_path)
