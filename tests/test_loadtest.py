"""The load test command: K clients against a served split, with and without dynamic batching."""

from __future__ import annotations

import json

import pytest
from conftest import compose_config

pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')

from test_serve import split_artifacts  # noqa: E402

from hnd_lightning.loadtest import LOADTEST_JSON, loadtest  # noqa: E402
from hnd_lightning.runtime.device.loadgen import device_payloads, format_load_table, run_load  # noqa: E402
from hnd_lightning.runtime.server.models import load_served_models  # noqa: E402
from hnd_lightning.runtime.server.server import ServerSettings, ServerThread  # noqa: E402
from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService  # noqa: E402


@pytest.mark.parametrize("max_batch_size", [1, 8])
def test_load_generator_counts_requests_latency_and_batch_sizes(tmp_path_factory, max_batch_size):
    artifacts = split_artifacts(tmp_path_factory)
    service = InferenceService(
        load_served_models(artifacts), BatchingSettings(max_batch_size=max_batch_size, max_queue=64)
    )
    payloads = device_payloads(str(artifacts), 3)
    assert [p["bottleneck"].shape for p in payloads] == [(1, 3, 5, 5)] * 3 and payloads[0][
        "scale"
    ].dtype.name == "float32"
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        result = run_load(
            f"grpc://{server.grpc_url}", "server", payloads, concurrency=4, duration_s=0.8, max_requests=40
        )
    assert result["errors"] == {} and 0 < result["ok"] == result["requests"] <= 40
    assert sum(result["batch_sizes"].values()) == result["ok"] and max(result["batch_sizes"]) <= max_batch_size
    assert result["images_per_s"] == pytest.approx(result["ok"] / result["duration_s"])
    assert result["overhead_ms"]["p50"] < result["latency_ms"]["p50"]
    assert "grpc" in format_load_table([{**result, "mode": "m", "protocol": "grpc"}])


@pytest.mark.slow  # two server processes start (about 35 s on the shared 2-core machine)
def test_loadtest_runs_both_batching_modes(tmp_path_factory, tmp_path):
    artifacts = split_artifacts(tmp_path_factory)
    cfg = compose_config(
        "loadtest",
        [
            f"artifacts={artifacts}",
            "concurrency=4",
            "duration_s=1",
            "warmup_requests=1",
            "num_payloads=4",
            "protocols=[grpc]",
        ],
        tmp_path,
    )
    report = loadtest(cfg)
    assert json.loads((tmp_path / LOADTEST_JSON).read_text())["dynamic_over_batch1_throughput"] == pytest.approx(
        report["dynamic_over_batch1_throughput"]
    )
    results = {(r["mode"], r["protocol"]): r for r in report["results"]}
    assert sorted(results) == [("batch1", "grpc"), ("dynamic", "grpc")]
    for result in results.values():
        assert result["errors"] == {} and result["ok"] == result["requests"] > 0
        assert result["duration_s"] >= 1 and result["images_per_s"] > 0
        assert result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["p99"]
        assert sum(result["batch_sizes"].values()) == result["ok"]
    assert set(results[("batch1", "grpc")]["batch_sizes"]) == {1}
    # four clients in a closed loop against one model: dynamic batching groups the waiting requests
    assert max(results[("dynamic", "grpc")]["batch_sizes"]) > 1
    assert set(report["dynamic_over_batch1_throughput"]) == {"grpc"}
    assert (tmp_path / "server_dynamic" / "server.json").is_file()
