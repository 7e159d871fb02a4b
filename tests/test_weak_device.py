"""The weak device: a CPU quota that really slows the device part (and never the server), the group gone
after an error or SIGTERM, the stated slowdown where the machine forbids cgroups, and bench's parts on it."""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

from hnd_lightning.weak_device import CgroupUnavailable, CpuQuotaGroup, WeakDevice
from hnd_lightning.weak_device import cgroup as cgroup_module


def cgroups_usable() -> str | None:
    """None where this process may make a cpu quota group, else why not (the reason a test skips)."""
    try:
        CpuQuotaGroup.create(1000, 10000).remove()
    except (CgroupUnavailable, OSError) as error:
        return str(error)
    return None


CGROUP_MISSING = cgroups_usable()
needs_cgroup = pytest.mark.skipif(
    CGROUP_MISSING is not None, reason=f"no writable cgroup cpu controller: {CGROUP_MISSING}"
)


def cpu_group_of(pid: int) -> str:
    """The cpu-controller group (v1) or the unified group (v2) of process `pid`, from /proc/<pid>/cgroup."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    return next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))


def tiny_device_part():
    """The device part of a DenseNet-169 split (encoder + 8-bit quantization, B = 3) and a batch of 32 x 32
    images large enough for a few ms of work per call."""
    from hnd_lightning.models.architectures import get_architecture
    from hnd_lightning.models.quantization import DevicePart
    from hnd_lightning.models.split import build_encoder

    torch.manual_seed(0)
    return DevicePart(build_encoder(get_architecture("densenet169"), 3)).eval(), torch.randn(48, 3, 32, 32)


@needs_cgroup
def test_the_quota_slows_the_device_part_by_about_its_inverse():
    device_part, images = tiny_device_part()
    original = cpu_group_of(os.getpid())
    # a twentieth of a core: clearly slower than this machine even while other jobs load it
    with torch.inference_mode(), WeakDevice(cpu_quota=0.05) as weak:
        group = weak.group.path
        assert group.is_dir() and weak.group.period_us == 20_000 and weak.group.quota_us == 1000
        samples = [weak.timed("split", device_part, images)[1] for _ in range(5)]
    record = weak.record()
    assert not group.exists() and cpu_group_of(os.getpid()) == original  # left, then removed
    assert record["mechanism"] == "cgroup" and record["asked_slowdown"] == 20 and record["fallback"] is None
    assert record["cpu_stat"]["nr_throttled"] > 0 and record["cpu_stat"]["throttled_ms"] > 0
    row = record["computations"]["split"]
    assert row["calls"] == 5 and row["calls_throttled"] == 5
    # wall time over CPU time on the weak device: about the quota's inverse, whatever the machine's load
    assert 10 <= row["device_ms_p50"] / row["cpu_ms_p50"] <= 40
    # and clearly slower than the same calls unthrottled, timed in turns
    assert statistics.median(s["device_ms"] / s["device_reference_ms"] for s in samples) >= 1.5
    assert row["measured_slowdown_p50"] >= 1.5


@needs_cgroup
def test_the_group_is_removed_after_an_error_and_on_sigterm(tmp_path):
    original = cpu_group_of(os.getpid())
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # e.g. a server
    try:
        with pytest.raises(ZeroDivisionError), WeakDevice(cpu_quota=0.5) as weak:
            group = weak.group.path
            with weak.throttled():
                assert weak.group.holds(os.getpid()) and cpu_group_of(os.getpid()) != original
                assert not weak.group.holds(bystander.pid) and cpu_group_of(bystander.pid) == original
                _ = 1 / 0
    finally:
        bystander.kill()
    assert not group.exists() and cpu_group_of(os.getpid()) == original

    script = (
        "import time\nfrom hnd_lightning.weak_device import WeakDevice\n"
        "with WeakDevice(cpu_quota=0.5) as weak, weak.throttled():\n"
        "    print(weak.group.path, flush=True)\n    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        path = Path(child.stdout.readline().strip())
        assert path.is_dir() and str(child.pid) in (path / "cgroup.procs").read_text().split()
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 128 + signal.SIGTERM
    finally:
        child.kill()
    assert not path.exists()


def test_the_stated_slowdown_where_the_machine_forbids_cgroups(tmp_path, monkeypatch, caplog):
    # a cgroup v1 cpu hierarchy whose folders cannot be made, as on a read-only mount or for a non-root user
    fake_root = tmp_path / "cpu"
    fake_root.mkdir()
    (fake_root / "cpu.cfs_quota_us").write_text("-1\n")

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(cgroup_module.Path, "mkdir", refuse)
    calls = []

    def work(seconds: float) -> float:
        calls.append(seconds)
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
        return seconds

    with caplog.at_level(logging.WARNING), WeakDevice(cpu_quota=0.25, cgroup_root=str(fake_root)) as weak:
        samples = [weak.timed("split", work, 0.004)[1] for _ in range(3)]
    record = weak.record()
    assert record["mechanism"] == "slowdown" and "cgroup" not in record
    assert "Permission denied" in record["fallback"] and "slowdown=4" in record["fallback"]
    assert "weak_device.cpu_quota=0.25" in caplog.text and "fell back" in caplog.text
    assert len(calls) == 3 * (4 + 1)  # four runs on the weak device and one unthrottled reference per call
    assert all(s["device_ms"] >= 4 * 4 * 0.9 for s in samples)
    assert record["computations"]["split"]["measured_slowdown_p50"] == pytest.approx(4, rel=0.5)

    insisting = WeakDevice(cpu_quota=0.25, cgroup_root=str(fake_root), require_cgroup=True)
    with pytest.raises(RuntimeError, match=r"Permission denied.*require_cgroup=false"):
        insisting.__enter__()
    # no cgroup hierarchy at all where one is named
    with pytest.raises(CgroupUnavailable, match="neither cpu.cfs_quota_us"):
        CpuQuotaGroup.create(1000, 10000, cgroup_root=tmp_path)


def test_bad_weak_device_settings_are_named():
    with pytest.raises(ValueError, match="both set: pick one"):
        WeakDevice(cpu_quota=0.1, slowdown=10)
    with pytest.raises(ValueError, match="a fraction of one core"):
        WeakDevice(cpu_quota=0)
    with pytest.raises(ValueError, match="a factor >= 1"):
        WeakDevice(slowdown=0.5)
    with pytest.raises(ValueError, match="period_ms >= 10"):
        WeakDevice(cpu_quota=0.1, period_ms=5)


def client_config(artifacts, server_url: str, tmp_path: Path, extra: list[str]):
    from conftest import make_image_folder

    images = make_image_folder(tmp_path / "images", classes=1, per_class={"val": 3}, size=40) / "val"
    overrides = [f"artifacts={artifacts}", f"server={server_url}", f"images={images}", "num_images=3"]
    return compose_config("client", [*overrides, "teacher=random", "link.bandwidth_mbps=20", *extra], tmp_path)


@needs_cgroup
def test_client_json_records_the_weak_device_and_its_device_times(tmp_path_factory, tmp_path):
    pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')
    from test_serve import split_artifacts

    from hnd_lightning.client import CLIENT_JSON, run_client
    from hnd_lightning.runtime.server.models import load_served_models
    from hnd_lightning.runtime.server.server import ServerSettings, ServerThread
    from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService

    artifacts = split_artifacts(tmp_path_factory)
    service = InferenceService(load_served_models(artifacts, teacher="random"), BatchingSettings(max_batch_size=4))
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        report = run_client(
            client_config(artifacts, f"grpc://{server.grpc_url}", tmp_path, ["weak_device.cpu_quota=0.05"])
        )
    written = json.loads((tmp_path / CLIENT_JSON).read_text())
    assert written["weak_device"] == json.loads(json.dumps(report["weak_device"]))
    assert written["settings"]["weak_device"]["cpu_quota"] == 0.05
    weak = written["weak_device"]
    assert (
        weak["mechanism"] == "cgroup" and weak["cgroup"]["quota_us"] == 1000 and weak["cgroup"]["period_us"] == 20_000
    )
    assert weak["cpu_stat"]["nr_throttled"] > 0 and not Path(weak["cgroup"]["path"]).exists()
    # the whole teacher on the device is long enough to be throttled all along: clearly slower than unthrottled
    assert weak["computations"]["device_only"]["calls"] == weak["computations"]["split"]["calls"] == 3
    assert weak["computations"]["device_only"]["measured_slowdown_p50"] >= 1.5
    records = [r for r in report["records"] if r["strategy"] != "server_only"]
    assert all(np.isfinite(r["device_reference_ms"]) and r["device_ms"] > 0 for r in records)
    device_only = next(row for row in report["summary"] if row["strategy"] == "device_only")
    assert device_only["device_ms_p50"] > device_only["device_reference_ms_p50"]
    assert device_only["end_to_end_ms_p50"] == device_only["device_ms_p50"]


@pytest.mark.slow
@needs_cgroup
def test_the_server_process_never_joins_the_device_group(tmp_path_factory, tmp_path):
    pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')
    from test_serve import split_artifacts

    from hnd_lightning.client import run_client
    from hnd_lightning.runtime.server.process import ServerProcess

    artifacts = split_artifacts(tmp_path_factory)
    groups_seen, done = set(), threading.Event()
    serve = [
        f"artifacts={artifacts}",
        "teacher=random",
        "http_port=0",
        "grpc_port=0",
        f"hydra.run.dir={tmp_path}/serve",
    ]
    with ServerProcess(serve) as server:
        server_group = cpu_group_of(server.process.pid)

        def watch() -> None:  # the server's group, sampled while the client runs
            while not done.is_set():
                groups_seen.add(cpu_group_of(server.process.pid))
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            report = run_client(client_config(artifacts, server.url("grpc"), tmp_path, ["weak_device.cpu_quota=0.1"]))
        finally:
            done.set()
            watcher.join()
    assert groups_seen == {server_group}
    assert report["weak_device"]["mechanism"] == "cgroup" and report["weak_device"]["cpu_stat"]["nr_throttled"] > 0


def test_bench_times_its_inference_parts_on_the_weak_device(tmp_path):
    from hnd_lightning.benchmark.run import run_benchmark

    overrides = ["model=densenet169", "model.input_size=32", "model.num_classes=3", "batch=2", "rounds=3"]
    overrides += ["warmup=1", "repeats=1", "threads=1", "memory=false", "method_names=[hnd]", "weak_device.slowdown=3"]
    report = run_benchmark(compose_config("bench", overrides))
    phases = [(r["phase"], r["part"]) for r in report["results"] if r["phase"].startswith("infer")]
    parts = ["device", "server", "student", "teacher"]
    assert phases == [("infer", p) for p in parts] + [("infer_unthrottled", p) for p in parts]
    weak = report["settings"]["weak_device"]
    assert weak["mechanism"] == "slowdown" and weak["runs_per_computation"] == 3
    # three runs of the whole teacher per step against one: about 3x, with room for a shared machine's noise
    assert 1.5 <= report["ratios"]["weak_device_slowdown_teacher"] <= 9
    assert set(report["ratios"]) >= {f"weak_device_slowdown_{part}" for part in parts}
