"""Paired comparisons of two training recipes over repeated k-fold runs: pure Python, no torch.

``hfkd benchmark`` trains a baseline and each method on the same folds with the same seeds and compares them
run by run: ``d_j = method_j - baseline_j`` for every (seed, fold) pair ``j = 1..J``.  The runs share training
data (two folds of a 5-fold split share 3/4 of their training images, and every seed reuses all images), so the
``d_j`` are correlated and the plain t-test's variance ``s^2 / J`` is too small.  Nadeau & Bengio (2003,
"Inference for the generalization error", Machine Learning 52) correct it to ``(1/J + n_test/n_train) s^2``;
Bouckaert & Frank (2004, "Evaluating the replicability of significance tests for comparing learning
algorithms", PAKDD) apply the correction to ``r`` repetitions of ``k``-fold cross-validation, with ``J = r k``,
``n_test/n_train = 1/(k-1)`` and a t distribution with ``J - 1`` degrees of freedom.

The t distribution's quantile is computed here (scipy is not a dependency of hfkd, and one quantile does not
justify one): the CDF through the regularised incomplete beta function, evaluated by its continued fraction,
and inverted by bisection.  Accurate to about 1e-10, which is far below what a confidence interval needs.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence


# -- the t distribution -------------------------------------------------------------------------------
def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            return result
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the CDF of a Beta(a, b) variable at ``x``."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); beyond, use I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_quantile(0.975, 14)`` = 2.1448)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:  # the quantile is below 2^k for some k (1e16 even for df=1, p=1-1e-16)
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# -- paired comparisons -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedComparison:
    """Method minus baseline over ``n`` paired runs (same fold, same seed), with the corrected t interval."""

    n: int
    mean: float
    #: sample standard deviation of the differences (``None`` with one pair)
    std: Optional[float]
    #: the Nadeau–Bengio corrected standard error ``sqrt((1/n + n_test/n_train) s^2)``
    standard_error: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    t: Optional[float]
    p_value: Optional[float]
    df: int
    confidence: float
    test_train_ratio: float
    #: pairs where the method did better, the same, worse (by the metric's direction)
    wins: int
    ties: int
    losses: int
    #: "better" / "worse" when the interval excludes 0 (by the metric's direction), "tie" when it contains 0,
    #: "too few runs" with one pair
    verdict: str

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def paired_differences(method: Sequence[float], baseline: Sequence[float]) -> list:
    """``method[j] - baseline[j]``: both lists in the same (seed, fold) order."""
    if len(method) != len(baseline):
        raise ValueError(f"paired differences need as many method runs as baseline runs ({len(method)} vs "
                         f"{len(baseline)}): each method run is compared with the baseline of its seed and fold")
    return [float(m) - float(b) for m, b in zip(method, baseline)]


def corrected_paired_ttest(differences: Sequence[float], test_train_ratio: float, confidence: float = 0.95,
                           higher_is_better: bool = True) -> PairedComparison:
    """Mean of ``differences`` with the corrected resampled t-test's ``confidence`` interval.

    ``test_train_ratio`` is ``n_test / n_train`` of one run (``1 / (k - 1)`` for k-fold; 0 gives the plain paired
    t-test, right only for independent test sets *and* training sets).  ``higher_is_better`` says which sign of a
    difference is a win (accuracy: higher; NLL and ECE: lower).
    """
    d = [float(x) for x in differences]
    if not d:
        raise ValueError("no paired differences to compare")
    if test_train_ratio < 0 or not 0 < confidence < 1:
        raise ValueError(f"need test_train_ratio >= 0 and 0 < confidence < 1, got {test_train_ratio}, {confidence}")
    n, mean = len(d), statistics.fmean(d)
    sign = 1.0 if higher_is_better else -1.0
    wins = sum(sign * x > 0 for x in d)
    losses = sum(sign * x < 0 for x in d)
    counts = dict(wins=wins, ties=n - wins - losses, losses=losses)
    if n < 2:
        return PairedComparison(n, mean, None, None, None, None, None, None, 0, confidence, test_train_ratio,
                                verdict="too few runs", **counts)
    std = statistics.stdev(d)
    se = math.sqrt((1.0 / n + test_train_ratio) * std * std)
    df = n - 1
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    if se > 0:
        t = mean / se
        p_value = 2.0 * (1.0 - t_cdf(abs(t), df))
    else:  # every pair gave the same difference: no spread to test against
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p_value = 1.0 if mean == 0 else 0.0
    low, high = mean - half, mean + half
    if low <= 0.0 <= high:
        verdict = "tie"
    else:
        verdict = "better" if sign * mean > 0 else "worse"
    return PairedComparison(n, mean, std, se, low, high, t, p_value, df, confidence, test_train_ratio,
                            verdict=verdict, **counts)


def kfold_test_train_ratio(k: int) -> float:
    """``n_test / n_train`` of k-fold cross-validation: one fold tested, ``k - 1`` trained on."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    return 1.0 / (k - 1)


__all__ = ["PairedComparison", "corrected_paired_ttest", "kfold_test_train_ratio", "paired_differences",
           "regularized_incomplete_beta", "t_cdf", "t_quantile"]
