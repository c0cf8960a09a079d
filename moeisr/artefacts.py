"""Names of the files the pipelines write into a results folder and the report reads back: one definition for
both sides, which may not import each other (docs/architecture.md)."""

MAIN_CSV = "main.csv"  # the main grid's tidy rows
RUN_FILE = "run.json"  # provenance, grid, checks and picture index of a `reproduce` run
RECHECK_CSV = "reproduction.csv"  # the sampled recheck, row by row
TIMINGS_FILE = "timings.json"
ABLATION_RAW_CSVS = ("rows", "matched", "sweep")  # results/ablations/<name>.csv, the ablation pipeline's raw rows
ABLATION_META_FILE = "meta.json"  # results/ablations/meta.json, the ablation rows' metadata
ABLATION_HELDOUT_CSV = "heldout"  # results/ablations/<suite>/heldout.csv: a selecting suite's held-out measurements
SPEEDUPS_CSV = "speedups.csv"  # `moeisr speedups`: measured wall-clock speed-ups per cell of the main grid
