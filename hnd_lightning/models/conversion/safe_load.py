"""Reading a checkpoint from elsewhere without running any of its code.

Every file loads with `torch.load(map_location="cpu", weights_only=True)`, which rebuilds tensors
and plain containers only, with `argparse.Namespace` allowed too (the `args` of KD, torchdistill and
sc2bench checkpoints). What needs another class is refused naming it:

- a raw pickle (neither torch.save's zip nor its legacy format), such as the original code's
  `hnd/imagenet-<arch>_mimic-...pt` (a pickled whole `DenseNetMimic` module), is never unpickled:
  its first GLOBAL opcodes are read with `pickletools.genops`, which only parses;
- a torch.save file whose pickle asks for a class outside the allowed few (`torch.save(model)`, a
  crafted file) is refused by the restricted unpickler before that class is touched.
"""

from __future__ import annotations

import argparse
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import torch

ALLOWED_CLASSES = (argparse.Namespace,)
ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy (pre-1.6) format opens with the pickled magic number 0x1950a86a20f9469cfc6c
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# the original's whole mimic modules, pickled by its mimic_runner.py on every run
ORIGINAL_MIMIC_CLASSES = ("DenseNetMimic", "ResNetMimic", "InceptionMimic")
# what pickled tensors and bytes refer to: not worth naming when a raw pickle is refused for another class
TENSOR_GLOBALS = (
    "torch._utils._rebuild",
    "torch._tensor._rebuild",
    "torch.storage._load",
    "collections.OrderedDict",
    "_codecs.encode",
)
MAX_OPCODES = 1_000_000


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file, what is wrong and the fix."""


def pickle_globals(path: Path, limit: int = 3) -> list[str]:
    """The first `limit` classes or functions a pickle file refers to ("module.name"), read without
    unpickling; those that only rebuild tensors are left out.

    Raises:
        ConversionError: the file is not a pickle at all.
    """
    found: list[str] = []
    strings: list[str] = []  # protocol 4+ pushes module and name as strings before STACK_GLOBAL
    with open(path, "rb") as handle:
        try:
            for count, (opcode, argument, _) in enumerate(pickletools.genops(handle)):
                name = None
                if opcode.name in ("GLOBAL", "INST"):
                    name = ".".join(str(argument).split(" ", 1))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    name = f"{strings[-2]}.{strings[-1]}"
                elif isinstance(argument, str):
                    strings.append(argument)
                if name is not None and not name.startswith(TENSOR_GLOBALS) and not name.endswith("Storage"):
                    found.append(name)
                if len(found) >= limit or count >= MAX_OPCODES or opcode.name == "STOP":
                    break
        except (ValueError, EOFError, pickle.UnpicklingError) as error:
            if not found:
                raise ConversionError(
                    f"{path}: not a torch checkpoint (neither torch.save's format nor a pickle: {error}). "
                    "Pass a .pt/.pth file written by torch.save."
                ) from None
    return found


def _head_file_hint(path: Path) -> str:
    name = path.name
    if "_mimic-" in name and "_head_mimic-" not in name:
        return f"{path.with_name(name.replace('_mimic-', '_head_mimic-', 1))}"
    return "the `..._head_mimic-...` file of the same configuration"


def _refuse_class(path: Path, name: str) -> ConversionError:
    if name.rsplit(".", 1)[-1] in ORIGINAL_MIMIC_CLASSES:
        return ConversionError(
            f"{path}: a raw pickle of the original code's whole module {name} (written by its mimic_runner.py, "
            f"which rewrites this file on every run); unpickling it would run that code, so it is not read. "
            f"Convert the HND head file instead: {_head_file_hint(path)} (the head only; the tail is the teacher's, "
            f"`model.teacher.weights=imagenet`)."
        )
    return ConversionError(
        f"{path}: needs the class {name} to load, and loading it would run that class's code; only tensors, "
        f"plain containers and argparse.Namespace are read. Save the model's state_dict() (torch.save("
        f"model.state_dict(), PATH)) instead of the module, or pass another file."
    )


def _file_format(path: Path) -> str:
    with open(path, "rb") as handle:
        start = handle.read(len(LEGACY_MAGIC))
    if start.startswith(ZIP_MAGIC):
        return "zip"
    return "legacy" if start == LEGACY_MAGIC else "pickle"


def load_checkpoint(path: str | Path) -> Any:
    """The content of a torch checkpoint file, rebuilt from tensors, plain containers and argparse.Namespace only.

    Raises:
        FileNotFoundError: no such file.
        ConversionError: a raw pickle (never unpickled), a file needing another class (named), or a
            damaged file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file {str(path)!r}: pass `checkpoint=PATH` of a .pt/.pth file.")
    if _file_format(path) == "pickle":
        names = pickle_globals(path)
        raise (
            _refuse_class(path, names[0])
            if names
            else ConversionError(
                f"{path}: a raw pickle, not a torch.save file; it is not read. Pass a file written by torch.save."
            )
        )
    try:
        with torch.serialization.safe_globals(list(ALLOWED_CLASSES)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise _refuse_class(path, match.group(1) if match else "outside the allowed few") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ConversionError(
            f"{path}: not a readable torch checkpoint ({error}); it is damaged or cut short."
        ) from None
