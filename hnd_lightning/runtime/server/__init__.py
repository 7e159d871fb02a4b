"""The edge server (`python -m hnd_lightning.serve`); imports `common`, never `device`.

models.py         the served models (`server`, `server_b<B>`, `teacher`)
batcher.py        dynamic batching with a bounded queue
service.py        what REST and gRPC share: checking, queueing, timing, counting
rest_app.py       FastAPI routes
grpc_servicer.py  `inference.GRPCInferenceService`
metrics.py        Prometheus metrics
server.py         lifecycle (ports, graceful stop)
process.py        a server in its own process
"""
