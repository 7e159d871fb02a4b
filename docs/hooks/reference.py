"""MkDocs hook: the option reference of every command, written from conf/ on every build.

For each `python -m hnd_lightning.<command>` with a Hydra main it adds the page
`reference/commands/<command>.md` (`hnd_lightning.config_reference.command_reference`), for the
argparse command `summarize` its `--help`, and `reference/commands/index.md` listing them; the nav
entry "Command options" becomes a section holding them all. The pages exist only in the built site,
so they cannot go stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# document this checkout, whatever copy of the package is installed
sys.path.insert(0, str(ROOT))

from mkdocs.structure.files import File  # noqa: E402

from hnd_lightning.command_lines import hydra_commands  # noqa: E402
from hnd_lightning.config_reference import command_reference, help_summary  # noqa: E402

FOLDER = "reference/commands"
NAV_TITLE = "Command options"
ARGPARSE_COMMANDS = {"summarize": "Write a sweep's summary (summary.csv, .md, .png) again."}


def _pages() -> dict[str, str]:
    import importlib

    pages = {command: command_reference(command, config) for command, config in hydra_commands().items()}
    for command, line in ARGPARSE_COMMANDS.items():
        module = importlib.import_module(f"hnd_lightning.{command}")
        usage = module.build_parser().format_help()
        pages[command] = f"# `{command}`\n\n{line}\n\n```text\n{usage}```\n"
    return dict(sorted(pages.items()))


def _index(pages: dict[str, str]) -> str:
    summaries = {command: help_summary(config) for command, config in hydra_commands().items()}
    summaries.update(ARGPARSE_COMMANDS)
    rows = [f"| [`{command}`]({command}.md) | {summaries.get(command, '')} |" for command in pages]
    return (
        "# Command options\n\n"
        "Every command's settings, generated from `conf/` when the manual is built (so they are the "
        "ones the commands read). Each command also prints the settings used most with `--help`.\n\n"
        "| command | what it does |\n|---|---|\n" + "\n".join(rows) + "\n"
    )


_PAGES: dict[str, str] = {}


def on_config(config, **kwargs):
    _PAGES.clear()
    _PAGES.update(_pages())
    section = [f"{FOLDER}/index.md"] + [{command: f"{FOLDER}/{command}.md"} for command in _PAGES]

    def replace(items):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                for title, value in item.items():
                    if title == NAV_TITLE:
                        items[index] = {title: section}
                    elif isinstance(value, list):
                        replace(value)

    replace(config["nav"])
    return config


def on_files(files, config, **kwargs):
    for command, text in _PAGES.items():
        files.append(File.generated(config, f"{FOLDER}/{command}.md", content=text))
    files.append(File.generated(config, f"{FOLDER}/index.md", content=_index(_PAGES)))
    return files
