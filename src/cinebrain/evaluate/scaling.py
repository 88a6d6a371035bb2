"""Scaling curves: how a score grows with a model's parameters, its training data or its
training compute, as a log-linear fit ``y = a + b * log10(x)`` with a confidence interval
on the slope ``b``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class LogLinearFit:
    """``y = intercept + slope * log10(x)``, fitted by least squares.

    ``ci`` is the two-sided ``level`` confidence interval of the slope (Student t with
    n - 2 degrees of freedom); ``p`` tests slope 0; ``n`` counts the points fitted. With
    fewer than 3 points (or one distinct x) the interval and p are undefined (NaN).
    """

    slope: float
    intercept: float
    ci: tuple[float, float]
    p: float
    r2: float
    n: int
    level: float

    def to_dict(self) -> dict:
        return asdict(self)


def loglinear_fit(x, y, level: float = 0.95) -> LogLinearFit:
    """Fit ``y`` against ``log10(x)`` (x > 0; non-finite points dropped)."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} and {y.size}")
    if np.any(x[np.isfinite(x)] <= 0):
        raise ValueError("x must be positive for a log-linear fit")
    keep = np.isfinite(x) & np.isfinite(y)
    lx, y = np.log10(x[keep]), y[keep]
    n = int(lx.size)
    nan = float("nan")
    if n < 2 or np.ptp(lx) == 0:
        return LogLinearFit(nan, float(y.mean()) if n else nan, (nan, nan), nan, nan, n, level)
    res = stats.linregress(lx, y)
    if n < 3:
        return LogLinearFit(float(res.slope), float(res.intercept), (nan, nan), nan, 1.0, n, level)
    half = stats.t.ppf(0.5 + level / 2, n - 2) * res.stderr
    return LogLinearFit(float(res.slope), float(res.intercept),
                        (float(res.slope - half), float(res.slope + half)),
                        float(res.pvalue), float(res.rvalue ** 2), n, level)
