"""Tables (pandas → Markdown), figures (seaborn) and REPORT.md, rendered from the tidy results CSVs."""
