"""The other direction: a split model's artifacts as a torchdistill or sc2bench state dict.

`export_checkpoint` writes the head and tail of an artifact folder (a run's or a converted one) as one
bare state dict in that library's key layout, through the same key table import reads with
(`layouts.key_map`), so converting the file back gives the same tensors. Both libraries' `load_ckpt`
read a bare state dict:

    torchdistill 0.3.3   custom_<arch>(bottleneck_channel=B, bottleneck_idx=7)
    sc2bench             custom_<arch> of its hubconf (bottleneck_idx=7), or the splittable_* model
                         with the bottleneck split at index 8 (`larger_densenet_bottleneck`'s default)

sc2bench's `load_state_dict` is not strict outside the bottleneck: compare keys after loading there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hnd_lightning.files import atomic_write
from hnd_lightning.models.artifacts import load_split_artifacts
from hnd_lightning.models.conversion.layouts import EXPORT_LAYOUTS, LAYOUTS, key_map
from hnd_lightning.models.conversion.safe_load import ConversionError

log = logging.getLogger(__name__)

BOTTLENECK_INDICES = (7, 8)


def export_checkpoint(
    artifacts: str | Path, target: str, output: str | Path, bottleneck_idx: int = 7, overwrite: bool = False
) -> Path:
    """Write the artifacts in `artifacts` as a `target` ("torchdistill" or "sc2bench") state dict at `output`.

    Args:
        bottleneck_idx: sc2bench only: 7 (its hubconf's and torchdistill's split) or 8.
        overwrite: replace an existing `output`.

    Returns:
        `output`, written atomically with torch.save (tensors only).
    """
    if target not in EXPORT_LAYOUTS:
        raise ConversionError(f"target={target!r} is not one of {list(EXPORT_LAYOUTS)}.")
    if bottleneck_idx not in BOTTLENECK_INDICES or (target == "torchdistill" and bottleneck_idx != 7):
        raise ConversionError(
            f"bottleneck_idx={bottleneck_idx} is not possible for target={target}: torchdistill 0.3.3 splits at 7, "
            f"sc2bench at {' or '.join(map(str, BOTTLENECK_INDICES))}."
        )
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConversionError(f"{output} already exists; pass another output=FILE or overwrite=true.")
    loaded = load_split_artifacts(artifacts)
    architecture = loaded.metadata["architecture"]
    layout = LAYOUTS[EXPORT_LAYOUTS[target].format(idx=bottleneck_idx)]
    head, tail = loaded.head.state_dict(), loaded.tail.state_dict()
    mapping = key_map(layout, architecture, list(head), list(tail))
    tensors = {f"head.{key}": value for key, value in head.items()} | {
        f"tail.{key}": value for key, value in tail.items()
    }
    state = {mapping[key]: value.contiguous() for key, value in tensors.items()}
    with atomic_write(output) as handle:
        torch.save(state, handle)
    builder = f"custom_{architecture}(bottleneck_channel={loaded.metadata['bottleneck_channels']}, bottleneck_idx={bottleneck_idx})"
    log.info(
        "Wrote %s (%s layout, %d tensors); build the model with %s, then load_ckpt",
        output,
        layout.name,
        len(state),
        builder,
    )
    return output
