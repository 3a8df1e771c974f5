# The two commands of the README: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Installed once, again only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m kling_async.demo

test: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/ruff check kling_async tests benchmarks examples
	$(BIN)/mypy --strict kling_async
	$(BIN)/mypy --strict examples
	rm -rf .dist-check && $(BIN)/python -m build -q --no-isolation --outdir .dist-check . >/dev/null
	$(BIN)/twine check --strict .dist-check/* && rm -rf .dist-check
	$(BIN)/pytest

bench: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
