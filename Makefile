# The two commands of the README: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench clean redis-server

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
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/ruff check kling_async tests benchmarks
	$(BIN)/mypy --strict kling_async
	rm -rf .dist-check && $(BIN)/python -m build -q --no-isolation --outdir .dist-check . >/dev/null
	$(BIN)/twine check --strict .dist-check/* && rm -rf .dist-check
	$(BIN)/pytest

bench: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
