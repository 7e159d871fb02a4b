"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), on grpc.aio.

Built on the generated modules that `tritonclient` ships (`service_pb2`, `service_pb2_grpc`), so the
messages are exactly Triton's. Inputs come as `raw_input_contents` (what tritonclient sends) or as
typed `contents`; outputs go back as `raw_output_contents`. Errors abort the call with
INVALID_ARGUMENT / UNAVAILABLE / INTERNAL and the message.
"""

from __future__ import annotations

from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from hnd_lightning.runtime.common.protocol import InferenceError, WireTensor, datatype_of, to_raw
from hnd_lightning.runtime.server.service import InferenceService

# datatype -> the InferTensorContents field that carries it when not sent raw
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def wire_tensors(request: service_pb2.ModelInferRequest) -> list[WireTensor]:
    """The request's inputs with their raw bytes (or typed contents) attached, unchecked."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InferenceError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input, in order"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        if raw:
            data: Any = raw[index]
        else:
            field = CONTENTS_FIELD.get(tensor.datatype)
            if field is None:
                raise InferenceError(f"input '{tensor.name}' has unknown datatype {tensor.datatype!r}")
            data = list(getattr(tensor.contents, field))
        tensors.append(WireTensor(tensor.name, tensor.datatype, list(tensor.shape), data))
    return tensors


def _parameter(value: Any) -> service_pb2.InferParameter:
    if isinstance(value, bool):
        return service_pb2.InferParameter(bool_param=value)
    if isinstance(value, int):
        return service_pb2.InferParameter(int64_param=value)
    if isinstance(value, float):
        return service_pb2.InferParameter(double_param=value)
    return service_pb2.InferParameter(string_param=str(value))


class GrpcInferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Health, metadata and ModelInfer over an `InferenceService`; the other RPCs stay UNIMPLEMENTED."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def _abort(self, context: grpc.aio.ServicerContext, error: InferenceError) -> None:
        await context.abort(getattr(grpc.StatusCode, error.grpc_code_name), str(error))

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.service.ready)

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(**self.service.server_metadata())

    def _model(self, name: str, version: str):
        if version not in ("", "1"):
            raise InferenceError(f"model '{name}' has only version 1, not {version!r}")
        return self.service.model(name)

    async def ModelReady(self, request, context):
        try:
            self._model(request.name, request.version)
        except InferenceError as error:
            await self._abort(context, error)
        return service_pb2.ModelReadyResponse(ready=self.service.ready)

    async def ModelMetadata(self, request, context):
        try:
            description = self._model(request.name, request.version).describe()
        except InferenceError as error:
            await self._abort(context, error)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=description["name"],
            versions=description["versions"],
            platform=description["platform"],
            inputs=[tensor(**spec) for spec in description["inputs"]],
            outputs=[tensor(**spec) for spec in description["outputs"]],
        )

    async def ModelInfer(self, request, context):
        name = request.model_name
        try:
            self._model(name, request.model_version)
            self.service.check_size(request.ByteSize())
            tensors = wire_tensors(request)
        except InferenceError as error:
            self.service.reject(name, "grpc", error)
            await self._abort(context, error)
        try:
            requested = [output.name for output in request.outputs] or None
            outputs, parameters = await self.service.infer(name, tensors, requested, "grpc")
        except InferenceError as error:
            await self._abort(context, error)
        response = service_pb2.ModelInferResponse(model_name=name, model_version="1", id=request.id)
        for key, value in parameters.items():
            response.parameters[key].CopyFrom(_parameter(value))
        for output_name, array in outputs.items():
            response.outputs.add(name=output_name, datatype=datatype_of(array), shape=list(array.shape))
            response.raw_output_contents.append(to_raw(array))
        return response
