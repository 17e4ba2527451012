"""Small statistics helpers (stdlib only): percentiles, summaries, CDF points, a least-squares slope."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile *p* (0..100) of already sorted values; None if empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return float(sorted_values[0])
    k = (n - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo))


def summary(values: Iterable[float], scale: float = 1.0, digits: int = 3) -> dict[str, float | int | None]:
    """``count, mean, p50, p90, p99, max`` (and min) of *values* × *scale*, rounded."""
    vals = sorted(v * scale for v in values)
    if not vals:
        return {"count": 0, "mean": None, "min": None, "p50": None, "p90": None, "p99": None, "max": None}

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)

    return {
        "count": len(vals),
        "mean": r(sum(vals) / len(vals)),
        "min": r(vals[0]),
        "p50": r(percentile(vals, 50)),
        "p90": r(percentile(vals, 90)),
        "p99": r(percentile(vals, 99)),
        "max": r(vals[-1]),
    }


def cdf_points(
    values: Iterable[float], scale: float = 1.0, points: int = 101, digits: int = 3
) -> list[float]:
    """The 0th..100th percentiles (``points`` evenly spaced), a compact stand-in for a full sample."""
    vals = sorted(v * scale for v in values)
    if not vals:
        return []
    return [round(percentile(vals, 100.0 * i / (points - 1)) or 0.0, digits) for i in range(points)]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope dy/dx; None with fewer than two distinct x."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def median(values: Sequence[float]) -> float | None:
    return percentile(sorted(values), 50)
