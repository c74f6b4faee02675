"""optlib.book.report: round-off printed as a bound, results over seeds as mean ± spread."""

import math

import pytest

from optlib.book import report


def test_gap_prints_roundoff_as_a_bound_and_other_values_as_they_are():
    assert report.gap(8.3e-17) == "< 1e-12 (round-off)"
    assert report.gap(5.6e-17) == report.gap(8.3e-17)  # what differs between CPUs is not shown
    assert report.gap(0.0, roundoff=1e-15) == "< 1e-15 (round-off)"
    assert report.gap(0.17) == "1.7e-01"
    assert report.gap(1e-12) == "1.0e-12"  # the bound itself is not below the bound


@pytest.mark.parametrize("bad", [-1e-3, math.nan])
def test_gap_refuses_what_is_not_a_difference(bad):
    with pytest.raises(ValueError, match="difference must be a non-negative number"):
        report.gap(bad)
    with pytest.raises(ValueError, match="roundoff must be positive, got 0"):
        report.gap(1.0, roundoff=0)


def test_assert_roundoff_names_what_is_over_the_bound():
    report.assert_roundoff({"optlib": 1e-16, "torch": 0.0})
    report.assert_roundoff([1e-16, 2e-16], roundoff=1e-15)
    with pytest.raises(AssertionError, match="'Sutskever': 0.17"):
        report.assert_roundoff({"optlib": 1e-16, "Sutskever": 0.17})
    with pytest.raises(AssertionError, match="nan"):
        report.assert_roundoff([math.nan])


def test_mean_spread():
    assert report.mean_spread([0.9, 1.0, 1.1]) == "1.000 ± 0.100"
    assert report.mean_spread([2.0], fmt=".1f") == "2.0 (one seed)"
    with pytest.raises(ValueError, match="values must not be empty"):
        report.mean_spread([])


def test_minus_reference_pairs_the_seeds():
    assert report.minus_reference([1.5, 2.5, 3.5], [1.0, 2.0, 2.0], ".2f") == \
        report.mean_spread([0.5, 0.5, 1.5], ".2f") == "0.83 ± 0.58"
    assert report.minus_reference([1.0], [1.0], is_reference=True) == "(the reference)"
    with pytest.raises(ValueError, match="seed by seed"):
        report.minus_reference([1.0, 2.0], [1.0])


def test_magnitude_keeps_only_the_order_of_magnitude():
    assert report.magnitude(8.88) == report.magnitude(13.6) == "~1e+01"
    assert report.magnitude(2.09e-4) == "~1e-04"
    assert report.magnitude(float("inf")) == "inf"
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="value must be a positive number"):
            report.magnitude(bad)


def test_gap_table_lines_up_the_gaps_after_the_longest_name():
    gaps = {"optlib.SGD": 3e-17, "torch.optim.SGD": 0.17}
    assert report.gap_table(gaps).splitlines() == [
        "  optlib.SGD       < 1e-12 (round-off)",
        "  torch.optim.SGD  1.7e-01",
    ]
    # the chapters' look-ahead form: the name inside its words, "= " before the gap
    assert report.gap_table({"a": 0.0, "bcd": 2e-16}, 1e-15, indent=0,
                            label="max |{} − x|", separator="= ").splitlines() == [
        "max |a − x|   = < 1e-15 (round-off)",
        "max |bcd − x| = < 1e-15 (round-off)",
    ]
    with pytest.raises(ValueError, match="differences must not be empty"):
        report.gap_table({})
    with pytest.raises(ValueError, match="difference must be a non-negative number"):
        report.gap_table({"a": -1.0})
