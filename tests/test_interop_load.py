"""Slow: Triton 2.51 (Python backend, deploy's repository) beside this project's server under load, on the
bundled 32 x 32 server part (B = 12 student of the bundled DenseNet-169 teacher) in onnxruntime, gRPC,
closed loop; rounds interleaved so both see the same machine. Also Triton's bounded queue.

Writes `interop_load.json` (every round) into pytest's temporary folder and prints the table that
docs/results/serving.md reports; HND_INTEROP_LOAD_JSON=PATH writes it there as well.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')
pytest.importorskip("onnxruntime", reason='needs the deploy extra: pip install -e ".[deploy]"')

from servers import conformance  # noqa: E402
from servers.hosts import triton_process  # noqa: E402
from servers.venvs import ensure_venvs  # noqa: E402

from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from hnd_lightning.deploy import deploy  # noqa: E402
from hnd_lightning.models import build_student, build_teacher  # noqa: E402
from hnd_lightning.models.artifacts import save_split_artifacts, split_metadata  # noqa: E402
from hnd_lightning.runtime.device.loadgen import device_payloads, run_load  # noqa: E402
from hnd_lightning.runtime.server.process import ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow
ROUNDS, ROUND_S = 4, 4.0
# the serving settings compared (both sides alike): one model instance, onnxruntime on 1 intra-op
# thread without spinning, dynamic batching up to 16 rows with no added delay, a queue of 64
BATCHING = {"max_batch_size": 16, "max_delay_ms": 0.0, "max_queue": 64}


def bundled_split(directory: Path) -> Path:
    """The quickstart's split shape: B = 12 bottleneck on the bundled teacher at 32 x 32 (untrained head:
    the server part's compute does not depend on it)."""
    torch.manual_seed(0)
    teacher = build_teacher("densenet169", 10, weights="bundled", input_size=32)
    student, _ = build_student(teacher, "densenet169", 12, 32)
    normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    classes = [str(index) for index in range(10)]
    metadata = split_metadata(student.eval(), "densenet169", 12, 10, 32, "hnd", normalization, 36, classes)
    save_split_artifacts(directory, student, metadata)
    return directory


@pytest.fixture(scope="module")
def bundled_deploy(tmp_path_factory):
    artifacts = bundled_split(tmp_path_factory.mktemp("bundled_artifacts"))
    output = tmp_path_factory.mktemp("bundled_deploy")
    deploy(compose_config("deploy", [f"artifacts={artifacts}", "hosted.intra_op_threads=1"], output))
    return artifacts, output


@pytest.fixture(scope="module")
def triton_venv():
    venv = ensure_venvs(["triton"])["triton"]
    if isinstance(venv, str):
        pytest.skip(venv)
    return venv


def triton_batches(url_port: int) -> dict[int, int]:
    """Executions per batch size so far, from Triton's statistics (its responses carry no parameters)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{url_port}/v2/models/server/stats", timeout=10) as response:
        stats = json.loads(response.read())["model_stats"][0]
    return {int(entry["batch_size"]): int(entry["compute_infer"]["count"]) for entry in stats["batch_stats"]}


def summarize(rounds: list[dict]) -> dict:
    sizes: dict[int, int] = {}
    for result in rounds:
        for size, count in result["batch_sizes"].items():
            sizes[int(size)] = sizes.get(int(size), 0) + count
    return {
        "images_per_s": statistics.mean(r["images_per_s"] for r in rounds),
        "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in rounds),
        "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in rounds),
        "errors": sum(sum(r["errors"].values()) for r in rounds),
        "batch_sizes": dict(sorted(sizes.items())),
    }


def test_triton_and_ours_under_load_on_the_bundled_server_part(bundled_deploy, triton_venv, tmp_path):
    artifacts, deploy_dir = bundled_deploy
    payloads = device_payloads(str(artifacts), 16)
    # Triton counts the batch outside dims: per-image values go as [1, 1]
    triton_payloads = [{k: v if k == "bottleneck" else v.reshape(-1, 1) for k, v in p.items()} for p in payloads]
    overrides = [
        f"artifacts={artifacts}",
        "http_port=0",
        "grpc_port=0",
        "threads=1",
        "runtime=onnxruntime",
        f"deploy_dir={deploy_dir}",
        *(f"batching.{key}={value}" for key, value in BATCHING.items()),
        f"hydra.run.dir={tmp_path / 'ours'}",
    ]
    triton = triton_process(triton_venv, deploy_dir, tmp_path)
    results: dict = {}
    with ServerProcess(overrides, threads=1) as ours, triton:
        targets = {
            "ours": (ours.url("grpc"), payloads, None),
            "triton": (f"grpc://127.0.0.1:{triton.grpc_port}", triton_payloads, triton.http_port),
        }
        for concurrency in (1, 16):
            for round_index in range(ROUNDS):
                order = list(targets) if round_index % 2 == 0 else list(targets)[::-1]
                for name in order:
                    url, sent, stats_port = targets[name]
                    before = triton_batches(stats_port) if stats_port else None
                    result = run_load(url, "server", sent, concurrency, ROUND_S, warmup_requests=3)
                    if stats_port:  # requests per batch size, as our server's answers say them
                        after = triton_batches(stats_port)
                        executions = {size: after.get(size, 0) - before.get(size, 0) for size in after}
                        result["batch_sizes"] = {size: size * count for size, count in executions.items() if count}
                    results.setdefault(f"{name}/{concurrency}", []).append(result)
    report = {
        "load_average": list(os.getloadavg()),
        "settings": {"rounds": ROUNDS, "round_s": ROUND_S, "batching": BATCHING, "intra_op_threads": 1},
        "summary": {key: summarize(rounds) for key, rounds in results.items()},
        "single_client_p50_ratio_ours_over_triton": [
            o["latency_ms"]["p50"] / t["latency_ms"]["p50"] for o, t in zip(results["ours/1"], results["triton/1"])
        ],
        "rounds": results,
    }
    text = json.dumps(report, indent=1, default=str)
    (tmp_path / "interop_load.json").write_text(text)
    if os.environ.get("HND_INTEROP_LOAD_JSON"):
        Path(os.environ["HND_INTEROP_LOAD_JSON"]).write_text(text)
    print("server   clients  images/s  p50 ms  p99 ms  errors  batch sizes (requests)")
    for key, row in report["summary"].items():
        name, clients = key.split("/")
        sizes = " ".join(f"{size}:{count}" for size, count in row["batch_sizes"].items())
        print(
            f"{name:<8} {clients:>7} {row['images_per_s']:9.1f} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f} {row['errors']:7d}  {sizes}"
        )
    summary = report["summary"]
    assert all(row["errors"] == 0 for row in summary.values())
    for name in targets:  # 16 clients in a closed loop: both batch the waiting requests, never past 16
        assert max(summary[f"{name}/16"]["batch_sizes"]) > 1 and max(summary[f"{name}/16"]["batch_sizes"]) <= 16
    # the single-client median within 1 ms of Triton's (medians of interleaved rounds)
    assert summary["ours/1"]["p50_ms"] <= summary["triton/1"]["p50_ms"] + 1.0, summary


def test_triton_refuses_requests_past_its_bounded_queue(bundled_deploy, triton_venv, tmp_path, tmp_path_factory):
    """deploy's repository with `triton.max_queue=1`: 16-row requests from 24 clients at once fill it at once."""
    artifacts, _ = bundled_deploy
    output = tmp_path_factory.mktemp("bundled_deploy_queue1")
    deploy(compose_config("deploy", [f"artifacts={artifacts}", "triton.max_queue=1", "verify.enabled=false"], output))
    with triton_process(triton_venv, output, tmp_path) as triton:
        host = conformance.Host("triton", triton.http_port, triton.grpc_port, lambda p: None, per_image_shape=(1,))
        payload = host.payload(rows=16)
        payload["bottleneck"] = np.random.default_rng(0).integers(0, 256, (16, 12, 5, 5), dtype=np.uint8)
        codes: list[str] = []
        start = threading.Barrier(24)

        def send() -> None:
            start.wait()
            codes.append(
                conformance._code(
                    lambda: host.stub.ModelInfer(conformance._grpc_request("server", payload), timeout=60)
                )
            )

        threads = [threading.Thread(target=send) for _ in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        host.close()
    assert set(codes) == {"OK", "UNAVAILABLE"} and codes.count("OK") >= 2, codes
