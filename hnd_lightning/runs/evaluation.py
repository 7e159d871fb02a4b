"""Evaluating a trained split from its artifacts, through the same test as training.

`evaluate(cfg)` (the `python -m hnd_lightning.evaluate` command) loads the artifacts, builds the data
as the model was trained on (`split.json`: input size, resize size, normalization, classes), refuses
data whose class folders are not the run's classes, and runs `trainer.test` on a `LoadedSplitModel`
with the 8-bit link tested too: the same LightningModule test as a training run's, so
`trainer.limit_test_batches`, `trainer=ddp`, precision and the logger behave the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from hnd_lightning.files import write_json
from hnd_lightning.methods import LoadedSplitModel
from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.models.quantization import payload_bytes
from hnd_lightning.runs.tensorboard import close_run_loggers

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
SPLITS = ("test", "val")
# what the evaluation reports, as the LightningModule's test logs it: float32 and 8-bit link
TESTED_METRICS = ("test/acc1", "test/acc5", "test_q8/acc1", "test_q8/acc5")
LINK_FORMATS = ("float32", "uint8")


def data_config_from_artifacts(data_cfg: DictConfig, metadata: dict[str, Any]) -> DictConfig:
    """Set input size, resize size, normalization and classes of `data_cfg` to what the model was trained on."""
    data_cfg = data_cfg.copy()
    with open_dict(data_cfg):
        data_cfg.input_size = metadata["input"]["shape"][-1]
        data_cfg.resize_size = metadata["input"].get("resize_size") or data_cfg.input_size
        data_cfg.num_classes = metadata["num_classes"]
        for key in ("mean", "std"):
            if metadata["input"].get(key):
                data_cfg[key] = list(metadata["input"][key])
    return data_cfg


def _listed(names: Sequence[str], limit: int = 50) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{f', ... ({len(names) - limit} more)' if len(names) > limit else ''}]"


def check_classes(trained: Sequence[str] | None, found: Sequence[str] | None, allow_relabelled: bool = False) -> None:
    """Refuse to evaluate on class folders that are not the ones the model was trained on.

    `trained`: `split.json`'s `classes` (label i is `trained[i]`); `found`: the dataset's class names
    in label order. The same names in the same order pass; anything else raises ValueError naming
    both lists, unless `allow_relabelled` (data whose folders were renamed but keep the label order),
    which only logs the difference. Nothing to compare (either list unknown) logs a warning.
    """
    if not trained or not found:
        log.warning(
            "Cannot check the labels: %s records no class names", "split.json" if not trained else "the dataset"
        )
        return
    trained, found = list(trained), list(found)
    if trained == found:
        return
    differing = [index for index, (a, b) in enumerate(zip(trained, found)) if a != b]
    where = (
        f"{len(trained)} classes in training, {len(found)} here"
        if len(trained) != len(found)
        else f"{len(differing)} of {len(trained)} labels differ, first at label {differing[0]}: "
        f"{trained[differing[0]]!r} in training, {found[differing[0]]!r} here"
    )
    message = (
        f"The dataset's class folders are not the classes this model was trained on ({where}), so its "
        f"accuracy would be measured against the wrong labels.\n  split.json classes: {_listed(trained)}\n"
        f"  dataset classes:    {_listed(found)}\n"
    )
    if not allow_relabelled:
        raise ValueError(
            message + "Point data.root at the run's dataset, or pass allow_relabelled=true if these "
            "folders are the same classes renamed, in the same label order."
        )
    log.warning("%sallow_relabelled=true: evaluating anyway, label i of the model taken as class folder i.", message)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the artifacts at `cfg.artifacts` on `cfg.split` of `cfg.data` with a float32 and an 8-bit
    bottleneck; write `evaluation.json` (rank zero), print the table and return the results."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split={cfg.split!r} is not one of {SPLITS}; use split=test (default) or split=val.")
    pl.seed_everything(cfg.seed, workers=True)
    artifacts = load_split_artifacts(cfg.artifacts)
    metadata = artifacts.metadata
    datamodule = instantiate(data_config_from_artifacts(cfg.data, metadata))
    datamodule.prepare_data()  # e.g. the bundled dataset writes its image files here
    datamodule.setup("test")
    check_classes(metadata.get("classes"), getattr(datamodule, "classes", None), cfg.allow_relabelled)
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()

    module = LoadedSplitModel(artifacts)
    module.test_quantized = True
    loggers = [instantiate(item) for item in (cfg.get("logger") or {}).values() if item and "_target_" in item]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[])
    trainer.test(module, dataloaders=loader)
    close_run_loggers(trainer)
    # an entropy-coded split has no 8-bit link: its test goes through its bitstream instead
    tested = {key: float(trainer.callback_metrics[key]) for key in TESTED_METRICS if key in trainer.callback_metrics}
    images = min(len(loader.dataset), trainer.num_test_batches[0] * loader.batch_size * trainer.world_size)
    elements = math.prod(metadata["bottleneck_tensor"]["shape"])
    results = {
        "artifacts": str(Path(cfg.artifacts).resolve()),
        "architecture": metadata["architecture"],
        "method": metadata["method"],
        "bottleneck_channels": metadata["bottleneck_channels"],
        "split": cfg.split,
        "images": images,
        # named after the split evaluated: test/acc1, test_q8/acc1, or val/acc1, val_q8/acc1
        "metrics": {cfg.split + key[len("test") :]: value for key, value in tested.items()},
        "payload_bytes_per_image": {fmt: payload_bytes(elements)[fmt] for fmt in LINK_FORMATS},
    }
    if module.entropy_coded:  # the bytes of the strings actually coded, with the likelihood estimate
        record = module.payload_record(metadata["method"], module.model)
        results["payload_bytes_per_image"] = {
            key: record[key] for key in ("coded_bytes_mean", "coded_bytes_p95", "estimated_bytes_mean")
        }
    if trainer.is_global_zero:
        path = write_json(Path(cfg.paths.output_dir) / EVALUATION_FILE, results)
        print(format_results(results))
        log.info("Written %s", path)
    return results


def format_results(results: dict[str, Any]) -> str:
    """A small terminal table: accuracy and payload with a float32 and with an 8-bit bottleneck."""
    split, metrics, payload = results["split"], results["metrics"], results["payload_bytes_per_image"]
    rows = [
        f"{results['architecture']} {results['method']} B={results['bottleneck_channels']}, "
        f"{results['images']} {split} images",
        f"{'bottleneck':<12}{'top-1':>9}{'top-5':>9}{'bytes/image':>13}",
    ]
    links = (("float32", split, "float32"), ("8-bit", f"{split}_q8", "uint8"))
    if "coded_bytes_mean" in payload:
        links = (("coded", split, "coded_bytes_mean"),)
    for label, prefix, fmt in links:
        rows.append(
            f"{label:<12}{100 * metrics[f'{prefix}/acc1']:>8.2f}%{100 * metrics[f'{prefix}/acc5']:>8.2f}%"
            f"{payload[fmt]:>13,}"
        )
    return "\n".join(rows)
