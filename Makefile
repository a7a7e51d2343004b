# The two front-door commands: `make test` and `make demo`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test lint demo clean-venv

setup:
	@VENV=$(VENV) bash scripts/bootstrap.sh

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# ruff: pyflakes, pycodestyle, isort and bugbear, configured in pyproject.toml.
lint: setup
	@$(PY) -m ruff check .

demo: setup
	@$(PY) -m vild_d2.kit.pipeline

clean-venv:
	rm -rf $(VENV)
