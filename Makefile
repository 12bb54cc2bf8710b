# Conflux: the two commands a fresh machine needs are 'make demo' and 'make test'.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export CONFLUX_REQUIRE_EXTENSIONS ?= 1

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# A regular (non-editable) install: it compiles the merge core from engine/.
install: $(BIN)/python
	$(BIN)/python -m pip install -q ".[test]"

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: install
	cd tests && ../$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/kernel.py
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) build dist *.egg-info engine/_core_c.c engine/*.so demo-project
