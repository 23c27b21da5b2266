"""The entry points, the only code that sees Hydra's app or argparse: `train` (ijr-train), `sweep` (ijr-sweep and
ijr-status), `report` (ijr-report); `compose` and `hydra_errors` are their Hydra plumbing."""
