"""`--help` that helps and typos that say so.

Each command's `--help` (`conf/hydra/help/<command>.yaml`) lists its config groups with their options, the
settings used most and examples: every group, option, default, setting and example listed must be the
command's own. A misspelt option of any group of any command fails, naming the options there are.
"""

from __future__ import annotations

import functools
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from hnd_lightning import summarize
from hnd_lightning.command_lines import CONFIG_DIR, CommandLineChecker, documented_command_lines, hydra_commands

COMMANDS = hydra_commands()
PLACEHOLDER = re.compile(r"^([A-Z][A-Z_/]*|<.*>|\.\.\.)$")
# Hydra's own groups: their typos are Hydra's business (they fail the same way), hydra/launcher aside
HYDRA_INTERNAL = {"hydra", "hydra/env", "hydra/callbacks", "hydra/job_logging", "hydra/hydra_logging"}
HYDRA_INTERNAL |= {"hydra/hydra_help", "hydra/help", "hydra/sweeper", "hydra/output"}


@functools.cache
def default_config(config_name: str):
    """The command's config as it composes without overrides (read only)."""
    return composed(config_name)


def composed(config_name: str, overrides: list[str] | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)


def help_sections(config_name: str) -> dict[str, list[str]]:
    """The `== title ==` sections of a command's help template: title -> its indented lines."""
    loaded = OmegaConf.load(CONFIG_DIR / "hydra" / "help" / f"{config_name}.yaml")
    template = OmegaConf.to_container(loaded, resolve=False)["template"]
    sections: dict[str, list[str]] = {}
    title = None
    for line in template.splitlines():
        match = re.match(r"^== (.+?)(:.*)? ==$", line)
        if match:
            title = match.group(1)
            sections[title] = []
        elif title and line.startswith("  ") and line.strip():
            sections[title].append(line.strip())
    return sections


def app_groups(config) -> dict[str, str | None]:
    choices = config.hydra.runtime.choices
    return {group: option for group, option in choices.items() if not group.startswith("hydra") and "@" not in group}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_commands_groups_with_their_options_and_defaults(command):
    config_name = COMMANDS[command]
    config = default_config(config_name)
    assert config.hydra.help.app_name == f"hnd_lightning.{command}"
    listed = {}
    for line in help_sections(config_name)["Config groups"]:
        group, options = line.split(maxsplit=1)
        names = [name.strip() for name in re.sub(r"\(.*\)", "", options).split(",")]
        listed[group] = names
    groups = app_groups(config)
    assert set(listed) == set(groups), "every group of the command, and only those, is listed"
    for group, names in listed.items():
        files = sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))
        assert sorted(name.rstrip("*") for name in names) == files, f"{group}: the options are {files}"
        marked = [name.rstrip("*") for name in names if name.endswith("*")]
        assert marked == ([groups[group]] if groups[group] else []), f"{group}: the default is {groups[group]}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_settings_exist_with_the_defaults_shown(command):
    config_name = COMMANDS[command]
    config = default_config(config_name)
    parser = OverridesParser.create()
    settings = help_sections(config_name)["Settings used most"]
    assert len(settings) >= 5
    values = OmegaConf.to_container(config, resolve=False)
    for line in settings:
        override, description = line.split(maxsplit=1)
        key, shown = override.split("=", 1)
        assert description, line
        default = values
        for part in key.split("."):
            assert isinstance(default, dict) and part in default, f"{key} is not a setting of {command}"
            default = default[part]
        if key.startswith("hydra.") or PLACEHOLDER.match(shown):
            continue
        assert parser.parse_override(override).value() == default, f"{key}: the default is {default!r}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_examples_compose_and_it_names_the_manual(command):
    config_name = COMMANDS[command]
    examples = help_sections(config_name)["Examples"]
    lines = [line for text in examples for line in documented_command_lines(text)]
    assert len(lines) == len(examples) >= 2 and {line.command for line in lines} == {command}
    with CommandLineChecker() as checker:
        for line in lines:
            checker.check(line)
    footer = default_config(config_name).hydra.help.footer
    assert f"Reference > Command options > {command}" in footer and "--cfg job" in footer


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_misspelt_option_of_any_group_fails_naming_the_options(command):
    config_name = COMMANDS[command]
    groups = [group for group in default_config(config_name).hydra.runtime.choices if group not in HYDRA_INTERNAL]
    assert groups or command in {"deploy", "serve", "client", "loadtest"}
    for group in groups:
        options = sorted(path.stem for path in (CONFIG_DIR / group.split("@")[0]).glob("*.yaml"))
        with pytest.raises(HydraException) as failure:
            composed(config_name, [f"{group}=nonexistent_option"])
        message = str(failure.value)
        assert f"Could not find '{group.split('@')[0]}/nonexistent_option'" in message, message
        assert all(option in message for option in options), f"{group}: {options} not all named in {message}"


def test_typos_of_experiment_and_debug_fail_instead_of_running_the_default_job():
    for typo in ("experiment=quikstart", "debug=fast_dev"):
        with pytest.raises(HydraException, match="Available options"):
            composed("train", [typo])
    assert composed("train", ["experiment=quickstart"]).pipeline.name == "quickstart"
    assert composed("train").get("pipeline") is None  # no experiment by default


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_as_the_command_prints_it(command, capsys):
    """What `python -m hnd_lightning.<command> --help` prints, rendered by Hydra's own app help in-process."""
    from hydra._internal.utils import get_args_parser

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        arguments = get_args_parser().parse_args(["--help"])
        GlobalHydra.instance().hydra.app_help(
            config_name=COMMANDS[command], args_parser=get_args_parser(), args=arguments
        )
    printed = capsys.readouterr().out
    assert printed.startswith(f"python -m hnd_lightning.{command}: ")
    for title in ("== Config groups", "== Settings used most", "== Examples ==", f"python -m hnd_lightning.{command} "):
        assert title in printed, printed
    assert "${" not in printed and "$APP_CONFIG_GROUPS" not in printed


def test_summarize_help_shows_examples_that_parse():
    text = summarize.build_parser().format_help()
    assert "examples:" in text and "Command options > summarize" in text
    lines = documented_command_lines(summarize.EXAMPLES)
    assert len(lines) == 2
    for line in lines:
        summarize.build_parser().parse_args(list(line.arguments))
