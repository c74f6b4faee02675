"""The API reference's lists, generated from ``optlib.__all__``.

``api.md`` does not name the optimizers and tools one by one: it places a directive per
section, and this extension fills it from ``optlib.__all__`` in that order, an
autosummary table (name and first docstring line) followed by each object's autodoc
entry. A new optimizer or tool, once exported in ``optlib.__all__``, appears in the
reference without editing ``api.md``::

    ```{optlib-api} torch-family
    ```

Sections:

- ``torch-family``: the optimizers that ``torch.optim`` also has (same name);
- ``beyond``: the other optimizers; each followed by the exported functions of its own
  module (``muon_param_groups`` after ``MuonWithAdamW``, ``gnb_update_hessian`` after
  ``SophiaG``);
- ``tools``: the other exported functions;
- ``machinery``: how an optimizer is written (the names of ``MACHINERY``).

Exported modules (``optlib.schedules``) are documented by an ``automodule`` of their own
in ``api.md``. At the end of the build, every name of ``optlib.__all__`` must be
documented in the Python domain (as ``optlib.NAME``, or as a module): a name that no
section and no ``automodule`` covers is a warning, which ``make book-strict`` (``-W``)
turns into an error.
"""

from __future__ import annotations

import inspect

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

SECTIONS = ("torch-family", "beyond", "tools", "machinery")
# The building blocks of every optimizer: documented together at the end of the page.
MACHINERY = ("Optimizer", "TensorList", "PerTensor", "compile")
# autodoc options of a few classes whose methods a user calls (the others document the
# constructor only: their methods are the base class's step, state_dict, ...).
OPTIONS = {
    "Optimizer": [":members: init_state, update, step, step_values", ":undoc-members:"],
    "SophiaG": [":members: update_hessian, step"],
    "AdamWScheduleFree": [":members: train, eval, step, add_param_group", ":undoc-members:"],
}


def _optlib():
    import optlib

    return optlib


def _is_optimizer(obj) -> bool:
    import torch

    return inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer)


def section_of(name: str, obj) -> str | None:
    """The section that documents ``optlib.NAME``, or None (an exported module)."""
    import torch

    optlib = _optlib()
    if inspect.ismodule(obj):
        return None
    if name in MACHINERY:
        return "machinery"
    if _is_optimizer(obj):
        return "torch-family" if hasattr(torch.optim, name) else "beyond"
    # A function of an optimizer's module goes with the last exported optimizer of it.
    for other in reversed(optlib.__all__):
        cls = getattr(optlib, other)
        if _is_optimizer(cls) and other not in MACHINERY and cls.__module__ == getattr(
                obj, "__module__", None):
            return section_of(other, cls)
    return "tools"


def entries(section: str) -> list[str]:
    """The names of ``optlib.__all__`` in ``section``, companions after their optimizer."""
    optlib = _optlib()
    names = [n for n in optlib.__all__ if section_of(n, getattr(optlib, n)) == section]
    if section not in ("torch-family", "beyond"):
        return names
    placed = [n for n in names if _is_optimizer(getattr(optlib, n))]
    # A function follows the last exported optimizer of its module.
    for n in names:
        if n in placed:
            continue
        module = getattr(optlib, n).__module__
        owners = [i for i, c in enumerate(placed) if getattr(optlib, c).__module__ == module]
        placed.insert(owners[-1] + 1 if owners else len(placed), n)
    return placed


class OptlibApi(SphinxDirective):
    """``{optlib-api} SECTION``: the autosummary table and autodoc entries of a section."""

    required_arguments = 1
    has_content = False

    def run(self):
        section = self.arguments[0]
        if section not in SECTIONS:
            raise self.error(f"optlib-api: unknown section {section!r}; one of {SECTIONS}")
        optlib = _optlib()
        names = entries(section)
        if not names:
            return []
        # Short names in the table and in its first docstring lines resolve in optlib.
        lines = [".. currentmodule:: optlib", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {n}" for n in names]
        lines.append("")
        for n in names:
            obj = getattr(optlib, n)
            kind = "autoclass" if inspect.isclass(obj) else "autofunction"
            lines.append(f".. {kind}:: optlib.{n}")
            lines += [f"   {option}" for option in OPTIONS.get(n, [])]
            lines.append("")
        if type(self.state).__module__.startswith("myst_parser"):
            # In a MyST page (api.md), nested content is parsed as Markdown.
            lines = ["```{eval-rst}", *lines, "```"]
        source = self.get_source_info()[0]
        content = StringList(lines, source=source)
        node = nodes.container()
        self.state.nested_parse(content, self.content_offset, node)
        return node.children


def check_all_documented(app, env):
    """Warn for every name of ``optlib.__all__`` that the reference does not document."""
    optlib = _optlib()
    domain = env.get_domain("py")
    documented = set(domain.objects) | set(domain.modules)
    for name in optlib.__all__:
        if f"optlib.{name}" not in documented:
            logger.warning(
                "optlib.%s is in optlib.__all__ but not in the API reference "
                "(no {optlib-api} section or automodule documents it)", name,
                type="optlib_api", location="api")


def setup(app):
    app.setup_extension("sphinx.ext.autosummary")
    app.add_directive("optlib-api", OptlibApi)
    app.connect("env-check-consistency", check_all_documented)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
