"""The key layouts of the published HND checkpoints, and how each maps onto this project's artifacts.

Seven layouts over the same layers (the facts: `CHECKPOINTS_REFERENCE.md` of the project notes):

    original_head    the original code's head-only file (HND): `extractor.*`, `module_seq.*`; the tail
                     is the teacher's
    original_naive   the original's whole "mimic" model (naive; `type`, `acc`, `epoch` around it):
    original_kd      the same keys in a KD file (`config`, `args` as an argparse.Namespace, ...):
                     `student_model.<head keys>`, `features.<N>.*` (the teacher's modules after the
                     split, flattened), `classifier.*`
    torchdistill     torchdistill 0.3.3 `custom_*`: `[features.]bottleneck.{encoder,decoder}.*` + the
                     teacher's tail under torchvision names (wrapped in a checkpoint or bare)
    sc2bench_idx7    sc2bench `splittable_*`: `bottleneck_layer.{encoder,decoder}.*` + the tail
    sc2bench_idx8    the same with the bottleneck split one layer later (`encoder.7` is BN(B))

`key_map` gives, for one layout and architecture, the source key of every tensor of this project's
head (`encoder.<i>.*`, `decoder.<k>.*`) and tail (torchvision names): import reads through it, export
writes through it, so both directions are one table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hnd_lightning.models.architectures import get_architecture

ORIGINAL, TORCHDISTILL, SC2BENCH = "original", "torchdistill", "sc2bench"
FAMILIES = (ORIGINAL, TORCHDISTILL, SC2BENCH)
# torchdistill's and sc2bench's module lists put BN(B) at index 7: the bottleneck conv ends the encoder at 7
DEFAULT_BOTTLENECK_IDX = 7


@dataclass(frozen=True)
class Layout:
    """One file layout: its family (`source=`), the method it implies, whether it holds the tail."""

    name: str
    family: str
    # the training method the layout itself says (None: the file does not tell; `method=` states it)
    method: str | None
    # whole model (head and tail) or the head only (the tail then comes from the teacher)
    whole: bool
    # where torchdistill / sc2bench cut their module list into encoder and decoder (7 or 8)
    bottleneck_idx: int = DEFAULT_BOTTLENECK_IDX


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("original_head", ORIGINAL, "hnd", whole=False),
        Layout("original_naive", ORIGINAL, "naive", whole=True),
        Layout("original_kd", ORIGINAL, "kd", whole=True),
        Layout("torchdistill", TORCHDISTILL, None, whole=True),
        Layout("sc2bench_idx7", SC2BENCH, None, whole=True, bottleneck_idx=7),
        Layout("sc2bench_idx8", SC2BENCH, None, whole=True, bottleneck_idx=8),
    )
}
# torchvision's dense layers in denseblock3 (block_config[2]): the tails of the two DenseNets differ only there
DENSEBLOCK3_LAYERS = {"densenet169": 32, "densenet201": 48}
# What `convert artifacts=DIR target=...` writes (torchdistill 0.3.3 and sc2bench read bare state dicts).
EXPORT_LAYOUTS = {"torchdistill": "torchdistill", "sc2bench": "sc2bench_idx{idx}"}


def _bottleneck_prefix(layout: Layout, architecture: str) -> str:
    if layout.family == SC2BENCH:
        return "bottleneck_layer."
    # torchdistill's CustomDenseNet keeps the bottleneck inside `features`; its ResNet and Inception are Sequentials
    return "features.bottleneck." if architecture.startswith("densenet") else "bottleneck."


def head_key(layout: Layout, architecture: str, key: str) -> str:
    """The source key of this project's head tensor `key` (`encoder.<i>.<name>` or `decoder.<k>.<name>`)."""
    part, index_text, rest = key.split(".", 2)
    index = int(index_text)
    if layout.family == ORIGINAL:
        # extractor = encoder 0-3; module_seq.k = encoder.(k+4) for k <= 2, decoder.(k-3) after
        if part == "encoder":
            name = f"extractor.{index}" if index < 4 else f"module_seq.{index - 4}"
        else:
            name = f"module_seq.{index + 3}"
        return f"{'student_model.' if layout.whole else ''}{name}.{rest}"
    if layout.bottleneck_idx == 8 and part == "decoder":
        part, index = ("encoder", 7) if index == 0 else ("decoder", index - 1)
    return f"{_bottleneck_prefix(layout, architecture)}{part}.{index}.{rest}"


def count_children(keys: Iterable[str], pattern: str) -> int:
    """How many distinct numbered children `pattern` (with one `(\\d+)` group) matches among `keys`."""
    compiled = re.compile(pattern)
    return len({match.group(1) for key in keys if (match := compiled.match(key))})


def _original_tail_keys(architecture: str, tail_keys: list[str]) -> dict[str, str]:
    """The original whole model's `features.<N>.*` / `classifier.*` for each tail key (torchvision names).

    Its `features` are the teacher's modules after the split, flattened: DenseNet's dense layers one by
    one, then each transition's norm, relu, conv, pool; ResNet's blocks; Inception's Mixed blocks.
    """
    spec = get_architecture(architecture)
    classifier = spec.stages[-1]
    mapping = {}
    if architecture.startswith("densenet"):
        block3 = count_children(tail_keys, r"features\.denseblock3\.denselayer(\d+)\.")
        block4 = count_children(tail_keys, r"features\.denseblock4\.denselayer(\d+)\.")
        # transition3: norm at block3, relu, conv at block3 + 2, pool; then denseblock4, norm5
        offsets = {"transition3.norm": block3, "transition3.conv": block3 + 2, "norm5": block3 + block4 + 4}
        for key in tail_keys:
            parts = key.split(".")
            if parts[0] == classifier:
                mapping[key] = key
            elif parts[1] in ("denseblock3", "denseblock4"):
                layer = int(parts[2][len("denselayer") :])
                index = layer - 1 if parts[1] == "denseblock3" else block3 + 3 + layer
                mapping[key] = ".".join(["features", str(index), *parts[3:]])
            else:
                module = ".".join(parts[1:3]) if parts[1] == "transition3" else parts[1]
                rest = parts[3:] if parts[1] == "transition3" else parts[2:]
                mapping[key] = ".".join(["features", str(offsets[module]), *rest])
        return mapping
    blocks = [stage for stage in spec.tail_stages if stage != classifier]
    layer3 = count_children(tail_keys, r"layer3\.(\d+)\.")
    for key in tail_keys:
        stage, rest = key.split(".", 1)
        if stage == classifier:
            mapping[key] = f"classifier.{rest}"
        elif architecture.startswith("resnet"):
            block, rest = rest.split(".", 1)
            index = int(block) + (layer3 if stage == "layer4" else 0)
            mapping[key] = f"features.{index}.{rest}"
        else:
            mapping[key] = f"features.{blocks.index(stage)}.{rest}"
    return mapping


def tail_keys_map(layout: Layout, architecture: str, tail_keys: list[str]) -> dict[str, str]:
    """Project tail key (torchvision name) -> source key, for a layout that holds the tail."""
    if layout.family == ORIGINAL:
        return _original_tail_keys(architecture, tail_keys)
    if layout.family == SC2BENCH:
        # SplittableInceptionV3 keeps its Mixed blocks in `inception_modules`
        return {key: f"inception_modules.{key}" if key.startswith("Mixed_") else key for key in tail_keys}
    return {key: key for key in tail_keys}


def key_map(layout: Layout, architecture: str, head_keys: list[str], tail_keys: list[str]) -> dict[str, str]:
    """Every project key ("encoder.0.weight", ..., and the tail's when the layout holds it) -> source key.

    Keys are prefixed `head.` and `tail.` on this side, so one dict holds both parts.
    """
    mapping = {f"head.{key}": head_key(layout, architecture, key) for key in head_keys}
    if layout.whole:
        mapping |= {f"tail.{key}": value for key, value in tail_keys_map(layout, architecture, tail_keys).items()}
    return mapping
