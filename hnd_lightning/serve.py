"""The edge server of a split: `python -m hnd_lightning.serve artifacts=RUN/artifacts`.

Serves the run's server part (dequantization + decoder + frozen tail) as model `server` on the Open
Inference Protocol: REST on `http_port` (Triton's binary tensor extension) and gRPC on `grpc_port`,
health, metadata and Prometheus metrics at `/metrics`, with dynamic batching and a bounded queue
(`batching.*`). Optionally the whole teacher as model `teacher` (`teacher=run|random|PATH`).
TLS on both ports (`tls.*`, mutual with `tls.client_ca`), a bearer token (`auth.*`) and limits against
hostile clients (`limits.*`); plain TCP off loopback needs `insecure=true`.
SIGTERM or Ctrl-C: stop taking requests, answer those in flight, exit. Settings: `conf/serve.yaml`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from hnd_lightning.runtime.common.credentials import is_loopback, load_token
from hnd_lightning.runtime.server.limits import Limits
from hnd_lightning.runtime.server.models import load_served_models
from hnd_lightning.runtime.server.process import announce
from hnd_lightning.runtime.server.security import check_listen_address, server_tls
from hnd_lightning.runtime.server.server import InferenceServer, ServerSettings
from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService

log = logging.getLogger(__name__)


def build_server(cfg: DictConfig) -> InferenceServer:
    """The models of `cfg.artifacts` behind a service with `cfg.batching`, on `cfg`'s host and ports, with
    its TLS, token and limits (checked before any model loads)."""
    tls = server_tls(cfg.tls.cert, cfg.tls.key, cfg.tls.client_ca)
    check_listen_address(cfg.host, tls, cfg.insecure)
    token = load_token(cfg.auth.token_file, cfg.auth.token_env, cfg.auth.get("token"))
    limits = Limits(**OmegaConf.to_container(cfg.limits, resolve=True))
    if token is None and not is_loopback(cfg.host):
        log.warning("host=%s takes requests from other machines without a token: set auth.token_file", cfg.host)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    models = load_served_models(
        cfg.artifacts, cfg.runtime, cfg.device, cfg.teacher, cfg.deploy_dir, cfg.bf16_autocast, cfg.threads
    )
    batching = BatchingSettings(cfg.batching.max_batch_size, cfg.batching.max_delay_ms, cfg.batching.max_queue)
    service = InferenceService(models, batching, cfg.max_request_bytes)
    settings = ServerSettings(
        cfg.host, cfg.http_port, cfg.grpc_port, cfg.shutdown_timeout_s, cfg.log_level, tls, token, limits
    )
    return InferenceServer(service, settings)


def serve(cfg: DictConfig) -> None:
    server = build_server(cfg)
    models, tls = server.service.models, server.settings.tls

    def started(server: InferenceServer) -> None:
        description = {
            "host": cfg.host,
            "http_port": server.http_port,
            "grpc_port": server.grpc_port,
            "models": {name: model.describe() for name, model in models.items()},
            "runtime": {name: model.runner.description for name, model in models.items()},
            "batching": dict(cfg.batching),
            "artifacts": str(Path(cfg.artifacts).resolve()),
            "tls": tls is not None,
            "mutual_tls": tls is not None and tls.mutual,
            "token_required": server.settings.token is not None,
            "limits": OmegaConf.to_container(cfg.limits, resolve=True),
        }
        secure = "s" if tls else ""
        log.info(
            "Serving %s on http%s://%s:%d and grpc%s://%s:%d (%s)",
            sorted(models),
            secure,
            cfg.host,
            server.http_port,
            secure,
            cfg.host,
            server.grpc_port,
            ("mutual TLS" if tls.mutual else "TLS") if tls else "plain TCP",
        )
        announce(description, cfg.paths.output_dir)

    asyncio.run(server.serve_until_signal(started))
    log.info("Stopped")


@hydra.main(version_base="1.3", config_path="../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
