"""Architectures, shapes at the papers' input sizes, the split point and teacher weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from torchvision.models._api import WeightsEnum

from hnd_lightning.models import (
    ARCHITECTURES,
    TeacherWeightsUnavailable,
    build_student,
    build_teacher,
    get_architecture,
    split_teacher,
)

# architecture -> (paper input size, bottleneck side, teacher split tensor shape)
PAPER_SHAPES = {
    "densenet169": (224, 29, (256, 14, 14)),
    "densenet201": (224, 29, (256, 14, 14)),
    "resnet50": (224, 29, (512, 28, 28)),
    "resnet152": (224, 29, (512, 28, 28)),
    "inception_v3": (299, 37, (192, 35, 35)),
}


@pytest.mark.parametrize("architecture", sorted(PAPER_SHAPES))
def test_paper_shapes(architecture):
    input_size, side, split_shape = PAPER_SHAPES[architecture]
    teacher = build_teacher(architecture, num_classes=1000)
    student, teacher_head = build_student(teacher, architecture, bottleneck_channels=12, input_size=input_size)
    student.eval()
    x = torch.randn(1, 3, input_size, input_size)
    with torch.no_grad():
        bottleneck = student.encoder(x)
        restored = student.decoder(bottleneck)
        assert bottleneck.shape == (1, 12, side, side)
        assert restored.shape == (1, *split_shape)
        assert teacher_head(x).shape == (1, *split_shape)
        torch.testing.assert_close(student(x), student.tail(student.head(x)))
        assert student(x).shape == (1, 1000)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_teacher_split_reproduces_teacher_and_keeps_torchvision_names(architecture):
    size = 75 if architecture == "inception_v3" else 64
    teacher = build_teacher(architecture, num_classes=5)
    head, tail = split_teacher(teacher, architecture)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(tail(head(x)), teacher(x))
    teacher_state = teacher.state_dict()
    assert set(head.state_dict()) | set(tail.state_dict()) == set(teacher_state)
    # both parts of another (differently initialized) teacher load these weights strictly, under the
    # teacher's own key names, and then compute what the teacher computes
    fresh_head, fresh_tail = split_teacher(build_teacher(architecture, num_classes=5), architecture)
    with torch.no_grad():
        assert not torch.allclose(fresh_tail(fresh_head(x)), teacher(x))
    for part, fresh in ((head, fresh_head), (tail, fresh_tail)):
        assert set(part.state_dict()) <= set(teacher_state)
        fresh.load_state_dict({key: teacher_state[key] for key in part.state_dict()}, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh_tail(fresh_head(x)), teacher(x))


def test_teacher_head_computes_nothing_past_the_split():
    teacher = build_teacher("densenet169", num_classes=5)
    head, tail = split_teacher(teacher, "densenet169")
    called = []
    for name in get_architecture("densenet169").tail_stages:
        teacher.get_submodule(name).register_forward_hook(lambda *args, name=name: called.append(name))
    with torch.no_grad():
        head(torch.randn(1, 3, 64, 64))
    assert called == []
    assert head.stage_names[-1] == "features.transition2"
    assert "features.denseblock3" not in dict(head.named_modules())


def test_student_tail_is_a_copy_of_the_teacher_tail():
    teacher = build_teacher("resnet152", num_classes=4)
    student, _ = build_student(teacher, "resnet152", 6, 32)
    _, teacher_tail = split_teacher(teacher, "resnet152")
    for key, value in teacher_tail.state_dict().items():
        assert torch.equal(student.tail.state_dict()[key], value)
        assert student.tail.state_dict()[key].data_ptr() != value.data_ptr()


@pytest.mark.parametrize("bad", [0, -3, 2.5, "twelve", True])
def test_bad_bottleneck_size_is_rejected(bad):
    with pytest.raises(ValueError, match="bottleneck_channels must be a positive integer"):
        build_student(build_teacher("densenet169", 3), "densenet169", bad, 64)


def test_bad_architecture_lists_supported_ones():
    with pytest.raises(ValueError, match="Unknown architecture 'vgg16'.*densenet169.*resnet152"):
        build_teacher("vgg16", 10)


def test_unsupported_input_size_names_both_shapes():
    teacher = build_teacher("resnet152", 3)
    with pytest.raises(ValueError, match=r"decoder outputs \(512, 12, 12\).*layer2 is \(512, 13, 13\)"):
        build_student(teacher, "resnet152", 12, 100)


def test_too_small_input_fails_clearly():
    with pytest.raises(ValueError, match="inception_v3 cannot run at input size 16"):
        build_student(build_teacher("inception_v3", 3), "inception_v3", 12, 16)


def test_unreachable_imagenet_weights_name_the_alternatives(monkeypatch, tmp_path):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(TeacherWeightsUnavailable) as error:
        build_teacher("densenet169", 1000, weights="imagenet")
    assert "model.teacher.weights=null" in str(error.value)
    assert "model.teacher.checkpoint=PATH" in str(error.value)


def test_unknown_weights_value_is_rejected():
    with pytest.raises(ValueError, match="Unknown teacher weights 'imagenet21k'"):
        build_teacher("densenet169", 10, weights="imagenet21k")
