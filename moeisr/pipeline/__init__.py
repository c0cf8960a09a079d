"""The pipeline layer: the steps that `moeisr reproduce` and `moeisr ablations` share (train-or-reuse, the
evaluation grid, stage timings), each pipeline a short script over them. It sits above train and evaluate and
below report and the commands (docs/architecture.md)."""
