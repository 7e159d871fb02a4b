"""One venv per foreign server, built once into a cache outside the repository and reused after.

    ${HND_SERVING_CACHE:-~/.cache/hnd-lightning/serving}/<server>-<key>/

`key` hashes the pins, this Python's version and the platform, so a changed pin builds a new venv
beside the old one. A file lock makes two pytest processes wait for one build instead of racing, and
`ready.json` is written last: a folder without it is a build that was cut off, and is built again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

# what each server's venv holds: the server as its users install it, plus onnxruntime for server.onnx
PINS = {
    # Triton 2.51.0 ships inside nvidia-pytriton; its Python backend breaks with numpy 2 (empty outputs)
    "triton": ("nvidia-pytriton==0.7.0", "onnxruntime==1.32.0", "numpy<2"),
    "kserve": ("kserve==0.21.0", "onnxruntime==1.32.0"),
    "mlserver": ("mlserver==1.7.1", "onnxruntime==1.32.0"),
}
READY = "ready.json"
BUILD_TIMEOUT_S = 1200


class IndexUnreachable(RuntimeError):
    """The package index cannot be reached, so a missing venv cannot be built (tests skip, naming this)."""


def cache_root() -> Path:
    return Path(os.environ.get("HND_SERVING_CACHE", "~/.cache/hnd-lightning/serving")).expanduser()


def venv_key(pins: tuple[str, ...]) -> str:
    identity = [*sorted(pins), f"python{sys.version_info.major}.{sys.version_info.minor}", platform.machine()]
    return hashlib.sha256("\n".join(identity).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ServerVenv:
    """A built venv: its folder, interpreter, site-packages, and how it was built (`ready.json`)."""

    name: str
    path: Path
    record: dict

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site(self) -> Path:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return self.path / "lib" / version / "site-packages"


def check_index(timeout_s: float = 10.0) -> None:
    """Raise `IndexUnreachable` unless the index pip uses (PIP_INDEX_URL, else PyPI) answers."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    try:
        urllib.request.urlopen(f"{index}/pip/", timeout=timeout_s).close()
    except OSError as error:
        raise IndexUnreachable(f"the package index {index} is unreachable ({error})") from None


def _build(name: str, path: Path, pins: tuple[str, ...]) -> dict:
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=120)
    # --no-compile: byte-compiling every installed module was about half of a build here; what runs compiles on import
    command = [
        str(path / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--no-input",
        "--no-compile",
        "--progress-bar",
        "off",
        *pins,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(
            f"building the {name} venv failed: {' '.join(command)}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    seconds = time.perf_counter() - started
    freeze = subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.split()
    size = sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())
    record = {"pins": list(pins), "build_s": round(seconds, 1), "size_mb": round(size / 1e6), "freeze": freeze}
    (path / READY).write_text(json.dumps(record, indent=1))
    return record


def ensure_venv(name: str) -> tuple[ServerVenv, bool]:
    """The venv of server `name` (a key of `PINS`), built when missing; returns it and whether it was built now.

    Raises `IndexUnreachable` when it is missing and the index cannot be reached.
    """
    pins = PINS[name]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}-{venv_key(pins)}"
    with FileLock(str(path) + ".lock", timeout=BUILD_TIMEOUT_S + 120):
        if (path / READY).is_file():
            return ServerVenv(name, path, {**json.loads((path / READY).read_text()), "built_now": False}), False
        check_index()
        return ServerVenv(name, path, {**_build(name, path, pins), "built_now": True}), True


if (
    __name__ == "__main__"
):  # build (or find) the venvs named on the command line, e.g. `python tests/servers/venvs.py triton`
    for server in sys.argv[1:] or list(PINS):
        venv, built = ensure_venv(server)
        print(
            server, venv.path, "built" if built else "cached", venv.record["build_s"], "s", venv.record["size_mb"], "MB"
        )


def ensure_venvs(names: list[str]) -> dict[str, ServerVenv | str]:
    """`ensure_venv` for several servers at once (their downloads overlap); name -> venv, or the reason
    it cannot be built here (the index is unreachable). A failing build raises."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> ServerVenv | str:
        try:
            return ensure_venv(name)[0]
        except IndexUnreachable as error:
            return f"the {name} venv is not in {cache_root()} and cannot be built: {error}"

    with ThreadPoolExecutor(max(1, len(names))) as pool:
        return dict(zip(names, pool.map(one, names)))
