"""Make sphinx-exercise's ``hide_solutions`` hide *gated* solutions too.

sphinx-exercise 1.2 drops ``{solution}`` and ``{solution-start}`` when ``hide_solutions``
is on, but keeps ``{solution-end}`` (a node no writer knows: the build fails) and
everything between the two, which is the solution itself (code cells included). With
``hide_solutions`` on, this extension replaces both gated directives by markers and
removes each ``{solution-start}`` ... ``{solution-end}`` span, markers included.
With it off (the normal book), it does nothing.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.transforms import SphinxTransform
from sphinx.util import logging
from sphinx_exercise.directive import SolutionEndDirective, SolutionStartDirective

logger = logging.getLogger(__name__)


class hidden_solution_start(nodes.Element):
    pass


class hidden_solution_end(nodes.Element):
    pass


class HiddenSolutionStart(SolutionStartDirective):
    def run(self):
        return [hidden_solution_start()]


class HiddenSolutionEnd(SolutionEndDirective):
    def run(self):
        return [hidden_solution_end()]


class RemoveGatedSolutions(SphinxTransform):
    default_priority = 9  # before sphinx-exercise's own gated transforms

    def apply(self):
        for start in list(self.document.findall(hidden_solution_start)):
            parent = start.parent
            siblings = parent.children
            i = siblings.index(start)
            j = next((k for k in range(i + 1, len(siblings))
                      if isinstance(siblings[k], hidden_solution_end)), None)
            if j is None:
                logger.warning("solution-start without a solution-end after it",
                               location=start, type="exercise", subtype="gated")
                parent.remove(start)
                continue
            for node in siblings[i:j + 1]:
                parent.remove(node)
        for end in list(self.document.findall(hidden_solution_end)):
            logger.warning("solution-end without a solution-start before it",
                           location=end, type="exercise", subtype="gated")
            end.parent.remove(end)


def _install(app, config):
    if config.hide_solutions:
        app.add_directive("solution-start", HiddenSolutionStart, override=True)
        app.add_directive("solution-end", HiddenSolutionEnd, override=True)


def setup(app):
    app.setup_extension("sphinx_exercise")
    app.add_node(hidden_solution_start)
    app.add_node(hidden_solution_end)
    app.add_transform(RemoveGatedSolutions)
    app.connect("config-inited", _install)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
