# `make book` and `make test` are the two commands of the README's quick start. Each
# creates .venv (from requirements.txt) the first time, so a fresh machine with only
# Python and pip needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two workers on the 2-core build machine; each chapter keeps its torch to one thread.
JOBS   ?= 2

.PHONY: install test unit notebooks lint book book-strict student assignments browser-test mathjax bench gpu-check clean \
	package pdf

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

install: $(BIN)/.installed

test: lint unit notebooks

# ruff on the code; CITATION.cff and the GitHub workflows against their schemas (vendored
# in check-jsonschema, so no network; every job must have a timeout).
WORKFLOWS := $(wildcard .github/workflows/*.yml)
lint: install
	$(BIN)/ruff check optlib tests benchmarks scripts _ext
	$(BIN)/ruff check chapters          # their own rules: chapters/ruff.toml (88 columns)
	$(BIN)/ruff check --config chapters/ruff.toml assignments   # the same rules
	$(BIN)/check-jsonschema --builtin-schema vendor.citation-file-format CITATION.cff
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	$(BIN)/check-jsonschema --builtin-schema custom.github-workflows-require-timeout $(WORKFLOWS)

unit: install
	$(BIN)/python -m pytest tests -q -n $(JOBS)

# nbval re-executes every chapter and compares its text outputs with the committed ones.
notebooks: install
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --nbval --nbval-current-env chapters

# The reader's build: MathJax is served locally when npm can fetch it, else from a CDN.
book: install
	@$(MAKE) --no-print-directory mathjax \
		|| echo "note: MathJax not vendored (needs npm); the pages will load it from a CDN"
	$(BIN)/jupyter-book build .
	@echo "open _build/html/index.html"

book-strict: install mathjax
	$(BIN)/jupyter-book build -W -n --keep-going .

# The student edition, for teachers: the same book with every exercise's solution removed
# (sphinx-exercise's hide_solutions), built to _build/student/html.
student: install mathjax
	$(BIN)/python scripts/build_student.py

# The assignments for otter-grader (course_guide.md, "Assignments with otter-grader"): from
# each master notebook in assignments/ (a chapter's coding exercises, with solutions and
# tests), `otter assign` writes the student notebook and the autograder to
# _build/assignments/NAME/{student,autograder}.
assignments: install
	$(BIN)/python scripts/build_assignments.py _build/assignments

# Opens the built site (_build/html, from `make book` or `make book-strict`) in headless
# Chromium: pages render, images load, links resolve, math is typeset, Colab links are right.
# Needs Debian's chromium and chromium-driver (.ci/run installs them).
browser-test: install
	$(BIN)/python -m pytest -q tests/test_book_site.py

# MathJax served by the book itself, so math renders without internet: the npm package
# `mathjax`, unpacked into _vendor/mathjax (git-ignored; _ext/offline_mathjax.py uses it).
MATHJAX_VERSION := 3.2.2
MATHJAX_PARTS   := tex-mml-chtml.js a11y adaptors input output sre ui
mathjax: _vendor/mathjax/tex-mml-chtml.js

_vendor/mathjax/tex-mml-chtml.js:
	@command -v npm >/dev/null || { echo "npm (Node.js) is needed to fetch MathJax"; exit 1; }
	rm -rf _build/npm _vendor/mathjax && mkdir -p _build/npm _vendor/mathjax
	cd _build/npm && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null \
		&& tar -xzf mathjax-$(MATHJAX_VERSION).tgz package/es5
	for part in $(MATHJAX_PARTS); do cp -R _build/npm/package/es5/$$part _vendor/mathjax/; done

# The PDF edition, _build/pdf/book.pdf: every page of the built site (make book or
# book-strict first) printed by headless Chromium, joined with bookmarks (notes/pdf.md).
pdf: install
	$(BIN)/python scripts/build_pdf.py _build/html _build/pdf/book.pdf

# The library as PyPI gets it (distribution optlib-torch, import optlib): sdist and wheel
# into dist/, twine check, the wheel installed in a fresh venv after torch==2.13.0 and
# imported there (scripts/check_package.sh).
package: install
	PYTHON=$(BIN)/python scripts/check_package.sh dist

bench: install
	$(BIN)/python benchmarks/step_time.py

# On a machine with CUDA: the float64 parity tests, the step-time table and the peers on the
# GPU, into notes/gpu-check-DATE.md (benchmarks/gpu_check.py); without CUDA it says so and
# exits 0. It uses the Python that is there (.venv's if present): a GPU machine has its own
# torch, which `make install` would replace with requirements.txt's.
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) benchmarks/gpu_check.py

clean:
	rm -rf _build _vendor/mathjax dist
