"""Writing files so that a crash, a kill or a full disk never leaves a torn one, and locking them.

Every file the project writes for later use (checkpoints, results.json, split.json, teacher.json,
tables, safetensors) goes through `atomic_write`: the bytes go to a temporary file in the target's own
folder (same filesystem, so the final rename is atomic), are flushed to disk, and only then replace
the target. A failed write leaves the previous file intact and removes its temporary file.
JSON is written strictly: NaN and infinities become null, which every JSON parser reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".tmp-"


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any writer thread runs
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


# The mode `open()` gives a new file (0644 under the usual umask 022); mkstemp alone would leave 0600.
FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to `path` for writing; on success it replaces `path` atomically.

    On any error (including KeyboardInterrupt and SystemExit) the temporary file is removed and
    `path` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, FILE_MODE)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Flush the folder entry of a rename, so the new file survives a power loss (a no-op where unsupported)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def remove_temp_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files that `atomic_write`s killed mid-write (SIGKILL, power loss) left in `directory`.

    Only files named with `TEMP_PREFIX` directly inside `directory`; call it before a run writes there again.
    Returns the removed paths.
    """
    removed = []
    for path in Path(directory).glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)


def strict_json(value: Any) -> Any:
    """`value` with every NaN / infinite float replaced by None, so `json.dumps` writes valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def write_json(path: str | Path, value: Any) -> Path:
    """Write `value` as indented, strict JSON (non-finite floats as null), atomically."""
    return atomic_write_text(path, json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n")


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """`safetensors.torch.save` to `path` atomically, with ordinary file modes."""
    from safetensors.torch import save

    with atomic_write(path) as handle:
        handle.write(save(tensors, metadata=metadata))
    return Path(path)


@contextlib.contextmanager
def file_lock(path: str | Path, timeout: float = -1) -> Iterator[None]:
    """Hold an exclusive inter-process lock on `path` (created beside the guarded file or folder).

    A second process asking for the same lock waits (up to `timeout` seconds, forever when negative).
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        yield
