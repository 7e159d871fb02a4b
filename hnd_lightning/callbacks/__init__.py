"""Lightning callbacks of hnd-lightning."""

from hnd_lightning.callbacks.export import SplitArtifactExport
from hnd_lightning.callbacks.test_curve import EpochTestCurve

__all__ = ["EpochTestCurve", "SplitArtifactExport"]
