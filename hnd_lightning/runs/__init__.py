"""Run bookkeeping, between the core (models, methods, data, callbacks) and the commands.

training.py       one training run: build, fit, test the best weights, export, record
record.py         results.json: statuses, strict atomic writing, reading
resume.py         resume=auto: which checkpoint continues a run, and whether it belongs to it
export.py         the artifacts of the weights just tested
evaluation.py     `evaluate`: a LightningModule from artifacts, tested by a Trainer
teachers.py       a pipeline's teacher: the bundled one, or one trained and cached under a lock
pipeline.py       multi-stage experiments (quickstart, compare, bottlenecks); pipeline_rows.py their rows
sweep.py          a multirun's Hydra callback and summary; sweep_rows.py / sweep_jobs.py its rows and job list
"""
