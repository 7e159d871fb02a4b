"""Top-1/top-5 of a trained split model with and without the 8-bit bottleneck.

    python -m hnd_lightning.evaluate artifacts=outputs/runs/<date>/<time>/artifacts data.root=/data/ilsvrc2012

Input size, resize size, normalization and the number of classes come from the artifacts'
`split.json`, so the data is fed exactly as in training. Writes `evaluation.json` into the run
directory (`outputs/evaluate/<date>/<time>/` by default).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.runs.evaluation import accuracy
from hnd_lightning.models.quantization import payload_bytes, with_quantized_bottleneck

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
SPLITS = ("test", "val")


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


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; any other name is passed to `torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the artifacts at `cfg.artifacts` on `cfg.split` of `cfg.data`; write and return the results."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split={cfg.split!r} is not one of {SPLITS}; use split=test (default) or split=val.")
    artifacts = load_split_artifacts(cfg.artifacts)
    metadata = artifacts.metadata
    device = resolve_device(cfg.device)
    datamodule = instantiate(data_config_from_artifacts(cfg.data, metadata))
    datamodule.prepare_data()  # e.g. the bundled dataset writes its image files here
    datamodule.setup("test")
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    model = artifacts.model().to(device)
    num_classes = metadata["num_classes"]
    float_metrics = accuracy(model, loader, num_classes, device)
    quantized_metrics = accuracy(with_quantized_bottleneck(model), loader, num_classes, device)
    elements = 1
    for size in metadata["bottleneck_tensor"]["shape"]:
        elements *= size
    results = {
        "artifacts": str(Path(cfg.artifacts).resolve()),
        "architecture": metadata["architecture"],
        "method": metadata["method"],
        "bottleneck_channels": metadata["bottleneck_channels"],
        "split": cfg.split,
        "images": len(loader.dataset),
        "metrics": {
            **{f"{cfg.split}/{name}": value for name, value in float_metrics.items()},
            **{f"{cfg.split}_q8/{name}": value for name, value in quantized_metrics.items()},
        },
        "payload_bytes_per_image": {key: payload_bytes(elements)[key] for key in ("float32", "8bit")},
    }
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / EVALUATION_FILE).write_text(json.dumps(results, indent=2))
    print(format_results(results))
    log.info("Written %s", output_dir / EVALUATION_FILE)
    return results


def format_results(results: dict[str, Any]) -> str:
    """A small terminal table: accuracy and payload with a float32 and with an 8-bit bottleneck."""
    split, metrics, payload = results["split"], results["metrics"], results["payload_bytes_per_image"]
    rows = [
        f"{results['architecture']} {results['method']} B={results['bottleneck_channels']}, "
        f"{results['images']} {split} images",
        f"{'bottleneck':<12}{'top-1':>9}{'top-5':>9}{'bytes/image':>13}",
    ]
    for label, prefix, key in (("float32", split, "float32"), ("8-bit", f"{split}_q8", "8bit")):
        rows.append(
            f"{label:<12}{100 * metrics[f'{prefix}/acc1']:>8.2f}%{100 * metrics[f'{prefix}/acc5']:>8.2f}%"
            f"{payload[key]:>13,}"
        )
    return "\n".join(rows)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["metrics"][f"{cfg.split}_q8/acc1"]


if __name__ == "__main__":
    main()
