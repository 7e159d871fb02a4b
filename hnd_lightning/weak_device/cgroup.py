"""A CPU quota on this process: a child cgroup of its own under the `cpu` controller (v1 or v2).

    group = CpuQuotaGroup.create(quota_us=1000, period_us=10000)   # a tenth of one core
    group.enter()    # this process (all its threads) now runs under the quota
    group.leave()    # back to the group it came from
    group.stat()     # {"nr_periods", "nr_throttled", "throttled_ms"}: the kernel's record of throttling
    group.remove()   # leave, move any stragglers out, rmdir

v1 (`cpu.cfs_period_us` / `cpu.cfs_quota_us`) and v2 (`cpu.max`) hierarchies are found in
/proc/self/mountinfo; the group is made beside nothing else, inside the group this process is in, and
named `hnd_weak_device_<pid>` (groups of dead processes with that name are removed on the way).
Anything that stops it (no cpu controller, not root, a read-only mount) raises `CgroupUnavailable`
with the reason.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

GROUP_PREFIX = "hnd_weak_device_"
MIN_QUOTA_US = 1000  # the kernel refuses a smaller quota (Invalid argument)
MIN_PERIOD_US, MAX_PERIOD_US = 1000, 1_000_000


class CgroupUnavailable(RuntimeError):
    """This machine does not let this process put itself under a CPU quota; the message says why."""


def _mounts(mountinfo: Path) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) of every cgroup mount in `mountinfo`."""
    found = []
    for line in mountinfo.read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[3], fields[4].replace("\\040", " "), tail[0], set(tail[2].split(","))))
    return found


def _own_groups(proc_cgroup: Path) -> dict[str, str]:
    """This process's group per hierarchy: {"cpu": path} for the v1 hierarchy holding cpu, {"": path} for v2."""
    groups = {}
    for line in proc_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


def _inside(mount_root: str, path: str) -> str:
    """`path` (as /proc/self/cgroup names it) relative to a mount whose root is `mount_root`."""
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root) :]
    return path.lstrip("/")


def find_cpu_group(
    cgroup_root: str | Path | None = None,
    mountinfo: Path = Path("/proc/self/mountinfo"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
) -> tuple[int, Path]:
    """(cgroup version, this process's group folder) under a hierarchy with the cpu controller.

    `cgroup_root` names the hierarchy's folder instead of /proc/self/mountinfo (its layout says the
    version: `cpu.cfs_quota_us` v1, `cgroup.controllers` v2); raises `CgroupUnavailable` otherwise.
    """
    try:
        groups = _own_groups(proc_cgroup)
        if cgroup_root is not None:
            root = Path(cgroup_root)
            if (root / "cpu.cfs_quota_us").is_file():
                return 1, root / _inside("/", groups.get("cpu", "/"))
            if (root / "cgroup.controllers").is_file():
                return 2, root / _inside("/", groups.get("", "/"))
            raise CgroupUnavailable(f"{root} holds neither cpu.cfs_quota_us (v1) nor cgroup.controllers (v2)")
        mounts = _mounts(mountinfo)
    except OSError as error:
        raise CgroupUnavailable(f"cannot read this process's cgroups ({error})") from error
    for mount_root, point, fstype, options in mounts:
        if fstype == "cgroup" and "cpu" in options and "cpu" in groups:
            return 1, Path(point) / _inside(mount_root, groups["cpu"])
    for mount_root, point, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in groups:
            group = Path(point) / _inside(mount_root, groups[""])
            controllers = (group / "cgroup.controllers").read_text().split() if group.is_dir() else []
            if "cpu" in controllers:
                return 2, group
    raise CgroupUnavailable(
        "no cgroup hierarchy with the cpu controller is mounted for this process (v1 `cpu`, or v2 with cpu "
        "in cgroup.controllers)"
    )


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_groups(parent: Path) -> list[Path]:
    """rmdir the `hnd_weak_device_<pid>` groups under `parent` whose process is gone (a killed run)."""
    removed = []
    for folder in parent.glob(GROUP_PREFIX + "*"):
        match = re.fullmatch(GROUP_PREFIX + r"(\d+)", folder.name)
        if match and not _alive(int(match.group(1))):
            try:
                folder.rmdir()
                removed.append(folder)
            except OSError:
                pass  # still holds a process, or not ours to remove
    return removed


@dataclass
class CpuQuotaGroup:
    """A child cgroup holding this process under `quota_us` of CPU time per `period_us`."""

    version: int
    parent: Path
    path: Path
    period_us: int
    quota_us: int

    @classmethod
    def create(cls, quota_us: int, period_us: int, cgroup_root: str | Path | None = None) -> CpuQuotaGroup:
        """Make the group and set its quota; `CgroupUnavailable` (with the reason) where the machine forbids it."""
        if not MIN_PERIOD_US <= period_us <= MAX_PERIOD_US or quota_us < MIN_QUOTA_US:
            raise ValueError(
                f"a cgroup quota needs {MIN_PERIOD_US} <= period_us <= {MAX_PERIOD_US} and quota_us >= "
                f"{MIN_QUOTA_US}; got period {period_us}, quota {quota_us}: lengthen weak_device.period_ms."
            )
        version, parent = find_cpu_group(cgroup_root)
        remove_stale_groups(parent)
        path = parent / f"{GROUP_PREFIX}{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
        except OSError as error:
            raise CgroupUnavailable(f"cannot create the group {path} ({error.strerror or error})") from error
        group = cls(version, parent, path, period_us, quota_us)
        try:
            if version == 1:
                _write(path / "cpu.cfs_quota_us", "-1")  # the period may only shrink below an unlimited quota
                _write(path / "cpu.cfs_period_us", str(period_us))
                _write(path / "cpu.cfs_quota_us", str(quota_us))
            else:
                _write(path / "cpu.max", f"{quota_us} {period_us}")
        except OSError as error:
            group.remove()
            raise CgroupUnavailable(f"cannot set the quota of {path} ({error.strerror or error})") from error
        return group

    def _procs(self, folder: Path) -> Path:
        return folder / "cgroup.procs"

    def enter(self) -> None:
        """Move this process (every thread) into the group."""
        _write(self._procs(self.path), str(os.getpid()))

    def leave(self) -> None:
        """Move this process back to the group it was in before."""
        _write(self._procs(self.parent), str(os.getpid()))

    def holds(self, pid: int) -> bool:
        """Whether process `pid` is in this group now."""
        try:
            return str(pid) in self._procs(self.path).read_text().split()
        except OSError:
            return False

    def stat(self) -> dict[str, float]:
        """The group's cpu.stat so far: periods with runnable work, periods throttled, ms throttled."""
        values = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            values[key] = int(value)
        throttled_ms = values["throttled_time"] / 1e6 if "throttled_time" in values else values["throttled_usec"] / 1e3
        return {
            "nr_periods": values["nr_periods"],
            "nr_throttled": values["nr_throttled"],
            "throttled_ms": throttled_ms,
        }

    def remove(self) -> None:
        """Leave, move anything still inside (a child process forked there) to the parent, rmdir."""
        if not self.path.exists():
            return
        for _ in range(20):
            try:
                pids = self._procs(self.path).read_text().split()
                for pid in pids:
                    try:
                        _write(self._procs(self.parent), pid)
                    except ProcessLookupError:
                        pass  # ended meanwhile
                self.path.rmdir()
                return
            except OSError as error:
                if error.errno not in (errno.EBUSY, errno.EAGAIN):
                    raise
                time.sleep(0.05)  # a process ending inside the group
        self.path.rmdir()
