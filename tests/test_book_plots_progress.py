"""optlib.book.plots (style, curves, sweeps, heatmaps) and the quiet progress bars."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from optlib import _progress  # noqa: E402
from optlib.book import plots as P  # noqa: E402
from optlib.book import progress as book_progress  # noqa: E402


def test_style_and_curves():
    P.apply_style()
    assert matplotlib.rcParams["axes.spines.top"] is False
    ax = P.curves({"a": [3, 2, 1], "b": ([0, 5, 10], torch.tensor([1.0, 0.5, 0.25]))}, logy=True,
                  title="t")
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step"
    np.testing.assert_array_equal(ax.get_lines()[1].get_xdata(), [0, 5, 10])
    plt.close("all")


def test_sweep_marks_diverged_points():
    ax = P.sweep([1e-3, 1e-2, 1e-1], {"SGD": [1.0, 0.5, float("nan")]})
    assert ax.get_xscale() == "log"
    line = ax.get_lines()[0]
    assert len(line.get_xdata()) == 2  # the NaN is not on the line...
    assert any(lbl.get_marker() == "x" for lbl in ax.get_lines()[1:])  # ...but marked
    with pytest.raises(ValueError, match="series 'SGD' has 2 values for 3 xs"):
        P.sweep([1, 2, 3], {"SGD": [1, 2]})
    plt.close("all")


def test_heatmap_annotations():
    ax = P.heatmap([[0.1, 0.2, 0.3], [0.4, float("inf"), 0.6]], ["a", "b", "c"], ["x", "y"],
                   xlabel="wd", ylabel="lr")
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.10", "0.20", "0.30", "0.40", "div", "0.60"]
    with pytest.raises(ValueError, match=r"values has shape \(2, 3\), expected \(3, 2\)"):
        P.heatmap(np.zeros((2, 3)), ["a", "b"], ["x", "y", "z"])
    plt.close("all")


def test_distance_and_steps_draws_both_panels():
    left, right = P.distance_and_steps(
        {"a": torch.tensor([3.0, -2.0, 1.5], dtype=torch.float64), "b": [1.0, 0.5, 0.25]})
    assert [line.get_label() for line in left.get_lines()] == ["a", "b"]
    np.testing.assert_array_equal(left.get_lines()[0].get_ydata(), [3.0, 2.0, 1.5])
    np.testing.assert_array_equal(right.get_lines()[0].get_xydata(), [[1, 5.0], [2, 3.5]])
    assert right.get_xscale() == right.get_yscale() == "log"
    assert right.get_ylim() == (1e-3, 5)
    plt.close("all")


def test_progress_rules(monkeypatch, capsys):
    monkeypatch.delenv("OPTLIB_PROGRESS", raising=False)
    assert not _progress.progress_enabled()  # under pytest
    monkeypatch.setenv("OPTLIB_PROGRESS", "1")
    assert _progress.progress_enabled()
    assert list(book_progress.progress(range(3), desc="x")) == [0, 1, 2]
    assert "x:" in capsys.readouterr().err  # forced on: a bar on stderr
    monkeypatch.setenv("OPTLIB_PROGRESS", "0")
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert not _progress.progress_enabled()
    monkeypatch.delenv("OPTLIB_PROGRESS")
    assert _progress.progress_enabled()  # an ordinary session
    assert not _progress.progress_enabled(False)
    it = book_progress.progress(range(2), enabled=False)
    assert isinstance(it, range) and capsys.readouterr().err == ""
    assert list(book_progress.progress(total=2, enabled=False)) == [0, 1]
