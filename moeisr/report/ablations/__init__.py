"""The ablations' report (issue 8): summaries, tables, readings and figures from the raw artefacts that
`moeisr.pipeline.ablations` writes into `<results>/ablations/`. docs/ablations.md describes the suite.

- `analysis`: the summaries (pandas in, pandas out).
- `tables`: the Markdown tables and the readings.
- `figures`: the PNGs.
"""
