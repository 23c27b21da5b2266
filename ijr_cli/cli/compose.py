"""Hydra's side of ijr: what is registered before Hydra composes anything, and composing configs outside the app.

`register()` puts the typed schema and the plugins' configs in Hydra's ConfigStore and the `ijr_uid` resolver in
OmegaConf: the entry points call it first (nothing is registered at import). `composer()` gives `compose` over the
package's conf/ for checking configs without running them (`ijr-sweep`'s pre-flight, the tests).
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Dict, Iterator, List

from omegaconf import OmegaConf

from ijr_cli.core.errors import UserError, did_you_mean
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


def _leaves(node, prefix: str = "") -> Dict[str, object]:
    """A nested mapping as dotted keys -> values."""
    out: Dict[str, object] = {}
    for k, v in (node or {}).items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_group_lists(overrides: List[str]) -> None:
    """`group=[a,b]` merges the options in order (regularizer=[mixup,augment] sets both fields); two options that
    set the same field differently would leave the last one's value silently, so that is refused, naming both."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - a malformed override is Hydra's to report, in its own words
        return
    for o in parsed:
        chosen, group = o.value(), o.key_or_group
        folder = conf_dir() / group
        if o.is_add() or o.is_delete() or not isinstance(chosen, list) or not folder.is_dir():
            continue
        set_by: Dict[str, tuple] = {}
        for option in chosen:
            path = folder / f"{option}.yaml"
            if not path.exists():  # (Hydra's own words for a list: "Could not load", without the options)
                options = sorted(p.stem for p in folder.glob("*.yaml"))
                raise UserError(
                    f"Could not find '{group}/{option}': available options in '{group}': {', '.join(options)}"
                    f"{did_you_mean(str(option), options)}"
                )  # (the words of ijr-train's, `hydra_errors.one_line`)
            for key, value in _leaves(yaml.safe_load(path.read_text()) or {}).items():
                if key in set_by and set_by[key][1] != value and key != "defaults":
                    raise UserError(
                        f"{group}=[{','.join(map(str, chosen))}]: {set_by[key][0]} and {option} both set {group}.{key} "
                        f"({set_by[key][1]} vs {value}), and the last would win silently; choose one of them"
                    )
                set_by[key] = (option, value)
