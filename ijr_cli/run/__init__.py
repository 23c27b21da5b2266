"""One run: `build` (its parts from the typed config), `directory` (may this command use the run directory),
`signals` (stop at a step boundary), `summary` (environment facts, the closing table), `experiment` (train or
resume, status bookkeeping, summary)."""
