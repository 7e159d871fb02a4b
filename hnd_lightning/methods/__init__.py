"""Methods: one LightningModule each over `SplitComputingMethod` (training methods, and a loaded split for evaluation)."""

from hnd_lightning.methods.base import SplitComputingMethod
from hnd_lightning.methods.entropic_student import EntropicStudentMethod
from hnd_lightning.methods.evaluation import count_parameters, student_name
from hnd_lightning.methods.fused_hnd import FusedHNDMethod
from hnd_lightning.methods.ghnd import FusedGHNDMethod, GHNDMethod
from hnd_lightning.methods.hnd import HNDMethod
from hnd_lightning.methods.kd import KDMethod, distillation_loss
from hnd_lightning.methods.loaded import LoadedSplitModel
from hnd_lightning.methods.naive import NaiveMethod
from hnd_lightning.methods.original import OriginalMethod
from hnd_lightning.methods.student import StudentMethod

__all__ = [
    "EntropicStudentMethod",
    "FusedGHNDMethod",
    "FusedHNDMethod",
    "GHNDMethod",
    "HNDMethod",
    "KDMethod",
    "LoadedSplitModel",
    "NaiveMethod",
    "OriginalMethod",
    "SplitComputingMethod",
    "StudentMethod",
    "count_parameters",
    "distillation_loss",
    "student_name",
]
