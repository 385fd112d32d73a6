"""Percentiles shared by the bench driver and the producer."""


def pct(xs: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``xs`` (linear interpolation), or None for no samples."""
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
