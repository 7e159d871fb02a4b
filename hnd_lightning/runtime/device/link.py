"""Link emulation without root: a token bucket per direction on what the client sends and receives.

Sending `n` bytes over an `R` Mbit/s link with round-trip time `RTT` takes `n * 8 / R + RTT / 2`; the
client sleeps that long before a request leaves (uplink) and after its reply arrives (downlink), on
top of the real network time. Transfers in one direction share the link (a token bucket with no
burst: they queue behind each other), so concurrent requests from one client split its bandwidth.
For a kernel-level link use `tc netem` in a network namespace instead (the manual: how-to, "The split over
a network").
"""

from __future__ import annotations

import threading
import time

from hnd_lightning.analysis.latency import link_ms


class _Direction:
    def __init__(self) -> None:
        self.free_at = 0.0
        self.lock = threading.Lock()


class EmulatedLink:
    """`bandwidth_mbps` (None: unlimited) and `rtt_ms` applied by sleeping in the sending thread."""

    def __init__(self, bandwidth_mbps: float | None = None, rtt_ms: float = 0.0) -> None:
        if bandwidth_mbps is not None and bandwidth_mbps <= 0:
            raise ValueError(f"link.bandwidth_mbps must be positive or null (unlimited), got {bandwidth_mbps}")
        if rtt_ms < 0:
            raise ValueError(f"link.rtt_ms must be >= 0, got {rtt_ms}")
        self.bandwidth_mbps, self.rtt_ms = bandwidth_mbps, rtt_ms
        self._up, self._down = _Direction(), _Direction()

    @property
    def active(self) -> bool:
        return self.bandwidth_mbps is not None or self.rtt_ms > 0

    def _transfer(self, direction: _Direction, num_bytes: int) -> float:
        seconds = 0.0 if self.bandwidth_mbps is None else link_ms(num_bytes, self.bandwidth_mbps) / 1000
        with direction.lock:
            start = max(time.perf_counter(), direction.free_at)
            direction.free_at = start + seconds
            done = direction.free_at + self.rtt_ms / 2000
        delay = done - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return max(delay, 0.0)

    def send(self, num_bytes: int) -> float:
        """Wait until `num_bytes` would have reached the server; return the seconds waited."""
        return self._transfer(self._up, num_bytes) if self.active else 0.0

    def receive(self, num_bytes: int) -> float:
        """Wait until a reply of `num_bytes` would have reached the client; return the seconds waited."""
        return self._transfer(self._down, num_bytes) if self.active else 0.0

    def describe(self) -> str:
        bandwidth = "unlimited" if self.bandwidth_mbps is None else f"{self.bandwidth_mbps:g} Mbit/s"
        return f"{bandwidth}, RTT {self.rtt_ms:g} ms (emulated in the client)"
