"""Numbers as people read them: durations in progress lines (12s, 3m05s, 2h07m), hyperparameter values in
reports (200, not 200.0)."""

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


def value(v) -> str:
    """A hyperparameter value as text: integers without '.0' (200, not 200.0; YAML and pandas turn ints into
    floats), other numbers with %g, '–' for a missing one, anything else as str."""
    if v is None:
        return "–"
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return str(bool(v))
    if isinstance(v, int) or type(v).__name__.startswith(("int", "uint")):
        return str(int(v))
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        v = float(v)
        if math.isnan(v):
            return "–"
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:g}"
    return str(v)
