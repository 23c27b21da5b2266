"""Measurement: the named metrics of SCIENCE.md. `evaluate` (train/test loss, cross-entropy, accuracy, gaps),
`schedule` (when each metric group is due), `measurer` (the metric groups over the probe set)."""
