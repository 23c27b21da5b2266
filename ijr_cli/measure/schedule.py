"""When each metric group is measured: its cadence, step 0, the last step, and log-spaced early steps."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Set


class Schedule:
    """Which groups are due at a step: each group every `every[group]` steps (multiples of it), at step 0, at
    the last step, at `early_steps` log-spaced steps in [1, every) (early dynamics are fast), and at every step up
    to `dense_until[group]` (the trajectory's first steps)."""

    def __init__(
        self,
        groups_every: Dict[str, int],
        total_steps: int,
        early_steps: int = 0,
        dense_until: Optional[Dict[str, int]] = None,
    ):
        self.every = dict(groups_every)
        self.total_steps = total_steps
        self.dense_until = {g: s for g, s in (dense_until or {}).items() if g in self.every}
        self._dense_max = max(self.dense_until.values(), default=-1)
        self.early: Dict[str, Set[int]] = {}
        for group, every in self.every.items():
            pts: Set[int] = set()
            if early_steps and every > 1:
                for i in range(early_steps):
                    pts.add(int(round(every ** (i / early_steps))))
            self.early[group] = {p for p in pts if 0 < p < every}
        # any_due's fast rejection: a step is due only if the gcd of the cadences divides it, or it is an
        # early point or the last step (checked at every training step: a modulo and a set lookup)
        self._gcd = math.gcd(*self.every.values()) if self.every else 0
        self._early_any = set().union(*self.early.values()) if self.early else set()

    def any_due(self, step: int) -> bool:
        """bool(due(step)), without building the list on the steps that are not due."""
        if not self.every:
            return False
        if step == self.total_steps or step in self._early_any or step <= self._dense_max:
            return True
        if not self._gcd or step % self._gcd:
            return False
        return bool(self.due(step))

    def due(self, step: int) -> List[str]:
        return [
            g
            for g, every in self.every.items()
            if step % every == 0
            or step == self.total_steps
            or step in self.early[g]
            or step <= self.dense_until.get(g, -1)
        ]
