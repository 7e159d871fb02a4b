"""The manual builds strictly (a warning, a broken link or a missing page fails), with every command's
option reference generated from conf/, and the field references match the files a run writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import compose_train_config, tiny_overrides

from hnd_lightning.command_lines import hydra_commands

ROOT = Path(__file__).resolve().parents[1]


def test_the_manual_builds_strictly_with_the_generated_reference(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    train = (site / "reference" / "commands" / "train" / "index.html").read_text()
    for setting in ("model.bottleneck_channels", "method.optimizer.lr", "trainer.max_epochs", "experiment=quickstart"):
        assert setting in train, setting
    for command in [*hydra_commands(), "summarize"]:
        assert (site / "reference" / "commands" / command / "index.html").is_file(), command
    assert "load_split_artifacts" in (site / "reference" / "api" / "models" / "index.html").read_text()
    assert "Keep a Changelog" in (site / "changelog" / "index.html").read_text()
    for figure in ("quickstart.png", "compare.png", "bottlenecks.png"):
        assert (site / "figures" / figure).is_file()


def documented_fields(page: str) -> tuple[set[str], set[str]]:
    """The field names in the first column of a reference page's tables (`a`, `b.c`, `d`, `e` -> each),
    and those among them whose description starts with "optional" (a run need not write them)."""
    fields, optional = set(), set()
    for line in (ROOT / "docs" / "reference" / page).read_text().splitlines():
        match = re.match(r"^\| (`[^|]+`) \| *(\S*)", line)
        if match:
            names = set(re.findall(r"`([^`]+)`", match.group(1)))
            fields |= names
            if match.group(2).lower().startswith("optional"):
                optional |= names
    return fields, optional


def check_documented(written: set[str], page: str) -> None:
    """Every written field is documented (a documented object such as `teacher` covers its own keys), and
    every documented field but the optional ones is written."""
    documented, optional = documented_fields(page)
    covered = {next((field for field in documented if key.startswith(field + ".")), key) for key in written}
    assert covered <= documented and documented - optional <= covered, (
        f"{page}: undocumented: {covered - documented}; not written: {documented - optional - covered}"
    )


def leaf_keys(record: dict, prefix: str = "") -> set[str]:
    """Dotted keys of every non-object value of a JSON record."""
    keys = set()
    for key, value in record.items():
        keys |= leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def test_results_json_and_split_json_hold_the_documented_fields(image_folder, tmp_path):
    from hnd_lightning.runs.training import train

    overrides = tiny_overrides("densenet169", "hnd", image_folder, ["test_quantized=true"])
    train(compose_train_config(overrides, tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok"
    model = next(iter(results["models"].values()))
    check_documented(set(results) | set(model) | set(results["payload"]), "results-json.md")

    split = json.loads((tmp_path / "artifacts" / "split.json").read_text())
    check_documented(leaf_keys(split), "split-json.md")
