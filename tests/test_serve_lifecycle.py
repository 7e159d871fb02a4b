"""`python -m hnd_lightning.serve` as its own process: it announces its ports, and SIGTERM with requests
in flight answers every one of them before it exits."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason='needs the serve extra: pip install -e ".[serve]"')

import urllib3  # noqa: E402
from test_serve import random_payload, split_artifacts  # noqa: E402

from hnd_lightning.runtime.common.protocol import InferenceError  # noqa: E402
from hnd_lightning.runtime.device.transport import connect  # noqa: E402
from hnd_lightning.runtime.server.models import load_served_models  # noqa: E402
from hnd_lightning.runtime.server.process import SERVER_JSON, ServerProcess  # noqa: E402


def server_counts(url: str) -> tuple[int, int]:
    """(requests in flight, requests answered) from the server's Prometheus metrics."""
    text = urllib3.PoolManager().request("GET", f"{url}/metrics").data.decode()
    in_flight = float(re.search(r"^hnd_inference_requests_in_flight (\S+)", text, re.M).group(1))
    served = sum(
        float(value) for value in re.findall(r'^hnd_inference_requests_total\{model="server".*\} (\S+)', text, re.M)
    )
    return int(in_flight), int(served)


def test_sigterm_answers_every_request_in_flight_then_exits(tmp_path_factory, tmp_path):
    artifacts = split_artifacts(tmp_path_factory)
    # one request at a time, so the 12 requests below are still queued when SIGTERM arrives
    overrides = [
        f"artifacts={artifacts}",
        "http_port=0",
        "grpc_port=0",
        "threads=1",
        "batching.max_batch_size=1",
        f"hydra.run.dir={tmp_path}",
    ]
    rng = np.random.default_rng(0)
    payloads = [random_payload(rng) for _ in range(12)]
    models = load_served_models(artifacts)
    expected = [models["server"].run(payload)["logits"] for payload in payloads]
    server = ServerProcess(overrides).start()
    try:
        announced = json.loads((tmp_path / SERVER_JSON).read_text())
        assert announced["http_port"] == server.description["http_port"] > 0
        assert list(announced["models"]) == ["server"] and announced["batching"]["max_batch_size"] == 1
        answers = {}

        def send(index: int) -> None:
            transport = connect(server.url("http" if index % 2 else "grpc"))
            try:
                answers[index] = transport.infer("server", payloads[index], ["logits"]).outputs["logits"]
            except InferenceError as error:
                answers[index] = error

        threads = [threading.Thread(target=send, args=(index,)) for index in range(12)]
        for thread in threads:
            thread.start()
        # SIGTERM once all 12 reached the server and several still wait for their answer
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            in_flight, served = server_counts(server.url("http"))
            if in_flight + served == 12 and in_flight >= 3:
                break
            time.sleep(0.002)
        else:
            pytest.fail(
                f"never saw all 12 requests at the server with 3 or more in flight (last: {in_flight} in flight, {served} served)"
            )
        server.terminate()
        for thread in threads:
            thread.join(60)
        assert server.wait(60) == 0
    finally:
        server.stop(timeout_s=10)
    assert sorted(answers) == list(range(12))
    for index in range(12):
        assert not isinstance(answers[index], Exception), answers[index]
        np.testing.assert_allclose(answers[index], expected[index], atol=1e-5, rtol=0)
    with pytest.raises(Exception):  # noqa: B017 - the ports are closed: any connection error
        connect(server.url("http")).infer("server", payloads[0], ["logits"])
