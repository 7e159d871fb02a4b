"""The Open Inference Protocol's tensors, shared by both transports (REST, gRPC) and both sides.

A tensor on the wire is a name, a datatype (`UINT8`, `FP32`, `BYTES`, ...), a shape and its data:
raw little-endian row-major bytes (REST's binary extension, gRPC's `raw_*_contents`), or a flat JSON
list (REST without the extension). `BYTES` elements are each a 4-byte little-endian length followed
by the bytes. Everything a client can get wrong raises `InferenceError` with a message naming it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Open Inference Protocol datatype -> numpy dtype (little-endian). BYTES holds Python objects.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
# Status of each error kind on the two transports (gRPC codes by name).
ERROR_STATUS = {
    "invalid": (400, "INVALID_ARGUMENT"),
    "not_found": (404, "NOT_FOUND"),
    "unavailable": (503, "UNAVAILABLE"),
    "internal": (500, "INTERNAL"),
    "unauthenticated": (401, "UNAUTHENTICATED"),
}


class InferenceError(Exception):
    """A request the server cannot serve. `kind`: "invalid" (the client's fault: 400 / INVALID_ARGUMENT),
    "not_found" (no such model: 404 / NOT_FOUND, as Triton, KServe and MLServer answer), "unavailable"
    (overload or shutdown: 503 / UNAVAILABLE), "internal" (500 / INTERNAL) or "unauthenticated" (no or
    a wrong bearer token: 401 / UNAUTHENTICATED)."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        if kind not in ERROR_STATUS:
            raise ValueError(f"Unknown error kind {kind!r}; allowed: {sorted(ERROR_STATUS)}")
        self.kind = kind

    @property
    def http_status(self) -> int:
        return ERROR_STATUS[self.kind][0]

    @property
    def grpc_code_name(self) -> str:
        return ERROR_STATUS[self.kind][1]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: `shape` with -1 for a free dimension (the batch is the first)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class WireTensor:
    """An input as it came off the wire, not yet checked: `data` is raw bytes or a (nested) JSON list."""

    name: str
    datatype: str
    shape: list[int]
    data: Any


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (object arrays are BYTES)."""
    for name, dtype in DATATYPES.items():
        if array.dtype == dtype:
            return name
    raise InferenceError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype", "internal")


def serialize_bytes(items: Sequence[bytes]) -> bytes:
    """BYTES elements -> their wire form: each a 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(item)) + bytes(item) for item in items)


def deserialize_bytes(raw: bytes | memoryview, name: str) -> list[bytes]:
    """The wire form of BYTES elements -> the list of elements; a length running past the end is an error."""
    raw = memoryview(raw)
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InferenceError(f"input '{name}': BYTES data ends inside an element's 4-byte length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InferenceError(
                f"input '{name}': a BYTES element of {length} bytes runs past the end of its data "
                f"({len(raw) - offset} bytes left)"
            )
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    return items


def to_raw(array: np.ndarray) -> bytes:
    """A tensor's raw wire bytes: little-endian row-major, BYTES length-prefixed."""
    if array.dtype == object:
        return serialize_bytes([item if isinstance(item, bytes) else str(item).encode() for item in array.reshape(-1)])
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _flatten(data: Any) -> list:
    if isinstance(data, (list, tuple)):
        return [value for item in data for value in _flatten(item)]
    return [data]


def _check_spec(spec: TensorSpec, tensor: WireTensor) -> None:
    if tensor.datatype != spec.datatype:
        raise InferenceError(f"input '{spec.name}' has datatype {tensor.datatype}, the model expects {spec.datatype}")
    shape = tensor.shape
    if not all(isinstance(size, int) and size >= 0 for size in shape):
        raise InferenceError(f"input '{spec.name}' has shape {shape}; dimensions must be non-negative integers")
    if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
        raise InferenceError(
            f"input '{spec.name}' has shape {shape}, the model expects {list(spec.shape)} (-1: any size)"
        )


def _to_array(spec: TensorSpec, tensor: WireTensor) -> np.ndarray:
    count = math.prod(tensor.shape)
    if isinstance(tensor.data, (bytes, bytearray, memoryview)):
        if spec.datatype == "BYTES":
            items = deserialize_bytes(tensor.data, spec.name)
            if len(items) != count:
                raise InferenceError(
                    f"input '{spec.name}' holds {len(items)} BYTES elements, its shape {tensor.shape} needs {count}"
                )
            array = np.empty(count, dtype=object)
            array[:] = items
            return array.reshape(tensor.shape)
        itemsize = DATATYPES[spec.datatype].itemsize
        if len(tensor.data) != count * itemsize:
            raise InferenceError(
                f"input '{spec.name}' has {len(tensor.data)} bytes of data, but shape {tensor.shape} of "
                f"{spec.datatype} needs {count * itemsize} ({count} x {itemsize})"
            )
        return np.frombuffer(tensor.data, dtype=DATATYPES[spec.datatype]).reshape(tensor.shape)
    values = _flatten(tensor.data)
    if len(values) != count:
        raise InferenceError(f"input '{spec.name}' has {len(values)} values, its shape {tensor.shape} needs {count}")
    if spec.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [value.encode() if isinstance(value, str) else bytes(value) for value in values]
        return array.reshape(tensor.shape)
    dtype = DATATYPES[spec.datatype]
    if not all(isinstance(value, (int, float, bool)) for value in values):
        raise InferenceError(f"input '{spec.name}': JSON data of {spec.datatype} must be numbers")
    array = np.asarray(values, dtype=np.float64 if dtype.kind == "f" else object)
    if dtype.kind in "ui":
        limits = np.iinfo(dtype)
        if any(not float(value).is_integer() or not limits.min <= value <= limits.max for value in values):
            raise InferenceError(
                f"input '{spec.name}': {spec.datatype} values must be integers in [{limits.min}, {limits.max}]"
            )
    return array.astype(dtype).reshape(tensor.shape)


def decode_inputs(specs: Sequence[TensorSpec], tensors: Sequence[WireTensor]) -> tuple[dict[str, np.ndarray], int]:
    """Check `tensors` against a model's input `specs` (names, datatypes, shapes, data sizes) and decode them.

    Returns the arrays by name and the batch size (first dimension, the same for every input).
    """
    expected = {spec.name: spec for spec in specs}
    names = [tensor.name for tensor in tensors]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    unknown = [name for name in names if name not in expected]
    missing = [name for name in expected if name not in names]
    if duplicates or unknown or missing:
        problems = [f"duplicate {duplicates}"] * bool(duplicates) + [f"unknown {unknown}"] * bool(unknown)
        problems += [f"missing {missing}"] * bool(missing)
        raise InferenceError(f"inputs {names}: {', '.join(problems)}; the model takes {list(expected)}")
    for tensor in tensors:
        _check_spec(expected[tensor.name], tensor)
    batch_sizes = {tensor.shape[0] for tensor in tensors}
    if len(batch_sizes) != 1:
        raise InferenceError(
            f"inputs disagree on the batch size (first dimension): { ({t.name: t.shape[0] for t in tensors}) }"
        )
    batch_size = batch_sizes.pop()
    if batch_size < 1:
        raise InferenceError("the batch size (first dimension) must be at least 1")
    return {tensor.name: _to_array(expected[tensor.name], tensor) for tensor in tensors}, batch_size
