"""The Entropic Student's two stages from one command: each its own run, the second from the first, both resumable."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import compose_train_config, tiny_overrides
from test_faults import SIGTERM_EXIT, read_probe, train_command, victim_env

pytest.importorskip("compressai", reason='needs the entropy extra: pip install -e ".[entropy]"')

from hnd_lightning.models.artifacts import load_split_artifacts  # noqa: E402
from hnd_lightning.runs.phases import run_training  # noqa: E402
from hnd_lightning.runs.resume import read_checkpoint  # noqa: E402


def test_one_run_trains_stage_one_then_stage_two_from_its_artifacts(image_folder, tmp_path):
    cfg = compose_train_config(tiny_overrides("densenet169", "entropic_student", image_folder), tmp_path)
    results = run_training(cfg)
    stage1, stage2 = (json.loads((tmp_path / stage / "results.json").read_text()) for stage in ("stage1", "stage2"))
    assert [stage1["models"]["b24"]["stage"], stage2["models"]["b24"]["stage"]] == [1, 2]
    assert results["phases"]["stage1"]["artifacts"] == stage1["artifacts"] == str(tmp_path / "stage1" / "artifacts")
    assert json.loads((tmp_path / "results.json").read_text())["artifacts"] == str(tmp_path / "stage2" / "artifacts")
    # stage 1 trains encoder, entropy model and decoder; stage 2 the decoder and the tail
    assert stage1["trainable_parameters"] < stage2["trainable_parameters"]
    assert {"train/distortion", "train/bits_per_image", "train/aux_loss"} <= set(stage1["metrics"])
    assert results["payload"]["images_coded"] == 2 and results["payload"]["coded_bytes_mean"] > 0
    first, second = (load_split_artifacts(tmp_path / stage / "artifacts") for stage in ("stage1", "stage2"))
    for key, value in first.head.state_dict().items():
        if key.startswith(("encoder.", "entropy_bottleneck.")):
            assert torch.equal(second.head.state_dict()[key], value), key


@pytest.mark.slow
def test_both_stages_run_from_one_command_and_a_killed_stage_two_resumes(image_folder, tmp_path):
    run_dir, probe, arm = tmp_path / "run", tmp_path / "probe.jsonl", tmp_path / "arm"
    base = [o for o in tiny_overrides("densenet169", "entropic_student", image_folder) if o != "debug=fast_dev_run"]
    command = train_command(
        *base,
        "trainer.accelerator=cpu",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "+trainer.enable_progress_bar=false",
        "method.phases.stage1.trainer.max_epochs=1",
        "method.phases.stage2.trainer.max_epochs=2",
        # SIGTERM at global step 3: stage 1 has 2 steps, so it lands in stage 2's second epoch
        "+callbacks.probe._target_=test_faults.StepProbe",
        f"+callbacks.probe.path={probe}",
        "+callbacks.probe.signal_at_step=3",
        f"+callbacks.probe.arm={arm}",
        f"hydra.run.dir={run_dir}",
    )
    arm.touch()
    killed = subprocess.run(command, env=victim_env(), capture_output=True, text=True, timeout=900)
    assert killed.returncode == SIGTERM_EXIT, killed.stderr[-3000:]
    stage1 = json.loads((run_dir / "stage1" / "results.json").read_text())
    assert stage1["status"] == "ok" and stage1["models"]["b24"]["stage"] == 1
    interrupted = json.loads((run_dir / "results.json").read_text())
    assert (interrupted["status"], interrupted["phase"]) == ("interrupted", "stage2")
    assert json.loads((run_dir / "stage2" / "results.json").read_text())["status"] == "interrupted"

    resumed = subprocess.run(command, env=victim_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert "Phase stage1 finished before" in log
    assert f"Continuing from {run_dir / 'stage2' / 'checkpoints' / 'last.ckpt'}" in log
    starts = [record for record in read_probe(probe) if record["event"] == "start"]
    assert [record["step"] for record in starts] == [0, 0, 3]  # stage 1, stage 2, stage 2 again from step 3

    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["method"] == "entropic_student"
    assert set(results["phases"]) == {"stage1", "stage2"} and results["epochs"] == 3
    payload = results["payload"]
    assert payload["coding"] == "entropy_coded" and payload["images_coded"] == 2
    assert payload["coded_bytes_mean"] > 0 and payload["coded_bytes_p95"] >= payload["coded_bytes_mean"] * 0.5
    for stage in ("stage1", "stage2"):
        assert (run_dir / stage / "checkpoints" / "last.ckpt").is_file()
        assert list((run_dir / stage / "tensorboard").glob("events.out.tfevents.*"))
    # stage 2 started from stage 1's artifacts and kept its encoder and entropy model: the same bitstream
    settings = read_checkpoint(run_dir / "stage2" / "checkpoints" / "last.ckpt")["hnd_run_settings"]
    assert settings["method"]["init_from"] == str(run_dir / "stage1" / "artifacts")
    first, second = (load_split_artifacts(run_dir / stage / "artifacts") for stage in ("stage1", "stage2"))
    for key, value in first.head.state_dict().items():
        if key.startswith(("encoder.", "entropy_bottleneck.")):
            assert torch.equal(second.head.state_dict()[key], value), key
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert first.model().coded_logits(images)[1] == second.model().coded_logits(images)[1]
        assert any(not torch.equal(second.head.state_dict()[k], v) for k, v in first.head.state_dict().items())

    again = subprocess.run(command, env=victim_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "Phase stage2 finished before" in again.stdout + again.stderr
