"""Models: the paper architectures, teachers cut at their split point, and the split student."""

from hnd_lightning.models.architectures import ARCHITECTURES, Architecture, get_architecture
from hnd_lightning.models.split import (
    SplitModel,
    build_decoder,
    build_encoder,
    build_student,
    output_shape,
    validate_bottleneck_channels,
)
from hnd_lightning.models.teacher import (
    TeacherPart,
    TeacherWeightsUnavailable,
    build_teacher,
    load_teacher_checkpoint,
    split_teacher,
)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "SplitModel",
    "TeacherPart",
    "TeacherWeightsUnavailable",
    "build_decoder",
    "build_encoder",
    "build_student",
    "build_teacher",
    "get_architecture",
    "load_teacher_checkpoint",
    "output_shape",
    "split_teacher",
    "validate_bottleneck_channels",
]
