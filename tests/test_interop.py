"""The split's server part hosted for real by Triton 2.51 (Python backend), a KServe 0.21 ModelServer and
MLServer 1.7.1, each from deploy's output, as its own process from its own venv (built once into a cache,
`tests/servers/venvs.py`), and by this project's own server: the device client runs the split against
each over gRPC and REST with answers equal to in-process inference, and one set of conformance checks
(`tests/servers/conformance.py`) runs against all four, with each server's known differences as data.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from conftest import compose_config

pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')
pytest.importorskip("onnxruntime", reason='needs the deploy extra: pip install -e ".[deploy]"')

from PIL import Image  # noqa: E402
from servers import conformance  # noqa: E402
from servers.hosts import kserve_process, mlserver_process, triton_process  # noqa: E402
from servers.processes import listening_addresses  # noqa: E402
from servers.venvs import PINS, ensure_venvs  # noqa: E402
from test_serve import split_artifacts  # noqa: E402

from hnd_lightning.client import CLIENT_JSON, run_client  # noqa: E402
from hnd_lightning.deploy import deploy  # noqa: E402
from hnd_lightning.runtime.device.device_client import SplitClient  # noqa: E402
from hnd_lightning.runtime.device.transport import connect  # noqa: E402
from hnd_lightning.runtime.server.models import load_served_models  # noqa: E402
from hnd_lightning.runtime.server.server import ServerSettings, ServerThread  # noqa: E402
from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService  # noqa: E402

STARTERS = {"triton": triton_process, "kserve": kserve_process, "mlserver": mlserver_process}


# Triton in the default suite; KServe and MLServer in the slow one: on an empty cache (CI) their venvs
# add minutes of pip to the run (docs/results/serving.md has the times)
SERVERS = [
    pytest.param(name, marks=pytest.mark.slow) if name in ("kserve", "mlserver") else name
    for name in conformance.SERVERS
]


@pytest.fixture(scope="session")
def server_venvs(request) -> dict:
    """The venv of each foreign server this session tests (built at most once per session and cache, side
    by side; a file lock keeps two pytest processes from building the same one), or why it cannot be had."""
    wanted = {
        item.callspec.params["host"]
        for item in request.session.items
        if hasattr(item, "callspec") and item.callspec.params.get("host") in PINS
    }
    venvs = ensure_venvs(sorted(wanted)) if wanted else {}
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for name, venv in venvs.items():
        line = (
            venv
            if isinstance(venv, str)
            else (
                f"{name} venv {'built' if venv.record['built_now'] else 'reused'}: {venv.path} "
                f"(built in {venv.record['build_s']} s, {venv.record['size_mb']} MB)"
            )
        )
        if reporter is not None:
            reporter.write_line(line)
    return venvs


def venv_or_skip(server_venvs: dict, name: str):
    venv = server_venvs[name]
    if isinstance(venv, str):
        pytest.skip(venv)
    return venv


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """(artifacts, deploy folder) of the seeded random DenseNet-169 student at 32 x 32 (B = 3, 3 classes)."""
    artifacts = split_artifacts(tmp_path_factory)
    output = tmp_path_factory.mktemp("interop_deploy")
    deploy(compose_config("deploy", [f"artifacts={artifacts}"], output))
    return artifacts, output


@pytest.fixture(scope="module")
def in_process(deployed):
    """The server part in PyTorch in this process: payload (per-image values as [N] or [N, 1]) -> logits."""
    model = load_served_models(deployed[0])["server"]
    return lambda payload: model.run(
        {
            name: array.reshape(len(array), *array.shape[1:]) if name == "bottleneck" else array.reshape(-1)
            for name, array in payload.items()
        }
    )["logits"]


@pytest.fixture(scope="module", params=SERVERS)
def host(request, deployed, in_process, server_venvs, tmp_path_factory):
    """One server hosting deploy's server part on 127.0.0.1, as a `conformance.Host`; stopped afterwards."""
    artifacts, deploy_dir = deployed
    if request.param == "ours":
        models = load_served_models(artifacts, runtime="onnxruntime", deploy_dir=deploy_dir, threads=1)
        batching = BatchingSettings(max_batch_size=conformance.MAX_BATCH_SIZE, max_queue=64)
        with ServerThread(InferenceService(models, batching), ServerSettings(http_port=0, grpc_port=0)) as server:
            host = conformance.Host("ours", server.server.http_port, server.server.grpc_port, in_process)
            yield host
            host.close()
        return
    venv = venv_or_skip(server_venvs, request.param)
    process = STARTERS[request.param](venv, deploy_dir, tmp_path_factory.mktemp(request.param))
    with process:
        per_image = (1,) if request.param == "triton" else ()  # Triton counts the batch outside dims
        host = conformance.Host(
            request.param, process.http_port, process.grpc_port, in_process, per_image_shape=per_image
        )
        host.process = process
        yield host
        host.close()


def test_every_server_listens_on_loopback_only(host):
    """KServe binds 0.0.0.0 and [::] itself: its adapter's --bind must hold; Triton and MLServer by settings."""
    ports = [host.http_port, host.grpc_port, *([host.process.metrics_port] if getattr(host, "process", None) else [])]
    addresses = listening_addresses([port for port in ports if port])
    # gRPC's core binds an IPv6 socket holding the IPv4-mapped loopback address: still this machine only
    assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses


@pytest.mark.parametrize("check", list(conformance.CHECKS))
def test_conformance(host, check):
    expected, why = conformance.expectation(host.name, check)
    assert conformance.CHECKS[check](host) == expected, f"{host.name}: {check}" + (f" ({why})" if why else "")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_device_client_runs_the_split_against_each_server(host, deployed, in_process, protocol):
    artifacts, deploy_dir = deployed
    port = host.grpc_port if protocol == "grpc" else host.http_port
    transport = connect(f"{protocol}://127.0.0.1:{port}")
    try:  # the device part from deploy's device.onnx, as a device would run it
        client = SplitClient(artifacts, transport, runtime="onnxruntime", deploy_dir=deploy_dir)
        assert client.model == "server"
        for index, color in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
            image = client.prepare(Image.new("RGB", (40, 40), color))
            inputs, _ = client.payload(image)
            record = client.run("split", image)
            np.testing.assert_allclose(record["logits"], in_process(inputs), atol=1e-4, rtol=0, err_msg=str(index))
            assert record["round_trip_ms"] > 0
    finally:
        transport.close()
    if protocol == "http" and host.name == "mlserver":  # no binary extension: the client fell back to JSON
        assert transport.binary is False and "HTTP 500" in transport.fallback
    elif protocol == "http":
        assert transport.binary is True and transport.fallback is None


def test_triton_runs_concurrent_requests_as_one_batch(host):
    """Triton hands model.py a list of requests: it concatenates them, runs once and splits the answers."""
    if host.name != "triton":
        pytest.skip("Triton only: its batch statistics")
    payloads = [host.payload(rows=1 + index % 2, seed=index) for index in range(12)]
    answers: dict[int, str] = {}
    start = threading.Barrier(len(payloads))

    def send(index: int) -> None:
        start.wait()
        answers[index] = conformance.grpc_infer(host, payloads[index])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == dict.fromkeys(range(len(payloads)), "ok")
    stats = json.loads(host.http.request("GET", "/v2/models/server/stats").data)["model_stats"][0]
    sizes = {int(entry["batch_size"]): int(entry["compute_infer"]["count"]) for entry in stats["batch_stats"]}
    assert max(sizes) > 2 and max(sizes) <= conformance.MAX_BATCH_SIZE, sizes


def test_the_client_command_says_when_it_fell_back_to_json(host, deployed, tmp_path, image_folder):
    if host.name not in ("mlserver", "ours"):
        pytest.skip("MLServer (no binary REST) against ours (binary)")
    cfg = compose_config(
        "client",
        [
            f"artifacts={deployed[0]}",
            f"server=http://127.0.0.1:{host.http_port}",
            f"images={image_folder / 'val'}",
            "num_images=2",
            "strategies=[split]",
            "teacher=null",
            "warmup=0",
        ],
        tmp_path,
    )
    report = json.loads(json.dumps(run_client(cfg)))
    assert json.loads((tmp_path / CLIENT_JSON).read_text())["transport"] == report["transport"]
    if host.name == "mlserver":
        assert report["transport"]["binary"] is False and "HTTP 500" in report["transport"]["binary_fallback"]
    else:
        assert report["transport"] == {"protocol": "http", "binary": True, "binary_fallback": None}
