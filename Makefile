# The commands of the README: `make demo`, `make test` (and `make docs`). All set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The API reference site, into .site/ (`make docs`, and a step of `make test`). --strict: a broken
# link, cross-reference, README snippet or a docstring griffe warns about fails the build.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir .site

.PHONY: demo test docs lint typecheck pytest bench clean redis-server

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Installed once, again only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m kling_async.demo

# The shared-limit and journal tests run a real redis-server (Debian's package); never skipped.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

redis-server:
	command -v redis-server >/dev/null || ($(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq redis-server >/dev/null)

test: $(BIN)/python redis-server
	$(BIN)/python -m pip install -q -e '.[dev,docs]'
	$(BIN)/ruff check kling_async tests benchmarks examples docs
	$(BIN)/mypy --strict kling_async
	$(BIN)/mypy --strict examples
	$(MKDOCS)
	rm -rf .dist-check && $(BIN)/python -m build -q --no-isolation --outdir .dist-check . >/dev/null
	$(BIN)/twine check --strict .dist-check/* && rm -rf .dist-check
	$(BIN)/pytest

# The docs extra, installed once, again only when pyproject.toml changes.
$(VENV)/.docs-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(MKDOCS)

# One table of every benchmark's quick run, also written to benchmarks/RESULTS.md (~2 min).
bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .site
