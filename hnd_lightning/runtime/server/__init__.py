"""The edge server (`python -m hnd_lightning.serve`); imports `common`, never `device`.

models.py         the served models (`server`, `server_b<B>`, `teacher`)
batcher.py        dynamic batching with a bounded queue
service.py        what REST and gRPC share: checking, queueing, timing, counting
rest_app.py       FastAPI routes
grpc_servicer.py  `inference.GRPCInferenceService`
metrics.py        Prometheus metrics
security.py       TLS on both ports, the bearer token
limits.py         limits against hostile clients (gRPC options, call cap), the uvicorn server
http_guard.py     REST's limits in the HTTP protocol (header cap, read / idle timeouts, connection cap)
server.py         lifecycle (ports, graceful stop)
process.py        a server in its own process
"""
