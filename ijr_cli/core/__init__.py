"""The torch-free base every layer may use: the bad-input exception, the typed config schemas and their
validation, the metric names, the run-directory files and the package's own resources (conf/, sweeps/)."""
