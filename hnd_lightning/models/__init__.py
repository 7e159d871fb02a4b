"""Models: the paper architectures, teachers cut at their split point, and the split student."""

from hnd_lightning.models.architectures import ARCHITECTURES, Architecture, get_architecture
from hnd_lightning.models.quantization import (
    DevicePart,
    QuantizedTensor,
    ServerPart,
    dequantize,
    quantize,
    split_parts,
    with_quantized_bottleneck,
)
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
    "DevicePart",
    "QuantizedTensor",
    "ServerPart",
    "SplitModel",
    "TeacherPart",
    "TeacherWeightsUnavailable",
    "build_decoder",
    "build_encoder",
    "build_student",
    "build_teacher",
    "dequantize",
    "get_architecture",
    "load_teacher_checkpoint",
    "output_shape",
    "quantize",
    "split_parts",
    "split_teacher",
    "validate_bottleneck_channels",
    "with_quantized_bottleneck",
]
