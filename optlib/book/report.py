"""Printing results that hold on any machine: round-off as a bound, small gaps with their spread.

The last bits of a float depend on the CPU's instruction set, the torch version and the
device, so a chapter never prints round-off as if it were a value: ``gap`` prints a
difference that is at round-off level as "< bound" (``gap_table`` one per line, beside
its name), ``mean_spread`` reports a result over several seeds as its mean and spread,
``minus_reference`` one against a reference run on the same seeds, and ``magnitude`` a
chaotic result by its order of magnitude, so that a reader on another
machine sees numbers that support the same claim.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def gap(difference: float, roundoff: float = 1e-12, digits: int = 1) -> str:
    """``difference`` as text: ``"< 1e-12 (round-off)"`` when below ``roundoff``, else its value.

    Args:
        difference: a non-negative difference, for example the largest entry of ``|a - b|``.
        roundoff: the bound below which the difference counts as round-off.
        digits: digits after the point of the value printed otherwise (scientific notation).

    Raises:
        ValueError: a negative or NaN difference, or a non-positive bound.
    """
    difference = float(difference)
    if not roundoff > 0:
        raise ValueError(f"roundoff must be positive, got {roundoff!r}")
    if math.isnan(difference) or difference < 0:
        raise ValueError(f"difference must be a non-negative number, got {difference!r}")
    if difference < roundoff:
        return f"< {roundoff:.0e} (round-off)"
    return f"{difference:.{digits}e}"


def gap_table(differences: dict[str, float], roundoff: float = 1e-12, *, indent: int = 2,
              label: str = "{}", separator: str = " ") -> str:
    """Lines ``name  gap(difference)``, one per entry: how a chapter prints the differences
    of a side-by-side comparison (:func:`optlib.book.compare.side_by_side`), the names in a
    column one wider than the longest, so that the gaps line up.

    Args:
        differences: name -> difference (non-negative), in the order to print.
        roundoff: the bound of :func:`gap`.
        indent: spaces before each name.
        label: a format string that puts each name in its words, ``"max |{} − x|"``;
            the column is as wide as the longest of these labels plus one.
        separator: the text between the column and the gap (``"= "``).

    Raises:
        ValueError: no differences, or one that :func:`gap` refuses.
    """
    if not differences:
        raise ValueError("differences must not be empty")
    labels = {name: label.format(name) for name in differences}
    width = max(len(text) for text in labels.values()) + 1
    return "\n".join(f"{' ' * indent}{labels[name]:{width}s}{separator}{gap(d, roundoff)}"
                     for name, d in differences.items())


def assert_roundoff(differences: dict[str, float] | Sequence[float], roundoff: float = 1e-12) -> None:
    """Stop the chapter unless every difference is below ``roundoff``.

    Args:
        differences: the differences, by name or in a sequence.
        roundoff: the bound.

    Raises:
        AssertionError: naming the differences that are not below the bound.
    """
    items = differences.items() if isinstance(differences, dict) else enumerate(differences)
    over = {name: float(d) for name, d in items if not float(d) < roundoff}
    assert not over, f"not equal up to round-off (< {roundoff:.0e}): {over}"


def magnitude(value: float) -> str:
    """The order of magnitude of a positive ``value``, as ``"~1e+01"``: how a chaotic result
    (a run at the edge of divergence, clipped steps at a huge learning rate) is reported,
    since only its order of magnitude survives a change of machine.

    Args:
        value: a positive number (``inf`` gives ``"inf"``).
    """
    value = float(value)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"value must be a positive number, got {value!r}")
    if math.isinf(value):
        return "inf"
    return f"~1e{round(math.log10(value)):+03d}"


def mean_spread(values: Sequence[float], fmt: str = ".3f") -> str:
    """``"mean ± sample standard deviation"`` of results over seeds (one value: no spread).

    Args:
        values: one result per seed.
        fmt: the format of both numbers.
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must not be empty")
    if len(values) == 1:
        return f"{values[0]:{fmt}} (one seed)"
    return f"{statistics.fmean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def minus_reference(values: Sequence[float], reference: Sequence[float], fmt: str = ".3f",
                    *, is_reference: bool = False) -> str:
    """A result over seeds against a reference run on the same seeds: the
    :func:`mean_spread` of the paired differences ``values[s] − reference[s]``, or
    ``"(the reference)"`` on the reference's own row: how a table puts each run beside
    the one it is measured against.

    Args:
        values: one result per seed.
        reference: the reference's result on the same seeds, in the same order.
        fmt: the format of the mean and the spread.
        is_reference: this row is the reference itself.

    Raises:
        ValueError: ``values`` and ``reference`` of different lengths, or empty.
    """
    if is_reference:
        return "(the reference)"
    values, reference = list(values), list(reference)
    if len(values) != len(reference):
        raise ValueError(f"values and reference must pair up seed by seed, got "
                         f"{len(values)} and {len(reference)} values")
    return mean_spread([v - r for v, r in zip(values, reference, strict=True)], fmt)
