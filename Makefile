# Set-up from nothing: `make demo` and `make test` install into .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test docs lint bench clean browser

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet pip==26.3
	$(PIP) install --quiet -r requirements.txt
	# lava-nc 0.10.0 declares python<3.11; it runs on 3.11 with our compatibility hook.
	$(PIP) install --quiet --ignore-requires-python --no-deps lava-nc==0.10.0
	# lava-dl 0.6.0 (netx, for `export --netx` tests) likewise; it runs without its training stack.
	$(PIP) install --quiet --ignore-requires-python --no-deps lava-dl==0.6.0
	# norse pulls torchvision (and a CUDA torch) unless installed without deps.
	$(PIP) install --quiet --no-deps norse==1.1.0
	# neurobench (test only: its metrics checked against ours) declares torchaudio, which drags
	# in another torch; its metric code needs only snntorch, itself installed without deps.
	$(PIP) install --quiet --no-deps snntorch==1.0.0 neurobench==2.3.0
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install
	$(VENV)/bin/dalif-deploy demo

test: install browser docs
	$(PY) -m pytest -q tests

# The docs site (mkdocs-material, offline) into site/; --strict fails on a broken link or anchor
# (not with --quiet, which hides the warnings --strict counts).
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# The report's browser test (tests/verification/test_report.py) needs Debian's chromium; DALIF_SKIP_BROWSER=1
# skips both the install and the test.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ "$$DALIF_SKIP_BROWSER" = 1 ] || [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make: chromium is missing at $(CHROMIUM) and apt-get is unavailable: install" \
	       "Debian's chromium package by hand, or run DALIF_SKIP_BROWSER=1 make test" >&2; \
	  exit 1; fi; \
	echo "installing chromium (apt-get) for the report's browser test"; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || { echo "make: apt-get install chromium failed (not root?): install it," \
	  "or run DALIF_SKIP_BROWSER=1 make test" >&2; exit 1; }

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/bench_emulator.py

clean:
	rm -rf $(VENV) build site *.egg-info
