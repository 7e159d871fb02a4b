"""The device side run as a weaker device, and the record of how: a CPU quota, or a stated slowdown.

    with WeakDevice(cpu_quota=0.1) as weak:                # or slowdown=10, or neither (this machine)
        output, times = weak.timed("split", device_part, image)   # times["device_ms"], ["device_reference_ms"]
    weak.record()                                          # what ran, its settings, cpu.stat, times

Mechanisms (`record()["mechanism"]`):
- `cgroup`: this process under a quota of `cpu_quota` of one core (`cgroup.CpuQuotaGroup`) while a
  device computation runs, and back in its own group between them (so the server, the link and the
  bookkeeping are never throttled). A quota lets a burst run at full speed until the group's budget
  for the period is spent, so the period is the shortest that leaves the kernel's smallest quota
  (1 ms): 1 / cpu_quota ms (10 ms for a tenth of a core). The kernel's `cpu.stat` (periods,
  throttled periods, throttled time) is the record that throttling happened. From one core up the
  period is the kernel's default 100 ms.
- `slowdown`: each device computation run ceil(k) times and all of them timed (scaled by
  k / ceil(k)): real work, with its caches and memory traffic, not a sleep. Also the fallback of
  `cpu_quota` where the machine forbids cgroups (unless `require_cgroup`).
With `reference`, every computation also runs once unthrottled, the two in alternating order, so the
slowdown reached is measured in the same run, beside the one asked for.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hnd_lightning.weak_device.cgroup import MIN_QUOTA_US, CgroupUnavailable, CpuQuotaGroup

log = logging.getLogger(__name__)
MECHANISMS = ("none", "cgroup", "slowdown")
DEFAULT_PERIOD_US = 100_000  # the kernel's own default period


def quota_period_us(cpu_quota: float, period_ms: float | None = None) -> tuple[int, int]:
    """(quota_us, period_us) for `cpu_quota` of one core: `period_ms`, or below one core the shortest
    period whose quota is the kernel's smallest (1 ms), and from one core up the kernel's default 100 ms
    (a quota shorter than a scheduler tick would throttle a thread that never exceeds one core)."""
    if period_ms:
        period_us = round(1000 * period_ms)
    else:
        period_us = DEFAULT_PERIOD_US if cpu_quota >= 1 else math.ceil(MIN_QUOTA_US / cpu_quota)
    return max(MIN_QUOTA_US, round(cpu_quota * period_us)), period_us


class WeakDevice:
    """Device computations as a weaker device runs them (see the module docstring); a context manager
    that makes the cgroup on entry and removes it on exit, on an exception and on SIGTERM."""

    def __init__(
        self,
        cpu_quota: float | None = None,
        slowdown: float | None = None,
        period_ms: float | None = None,
        require_cgroup: bool = False,
        reference: bool = True,
        cgroup_root: str | None = None,
    ) -> None:
        if cpu_quota is not None and slowdown is not None:
            raise ValueError(
                f"weak_device.cpu_quota={cpu_quota} and weak_device.slowdown={slowdown} are both set: pick one "
                "(cpu_quota: a cgroup quota, a fraction of one core; slowdown: each computation run k times)."
            )
        cores = os.cpu_count() or 1
        if cpu_quota is not None and not 0 < cpu_quota <= cores:
            raise ValueError(f"weak_device.cpu_quota={cpu_quota}: a fraction of one core in (0, {cores}], e.g. 0.1.")
        if slowdown is not None and slowdown < 1:
            raise ValueError(f"weak_device.slowdown={slowdown}: a factor >= 1, e.g. 10 (10 times slower).")
        if period_ms is not None and cpu_quota is not None and cpu_quota * period_ms * 1000 < MIN_QUOTA_US:
            raise ValueError(
                f"weak_device.period_ms={period_ms} leaves a quota of {cpu_quota * period_ms:g} ms, below the "
                f"kernel's 1 ms: use period_ms >= {1 / cpu_quota:g} or null (the shortest allowed)."
            )
        self.cpu_quota, self.slowdown, self.period_ms = cpu_quota, slowdown, period_ms
        self.require_cgroup, self.cgroup_root = require_cgroup, cgroup_root
        self.mechanism = "none" if cpu_quota is None and slowdown is None else ("cgroup" if cpu_quota else "slowdown")
        self.reference = reference and self.mechanism != "none"
        self.group: CpuQuotaGroup | None = None
        self.fallback: str | None = None
        self.cpu_stat: dict[str, float] | None = None
        self._samples: dict[str, list[dict[str, float]]] = {}
        self._depth, self._calls, self._previous_handler = 0, 0, None

    @property
    def asked_slowdown(self) -> float:
        """How many times slower than this machine the device is meant to be (one-thread work)."""
        if self.cpu_quota is not None:
            return max(1.0, 1.0 / self.cpu_quota)
        return float(self.slowdown or 1.0)

    @property
    def runs(self) -> int:
        """Runs of each device computation: ceil(slowdown) for the slowdown mechanism, else 1."""
        return math.ceil(self.asked_slowdown) if self.mechanism == "slowdown" else 1

    # ------------------------------------------------------------------ the group's life
    def __enter__(self) -> WeakDevice:
        if self.mechanism == "cgroup":
            quota_us, period_us = quota_period_us(self.cpu_quota, self.period_ms)
            try:
                self.group = CpuQuotaGroup.create(quota_us, period_us, self.cgroup_root)
            except CgroupUnavailable as error:
                if self.require_cgroup:
                    raise RuntimeError(
                        f"weak_device.cpu_quota={self.cpu_quota} needs a cgroup with the cpu controller, and this "
                        f"machine forbids it: {error}. Run as root where /sys/fs/cgroup/cpu (v1) or a v2 group "
                        "with the cpu controller is writable, or set weak_device.require_cgroup=false to fall back "
                        f"to weak_device.slowdown={1 / self.cpu_quota:g}."
                    ) from error
                self.fallback = (
                    f"cgroup unavailable ({error}); fell back to weak_device.slowdown={1 / self.cpu_quota:g}: "
                    f"each device computation run {math.ceil(1 / self.cpu_quota)} times, all timed"
                )
                log.warning("weak_device.cpu_quota=%s: %s", self.cpu_quota, self.fallback)
                self.mechanism, self.slowdown = "slowdown", 1 / self.cpu_quota
            if self.group is not None and threading.current_thread() is threading.main_thread():
                self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through __exit__, which removes the group

    def __exit__(self, *exc: object) -> None:
        if self.group is not None:
            try:
                self.cpu_stat = self.group.stat()
                self.group.remove()
            finally:
                if self._previous_handler is not None:
                    signal.signal(signal.SIGTERM, self._previous_handler)
                    self._previous_handler = None

    @contextmanager
    def throttled(self) -> Iterator[None]:
        """This process under the quota for the block (nothing for the other mechanisms); re-entrant."""
        if self.group is None:
            yield
            return
        if self._depth == 0:
            self.group.enter()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.group.leave()

    # ------------------------------------------------------------------ device computations
    def work(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` as the weak device does it (`runs` times); returns the last result. Time it
        inside `throttled()` and scale by `time_scale`."""
        for _ in range(self.runs - 1):
            function(*args)
        return function(*args)

    @property
    def time_scale(self) -> float:
        """Factor on the wall time of `work`: k / ceil(k) for a slowdown k, else 1."""
        return self.asked_slowdown / self.runs if self.mechanism == "slowdown" else 1.0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """`function` done as `work` does it (for a caller that times the call itself, inside `throttled()`)."""
        return lambda *args: self.work(function, *args)

    def _timed_once(self, function: Callable[..., Any], args: tuple, weak: bool) -> tuple[Any, dict[str, float]]:
        before = self.group.stat()["nr_throttled"] if weak and self.group else 0
        with self.throttled() if weak else _nothing():
            cpu_started, started = time.process_time(), time.perf_counter()
            output = self.work(function, *args) if weak else function(*args)
            wall_ms, cpu_ms = 1000 * (time.perf_counter() - started), 1000 * (time.process_time() - cpu_started)
        sample = {"ms": wall_ms * (self.time_scale if weak else 1.0), "cpu_ms": cpu_ms}
        if weak and self.group:
            sample["nr_throttled"] = self.group.stat()["nr_throttled"] - before
        return output, sample

    def timed(self, label: str, function: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, float]]:
        """Run `function(*args)` on the weak device and time it; with `reference`, also unthrottled.

        Returns (output, {"device_ms": weak device ms, "device_reference_ms": unthrottled ms (with a
        reference)}); the times are also kept under `label` for `record()`.
        """
        if self.mechanism == "none":
            output, sample = self._timed_once(function, args, weak=False)
            self._samples.setdefault(label, []).append({"weak": sample})
            return output, {"device_ms": sample["ms"]}
        self._calls += 1
        order = (True, False) if self._calls % 2 else (False, True)  # alternate: neither always runs warm
        samples, output = {}, None
        for weak in order if self.reference else (True,):
            result, samples["weak" if weak else "reference"] = self._timed_once(function, args, weak)
            if weak:
                output = result
        self._samples.setdefault(label, []).append(samples)
        times = {"device_ms": samples["weak"]["ms"]}
        if "reference" in samples:
            times["device_reference_ms"] = samples["reference"]["ms"]
        return output, times

    # ------------------------------------------------------------------ the record
    def clear_samples(self) -> None:
        """Forget the times kept so far (warm-up calls), so `summary` covers what follows."""
        self._samples.clear()

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per label: calls, medians of the weak and reference ms, process CPU ms, the slowdown reached."""
        out = {}
        for label, samples in self._samples.items():
            weak = [s["weak"] for s in samples]
            row: dict[str, Any] = {
                "calls": len(samples),
                "device_ms_p50": statistics.median(s["ms"] for s in weak),
                "cpu_ms_p50": statistics.median(s["cpu_ms"] for s in weak),
            }
            if "nr_throttled" in weak[0]:
                row["nr_throttled"] = sum(s["nr_throttled"] for s in weak)
                row["calls_throttled"] = sum(s["nr_throttled"] > 0 for s in weak)
            paired = [s for s in samples if "reference" in s]
            if paired:
                row["reference_ms_p50"] = statistics.median(s["reference"]["ms"] for s in paired)
                row["measured_slowdown_p50"] = statistics.median(s["weak"]["ms"] / s["reference"]["ms"] for s in paired)
            out[label] = row
        return out

    def record(self) -> dict[str, Any]:
        """What ran and how: mechanism, settings, the cgroup and its cpu.stat, the fallback, the times."""
        record: dict[str, Any] = {
            "mechanism": self.mechanism,
            "asked": {"cpu_quota": self.cpu_quota, "slowdown": self.slowdown, "period_ms": self.period_ms},
            "asked_slowdown": self.asked_slowdown,
            "fallback": self.fallback,
            "reference": self.reference,
            "computations": self.summary(),
        }
        if self.mechanism == "slowdown":
            record["runs_per_computation"], record["time_scale"] = self.runs, self.time_scale
        if self.group is not None:
            record["cgroup"] = {
                "version": self.group.version,
                "path": str(self.group.path),
                "period_us": self.group.period_us,
                "quota_us": self.group.quota_us,
            }
            record["cpu_stat"] = self.cpu_stat if self.cpu_stat is not None else self.group.stat()
        return record


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def weak_device_from_config(settings: Any) -> WeakDevice:
    """A `WeakDevice` from the `weak_device` config group (`conf/weak_device/default.yaml`); None: this machine."""
    if settings is None:
        return WeakDevice()
    return WeakDevice(
        cpu_quota=settings.get("cpu_quota"),
        slowdown=settings.get("slowdown"),
        period_ms=settings.get("period_ms"),
        require_cgroup=bool(settings.get("require_cgroup", False)),
        reference=bool(settings.get("reference", True)),
        cgroup_root=settings.get("cgroup_root"),
    )


def describe(record: dict[str, Any]) -> str:
    """One paragraph for the terminal: the mechanism, its settings and the slowdown reached per computation."""
    if record["mechanism"] == "none":
        return "Device: this machine at full speed (no weak_device setting)."
    if record["mechanism"] == "cgroup":
        cgroup, stat = record["cgroup"], record["cpu_stat"]
        how = (
            f"cgroup v{cgroup['version']} quota {cgroup['quota_us'] / 1000:g} ms per {cgroup['period_us'] / 1000:g} ms "
            f"period; cpu.stat: {stat['nr_throttled']} of {stat['nr_periods']} periods throttled, "
            f"{stat['throttled_ms']:.0f} ms throttled"
        )
    else:
        how = f"each device computation run {record['runs_per_computation']} times, all timed"
        if record["fallback"]:
            how += f" (fallback: {record['fallback']})"
    lines = [f"Weak device: {record['mechanism']}, asked {record['asked_slowdown']:.3g}x slower ({how})."]
    for label, row in record["computations"].items():
        reached = row.get("measured_slowdown_p50")
        lines.append(
            f"  {label}: {row['device_ms_p50']:.1f} ms"
            + (f", unthrottled {row['reference_ms_p50']:.1f} ms: {reached:.2f}x" if reached else "")
            + f" over {row['calls']} calls"
        )
    return "\n".join(lines)
