"""Reporting (no torch): `collect` (run directories → the runs table and the history), `tables` (aggregates, paper
000 Table 1, paper 002 correlations), `figures` (seaborn figures, paper 000 Figs. 1-2), `page` (index.html),
`build` (one whole report, written atomically)."""
