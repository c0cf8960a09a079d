"""The ablation suite (issue 8): factor rows fine-tuned at one shortened budget, the controllable-routing sweep, and
the oracle and random reference routers. docs/ablations.md describes it; `moeisr ablations` runs it.

- `spec`: the suite file `experiments/ablations/ablations.yaml` (rows as overrides of the main experiments).
- `routers`: every expert's output per pixel, the oracle, the random router, the sweep's knobs.
- `evaluation`: oracle/random rows and architecture-shared FLOPs on top of the main runner and results cache.
- `analysis`, `text`, `figures`: summaries, Markdown and reading, PNGs.
- `run`: the pipeline (`run_ablations`).
"""
