"""Split-computing analysis (`python -m hnd_lightning.analyze`), by concern:

- `parts`: the split under analysis (HND student and teacher cut at the split module), from a run's
  artifacts or the model config;
- `payload`: bytes per image on the link (input, JPEG, bottleneck, teacher split tensor);
- `report`: compute and latency per part, one side's report, device + server combined;
- `latency`: the latency model of the three offloading strategies (also used by the split client);
- `output`: analysis.md, analysis.json, the plot, the timings files;
- `roles`: the device / server / combine protocol that composes the above.
"""
