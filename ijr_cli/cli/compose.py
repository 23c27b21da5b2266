"""Hydra's side of ijr: what is registered before Hydra composes anything, and composing configs outside the app.

`register()` puts the typed schema and the plugins' configs in Hydra's ConfigStore and the `ijr_uid` resolver in
OmegaConf: the entry points call it first (nothing is registered at import). `composer()` gives `compose` over the
package's conf/ for checking configs without running them (`ijr-sweep`'s pre-flight, the tests).
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

from omegaconf import OmegaConf

from ijr_cli.core.resources import conf_dir


def _launch_uid() -> str:
    """This process's id and two random bytes: with the microsecond timestamp in the default run and multirun
    directory names, two launches never share a directory (same microsecond, same host: different pids)."""
    import secrets

    return f"{os.getpid():x}{secrets.token_hex(2)}"


def register() -> None:
    """The schema, ijr's sweeper and launchers (ijr_jobs, ijr_slurm, ijr_local_parallel) and `${ijr_uid:}`."""
    from hydra_plugins.ijr_plugins import register as register_plugins
    from ijr_cli.core.config import register_configs

    register_configs()
    register_plugins()
    # cached per config (and copied into each job's config by Hydra), so every job of a multirun sees one value
    if not OmegaConf.has_resolver("ijr_uid"):
        OmegaConf.register_new_resolver("ijr_uid", _launch_uid, use_cache=True)


@contextlib.contextmanager
def composer() -> Iterator[Callable]:
    """`compose(config_name="train", overrides=[...], return_hydra_config=False)` over conf/, Hydra's global
    state cleared before and after."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
            yield compose
    finally:
        GlobalHydra.instance().clear()
