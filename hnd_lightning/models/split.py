"""The bottleneck-injected student: encoder (device) -> bottleneck tensor -> decoder (server) -> tail."""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from hnd_lightning.models.architectures import Architecture, get_architecture
from hnd_lightning.models.teacher import TeacherPart, split_teacher


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def build_encoder(architecture: Architecture, bottleneck_channels: int) -> nn.Sequential:
    """Device-side encoder: (N, 3, H, W) image -> (N, B, h, w) bottleneck tensor (B x 29 x 29 at 224)."""
    return nn.Sequential(
        *_conv_bn_relu(3, 64, 7, 2, architecture.encoder_first_padding),
        nn.MaxPool2d(3, 2, architecture.encoder_pool_padding),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, bottleneck_channels, 2, 2, 1, bias=False),
    )


def build_decoder(architecture: Architecture, bottleneck_channels: int) -> nn.Sequential:
    """Server-side decoder: (N, B, h, w) bottleneck tensor -> the teacher's split tensor shape."""
    layers: list[nn.Module] = [nn.BatchNorm2d(bottleneck_channels), nn.ReLU(inplace=True)]
    in_channels = bottleneck_channels
    convs = architecture.decoder.convs
    for index, (out_channels, kernel, stride, padding) in enumerate(convs):
        if index < len(convs) - 1:
            layers += _conv_bn_relu(in_channels, out_channels, kernel, stride, padding)
        else:
            layers.append(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False))
        in_channels = out_channels
    layers.append(nn.AvgPool2d(architecture.decoder.pool_kernel, architecture.decoder.pool_stride))
    return nn.Sequential(*layers)


@torch.no_grad()
def output_shape(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of `module`'s output for a zero input of `input_shape`, leaving the module's mode as it was."""
    was_training = module.training
    module.eval()
    try:
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else "cpu"
        return tuple(module(torch.zeros(input_shape, device=device)).shape)
    finally:
        module.train(was_training)


class SplitModel(nn.Module):
    """A classifier split for split computing.

    Parts: `encoder` (device side, image -> bottleneck tensor), `decoder` (server side, bottleneck
    tensor -> teacher's split tensor), `head` = encoder + decoder (what HND trains) and `tail` (the
    teacher's modules after the split point, torchvision names). `forward(x) == tail(head(x))`.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, tail: nn.Module) -> None:
        super().__init__()
        self.head = nn.Sequential(OrderedDict(encoder=encoder, decoder=decoder))
        self.tail = tail

    @property
    def encoder(self) -> nn.Module:
        return self.head.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.head.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.head(x))


def validate_bottleneck_channels(bottleneck_channels: object) -> int:
    if isinstance(bottleneck_channels, bool) or not isinstance(bottleneck_channels, int) or bottleneck_channels < 1:
        raise ValueError(
            f"model.bottleneck_channels must be a positive integer (the papers use 3, 6, 9 or 12), "
            f"got {bottleneck_channels!r}."
        )
    return bottleneck_channels


def build_student(
    teacher: nn.Module,
    architecture: str,
    bottleneck_channels: int,
    input_size: int,
) -> tuple[SplitModel, TeacherPart]:
    """Inject a bottleneck into `teacher`'s head.

    Args:
        teacher: a torchvision teacher from `build_teacher`; it is not modified.
        architecture: its architecture name.
        bottleneck_channels: B, channels of the tensor sent over the link.
        input_size: square input side (224; 299 for Inception-v3), used to check that the decoder
            restores exactly the teacher's split tensor.

    Returns:
        (student, teacher_head): the student's tail is a copy of the teacher's tail; `teacher_head`
        shares the teacher's modules and computes nothing past the split point.

    Raises:
        ValueError: when the decoder output does not match the teacher's split tensor at this input size.
    """
    spec = get_architecture(architecture)
    validate_bottleneck_channels(bottleneck_channels)
    teacher_head, teacher_tail = split_teacher(teacher, architecture)
    student = SplitModel(
        build_encoder(spec, bottleneck_channels),
        build_decoder(spec, bottleneck_channels),
        copy.deepcopy(teacher_tail),
    )
    supported = (
        f"The paper input size is {spec.input_size}; DenseNet and ResNet also work at multiples of 32, "
        f"Inception-v3 at sizes such as 75, 139 and 299."
    )
    image_shape = (1, 3, input_size, input_size)
    try:
        teacher_shape = output_shape(teacher_head, image_shape)
        student_shape = output_shape(student.head, image_shape)
    except RuntimeError as error:
        raise ValueError(f"{architecture} cannot run at input size {input_size} ({error}). {supported}") from error
    if teacher_shape != student_shape:
        raise ValueError(
            f"{architecture} at input size {input_size}: the student decoder outputs {student_shape[1:]} "
            f"but the teacher's tensor at {spec.split_module} is {teacher_shape[1:]}. {supported}"
        )
    return student, teacher_head
