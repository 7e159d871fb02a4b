"""REST bodies of the Open Inference Protocol with Triton's binary tensor data extension.

A request body is a JSON inference header, optionally followed by the inputs' raw bytes in input
order; then the `Inference-Header-Content-Length` HTTP header gives the JSON's byte length and each
binary input carries `"parameters": {"binary_data_size": N}`. Responses are built the same way:
outputs asked for with `"binary_data": true` (or the request parameter `binary_data_output`) follow
the JSON header as raw bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hnd_lightning.runtime.common.protocol import (
    DATATYPES,
    InferenceError,
    WireTensor,
    datatype_of,
    deserialize_bytes,
    to_raw,
)

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class RestRequest:
    """A parsed inference request: its inputs as they came, which outputs in which form, parameters."""

    inputs: list[WireTensor]
    id: str | None = None
    # requested output name -> binary; None: every output, in the default form
    outputs: dict[str, bool] | None = None
    binary_outputs: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def _header_length(value: str | None, body_size: int) -> int:
    if value is None:
        return body_size
    try:
        length = int(value)
    except ValueError:
        raise InferenceError(f"{HEADER_LENGTH} must be an integer byte count, got {value!r}") from None
    if not 0 < length <= body_size:
        raise InferenceError(
            f"{HEADER_LENGTH} is {length} but the body has {body_size} bytes; the JSON header cannot be longer than the body"
        )
    return length


def _binary_size(tensor: dict[str, Any]) -> int | None:
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InferenceError(
            f"input '{tensor.get('name')}': binary_data_size must be a non-negative integer, got {size!r}"
        )
    return size


def parse_request(body: bytes, header_length: str | None) -> RestRequest:
    """Split a REST inference body into the JSON header and each input's data.

    Raises `InferenceError` for a header length past the body, invalid JSON, inputs without data, or
    `binary_data_size`s that do not add up to the bytes after the header (truncated or extra bytes).
    """
    json_size = _header_length(header_length, len(body))
    try:
        header = json.loads(bytes(body[:json_size]))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InferenceError(
            f"the inference header is not valid JSON ({error}); with binary inputs set {HEADER_LENGTH}"
        ) from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InferenceError('the inference header must be a JSON object with an "inputs" list')
    binary = memoryview(body)[json_size:]
    inputs, offset = [], 0
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InferenceError('every input needs a "name", a "datatype", a "shape" and data')
        name, shape = tensor["name"], tensor.get("shape")
        if not isinstance(shape, list):
            raise InferenceError(f"input '{name}': \"shape\" must be a list of integers, got {shape!r}")
        size = _binary_size(tensor)
        if size is not None:
            if offset + size > len(binary):
                raise InferenceError(
                    f"truncated body: input '{name}' needs {size} bytes (binary_data_size) at offset {offset} after "
                    f"the JSON header, but only {len(binary) - offset} remain"
                )
            data = binary[offset : offset + size]
            offset += size
        elif "data" in tensor:
            data = tensor["data"]
        else:
            raise InferenceError(f"input '{name}' has neither \"data\" nor a binary_data_size parameter")
        inputs.append(WireTensor(name, str(tensor.get("datatype")), shape, data))
    if offset != len(binary):
        raise InferenceError(
            f"the body has {len(binary)} bytes after the JSON header but the inputs' binary_data_size add up to {offset}"
        )
    parameters = header.get("parameters") or {}
    outputs = None
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list) or not all(
            isinstance(o, dict) and "name" in o for o in header["outputs"]
        ):
            raise InferenceError('"outputs" must be a list of objects with a "name"')
        default = bool(parameters.get("binary_data_output", False))
        outputs = {o["name"]: bool((o.get("parameters") or {}).get("binary_data", default)) for o in header["outputs"]}
    request_id = header.get("id")
    return RestRequest(
        inputs,
        None if request_id is None else str(request_id),
        outputs,
        bool(parameters.get("binary_data_output", False)),
        parameters,
    )


def _tensor_entry(name: str, array: np.ndarray, binary: bool, blobs: list[bytes]) -> dict[str, Any]:
    """One tensor of a request or response header: its raw bytes appended to `blobs` when `binary`
    (Triton's binary tensor extension), else its values as a JSON list (BYTES decoded as text)."""
    tensor: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
    if binary:
        blob = to_raw(array)
        tensor["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    elif array.dtype == object:
        tensor["data"] = [item.decode(errors="replace") for item in array.reshape(-1)]
    else:
        tensor["data"] = array.reshape(-1).tolist()
    return tensor


def build_response(
    model_name: str, request: RestRequest, outputs: dict[str, np.ndarray], parameters: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra HTTP headers for `outputs` (already restricted to those requested)."""
    tensors, blobs = [], []
    for name, array in outputs.items():
        binary = request.outputs[name] if request.outputs is not None else request.binary_outputs
        tensors.append(_tensor_entry(name, array, binary, blobs))
    header = {"model_name": model_name, "model_version": "1", "parameters": parameters, "outputs": tensors}
    if request.id is not None:
        header["id"] = request.id
    header_bytes = json.dumps(header).encode()
    if not blobs:
        return header_bytes, {}
    return header_bytes + b"".join(blobs), {HEADER_LENGTH: str(len(header_bytes))}


def build_request(
    inputs: dict[str, np.ndarray], outputs: list[str], binary: bool = True, request_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A client's request body and headers: inputs as raw bytes after the header when `binary`, else JSON lists."""
    tensors, blobs = [], []
    for name, array in inputs.items():
        if not binary and array.dtype == object:
            raise InferenceError(f"input '{name}': BYTES need the binary extension (binary=True)", "internal")
        tensors.append(_tensor_entry(name, array, binary, blobs))
    header: dict[str, Any] = {
        "inputs": tensors,
        "outputs": [{"name": name, "parameters": {"binary_data": binary}} for name in outputs],
    }
    if request_id is not None:
        header["id"] = request_id
    header_bytes = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
    if binary:
        headers[HEADER_LENGTH] = str(len(header_bytes))
    return header_bytes + b"".join(blobs), headers


def parse_response(body: bytes, header_length: str | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A client's view of a response body: outputs by name and the response parameters."""
    json_size = int(header_length) if header_length is not None else len(body)
    header = json.loads(body[:json_size])
    outputs, offset = {}, json_size
    for tensor in header.get("outputs", []):
        dtype, shape = DATATYPES[tensor["datatype"]], tensor["shape"]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = body[offset : offset + size]
            offset += size
            if tensor["datatype"] == "BYTES":
                items = deserialize_bytes(raw, tensor["name"])
                array = np.empty(len(items), dtype=object)
                array[:] = items
                outputs[tensor["name"]] = array.reshape(shape)
            else:
                outputs[tensor["name"]] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        else:
            outputs[tensor["name"]] = np.asarray(tensor["data"], dtype=dtype).reshape(shape)
    return outputs, header.get("parameters") or {}
