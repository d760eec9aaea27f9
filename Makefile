# Two commands do everything on a fresh machine:
#   make demo   the main job, offline: emulator + `scrapy crawl vk` into the default store
#   make test   every test, against the real PostgreSQL and Redis
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv services test demo demo-errors check bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

services:
	bash scripts/services.sh

test: venv services
	$(PY) -m pytest

demo: venv
	$(PY) scripts/demo.py

# The same crawl plus a post with closed comments, a closed wall and an unknown name: the task
# ends `failed` and the demo explains each error (it exits 0 when exactly those appear).
demo-errors: venv
	$(PY) scripts/demo.py --with-errors

check: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: venv services
	$(PY) -m benchmarks.bench_upsert
	$(PY) -m benchmarks.bench_crawl
	$(PY) -m benchmarks.bench_export
