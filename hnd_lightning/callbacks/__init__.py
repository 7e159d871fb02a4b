"""Lightning callbacks of hnd-lightning."""

from hnd_lightning.callbacks.export import SplitArtifactExport

__all__ = ["SplitArtifactExport"]
