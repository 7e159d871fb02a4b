"""Prometheus metrics of a server (scraped at `GET /metrics`): requests, failures, batch sizes, queue
and compute time per model, refused tokens and limits hit. Each server has its own registry, so
several can live in one process."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServerMetrics:
    """Counters and histograms labelled by model (and protocol for requests)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hnd_inference_requests", "Inference requests received", ["model", "protocol"], registry=self.registry
        )
        self.failures = Counter(
            "hnd_inference_failures",
            "Inference requests answered with an error",
            ["model", "protocol", "kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "hnd_inference_requests_in_flight",
            "Inference requests received and not yet answered",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "hnd_batch_size", "Rows per executed batch", ["model"], buckets=BATCH_SIZE_BUCKETS, registry=self.registry
        )
        self.queue_seconds = Histogram(
            "hnd_queue_seconds",
            "Time a request waited for its batch",
            ["model"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "hnd_compute_seconds", "Time a batch computed", ["model"], buckets=SECONDS_BUCKETS, registry=self.registry
        )

        self.auth_failures = Counter(
            "hnd_auth_failures",
            "Requests refused for a missing or wrong bearer token",
            ["protocol", "reason"],
            registry=self.registry,
        )
        self.limit_hits = Counter(
            "hnd_limit_hits",
            "Connections and requests refused or cut off by a limit (limits.*)",
            ["protocol", "limit"],
            registry=self.registry,
        )
        self.open_connections = Gauge(
            "hnd_open_connections", "Open connections admitted under the cap", ["protocol"], registry=self.registry
        )
        self.rpcs_in_progress = Gauge(
            "hnd_rpcs_in_progress",
            "gRPC calls being handled (under limits.grpc_max_concurrent_rpcs)",
            registry=self.registry,
        )

    def observe_request(self, model: str, protocol: str, failure_kind: str | None = None) -> None:
        self.requests.labels(model, protocol).inc()
        if failure_kind is not None:
            self.failures.labels(model, protocol, failure_kind).inc()

    def observe_batch(self, model: str, rows: int, queue_seconds: list[float], compute_seconds: float) -> None:
        self.batch_size.labels(model).observe(rows)
        self.compute_seconds.labels(model).observe(compute_seconds)
        for seconds in queue_seconds:
            self.queue_seconds.labels(model).observe(seconds)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
