"""Docs that cannot drift: every command line the README, the manual and the configs show composes.

Each `python -m hnd_lightning.<command> ...` line of README.md, docs/**/*.md and conf/**/*.yaml (the
commands' `--help` text included) is composed with the command's root config as Hydra would compose it,
nothing run (`hnd_lightning.command_lines`; its docstring and docs/contributing.md give the conventions).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hnd_lightning import summarize
from hnd_lightning.command_lines import CommandLine, CommandLineChecker, documented_command_lines

ROOT = Path(__file__).resolve().parents[1]


def documented_sources() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "conf").rglob("*.yaml"))]


def all_command_lines() -> list[CommandLine]:
    found = []
    for path in documented_sources():
        found += documented_command_lines(path.read_text(), str(path.relative_to(ROOT)))
    return found


@pytest.fixture(scope="module")
def checker():
    with CommandLineChecker(argparse_commands={"summarize": summarize.build_parser()}) as checker:
        yield checker


def test_every_documented_command_line_composes(checker):
    lines = all_command_lines()
    assert len(lines) > 100, "the extractor lost the command lines"
    problems, checked = [], 0
    for line in lines:
        try:
            checker.check(line)
        except (Exception, SystemExit) as error:
            if not line.expect_failure:
                problems.append(f"{line}\n    -> {type(error).__name__}: {str(error).splitlines()[0]}")
        else:
            if line.expect_failure:
                problems.append(f"{line}\n    -> composed, but its comment says it fails")
        checked += 1
    assert not problems, f"{len(problems)} of {checked} documented command lines fail:\n" + "\n".join(problems)


def test_an_option_that_does_not_exist_fails(checker):
    """The check is the command's own: a removed setting, a group option or a bare word fail."""
    for text in [
        "python -m hnd_lightning.train data.rot=/data",
        "python -m hnd_lightning.train model=vgg16",
        "python -m hnd_lightning.train experiment=quikstart",
        "python -m hnd_lightning.train model.bottleneck_channels=3,6",  # a sweep without -m
        "python -m hnd_lightning.serve artifacts=RUN/artifacts batching.max_batch=4",
        "python -m hnd_lightning.train -m hydra/launcher=slurm hydra.launcher.partitions=gpu",
        "python -m hnd_lightning.trian method=hnd",
        "python -m hnd_lightning.summarize",
        "python -m hnd_lightning.train method hnd",
    ]:
        (line,) = documented_command_lines(f"`{text}`")
        with pytest.raises((Exception, SystemExit)):
            checker.check(line)


def test_placeholders_sweeps_and_flags_compose_as_the_command_reads_them(checker):
    text = """
```bash
RUN=outputs/runs/<date>/<time>
python -m hnd_lightning.train -m model=densenet169,resnet152 'model.bottleneck_channels=[3,6]' method=fused_hnd \\
    data.root=PATH hydra.sweep.dir=outputs/multiruns/NAME ...   # a comment
python -m hnd_lightning.evaluate artifacts=$RUN/artifacts trainer.devices=N --cfg job && echo done
python -m hnd_lightning.train experiment=quikstart   # fails: a typo
```
"""
    lines = documented_command_lines(text)
    assert [line.command for line in lines] == ["train", "evaluate", "train"]
    sweep, evaluate, typo = lines
    assert sweep.arguments[-1] == "hydra.sweep.dir=outputs/multiruns/NAME" and "..." not in sweep.arguments
    assert checker.check(sweep).model.architecture == "resnet152"  # every swept value composes; the last wins
    composed = checker.check(evaluate)
    assert composed.artifacts == "$RUN/artifacts" and composed.trainer.devices == "N"
    assert typo.expect_failure and not sweep.expect_failure


def test_code_blocks_end_only_at_their_own_fence():
    """ASCII art inside a block (a line of tildes, a trailing backslash) neither ends it nor swallows the next."""
    text = """
```text
 image -> encoder   \\
 ~~~~~~~~|~~~~ link ~~~~
```
Run `python -m hnd_lightning.deploy artifacts=RUN/artifacts quantized=false` then
    python -m hnd_lightning.evaluate artifacts=RUN/artifacts
"""
    lines = documented_command_lines(text)
    assert [(line.command, line.arguments) for line in lines] == [
        ("deploy", ("artifacts=RUN/artifacts", "quantized=false")),
        ("evaluate", ("artifacts=RUN/artifacts",)),
    ]


def test_the_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"    {ci_command}\n" in readme
    assert 'pip install -e ".[dev]" && python -m hnd_lightning.train experiment=quickstart' in readme
