"""The device client: server and client in one test over loopback, the three strategies measured with
an emulated link beside analyze's prediction, the quickstart's loopback call, and Triton-shaped models."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from conftest import compose_config, make_image_folder
from PIL import Image

pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')

from test_serve import CLASSES, split_artifacts  # noqa: E402

from hnd_lightning.analysis.latency import link_ms  # noqa: E402
from hnd_lightning.client import CLIENT_JSON, run_client  # noqa: E402
from hnd_lightning.data import eval_transform  # noqa: E402
from hnd_lightning.models.artifacts import load_split_artifacts  # noqa: E402
from hnd_lightning.models.quantization import with_quantized_bottleneck  # noqa: E402
from hnd_lightning.runtime.common.images import list_images  # noqa: E402
from hnd_lightning.runtime.device.device_client import SplitClient  # noqa: E402
from hnd_lightning.runtime.device.link import EmulatedLink  # noqa: E402
from hnd_lightning.runtime.device.report import PLOT_FILE  # noqa: E402
from hnd_lightning.runtime.loopback import measure_split_over_loopback  # noqa: E402
from hnd_lightning.runtime.server.models import load_served_models  # noqa: E402
from hnd_lightning.runtime.server.server import ServerSettings, ServerThread  # noqa: E402
from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService  # noqa: E402


@pytest.fixture(scope="module")
def labelled_images(tmp_path_factory):
    """An ImageFolder split whose class folders carry the artifacts' class names (a, b, c)."""
    root = make_image_folder(tmp_path_factory.mktemp("client_images"), classes=3, per_class={"val": 2}, size=40)
    for index, name in enumerate(CLASSES):
        (root / "val" / f"class{index}").rename(root / "val" / name)
    return root / "val"


def in_process_predictions(artifacts, folder) -> list[int]:
    """Top-1 of the quantized composed student on the folder's images, through torchvision's eval transform."""
    split = load_split_artifacts(artifacts)
    meta = split.metadata["input"]
    transform = eval_transform(meta["shape"][-1], meta["resize_size"], meta["mean"], meta["std"])
    model = with_quantized_bottleneck(split.model())
    predictions = []
    with torch.no_grad():
        for item in list_images(folder, None, CLASSES):
            with Image.open(item.path) as image:
                predictions.append(int(model(transform(image.convert("RGB"))[None]).argmax()))
    return predictions


def test_client_command_measures_the_three_strategies_against_the_prediction(
    tmp_path_factory, labelled_images, tmp_path
):
    artifacts = split_artifacts(tmp_path_factory)
    models = load_served_models(artifacts, teacher="random")
    service = InferenceService(models, BatchingSettings(max_batch_size=4))
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        cfg = compose_config(
            "client",
            [
                f"artifacts={artifacts}",
                f"server=grpc://{server.grpc_url}",
                f"images={labelled_images}",
                "num_images=6",
                "teacher=random",
                "link.bandwidth_mbps=[2,50]",
                "link.rtt_ms=4",
            ],
            tmp_path,
        )
        report = run_client(cfg)
    assert json.loads((tmp_path / CLIENT_JSON).read_text())["summary"] == json.loads(json.dumps(report["summary"]))
    assert (tmp_path / PLOT_FILE).stat().st_size > 0
    rows = {(row["bandwidth_mbps"], row["strategy"]): row for row in report["summary"]}
    assert sorted(rows) == sorted((b, s) for b in (2, 50) for s in ("device_only", "server_only", "split"))
    assert all(row["images"] == 6 and np.isfinite(row["predicted_ms"]) for row in rows.values())
    for bandwidth in (2, 50):
        split, jpeg = rows[(bandwidth, "split")], rows[(bandwidth, "server_only")]
        # the emulated link: every transfer waits at least its bytes over the bandwidth plus the RTT
        for row in (split, jpeg):
            assert row["transfer_ms_p50"] >= link_ms(row["bytes_sent"] + row["bytes_received"], bandwidth) + 4 - 0.5
        assert split["device_ms_p50"] > 0 and split["server_compute_ms_p50"] > 0
        assert rows[(bandwidth, "device_only")]["transfer_ms_p50"] == 0
    assert rows[(2, "server_only")]["bytes_sent"] > rows[(2, "split")]["bytes_sent"]  # the JPEG outweighs 80 bytes
    # labelled images: top-1 of the split over the network equals in-process inference's
    expected = in_process_predictions(artifacts, labelled_images)
    labels = [item.label for item in list_images(labelled_images, None, CLASSES)]
    assert rows[(2, "split")]["top1"] == pytest.approx(np.mean(np.array(expected) == np.array(labels)))
    split_records = [r for r in report["records"] if r["strategy"] == "split" and r["bandwidth_mbps"] == 2]
    assert [r["prediction"] for r in split_records] == expected


def test_loopback_measurement_for_the_quickstart(tmp_path_factory, labelled_images):
    artifacts = split_artifacts(tmp_path_factory)
    for protocol in ("grpc", "http"):
        result = measure_split_over_loopback(artifacts, labelled_images, num_images=4, protocol=protocol)
        assert result["images"] == 4 and result["protocol"] == protocol and result["model"] == "server"
        assert result["predictions_match"] and result["max_abs_logit_difference"] <= 1e-5
        assert result["bytes_payload"] == 3 * 5 * 5 + 5 < result["bytes_sent"]
        assert result["top1"] is not None
        latency = result["latency_ms"]
        assert latency["device"]["p50"] > 0 and latency["server_compute"]["p50"] > 0
        assert latency["end_to_end"]["p50"] >= latency["device"]["p50"] + latency["server"]["p50"] - 1e-6


class TritonLikeTransport:
    """Answers metadata as Triton does for deploy's model repository (per-image tensors as [-1, 1])."""

    link = EmulatedLink()

    def __init__(self, bottleneck_shape):
        self.bottleneck_shape = bottleneck_shape

    def metadata(self, model):
        if model != "server":
            return None
        shapes = {"bottleneck": [-1, *self.bottleneck_shape], "scale": [-1, 1], "zero_point": [-1, 1]}
        return {"inputs": [{"name": n, "datatype": "UINT8", "shape": s} for n, s in shapes.items()], "outputs": []}


def test_client_shapes_the_payload_as_the_server_declares_it(tmp_path_factory, labelled_images):
    artifacts = split_artifacts(tmp_path_factory)
    client = SplitClient(artifacts, TritonLikeTransport([3, 5, 5]))
    image = client.prepare(Image.new("RGB", (40, 40), (200, 10, 10)))
    payload, device_ms = client.payload(image)
    assert payload["bottleneck"].shape == (1, 3, 5, 5) and payload["bottleneck"].dtype == np.uint8
    assert payload["scale"].shape == (1, 1) and payload["zero_point"].shape == (1, 1) and device_ms > 0
    with pytest.raises(ValueError, match=r"no model for this split \(bottleneck \[3, 5, 5\]"):
        SplitClient(artifacts, TritonLikeTransport([6, 5, 5]))


def test_the_emulated_link_delays_by_size_and_shares_the_bandwidth():
    link = EmulatedLink(bandwidth_mbps=8, rtt_ms=10)  # 1 ms per 1000 bytes, 5 ms each way
    started = time.perf_counter()
    link.send(20_000)
    assert 0.024 <= time.perf_counter() - started < 0.2
    done = []

    def send():
        link.send(20_000)
        done.append(time.perf_counter())

    started = time.perf_counter()
    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(done) - started >= 0.044  # the second transfer queued behind the first: 2 x 20 ms + 5 ms
    with pytest.raises(ValueError, match="bandwidth_mbps must be positive"):
        EmulatedLink(bandwidth_mbps=0)


def test_teacher_run_loads_the_teacher_the_run_distilled_from(tmp_path_factory, tmp_path):
    from hnd_lightning.models import build_teacher
    from hnd_lightning.models.artifacts import save_teacher_artifacts
    from hnd_lightning.runtime.common.parts import load_teacher

    torch.manual_seed(3)
    teacher = build_teacher("densenet169", 3)
    (checkpoint,) = [
        p
        for p in save_teacher_artifacts(tmp_path / "teacher_run", teacher, {"architecture": "densenet169"})
        if p.suffix == ".safetensors"
    ]
    run_dir = tmp_path / "hnd_run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"model:\n  teacher:\n    weights: null\n    checkpoint: {checkpoint}\n"
    )
    artifacts = run_dir / "artifacts"
    artifacts.symlink_to(split_artifacts(tmp_path_factory), target_is_directory=True)
    metadata = load_split_artifacts(artifacts).metadata
    loaded, source = load_teacher("run", metadata, artifacts)
    assert source == f"checkpoint {checkpoint}"
    for name, value in teacher.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    (run_dir / ".hydra" / "config.yaml").write_text("model:\n  teacher:\n    weights: null\n    checkpoint: null\n")
    with pytest.raises(ValueError, match="teacher=random"):
        load_teacher("run", metadata, artifacts)


class ServedModelsTransport:
    """Answers model metadata from served models in this process (no network)."""

    link = EmulatedLink()

    def __init__(self, models):
        self.models = models

    def metadata(self, model):
        return self.models[model].describe() if model in self.models else None


def test_a_fused_runs_artifacts_serve_one_model_per_student_and_the_client_finds_its_own(tmp_path_factory, tmp_path):
    single = split_artifacts(tmp_path_factory)
    for name in ("b10", "b3"):  # students of a fused run: artifacts/b<B>/ (here the same B = 3 student twice)
        (tmp_path / name).symlink_to(single, target_is_directory=True)
    models = load_served_models(tmp_path)
    assert list(models) == ["server_b3", "server_b10"]
    client = SplitClient(tmp_path / "b3", ServedModelsTransport(models))
    assert client.model == "server_b3"


def test_the_device_part_runs_from_device_onnx(tmp_path_factory, tmp_path):
    pytest.importorskip("onnxruntime")
    from hnd_lightning.runtime.export.onnx_export import export_onnx

    artifacts = split_artifacts(tmp_path_factory)
    export_onnx(load_split_artifacts(artifacts), tmp_path)
    transport = ServedModelsTransport(load_served_models(artifacts))
    on_torch = SplitClient(artifacts, transport)
    on_onnx = SplitClient(artifacts, transport, runtime="onnxruntime", deploy_dir=tmp_path)
    image = on_torch.prepare(Image.new("RGB", (48, 40), (30, 120, 200)))
    (torch_payload, _), (onnx_payload, _) = on_torch.payload(image), on_onnx.payload(image)
    assert np.abs(torch_payload["bottleneck"].astype(int) - onnx_payload["bottleneck"].astype(int)).max() <= 1
    np.testing.assert_allclose(onnx_payload["scale"], torch_payload["scale"], rtol=1e-5)
