"""The Open Inference Protocol over REST, as a FastAPI app (served by uvicorn).

    GET  /v2/health/live   /v2/health/ready   /v2   /v2/models/{m}   /v2/models/{m}/ready   /metrics
    POST /v2/models/{m}/infer          (also under /v2/models/{m}/versions/{v}/...)

Every error is a 4xx / 5xx status with `{"error": "<message>"}`, as Triton answers.
"""

from __future__ import annotations

import zlib

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hnd_lightning.runtime.common.protocol import InferenceError
from hnd_lightning.runtime.common.rest_codec import HEADER_LENGTH, build_response, parse_request
from hnd_lightning.runtime.server.service import InferenceService

# Content-Encoding -> zlib window bits (tritonclient compresses requests with these on request)
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _error(error: InferenceError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=error.http_status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed per Content-Encoding; `InferenceError` past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InferenceError(f"request body of {int(declared):,} bytes exceeds max_request_bytes={limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InferenceError(f"request body exceeds max_request_bytes={limit:,}")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding == "identity":
        return body
    if encoding not in ENCODINGS:
        raise InferenceError(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    decompressor = zlib.decompressobj(ENCODINGS[encoding])
    try:
        body = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise InferenceError(f"the {encoding} body does not decompress: {error}") from None
    if len(body) > limit:
        raise InferenceError(f"decompressed request body exceeds max_request_bytes={limit:,}")
    return body


def build_rest_app(service: InferenceService) -> FastAPI:
    """The REST routes over `service`."""
    app = FastAPI(title="hnd-lightning split inference server", version="1", docs_url="/docs", redoc_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if service.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse(service.server_metadata())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=service.metrics.content_type)

    def model_or_error(model_name: str, version: str | None):
        if version not in (None, "", "1"):
            raise InferenceError(f"model '{model_name}' has only version 1, not {version!r}")
        return service.model(model_name)

    @app.get("/v2/models/{model_name}")
    @app.get("/v2/models/{model_name}/versions/{version}")
    async def model_metadata(model_name: str, version: str | None = None) -> Response:
        try:
            return JSONResponse(model_or_error(model_name, version).describe())
        except InferenceError as error:
            return _error(error)

    @app.get("/v2/models/{model_name}/ready")
    @app.get("/v2/models/{model_name}/versions/{version}/ready")
    async def model_ready(model_name: str, version: str | None = None) -> Response:
        try:
            model_or_error(model_name, version)
        except InferenceError as error:
            return _error(error)
        return Response(status_code=200 if service.ready else 503)

    @app.post("/v2/models/{model_name}/infer")
    @app.post("/v2/models/{model_name}/versions/{version}/infer")
    async def infer(model_name: str, request: Request, version: str | None = None) -> Response:
        try:
            model_or_error(model_name, version)
            parsed = parse_request(
                await read_body(request, service.max_request_bytes), request.headers.get(HEADER_LENGTH)
            )
        except InferenceError as error:
            service.reject(model_name, "http", error)
            return _error(error)
        try:
            outputs, parameters = await service.infer(
                model_name, parsed.inputs, None if parsed.outputs is None else list(parsed.outputs), "http"
            )
        except InferenceError as error:
            return _error(error)
        body, headers = build_response(model_name, parsed, outputs, parameters)
        return Response(body, headers=headers, media_type="application/octet-stream" if headers else "application/json")

    return app
