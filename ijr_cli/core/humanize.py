"""Numbers as people read them in progress lines: durations (12s, 3m05s, 2h07m)."""

import math


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m; "?" when unknown (NaN or infinite)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
