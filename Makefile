# Two commands set Fixproof up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) manage.py

.PHONY: run test install env services db messages extract-messages chromium native vendor lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Fixproof needs Python 3.11 (found " + sys.version.split()[0] + ")")'
	@# The PDF export lays pages out with Pango (WeasyPrint) and needs a font.
	@ldconfig -p | grep -q 'libpangoft2-1.0.so.0' && fc-list 2>/dev/null | grep -qi dejavu || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core fontconfig; \
		else \
			echo "The PDF export needs Pango and a font: sudo apt-get install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core" >&2; \
		fi; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

env: .env

.env: | .env.example
	$(PYTHON) bin/init-env

services: install env
	$(MANAGE) ensure_services

db: services
	$(MANAGE) ensure_database
	$(MANAGE) migrate --noinput

# The French catalogue is compiled here, never committed as a .mo file.
messages: install
	$(VENV)/bin/pybabel compile --use-fuzzy -d locale -D django

# Refresh the catalogue after changing texts: extract, then merge into the .po.
extract-messages: install
	$(VENV)/bin/pybabel extract -F babel.cfg -k gettext_lazy -k ngettext_lazy -k pgettext:1c,2 \
		--no-location --sort-output -o locale/django.pot --ignore-dirs='.venv .* tests' .
	$(VENV)/bin/pybabel update -i locale/django.pot -d locale -D django --no-fuzzy-matching

# Browser tests drive Debian's Chromium through Playwright, never a downloaded browser.
chromium:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "Chromium is missing: sudo apt-get install chromium" >&2; exit 1; \
		fi; }

# The masking's native helpers (native/fixproof_native.c: HMAC, hex groups), a PostgreSQL
# extension for the server version the scratch clusters run (the newest under
# /usr/lib/postgresql). Without it the masking computes the same values in SQL, slower. As
# root the build tools are installed when missing; otherwise say what to install and go on.
PG_MAJOR := $(shell ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
PG_LIB := /usr/lib/postgresql/$(PG_MAJOR)/lib
native: $(PG_LIB)/fixproof_native.so

$(PG_LIB)/fixproof_native.so: native/fixproof_native.c native/fixproof_native--1.0.sql native/fixproof_native.control
	@[ -n "$(PG_MAJOR)" ] || { echo "PostgreSQL server is not installed: make services says how" >&2; exit 1; }
	@if [ "$$(id -u)" != 0 ]; then \
		echo "native HMAC not installed (needs root): sudo make native; the masking works without it, slower" >&2; \
	else \
		if [ ! -f /usr/include/postgresql/$(PG_MAJOR)/server/postgres.h ] || [ ! -f /usr/include/openssl/evp.h ] \
				|| ! command -v gcc >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				postgresql-server-dev-$(PG_MAJOR) libssl-dev gcc make; \
		fi && \
		$(MAKE) -s -C native PG_CONFIG=/usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config with_llvm=no install && \
		$(MAKE) -s -C native PG_CONFIG=/usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config with_llvm=no clean; \
	fi

# Charting library of the run pages, from npm into static/vendor (served locally, no CDN).
UPLOT_VERSION := 1.6.32
vendor: static/vendor/uPlot.iife.min.js

static/vendor/uPlot.iife.min.js:
	@command -v npm >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; \
		else \
			echo "npm is missing: sudo apt-get install npm" >&2; exit 1; \
		fi; }
	rm -rf var/npm && mkdir -p var/npm static/vendor
	npm install --silent --no-audit --no-fund --prefix var/npm uplot@$(UPLOT_VERSION)
	cp var/npm/node_modules/uplot/dist/uPlot.iife.min.js var/npm/node_modules/uplot/dist/uPlot.min.css \
		var/npm/node_modules/uplot/LICENSE static/vendor/

# Generated passwords (the administrator's, the demo people's) go to a file only its owner
# can read, never to a log, and are printed last, where they are seen.
CREDENTIALS := var/credentials.txt

run: db messages native vendor
	$(MANAGE) collectstatic --noinput --verbosity 0
	$(MANAGE) ensure_admin --credentials-file $(CREDENTIALS)
	$(MANAGE) load_demo --credentials-file $(CREDENTIALS)
	$(MANAGE) load_perf_demo
	@echo
	@if [ -s $(CREDENTIALS) ]; then \
		echo "Accounts (from $(CREDENTIALS), readable only by you; delete it once noted):"; \
		grep -v '^#' $(CREDENTIALS) | sed 's/^/  /'; \
		echo; \
	fi
	@echo "Fixproof is starting: $$($(MANAGE) shell --no-imports -c 'from django.conf import settings; print(settings.SITE_URL)')/"
	@echo "(web, Celery worker and beat; Ctrl-C stops all three)"
	$(VENV)/bin/honcho start

test: services messages chromium native vendor
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) locale/*/LC_MESSAGES/*.mo .pytest_cache native/*.o native/*.so native/*.bc static/vendor var/npm
