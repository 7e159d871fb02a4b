"""Load test of the edge server on this machine: `python -m hnd_lightning.loadtest artifacts=RUN/artifacts`.

For each batching mode in `run_modes` (by default dynamic batching, then one request at a time) it
starts `python -m hnd_lightning.serve` on free loopback ports, lets `concurrency` device clients send
8-bit payloads for `duration_s` seconds per protocol (bounded by `max_requests`), stops the server
with SIGTERM, and reports throughput, p50 / p95 / p99 latency, protocol overhead, errors and the
batch-size histogram (`loadtest.json` in the run directory, and a table). With `server.tls.*` the
server speaks TLS and the clients trust `tls.ca`; with `auth.*` the server requires the token the
clients send. Settings: `conf/loadtest.yaml`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hnd_lightning.files import write_json
from hnd_lightning.runtime.common.credentials import client_credentials
from hnd_lightning.runtime.device.loadgen import PROTOCOL_VARIANTS, device_payloads, format_load_table, run_load
from hnd_lightning.runtime.server.process import ServerProcess

log = logging.getLogger(__name__)
LOADTEST_JSON = "loadtest.json"


def server_overrides(cfg: DictConfig, mode: str, output_dir: Path) -> list[str]:
    """`serve` overrides for one mode: these artifacts on free loopback ports with the mode's batching."""
    batching = cfg.modes[mode]
    security = [f"tls.{key}={Path(value).resolve()}" for key, value in cfg.server.tls.items() if value]
    if cfg.auth.token_file:
        security.append(f"auth.token_file={Path(cfg.auth.token_file).resolve()}")
    security.append(f"auth.token_env={cfg.auth.token_env}" if cfg.auth.token_env else "auth.token_env=null")
    return [
        f"artifacts={Path(cfg.artifacts).resolve()}",
        "host=127.0.0.1",
        "http_port=0",
        "grpc_port=0",
        f"threads={cfg.server.threads}",
        f"device={cfg.server.device}",
        f"runtime={cfg.server.runtime}",
        *(f"batching.{key}={value}" for key, value in batching.items()),
        f"hydra.run.dir={output_dir / f'server_{mode}'}",
        *security,
        *cfg.server.overrides,
    ]


def loadtest(cfg: DictConfig) -> dict:
    unknown = [name for name in cfg.protocols if name not in PROTOCOL_VARIANTS] + [
        name for name in cfg.run_modes if name not in cfg.modes
    ]
    if unknown:
        raise ValueError(f"unknown {unknown}: protocols are {list(PROTOCOL_VARIANTS)}, modes {list(cfg.modes)}.")
    output_dir = Path(cfg.paths.output_dir)
    tls, token = client_credentials(cfg.tls, cfg.auth)
    payloads = device_payloads(cfg.artifacts, cfg.num_payloads, cfg.seed)
    results = []
    for mode in cfg.run_modes:
        with ServerProcess(server_overrides(cfg, mode, output_dir), threads=cfg.server.threads) as server:
            model = next(iter(server.description["models"]))
            for protocol in cfg.protocols:
                scheme, binary = PROTOCOL_VARIANTS[protocol]
                log.info("mode %s, %s: %d clients for %s s", mode, protocol, cfg.concurrency, cfg.duration_s)
                result = run_load(
                    server.url(scheme),
                    model,
                    payloads,
                    cfg.concurrency,
                    cfg.duration_s,
                    cfg.max_requests,
                    binary,
                    cfg.warmup_requests,
                    tls,
                    token,
                )
                results.append({"mode": mode, "protocol": protocol, "batching": dict(cfg.modes[mode]), **result})
    throughput = {(r["mode"], r["protocol"]): r["images_per_s"] for r in results}
    ratios = {
        protocol: throughput[("dynamic", protocol)] / throughput[("batch1", protocol)]
        for protocol in cfg.protocols
        if ("dynamic", protocol) in throughput and throughput.get(("batch1", protocol))
    }
    report = {
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "load_average": list(os.getloadavg()),
        "results": results,
        "dynamic_over_batch1_throughput": ratios,
    }
    write_json(output_dir / LOADTEST_JSON, report)
    print(format_load_table(results))
    for protocol, ratio in ratios.items():
        print(f"dynamic batching / batch-1 serving throughput ({protocol}): {ratio:.2f}x")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="loadtest")
def main(cfg: DictConfig) -> None:
    loadtest(cfg)


if __name__ == "__main__":
    main()
