"""Run bookkeeping: one training run (`training`), its record (`record`), multi-stage pipelines
(`pipeline`), sweeps and their summary (`sweep`), and evaluation helpers (`evaluation`)."""
