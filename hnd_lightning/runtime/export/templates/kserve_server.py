"""A KServe ModelServer of a split's server part (written by `deploy` into `kserve/`), from KServe's venv:

    python kserve_server.py --http_port 8080 --grpc_port 8081 [--bind 127.0.0.1] [--intra_op_threads 1]

Serves model `server` (`--model_name`) on the Open Inference Protocol, running `model.onnx` beside
this file through `split_server_part.py` (onnxruntime + numpy); `settings.json` beside it holds the
defaults deploy chose (`model_name`, `intra_op_threads`). KServe 0.21 has no host option: REST
binds 0.0.0.0 and gRPC [::]. `--bind ADDRESS` puts both on ADDRESS instead (127.0.0.1: this machine
only), by giving uvicorn's Config and grpc.aio's add_insecure_port that address before KServe starts.
Every other flag is KServe's own (`--workers`, `--max_threads`, `--ssl_certfile`, ...). KServe checks
no inputs itself; this adapter does (400 / INVALID_ARGUMENT naming the problem). One request runs at
a time, unbatched (KServe has no dynamic batcher); each response says `batch_size` and `compute_ms`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # split_server_part.py, beside this file

from split_server_part import INPUTS, OUTPUT, InvalidInput, SplitServerPart  # noqa: E402


def parse_own_arguments() -> argparse.Namespace:
    """This adapter's flags, their defaults from `settings.json` beside it (written by deploy); KServe
    parses the whole command line again for its own flags and ignores these."""
    settings_file = HERE / "settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bind", default=None, help="listen on this address only (default: KServe's 0.0.0.0 / [::])")
    parser.add_argument("--model_name", default=settings.get("model_name", "server"))
    parser.add_argument("--onnx", default=str(HERE / "model.onnx"))
    parser.add_argument("--intra_op_threads", type=int, default=settings.get("intra_op_threads", 1))
    return parser.parse_known_args()[0]


def bind_to(address: str) -> None:
    """Make KServe's REST (uvicorn) and gRPC (grpc.aio) servers listen on `address` instead of all interfaces."""
    import grpc.aio
    import uvicorn

    class Config(uvicorn.Config):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "host": address})

    uvicorn.Config = Config
    add_insecure_port = grpc.aio._server.Server.add_insecure_port

    def add_port(self, listen_address: str) -> int:
        return add_insecure_port(self, f"{address}:{listen_address.rpartition(':')[2]}")

    grpc.aio._server.Server.add_insecure_port = add_port


def main() -> None:
    own = parse_own_arguments()
    if own.bind:
        bind_to(own.bind)
    import kserve
    from kserve.errors import InvalidInput as KServeInvalidInput

    class SplitServerModel(kserve.Model):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.part: SplitServerPart | None = None

        def load(self) -> bool:
            self.part = SplitServerPart(own.onnx, own.intra_op_threads)
            self.ready = True
            return self.ready

        def get_input_types(self) -> list[dict]:
            return self.part.specs()[0]

        def get_output_types(self) -> list[dict]:
            return self.part.specs()[1]

        async def predict(self, payload, headers=None, response_headers=None):
            started = time.perf_counter()
            try:
                inputs = {tensor.name: tensor for tensor in payload.inputs}
                for name, tensor in inputs.items():
                    if name in INPUTS and tensor.datatype != INPUTS[name]:
                        raise InvalidInput(
                            f"input '{name}' has datatype {tensor.datatype}, the model expects {INPUTS[name]}"
                        )
                try:
                    arrays = {name: tensor.as_numpy() for name, tensor in inputs.items()}
                except ValueError as error:  # data that does not fill the shape
                    raise InvalidInput(f"input data does not match its shape: {error}") from None
                checked = self.part.check(arrays)
            except InvalidInput as error:
                raise KServeInvalidInput(str(error)) from None
            logits = self.part.run(checked)
            output = kserve.InferOutput(OUTPUT, list(logits.shape), "FP32")
            output.set_data_from_numpy(logits, binary_data=payload.use_binary_outputs)
            # KServe's gRPC parameters are bool, int64 or string (its to_grpc refuses a float)
            parameters = {"batch_size": len(logits), "compute_ms": f"{1000 * (time.perf_counter() - started):.3f}"}
            return kserve.InferResponse(
                payload.id or str(uuid.uuid4()),  # KServe's JSON responses need an id (None: a 500)
                self.name,
                [output],
                parameters=parameters,
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            )

    model = SplitServerModel(own.model_name)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
