"""`experiment=rate_accuracy`'s table: top-1 against bytes per image, one row per method and setting.

The pipeline's student runs (HND and GHND per bottleneck size, float32 and over the 8-bit link; the
Entropic Student per beta, its bytes measured on its real bitstream) and the input codecs (JPEG / WebP
of the evaluated view per quality, `runs.codecs`) become rows of one table:

    method, setting, link, bytes_mean, bytes_p95, estimated_bytes_mean, test_acc1, seconds_per_epoch

The notes under it state the comparisons the papers make, computed from the rows (`claims`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from hnd_lightning.models import build_teacher
from hnd_lightning.reporting.tables import Column, percent
from hnd_lightning.runs.codecs import codec_rate_accuracy, evaluated_views

METHOD_NAMES = {"hnd": "HND", "ghnd": "GHND", "entropic_student": "Entropic Student", "jpeg": "JPEG", "webp": "WebP"}
ENTROPIC = "Entropic Student"


def run_codecs(codecs: DictConfig, teacher_settings: dict[str, Any], stage_cfg: DictConfig) -> list[dict[str, Any]]:
    """The codec rows of `pipeline.codecs` (formats, qualities, num_images) through the pipeline's teacher."""
    model = stage_cfg.model
    teacher = build_teacher(
        model.architecture,
        model.num_classes,
        weights=teacher_settings["weights"],
        checkpoint=teacher_settings["checkpoint"],
        input_size=model.input_size,
    )
    datamodule = instantiate(stage_cfg.data)
    views, labels = evaluated_views(datamodule, codecs.get("num_images"))
    normalization = {"mean": list(datamodule.mean), "std": list(datamodule.std)}
    return codec_rate_accuracy(teacher, views, labels, normalization, list(codecs.formats), list(codecs.qualities))


def _row(method: str, setting: str, link: str, bytes_mean: Any, accuracy: Any, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        "setting": setting,
        "link": link,
        "bytes_mean": bytes_mean,
        "bytes_p95": extra.pop("bytes_p95", bytes_mean),
        "estimated_bytes_mean": extra.pop("estimated_bytes_mean", None),
        "test_acc1": accuracy,
        **extra,
    }


def student_rate_rows(students: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the pipeline's student rows: HND / GHND in float32 and 8-bit, the Entropic Student coded."""
    rows = []
    for student in students:
        method = METHOD_NAMES.get(student["method"], student["method"])
        # a phased run's first phase, and its second beside it (the Entropic Student's stages)
        cost = {
            "seconds_per_epoch": student.get("seconds_per_epoch_stage1", student.get("seconds_per_epoch")),
            "seconds_per_epoch_stage2": student.get("seconds_per_epoch_stage2"),
        }
        if student.get("coding") == "entropy_coded":
            rows.append(
                _row(
                    method,
                    f"beta={student['beta']:g}" if student.get("beta") is not None else "-",
                    "entropy-coded",
                    student["coded_bytes_mean"],
                    student["test_acc1"],
                    bytes_p95=student["coded_bytes_p95"],
                    estimated_bytes_mean=student["estimated_bytes_mean"],
                    stage=student["stage"],
                    **cost,
                )
            )
            continue
        setting = f"B={student['bottleneck_channels']}"
        rows.append(
            _row(
                method,
                setting,
                "float32",
                student["payload_bytes_float32"],
                student["test_acc1"],
                stage=student["stage"],
                **cost,
            )
        )
        if student.get("test_q8_acc1") is not None:
            rows.append(
                _row(
                    method,
                    setting,
                    "8-bit",
                    student["payload_bytes_uint8"],
                    student["test_q8_acc1"],
                    stage=student["stage"],
                    **cost,
                )
            )
    return rows


def codec_rate_rows(codecs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        _row(
            METHOD_NAMES[row["method"]],
            f"q={row['quality']}",
            "input codec",
            row["bytes_mean"],
            row["test_acc1"],
            bytes_p95=row["bytes_p95"],
        )
        for row in codecs
    ]


def rate_rows(
    teacher: dict[str, Any], students: Sequence[dict[str, Any]], codecs: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The table's rows: the teacher first, then every student setting, then every codec setting."""
    teacher_row = _row("teacher", "whole image on one side", "-", None, teacher.get("test_acc1"))
    teacher_row["seconds_per_epoch"] = teacher.get("seconds_per_epoch")
    return [teacher_row, *student_rate_rows(students), *codec_rate_rows(codecs)]


def columns() -> list[Column]:
    return [
        Column("method"),
        Column("setting"),
        Column("link"),
        Column("bytes_mean", "bytes / image", format=",.1f"),
        Column("bytes_p95", "p95 bytes", format=",.1f"),
        Column("estimated_bytes_mean", "estimated bytes (likelihood)", format=",.1f"),
        Column("test_acc1", "test top-1 %", format=percent),
        Column("seconds_per_epoch", "s / epoch", format=".1f"),
        Column("seconds_per_epoch_stage2", "stage 2 s / epoch", format=".1f"),
    ]


def _series(rows: Sequence[dict[str, Any]], method: str, link: str) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["method"] == method and r["link"] == link), key=lambda r: r["bytes_mean"])


def accuracy_at(points: Sequence[dict[str, Any]], size: float) -> float | None:
    """Top-1 of a series at `size` bytes, linear in log bytes between its points; None outside them."""
    for low, high in zip(points, points[1:]):
        if low["bytes_mean"] <= size <= high["bytes_mean"]:
            if high["bytes_mean"] == low["bytes_mean"]:
                return max(low["test_acc1"], high["test_acc1"])
            share = math.log(size / low["bytes_mean"]) / math.log(high["bytes_mean"] / low["bytes_mean"])
            return low["test_acc1"] + share * (high["test_acc1"] - low["test_acc1"])
    return points[0]["test_acc1"] if len(points) == 1 and points[0]["bytes_mean"] == size else None


def claims(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The papers' comparisons on these rows, as plain sentences (nothing is judged beyond the numbers)."""
    lines = []
    for link in ("float32", "8-bit"):
        for ghnd in _series(rows, "GHND", link):
            hnd = next((r for r in _series(rows, "HND", link) if r["setting"] == ghnd["setting"]), None)
            if hnd is not None:
                gap = 100 * (ghnd["test_acc1"] - hnd["test_acc1"])
                lines.append(f"- GHND vs HND at {ghnd['setting']} ({link}): {gap:+.2f} points top-1")
    quantized = sorted(_series(rows, "HND", "8-bit") + _series(rows, "GHND", "8-bit"), key=lambda r: r["bytes_mean"])
    for student in _series(rows, ENTROPIC, "entropy-coded"):
        smallest = quantized[0] if quantized else None
        cheaper = [r for r in quantized if r["bytes_mean"] <= student["bytes_mean"]]
        if cheaper:
            best = max(cheaper, key=lambda r: r["test_acc1"])
            where = f"the best 8-bit HND / GHND at <= its bytes ({best['method']} {best['setting']}, {best['bytes_mean']:.0f} B)"
        elif smallest is not None:
            best = smallest
            where = f"the smallest 8-bit HND / GHND payload ({best['method']} {best['setting']}, {best['bytes_mean']:.0f} B)"
        else:
            continue
        gap = 100 * (student["test_acc1"] - best["test_acc1"])
        lines.append(
            f"- Entropic Student {student['setting']} ({student['bytes_mean']:.1f} B): {gap:+.2f} points top-1 against {where}"
        )
    codecs = [r for r in rows if r["link"] == "input codec"]
    if codecs:
        cheapest = min(codecs, key=lambda r: r["bytes_mean"])
        learned = [
            r
            for r in rows
            if r["link"] in ("float32", "8-bit", "entropy-coded") and r["bytes_mean"] <= cheapest["bytes_mean"]
        ]
        if learned:
            best = max(learned, key=lambda r: r["test_acc1"])
            gap = 100 * (best["test_acc1"] - cheapest["test_acc1"])
            lines.append(
                f"- at <= {cheapest['bytes_mean']:.0f} B (the smallest codec setting, {cheapest['method']} {cheapest['setting']}): "
                f"best learned {best['method']} {best['setting']} ({best['link']}) {gap:+.2f} points top-1 against it"
            )
    return lines
