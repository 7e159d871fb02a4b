"""The device client of a split: `python -m hnd_lightning.client artifacts=RUN/artifacts server=URL images=DIR`.

Runs the device part on each image (resize, crop, normalize, encoder, 8-bit quantization), sends the
payload to the edge server over REST or gRPC, and measures per image: device compute, bytes sent,
transfer, server queue + compute, end to end, and top-1 when the images are labelled; the same
images also go as JPEG to the server's `teacher` and through the whole teacher here, so the three
strategies of `analyze` are measured. `link.bandwidth_mbps` / `link.rtt_ms` emulate a slower link;
`https://` / `grpcs://` servers with `tls.*`, a bearer token with `auth.*`;
`weak_device.cpu_quota` / `weak_device.slowdown` a slower device (its record goes into client.json).
Writes `client.json` and `latency_measured_vs_predicted.png` (with `analyze`'s prediction beside the
measurement) into the run directory and prints a table. Settings: `conf/client.yaml`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from PIL import Image

from hnd_lightning.files import write_json
from hnd_lightning.runtime.common.credentials import client_credentials
from hnd_lightning.runtime.common.images import list_images
from hnd_lightning.runtime.device.device_client import DEVICE_ONNX, SplitClient
from hnd_lightning.runtime.device.measure import check_strategies, measure_strategies, summarize
from hnd_lightning.runtime.device.report import PLOT_FILE, compare, format_table, plot, predict
from hnd_lightning.runtime.device.transport import connect
from hnd_lightning.weak_device import describe, weak_device_from_config

log = logging.getLogger(__name__)
CLIENT_JSON = "client.json"


def run_client(cfg: DictConfig) -> dict:
    """Measure `cfg.strategies` on `cfg.images` against `cfg.server`; write and return the report."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    strategies = check_strategies(list(cfg.strategies))
    bandwidths = (
        list(cfg.link.bandwidth_mbps) if isinstance(cfg.link.bandwidth_mbps, ListConfig) else [cfg.link.bandwidth_mbps]
    )
    tls, token = client_credentials(cfg.tls, cfg.auth)
    transport = connect(cfg.server, binary=cfg.binary, tls=tls, token=token, insecure=cfg.insecure)
    weak_device = weak_device_from_config(cfg.get("weak_device"))
    try:
        teacher = cfg.teacher if "device_only" in strategies else None
        client = SplitClient(
            cfg.artifacts,
            transport,
            cfg.runtime,
            cfg.device,
            cfg.deploy_dir,
            teacher,
            cfg.model,
            cfg.jpeg_quality,
            weak_device,
            cfg.get("device_onnx") or DEVICE_ONNX,
        )
        if "server_only" in strategies and transport.metadata("teacher") is None:
            raise ValueError(
                "strategy server_only sends JPEGs to model `teacher`: serve it (serve ... teacher=run) or drop server_only from strategies."
            )
        listed = list_images(cfg.images, cfg.num_images, client.metadata.get("classes"))
        images = []
        for item in listed:
            with Image.open(item.path) as image:
                images.append(client.prepare(image, item.label))
        with weak_device:  # the device computations under the quota; removed on an error or SIGTERM too
            records = measure_strategies(client, images, strategies, bandwidths, cfg.link.rtt_ms, cfg.warmup)
    finally:
        transport.close()
    analysis = json.loads(Path(cfg.analysis).read_text()) if cfg.analysis else None
    rows = compare(
        summarize(records), predict(summarize(records), client.link_payload(images), cfg.link.rtt_ms, analysis)
    )
    output_dir = Path(cfg.paths.output_dir)
    report = {
        "settings": {
            **OmegaConf.to_container(cfg, resolve=True),
            "server_model": client.model,
            "teacher_weights": client.teacher_source,
        },
        "load_average": list(os.getloadavg()),
        # how tensors went: REST binary, or JSON (asked with binary=false, or fallen back to by itself)
        "transport": {
            "protocol": transport.protocol,
            "binary": getattr(transport, "binary", True),
            "binary_fallback": getattr(transport, "fallback", None),
        },
        "device_part": getattr(client.device_part, "description", None),
        "weak_device": weak_device.record(),
        "prediction": "analyze's latency model fed "
        + ("the parts timed in " + str(cfg.analysis) if analysis else "this run's median part times"),
        "summary": rows,
        "records": [{key: value for key, value in record.items() if key != "logits"} for record in records],
    }
    write_json(output_dir / CLIENT_JSON, report)
    plot(rows, output_dir / PLOT_FILE)
    print(format_table(rows))
    print(describe(report["weak_device"]))
    log.info("Written %s", output_dir / CLIENT_JSON)
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="client")
def main(cfg: DictConfig) -> None:
    run_client(cfg)


if __name__ == "__main__":
    main()
