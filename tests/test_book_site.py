"""The built book, checked in a real browser (headless Chromium driven by Selenium).

Serves the built site on localhost and opens every page of ``_toc.yml`` in Debian's
``chromium``: each page renders (a title and an article), its images load
(``naturalWidth > 0``), its internal links resolve (HTTP 200, and the ``#fragment`` exists
on the target page), its math is typeset by MathJax with no errors, and nothing is
fetched from outside localhost (the browser's DNS is switched off for every other host, so
a CDN MathJax or a remote image would fail the test). Each chapter's Colab button must
open that chapter's notebook in the repository named by ``_config.yml``. Every
interactive figure (``optlib.book.interactive``: an iframe of a plotly page) draws with the
book's own ``plotly.min.js``, and moving its slider, as a reader does with the mouse,
changes the plotted lines.

Run it after a build: ``make book`` (or ``make book-strict``), then ``make browser-test``.
Skipped when there is no built site (the plain ``make unit`` run before any build) or no
browser (``OPTLIB_REQUIRE_BROWSER=1``, set by ``.ci/run`` once it has installed chromium,
turns a missing browser into a failure). ``OPTLIB_BOOK_HTML=DIR`` checks another build;
``OPTLIB_STUDENT_HTML=DIR`` the student edition (default ``_build/student/html``);
``OPTLIB_BOOK_TOC=FILE`` reads the pages from another table of contents.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
import repository
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("OPTLIB_BOOK_HTML", ROOT / "_build" / "html"))
STUDENT_SITE = Path(os.environ.get("OPTLIB_STUDENT_HTML", ROOT / "_build" / "student" / "html"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REQUIRE_BROWSER = os.environ.get("OPTLIB_REQUIRE_BROWSER") == "1"
PAGE_TIMEOUT_S = 60

# Console errors that come from the toolchain, not from the book, and break nothing:
# sphinx-thebe's config script is emitted twice by Jupyter Book 1.0.4 (present with the
# repository's first, untouched _config.yml too; Thebe is not used by this book), the
# pydata theme logs an empty saved theme mode on a first visit, and there is no favicon.
KNOWN_CONSOLE_NOISE = re.compile(
    r"Identifier 'THEBE_JS_URL' has already been declared"
    r"|Got invalid theme mode"
    r"|/favicon\.ico - Failed to load resource"
)


# ---------------------------------------------------------------- what the book contains

def _toc_files(node) -> list[str]:
    """Every ``file:`` entry of the table of contents, in reading order."""
    if isinstance(node, list):
        return [f for item in node for f in _toc_files(item)]
    if not isinstance(node, dict):
        return []
    files = [node["file"]] if "file" in node else []
    files += [node["root"]] if "root" in node else []
    for key in ("parts", "chapters", "sections"):
        files += _toc_files(node.get(key, []))
    return files


TOC_PATH = Path(os.environ.get("OPTLIB_BOOK_TOC", ROOT / "_toc.yml"))
TOC = yaml.safe_load(TOC_PATH.read_text(encoding="utf-8"))
PAGES = [str(Path(f).with_suffix("")) for f in _toc_files(TOC)]
CHAPTERS = [p for p in PAGES if (ROOT / f"{p}.ipynb").is_file()]


def colab_url(page: str) -> str:
    """The launch URL that the book theme must give the notebook ``page``."""
    repo = CONFIG["repository"]
    owner_name = urlsplit(repo["url"]).path.strip("/")
    prefix = repo.get("path_to_book", "").strip("/")
    path = f"{prefix}/{page}.ipynb" if prefix else f"{page}.ipynb"
    base = CONFIG["launch_buttons"]["colab_url"].rstrip("/")
    return f"{base}/github/{owner_name}/blob/{repo.get('branch', 'main')}/{path}"


# ------------------------------------------------------------------------ the test bench

def _skip_or_fail(reason: str):
    if REQUIRE_BROWSER:
        pytest.fail(reason)
    pytest.skip(reason)


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return chromium, driver


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the stdlib's name)
        pass


def _serve(directory: Path):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").is_file():
        pytest.skip(f"no built book in {SITE}: run `make book` first")
    server, base = _serve(SITE)
    yield base
    server.shutdown()
    server.server_close()


def _make_browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _skip_or_fail("selenium is not installed (pip install selenium)")
    chromium, driver = _browser_paths()
    for path in (chromium, driver):
        if not Path(path).is_file():
            _skip_or_fail(f"{path} not found: install Debian's chromium and chromium-driver "
                          "(apt-get install -y chromium chromium-driver; .ci/run does this)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update",
        "--disable-default-apps", "--disable-extensions", "--disable-sync",
        "--no-first-run", "--no-default-browser-check", "--window-size=1280,1000",
        # Every host but localhost is unresolvable: the site must be self-contained.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    browser.set_page_load_timeout(PAGE_TIMEOUT_S)
    browser.set_script_timeout(PAGE_TIMEOUT_S)
    return browser


@pytest.fixture(scope="module")
def browser(site):
    b = _make_browser()
    yield b
    b.quit()


@functools.cache
def _fetch(url: str) -> tuple[int, str]:
    """HTTP status and (for HTML) text of a URL on the local server."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, body.decode("utf-8", "replace") if "html" in kind else ""
    except urllib.error.HTTPError as error:
        return error.code, ""


def _open(browser, url: str):
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (document.readyState === 'complete') done();"
        "else window.addEventListener('load', () => done());"
    )


# ------------------------------------------------------------------------------ the tests

@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_images_math_and_links(site, browser, page):
    from selenium.webdriver.common.by import By

    url = urljoin(site, f"{page}.html")
    assert _fetch(url)[0] == 200, f"{url} is not served"
    _open(browser, url)

    # Renders: a title, an article with a heading, no Python traceback in the text.
    assert browser.title.strip(), f"{page}: empty <title>"
    articles = browser.find_elements(By.CSS_SELECTOR, "article.bd-article")
    assert articles, f"{page}: no article element"
    assert articles[0].find_elements(By.CSS_SELECTOR, "h1"), f"{page}: the article has no <h1>"

    # Images: every <img> on the page has loaded.
    broken = browser.execute_script(
        "return Array.from(document.images)"
        "  .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);"
    )
    assert not broken, f"{page}: images that did not load: {broken}"

    # Math: MathJax is the local copy, has finished, typeset every formula, and no errors.
    n_math = len(browser.find_elements(By.CSS_SELECTOR, ".math"))
    if n_math:
        sources = browser.execute_script(
            "return Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s));"
        )
        assert sources and all(s.startswith(site) for s in sources), (
            f"{page}: MathJax must be served by the book itself (run `make mathjax`): {sources}")
        browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)"
            "  ? MathJax.startup.promise.then(() => done(), () => done())"
            "  : setTimeout(wait, 100);"
            "wait();"
        )
        typeset = len(browser.find_elements(By.CSS_SELECTOR, "mjx-container"))
        errors = browser.find_elements(By.CSS_SELECTOR, "mjx-merror")
        assert typeset >= n_math, f"{page}: {n_math} formulas but {typeset} typeset by MathJax"
        assert not errors, f"{page}: MathJax errors: {[e.text for e in errors][:5]}"

    # Internal links: every link to this site resolves, and so does its #fragment.
    hrefs = browser.execute_script("return Array.from(document.links).map(a => a.href);")
    bad = []
    for href in sorted(set(hrefs)):
        if not href.startswith(site):
            continue
        target, fragment = urldefrag(href)
        status, html = _fetch(target)
        if status != 200:
            bad.append(f"{href} (HTTP {status})")
        elif fragment and html and not re.search(rf'\b(id|name)="{re.escape(fragment)}"', html):
            bad.append(f"{href} (no #{fragment} on the page)")
    assert not bad, f"{page}: broken internal links: {bad}"

    # Nothing failed to load (a blocked CDN, a missing script or font shows up here).
    severe = [e["message"] for e in browser.get_log("browser")
              if e.get("level") == "SEVERE" and not KNOWN_CONSOLE_NOISE.search(e["message"])]
    assert not severe, f"{page}: browser errors: {severe}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_colab_button_opens_this_chapter(site, browser, page):
    from selenium.webdriver.common.by import By

    _open(browser, urljoin(site, f"{page}.html"))
    links = [a.get_attribute("href") for a in browser.find_elements(
        By.CSS_SELECTOR, "a[href^='https://colab.research.google.com/']")]
    assert links == [colab_url(page)], f"{page}: Colab links {links}"


def _interactive_figures() -> list[tuple[str, str]]:
    """(page, figure file) for every interactive figure the chapters' outputs show."""
    import nbformat

    iframe = re.compile(r'<iframe src="\.\./_static/interactive/([^"]+)"')
    found = []
    for page in CHAPTERS:
        nb = nbformat.read(ROOT / f"{page}.ipynb", as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                text = out.get("data", {}).get("text/html", "")
                found += [(page, name) for name in iframe.findall(
                    "".join(text) if isinstance(text, list) else text)]
    return found


INTERACTIVE = _interactive_figures()

# Chapters that do not show an interactive figure yet (issue 21: every chapter gets one).
# A chapter leaves this set in the commit that adds its figure.
PENDING_INTERACTIVE: set[str] = set()


def test_every_chapter_shows_an_interactive_figure():
    """Every notebook of _toc.yml (the appendix too) shows at least one figure that the
    browser test below moves, except those in PENDING_INTERACTIVE, each of which must
    still have none (so that the set cannot outlive the figures it waits for)."""
    shown = {page for page, _ in INTERACTIVE}
    assert PENDING_INTERACTIVE <= set(CHAPTERS), (
        f"not chapters of _toc.yml: {sorted(PENDING_INTERACTIVE - set(CHAPTERS))}")
    missing = [page for page in CHAPTERS if page not in shown | PENDING_INTERACTIVE]
    assert not missing, f"chapters without an interactive figure: {missing}"
    done = sorted(PENDING_INTERACTIVE & shown)
    assert not done, f"these show an interactive figure now; remove them from PENDING: {done}"

# Inside a figure's iframe: the slider's position and the drawn lines (SVG paths).
_FIGURE_STATE = (
    "const g = document.querySelector('.plotly-graph-div');"
    "return {active: g._fullLayout.sliders[0].active,"
    "  steps: g._fullLayout.sliders[0].steps.length,"
    "  lines: Array.from(g.querySelectorAll('.scatterlayer .trace path.js-line'))"
    "    .map(p => p.getAttribute('d')).join('|'),"
    "  plotly: Array.from(document.scripts).map(s => s.src).filter(s => /plotly/.test(s))};"
)


@pytest.mark.parametrize(("page", "figure"), INTERACTIVE, ids=[f for _, f in INTERACTIVE])
def test_interactive_figure_moves_with_its_slider(site, browser, page, figure):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(browser, urljoin(site, f"{page}.html"))
    frames = [f for f in browser.find_elements(By.TAG_NAME, "iframe")
              if f.get_attribute("src").endswith(f"/_static/interactive/{figure}")]
    assert len(frames) == 1, f"{page}: {len(frames)} iframes of {figure}"
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", frames[0])
    browser.switch_to.frame(frames[0])
    try:
        browser.execute_async_script(  # the page has loaded plotly and drawn the figure
            "const done = arguments[arguments.length - 1];"
            "const ready = () => { const g = document.querySelector('.plotly-graph-div');"
            "  return window.Plotly && g && g._fullLayout && g._fullLayout.sliders; };"
            "const wait = () => ready() ? done() : setTimeout(wait, 100);"
            "wait();"
        )
        before = browser.execute_script(_FIGURE_STATE)
        assert before["plotly"] == [urljoin(site, "_static/interactive/plotly.min.js")], (
            f"{figure}: plotly must be the book's own copy: {before['plotly']}")
        assert before["steps"] > 1 and before["lines"], f"{figure}: no slider or no lines"
        # Drag the slider's grip to the far end from where it is, as a reader would.
        rail = browser.find_element(By.CSS_SELECTOR, ".slider-container .slider-rail-touch-rect")
        grip = browser.find_element(By.CSS_SELECTOR, ".slider-container .slider-grip-rect")
        to_end = before["active"] < before["steps"] / 2
        target = rail.location["x"] + (rail.size["width"] - 4 if to_end else 4)
        start = grip.location["x"] + grip.size["width"] / 2
        ActionChains(browser).drag_and_drop_by_offset(grip, int(target - start), 0).perform()
        browser.execute_async_script(
            "const done = arguments[arguments.length - 1], before = arguments[0];"
            "const g = document.querySelector('.plotly-graph-div'); let n = 0;"
            "const wait = () => (g._fullLayout.sliders[0].active !== before || ++n > 50)"
            "  ? setTimeout(done, 200) : setTimeout(wait, 100);"
            "wait();", before["active"])
        after = browser.execute_script(_FIGURE_STATE)
    finally:
        browser.switch_to.default_content()
    expected = before["steps"] - 1 if to_end else 0
    assert after["active"] == expected, f"{figure}: slider at {after['active']}, expected {expected}"
    assert after["lines"] != before["lines"], f"{figure}: the slider moved but the plot did not change"


def _pending_chapters() -> set[str]:
    """Chapters whose code or printed output is not yet wrapped to 88 columns
    (tests/test_notebook_line_length.py): the browser sees both in the same blocks."""
    module = repository.load("tests/test_notebook_line_length.py", "line_length")
    pending = module.CODE_NOT_YET_WRAPPED | module.OUTPUT_NOT_YET_WRAPPED
    return {f"chapters/{stem}" for stem in pending}


@pytest.mark.parametrize("page", PAGES)
def test_no_code_cell_scrolls_sideways(site, browser, page):
    """At the theme's full width (a 1440-pixel window: the article's code blocks hold 89
    columns; narrower windows shrink them), no code block or printed output scrolls."""
    if page in _pending_chapters():
        pytest.skip(f"{page}: code or output not yet wrapped to 88 columns")
    browser.set_window_size(1440, 1000)
    try:
        _open(browser, urljoin(site, f"{page}.html"))
        wide = browser.execute_script(
            "return Array.from(document.querySelectorAll('article pre'))"
            "  .filter(p => p.scrollWidth > p.clientWidth + 1)"
            "  .map(p => p.textContent.split('\\n')"
            "    .reduce((a, b) => a.length > b.length ? a : b));"
        )
    finally:
        browser.set_window_size(1280, 1000)
    assert not wide, f"{page}: blocks that scroll sideways; their longest lines: {wide[:5]}"


def test_student_edition_has_no_solutions(site):
    if not (STUDENT_SITE / "index.html").is_file():
        pytest.skip(f"no student edition in {STUDENT_SITE}: run `make student` first")
    solution = re.compile(r'class="[^"]*\bsolution\b')
    for page in CHAPTERS:
        full = (SITE / f"{page}.html").read_text(encoding="utf-8")
        student = (STUDENT_SITE / f"{page}.html").read_text(encoding="utf-8")
        assert solution.search(full), f"{page}: the full edition shows no solution"
        assert not solution.search(student), f"{page}: the student edition shows a solution"
        exercise = re.compile(r'class="[^"]*\bexercise\b')
        assert len(exercise.findall(student)) == len(exercise.findall(full)), (
            f"{page}: the editions have different exercises")
        notebook = STUDENT_SITE.parent / "notebooks" / f"{Path(page).name}.ipynb"
        assert notebook.is_file(), f"no student notebook {notebook}"
        text = notebook.read_text(encoding="utf-8")
        assert "{solution" not in text, f"{notebook} still has a solution"
        assert "{exercise" in text, f"{notebook} lost its exercises"


# ------------------------------------------------- the course guide's grader is real code

def _code_block(page: str, caption: str) -> str:
    text = (ROOT / page).read_text(encoding="utf-8")
    match = re.search(r"```\{code-block\} python\n:caption: " + re.escape(caption)
                      + r"\n\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert match, f"{page}: no code block captioned {caption}"
    return match.group(1)


def _text_blocks(page: str) -> list[str]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return re.findall(r"^```text\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_course_guide_grader_gives_what_the_guide_says(tmp_path, monkeypatch):
    import contextlib
    import io
    import runpy

    submission = _code_block("course_guide.md", "submission.py")
    (tmp_path / "grade.py").write_text(_code_block("course_guide.md", "grade.py"))
    (tmp_path / "good.py").write_text(submission)
    fixed = "m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)"
    assert fixed in submission
    (tmp_path / "bad.py").write_text(submission.replace(fixed, "m_hat, v_hat = m, v"))
    passing, failing = _text_blocks("course_guide.md")[-2:]

    def grade(name):  # python grade.py NAME, in this process
        monkeypatch.setattr("sys.argv", ["grade.py", str(tmp_path / name)])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(tmp_path / "grade.py"), run_name="__main__")
        return out.getvalue()

    expected = [line for line in passing.splitlines() if not line.startswith("$")]
    assert grade("good.py").splitlines() == expected
    got = grade("bad.py")
    for line in failing.splitlines():  # a line cut short with "…" shows how the output starts
        shown = line.removesuffix("…").rstrip()
        assert shown in got, f"the guide shows {line!r}; the grader printed:\n{got}"


# --------------------------------------------------- the student edition's notebooks

def _student_script():
    return repository.load("scripts/build_student.py", "build_student")


def test_student_notebooks_lose_every_solution_and_nothing_else():
    import nbformat.v4 as v4

    md, code = v4.new_markdown_cell, v4.new_code_cell
    nb = v4.new_notebook(cells=[
        md("## Exercises\n\n```{exercise} A\n:label: ex-a\nDo A.\n```\n"
           "````{solution} ex-a\n:class: dropdown\nSECRET-A\n```python\nx = 1\n```\n````\n"
           "```{exercise} B\n:label: ex-b\nDo B.\n```"),
        md("```{solution-start} ex-b\n:class: dropdown\n```\nSECRET-B"),
        code("secret_b = 2"),
        md("SECRET-B again\n```{solution-end}\n```\nAfter B."),
        md(":::{exercise} C\n:label: ex-c\nDo C.\n:::\n:::{solution} ex-c\nSECRET-C\n:::"),
        code("print('kept')"),
    ])
    assert _student_script().strip_solutions(nb) == 3
    text = "\n".join(c.source for c in nb.cells)
    assert "SECRET" not in text and "secret" not in text, text
    for kept in ("Do A.", "Do B.", "Do C.", "After B.", "print('kept')", "{exercise} C"):
        assert kept in text, f"{kept!r} was removed:\n{text}"


# ---------------------------------------------- the API reference covers the public API

def test_api_reference_documents_every_public_name():
    """api.md's ``{optlib-api}`` sections list ``optlib.__all__`` (_ext/optlib_api.py; its own
    tests are in tests/test_api_reference.py); the other entries must import."""
    import importlib

    api = (ROOT / "api.md").read_text(encoding="utf-8")
    for module in re.findall(r"\.\. automodule:: (\S+)", api):
        importlib.import_module(module)  # a typo in api.md would only show in the book build
    for target in re.findall(r"\.\. auto(?:class|function):: (\S+)", api):
        module, _, name = target.rpartition(".")
        assert hasattr(importlib.import_module(module), name), f"api.md: no {target}"
    # Every module of optlib.book that its docstring introduces has its own section.
    import optlib.book

    documented = set(re.findall(r"\.\. automodule:: optlib\.book\.(\w+)", api))
    introduced = re.findall(r":mod:`~optlib\.book\.(\w+)`", optlib.book.__doc__)
    assert "interactive" in introduced and "checking" in documented
    assert not [m for m in introduced if m not in documented], "api.md lacks them"
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(optlib.book.__path__)}
    assert not modules - set(introduced), "optlib.book's docstring does not name them"


# ------------------------------------------------------------------ the bibliography

# The works that issue #9 names, each to be in references.bib and cited in the book.
REQUIRED_REFERENCES = [
    "kingma2015adam", "loshchilov2019adamw", "you2017lars", "you2020lamb",
    "shazeer2018adafactor", "chen2023lion", "liu2024sophia", "jordan2024muon",
    "defazio2024schedulefree", "dettmers2022eightbit", "smith2017clr", "goyal2017imagenet",
    "polyak1964heavyball", "nesterov1983method", "sutskever2013importance", "duchi2011adagrad",
    "tieleman2012rmsprop", "vaswani2017attention", "goodfellow2016deep", "ruder2016overview",
]


def _book_text() -> str:
    import nbformat

    texts = []
    for page in PAGES:
        path = ROOT / f"{page}.md"
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8"))
        elif (ROOT / f"{page}.ipynb").is_file():
            nb = nbformat.read(ROOT / f"{page}.ipynb", as_version=4)
            texts += [c.source for c in nb.cells if c.cell_type == "markdown"]
    return "\n".join(texts)


def test_every_required_work_is_in_the_bibliography_and_cited():
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    keys = set(re.findall(r"@\w+\{([^,\s]+),", bib))
    assert not [k for k in REQUIRED_REFERENCES if k not in keys]
    cited = set()
    for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", _book_text()):
        cited.update(k.strip() for k in group.split(","))
    assert not [k for k in REQUIRED_REFERENCES if k not in cited], "cite them with {cite}`key`"
    assert not sorted(cited - keys), "citations of keys that references.bib lacks"
