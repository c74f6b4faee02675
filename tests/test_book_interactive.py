"""optlib.book.interactive: figures with a slider, written as pages that the book serves.

The page of a figure must be a function of its frames only (fixed ids, rounded numbers),
so that nbval can compare the iframe that names its SHA-256; each committed page must be
the one its chapter's output names; and the page must load plotly from its own folder.
The browser test (tests/test_book_site.py) moves the sliders on the built site.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import nbformat
import pytest
import repository

import optlib
import optlib.book as book
from optlib.book import interactive as I  # noqa: N812 (the module's short name in tests)

ROOT = Path(__file__).resolve().parents[1]
IFRAME = re.compile(r'<iframe src="\.\./_static/interactive/([^"]+)"[^>]*data-sha256="([0-9a-f]{64})"')


def _figure(shift: float = 0.0, name: str = "00-test", **options):
    """A two-panel figure over three values of k; ``shift`` perturbs every number."""
    def frame(k):
        xs = [0.0, 1.0, 2.0, 3.0]
        return [I.line([x + shift for x in xs], [k * x / 3 + shift for x in xs], "path"),
                I.line(xs, [math.exp(-k * x) * (1 + shift) for x in xs], "loss", panel=1)]

    return I.slider_figure(
        name, I.frames_over([0.5, 1.0, 2.0], lambda k: f"{k:g}", frame), slider_label="k",
        panels=[I.Panel("x", "y", (-1, 4), (-1, 3)),
                I.Panel("step", "loss", yrange=(1e-3, 1), logy=True)],
        background=[I.line([-1, 4], [0, 0], "floor", color="#999999", legend=False)], **options)


def _data_numbers(page: str) -> list[str]:
    """Every number in the x and y arrays of the page's traces (as written)."""
    return [n for arr in re.findall(r'"[xy]":\[([^\]]*)\]', page)
            for n in arr.split(",") if n and n != "null"]


def test_rounded_keeps_significant_digits_and_drops_round_off():
    assert I.rounded([1 / 3, 2 / 3, 123456.7, -0.0]) == [0.3333, 0.6667, 123500.0, 0.0]
    assert I.rounded([math.nan, math.inf, -math.inf, 1.0]) == [None, None, None, 1.0]
    # On a linear axis spanning about 4, round-off (2.8e-17 for zero) becomes 0.
    assert I.quantum(4.0) == 1e-4 and I.quantum(0.05) == 1e-6 and I.quantum(0.0) == 1e-4
    assert I.rounded([2.7755575615628914e-17, 0.1 + 0.2, 1.23456e30], quantum=1e-4) == [
        0.0, 0.3, 1.235e30]
    assert str(I.rounded([-1e-20], quantum=1e-4)[0]) == "0.0"  # not -0.0


def test_same_frames_give_the_same_bytes():
    a, b = _figure(), _figure()
    assert a.html == b.html and a.digest == b.digest
    # Differences far below the printed digits (another CPU's last bits) change nothing.
    assert _figure(shift=1e-13).html == a.html
    # A real difference changes the page and its digest.
    assert _figure(shift=1e-2).digest != a.digest
    assert a.digest == hashlib.sha256(a.html.encode()).hexdigest()


def test_page_numbers_are_rounded_and_ids_fixed():
    page = _figure().html
    numbers = _data_numbers(page)
    assert numbers, "no data found in the page"
    for n in numbers:
        mantissa = n.lower().split("e")[0].lstrip("-").replace(".", "").strip("0")
        assert len(mantissa) <= I.DIGITS, f"{n} has more than {I.DIGITS} significant digits"
    assert 'id="fig-00-test"' in page
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}", page), "a random id in the page"


def test_page_loads_plotly_from_its_own_folder_and_nothing_remote():
    page = _figure().html
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    assert scripts == ["plotly.min.js"]
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert '"autoplay"' not in page and "Plotly.animate('fig-00-test', null" not in page


def test_frames_slider_and_fixed_axes():
    fig = _figure()
    spec = fig.figure
    assert [f["name"] for f in spec["frames"]] == ["0.5", "1", "2"]
    assert all(f["traces"] == [1, 2] for f in spec["frames"])  # after the one background trace
    slider = spec["layout"]["sliders"][0]
    assert [s["label"] for s in slider["steps"]] == ["0.5", "1", "2"]
    assert all(s["method"] == "animate" for s in slider["steps"])
    assert spec["layout"]["yaxis2"]["type"] == "log" and spec["layout"]["yaxis2"]["range"] == [-3.0, 0.0]
    assert spec["layout"]["xaxis"]["range"] == [-1.0, 4.0]
    assert fig.summary() == "interactive figure 00-test: a slider over k = 0.5 … 2 (3 frames)"
    shown = _figure(active=2).figure
    assert shown["data"][1:] == shown["frames"][2]["data"] and shown["layout"]["sliders"][0]["active"] == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "Bad Name"}, "lower-case"),
    ({"frames": []}, "at least one frame"),
    ({"frames": [("a", [I.line([0], [0])]), ("b", [])]}, "same number of traces"),
    ({"frames": [("a", [I.line([0], [0], panel=3)])]}, "panel 3"),
    ({"frames": [("a", [I.line([0], [0])]), ("a", [I.line([0], [1])])]}, "distinct"),
    ({"active": 5}, "active"),
])
def test_bad_figures_are_refused(change, message):
    arguments = {"name": "00-x", "frames": [("a", [I.line([0], [0])])], "slider_label": "k"}
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        I.slider_figure(**arguments)


def test_notebook_output_is_the_iframe_when_recording(monkeypatch):
    fig = _figure()
    monkeypatch.setenv("OPTLIB_NUMERICS", "record")
    bundle = fig._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}
    assert IFRAME.search(bundle["text/html"]).groups() == ("00-test.html", fig.digest)
    assert bundle["text/plain"] == fig.summary()
    monkeypatch.delenv("OPTLIB_NUMERICS")
    import plotly.io as pio

    monkeypatch.setattr(pio.renderers, "default", "notebook_connected")  # as in Jupyter
    reader = fig._repr_mimebundle_()  # a reader's Jupyter: plotly's own renderer
    assert "Plotly.newPlot" in reader["text/html"] and "_static/interactive" not in reader["text/html"]


def test_show_writes_a_measured_figure_only_for_the_record(monkeypatch):
    """A figure of timings is written by scripts/run_notebook.py (RECORDING set), not by the
    nbval run of another machine; any other figure is written whenever a profile is on."""
    from optlib.book import numerics

    written = []
    monkeypatch.setattr(I, "write", lambda figure, folder=None: written.append(figure.name))
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    monkeypatch.setenv(numerics.MARKER, "timing")
    monkeypatch.delenv(numerics.RECORDING, raising=False)
    I.show(_figure(name="00-measured"), measured=True)
    I.show(_figure(name="00-exact"))
    assert written == ["00-exact"]
    monkeypatch.setenv(numerics.RECORDING, "1")
    I.show(_figure(name="00-measured"), measured=True)
    assert written == ["00-exact", "00-measured"]
    monkeypatch.delenv(numerics.MARKER)  # a reader's Jupyter: nothing is written
    I.show(_figure(name="00-reader"), measured=True)
    I.show(_figure(name="00-reader"))
    assert written == ["00-exact", "00-measured"]


def test_run_notebook_marks_its_kernels_as_recording():
    text = (ROOT / "scripts" / "run_notebook.py").read_text(encoding="utf-8")
    assert "os.environ[numerics.RECORDING] = \"1\"" in text


def test_measured_figures_are_exactly_the_ignored_ones():
    """A figure shown with measured=True sits in a cell whose output nbval ignores (its
    frames are timings), and a figure in such a cell is shown with measured=True (else the
    nbval run would rewrite its committed page)."""
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            ignored = "nbval-ignore-output" in cell.metadata.get("tags", [])
            measured = "measured=True" in cell.source
            shows = any(IFRAME.search("".join(out.get("data", {}).get("text/html", "")))
                        for out in cell.get("outputs", []))
            if measured:
                assert ignored, f"{path.name} cell {i}: a measured figure in a compared cell"
            if shows and ignored:
                assert measured, f"{path.name} cell {i}: a figure in an ignored cell, not measured"


def test_write_is_byte_identical_and_only_rewrites_a_changed_page(tmp_path):
    path = I.write(_figure(), tmp_path)
    first = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    assert I.write(_figure(), tmp_path).read_bytes() == first
    assert path.stat().st_mtime_ns == stamp
    assert hashlib.sha256(first).hexdigest() == _figure().digest


def test_contours_of_a_surface_are_one_grey_trace():
    trace = I.contours(book.surfaces.quadratic(condition=10.0), levels=5)
    assert trace.legend is False and len(trace.x) == len(trace.y) > 50
    assert sum(math.isnan(v) for v in trace.x) >= 5  # the lines are separated by gaps


# ------------------------------------------------- the committed pages and the chapters

def _chapter_iframes() -> dict[str, tuple[str, str]]:
    found = {}
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                text = out.get("data", {}).get("text/html", "")
                text = "".join(text) if isinstance(text, list) else text
                for name, digest in IFRAME.findall(text):
                    assert name not in found, f"{name} is shown twice"
                    found[name] = (path.name, digest)
    return found


def test_each_committed_page_is_the_one_its_chapter_shows():
    """The page a chapter's iframe names exists, and its SHA-256 is the one in the output
    (nbval compares the output, so the page is the one the chapter computes)."""
    folder = ROOT / I.FOLDER
    shown = _chapter_iframes()
    for name, (chapter, digest) in shown.items():
        page = folder / name
        assert page.is_file(), f"{chapter} shows {name}, which is not in {I.FOLDER}"
        assert hashlib.sha256(page.read_bytes()).hexdigest() == digest, (
            f"{I.FOLDER}/{name} is not the page {chapter} made: re-run the chapter")
        assert name.split("-")[0] == chapter.split("_")[0], f"{name} is not named after {chapter}"
    committed = {p.name for p in folder.glob("*.html")} if folder.is_dir() else set()
    assert not committed - set(shown), f"pages no chapter shows: {sorted(committed - set(shown))}"


def test_the_book_serves_plotly_itself():
    module = repository.load("_ext/interactive_figures.py", "interactive_figures")
    path = module.plotly_js()
    assert path is not None and path.stat().st_size > 1_000_000
    assert module.SOURCE / Path(module.FOLDER) == I.FOLDER
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    assert "interactive_figures: _ext" in config
    assert json.loads('"' + I.URL + '"').endswith("_static/" + module.FOLDER)


def test_descent_is_the_path_and_the_loss_left():
    surface = book.surfaces.quadratic(condition=10.0)
    path = book.surfaces.run(surface, lambda p: optlib.SGD(p, lr=0.1), [1.0, 1.0], 5)
    trail, loss = I.descent(surface, path)
    assert (trail.panel, loss.panel) == (0, 1) and len(trail.x) == len(loss.y) == 6
    assert loss.y[0] == 1.0 and loss.y[-1] < 1.0
    panels = I.descent_panels(surface, 5)
    assert panels[0].equal and panels[1].logy and panels[1].xrange == (0, 5)
