# One command to run the service, one to run every test; both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test fuzz lint typecheck check bench ladder clean

install: $(STAMP)

RUN_STAMP := $(VENV)/.installed-run

# $(call venv_install,STAMP,WHAT,ALSO): pip install -e WHAT into .venv unless STAMP is newer than pyproject.toml;
# then touch STAMP (and ALSO). Under a lock, and checked again once it is held: `make run` and `make test` started
# together install once (the second waits for the first), rather than both writing into one .venv.
define venv_install
	@flock $(VENV).lock sh -c '\
	  if [ -f $(1) ] && [ $(1) -nt pyproject.toml ]; then exit 0; fi; \
	  set -e; \
	  $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install --quiet --upgrade pip; \
	  $(BIN)/python -m pip install --quiet -e "$(2)"; \
	  touch $(1) $(3)'
endef

# Everything: the service, its tests and the checkers.
$(STAMP): pyproject.toml
	$(call venv_install,$(STAMP),.[dev],$(RUN_STAMP))

# What `make run` needs: the service alone, without the development tools (a full install serves as well).
$(RUN_STAMP): pyproject.toml
	$(call venv_install,$(RUN_STAMP),.)

run: $(RUN_STAMP)
	$(BIN)/cmdb-asso serve --seed-demo-if-empty

test: install
	$(BIN)/python -m pytest

# Random exploration: the property and contract-fuzz tests with fresh random draws and many more examples
# (`make test` draws the same fixed examples every run), random suppliers and patterns among them, and the
# load of heavy readers beside writers. A failure prints the seed that reproduces it.
fuzz: install
	$(BIN)/python -m pytest tests/web/test_trust.py tests/wire/test_contract_fuzz.py tests/wire/test_load_wire.py \
		-k "random or never_a_5xx or beside" --hypothesis-profile=explore --hypothesis-show-statistics

lint: install
	$(BIN)/ruff check cmdb_asso tests scripts
	$(BIN)/ruff format --check cmdb_asso tests scripts
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

bench: install
	$(BIN)/python scripts/bench.py

# The growth ladder: one instance's reads at 1,000, 10,000 and 100,000 links (--sizes for more).
ladder: install
	$(BIN)/python -m scripts.ladder

clean:
	rm -rf $(VENV) $(VENV).lock var .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
