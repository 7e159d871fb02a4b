"""Multi-stage experiments run by `python -m hnd_lightning.train experiment=<name>`.

An experiment config with a `pipeline` block gets its teacher (`runs.teachers`: the bundled one, or
one trained here), then runs its student `stages` in order, each a full training run composed from
the real `train.yaml` plus the stage's `config`, once per seed of `pipeline.seeds`, into
`<run dir>/<stage>/` (`<run dir>/<stage>/seed<S>/` with several seeds). At the end it writes into the
run directory:

    <name>.md / .csv / .json    one row per stage (mean and standard deviation over seeds), the
                                teacher first; `<name>_runs.json` every run's own row
    <name>.png                  the experiment's figure (`pipeline.figure`: quickstart, compare, bottlenecks,
                                rate_accuracy)
    codecs.json                 (with `pipeline.codecs`) JPEG / WebP of the test views through the teacher;
                                the table is then `runs.rate_accuracy`'s, one row per method and setting
    split_inference.json        (with `pipeline.split_inference.num_images` > 0) the first student's
                                split measured over loopback: device client -> edge server

`pipeline.epoch_curve=true` tests every run after each epoch (`callbacks.EpochTestCurve`), which
`compare.png` draws as test top-1 against training time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict

from hnd_lightning.callbacks.test_curve import CURVE_FILE
from hnd_lightning.files import write_json
from hnd_lightning.reporting import pipeline_figures, rate_figure
from hnd_lightning.reporting.tables import write_table_files
from hnd_lightning.runs import pipeline_rows, rate_accuracy
from hnd_lightning.runs.phases import run_training
from hnd_lightning.runs.record import completed_results
from hnd_lightning.runs.teachers import Teacher, test_bundled_teacher, trained_teacher

log = logging.getLogger(__name__)


def _without_group_choices(overrides: Sequence[str], groups: Sequence[str] = ("method", "seed")) -> list[str]:
    """Drop `method=...` and `seed=...` from `overrides`: the pipeline sets each stage's own."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [text for text, override in zip(overrides, parsed) if override.key_or_group not in groups]


def compose_stage(overrides: Sequence[str], method: str, updates: DictConfig | None, output_dir: Path) -> DictConfig:
    """Compose `train.yaml` with the run's overrides, the stage's method and its config updates."""
    cfg = compose(config_name="train", overrides=[*_without_group_choices(overrides), f"method={method}"])
    if updates is not None:
        cfg = OmegaConf.merge(cfg, updates)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.pop("pipeline", None)
    return cfg


def get_teacher(spec: DictConfig, overrides: Sequence[str], run_dir: Path) -> Teacher:
    """The bundled teacher, tested here; or (`pipeline.train_teacher=true`) one trained or reused from the cache."""
    method, updates = (spec.teacher.method, spec.teacher.get("config")) if spec.train_teacher else ("original", None)
    cfg = compose_stage(overrides, method, updates, run_dir / "teacher")
    with open_dict(cfg):
        cfg.model.bottleneck_channels = None  # the unmodified teacher sends no bottleneck
        cfg.test_quantized = False
    if spec.train_teacher:
        return trained_teacher(cfg, Path(spec.teacher_root), spec.retrain_teacher)
    return test_bundled_teacher(cfg)


def run_student(stage_cfg: DictConfig, teacher: Teacher, seed: int, epoch_curve: bool) -> dict[str, Any]:
    """Train one student run from `teacher` with `seed` (the run records the teacher's identity itself).

    With `skip_completed=true` a run whose results.json already says ok is reused as it is, so
    re-running an experiment into its folder (`hydra.run.dir=...`) only runs what did not finish.
    """
    if stage_cfg.get("skip_completed") and (done := completed_results(stage_cfg.paths.output_dir)) is not None:
        log.info("Reusing %s: its results.json says status ok (skip_completed=true)", stage_cfg.paths.output_dir)
        return done
    with open_dict(stage_cfg):
        stage_cfg.seed = seed
        stage_cfg.model.teacher.weights = teacher.model_teacher["weights"]
        stage_cfg.model.teacher.checkpoint = teacher.model_teacher["checkpoint"]
        if epoch_curve:
            stage_cfg.callbacks.epoch_test_curve = {
                "_target_": "hnd_lightning.callbacks.EpochTestCurve",
                "dirpath": stage_cfg.paths.output_dir,
            }
    return run_training(stage_cfg)


def run_pipeline(cfg: DictConfig, overrides: Sequence[str]) -> list[dict[str, Any]]:
    """Run `cfg.pipeline` (see module docstring); return the table's rows, teacher first."""
    spec = cfg.pipeline
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    teacher = get_teacher(spec, overrides, run_dir)
    seeds = list(spec.seeds)
    runs: list[dict[str, Any]] = []
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    stage_cfg = None
    for stage, stage_spec in spec.stages.items():
        for seed in seeds:
            output_dir = run_dir / stage / (f"seed{seed}" if len(seeds) > 1 else "")
            stage_cfg = compose_stage(overrides, stage_spec.method, stage_spec.get("config"), output_dir)
            log.info("Stage %s (seed %d): %s student into %s", stage, seed, stage_spec.method, output_dir)
            results = run_student(stage_cfg, teacher, seed, spec.epoch_curve)
            runs += pipeline_rows.student_rows(stage, seed, results)
            if spec.epoch_curve and (output_dir / CURVE_FILE).is_file():
                curves.setdefault(stage_spec.method, []).append(pipeline_rows.read_json(output_dir / CURVE_FILE))
    teacher_row = {"stage": "teacher", **teacher.row}
    rows = [teacher_row, *pipeline_rows.aggregate(runs)]
    if spec.split_inference.num_images > 0 and runs:
        test_images = Path(stage_cfg.data.root) / stage_cfg.data.test_dir
        rows[1].update(measure_split(spec, Path(runs[0]["artifacts"]), test_images, run_dir))
    notes, columns = pipeline_rows.notes(rows, curves), pipeline_rows.columns(rows)
    if spec.get("codecs") is not None:  # experiment=rate_accuracy: a row per method and setting, codecs beside
        codec_cfg = stage_cfg if stage_cfg is not None else compose_stage(overrides, "original", None, run_dir)
        codecs = rate_accuracy.run_codecs(spec.codecs, teacher.model_teacher, codec_cfg)
        write_json(run_dir / "codecs.json", codecs)
        rows = rate_accuracy.rate_rows(rows[0], rows[1:], codecs)
        notes, columns = rate_accuracy.claims(rows), rate_accuracy.columns()
    write_json(run_dir / f"{spec.name}_runs.json", runs)
    paths = write_table_files(run_dir, spec.name, rows, columns, title=f"{spec.name} results", notes=notes)
    draw_figure(spec, run_dir, rows, curves, stage_cfg.data if stage_cfg is not None else None)
    print(f"\n{spec.name} results ({run_dir}):\n\n{paths['md'].read_text()}")
    return rows


def measure_split(spec: DictConfig, artifacts: Path, test_images: Path, run_dir: Path) -> dict[str, Any]:
    """Run the split over loopback (device client -> edge server on this machine) on test images."""
    from hnd_lightning.runtime.loopback import measure_split_over_loopback

    measured = measure_split_over_loopback(
        artifacts,
        test_images,
        num_images=spec.split_inference.num_images,
        protocol=spec.split_inference.protocol,
    )
    write_json(run_dir / "split_inference.json", measured)
    return pipeline_rows.split_inference_columns(measured)


def draw_figure(
    spec: DictConfig, run_dir: Path, rows: list[dict[str, Any]], curves: dict[str, Any], data_cfg: DictConfig | None
) -> None:
    """`<name>.png` as `pipeline.figure` names it (see `reporting.pipeline_figures`)."""
    teacher, students = rows[0], rows[1:]
    path = run_dir / f"{spec.name}.png"
    if spec.figure == "quickstart":
        pipeline_figures.quickstart_figure(path, teacher, students)
    elif spec.figure == "compare" and curves:
        pipeline_figures.compare_figure(path, curves, teacher.get("test_acc1"))
    elif spec.figure == "rate_accuracy":
        size = data_cfg.input_size if data_cfg is not None else None
        rate_figure.rate_accuracy_figure(path, rows, teacher.get("test_acc1"), 3 * size * size if size else None)
    elif spec.figure == "bottlenecks":
        input_bytes = students[0]["payload_input_bytes"] if students else 0
        jpeg = pipeline_rows.mean_jpeg_bytes(data_cfg) if data_cfg is not None else None
        pipeline_figures.bottlenecks_figure(path, students, teacher.get("test_acc1"), input_bytes, jpeg)
