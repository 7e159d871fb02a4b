"""Models in the layouts of the original HND code, torchdistill 0.3.3 and sc2bench, built here for the tests.

Each is an nn.Module whose attribute names give exactly the keys its library saves, with its own forward
(the original's flattened DenseNet concatenates layer by layer, as its torchvision 0.5 did), built from
a torchvision teacher with random weights and random BatchNorm statistics, so a wrong key mapping shows
in the logits. The heads are written from the original's design (CHECKPOINTS_REFERENCE, section 0 and
1.2), not from this project's builders.
"""

from __future__ import annotations

import argparse
import collections
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models as tv_models
from torchvision.models.densenet import _DenseLayer

# The original's module_seq after BN64, ReLU, Conv 64->B: (out channels, padding) per 2x2 conv, then AvgPool
HEAD_CONVS = {
    "densenet169": ([(512, 1), (512, 1), (256, 0), (256, 0), (256, 0)], (2, 2)),
    "densenet201": ([(512, 1), (512, 1), (256, 0), (256, 0), (256, 0)], (2, 2)),
    "resnet152": ([(512, 1), (512, 1), (512, 0), (512, 0)], (2, 1)),
    "inception_v3": ([(256, 1), (256, 0), (192, 0)], (2, 1)),
}
MIXED = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]
MIXED += ["Mixed_7a", "Mixed_7b", "Mixed_7c"]
# torchvision's V1 file names: what `model.teacher.weights=imagenet` must read from the hub cache
# Test inputs: the smallest whose split shapes the project's students reproduce (Inception-v3 needs 75)
SIZE = {"densenet169": 32, "densenet201": 32, "resnet152": 32, "inception_v3": 75}
# a different B per architecture, so B is read from the file and not assumed
CHANNELS = {"densenet169": 12, "densenet201": 3, "resnet152": 6, "inception_v3": 9}
V1_FILES = {
    "densenet169": "densenet169-b2777c0a.pth",
    "densenet201": "densenet201-c1103571.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet152": "resnet152-394f9c45.pth",
    "inception_v3": "inception_v3_google-0cc3c7bd.pth",
}


def randomize_batchnorm(model: nn.Module, images: torch.Tensor, seed: int) -> nn.Module:
    """Random affine parameters and running statistics in every BatchNorm of `model`, so a wrong mapping
    shows: the statistics are those `images` produce (one pass in training mode), each then scaled by a
    random factor, which keeps the logits of order 1 and dependent on the input through 150 layers."""
    generator = torch.Generator().manual_seed(seed)
    layers = [layer for layer in model.modules() if isinstance(layer, nn.BatchNorm2d)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.uniform_(0.5, 1.5, generator=generator)
            layer.bias.normal_(0, 0.2, generator=generator)
            layer.momentum = 1.0  # running statistics := this batch's
        model.train()
        model(images)
        model.eval()
        for layer in layers:
            layer.momentum = 0.1
            layer.running_var.mul_(torch.empty_like(layer.running_var).uniform_(0.8, 1.2, generator=generator))
            layer.running_mean.add_(torch.empty_like(layer.running_mean).normal_(0, 0.05, generator=generator))
            layer.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
    return model


def random_teacher(architecture: str, seed: int) -> nn.Module:
    """A torchvision teacher with random weights (Inception with its AuxLogits, as the ImageNet file has);
    `randomize_batchnorm` of the composed source model gives its BatchNorms their statistics."""
    torch.manual_seed(seed)
    if architecture == "inception_v3":
        teacher = tv_models.inception_v3(weights=None, aux_logits=True, init_weights=True, transform_input=False)
    else:
        teacher = getattr(tv_models, architecture)(weights=None)
    return teacher.eval()


class OriginalHead(nn.Module):
    """The original's `*HeadMimic`: `extractor` (conv 7x7, BN, ReLU, maxpool) and `module_seq` (ver2b / ver1b)."""

    def __init__(self, architecture: str, bottleneck_channels: int) -> None:
        super().__init__()
        padding = 0 if architecture == "inception_v3" else 1
        self.extractor = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3 * padding, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, padding)
        )
        convs, (pool_kernel, pool_stride) = HEAD_CONVS[architecture]
        layers = [nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, bottleneck_channels, 2, 2, 1, bias=False)]
        channels = bottleneck_channels
        for out, pad in convs:
            layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, out, 2, 1, pad, bias=False)]
            channels = out
        self.module_seq = nn.Sequential(*layers, nn.AvgPool2d(pool_kernel, pool_stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module_seq(self.extractor(x))


def original_head(architecture: str, bottleneck_channels: int, seed: int) -> nn.Module:
    """An `OriginalHead` with random weights (its BatchNorms: `randomize_batchnorm` of the composed model)."""
    torch.manual_seed(seed)
    return OriginalHead(architecture, bottleneck_channels).eval()


class HeadThenTeacher(nn.Module):
    """An original head followed by the teacher's tail: what a head-only file plus its teacher compute."""

    def __init__(self, architecture: str, head: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.architecture, self.head, self.teacher = architecture, head, teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tail_forward(self.architecture, self.teacher, self.head(x))


def head_modules(head: nn.Module) -> list[nn.Module]:
    """The head as torchdistill's and sc2bench's module list: the extractor, then module_seq."""
    return [*head.extractor, *head.module_seq]


def tail_forward(architecture: str, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The teacher from its split point on, written out as torchvision's forward does it."""
    if architecture.startswith("densenet"):
        features = teacher.features
        for name in ("denseblock3", "transition3", "denseblock4", "norm5"):
            x = getattr(features, name)(x)
        return teacher.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(x), 1), 1))
    names = ["layer3", "layer4"] if architecture == "resnet152" else MIXED
    for name in names:
        x = getattr(teacher, name)(x)
    return teacher.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Bottleneck(nn.Module):
    """torchdistill's BottleneckBase / sc2bench's SimpleBottleneck: the module list cut at `idx`."""

    def __init__(self, modules: list[nn.Module], idx: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(*modules[:idx])
        self.decoder = nn.Sequential(*modules[idx:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class OriginalMimic(nn.Module):
    """The original's whole `*Mimic` model: `student_model`, the teacher's tail flattened into `features`
    (param-free modules included, so the indices are the original's), and `classifier`."""

    def __init__(self, architecture: str, head: nn.Module, teacher: nn.Module, original_pool: bool = False) -> None:
        super().__init__()
        self.student_model = head
        # the original pools DenseNet and ResNet with AvgPool2d(7) (at 224 only); adaptive pooling elsewhere
        pool = (
            nn.AvgPool2d(7, 1)
            if original_pool and not architecture.startswith("inception")
            else nn.AdaptiveAvgPool2d(1)
        )
        if architecture.startswith("densenet"):
            f = teacher.features
            modules = [*f.denseblock3.children(), *f.transition3.children(), *f.denseblock4.children(), f.norm5]
            modules += [nn.ReLU(), pool]
            classifier = teacher.classifier
        elif architecture == "resnet152":
            modules = [*teacher.layer3.children(), *teacher.layer4.children(), pool]
            classifier = teacher.fc
        else:
            modules = [*(getattr(teacher, name) for name in MIXED), pool, nn.Dropout()]
            classifier = teacher.fc
        self.features = nn.Sequential(*modules)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.student_model(x)
        for module in self.features:
            # torchvision 0.5's dense layer returned its input and its new features concatenated
            x = torch.cat([x, module(x)], 1) if isinstance(module, _DenseLayer) else module(x)
        return self.classifier(x.view(x.size(0), -1))


class LibraryModel(nn.Module):
    """torchdistill 0.3.3's `custom_*` or sc2bench's `splittable_*` model, by its module names."""

    def __init__(self, library: str, architecture: str, head: nn.Module, teacher: nn.Module, idx: int = 7) -> None:
        super().__init__()
        self.architecture, self.teacher = architecture, [teacher]  # a list: not registered, no keys
        bottleneck = Bottleneck(head_modules(head), idx)
        dense_torchdistill = library == "torchdistill" and architecture.startswith("densenet")
        self.bottleneck_path = "features.bottleneck" if dense_torchdistill else "bottleneck"
        if library == "sc2bench":
            self.bottleneck_path = "bottleneck_layer"
        if architecture.startswith("densenet"):
            f = teacher.features
            tail = OrderedDict(
                (name, getattr(f, name)) for name in ("denseblock3", "transition3", "denseblock4", "norm5")
            )
            if library == "torchdistill":
                self.features = nn.Sequential(OrderedDict(bottleneck=bottleneck, **tail))
            else:
                self.bottleneck_layer, self.features = bottleneck, nn.Sequential(tail)
            self.classifier = teacher.classifier
        else:
            setattr(self, "bottleneck" if library == "torchdistill" else "bottleneck_layer", bottleneck)
            names = ["layer3", "layer4"] if architecture == "resnet152" else MIXED
            if library == "sc2bench" and architecture == "inception_v3":
                self.inception_modules = nn.Sequential(OrderedDict((name, getattr(teacher, name)) for name in names))
            else:
                for name in names:
                    setattr(self, name, getattr(teacher, name))
            self.fc = teacher.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tail_forward(self.architecture, self.teacher[0], self.get_submodule(self.bottleneck_path)(x))


def kd_extras(architecture: str, bottleneck_channels: int, library: str) -> dict:
    """What KD / torchdistill / sc2bench checkpoints hold besides `model`: optimizer, scheduler, config, args."""
    parameter = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([parameter], lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[5, 10, 15])
    extras = {"optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(), "best_value": 71.5}
    assert isinstance(extras["lr_scheduler"]["milestones"], collections.Counter)
    if library == "original":
        config = {
            "student_model": {
                "type": f"{architecture}_head_mimic",
                "params": {"bottleneck_channel": bottleneck_channels},
            },
            "mimic_model": {"type": f"{architecture}_mimic"},
        }
        extras |= {"config": config, "args": argparse.Namespace(config="kd.yaml", device="cuda", test_only=False)}
    elif library == "torchdistill":
        student = {"name": f"custom_{architecture}", "params": {"bottleneck_channel": bottleneck_channels}}
        extras |= {"config": {"models": {"student_model": student}}, "args": argparse.Namespace(config="hnd.yaml")}
    else:
        extras |= {"args": argparse.Namespace(config="ghnd.yaml", json=None, device="cuda")}
    return extras


def save(content, path: Path, legacy: bool = False) -> Path:
    """torch.save `content` to `path` (`legacy`: the pre-1.6 format torch 1.4 wrote, as the original's files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path, _use_new_zipfile_serialization=not legacy)
    return path


def legacy_teacher_state(architecture: str, teacher: nn.Module) -> dict[str, torch.Tensor]:
    """The teacher's weights as torchvision's V1 file holds them: DenseNet's pre-2018 key names
    (`norm1.weight` -> `norm.1.weight`) without BN counters; Inception's AuxLogits kept."""
    state = teacher.state_dict()
    if not architecture.startswith("densenet"):
        return dict(state)
    legacy = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if "denselayer" in key and parts[-2][-1] in "12" and parts[-2][:-1] in ("norm", "relu", "conv"):
            key = ".".join([*parts[:-2], parts[-2][:-1], parts[-2][-1], parts[-1]])
        legacy[key] = value
    return legacy


class Sources:
    """Random teachers and original heads per architecture (BatchNorm statistics for inputs of `sizes`), built once."""

    def __init__(self, torch_home: Path, sizes: dict[str, int]) -> None:
        self.torch_home, self.sizes, self.teachers, self.heads = torch_home, sizes, {}, {}

    def _build(self, architecture: str) -> None:
        seed = len(self.teachers)
        teacher = random_teacher(architecture, seed)
        head = original_head(architecture, CHANNELS[architecture], seed + 100)
        images = torch.randn(
            4, 3, self.sizes[architecture], self.sizes[architecture], generator=torch.Generator().manual_seed(seed)
        )
        randomize_batchnorm(HeadThenTeacher(architecture, head, teacher), images, seed + 200)
        self.teachers[architecture], self.heads[architecture] = teacher, head

    def teacher(self, architecture: str) -> torch.nn.Module:
        if architecture not in self.teachers:
            self._build(architecture)
        return self.teachers[architecture]

    def head(self, architecture: str) -> torch.nn.Module:
        if architecture not in self.heads:
            self._build(architecture)
        return self.heads[architecture]

    def cache_teacher(self, architecture: str) -> Path:
        """torchvision's V1 file of the teacher in the hub cache, with the real file's key names."""
        path = self.torch_home / "hub" / "checkpoints" / V1_FILES[architecture]
        if not path.is_file():
            save(legacy_teacher_state(architecture, self.teacher(architecture)), path)
        return path


def source_file(
    layout: str, architecture: str, sources: Sources, directory: Path, original_pool: bool = False
) -> tuple[Path, nn.Module]:
    """A file in `layout` and the model it holds (for a head-only file: head, then the teacher's tail, whose
    torchvision V1 file goes into the hub cache). `original_pool`: the original's AvgPool2d(7) (at 224)."""
    head, teacher, channels = sources.head(architecture), sources.teacher(architecture), CHANNELS[architecture]
    if layout == "original_head":
        content = {"type": architecture, "model": head.state_dict(), "epoch": 20, "best_valid_value": 66.5}
        model = HeadThenTeacher(architecture, head, teacher)
        sources.cache_teacher(architecture)
    elif layout.startswith("original"):
        model = OriginalMimic(architecture, head, teacher, original_pool)
        extras = kd_extras(architecture, channels, "original") if layout == "original_kd" else {"acc": 70.5}
        content = {"type": f"{architecture}_mimic", "epoch": 19, **extras} if layout == "original_naive" else extras
        content = {**content, "model": model.state_dict()}
    else:
        library = layout.split("_")[0]
        model = LibraryModel(library, architecture, head, teacher, idx=8 if layout.endswith("8") else 7)
        # torchdistill: a full checkpoint; sc2bench idx 7: the bare state dict its load_ckpt also reads
        bare = layout == "sc2bench_idx7"
        content = (
            model.state_dict() if bare else {"model": model.state_dict(), **kd_extras(architecture, channels, library)}
        )
    return save(content, directory / f"{architecture}-{layout}.pt", legacy=layout.startswith("original")), model.eval()
