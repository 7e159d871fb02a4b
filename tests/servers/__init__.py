"""Foreign Open Inference Protocol servers for the interop tests: Triton (inside nvidia-pytriton), a KServe
ModelServer and MLServer, each run as users run it: its own process, from its own venv.

venvs.py      one venv per server, built once into a cache keyed by the pins, reused after
processes.py  free ports, a bounded start, stop by PID (SIGTERM, then SIGKILL)
hosts.py      how each server starts on what `deploy` wrote, on 127.0.0.1 only
"""
