# Two commands do everything on a fresh machine:
#   make demo   the main job, offline: emulator + `scrapy crawl vk` into the default store
#   make test   every test, against the real PostgreSQL and Redis
#   make test-fast  the unit tests only (no server, no child process): the inner loop
# and `make docs` builds the documentation (docs/) into docs/_build/html.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv services browser test test-fast demo demo-errors check bench serve docs

# The pinned requirements, then this checkout itself in editable mode: $(VENV)/bin/vkscraper
# runs the code here (built offline with the pinned setuptools and wheel).
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

services:
	bash scripts/services.sh

# Debian's Chromium for the task-page tests (Playwright drives it; nothing is downloaded by it).
browser:
	bash scripts/browser.sh

test: venv services browser
	$(PY) -m pytest

# Tests marked `integration` need PostgreSQL, Redis, the emulator, scrapyd, a browser or the
# `vkscraper` command as a process; the rest run with all of those refused (tests/conftest.py).
test-fast: venv
	$(PY) -m pytest -m "not integration"

demo: venv
	$(PY) scripts/demo.py

# The same crawl plus a post with closed comments, a closed wall and an unknown name: the task
# ends `failed` and the demo explains each error (it exits 0 when exactly those appear).
demo-errors: venv
	$(PY) scripts/demo.py --with-errors

# scrapyd with the task services and the page on http://127.0.0.1:6800 (scrapyd.conf); jobs
# and logs under var/scrapyd/. The crawls inherit this environment: export VK_ACCESS_TOKEN
# (and DATABASE_URL for PostgreSQL; else the SQLite file vkscraper.sqlite3 here) first.
# Without username/password in scrapyd.conf it listens on 127.0.0.1 only (it refuses
# another bind_address); docs/topics/security.md says what is protected.
serve: venv
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(VENV)/bin/scrapyd

# Warnings are errors: a broken link or reference fails the build (CI runs it).
docs: venv
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@# Readable offline: no page or stylesheet loads anything from another host.
	@if grep -rlE '<(link|script|img)[^>]+(href|src)="(https?:)?//' --include='*.html' docs/_build/html \
	  || grep -rlE "(@import|url\()[[:space:]]*[\"']?(https?:)?//" --include='*.css' docs/_build/html; \
	then echo "docs: the files above load something from the internet"; exit 1; fi
	@echo "docs: docs/_build/html/index.html"

check: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: venv services
	$(PY) -m benchmarks.bench_upsert
	$(PY) -m benchmarks.bench_crawl
	$(PY) -m benchmarks.bench_export
