"""Foreign servers as child processes: free loopback ports, a bounded start, a stop by PID.

A server starts in its own session (so its children, such as Triton's Python stubs, share its process
group), with its output in a log file. `start()` polls the server's readiness URL and TCP ports until
they answer or `start_timeout_s` passes (Triton can hang while loading with no port open): then it is
killed and the error shows the log's tail. `stop()` sends SIGTERM, waits, then SIGKILLs the group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now (bound, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


class ServerProcess:
    """One server process: `command` with `env`, ready when `ready_url` answers 200 and `ports` accept."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: dict[str, str],
        log_path: Path,
        ready_url: str,
        ports: Sequence[int],
        start_timeout_s: float = 90.0,
        stop_timeout_s: float = 20.0,
        cwd: Path | None = None,
    ) -> None:
        self.name, self.command, self.env, self.log_path = name, list(command), env, log_path
        self.ready_url, self.ports, self.cwd = ready_url, list(ports), cwd
        self.start_timeout_s, self.stop_timeout_s = start_timeout_s, stop_timeout_s
        self.process: subprocess.Popen | None = None
        self.start_s: float | None = None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as response:
                if response.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
        return all(port_open(port) for port in self.ports)

    def start(self) -> ServerProcess:
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd, start_new_session=True
            )
        deadline = started + self.start_timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode} while starting:\n{self.log_tail()}"
                )
            if self._ready():
                self.start_s = time.perf_counter() - started
                return self
            time.sleep(0.1)
        self.kill()
        raise TimeoutError(f"{self.name} was not ready within {self.start_timeout_s} s (killed):\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server and everything in its process group."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, wait up to `stop_timeout_s`, then SIGKILL; return the exit code (None when it was killed)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        try:  # children left behind (none expected) go with the group
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def listening_addresses(ports: Sequence[int]) -> set[str]:
    """Local addresses of the TCP sockets listening on `ports`, from /proc/net/tcp and tcp6 (Linux)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).is_file():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and int(port, 16) in ports:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if width == 8:
                    found.add(".".join(str(byte) for byte in raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found
