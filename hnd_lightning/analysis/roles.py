"""The device / server / combine protocol of `analyze`: each side times its own parts where it will run
and writes its timings file; `combine` joins two such files; `both` does all of it on one machine."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from hnd_lightning.analysis.output import ROLES, read_timings, timings_file, write_analysis
from hnd_lightning.analysis.parts import ROLE_PARTS, load_split_under_analysis
from hnd_lightning.analysis.payload import payload_report
from hnd_lightning.analysis.profiles import apply_profile
from hnd_lightning.analysis.report import combine, compute_report, measure_latency, role_report
from hnd_lightning.files import write_json
from hnd_lightning.weak_device import describe, weak_device_from_config

log = logging.getLogger(__name__)


def analyze(cfg: DictConfig) -> dict[str, Any]:
    """Run the role `cfg.role` of the composed `analyze.yaml` config, writing into `cfg.paths.output_dir`.

    Returns the analysis (roles both, combine) or the side's timings report (device, server).
    """
    if cfg.role not in ROLES:
        raise ValueError(f"role={cfg.role!r} is not one of {ROLES}.")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    link = cfg.link
    if cfg.role == "combine":
        device, server = read_timings(cfg.device_timings, "device"), read_timings(cfg.server_timings, "server")
        analysis = combine(*profiled(cfg, device, server), list(link.bandwidths_mbps), link.rtt_ms)
        print(write_analysis(analysis, output_dir), end="")
        return analysis

    torch.manual_seed(cfg.seed)
    split = load_split_under_analysis(cfg)
    static = {"compute": compute_report(split), "payload": payload_report(cfg, split)}
    roles = ("device", "server") if cfg.role == "both" else (cfg.role,)
    part_names = tuple(dict.fromkeys(name for role in roles for name in ROLE_PARTS[role]))
    weak_device = weak_device_from_config(cfg.get("weak_device"))
    with weak_device:  # the device's parts on the weak device (and unthrottled, in turns); the server's never
        weak_parts = ROLE_PARTS["device"] if "device" in roles else ()
        latency = measure_latency(cfg.timing, split, part_names, weak_device, weak_parts)
    if "weak_device_parts" in latency:
        latency["weak_device"] = weak_device.record()
        print(describe(latency["weak_device"]))
    reports = {role: role_report(role, split, static, latency) for role in roles}
    for role, report in reports.items():
        write_json(output_dir / timings_file(role), report)
    if cfg.role != "both":
        print(f"Timings of the {cfg.role} part written to {output_dir / timings_file(cfg.role)}:")
        print(json.dumps(reports[cfg.role]["latency"], indent=2))
        return reports[cfg.role]
    analysis = combine(*profiled(cfg, reports["device"], reports["server"]), list(link.bandwidths_mbps), link.rtt_ms)
    print(write_analysis(analysis, output_dir), end="")
    log.info("Settings: %s", OmegaConf.to_container(cfg.timing))
    return analysis


def profiled(cfg: DictConfig, device: dict[str, Any], server: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two sides' timings with `device_profile` and `server_profile` applied (speeds, measured parts)."""
    return (
        apply_profile(device, cfg.get("device_profile"), "device"),
        apply_profile(server, cfg.get("server_profile"), "server"),
    )
