"""The Entropic Student's head: the papers' shapes, a lossless bitstream, tables that reload bit for bit, artifacts."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

pytest.importorskip("compressai", reason='needs the entropy extra: pip install -e ".[entropy]"')

from hnd_lightning.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from hnd_lightning.methods import EntropicStudentMethod  # noqa: E402
from hnd_lightning.models import build_teacher  # noqa: E402
from hnd_lightning.models.artifacts import SPLIT_JSON, load_split_artifacts  # noqa: E402
from hnd_lightning.models.entropic import build_entropic_head, build_entropic_student  # noqa: E402
from hnd_lightning.models.split import output_shape  # noqa: E402
from hnd_lightning.models.split_schema import ArtifactError  # noqa: E402

DATA_INFO = {
    "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    "resize_size": 32,
    "classes": ["a", "b", "c"],
}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def trained_method(seed: int = 0, steps: int = 3) -> EntropicStudentMethod:
    """A stage-1 student after a few steps (its quantiles moved), coder tables built."""
    torch.manual_seed(seed)
    method = EntropicStudentMethod(build_teacher("densenet169", 3), "densenet169", 3, 32, beta=0.1)
    method.log = lambda *args, **kwargs: None
    optimizer = torch.optim.Adam(method.trainable_parameters(), lr=1e-2)
    method.train()
    for _ in range(steps):
        loss = method.stage_one_loss(torch.randn(4, 3, 32, 32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    method.eval()
    method.model.head.update()
    return method


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, EntropicStudentMethod]:
    method = trained_method()
    directory = tmp_path_factory.mktemp("entropic") / "artifacts"
    method.export_model(method.model, directory, DATA_INFO)
    return directory, method


def test_the_papers_resnet50_head_and_the_densenet169_head_restore_the_split_tensor():
    teacher = build_teacher("resnet50", 10)
    student, teacher_head = build_entropic_student(teacher, "resnet50", 24, 224)
    # sc2bench's FPBasedResNetBottleneck: 24 x 55 x 55 latent, decoder back to layer1's 256 x 56 x 56
    assert (count(student.encoder), count(student.entropy_bottleneck), count(student.decoder)) == (
        138_672,
        1_464,
        1_164_032,
    )
    assert output_shape(student.encoder, (1, 3, 224, 224)) == (1, 24, 55, 55)
    assert output_shape(student.head, (1, 3, 224, 224)) == output_shape(teacher_head, (1, 3, 224, 224))
    assert teacher_head.stage_names[-1] == "layer1" and student.tail.stage_names[0] == "layer2"
    for size, latent in ((224, (24, 14, 14)), (32, (24, 2, 2))):
        dense, dense_head = build_entropic_student(build_teacher("densenet169", 10), "densenet169", 24, size)
        assert output_shape(dense.encoder, (1, 3, size, size))[1:] == latent
        assert output_shape(dense.head, (1, 3, size, size)) == output_shape(dense_head, (1, 3, size, size))
    assert dense_head.stage_names[-1] == "features.transition2"
    with pytest.raises(ValueError, match="no head designed for inception_v3.*densenet169.*resnet50"):
        build_entropic_head("inception_v3")


def test_the_bitstream_round_trip_is_the_eval_mode_rounding_even_far_outside_the_quantiles(exported):
    head = exported[1].model.head
    latent = torch.randn(5, 24, 2, 2) * 4
    latent[0, 0, 0, 0], latent[1, 3, 1, 1] = 1e3, -2.5e3  # coded by the bypass, still lossless
    strings = head.compress(latent)
    assert len(strings) == 5 and all(isinstance(s, bytes) for s in strings)
    decoded = head.decompress(strings, latent.shape[-2:])
    assert torch.equal(decoded, head.round_latent(latent))
    medians = head.entropy_bottleneck.quantiles[:, 0, 1].reshape(1, -1, 1, 1)
    assert torch.equal(decoded, torch.round(latent - medians) + medians)
    # each image's string depends on that image only
    assert head.compress(latent[2:3]) == strings[2:3]


def test_tables_reload_bit_for_bit_into_a_model_updated_with_another_width(exported, tmp_path):
    from compressai.entropy_models import EntropyBottleneck

    source = exported[1]
    target = EntropicStudentMethod(build_teacher("densenet169", 3), "densenet169", 3, 32)
    with torch.no_grad():
        target.model.entropy_bottleneck.quantiles.mul_(4)  # a wider range: wider tables once updated
    target.model.head.update()
    widths = [m.model.entropy_bottleneck._quantized_cdf.shape[1] for m in (source, target)]
    assert widths[0] != widths[1]
    # the trap: CompressAI's own module refuses the tables of an updated model (its are empty until update())
    with pytest.raises(RuntimeError, match="size mismatch for _quantized_cdf"):
        EntropyBottleneck(24).load_state_dict(source.model.entropy_bottleneck.state_dict())
    # the whole LightningModule's state, through torch.save / torch.load as a checkpoint holds it
    torch.save(source.state_dict(), tmp_path / "state.pt")
    target.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    latent = torch.randn(3, 24, 2, 2) * 3
    assert target.model.head.compress(latent) == source.model.head.compress(latent)


def test_artifacts_hold_the_entropy_model_and_reproduce_the_bitstream(exported):
    directory, method = exported
    metadata = json.loads((directory / SPLIT_JSON).read_text())
    assert metadata["method"] == "entropic_student" and metadata["split_tensor"]["module"] == "features.transition2"
    field = metadata["entropy_bottleneck"]
    assert field["latent_shape"] == metadata["bottleneck_tensor"]["shape"] == [24, 2, 2]
    table_width = method.model.entropy_bottleneck._quantized_cdf.shape[1]
    assert field["tables"] == {"quantized_cdf": [24, table_width], "offset": [24], "cdf_length": [24]}
    with safe_open(str(directory / "head.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("entropy_bottleneck._quantized_cdf").dtype == torch.int32
    artifacts = load_split_artifacts(directory)
    assert artifacts.entropy_coded
    model = artifacts.model()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, strings = model.coded_logits(images)
        expected, expected_strings = method.model.coded_logits(images)
        assert strings == expected_strings
        torch.testing.assert_close(logits, expected, rtol=0, atol=0)
        torch.testing.assert_close(model(images), logits)  # the eval forward rounds as the coder does


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("entropy_bottleneck.tables.quantized_cdf", [24, 10**9], "quantized_cdf"),
        ("entropy_bottleneck.latent_shape", [24, 3, 3], "latent_shape"),
        ("entropy_bottleneck.channels", 12, "channels"),
        ("entropy_bottleneck.model", "compressai.GaussianConditional", "model"),
        ("entropy_bottleneck.tables.offset", [23], "tables"),
    ],
)
def test_crafted_entropy_fields_are_refused_naming_the_field(exported, tmp_path, field, value, expected):
    folder = Path(shutil.copytree(exported[0], tmp_path / "artifacts"))
    metadata = json.loads((folder / SPLIT_JSON).read_text())
    *parents, leaf = field.split(".")
    target = metadata
    for key in parents:
        target = target[key]
    target[leaf] = value
    (folder / SPLIT_JSON).write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match=expected):
        load_split_artifacts(folder)


def test_stage_two_starts_from_stage_one_and_freezes_encoder_and_entropy_model(exported):
    directory, stage_one = exported
    teacher = build_teacher("densenet169", 3)
    method = EntropicStudentMethod(teacher, "densenet169", 3, 32, stage=2, init_from=str(directory))
    for key, value in stage_one.model.head.state_dict().items():
        assert torch.equal(method.model.head.state_dict()[key], value), key
    trainable = {id(p) for p in method.trainable_parameters()}
    assert trainable == {id(p) for p in (*method.model.decoder.parameters(), *method.model.tail.parameters())}
    method.train()
    assert not method.model.encoder.training and not method.model.entropy_bottleneck.training
    assert method.model.decoder.training and method.model.tail.training
    images, labels = torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    loss = method.stage_two_loss(images, labels)
    loss.backward()
    assert all(p.grad is None for p in method.model.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.decoder.parameters())
    with pytest.raises(ValueError, match="init_from"):
        EntropicStudentMethod(teacher, "densenet169", 3, 32, stage=2)
    with pytest.raises(ValueError, match="not a stage-1 Entropic Student"):
        EntropicStudentMethod(build_teacher("resnet50", 3), "resnet50", 3, 32, stage=2, init_from=str(directory))


def test_a_missing_compressai_names_the_extra_to_install(monkeypatch):
    real_import = builtins.__import__

    def without_compressai(name, *args, **kwargs):
        if name.startswith("compressai"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_compressai)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[entropy\]"'):
        build_entropic_head("densenet169")
