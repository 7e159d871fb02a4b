"""Lightning callbacks of hnd-lightning."""

from hnd_lightning.callbacks.checkpointing import AtomicCheckpointIO, RecoveryCheckpoint
from hnd_lightning.callbacks.finite_loss import FiniteLossGuard, NonFiniteLossError
from hnd_lightning.callbacks.test_curve import EpochTestCurve

__all__ = [
    "AtomicCheckpointIO",
    "EpochTestCurve",
    "FiniteLossGuard",
    "NonFiniteLossError",
    "RecoveryCheckpoint",
]
