# Set-up, demo and tests. Every target works on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test clean

install: $(STAMP)

# torch==2.13.0 first: it is a CPU build that lies on this machine's disk; a looser requirement
# resolved by pip alone would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: install
	CML_BIN=$(BIN) bash scripts/demo.sh

# The report's browser check needs Debian's chromium; without it (no apt, no root) those tests skip.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
		chromium fonts-dejavu-core >/dev/null; } || echo "chromium unavailable: the browser check will be skipped"

test: install browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
