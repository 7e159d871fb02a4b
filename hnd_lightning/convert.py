"""Published HND checkpoints as this project's artifacts, and artifacts as torchdistill / sc2bench state dicts.

    python -m hnd_lightning.convert checkpoint=hnd/imagenet-densenet169_head_mimic-ver2b-12ch.pt output_dir=DIR
    python -m hnd_lightning.convert artifacts=DIR target=sc2bench output=FILE

The first writes `DIR/head.safetensors`, `DIR/tail.safetensors` and `DIR/split.json`, what a finished
run exports, so evaluate, deploy, serve, client and analyze take them; the second writes one bare
state dict in that library's layout. Nothing in a file runs while it loads. See `models.conversion`.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hnd_lightning.models.conversion import ConversionError, export_checkpoint, import_checkpoint


@hydra.main(version_base="1.3", config_path="../conf", config_name="convert")
def main(cfg: DictConfig) -> None:
    if (cfg.checkpoint is None) == (cfg.artifacts is None):
        raise ConversionError(
            "Pass checkpoint=FILE (a published checkpoint -> artifacts in output_dir) or artifacts=DIR with "
            "target=torchdistill|sc2bench and output=FILE (artifacts -> a state dict), not both and not neither."
        )
    if cfg.artifacts is not None:
        if cfg.target is None or cfg.output is None:
            raise ConversionError("artifacts=DIR needs target=torchdistill|sc2bench and output=FILE.")
        path = export_checkpoint(cfg.artifacts, cfg.target, cfg.output, cfg.bottleneck_idx, cfg.overwrite)
        print(f"Wrote {path}")
        return
    model = cfg.model
    artifacts = import_checkpoint(
        cfg.checkpoint,
        cfg.output_dir,
        architecture=model.get("architecture"),
        bottleneck_channels=model.bottleneck_channels,
        num_classes=model.num_classes,
        source=cfg.source,
        method=HydraConfig.get().runtime.choices.get("method"),
        teacher_weights=model.teacher.weights,
        teacher_checkpoint=model.teacher.checkpoint,
        input_size=model.input_size,
        resize_size=model.resize_size,
        overwrite=cfg.overwrite,
    )
    metadata = artifacts.metadata
    print(
        f"Converted {cfg.checkpoint} ({metadata['source']['layout']}): {metadata['architecture']} "
        f"{metadata['method']} B={metadata['bottleneck_channels']} -> {cfg.output_dir}"
    )


if __name__ == "__main__":
    main()
