# Vigie: `make demo` to see it work, `make test` to check it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
PYTHON ?= python3

.PHONY: demo test test-asyncio bench soak fuzz lint schema peers clean help screenshot

help:
	@echo "make demo   the simulated hospital watched by Vigie: prints the URLs (Ctrl-C stops)"
	@echo "            DEMO_ARGS='--ha --scenario power-cut --speed 10': two replicas, Nord's falls"
	@echo "make test   create .venv, install test peers (when root) and run the tests"
	@echo "make test-asyncio  the probes' tests on asyncio's loop (vigie run --loop asyncio)"
	@echo "make bench  run the benchmarks and write docs/benchmarks.md"
	@echo "make soak   10k checks for 30 minutes with flapping targets: RSS growth (tests/bench/out/soak.md)"
	@echo "make fuzz   fuzz the parsers of what devices send (atheris, about 14 minutes)"
	@echo "make lint   ruff and mypy --strict"
	@echo "make schema regenerate config/schema.json"
	@echo "make screenshot regenerate the French screenshots docs/status-page*.png (needs chromium)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lab]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vigie demo $(DEMO_ARGS)

peers:
	bash tests/peers.sh

test: $(STAMP) peers
	$(VENV)/bin/pytest -q

test-asyncio: $(STAMP) peers
	VIGIE_TEST_LOOP=asyncio $(VENV)/bin/pytest -q tests/probes tests/test_eventloop.py

bench: $(STAMP) peers
	$(PY) -m tests.bench.run

soak: $(STAMP) peers
	$(PY) -m tests.bench.soak --minutes 30 --checks 10000

fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[test,lab,fuzz]'
	$(PY) -m tests.fuzz.run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict

schema: $(STAMP)
	$(VENV)/bin/vigie schema > config/schema.json

screenshot: $(STAMP)
	$(PY) -m tests.web.screenshot docs/status-page.png

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
