"""Serve the chapters' interactive figures and plotly's JavaScript from the book itself.

A chapter that executes for the record writes each interactive figure as a complete HTML
page into ``_figures/interactive/`` (``optlib.book.interactive``), and its output is an
``<iframe>`` of ``_static/interactive/NAME.html``. This extension adds ``_figures`` to
``html_static_path`` (so the site gets ``_static/interactive/``) and, after the build,
copies ``plotly.min.js`` from the installed plotly package (``requirements.txt`` pins
it) beside the pages, which load it from their own folder: the figures work offline and
without a server, and the site fetches nothing from a CDN. (Not a ``_static/`` source
folder: Jupyter Book would add every ``.js`` file there to every page.)

Without plotly installed, the build warns (an error under ``make book-strict``) and the
figures stay blank.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

SOURCE = "_figures"
FOLDER = "interactive"


def _add_static(app, config):
    if (Path(app.srcdir) / SOURCE / FOLDER).is_dir() and SOURCE not in config.html_static_path:
        config.html_static_path = [*config.html_static_path, SOURCE]


def plotly_js() -> Path | None:
    """``plotly.min.js`` of the installed plotly package, or None without plotly."""
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _copy_plotly(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    if not (Path(app.srcdir) / SOURCE / FOLDER).is_dir():
        return
    source = plotly_js()
    if source is None:
        logger.warning("interactive_figures: plotly is not installed, so the interactive "
                       "figures have no plotly.min.js (pip install -r requirements.txt)")
        return
    target = Path(app.outdir) / "_static" / FOLDER
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target / "plotly.min.js")


def setup(app):
    app.connect("config-inited", _add_static)
    app.connect("build-finished", _copy_plotly)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
