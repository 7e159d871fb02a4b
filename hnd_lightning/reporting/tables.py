"""The one writer of result tables: markdown for people, CSV and JSON for programs.

A table is a list of rows (dicts) and a list of column specs. Each `Column` says which row key it
shows, its header, how a value is formatted and how the column is aligned:

    from hnd_lightning.reporting.tables import Column, markdown_table, write_table_files

    columns = [
        Column("method"),
        Column("test_acc1", "test top-1 %", format=percent),      # 0.6490 -> "64.90"
        Column("trainable_parameters", "params", format=","),     # 12700 -> "12,700"
        Column("wall_seconds", "wall s", format=".1f"),
    ]
    print(markdown_table(rows, columns))
    paths = write_table_files(run_dir, "results", rows, columns, title="Results", notes=["- ..."])
    # {"md": run_dir/results.md, "csv": run_dir/results.csv, "json": run_dir/results.json}

- `markdown_table(rows, columns) -> str`: a GitHub markdown table whose cells are padded to the
  column's width, so the same text reads well in a terminal and renders in a README. A missing or
  None value shows `Column.missing` ("-"); `|` in a cell is escaped and newlines become spaces.
- `write_table_files(directory, name, rows, columns, ...) -> {format: Path}` writes `<name>.md`
  (optional title, intro, the table, optional notes), `<name>.csv` (raw, unformatted values; by
  default the columns' keys first, then every other key found in the rows) and `<name>.json` (the
  rows as given, strict JSON), each atomically through `hnd_lightning.files`. `formats` picks a
  subset, e.g. `formats=("md", "csv")` where the caller writes its own JSON document.

A column's value is `row[key]`, or `Column.value(row)` when the cell needs more than one key (e.g.
"12.3 (reused)"). `format` is a format spec for Python's `format()` (",", ".2f", ".1%") or a
callable value -> str; the `percent` and `count` helpers below cover the project's usual cells.
Alignment defaults to right for columns whose values are all numbers, left otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hnd_lightning.files import atomic_write_text, strict_json, write_json

ALIGNMENTS = ("left", "right", "center")
FORMATS = ("md", "csv", "json")


@dataclass(frozen=True)
class Column:
    """One column: the row key it shows, its header (default: the key), the cell format and alignment.

    `format`: a format spec ("", ",", ".2f") or a callable value -> str, applied to values that are
    not None. `align`: "left", "right", "center", or None (right when every value is a number).
    `value`: a callable row -> value used instead of `row[key]` (the CSV keeps `row[key]`).
    """

    key: str
    header: str | None = None
    format: str | Callable[[Any], str] = ""
    align: str | None = None
    missing: str = "-"
    value: Callable[[Mapping[str, Any]], Any] | None = None

    def __post_init__(self) -> None:
        if self.align is not None and self.align not in ALIGNMENTS:
            raise ValueError(
                f"Column {self.key!r}: align={self.align!r} is not one of {ALIGNMENTS} (or None for automatic)."
            )

    @property
    def title(self) -> str:
        return self.key if self.header is None else self.header

    def get(self, row: Mapping[str, Any]) -> Any:
        return self.value(row) if self.value is not None else row.get(self.key)

    def cell(self, row: Mapping[str, Any]) -> str:
        value = self.get(row)
        if value is None:
            return self.missing
        text = self.format(value) if callable(self.format) else format(value, self.format)
        return _escape(text)


def percent(value: float, digits: int = 2) -> str:
    """A fraction as a percentage without the sign: 0.6490 -> "64.90"."""
    return f"{100 * value:.{digits}f}"


def count(value: float) -> str:
    """A large count with an SI prefix: 120_600_000 -> "120.60 M", 12_700 -> "12.70 k", 42 -> "42"."""
    for divisor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:,.2f} {unit}"
    return f"{value:.0f}"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _columns(columns: Sequence[Column | str]) -> list[Column]:
    return [column if isinstance(column, Column) else Column(column) for column in columns]


def _alignment(column: Column, rows: Sequence[Mapping[str, Any]]) -> str:
    if column.align is not None:
        return column.align
    values = [value for value in (column.get(row) for row in rows) if value is not None]
    return "right" if values and all(_is_number(value) for value in values) else "left"


def _pad(text: str, width: int, align: str) -> str:
    if align == "right":
        return text.rjust(width)
    if align == "center":
        return text.center(width)
    return text.ljust(width)


def _rule(width: int, align: str) -> str:
    dashes = "-" * max(width, 3)
    if align == "right":
        return dashes[:-1] + ":"
    if align == "center":
        return ":" + dashes[2:] + ":"
    return dashes


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column | str]) -> str:
    """A markdown table of `rows` under `columns` (specs or bare keys), cells padded; ends with a newline."""
    specs = _columns(columns)
    if not specs:
        raise ValueError("markdown_table needs at least one column.")
    headers = [_escape(column.title) for column in specs]
    cells = [[column.cell(row) for column in specs] for row in rows]
    aligns = [_alignment(column, rows) for column in specs]
    widths = [max([3, len(header), *(len(line[index]) for line in cells)]) for index, header in enumerate(headers)]
    lines = [
        "| " + " | ".join(_pad(header, width, align) for header, width, align in zip(headers, widths, aligns)) + " |",
        "| " + " | ".join(_rule(width, align) for width, align in zip(widths, aligns)) + " |",
    ]
    lines += [
        "| " + " | ".join(_pad(cell, width, align) for cell, width, align in zip(line, widths, aligns)) + " |"
        for line in cells
    ]
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(strict_json(value))
    return value


def csv_text(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """CSV of the raw values of `keys` (header row first); lists and dicts as JSON, None as empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    writer.writerows([_csv_value(row.get(key)) for key in keys] for row in rows)
    return buffer.getvalue()


def _all_keys(rows: Iterable[Mapping[str, Any]], first: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*first, *(key for row in rows for key in row)]))


def write_table_files(
    directory: str | Path,
    name: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column | str],
    *,
    title: str | None = None,
    intro: str | None = None,
    notes: Sequence[str] = (),
    csv_keys: Sequence[str] | None = None,
    formats: Sequence[str] = FORMATS,
) -> dict[str, Path]:
    """Write `<name>.md`, `<name>.csv` and `<name>.json` (those in `formats`) into `directory`, atomically.

    The markdown holds `# title`, `intro`, the table and `notes` (one line each); the CSV the raw
    values of `csv_keys` (default: the columns' keys, then every other key of the rows); the JSON the
    rows as given. Returns the written paths by format, e.g. {"md": Path(...), "csv": ..., "json": ...}.
    """
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise ValueError(f"Unknown table format(s) {unknown}; allowed: {', '.join(FORMATS)}.")
    directory = Path(directory)
    specs = _columns(columns)
    paths: dict[str, Path] = {}
    if "md" in formats:
        parts = [f"# {title}\n" if title else "", f"{intro}\n" if intro else "", markdown_table(rows, specs)]
        if notes:
            parts.append("\n".join(notes) + "\n")
        paths["md"] = atomic_write_text(directory / f"{name}.md", "\n".join(part for part in parts if part))
    if "csv" in formats:
        keys = list(csv_keys) if csv_keys is not None else _all_keys(rows, [column.key for column in specs])
        paths["csv"] = atomic_write_text(directory / f"{name}.csv", csv_text(rows, keys))
    if "json" in formats:
        paths["json"] = write_json(directory / f"{name}.json", [dict(row) for row in rows])
    return paths
