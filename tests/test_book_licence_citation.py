"""A reader of the site finds the licences, how to cite the book and where to report an error.

Static checks of the repository's files (the browser test sees the built footer):
``LICENSE`` (MIT, the code) and ``LICENSE-text`` (CC BY 4.0, the text and figures) exist,
``CITATION.cff`` names the repository of ``_config.yml`` and the version of ``optlib``
(``make lint`` validates it against the Citation File Format's schema), the theme's issues
button is on and the footer of every page links to the licences, the citation file and the
issues of that same repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import optlib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPOSITORY = CONFIG["repository"]["url"].rstrip("/")


def test_licence_files():
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    text = (ROOT / "LICENSE-text").read_text(encoding="utf-8")
    assert "CC BY 4.0" in text and "creativecommons.org/licenses/by/4.0" in text


def test_citation_names_this_repository_and_version():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["repository-code"].rstrip("/") == REPOSITORY
    assert str(cff["version"]) == optlib.__version__
    assert set(cff["license"]) == {"MIT", "CC-BY-4.0"}


def test_issues_button_and_footer():
    html = CONFIG["html"]
    assert html["use_issues_button"] is True
    links = re.findall(r'href="([^"]+)"', html["extra_footer"])
    ours = {link[len(REPOSITORY):] for link in links if link.startswith(REPOSITORY)}
    assert ours == {"/blob/main/LICENSE", "/blob/main/LICENSE-text", "/blob/main/CITATION.cff",
                    "/issues"}, links
    assert "https://creativecommons.org/licenses/by/4.0/" in links
    foreign = [link for link in links if "github.com" in link and not link.startswith(REPOSITORY)]
    assert not foreign, f"footer links to another repository than _config.yml's: {foreign}"


def test_one_version_in_pyproject_optlib_and_citation():
    """A release tag vX.Y.Z names all three (notes/release.md, .github/workflows/release.yml)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert project["version"] == optlib.__version__ == str(cff["version"])
