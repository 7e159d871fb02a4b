"""The option reference of every command, written from `conf/` so it cannot drift from it.

`command_reference(command, config_name)` composes the command's root config with Hydra (nothing
run) and returns a Markdown page: its config groups with their options, every setting with its
default and the comment above it in the YAML file that sets it, and for each option that is not the
default, exactly which settings it changes (composed, then compared with the default). The manual's
build (`docs/hooks/reference.py`, an MkDocs hook) writes one page per command from it on every build.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from hnd_lightning.command_lines import CONFIG_DIR

PACKAGE_HEADER = re.compile(r"^#\s*@package\s+(\S+)")
KEY_LINE = re.compile(r"^(\s*)([\w.\-@/]+):(.*)$")
MISSING = "???"
# what Hydra's own keys mean, wherever they appear
HYDRA_KEYS = {
    "_target_": "the class or function built from this block (`hydra.utils.instantiate`)",
    "_partial_": "built as a partial: the code passes the remaining arguments (e.g. the parameters to train)",
}


@functools.cache
def yaml_comments(path: Path) -> tuple[str, dict[str, str]]:
    """The leading comment of a YAML config (its description) and {dotted key: the comment above it}.

    A line-based reading of the block mappings these configs use; `defaults:` lists are skipped.
    """
    header: list[str] = []
    comments: dict[str, str] = {}
    pending: list[str] = []
    stack: list[tuple[int, str]] = []
    in_header = True
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#")[1:] if stripped.startswith("# ") else stripped.lstrip("#")
            if PACKAGE_HEADER.match(stripped):
                continue
            (header if in_header else pending).append(text)
            continue
        if not stripped:
            in_header = False
            pending = []
            continue
        in_header = False
        match = KEY_LINE.match(line)
        if match is None or stripped.startswith("-"):
            pending = []
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        dotted = ".".join(name for _, name in stack)
        if pending and not dotted.startswith("defaults"):
            comments[dotted] = " ".join(part.strip() for part in pending)
        pending = []
    return "\n".join(header).strip(), comments


@functools.cache
def option_chain(group: str, option: str, config_dir: Path = CONFIG_DIR) -> list[Path]:
    """`conf/<group>/<option>.yaml` after the options of the same group it extends (its `defaults`)."""
    path = config_dir / group / f"{option}.yaml"
    if not path.is_file():
        return []
    loaded = OmegaConf.load(path)
    chain: list[Path] = []
    for entry in (loaded.get("defaults") or []) if isinstance(loaded, DictConfig) else []:
        if isinstance(entry, str) and entry != "_self_" and (config_dir / group / f"{entry}.yaml").is_file():
            chain += option_chain(group, entry, config_dir)
    return [*chain, path]


def package_of(path: Path, group: str) -> str:
    """Where a group option's keys land: its `# @package` header (`_global_`: the root), else the group."""
    for line in path.read_text().splitlines():
        match = PACKAGE_HEADER.match(line.strip())
        if match:
            package = match.group(1)
            return "" if package == "_global_" else package
    return group.replace("/", ".")


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(path.stem for path in (config_dir / group).glob("*.yaml"))


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, unresolved value) of every leaf; lists and empty mappings are leaves."""
    if isinstance(node, DictConfig) and len(node):
        for key in node:
            yield from flatten(node._get_node(key), f"{prefix}.{key}" if prefix else str(key))
    else:
        value = node._value() if not isinstance(node, (DictConfig, ListConfig)) else None
        if isinstance(node, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(node, resolve=False)
        yield prefix, value


def show(value: Any) -> str:
    """A value as one would type it on the command line."""
    if value == MISSING:
        return "required (`???`)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, separators=(",", ": ")).replace('"', "")
        return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"
    return f"`{value}`".replace("|", "\\|")


def _commented(config: DictConfig, sources: list[tuple[Path, str]]) -> list[tuple[str, Any, str]]:
    """(key, value, comment) of every setting of `config`; comments from `sources` (file, package)."""
    comments: dict[str, str] = {}
    for path, package in sources:
        for key, comment in yaml_comments(path)[1].items():
            comments[f"{package}.{key}" if package else key] = comment
    rows, explained = [], set()
    leaves = list(flatten(config))
    # a block's comment stands in for its settings' only where none of them has its own
    explained |= {
        parent for parent in comments for key, _ in leaves if key.startswith(parent + ".") and key in comments
    }
    for key, value in leaves:
        comment = comments.get(key, "")
        if not comment:
            parents = [key.rsplit(".", depth)[0] for depth in range(1, key.count(".") + 1)]
            parent = next((p for p in parents if p in comments and p not in explained), None)
            if parent is not None:
                explained.add(parent)
                comment = f"(`{parent}`) {comments[parent]}"
        rows.append((key, value, prose(comment or HYDRA_KEYS.get(key.rsplit(".", 1)[-1], ""))))
    return rows


def prose(text: str) -> str:
    """Comment text as Markdown: `<date>`-style placeholders outside code spans shown, not read as HTML."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return "`".join(parts)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _description(text: str) -> str:
    """A config's leading comment as Markdown: its prose, and its indented lines (examples) as code."""
    words, code = [], []
    for line in text.splitlines():
        (code if line.startswith("  ") else words).append(line.strip() if not line.startswith("  ") else line[2:])
    block = "\n\n```bash\n" + "\n".join(code) + "\n```" if code else ""
    return prose(" ".join(words)) + block


class ReferenceComposer:
    """Composes a command's root config with group choices (see `command_reference`)."""

    def __init__(self, config_dir: Path = CONFIG_DIR) -> None:
        self.config_dir = Path(config_dir)

    def compose(self, config_name: str, overrides: list[str]) -> tuple[DictConfig, DictConfig]:
        """The command's config with `overrides`, and its `hydra` node apart."""
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(self.config_dir), version_base="1.3"):
            config = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        with open_dict(config):
            hydra_node = config.pop("hydra")
        return config, hydra_node

    def sources(self, config_name: str, choices: dict[str, Any]) -> list[tuple[Path, str]]:
        found = [(self.config_dir / f"{config_name}.yaml", "")]
        for group, option in choices.items():
            if option is None or group.startswith("hydra") or "@" in group:
                continue
            found += [(path, package_of(path, group)) for path in option_chain(group, option, self.config_dir)]
        return found


def help_summary(config_name: str, config_dir: Path = CONFIG_DIR) -> str:
    """What the command does, in its own `--help`'s words (`conf/hydra/help/<config_name>.yaml`'s header)."""
    path = Path(config_dir) / "hydra" / "help" / f"{config_name}.yaml"
    if not path.is_file():
        return ""
    header = str(OmegaConf.load(path).get("header", ""))
    summary = " ".join(header.split(": ", 1)[-1].split())
    return prose(summary[:1].upper() + summary[1:])


def command_reference(command: str, config_name: str, config_dir: Path = CONFIG_DIR) -> str:
    """The Markdown reference page of `python -m hnd_lightning.<command>` (see the module docstring)."""
    composer = ReferenceComposer(config_dir)
    composed, hydra_node = composer.compose(config_name, [])
    # in the order of the root config's defaults list (Hydra records them last to first)
    choices = {key: value for key, value in reversed(hydra_node.runtime.choices.items()) if not key.startswith("hydra")}
    description = _description(yaml_comments(Path(config_dir) / f"{config_name}.yaml")[0])
    page = [
        f"# `{command}`",
        "",
        help_summary(config_name, config_dir),
        "",
        "*Generated from `conf/` when the manual is built: every setting below is one the command reads.*",
        "",
        description,
        "",
        f"`python -m hnd_lightning.{command} --help` prints the settings used most and examples; "
        f"`python -m hnd_lightning.{command} --cfg job` prints the whole composed config.",
        "",
    ]
    if choices:
        page += ["## Config groups", "", "Pick one option per group with `GROUP=OPTION` on the command line.", ""]
        rows = []
        for group, default in choices.items():
            name = group.split("@")[0]
            options = ", ".join(f"`{o}`" for o in group_options(name, Path(config_dir)))
            rows.append((f"`{group}`", f"`{default}`" if default else "none", options))
        page += [_table(rows, ("group", "default", "options")), ""]
    page += [
        "## Settings and their defaults",
        "",
        "Override any of them with `KEY=VALUE`; values shown as `${...}` follow another setting.",
        "",
    ]
    settings = _commented(composed, composer.sources(config_name, choices))
    page += [_table([(f"`{k}`", show(v), c) for k, v, c in settings], ("setting", "default", "what it is")), ""]
    page += _option_sections(composer, config_name, composed, choices)
    if hydra_node.runtime.choices.get("hydra") == "default":
        page += _hydra_section(Path(config_dir), with_launcher=command == "train")
    return "\n".join(page).rstrip() + "\n"


def _option_sections(
    composer: ReferenceComposer, config_name: str, composed: DictConfig, choices: dict[str, Any]
) -> list[str]:
    default_values = dict(flatten(composed))
    page = ["## What each option changes", ""]
    for group, default in choices.items():
        if "@" in group:
            continue
        page += [f"### `{group}`", ""]
        for option in group_options(group, composer.config_dir):
            path = composer.config_dir / group / f"{option}.yaml"
            header = _description(yaml_comments(path)[0]) or "(no description)"
            if option == default:
                page += [f"- `{group}={option}` (the default): {header}", ""]
                continue
            chosen, _ = composer.compose(config_name, [f"{group}={option}"])
            sources = composer.sources(config_name, {**choices, group: option})
            changed = [
                (f"`{key}`", show(value), show(default_values[key]) if key in default_values else "(new)", comment)
                for key, value, comment in _commented(chosen, sources)
                if key not in default_values or default_values[key] != value
            ]
            page += [f"#### `{group}={option}`", "", header, ""]
            if changed:
                page += [_table(changed, ("setting", "value", "default", "what it is")), ""]
    return page


def _hydra_section(config_dir: Path, with_launcher: bool) -> list[str]:
    path = config_dir / "hydra" / "default.yaml"
    comments = yaml_comments(path)[1]
    rows = []
    for key, value in flatten(OmegaConf.load(path)):
        rows.append((f"`hydra.{key}`", show(value), prose(comments.get(key, ""))))
    page = ["## Hydra settings of this project", "", "From `conf/hydra/default.yaml`:", ""]
    page += [_table(rows, ("setting", "default", "what it is")), ""]
    launcher = config_dir / "hydra" / "launcher" / "slurm.yaml"
    if with_launcher and launcher.is_file():
        header, launcher_comments = yaml_comments(launcher)
        launcher_rows = [
            (f"`hydra.launcher.{key}`", show(value), prose(launcher_comments.get(key, "")))
            for key, value in flatten(OmegaConf.load(launcher))
            if not key.startswith("defaults")
        ]
        page += ["### `hydra/launcher=slurm`", "", _description(header), ""]
        page += [_table(launcher_rows, ("setting", "default", "what it is")), ""]
    return page
