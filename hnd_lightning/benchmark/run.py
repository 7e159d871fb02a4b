"""The benchmark run: every subject built once, then `rounds` interleaved turns, so a busy spell of a
shared machine slows every subject alike; then the data pipeline and the ratios."""

from __future__ import annotations

import json
import logging
import statistics
from typing import Any

import torch
from omegaconf import DictConfig

from hnd_lightning.benchmark.data import bench_data_pipeline
from hnd_lightning.benchmark.memory import PeakMemory
from hnd_lightning.benchmark.report import ratios, summarize
from hnd_lightning.benchmark.settings import check_options, collect_settings
from hnd_lightning.benchmark.subjects import Subject, inference_subjects, make_batch, plain_hnd_subject, train_subject
from hnd_lightning.profiling import resolve_device
from hnd_lightning.weak_device import weak_device_from_config

log = logging.getLogger(__name__)


def measure(subjects: list[Subject], cfg: DictConfig, device: torch.device) -> None:
    """Time every subject `rounds` times, interleaved, recording its steps and largest peak memory."""
    for round_index in range(cfg.rounds):
        for subject in subjects:
            meter = PeakMemory(device, cfg.memory)
            meter.start(subject.modules)
            subject.rounds.append(subject.run())
            peak = meter.stop()
            if peak is not None:
                subject.peak_mb = max(peak, subject.peak_mb or 0.0)
                subject.memory_scope = meter.scope
            log.info(
                "round %d %s %s %s: %.2f images/s",
                round_index + 1,
                subject.method,
                subject.phase,
                subject.part or "",
                cfg.batch / statistics.median(subject.rounds[-1]),
            )


def run_benchmark(cfg: DictConfig) -> dict[str, Any]:
    """Run every phase for the composed `bench.yaml` config; return {"settings", "results", "ratios"}."""
    check_options(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    torch.backends.cudnn.benchmark = True  # as in training (conf/trainer/default.yaml `benchmark`)
    settings = collect_settings(cfg, device)
    log.info("Benchmark settings: %s", json.dumps(settings))
    batch = make_batch(cfg, device, cfg.seed)
    torch.manual_seed(cfg.seed)
    weak_device = weak_device_from_config(cfg.get("weak_device"))
    subjects = [train_subject(cfg, name, device, batch) for name in cfg.method_names]
    subjects += [plain_hnd_subject(cfg, device, batch), *inference_subjects(cfg, device, batch, weak_device)]
    with weak_device:  # the inference subjects on the weak device; training is never throttled
        measure(subjects, cfg, device)
    settings["weak_device"] = weak_device.record()
    results = [summarize(s.method, s.phase, s.part, cfg.batch, s.rounds, s.peak_mb, s.memory_scope) for s in subjects]
    if cfg.data_root:
        results += bench_data_pipeline(cfg)
    return {"settings": settings, "results": results, "ratios": ratios(results)}
