"""Split-computing analysis: compute, payload and latency of the HND split against the teacher's.

    python -m hnd_lightning.analyze model=densenet169 model.bottleneck_channels=12
    python -m hnd_lightning.analyze artifacts=outputs/runs/<date>/<time>/artifacts

For the HND student split (device: encoder + 8-bit quantization; server: dequantization + decoder +
tail) and the teacher split at the same module (device: teacher head; server: teacher tail) it
reports parameters and multiply-accumulates per part, the payload per image (float32, float16,
8-bit; against the raw uint8 image and its JPEG), the parts' latency on this machine, and the
end-to-end latency per link bandwidth of three strategies: all on the device (whole teacher), all on
the server (the JPEG is sent, whole teacher), and the HND split (8-bit bottleneck sent).

The device is usually not the machine that trains, so timing can run separately:

    python -m hnd_lightning.analyze role=device ...   # on the device: writes timings_device.json
    python -m hnd_lightning.analyze role=server ...   # on the server: writes timings_server.json
    python -m hnd_lightning.analyze role=combine device_timings=PATH server_timings=PATH

`role=both` (default) times everything here and combines at once. Outputs in the run directory
(`outputs/analyze/<date>/<time>/`): analysis.md (the tables), analysis.json, latency_vs_bandwidth.png.
Counts and timings do not depend on weight values, so without `artifacts` the teacher and student
have random weights and nothing is downloaded. The pieces live in `hnd_lightning/analysis/`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hnd_lightning.analysis.roles import analyze


@hydra.main(version_base="1.3", config_path="../conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    analyze(cfg)


if __name__ == "__main__":
    main()
