# Two commands on a fresh machine: `make demo` (the whole story end to end) and `make test`.
# Both create .venv and install the pinned requirements first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q -e . --no-deps
	touch $(STAMP)

demo: setup
	$(BIN)/psml demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks.router_vs_direct

clean:
	rm -rf $(VENV) runs results model_repository/*/
