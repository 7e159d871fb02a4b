"""The package's layers, checked on its source: commands stand on the core, never on each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hnd_lightning"
# `python -m hnd_lightning.<command>`: the modules at the package's top level with a Hydra main.
COMMANDS = {"train", "evaluate", "deploy", "analyze", "bench", "summarize", "serve", "client", "loadtest", "convert"}
MAX_LINES = 320  # "about 300": a module past it mixes jobs and wants splitting


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every `hnd_lightning` module `path` imports, at the top or lazily inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("hnd_lightning")}


def sources() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_every_command_exists_and_has_a_main():
    for command in COMMANDS:
        assert "def main(" in (PACKAGE / f"{command}.py").read_text(), command


def test_no_module_imports_a_command():
    commands = {f"hnd_lightning.{command}" for command in COMMANDS}
    offenders = {
        name: sorted(imported_modules(path) & commands)
        for name, path in sources().items()
        if imported_modules(path) & commands
    }
    assert not offenders, f"commands are imported by {offenders}; move the shared piece into the core"


def test_core_imports_have_no_cycles():
    modules = sources()
    graph = {
        name: {dep for dep in imported_modules(path) if dep in modules and dep != name}
        for name, path in modules.items()
    }
    # A package's __init__ re-exporting its own modules is not a cycle of concepts.
    graph = {name: {dep for dep in deps if not name.startswith(dep + ".")} for name, deps in graph.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle.extend(stack[stack.index(dep) :] + [dep] if dep in stack else [node, dep])
                return True
            if dep not in state and visit(dep, [*stack, dep]):
                return True
        state[node] = 2
        return False

    for name in graph:
        if name not in state and visit(name, [name]):
            break
    assert not cycle, " -> ".join(cycle)


def test_modules_stay_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in sources().items()}
    assert not {name: size for name, size in sizes.items() if size > MAX_LINES}


def test_runtime_sides_import_only_toward_common():
    """The edge server never imports device code and the device never imports server code; both
    stand on `runtime.common`, which imports neither (Triton's server / client split)."""
    forbidden = {
        "hnd_lightning.runtime.server": ("hnd_lightning.runtime.device", "hnd_lightning.runtime.loopback"),
        "hnd_lightning.runtime.device": ("hnd_lightning.runtime.server", "hnd_lightning.runtime.loopback"),
        "hnd_lightning.runtime.common": (
            "hnd_lightning.runtime.server",
            "hnd_lightning.runtime.device",
            "hnd_lightning.runtime.export",
            "hnd_lightning.runtime.loopback",
        ),
    }
    offenders = {}
    for name, path in sources().items():
        for side, banned in forbidden.items():
            if name == side or name.startswith(side + "."):
                bad = sorted(dep for dep in imported_modules(path) if dep.startswith(banned))
                if bad:
                    offenders[name] = bad
    assert not offenders, f"runtime sides import across: {offenders}"
    assert {"common", "server", "device", "export"} <= {p.name for p in (PACKAGE / "runtime").iterdir() if p.is_dir()}
