"""hfkd.stats: the t distribution, and the corrected resampled paired t-test, against hand-computed values."""
import math
import subprocess
import sys

import pytest

from hfkd.stats import (corrected_paired_ttest, kfold_test_train_ratio, paired_differences,
                        regularized_incomplete_beta, t_cdf, t_quantile)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_matches_the_closed_forms_for_1_and_2_degrees_of_freedom(p):
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t) / pi; df = 2: t = (2p - 1) / sqrt(2 p (1 - p)).
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


@pytest.mark.parametrize("df, expected", [(4, 2.7764451052), (9, 2.2621571628), (14, 2.1447866879),
                                          (29, 2.0452296421), (1e7, 1.9599640)])
def test_t_quantile_matches_the_printed_tables(df, expected):
    # two-sided 95 % critical values (any t table; df -> infinity gives the normal's 1.959964)
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-6)


def test_t_distribution_properties():
    for df in (1, 3, 14, 100):
        assert t_cdf(0.0, df) == pytest.approx(0.5)
        for t in (0.1, 1.0, 2.5, 7.0):
            assert t_cdf(-t, df) == pytest.approx(1 - t_cdf(t, df), abs=1e-12)  # symmetric
            # the quantile inverts the CDF (to 1e-6: at df=100, t=7 the CDF is 1 - 1e-10, where doubles are coarse)
            assert t_quantile(t_cdf(t, df), df) == pytest.approx(t, rel=1e-6)
        values = [t_cdf(t, df) for t in (-3, -1, 0, 1, 3)]
        assert values == sorted(values)
    assert t_quantile(0.025, 14) == pytest.approx(-t_quantile(0.975, 14))
    # a heavier tail with fewer degrees of freedom
    assert t_quantile(0.975, 2) > t_quantile(0.975, 5) > t_quantile(0.975, 50)


def test_incomplete_beta_known_values():
    # I_x(1, 1) = x (uniform); I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_x(a, b) = 1 - I_{1-x}(b, a)
    for x in (0.01, 0.3, 0.5, 0.77, 0.99):
        assert regularized_incomplete_beta(1, 1, x) == pytest.approx(x)
        assert regularized_incomplete_beta(3.5, 1, x) == pytest.approx(x ** 3.5)
        assert regularized_incomplete_beta(1, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5)
        assert regularized_incomplete_beta(2, 7, x) == pytest.approx(1 - regularized_incomplete_beta(7, 2, 1 - x))
    with pytest.raises(ValueError):
        regularized_incomplete_beta(1, 1, 1.5)


def test_corrected_interval_by_hand():
    # d = 1..5 over 5 folds of one seed: mean 3, s^2 = 2.5; k = 5 -> n_test / n_train = 1/4;
    # corrected variance (1/5 + 1/4) * 2.5 = 1.125; t(0.975, 4) = 2.776445 -> half width 2.944873
    c = corrected_paired_ttest([1, 2, 3, 4, 5], kfold_test_train_ratio(5))
    assert (c.n, c.df, c.mean, c.std) == (5, 4, 3.0, pytest.approx(math.sqrt(2.5)))
    assert c.standard_error == pytest.approx(math.sqrt(1.125))
    assert (c.ci_low, c.ci_high) == (pytest.approx(3 - 2.944873, abs=1e-5), pytest.approx(3 + 2.944873, abs=1e-5))
    assert c.t == pytest.approx(3 / math.sqrt(1.125))
    assert (c.wins, c.ties, c.losses, c.verdict) == (5, 0, 0, "better")
    # the plain paired t-test (ratio 0) is narrower: s / sqrt(5) * 2.776445 = 1.963243
    plain = corrected_paired_ttest([1, 2, 3, 4, 5], 0.0)
    assert plain.ci_high - plain.mean == pytest.approx(1.963243, abs=1e-5)
    assert plain.ci_high - plain.ci_low < c.ci_high - c.ci_low


def test_p_value_by_hand():
    # t = 3 / sqrt(1.125) = 2.828427 with 4 df: two-sided p = 0.047421 (df=4 has a closed-form CDF)
    t = 3 / math.sqrt(1.125)
    closed = 0.5 + (t / math.sqrt(4 + t * t)) * (0.5 + 1 / (4 + t * t))  # F(t) for 4 degrees of freedom
    c = corrected_paired_ttest([1, 2, 3, 4, 5], 0.25)
    assert c.p_value == pytest.approx(2 * (1 - closed), rel=1e-8)
    assert c.p_value == pytest.approx(0.047421, abs=1e-5)


def test_tie_when_the_interval_contains_zero_and_direction_of_lower_is_better():
    tie = corrected_paired_ttest([-1.0, 2.0, 0.0], 0.25)
    assert tie.ci_low < 0 < tie.ci_high and tie.verdict == "tie"
    assert (tie.wins, tie.ties, tie.losses) == (1, 1, 1)
    # NLL: a negative difference (method below baseline) is a win
    nll = corrected_paired_ttest([-0.2, -0.3, -0.25, -0.22], 0.25, higher_is_better=False)
    assert nll.verdict == "better" and (nll.wins, nll.losses) == (4, 0)
    assert corrected_paired_ttest([-0.2, -0.3, -0.25, -0.22], 0.25).verdict == "worse"


def test_degenerate_inputs():
    one = corrected_paired_ttest([0.5], 0.25)
    assert one.verdict == "too few runs" and one.ci_low is None and one.wins == 1
    same = corrected_paired_ttest([0.01, 0.01, 0.01], 0.25)
    assert same.ci_low == same.ci_high == pytest.approx(0.01) and same.verdict == "better" and same.p_value == 0.0
    zero = corrected_paired_ttest([0.0, 0.0], 0.25)
    assert zero.verdict == "tie" and zero.p_value == 1.0
    with pytest.raises(ValueError, match="no paired differences"):
        corrected_paired_ttest([], 0.25)
    with pytest.raises(ValueError, match="as many method runs"):
        paired_differences([1, 2], [1])
    assert paired_differences([0.9, 0.8], [0.85, 0.82]) == pytest.approx([0.05, -0.02])
    with pytest.raises(ValueError):
        kfold_test_train_ratio(1)


def test_more_pairs_narrow_the_interval_but_the_correction_keeps_a_floor():
    # The same spread over more pairs: the plain interval shrinks like 1/sqrt(n), the corrected one no lower than
    # t * s * sqrt(n_test / n_train), since the pairs share training data.
    spread = [0.01, -0.01] * 50
    plain = corrected_paired_ttest(spread, 0.0)
    corrected = corrected_paired_ttest(spread, 0.25)
    s = plain.std
    assert plain.ci_high == pytest.approx(t_quantile(0.975, 99) * s / 10)
    assert corrected.ci_high > t_quantile(0.975, 99) * s * 0.5


def test_stats_import_no_torch():
    code = "import sys, hfkd.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
