"""Training methods: one LightningModule each over `SplitComputingMethod`."""

from hnd_lightning.methods.base import SplitComputingMethod, StudentMethod, count_parameters
from hnd_lightning.methods.fused_hnd import FusedHNDMethod, fused_method_config
from hnd_lightning.methods.hnd import HNDMethod
from hnd_lightning.methods.kd import KDMethod, distillation_loss
from hnd_lightning.methods.naive import NaiveMethod
from hnd_lightning.methods.original import OriginalMethod

__all__ = [
    "FusedHNDMethod",
    "HNDMethod",
    "KDMethod",
    "NaiveMethod",
    "OriginalMethod",
    "SplitComputingMethod",
    "StudentMethod",
    "count_parameters",
    "distillation_loss",
    "fused_method_config",
]
