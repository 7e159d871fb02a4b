"""Published HND checkpoints in and out: the original code's, torchdistill 0.3.3's and sc2bench's.

- `safe_load`: reading a file without running its code (refusals name the class it would need);
- `layouts`: the key layouts and the one key table both directions use;
- `detect`: which layout, architecture, B and class count a file holds, checked tensor by tensor;
- `importer`: a checkpoint -> this project's artifacts (`python -m hnd_lightning.convert checkpoint=...`);
- `export`: artifacts -> a torchdistill or sc2bench state dict (`convert artifacts=... target=...`).
"""

from hnd_lightning.models.conversion.export import export_checkpoint
from hnd_lightning.models.conversion.importer import import_checkpoint
from hnd_lightning.models.conversion.layouts import FAMILIES, LAYOUTS, Layout, key_map
from hnd_lightning.models.conversion.safe_load import ConversionError, load_checkpoint

__all__ = [
    "FAMILIES",
    "LAYOUTS",
    "ConversionError",
    "Layout",
    "export_checkpoint",
    "import_checkpoint",
    "key_map",
    "load_checkpoint",
]
