"""The device side of a split run as a weaker device than this machine (client, analyze, bench).

cgroup.py     a CPU quota on this process: a child cgroup of its own (v1 `cpu` or v2 `cpu.max`)
emulation.py  `WeakDevice`: device computations under the quota, or a stated slowdown, timed beside
              an unthrottled reference, and the record of what ran
"""

from hnd_lightning.weak_device.cgroup import CgroupUnavailable, CpuQuotaGroup
from hnd_lightning.weak_device.emulation import WeakDevice, describe, weak_device_from_config

__all__ = ["CgroupUnavailable", "CpuQuotaGroup", "WeakDevice", "describe", "weak_device_from_config"]
