"""Serve MathJax from the book itself (``_vendor/mathjax``), so math renders without internet.

``make mathjax`` (run by ``make book``, ``make book-strict`` and ``make student``) unpacks
the npm package ``mathjax`` (version pinned in the Makefile) into ``_vendor/mathjax/``.
When that folder is there, this extension adds ``_vendor`` to ``html_static_path`` (so the
site gets ``_static/mathjax/``) and points Sphinx's ``mathjax_path`` at it; the built site
then loads nothing from outside. (Not ``_static/``: Jupyter Book would add every ``.js``
file under a ``_static`` folder to every page.)
When it is missing (a bare ``jupyter-book build`` before ``make mathjax``), the book
falls back to Sphinx's default, MathJax from a CDN, and says so in the build log.
"""

from __future__ import annotations

from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

VENDOR = "_vendor"
ENTRY = "mathjax/tex-mml-chtml.js"


def _use_local_mathjax(app, config):
    vendor = Path(app.srcdir) / VENDOR
    if (vendor / ENTRY).is_file():
        config.mathjax_path = ENTRY
        if VENDOR not in config.html_static_path:
            config.html_static_path = [*config.html_static_path, VENDOR]
    else:
        logger.info(
            "offline_mathjax: %s not found; math will load MathJax from a CDN "
            "(run `make mathjax` to serve it locally)", vendor / ENTRY
        )


def setup(app):
    app.connect("config-inited", _use_local_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
