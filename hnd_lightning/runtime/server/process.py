"""A server in its own process: how `serve` announces itself, and how load tests and tests start it.

`python -m hnd_lightning.serve` prints one line `SERVING {"http_port": ..., "grpc_port": ..., ...}` once
both ports listen (and writes the same JSON to `server.json` in its run directory). `ServerProcess`
starts that command with overrides, waits for the line, and stops it with SIGTERM (graceful).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

READY_MARKER = "SERVING "
SERVER_JSON = "server.json"


def announce(description: dict[str, Any], output_dir: str | Path | None = None) -> None:
    """Print the ready line (stdout, flushed) and write `server.json` into `output_dir`."""
    if output_dir is not None:
        from hnd_lightning.files import write_json

        write_json(Path(output_dir) / SERVER_JSON, description)
    print(READY_MARKER + json.dumps(description), flush=True)


class ServerProcess:
    """`python -m hnd_lightning.serve <overrides>` as a child process; use as a context manager.

    `description` is the announced JSON (ports, models); `output` collects the child's output lines.
    `module` is what runs (`python -m <module> <overrides>`): any that announces itself the same way.
    """

    def __init__(
        self,
        overrides: Sequence[str],
        threads: int | None = 1,
        start_timeout_s: float = 180.0,
        module: str = "hnd_lightning.serve",
    ) -> None:
        self.overrides, self.start_timeout_s, self.module = list(overrides), start_timeout_s, module
        self.env = dict(os.environ)
        if threads:
            self.env["OMP_NUM_THREADS"] = str(threads)
        self.output: list[str] = []
        self.description: dict[str, Any] | None = None
        self._ready = threading.Event()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            if line.startswith(READY_MARKER):
                self.description = json.loads(line[len(READY_MARKER) :])
                self._ready.set()
        self._ready.set()  # the process ended

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", self.module, *self.overrides]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(self.start_timeout_s) or self.description is None:
            self.stop(timeout_s=5)
            tail = "\n".join(self.output[-30:])
            raise RuntimeError(f"the server did not start within {self.start_timeout_s} s:\n{tail}")
        return self

    def url(self, protocol: str) -> str:
        """`http://HOST:PORT` or `grpc://HOST:PORT`; `https://` / `grpcs://` when the server announced TLS."""
        host = self.description["host"]
        port = self.description["http_port" if protocol == "http" else "grpc_port"]
        return f"{protocol}{'s' if self.description.get('tls') else ''}://{host}:{port}"

    def terminate(self) -> None:
        """Send SIGTERM (the graceful stop) without waiting."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = 60.0) -> int:
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL; return the exit code."""
        if self.process.poll() is None:
            self.terminate()
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        deadline = time.monotonic() + 5
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
