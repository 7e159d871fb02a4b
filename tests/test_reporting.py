"""The shared table writer: markdown cells, alignment and escaping; CSV and JSON files written atomically."""

from __future__ import annotations

import csv
import json

import pytest

from hnd_lightning.reporting.tables import Column, count, markdown_table, percent, write_table_files

ROWS = [
    {"method": "hnd", "test_acc1": 0.649, "params": 12700, "seconds": 97.54, "reused": False, "shape": [12, 5, 5]},
    {"method": "kd|x", "test_acc1": None, "params": 14_840_000, "seconds": 3.0, "reused": True},
]
COLUMNS = [
    Column("method"),
    Column("test_acc1", "top-1 %", format=percent),
    Column("params", format=count),
    Column("seconds", "wall s", value=lambda row: f"{row['seconds']:.1f}" + (" (reused)" if row["reused"] else "")),
]


def test_markdown_table_formats_aligns_pads_and_escapes():
    lines = markdown_table(ROWS, COLUMNS).splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    assert cells[0] == ["method", "top-1 %", "params", "wall s"]
    # numbers right-aligned, text left; a column of formatted strings stays left
    assert cells[1] == ["------", "------:", "------:", "------------"]
    assert cells[2] == ["hnd", "64.90", "12.70 k", "97.5"]
    assert cells[3] == ["kd\\|x", "-", "14.84 M", "3.0 (reused)"]
    assert len({len(line) for line in lines}) == 1  # padded: every line as wide as the others


def test_explicit_alignment_and_format_spec():
    table = markdown_table(
        [{"a": 1234.5, "b": "x"}], [Column("a", format=",.1f", align="left"), Column("b", align="center")]
    )
    assert table.splitlines()[1] == "| ------- | :-: |"
    assert "| 1,234.5 |  x  |" in table
    with pytest.raises(ValueError, match="align='middle'"):
        Column("a", align="middle")


def test_write_table_files_writes_md_csv_json(tmp_path):
    paths = write_table_files(
        tmp_path / "out", "results", ROWS, COLUMNS, title="Results", intro="Two runs.", notes=["- note"]
    )
    assert paths == {fmt: tmp_path / "out" / f"results.{fmt}" for fmt in ("md", "csv", "json")}
    markdown = paths["md"].read_text()
    assert markdown.startswith("# Results\n\nTwo runs.\n\n| method") and markdown.endswith("\n- note\n")
    assert markdown_table(ROWS, COLUMNS) in markdown
    with paths["csv"].open() as handle:
        records = list(csv.DictReader(handle))
    # raw values, the columns' keys first, then the rows' other keys; None as empty, lists as JSON
    assert list(records[0]) == ["method", "test_acc1", "params", "seconds", "reused", "shape"]
    assert records[0]["test_acc1"] == "0.649" and records[0]["shape"] == "[12, 5, 5]"
    assert records[1]["test_acc1"] == "" and records[1]["shape"] == ""
    assert json.loads(paths["json"].read_text()) == ROWS
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "results.csv",
        "results.json",
        "results.md",
    ]  # no temp files


def test_formats_and_csv_keys_select_what_is_written(tmp_path):
    paths = write_table_files(tmp_path, "t", ROWS, ["method", "params"], formats=("csv",), csv_keys=["params"])
    assert list(paths) == ["csv"] and paths["csv"].read_text() == "params\n12700\n14840000\n"
    with pytest.raises(ValueError, match="Unknown table format.*'xlsx'"):
        write_table_files(tmp_path, "t", ROWS, ["method"], formats=("xlsx",))
