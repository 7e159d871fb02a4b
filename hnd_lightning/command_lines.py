"""Command lines as the manual writes them, checked against `conf/` the way Hydra reads them.

The README, the manual (`docs/**/*.md`) and each command's `--help` (`conf/hydra/help/*.yaml`) show
`python -m hnd_lightning.<command> ...` lines. `documented_command_lines(text)` finds them, and
`CommandLineChecker.check(line)` composes each with the command's root config, nothing run: an option
or a group option that no longer exists fails as it would on the command line. The conventions a page
follows:

- a command line is a line of a fenced code block, or an inline code span, holding
  `-m hnd_lightning.<command>` (after `python`, `srun python`, `torchrun ...`); lines ending in a
  backslash continue on the next; the line ends at a shell operator (`&&`, `|`, `;`, `>`) or a comment;
- placeholders stand for values the reader fills in: `<anything in angle brackets>`, capital words
  (`PATH`, `DIR`, `RUN/artifacts`, `N`) and shell variables (`$RUN`) are values like any other, and a
  lone `...` stands for "more settings" and is left out;
- a line whose comment starts with `# fails` shows a mistake on purpose: it must fail to compose.

Composition follows Hydra's own order: overrides of config groups (`model=resnet152`,
`hydra/launcher=slurm`, `method@methods.kd=hnd`) choose the configs, composed once per set of choices
and cached; every other override is then applied by Hydra's own function
(`ConfigLoaderImpl._apply_overrides_to_config`), so a key that does not exist is refused exactly as the
command refuses it. A sweep (`-m`, `a=1,2`) checks every value of every swept setting; without `-m`
a sweep is refused, as Hydra refuses it.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR.parent / "conf"
COMMAND_PATTERN = re.compile(r"-m\s+hnd_lightning\.(\w+)(?![\w.:])")
PLACEHOLDER = re.compile(r"<[^<>\n]*>")
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "2>", "2>&1", "&"}
# Hydra's flags that take no value / one value; they never change what composes
HYDRA_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--resolve", "--shell-completion", "-sc"}
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-path", "-cp"}
MULTIRUN_FLAGS = {"-m", "--multirun"}
FAILS_MARKER = re.compile(r"#\s*fails\b")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")


def hydra_commands(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Every `python -m hnd_lightning.<command>` with a Hydra main: command -> its root config's name.

    Read from the sources (`@hydra.main(... config_name="train")`), so nothing is imported.
    """
    found = {}
    for path in sorted(package_dir.glob("*.py")):
        source = path.read_text()
        match = re.search(r"^@hydra\.main\([^)]*config_name=\"(\w+)\"", source, re.MULTILINE)
        if match and re.search(r"^def main\(", source, re.MULTILINE):
            found[path.stem] = match.group(1)
    return found


def command_modules(package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Every module at the package's top level with a `main` (Hydra or argparse commands)."""
    return {path.stem for path in package_dir.glob("*.py") if re.search(r"^def main\(", path.read_text(), re.MULTILINE)}


@dataclass(frozen=True)
class CommandLine:
    """One documented command line: where it is, the command, its arguments, and whether it must fail."""

    source: str
    line: int
    command: str
    arguments: tuple[str, ...]
    text: str
    expect_failure: bool = False

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.text}"


def _fenced_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, inside a fenced code block) of `text`, backslash continuations joined."""
    fence = ""  # the open fence's marker: a code block ends at the same marker, alone on its line
    pending, pending_start = "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        marker = FENCE.match(line)
        if marker and (not fence or (marker.group(1).startswith(fence) and not marker.group(2).strip())):
            fence, pending = ("" if fence else marker.group(1)), ""
            continue
        inside = bool(fence)
        if pending:
            line = pending + " " + line.strip()
            number = pending_start
        # only a command line continues (a backslash ends lines of ASCII art too)
        if line.rstrip().endswith("\\") and COMMAND_PATTERN.search(line):
            pending, pending_start = line.rstrip()[:-1], number
            continue
        pending = ""
        yield number, line, inside


def _split_at_command(source: str, number: int, fragment: str) -> CommandLine | None:
    match = COMMAND_PATTERN.search(fragment)
    if match is None:
        return None
    rest = fragment[match.end() :]
    expect_failure = bool(FAILS_MARKER.search(rest))
    rest = PLACEHOLDER.sub("X", rest)
    lexer = shlex.shlex(rest, posix=True, punctuation_chars=";&|>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    arguments = []
    for token in lexer:
        if token in SHELL_OPERATORS or set(token) <= set(";&|>"):
            break
        if token != "...":
            arguments.append(token)
    return CommandLine(source, number, match.group(1), tuple(arguments), fragment.strip(), expect_failure)


def documented_command_lines(text: str, source: str = "<text>") -> list[CommandLine]:
    """Every `-m hnd_lightning.<command> ...` line in Markdown or YAML `text`, from `source` (see the module
    docstring for the conventions)."""
    found = []
    for number, line, inside in _fenced_lines(text):
        # a code block's line counts whole; in prose only inline code spans do (a line without any, such as
        # an indented code block or YAML help text, counts whole)
        spans = [] if inside else re.findall(r"`([^`]+)`", line)
        for fragment in spans or [line]:
            command_line = _split_at_command(source, number, fragment)
            if command_line is not None:
                found.append(command_line)
    return found


class CommandLineChecker:
    """Composes documented command lines with the real configs (see the module docstring).

    Use as a context manager: it initializes Hydra on `config_dir` once for every line it checks.
    `argparse_commands` maps a command without a Hydra main to its `argparse.ArgumentParser`.
    """

    def __init__(self, config_dir: Path = CONFIG_DIR, argparse_commands: dict[str, Any] | None = None) -> None:
        self.config_dir = Path(config_dir)
        self.commands = hydra_commands(self.config_dir.parent / "hnd_lightning")
        self.argparse_commands = argparse_commands or {}
        self._composed: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._context: Any = None
        self._parser: Any = None

    def __enter__(self) -> CommandLineChecker:
        from hydra import initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        self._context = initialize_config_dir(config_dir=str(self.config_dir), version_base="1.3")
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def check(self, command_line: CommandLine) -> Any:
        """Compose `command_line` (every combination a sweep needs); return the last config composed.

        Raises what Hydra raises for it (an unknown key or group option, a sweep without -m), or
        `ValueError` for an argument no command takes.
        """
        command, arguments = command_line.command, list(command_line.arguments)
        if command in self.argparse_commands:
            self.argparse_commands[command].parse_args(arguments)
            return None
        if command not in self.commands:
            raise ValueError(f"hnd_lightning.{command} is not a command; the commands are {sorted(self.commands)}")
        overrides, multirun = [], False
        flags = iter(arguments)
        for argument in flags:
            if argument in MULTIRUN_FLAGS:
                multirun = True
            elif argument in HYDRA_FLAGS_WITH_VALUE:
                next(flags, None)
            elif argument.startswith("-"):
                if argument not in HYDRA_FLAGS:
                    raise ValueError(f"{argument!r} is not a flag of a Hydra command ({command_line})")
            elif "=" not in argument and not argument.startswith("~"):  # `~key` deletes a key (Hydra)
                raise ValueError(
                    f"{argument!r} is not an override (key=value, group=option) of hnd_lightning.{command}"
                )
            else:
                overrides.append(argument)
        composed = None
        for combination in self._combinations(overrides, multirun):
            composed = self._compose(self.commands[command], combination)
        return composed

    def _parse(self, overrides: list[str]) -> list[Any]:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        if self._parser is None:
            self._parser = OverridesParser.create()
        return self._parser.parse_overrides(overrides)

    def _combinations(self, overrides: list[str], multirun: bool) -> list[list[str]]:
        """The override lists to compose: the line itself, or for a sweep every value of each swept key."""
        parsed = self._parse(overrides)
        swept = [i for i, override in enumerate(parsed) if override.is_sweep_override()]
        if swept and not multirun:
            line = parsed[swept[0]].input_line
            raise ValueError(f"Ambiguous value for argument '{line}': a sweep needs --multirun (-m)")
        if not swept:
            return [overrides]
        values = {i: list(parsed[i].sweep_string_iterator()) for i in swept}
        first = [
            f"{parsed[i].get_key_element()}={values[i][0]}" if i in values else text for i, text in enumerate(overrides)
        ]
        combinations = [first]
        for i in swept:
            for value in values[i][1:]:
                other = list(first)
                other[i] = f"{parsed[i].get_key_element()}={value}"
                combinations.append(other)
        return combinations

    def _compose(self, config_name: str, overrides: list[str]) -> Any:
        from hydra import compose
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.global_hydra import GlobalHydra

        repository = GlobalHydra.instance().config_loader().repository
        parsed = self._parse(overrides)
        groups = tuple(
            override.input_line
            for override in parsed
            if repository.group_exists(override.key_or_group) and not isinstance(override.value(), dict)
        )
        key = (config_name, tuple(sorted(groups)))
        if key not in self._composed:
            self._composed[key] = compose(config_name=config_name, overrides=list(groups), return_hydra_config=True)
        config = copy.deepcopy(self._composed[key])
        values = [override for override in parsed if override.input_line not in groups]
        ConfigLoaderImpl._apply_overrides_to_config(values, config)
        return config
