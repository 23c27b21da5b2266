"""`ijr-sweep --pack K`: a study's jobs grouped into packs, K runs of one architecture trained together.

Two jobs may share a pack when their resolved configs agree on everything that fixes tensor shapes and control flow
(dataset and its size, model, batch size, length, loss kind, optimizer kind, metric schedule, dtype, device, ...):
they may differ only in the keys of `MEMBER_KEYS` (seed, learning rate and schedule parameters, momentum, weight
decay, label smoothing, mixup alpha, target and input scale, SAM rho, EJR lambda/rho/mu). Jobs of a model with
BatchNorm or dropout are not packed (`unpackable_reason`) and run as before. Torch-free: the memory that decides K
for `--pack auto` is estimated in the pack's own process (`run.pack`), which then trains its members in the
largest sub-packs that fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

from ijr_cli.core.errors import UserError

MEMBER_KEYS = (
    "seed",
    "optimizer.lr",
    "optimizer.momentum",
    "optimizer.weight_decay",
    "optimizer.rho",
    "schedule.gamma",
    "schedule.milestones",
    "schedule.warmup_steps",
    "schedule.min_lr_factor",
    "regularizer.label_smoothing",
    "regularizer.mixup_alpha",
    "regularizer.lambda_reg",
    "regularizer.rho_reg",
    "regularizer.mu_reg",
    "loss.target_scale",
    "dataset.input_scale",
)
ALWAYS_BATCHNORM = ("resnet18", "wrn")
PACK_KEY = "ijr_pack"  # `ijr-train +ijr_pack=FILE:INDEX`: run pack INDEX of a packs file (what ijr-sweep launches)
PACK_DIR = ".packs"  # <sweep dir>/.packs/<pack>: each pack's Hydra files and log (its members' runs are siblings)


def _leaves(node, prefix: str = "") -> Dict[str, object]:
    if isinstance(node, dict):
        out: Dict[str, object] = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def unpackable_reason(config: dict) -> Optional[str]:
    """Why a job (its resolved config) runs alone (None: it can be packed)."""
    model = config.get("model", {})
    if model.get("name") in ALWAYS_BATCHNORM or model.get("batch_norm"):
        return f"model {model.get('name')} has BatchNorm (per-member running statistics are not packed)"
    if (model.get("dropout") or 0) > 0:
        return "dropout (per-member random masks would not repeat the sequential runs)"
    return None


def pack_key(config: dict) -> Tuple[Tuple[str, str], ...]:
    """What members of one pack share: every leaf of the resolved config except `MEMBER_KEYS`."""
    return tuple(sorted((k, repr(v)) for k, v in _leaves(config).items() if k not in MEMBER_KEYS))


@dataclass
class Pack:
    name: str  # its directory below the sweep's .packs/
    members: List[int]  # indices into the study's jobs
    reason_alone: Optional[str] = None  # a job that cannot be packed: why (then the pack has one member)


def plan_packs(configs: Sequence[str], size: Optional[int]) -> Tuple[List[Pack], List[str]]:
    """Group jobs (their resolved configs as YAML, in launch order) into packs of at most `size` members (None: every
    job with the same key in one pack, which sizes its sub-packs to the memory it finds). Returns the packs and why
    jobs landed in different ones (the config keys in which the groups differ)."""
    if size is not None and size < 1:
        raise UserError(f"--pack must be a positive integer or auto, got {size}")
    parsed = [yaml.safe_load(c) or {} for c in configs]
    groups: Dict[tuple, List[int]] = {}
    alone: List[Pack] = []
    for i, config in enumerate(parsed):
        reason = unpackable_reason(config)
        if reason:
            alone.append(Pack(f"alone-{i:04d}", [i], reason))
        else:
            groups.setdefault(pack_key(config), []).append(i)
    packs: List[Pack] = []
    for members in groups.values():
        step = size or len(members)
        for start in range(0, len(members), step):
            packs.append(Pack(f"pack-{len(packs):04d}", members[start : start + step]))
    leaves = [dict(k) for k in groups]
    differing = sorted({k for a in leaves for b in leaves for k in set(a) | set(b) if a.get(k) != b.get(k)})
    return packs + alone, differing


def parse_pack_option(value: str) -> Optional[int]:
    """--pack K (a positive integer) or auto (None)."""
    if value == "auto":
        return None
    try:
        k = int(value)
    except ValueError:
        raise UserError(f"--pack must be a positive integer or auto, got {value!r}") from None
    if k < 1:
        raise UserError(f"--pack must be a positive integer or auto, got {value!r}")
    return k


def describe_packs(packs: List[Pack], differing: List[str], names: Sequence[str]) -> List[str]:
    """The dry run's account: each pack and its members, and why jobs are in different packs."""
    packed = [p for p in packs if p.reason_alone is None]
    lines = [
        f"packs: {len(packed)} pack(s) of {sum(len(p.members) for p in packed)} job(s); "
        f"{len(packs) - len(packed)} job(s) run alone"
    ]
    if differing:
        lines.append("  jobs are in different packs where their configs differ in: " + ", ".join(differing))
    for p in packs:
        why = f" (alone: {p.reason_alone})" if p.reason_alone else ""
        lines.append(f"  {p.name}: {len(p.members)} job(s){why}")
        lines.extend(f"    {names[i]}" for i in p.members)
    return lines


def read_pack(ref: str) -> dict:
    """The pack `FILE:INDEX` names: {name, size, members: [{name, overrides, config}]}."""
    path, _, index = ref.rpartition(":")
    try:
        return yaml.safe_load(open(path).read())[int(index)]
    except (OSError, ValueError, IndexError, TypeError, yaml.YAMLError) as e:
        raise UserError(f"{PACK_KEY}={ref}: cannot read the pack ({type(e).__name__}: {e})") from None
