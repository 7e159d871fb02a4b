"""The entropy-coded split over the network: framed bitstreams, answers equal to in-process, bad streams refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("compressai", reason='needs the entropy extra: pip install -e ".[entropy]"')
pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')

from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from hnd_lightning.methods import EntropicStudentMethod  # noqa: E402
from hnd_lightning.models import build_teacher  # noqa: E402
from hnd_lightning.models.artifacts import load_split_artifacts  # noqa: E402
from hnd_lightning.runtime.common.bitstream import HEADER_BYTES, frame, frames_array, unframe  # noqa: E402
from hnd_lightning.runtime.common.protocol import InferenceError  # noqa: E402
from hnd_lightning.runtime.device.coded import CodedDevicePart  # noqa: E402
from hnd_lightning.runtime.device.device_client import SplitClient  # noqa: E402
from hnd_lightning.runtime.device.transport import connect  # noqa: E402
from hnd_lightning.runtime.loopback import measure_split_over_loopback  # noqa: E402
from hnd_lightning.runtime.server.models import load_served_models  # noqa: E402
from hnd_lightning.runtime.server.server import ServerSettings, ServerThread  # noqa: E402
from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService  # noqa: E402

LATENT = [24, 2, 2]


@pytest.fixture(scope="module")
def coded_artifacts(tmp_path_factory):
    torch.manual_seed(0)
    method = EntropicStudentMethod(build_teacher("densenet169", 3), "densenet169", 3, 32)
    with torch.no_grad():  # a latent spread over several symbols, so images code to different strings
        for conv in method.model.encoder[::2]:
            conv.weight.mul_(3)
    directory = tmp_path_factory.mktemp("coded") / "artifacts"
    data_info = {"normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, "resize_size": 32}
    method.export_model(method.model.eval(), directory, {**data_info, "classes": ["a", "b", "c"]})
    return directory


def images(count: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]


def test_frames_round_trip_and_every_damage_is_refused_naming_the_tensor():
    payload = bytes(range(37))
    framed = frame(payload, LATENT)
    assert len(framed) == HEADER_BYTES + len(payload) and unframe(framed, LATENT) == payload
    flipped = bytearray(framed)
    flipped[HEADER_BYTES + 5] ^= 1
    damaged = {
        "truncated": framed[:-3],
        "header": framed[:10],
        "padded": framed + b"\0",
        "magic": b"JPEG" + framed[4:],
        "version": framed[:4] + b"\x09" + framed[5:],
        "CRC32": bytes(flipped),
        "latent shape": frame(payload, [24, 3, 3]),
    }
    for problem, data in damaged.items():
        with pytest.raises(InferenceError) as error:
            unframe(data, LATENT, "bitstream", 2)
        assert "'bitstream' element 2" in str(error.value) and error.value.http_status == 400, problem


def test_the_coded_split_over_loopback_answers_as_the_server_model_in_process(coded_artifacts):
    measured = measure_split_over_loopback(coded_artifacts, images(), num_images=4, protocol="grpc", labels=[0] * 4)
    assert measured["predictions_match"] and measured["max_abs_logit_difference"] < 1e-5
    assert HEADER_BYTES < measured["bytes_payload"] < 200  # 96 symbols coded, plus the frame header


def test_the_coded_split_over_rest_answers_as_the_composed_model_in_process(coded_artifacts):
    # the same answers as the composed model in this process, which rounds the latent as the coder does
    model = load_split_artifacts(coded_artifacts).model()
    service = InferenceService(load_served_models(coded_artifacts), BatchingSettings(4, 0.0, 16))
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        transport = connect(server.http_url)
        client = SplitClient(coded_artifacts, transport)
        assert client.model == "server" and client.coded
        for image in images():
            prepared = client.prepare(image)
            record = client.run("split", prepared)
            with torch.no_grad():
                expected = model(torch.from_numpy(prepared.array)).numpy()
            np.testing.assert_allclose(record["logits"], expected, atol=1e-5, rtol=0)
        transport.close()


def test_truncated_or_foreign_bitstreams_get_400_naming_the_tensor_and_the_server_keeps_serving(coded_artifacts):
    service = InferenceService(load_served_models(coded_artifacts), BatchingSettings(4, 0.0, 16))
    model = load_split_artifacts(coded_artifacts).model()
    with torch.no_grad():
        _, strings = model.coded_logits(torch.randn(2, 3, 32, 32))
    good = frames_array(strings, LATENT)
    truncated = good.copy()
    truncated[1] = good[1][:-2]
    foreign = np.empty(1, dtype=object)
    foreign[0] = b"\xff\xd8\xff\xe0" + bytes(40)  # a JPEG's start
    with ServerThread(service, ServerSettings(http_port=0, grpc_port=0)) as server:
        for url in (server.http_url, f"grpc://{server.grpc_url}"):
            transport = connect(url)
            for bad, phrase in ((truncated, "element 1"), (foreign, "not an entropy-coded latent frame")):
                with pytest.raises(InferenceError) as error:
                    transport.infer("server", {"bitstream": bad}, ["logits"])
                assert "'bitstream'" in str(error.value) and phrase in str(error.value)
                assert error.value.kind == "invalid" and (
                    "400" in str(error.value) or "INVALID_ARGUMENT" in str(error.value)
                )
                reply = transport.infer("server", {"bitstream": good}, ["logits"])  # and the next one is served
                assert reply.outputs["logits"].shape == (2, 3)
            transport.close()


@pytest.mark.slow
def test_deploy_exports_encoder_and_decoder_with_the_coder_between_and_both_sides_run_them(coded_artifacts, tmp_path):
    pytest.importorskip("onnxruntime", reason='needs the deploy extra: pip install -e ".[deploy]"')
    from conftest import compose_config

    from hnd_lightning.deploy import deploy

    description = deploy(compose_config("deploy", [f"artifacts={coded_artifacts}"], tmp_path))
    assert description["entropy_coded"] and description["model_repository"] is None
    assert [t["name"] for t in description["device"]["outputs"]] == ["latent"]
    assert [t["name"] for t in description["server"]["inputs"]] == ["latent"]
    assert "decompress" in description["what_runs_where"]["server"]
    check = description["verification"]
    assert check["max_abs_logit_difference"] < 1e-3 and check["symbols_differing"] == 0
    assert json.loads((tmp_path / "deploy.json").read_text())["sent"]["tensor"] == "bitstream"
    # the device codes with device.onnx, the server decodes into server.onnx: the same answers as PyTorch
    onnx_models = load_served_models(coded_artifacts, runtime="onnxruntime", deploy_dir=tmp_path)
    torch_models = load_served_models(coded_artifacts)
    assert onnx_models["server"].describe()["platform"] == "onnxruntime_onnx"
    split = load_split_artifacts(coded_artifacts)
    onnx_device = CodedDevicePart(split, "onnxruntime", deploy_dir=tmp_path)
    torch_device = CodedDevicePart(load_split_artifacts(coded_artifacts))
    batch = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    payload = onnx_device(batch)
    assert list(payload["bitstream"]) == list(torch_device(batch)["bitstream"])
    np.testing.assert_allclose(
        onnx_models["server"].run(payload)["logits"], torch_models["server"].run(payload)["logits"], atol=1e-4, rtol=0
    )


def test_evaluate_tests_an_entropy_coded_split_through_its_bitstream(coded_artifacts, image_folder, tmp_path):
    from conftest import compose_config

    from hnd_lightning.runs.evaluation import evaluate

    overrides = [
        f"artifacts={coded_artifacts}",
        f"data.root={image_folder}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.holdout=1",
        "data.eval_batch_size=2",
        "trainer.accelerator=cpu",
        "allow_relabelled=true",
    ]
    results = evaluate(compose_config("evaluate", overrides, tmp_path))
    assert set(results["metrics"]) == {"test/acc1", "test/acc5"}  # no 8-bit link for a coded latent
    assert set(results["payload_bytes_per_image"]) == {"coded_bytes_mean", "coded_bytes_p95", "estimated_bytes_mean"}
    assert results["payload_bytes_per_image"]["coded_bytes_mean"] > 0
