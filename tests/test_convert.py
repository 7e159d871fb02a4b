"""`convert`: published checkpoints of every layout and architecture in, artifacts out with the same logits;
artifacts out to sc2bench / torchdistill and back; every refusal; nothing in a file ever runs."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from convert_sources import (
    CHANNELS,
    SIZE,
    LibraryModel,
    Sources,
    original_head,
    randomize_batchnorm,
    save,
    source_file,
)
from PIL import Image
from torchvision.datasets import ImageFolder

from hnd_lightning.files import sha256_of
from hnd_lightning.models import build_student
from hnd_lightning.models.artifacts import SPLIT_JSON, load_split_artifacts, save_split_artifacts, split_metadata
from hnd_lightning.models.conversion import ConversionError, export_checkpoint, import_checkpoint
from hnd_lightning.models.imagenet import imagenet_class_names, imagenet_wnids
from hnd_lightning.runs.evaluation import check_classes, evaluate

LAYOUTS = ["original_head", "original_naive", "original_kd", "torchdistill", "sc2bench_idx7", "sc2bench_idx8"]
# every layout and every architecture stays in the default suite; the rest of the 24 is `-m slow`
DEFAULT_CASES = {
    ("densenet169", "original_head"),
    ("densenet201", "original_naive"),
    ("inception_v3", "original_kd"),
    ("densenet169", "torchdistill"),
    ("resnet152", "sc2bench_idx7"),
    ("inception_v3", "sc2bench_idx8"),
}
CASES = [
    pytest.param(arch, layout, marks=() if (arch, layout) in DEFAULT_CASES else pytest.mark.slow, id=f"{arch}-{layout}")
    for arch in SIZE
    for layout in LAYOUTS
]
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def never_download(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("torch_home")


@pytest.fixture(autouse=True)
def warm_hub(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))


@pytest.fixture(scope="module")
def sources(torch_home) -> Sources:
    return Sources(torch_home, SIZE)


def logits(model: torch.nn.Module, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return images, model(images)


@pytest.mark.parametrize(("architecture", "layout"), CASES)
def test_every_layout_converts_to_artifacts_with_the_source_models_logits(architecture, layout, sources, tmp_path):
    file, model = source_file(layout, architecture, sources, tmp_path)
    # the parts just written (load_split_artifacts reads them back in the round-trip and command tests)
    loaded = import_checkpoint(file, tmp_path / "artifacts", input_size=SIZE[architecture])
    images, expected = logits(model, SIZE[architecture])
    with torch.no_grad():
        difference = (loaded.model()(images) - expected).abs().max().item()
    print(f"\nlargest logit difference {architecture} {layout}: {difference:.3g}")
    assert difference <= TOLERANCE and (expected[0] - expected[1]).abs().max() > 1e-3  # not a constant model
    metadata = loaded.metadata
    method = {"original_head": "hnd", "original_naive": "naive", "original_kd": "kd"}.get(layout, "unknown")
    assert (metadata["architecture"], metadata["bottleneck_channels"], metadata["method"]) == (
        architecture,
        CHANNELS[architecture],
        method,
    )
    assert metadata["source"]["layout"] == layout and metadata["source"]["sha256"] == sha256_of(file)
    assert metadata["classes"] == imagenet_wnids() and metadata["class_names"] == imagenet_class_names()
    if layout == "original_head":
        cached = sources.cache_teacher(architecture)
        assert metadata["teacher"]["weights"].endswith(".IMAGENET1K_V1") and metadata["teacher"]["file"] == cached.name
        assert metadata["teacher"]["sha256"] == sha256_of(cached) and metadata["source"]["best_value"] == 66.5
    else:
        assert "teacher" not in metadata  # the tail is the file's own
    shutil.rmtree(tmp_path)  # hundreds of MB per case; pytest would keep them for three sessions


@pytest.fixture(scope="module")
def artifacts(sources, tmp_path_factory) -> Path:
    """Artifacts of a DenseNet-169 student with random weights and BN statistics, as a run exports them."""
    torch.manual_seed(3)
    student, _ = build_student(sources.teacher("densenet169"), "densenet169", 6, 32)
    randomize_batchnorm(student, torch.randn(4, 3, 32, 32), seed=5)
    directory = tmp_path_factory.mktemp("run") / "artifacts"
    metadata = split_metadata(student, "densenet169", 6, 1000, 32, "hnd", {"mean": [0.5] * 3, "std": [0.25] * 3}, 32)
    save_split_artifacts(directory, student, metadata)
    return directory


@pytest.mark.parametrize(
    ("target", "idx", "library"),
    [
        pytest.param("sc2bench", 7, "sc2bench", marks=pytest.mark.slow),  # its key table is sc2bench_idx7's import's
        ("sc2bench", 8, "sc2bench"),
        pytest.param("torchdistill", 7, "torchdistill", marks=pytest.mark.slow),
    ],
)
def test_artifacts_to_sc2bench_and_torchdistill_and_back_are_exact(artifacts, target, idx, library, sources, tmp_path):
    output = export_checkpoint(artifacts, target, tmp_path / "student.pt", bottleneck_idx=idx)
    exported = torch.load(output, weights_only=True)
    original = load_split_artifacts(artifacts)
    # the library's own module names, as its model saves them
    reference = LibraryModel(
        library, "densenet169", original_head("densenet169", 6, 0), sources.teacher("densenet169"), idx
    )
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in reference.state_dict().items()}
    back = import_checkpoint(output, tmp_path / "back", input_size=32, method="hnd")
    assert back.metadata["source"]["layout"] == (f"sc2bench_idx{idx}" if library == "sc2bench" else library)
    for part in ("head", "tail"):
        mine, theirs = getattr(original, part).state_dict(), getattr(back, part).state_dict()
        assert list(mine) == list(theirs) and all(torch.equal(mine[key], theirs[key]) for key in mine)


# ----------------------------------------------------------------- refusals
@pytest.fixture
def head_file(sources, tmp_path) -> Path:
    """The original's head-only DenseNet-169 file (B = 12), in torch 1.4's legacy format."""
    head = sources.head("densenet169")
    return save({"type": "densenet169", "model": head.state_dict(), "epoch": 3}, tmp_path / "head.pt", legacy=True)


def refused(file: Path, *patterns: str, **settings) -> str:
    existed = (file.parent / "out" / SPLIT_JSON).exists()
    with pytest.raises(ConversionError) as caught:
        import_checkpoint(file, file.parent / "out", **{"input_size": 32, **settings})
    message = str(caught.value)
    assert all(pattern in message for pattern in patterns), message
    assert existed or not (file.parent / "out" / SPLIT_JSON).exists()
    return message


class Marker:
    """Unpickling this creates `path`: what a crafted checkpoint could do with any code it gets to run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize("kind", ["pickle-protocol-2", "pickle-protocol-4", "torch-zip", "torch-legacy"])
def test_a_crafted_file_is_refused_and_its_code_never_runs(kind, tmp_path):
    marker = tmp_path / "marker"
    payload = {"model": {"x": torch.zeros(1)}, "extra": Marker(marker)}
    file = tmp_path / "crafted.pt"
    if kind.startswith("pickle"):
        file.write_bytes(pickle.dumps(payload, protocol=int(kind[-1])))
    else:
        torch.save(payload, file, _use_new_zipfile_serialization=kind == "torch-zip")
    refused(file, f"{open.__module__}.{open.__name__}")  # io.open: the payload named by the class it needs
    assert not marker.exists()
    # the payload is live: an ordinary unpickling does create the marker
    pickle.loads(pickle.dumps(Marker(tmp_path / "control")))
    assert (tmp_path / "control").exists()


def test_the_originals_pickled_mimic_module_is_refused_naming_the_head_file_to_use(tmp_path):
    # what mimic_runner.py writes (protocol 3, Python 3.6): PROTO, GLOBAL of the class, NEWOBJ, its state, BUILD
    file = tmp_path / "imagenet-densenet169_mimic-ver2b-12ch.pt"
    file.write_bytes(b"\x80\x03cmodels.mimic.densenet_mimic\nDenseNetMimic\nq\x00)\x81q\x01}q\x02b.")
    refused(file, "models.mimic.densenet_mimic.DenseNetMimic", "imagenet-densenet169_head_mimic-ver2b-12ch.pt")


def test_a_whole_pickled_module_is_refused_naming_its_class(tmp_path):
    file = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), file)
    refused(file, "torch.nn.modules.linear.Linear", "state_dict()")


def test_keys_of_no_layout_are_refused_naming_the_first_missing_and_unexpected_key(tmp_path):
    file = save(
        {"model": {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}}, tmp_path / "r.pt"
    )
    refused(file, "fit no layout", "first missing key", "first unexpected key 'conv1.weight'")


def test_the_command_line_is_checked_against_the_file(head_file, sources):
    refused(head_file, "model=resnet152", "densenet169 (its type)", architecture="resnet152")
    message = refused(head_file, "densenet169 with B=3", "'module_seq.2.weight'", bottleneck_channels=3)
    assert "[12, 64, 2, 2]" in message and "[3, 64, 2, 2]" in message
    refused(head_file, "source=sc2bench", "original_head", source="sc2bench")
    refused(head_file, "none is set", "model.teacher.weights=imagenet", teacher_weights=None)
    refused(head_file, "method=original", "['naive', 'kd', 'hnd']", method="original")
    sources.cache_teacher("densenet169")
    refused(head_file, "model.num_classes=10", "its teacher has 1000 outputs", num_classes=10)


def test_a_densenet_head_without_its_type_needs_model_and_a_damaged_tensor_is_named(sources, tmp_path):
    state = sources.head("densenet169").state_dict()
    file = save({"model": state}, tmp_path / "untyped.pt")
    refused(file, "densenet169, densenet201 alike", "model=densenet169 or model=densenet201")
    state = {**state, "module_seq.8.weight": torch.zeros(512, 512, 3, 3)}
    damaged = save({"type": "densenet169", "model": state}, tmp_path / "damaged.pt")
    refused(damaged, "'module_seq.8.weight' has shape [512, 512, 3, 3] in the file, not [512, 512, 2, 2]")
    aux = save({"model": {"head_modules.0.weight": torch.zeros(64, 3, 7, 7)}}, tmp_path / "aux.pt")
    refused(aux, "use_aux=True")
    text = save({"model": {"extractor.0.weight": "not a tensor"}}, tmp_path / "text.pt")
    refused(text, "'extractor.0.weight'", "is a str, not a tensor")


def test_existing_artifacts_are_kept_unless_overwrite(head_file, sources):
    sources.cache_teacher("densenet169")
    first = import_checkpoint(head_file, head_file.parent / "out", input_size=32)
    refused(head_file, "already holds split.json", "overwrite=true")
    again = import_checkpoint(head_file, head_file.parent / "out", input_size=32, overwrite=True, method="kd")
    assert first.metadata["method"] == "hnd" and again.metadata["method"] == "kd"


def ilsvrc_folder(root: Path, splits: tuple[tuple[str, int], ...] = (("train", 2), ("val", 1))) -> Path:
    """An ILSVRC 2012 layout in miniature: one folder per wnid under train/ and val/, tiny images."""
    image = Image.new("RGB", (8, 8), (120, 60, 30))
    for split, count in splits:
        for wnid in imagenet_wnids():
            (root / split / wnid).mkdir(parents=True)
            for index in range(count):
                image.save(root / split / wnid / f"{wnid}_{index}.JPEG")
    return root


def run_convert(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hnd_lightning.convert", f"paths.output_root={tmp_path / 'outputs'}", *overrides]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "HYDRA_FULL_ERROR": "1"}, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory) -> tuple[Path, str]:
    """An sc2bench file converted by the command, B and architecture checked, the method stated."""
    tmp_path = tmp_path_factory.mktemp("command")
    file, _ = source_file("sc2bench_idx8", "densenet169", sources, tmp_path)
    artifacts = tmp_path / "artifacts"
    settings = ["model=densenet169", "model.bottleneck_channels=12", "model.input_size=32", "method=hnd"]
    done = run_convert(tmp_path, f"checkpoint={file}", f"output_dir={artifacts}", *settings)
    return artifacts, done.stdout


def test_the_command_converts_a_file_into_artifacts(converted):
    artifacts, stdout = converted
    assert "(sc2bench_idx8): densenet169 hnd B=12" in stdout
    metadata = load_split_artifacts(artifacts).metadata
    assert (metadata["method"], metadata["source"]["layout"], metadata["input"]["shape"]) == (
        "hnd",
        "sc2bench_idx8",
        [3, 32, 32],
    )


def test_ilsvrc_class_folders_are_the_converted_classes_in_label_order(tmp_path):
    folder = ilsvrc_folder(tmp_path, (("val", 1),))
    found = ImageFolder(folder / "val").classes  # what the ImageFolder DataModule labels by
    assert found == imagenet_wnids() and len(set(found)) == 1000
    check_classes(imagenet_wnids(), found, allow_relabelled=False)


@pytest.mark.slow
def test_the_command_writes_torchdistill_and_evaluate_takes_converted_artifacts_on_ilsvrc_folders(converted, tmp_path):
    artifacts, _ = converted
    run_convert(tmp_path, f"artifacts={artifacts}", "target=torchdistill", f"output={tmp_path / 'torchdistill.pt'}")
    assert "features.bottleneck.decoder.2.weight" in torch.load(tmp_path / "torchdistill.pt", weights_only=True)
    # ILSVRC 2012's class folders are the converted model's classes: no allow_relabelled needed
    overrides = [
        f"artifacts={artifacts}",
        f"data.root={ilsvrc_folder(tmp_path / 'ilsvrc')}",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.holdout=1",
        "data.eval_batch_size=2",
        "trainer.accelerator=cpu",
        "trainer.limit_test_batches=1",
    ]
    results = evaluate(compose_config("evaluate", overrides, tmp_path / "evaluation"))
    assert results["method"] == "hnd" and results["images"] == 2 and 0 <= results["metrics"]["test/acc1"] <= 1
