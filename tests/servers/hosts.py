"""How each foreign server starts on what `deploy` wrote, bound to 127.0.0.1 on free ports.

    triton_process(venv, deploy_dir, work_dir)     tritonserver from nvidia-pytriton, Python backend
    kserve_process(venv, deploy_dir, work_dir)     deploy's kserve/kserve_server.py
    mlserver_process(venv, deploy_dir, work_dir)   `mlserver start` on deploy's mlserver/

Each returns a `ServerProcess` (not started) with `http_port`, `grpc_port` (and `metrics_port`) set.
These are the commands docs/howto/serving.md gives, with test ports.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from servers.processes import HOST, ServerProcess, free_ports
from servers.venvs import ServerVenv


def _with_ports(process: ServerProcess, http: int, grpc: int, metrics: int | None = None) -> ServerProcess:
    process.http_port, process.grpc_port, process.metrics_port = http, grpc, metrics
    return process


def python_build(venv: ServerVenv) -> tuple[str, str]:
    """The venv interpreter's `major.minor` (which Python stub) and LIBDIR (its libpython, which Triton
    does not bundle)."""
    code = "import sys, sysconfig; print(f'{sys.version_info[0]}.{sys.version_info[1]}', sysconfig.get_config_var('LIBDIR'))"
    output = subprocess.run([str(venv.python), "-c", code], capture_output=True, text=True, check=True).stdout
    version, libdir = output.split()
    return version, libdir


def triton_process(
    venv: ServerVenv, deploy_dir: Path, work_dir: Path, extra_args: tuple[str, ...] = ()
) -> ServerProcess:
    """Triton 2.51 serving deploy's `triton_python_repository/` with the venv's packages in its stubs."""
    server = venv.site / "pytriton" / "tritonserver"
    backend = work_dir / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    # the stub must sit in the backend folder (pytriton copies it there too); one per Python minor
    for source in [*(server / "backends" / "python").glob("*.so"), *(server / "backends" / "python").glob("*.py")]:
        shutil.copy2(source, backend / source.name)
    version, libdir = python_build(venv)
    shutil.copy2(server / "python_backend_stubs" / version / "triton_python_backend_stub", backend)
    http, grpc, metrics = free_ports(3)
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{venv.site / 'nvidia_pytriton.libs'}:{libdir}",
        # the stub takes sys.prefix from the first python3 on PATH: the venv's, with numpy 1 and onnxruntime
        "PATH": f"{venv.path / 'bin'}:{os.environ.get('PATH', '')}",
    }
    env.pop("PYTHONPATH", None)
    command = [
        str(server / "bin" / "tritonserver"),
        f"--model-repository={deploy_dir / 'triton_python_repository'}",
        f"--backend-directory={work_dir / 'backends'}",
        f"--http-address={HOST}",
        f"--http-port={http}",
        f"--grpc-address={HOST}",
        f"--grpc-port={grpc}",
        f"--metrics-address={HOST}",
        f"--metrics-port={metrics}",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=5",
        *extra_args,
    ]
    ready = f"http://{HOST}:{http}/v2/health/ready"
    return _with_ports(
        ServerProcess("triton", command, env, work_dir / "triton.log", ready, [grpc]), http, grpc, metrics
    )


def kserve_process(venv: ServerVenv, deploy_dir: Path, work_dir: Path) -> ServerProcess:
    """deploy's KServe ModelServer, forced onto 127.0.0.1 (KServe binds 0.0.0.0 / [::] itself)."""
    http, grpc = free_ports(2)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [
        str(venv.python),
        str(deploy_dir / "kserve" / "kserve_server.py"),
        f"--bind={HOST}",
        f"--http_port={http}",
        f"--grpc_port={grpc}",
        "--workers=1",
    ]
    ready = f"http://{HOST}:{http}/v2/health/ready"
    return _with_ports(ServerProcess("kserve", command, env, work_dir / "kserve.log", ready, [grpc]), http, grpc)


def mlserver_process(venv: ServerVenv, deploy_dir: Path, work_dir: Path) -> ServerProcess:
    """`mlserver start` on deploy's `mlserver/`, its ports moved to free ones through MLServer's own
    MLSERVER_* settings variables."""
    http, grpc, metrics = free_ports(3)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        MLSERVER_HOST=HOST,
        MLSERVER_HTTP_PORT=str(http),
        MLSERVER_GRPC_PORT=str(grpc),
        MLSERVER_METRICS_PORT=str(metrics),
    )
    command = [str(venv.path / "bin" / "mlserver"), "start", str(deploy_dir / "mlserver")]
    ready = f"http://{HOST}:{http}/v2/health/ready"
    process = ServerProcess("mlserver", command, env, work_dir / "mlserver.log", ready, [grpc, metrics])
    return _with_ports(process, http, grpc, metrics)
