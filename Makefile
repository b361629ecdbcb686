# The two commands: `make demo` and `make test`. Both install what is missing first and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PG_EXT := /usr/share/postgresql/15/extension
APT_PACKAGES := postgresql-15 postgresql-15-postgis-3 postgresql-15-pgrouting chromium gdal-bin

.PHONY: demo test lint deps system-deps venv clean

demo: deps
	$(BIN)/cim demo load
	$(BIN)/cim tiles build --layer all
	$(BIN)/cim serve --host 127.0.0.1 --port 8000

test: deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/mypy cim ingest api tilesets sample_data cimctl

deps: system-deps venv npm-deps

# Node tools the tests run (tests/js: the Khronos glTF validator), pinned by package-lock.json: `npm ci` when
# node_modules is missing or older than the lock (`npm install` while there is no lock). Idempotent.
.PHONY: npm-deps
npm-deps:
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 18+ (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	@if [ -f package-lock.json ]; then \
		if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
			npm ci --no-audit --no-fund --loglevel=error; fi; \
	elif [ ! -d node_modules ] || [ package.json -nt node_modules ]; then \
		npm install --no-audit --no-fund --loglevel=error; fi

# PostgreSQL 15 + PostGIS, Chromium (CesiumJS tests) and GDAL (OGC API client tests) from Debian: installed when
# running as root, else a message naming the packages.
system-deps:
	@if [ -x /usr/lib/postgresql/15/bin/pg_ctl ] && [ -f $(PG_EXT)/postgis.control ] && [ -x /usr/bin/chromium ] && [ -x /usr/bin/ogrinfo ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ]; then \
		echo "installing $(APT_PACKAGES) from Debian …"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	else \
		echo "PostGIS for PostgreSQL 15 or Chromium is missing: run 'sudo apt-get install $(APT_PACKAGES)'" >&2; exit 1; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
