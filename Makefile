# `make book` and `make test` are the two commands of the README's quick start. Each
# creates .venv (from requirements.txt) the first time, so a fresh machine with only
# Python and pip needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two workers on the 2-core build machine; each chapter keeps its torch to one thread.
JOBS   ?= 2

.PHONY: install test unit notebooks lint book book-strict student bench clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

install: $(BIN)/.installed

test: lint unit notebooks

lint: install
	$(BIN)/ruff check optlib tests benchmarks

unit: install
	$(BIN)/python -m pytest tests -q -n $(JOBS)

# nbval re-executes every chapter and compares its text outputs with the committed ones.
notebooks: install
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --nbval --nbval-current-env chapters

book: install
	$(BIN)/jupyter-book build .
	@echo "open _build/html/index.html"

book-strict: install
	$(BIN)/jupyter-book build -W -n --keep-going .

bench: install
	$(BIN)/python benchmarks/step_time.py

clean:
	rm -rf _build
