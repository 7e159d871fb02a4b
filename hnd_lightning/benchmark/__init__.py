"""Benchmarking every method on one batch (`python -m hnd_lightning.bench`), by concern:

- `settings`: the checked options, dtype / autocast, and what the numbers depend on;
- `steps`: the step timing harness (a Lightning step between two `on_train_batch_end` hooks, a
  plain loop step, both over one repeated batch);
- `subjects`: what is measured (each method's Lightning step, the plain PyTorch HND step, the
  student's parts at inference), built once;
- `memory`: peak memory of a subject's turn;
- `data`: images/s of JPEG decoding + augmentation per DataLoader worker count;
- `report`: result records, paired speed ratios, the table;
- `run`: interleaved rounds over the subjects, composing the above.
"""
