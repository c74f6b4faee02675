"""Figures a reader can play with: a slider over precomputed frames, drawn by plotly.

The chapters compute a figure's frames (one per value of the parameter the slider
moves: a step size, a β, a warmup length) in Python; plotly turns them into a page that
needs no kernel and no server: the frames are data in the page, and plotly's JavaScript
moves between them when the slider moves. No JavaScript is written here.

In the book. When a chapter executes for the record (``scripts/run_notebook.py`` or the
nbval run; ``optlib.book.numerics``), :func:`show` writes the figure, a complete HTML
page, to ``_figures/interactive/NAME.html`` in the book's source, and the notebook's
output is an ``<iframe>`` of that page and a one-line description. The book build
(``_ext/interactive_figures.py``) copies the folder to ``_static/interactive/`` with
the ``plotly.min.js`` of the installed plotly package beside it, so the page loads
nothing from outside, like the book's MathJax. The file is byte-for-byte a function of
the frames: fixed element ids, and every number rounded to :data:`DIGITS` significant
digits (a figure's precision, which the last bits of a float do not move). The iframe
carries the SHA-256 of the file, so nbval, which compares ``text/html`` outputs, fails
when a re-run computes different frames, and ``tests/test_book_interactive.py`` checks
that each committed file is the one its chapter's output names. A figure of timings (the
performance appendix: ``show(fig, measured=True)`` in a cell tagged
``nbval-ignore-output``) differs on every machine: its page is written only by
``scripts/run_notebook.py``, so that the nbval run elsewhere leaves the recorded page alone.

Elsewhere (Colab, a reader's own Jupyter) :func:`show` writes nothing and displays the
figure with plotly's own notebook renderer.

The static (matplotlib) figure next to it stays in the chapter, for print.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import numerics
from .plots import PALETTE

#: Significant digits of every number in a figure's page.
DIGITS = 4
#: Where :func:`show` writes the pages, relative to the book's root (``_config.yml``).
FOLDER = Path("_figures") / "interactive"
#: Where a chapter's page (``chapters/NN_name.html``) finds them in the built site.
URL = "../_static/interactive"
#: The form of a figure's name, lower-case words joined by hyphens (``01-step-size``).
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def rounded(values, digits: int = DIGITS, quantum: float | None = None) -> list[float | None]:
    """``values`` as a list of floats rounded to ``digits`` significant digits and, when
    ``quantum`` is given, to a multiple of it (a power of ten).

    NaN and infinities become ``None`` (a gap in the line), and -0.0 becomes 0.0, so the
    JSON text of a figure depends only on the rounded values. On a linear axis the
    quantum is set by the axis (:func:`quantum`): a value at round-off level next to
    values of order one (``2.8e-17`` for zero) becomes 0 instead of carrying digits that
    the last bits of a float decide.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    decimals = None if quantum is None else -round(math.log10(quantum))
    out: list[float | None] = []
    for v in flat.tolist():
        if not math.isfinite(v):
            out.append(None)
            continue
        v = float(f"{v:.{digits}g}")
        if decimals is not None:
            v = round(v, decimals)
        out.append(v + 0.0)
    return out


def quantum(span: float, digits: int = DIGITS) -> float:
    """The rounding step of a linear axis that spans ``span``: a power of ten, about
    ``span`` / 10^``digits``."""
    if not math.isfinite(span) or span <= 0:
        span = 1.0
    return 10.0 ** (math.floor(math.log10(span)) - digits)


@dataclass(frozen=True)
class Trace:
    """One line (or set of markers) of a figure.

    ``x`` and ``y`` are sequences of numbers (``None`` or NaN for a gap); ``panel`` is the
    index of the panel it is drawn in (figures may have several side by side); ``mode``
    is plotly's (``"lines"``, ``"markers"``, ``"lines+markers"``); ``color`` a CSS colour
    (the book's palette in order when None); ``dash`` plotly's dash style (``"dash"``,
    ``"dot"``); ``legend`` False hides it from the legend.
    """

    x: Sequence
    y: Sequence
    name: str = ""
    panel: int = 0
    mode: str = "lines"
    color: str | None = None
    dash: str | None = None
    width: float = 2.0
    legend: bool = True

    def plotly(self, index: int, digits: int, quanta: tuple[float | None, float | None]) -> dict:
        """The trace as plotly's JSON (a dict), colour ``index`` of the palette if unset,
        its numbers rounded (:func:`rounded`) with the quanta of its panel's axes."""
        color = self.color or PALETTE[index % len(PALETTE)]
        axis = "" if self.panel == 0 else str(self.panel + 1)
        trace = {"type": "scatter", "x": rounded(self.x, digits, quanta[0]),
                 "y": rounded(self.y, digits, quanta[1]),
                 "name": self.name, "mode": self.mode, "xaxis": f"x{axis}", "yaxis": f"y{axis}",
                 "showlegend": self.legend and bool(self.name), "legendgroup": self.name,
                 "line": {"color": color, "width": self.width}, "marker": {"color": color, "size": 5},
                 "hovertemplate": "%{x}, %{y}<extra>" + html.escape(self.name) + "</extra>"}
        if self.dash:
            trace["line"]["dash"] = self.dash
        return trace


@dataclass(frozen=True)
class Panel:
    """One panel's axes: titles, fixed ranges (the slider must not rescale them) and
    log scales. A log axis takes its range as the values themselves, not their logs."""

    xlabel: str = ""
    ylabel: str = ""
    xrange: tuple[float, float] | None = None
    yrange: tuple[float, float] | None = None
    logx: bool = False
    logy: bool = False
    equal: bool = False  # one unit on x as long as one on y (a contour plot)


def line(x, y, name: str = "", **options) -> Trace:
    """A :class:`Trace` (keyword options as its fields)."""
    return Trace(x=x, y=y, name=name, **options)


def contours(surface, levels: int = 12, panel: int = 0, points: int = 121) -> Trace:
    """Contour lines of a 2-D surface (``optlib.book.surfaces.Surface``) in its window,
    as one grey trace (lines separated by gaps), at levels spaced evenly in log scale
    when the surface is non-negative (as ``surfaces.plot_trajectories`` draws them)."""
    import contourpy

    X, Y, Z = surface.grid(points)
    low, high = float(Z.min()), float(Z.max())
    if low >= 0 and high > 0:
        values = np.geomspace(max(low, high * 1e-3), high, levels + 1)[:-1]
    else:
        values = np.linspace(low, high, levels + 2)[1:-1]
    generator = contourpy.contour_generator(X, Y, Z)
    px: list[float] = []
    py: list[float] = []
    for value in values:
        for segment in generator.lines(float(value)):
            px += [*segment[:, 0].tolist(), math.nan]
            py += [*segment[:, 1].tolist(), math.nan]
    return Trace(px, py, name="contours", panel=panel, color="#bbbbbb", width=1.0, legend=False)


def descent(surface, path, name: str = "path") -> list[Trace]:
    """A run on a 2-D surface as two traces: its path (panel 0, lines and markers) and
    the fraction of the loss left after each step, f(θₜ) / f(θ₀) (panel 1), for a
    surface whose minimum value is 0 (the quadratics of ``optlib.book.surfaces``)."""
    import torch

    path = torch.as_tensor(path, dtype=torch.float64).detach()
    with torch.no_grad():
        loss = surface.f(path)
    return [Trace(path[:, 0], path[:, 1], name, mode="lines+markers"),
            Trace(range(len(path)), loss / loss[0], "loss left", panel=1)]


def descent_panels(surface, steps: int, loss_range=(1e-12, 1e4)) -> list[Panel]:
    """The panels for :func:`descent`: the surface's window (one unit as long on both
    axes) and the loss left over ``steps`` steps on a log axis spanning ``loss_range``."""
    return [Panel("x", "y", tuple(surface.xlim), tuple(surface.ylim), equal=True),
            Panel("step t", "f(θₜ) / f(θ₀)", (0, steps), tuple(loss_range), logy=True)]


@dataclass(frozen=True)
class SliderFigure:
    """A figure with a slider, ready to show: its name, the full HTML page, and what the
    notebook prints for it. Build it with :func:`slider_figure`."""

    name: str
    html: str
    labels: tuple[str, ...]
    slider_label: str
    height: int
    figure: dict = field(repr=False, compare=False)

    @property
    def digest(self) -> str:
        """SHA-256 of the page (the iframe in the notebook carries it)."""
        return hashlib.sha256(self.html.encode("utf-8")).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.name}.html"

    def summary(self) -> str:
        """One line: what the slider moves, over which values."""
        return (f"interactive figure {self.name}: a slider over {self.slider_label} = "
                f"{self.labels[0]} … {self.labels[-1]} ({len(self.labels)} frames)")

    def iframe(self) -> str:
        """The ``<iframe>`` that shows the figure's page on the built site."""
        return (f'<iframe src="{URL}/{self.filename}" title="{html.escape(self.summary())}" '
                f'data-sha256="{self.digest}" width="100%" height="{self.height + 20}" '
                f'style="border: 0;" loading="lazy"></iframe>')

    def _repr_mimebundle_(self, include=None, exclude=None):
        if numerics.active_profile() is not None:  # executing for the record: the book's page
            return {"text/html": self.iframe(), "text/plain": self.summary()}
        import plotly.graph_objects as go  # a reader's Jupyter or Colab: plotly's renderer

        return go.Figure(self.figure)._repr_mimebundle_(include, exclude)


def _axes(panels: Sequence[Panel]) -> dict:
    layout: dict = {}
    n = len(panels)
    gap = 0.14  # room for the next panel's tick labels and title
    width = (1 - gap * (n - 1)) / n
    for i, panel in enumerate(panels):
        suffix = "" if i == 0 else str(i + 1)
        start = i * (width + gap)
        x: dict = {"title": {"text": panel.xlabel}, "domain": [round(start, 4), round(start + width, 4)],
                   "anchor": f"y{suffix}", "showline": True, "linecolor": "#444", "ticks": "outside",
                   "zeroline": False, "showgrid": True, "gridcolor": "#eee"}
        # automargin: plotly widens the margin to fit the tick labels, and standoff keeps
        # the title clear of them (without both, a title overlaps labels such as 10⁻¹)
        y: dict = {"title": {"text": panel.ylabel, "standoff": 6}, "automargin": True,
                   "anchor": f"x{suffix}", "showline": True,
                   "linecolor": "#444", "ticks": "outside", "zeroline": False,
                   "showgrid": True, "gridcolor": "#eee"}
        for axis, log, limits in ((x, panel.logx, panel.xrange), (y, panel.logy, panel.yrange)):
            if log:
                axis["type"] = "log"
                axis["exponentformat"] = "power"  # 10⁻⁶, not plotly's SI prefix 1µ
            if limits is not None:
                values = [math.log10(v) for v in limits] if log else list(limits)
                axis["range"] = rounded(values)
                axis["autorange"] = False
        if panel.equal:
            y["scaleanchor"] = f"x{suffix}"
            y["scaleratio"] = 1
        layout[f"xaxis{suffix}"] = x
        layout[f"yaxis{suffix}"] = y
    return layout


def _quanta(panel: Panel, traces: Sequence[Trace], digits: int) -> tuple[float | None, float | None]:
    """Rounding steps of a panel's x and y values: None (significant digits only) on a log
    axis, else from the axis's range, or from the values' extent when it has none."""
    result: list[float | None] = []
    for log, limits, coordinate in ((panel.logx, panel.xrange, "x"), (panel.logy, panel.yrange, "y")):
        if log:
            result.append(None)
            continue
        if limits is not None:
            span = abs(limits[1] - limits[0])
        else:
            values = np.concatenate([np.asarray(getattr(t, coordinate), dtype=np.float64).reshape(-1)
                                     for t in traces]) if traces else np.zeros(1)
            values = values[np.isfinite(values)]
            span = float(values.max() - values.min()) if values.size else 1.0
        result.append(quantum(span, digits))
    return result[0], result[1]


def slider_figure(name: str, frames: Sequence[tuple[str, Sequence[Trace]]], *, slider_label: str,
                  panels: Sequence[Panel] = (Panel(),), background: Sequence[Trace] = (),
                  active: int = 0, title: str = "", height: int = 460,
                  digits: int = DIGITS) -> SliderFigure:
    """A figure whose slider steps through ``frames``.

    Args:
        name: the figure's name, e.g. ``01-step-size`` (its file and element ids).
        frames: ``(label, traces)`` per slider position, in order; every frame has the
            same number of traces, the i-th of each frame replacing the i-th of the last.
        slider_label: what the slider moves (shown before the current label).
        panels: the panels, side by side, with their axes.
        background: traces drawn under the frames and never changed (contour lines).
        active: the frame shown first.
        title: a title above the panels.
        height: the figure's height in pixels.
        digits: significant digits of every number in the page.

    Raises:
        ValueError: a bad name, no frames, frames with different numbers of traces, or
            a trace in a panel that does not exist.
    """
    if not NAME.match(name):
        raise ValueError(f"name must be lower-case words joined by hyphens, got {name!r}")
    if not frames:
        raise ValueError("a slider figure needs at least one frame")
    counts = {len(traces) for _, traces in frames}
    if len(counts) != 1:
        raise ValueError(f"every frame must have the same number of traces, got {sorted(counts)}")
    for trace in [*background, *(t for _, traces in frames for t in traces)]:
        if not 0 <= trace.panel < len(panels):
            raise ValueError(f"trace {trace.name!r} is in panel {trace.panel}, "
                             f"but there are {len(panels)} panels")
    if not 0 <= active < len(frames):
        raise ValueError(f"active must index a frame (0..{len(frames) - 1}), got {active}")
    labels = tuple(str(label) for label, _ in frames)
    if len(set(labels)) != len(labels):
        raise ValueError(f"frame labels must be distinct, got {labels}")

    everything = [*background, *(t for _, traces in frames for t in traces)]
    quanta = [_quanta(panel, [t for t in everything if t.panel == i], digits)
              for i, panel in enumerate(panels)]
    n_back = len(background)
    back = [t.plotly(len(PALETTE) - 2, digits, quanta[t.panel]) for t in background]

    def traces(frame):
        return [t.plotly(i, digits, quanta[t.panel]) for i, t in enumerate(frame)]

    plotly_frames = [{"name": label, "data": traces(frame),
                      "traces": list(range(n_back, n_back + len(frame)))}
                     for label, frame in frames]
    steps = [{"label": label, "method": "animate",
              "args": [[label], {"mode": "immediate", "frame": {"duration": 0, "redraw": False},
                                 "transition": {"duration": 0}}]}
             for label in labels]
    layout = {
        "template": {"layout": {"font": {"family": "sans-serif", "size": 13},
                                "plot_bgcolor": "white", "paper_bgcolor": "white"}},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 40 if title else 20, "b": 40},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "hovermode": "closest",
        "sliders": [{"active": active, "steps": steps, "pad": {"t": 72}, "len": 1.0, "x": 0,
                     "currentvalue": {"prefix": f"{slider_label} = ", "font": {"size": 14}}}],
        **_axes(panels),
    }
    if title:
        layout["title"] = {"text": title, "x": 0.5}
    figure = {"data": back + plotly_frames[active]["data"], "layout": layout,
              "frames": plotly_frames}
    return SliderFigure(name=name, html=_page(name, figure, title or name), labels=labels,
                        slider_label=slider_label, height=height, figure=figure)


def _page(name: str, figure: dict, title: str) -> str:
    """The figure as a complete HTML page that loads ``plotly.min.js`` from its own folder."""
    import plotly.io as pio

    body = pio.to_html(figure, include_plotlyjs="directory", full_html=False,
                       div_id=f"fig-{name}", validate=True, auto_play=False,
                       config={"displaylogo": False, "responsive": True,
                               "modeBarButtonsToRemove": ["sendDataToCloud"]})
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n"
            "<style>html, body { margin: 0; background: white; }</style>\n"
            f"</head>\n<body>\n{body.strip()}\n</body>\n</html>\n")


def book_root() -> Path | None:
    """The book's source folder (the one with ``_config.yml``) that this optlib belongs
    to, or None for an installed optlib (Colab, ``pip install``)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "_config.yml").is_file() and (root / "chapters").is_dir() else None


def write(figure: SliderFigure, folder: Path | None = None) -> Path:
    """Write the figure's page into ``folder`` (the book's :data:`FOLDER` by default)."""
    if folder is None:
        root = book_root()
        if root is None:
            raise RuntimeError("no book source folder to write into (optlib is not a checkout)")
        folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / figure.filename
    data = figure.html.encode("utf-8")
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)
    return path


def show(figure: SliderFigure, *, measured: bool = False) -> None:
    """Display the figure; when the chapter executes for the record, first write its page
    into the book's source (:func:`write`), which the output's iframe shows.

    Args:
        figure: the figure (:func:`slider_figure`).
        measured: the frames are timings of this machine (the performance appendix), so
            the cell is tagged ``nbval-ignore-output``, and another machine's re-run
            computes other frames. Its page is then written only by a run for the record
            (``scripts/run_notebook.py``, which sets ``optlib.book.numerics.RECORDING``), never by
            the nbval run, so that the committed page stays the one the committed output
            names.
    """
    from IPython.display import display

    if numerics.active_profile() is not None and (
            not measured or os.environ.get(numerics.RECORDING)):
        write(figure)
    display(figure)


def frames_over(values: Sequence, label: Callable[[object], str],
                compute: Callable[[object], Sequence[Trace]]) -> list[tuple[str, list[Trace]]]:
    """``[(label(v), compute(v)) for v in values]``: the frames of a slider over ``values``."""
    return [(label(v), list(compute(v))) for v in values]
