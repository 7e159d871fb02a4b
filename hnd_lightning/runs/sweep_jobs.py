"""The job list of a Hydra multirun, so a sweep summary also lists the jobs that never started.

Hydra's basic sweeper saves the sweep's config as `<sweep dir>/multirun.yaml` before the first job;
its overrides (`hydra.overrides.task`, plus `hydra.sweeper.params`) expand into the jobs, numbered in
order. A job that never started (the sweep was killed or stopped by SIGTERM first) has no run
directory, so only this list knows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hnd_lightning.runs.record import STATUS_MISSING

MULTIRUN_FILE = "multirun.yaml"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def sweep_jobs(sweep_dir: str | Path) -> list[list[str]] | None:
    """Every job's overrides, in job-number order, or None without a basic sweeper's `multirun.yaml`."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra = _load_yaml(Path(sweep_dir) / MULTIRUN_FILE).get("hydra") or {}
    sweeper = hydra.get("sweeper") or {}
    if sweeper.get("_target_") != BASIC_SWEEPER:  # other sweepers (optuna, ...) pick their jobs as they go
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    task = list((hydra.get("overrides") or {}).get("task") or [])
    try:
        overrides = OverridesParser.create().parse_overrides(params + task)
        return [list(job) for job in BasicSweeper.split_arguments(overrides, None)[0]]
    except Exception:  # noqa: BLE001 - a list that cannot be expanded here leaves the summary as it was
        return None


def override_values(overrides: list[str]) -> dict[str, str]:
    """Command-line overrides as {key: value as written}, read by Hydra's own override grammar
    (`+key=...`, `~key`, quoting, lists), e.g. ["+a.b=3", "m=[3,6]"] -> {"a.b": "3", "m": "[3,6]"}."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {
        override.key_or_group: override.get_value_element_as_str()
        for override in OverridesParser.create().parse_overrides(list(overrides))
    }


def _job_number(job_dir: Path) -> int | None:
    number = ((_load_yaml(job_dir / ".hydra" / "hydra.yaml").get("hydra") or {}).get("job") or {}).get("num")
    return number if isinstance(number, int) else None


def unstarted_job_rows(sweep_dir: str | Path, job_dirs: list[Path], columns: list[str]) -> list[dict[str, Any]]:
    """Summary rows (status "missing") for the sweep's jobs that have no run directory among `job_dirs`."""
    jobs = sweep_jobs(sweep_dir)
    if jobs is None:
        return []
    started = {number for number in map(_job_number, job_dirs) if number is not None}
    sweep_config = _load_yaml(Path(sweep_dir) / MULTIRUN_FILE)
    rows = []
    for number, job in enumerate(jobs):
        if number in started:
            continue
        values = override_values(job)
        model = sweep_config.get("model") or {}
        choices = ((sweep_config.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        channels = values.get("model.bottleneck_channels")
        rows.append(
            {
                **{column: None for column in columns},
                "job": f"{number} (not started)",
                "model": values.get("model", model.get("architecture")),
                "method": values.get("method", choices.get("method")),
                "bottleneck_channels": yaml.safe_load(channels)
                if channels is not None
                else model.get("bottleneck_channels"),
                "status": STATUS_MISSING,
                "error": "never started (the sweep stopped before it): " + " ".join(job),
            }
        )
    return rows
