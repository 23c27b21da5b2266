"""Sweeps (no torch): `study` (a study file in sweeps/ expanded into jobs), `state` (what a sweep directory holds:
every job's bucket, from status.json, SLURM's queue, the plan and the submissions)."""
