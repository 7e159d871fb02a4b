"""What TLS, the bearer token and the limits cost per request: one client over loopback, interleaved.

    python scripts/measure_serving_security.py                      # writes outputs/serving_security.json
    python scripts/measure_serving_security.py --rounds 10 --per-round 200 --out results.json

Starts one server process per variant (all at once), each serving model `server` with the split's
inputs and outputs at 32 x 32 (bottleneck UINT8 [1, 3, 5, 5], scale, zero_point -> logits FP32 [1, 3]:
the same 80-byte payload on the wire) but next to no compute, so what is measured is the path a
request takes, not a model:

    unguarded    no limits (uvicorn's and gRPC's defaults), plain TCP: the baseline of what limits cost
    plain        the default limits, plain TCP
    tls          + TLS (EC P-256 certificates made for the run)
    tls_token    + a bearer token on every request
    mtls_token   + mutual TLS (a client certificate)

and then sends requests interleaved as finely as one client can: in each sweep, one request to every
(variant, protocol) in a shuffled order, on one kept-alive connection each (REST with binary tensors,
and gRPC; the project's own transports); `--rounds` x `--per-round` sweeps. Then as many sweeps of
`--fresh-per-round` per round where every request opens a new connection (what a device that
reconnects pays: TCP and TLS handshakes). Reports p50 / p95 round trip, p50 overhead (round trip minus
the server's queue and compute), the spread of the per-round medians, and what each variant adds to
the one before it (`unguarded` -> `plain` -> `tls` -> `tls_token` -> `mtls_token`) as the median of
the paired differences of requests sent in the same sweep, so that load changes on a shared machine
cancel out. The load average is recorded after every round.
Run from the repository root (the servers run this file as `python -m scripts.measure_serving_security`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test suite's throwaway certificates (needs `cryptography`)

VARIANTS = ("unguarded", "plain", "tls", "tls_token", "mtls_token")
TOKEN = "measure-" + "0123456789abcdef" * 2


METADATA = {"bottleneck_tensor": {"shape": [3, 5, 5]}, "num_classes": 3}


def variant_settings(variant: str, work: Path):
    """(ServerSettings keyword arguments, ClientTls or None, token or None) of a variant."""
    from hnd_lightning.runtime.common.credentials import ClientTls
    from hnd_lightning.runtime.server.security import ServerTls

    settings, tls, token = {}, None, None
    if variant == "unguarded":
        settings["limits"] = None
    if variant.startswith(("tls", "mtls")):
        client_ca = str(work / "ca.crt") if variant.startswith("mtls") else None
        settings["tls"] = ServerTls(str(work / "server.crt"), str(work / "server.key"), client_ca)
        tls = ClientTls(
            str(work / "ca.crt"), *((str(work / "client.crt"), str(work / "client.key")) if client_ca else ())
        )
    if variant.endswith("token"):
        settings["token"] = token = TOKEN
    return settings, tls, token


def serve_variant(variant: str, work: Path) -> None:
    """A server of `variant` on free 127.0.0.1 ports, announced as `serve` does; SIGTERM stops it."""
    from hnd_lightning.runtime.server.models import ServedModel, split_specs
    from hnd_lightning.runtime.server.process import announce
    from hnd_lightning.runtime.server.server import InferenceServer, ServerSettings
    from hnd_lightning.runtime.server.service import BatchingSettings, InferenceService

    class NearlyFree(ServedModel):
        def run(self, batch):
            rows = len(batch["bottleneck"])
            return {"logits": batch["bottleneck"].reshape(rows, 3, -1).mean(axis=2, dtype=np.float32)}

    inputs, outputs = split_specs(METADATA)
    service = InferenceService({"server": NearlyFree("server", inputs, outputs, None, METADATA)}, BatchingSettings())
    settings, _, _ = variant_settings(variant, work)
    server = InferenceServer(service, ServerSettings(http_port=0, grpc_port=0, **settings))

    def started(server) -> None:
        announce(
            {
                "host": "127.0.0.1",
                "http_port": server.http_port,
                "grpc_port": server.grpc_port,
                "tls": "tls" in settings,
            }
        )

    asyncio.run(server.serve_until_signal(started))


def summarize(samples: list[list[tuple[float, float]]], before: list[list[tuple[float, float]]] | None):
    """Per-round lists of (round trip, overhead) ms, and those of the variant before (same sweeps) ->
    p50 / p95 round trip, p50 overhead, the range of the per-round medians, the paired median difference."""
    everything = np.array([pair for round_samples in samples for pair in round_samples])
    medians = [float(np.median([trip for trip, _ in round_samples])) for round_samples in samples]
    summary = {
        "requests": len(everything),
        "p50_ms": float(np.percentile(everything[:, 0], 50)),
        "p95_ms": float(np.percentile(everything[:, 0], 95)),
        "overhead_p50_ms": float(np.percentile(everything[:, 1], 50)),
        "round_median_min_ms": min(medians),
        "round_median_max_ms": max(medians),
        "added_over_previous_ms": None,
    }
    if before is not None:
        previous = np.array([pair for round_samples in before for pair in round_samples])
        summary["added_over_previous_ms"] = float(np.median(everything[:, 0] - previous[:, 0]))
    return summary


def sweep(keys: list, send, table: dict, order: random.Random) -> None:
    """One request to each key (shuffled), appended to the round that is open in `table`."""
    keys = list(keys)
    order.shuffle(keys)
    for key in keys:
        table[key][-1].append(send(key))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--fresh-per-round", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "outputs" / "serving_security.json"))
    args = parser.parse_args()

    from pki import make_test_pki

    from hnd_lightning.runtime.device.transport import connect
    from hnd_lightning.runtime.server.process import ServerProcess

    work = Path(tempfile.mkdtemp(prefix="serving_security_"))
    make_test_pki(work)
    rng = np.random.default_rng(args.seed)
    payloads = [
        {
            "bottleneck": rng.integers(0, 256, (1, 3, 5, 5), dtype=np.uint8),
            "scale": rng.uniform(0.01, 0.2, 1).astype(np.float32),
            "zero_point": rng.integers(0, 256, 1, dtype=np.uint8),
        }
        for _ in range(16)
    ]
    servers, clients = {}, {}
    try:
        for variant in VARIANTS:
            _, tls, token = variant_settings(variant, work)
            process = ServerProcess(["serve-variant", variant, str(work)], module="scripts.measure_serving_security")
            servers[variant] = process.start()
            for protocol in ("http", "grpc"):
                clients[(variant, protocol)] = (process.url(protocol), tls, token)
        transports = {key: connect(url, tls=tls, token=token) for key, (url, tls, token) in clients.items()}
        for transport in transports.values():
            for index in range(args.warmup):
                transport.infer("server", payloads[index % len(payloads)], ["logits"])
        kept = {key: [] for key in clients}
        fresh = {key: [] for key in clients}
        order, counter = random.Random(args.seed), iter(range(1 << 62))

        def kept_alive(key) -> tuple[float, float]:
            reply = transports[key].infer("server", payloads[next(counter) % len(payloads)], ["logits"])
            server_ms = float(reply.parameters["queue_ms"]) + float(reply.parameters["compute_ms"])
            return reply.round_trip_ms, reply.round_trip_ms - server_ms

        def new_connection(key) -> tuple[float, float]:
            url, tls, token = clients[key]
            begun = time.perf_counter()
            transport = connect(url, tls=tls, token=token)
            reply = transport.infer("server", payloads[next(counter) % len(payloads)], ["logits"])
            total_ms = 1000 * (time.perf_counter() - begun)
            transport.close()
            server_ms = float(reply.parameters["queue_ms"]) + float(reply.parameters["compute_ms"])
            return total_ms, total_ms - server_ms

        load = [os.getloadavg()]
        started = time.time()
        for _ in range(args.rounds):
            for table, send, sweeps in (
                (kept, kept_alive, args.per_round),
                (fresh, new_connection, args.fresh_per_round),
            ):
                for key in clients:
                    table[key].append([])
                for _ in range(sweeps):
                    sweep(list(clients), send, table, order)
            load.append(os.getloadavg())
        for transport in transports.values():
            transport.close()
    finally:
        for process in servers.values():
            process.stop(timeout_s=30)
    results = [
        {
            "variant": variant,
            "protocol": protocol,
            "connection": connection,
            **summarize(table[(variant, protocol)], table[(VARIANTS[index - 1], protocol)] if index else None),
        }
        for connection, table in (("kept-alive", kept), ("new per request", fresh))
        for protocol in ("http", "grpc")
        for index, variant in enumerate(VARIANTS)
    ]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
        "seconds": time.time() - started,
        "settings": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "load_average_1_5_15": {"start": load[0], "end": load[-1], "max_1min": max(item[0] for item in load)},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("| connection | protocol | variant | p50 ms | p95 ms | overhead p50 ms | round medians ms | adds ms |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        added = "" if row["added_over_previous_ms"] is None else f"{row['added_over_previous_ms']:+.3f}"
        print(
            f"| {row['connection']} | {row['protocol']} | {row['variant']} | {row['p50_ms']:.3f} | {row['p95_ms']:.3f} "
            f"| {row['overhead_p50_ms']:.3f} | {row['round_median_min_ms']:.3f}-{row['round_median_max_ms']:.3f} "
            f"| {added} |"
        )
    print(json.dumps(report["load_average_1_5_15"]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve-variant"]:
        serve_variant(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
