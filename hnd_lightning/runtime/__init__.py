"""The runtime of a split: an edge server and a device client on the Open Inference Protocol (KServe v2).

Server side (`python -m hnd_lightning.serve`):
    protocol.py         tensors on the wire, their checks, `InferenceError`
    rest_codec.py       REST bodies with Triton's binary tensor extension
    models.py           the served models (`server`, `server_b<B>`, `teacher`)
    parts.py            what they are loaded from (artifacts, teacher, torch / onnxruntime runners)
    batcher.py          dynamic batching with a bounded queue
    service.py          what REST and gRPC share: checking, queueing, timing, counting
    rest_app.py         FastAPI routes            grpc_servicer.py   `inference.GRPCInferenceService`
    metrics.py          Prometheus metrics        server.py          lifecycle (ports, graceful stop)
    process.py          a server in its own process
    triton_repository.py  the server part as a Triton model repository (written by `deploy`)
    onnx_export.py      `device.onnx` / `server.onnx` exported and checked against PyTorch (`deploy`)

Device side (`python -m hnd_lightning.client`, `python -m hnd_lightning.loadtest`):
    transport.py        REST / gRPC connection     link.py            link emulation
    images.py           images read and prepared   device_client.py   the three strategies per image
    measure.py          records and summaries      report.py          prediction, table, plot
    loadgen.py          concurrent load            loopback.py        one short run over loopback
"""
