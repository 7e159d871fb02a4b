"""The optional records of where a split model came from, and what `split_schema` checks in them.

Older artifacts lack all three; when present they must be well formed (a crafted file cannot smuggle
an unbounded value into a consumer's logs or tables):

    teacher       where the teacher's weights came from (`models.teacher_weights.teacher_identity`):
                  {"source": "torchvision" | "checkpoint" | "bundled" | "random", "weights", "file", "sha256", ...}
    source        the file a converted model came from (`models.conversion`):
                  {"layout", "file", "sha256", "epoch", "best_value", ...}
    class_names   one readable name per label (`classes` holds the dataset's folder names, e.g. wnids)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from hnd_lightning.models.teacher_weights import IDENTITY_SOURCES

MAX_ENTRIES = 16
MAX_TEXT = 4096


def is_digest(value: Any) -> bool:
    """True for a sha256 as this project writes it: 64 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _shown(value: Any) -> str:
    return json.dumps(value)[:60]


def _record_problem(record: Any, field: str, required: str) -> tuple[str, str] | None:
    if not isinstance(record, dict) or len(record) > MAX_ENTRIES or not isinstance(record.get(required), str):
        return (
            field,
            f"must be an object with a string {required!r} (at most {MAX_ENTRIES} entries), got {_shown(record)}",
        )
    for key, value in record.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if len(key) > 64 or not (value is None or number or (isinstance(value, str) and len(value) <= MAX_TEXT)):
            return f"{field}.{key}", f"must be a string, a finite number or null, got {_shown(value)}"
        if key == "sha256" and value is not None and not is_digest(value):
            return f"{field}.sha256", f"must be 64 lowercase hex digits or null, got {_shown(value)}"
    return None


def provenance_problem(metadata: Mapping[str, Any], num_classes: int) -> tuple[str, str] | None:
    """(field, what is wrong) for the first malformed `teacher`, `source` or `class_names`, else None."""
    teacher = metadata.get("teacher")
    if teacher is not None:
        problem = _record_problem(teacher, "teacher", "source")
        if problem is not None:
            return problem
        if teacher["source"] not in IDENTITY_SOURCES:
            return "teacher.source", f"must be one of {list(IDENTITY_SOURCES)}, got {_shown(teacher['source'])}"
    source = metadata.get("source")
    if source is not None and (problem := _record_problem(source, "source", "layout")) is not None:
        return problem
    names = metadata.get("class_names")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != num_classes
        or not all(isinstance(name, str) and len(name) <= 200 for name in names)
    ):
        return "class_names", f"must be null or a list of num_classes={num_classes} strings, got {_shown(names)}"
    return None
