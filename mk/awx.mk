# Execution environment, AWX / Automation Platform definitions, and the GitHub deploy workflow (area: awx).
# See docs/awx.md.
#   make ee-context        the collection tarball (from the files git knows) and the ansible-builder build context in
#                          .build/ee/context (no container engine needed; part of test-deps, checked by the tests)
#   make ee-build          build the image from that context with podman or docker (EE_TAG, EE_RUNTIME)
#   make awx-import        load awx/pgshift.yml into AWX/AAP with `awx import` (CONTROLLER_HOST, CONTROLLER_USERNAME,
#                          CONTROLLER_PASSWORD or CONTROLLER_OAUTH_TOKEN in the environment)
#   make rehearsal-artifacts / deploy-secrets-file   used by .github/workflows/deploy.yml
EE_DIR := $(ROOT)/.build/ee
EE_SRC := $(EE_DIR)/src/ansible_collections/pgshift/ops
EE_TARBALL := $(EE_DIR)/collections/pgshift-ops.tar.gz
EE_CONTEXT := $(EE_DIR)/context
EE_TAG ?= pgshift-ee:latest
EE_RUNTIME ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
# Left out of the tarball: what npm installs inside the tree (galaxy.yml's build_ignore matches top-level paths only).
EE_EXCLUDE := (^|/)node_modules/

# awxkit (the `awx` CLI) is pinned in requirements-dev.txt: the tests read its export format and page classes,
# `make awx-import` runs it.
.PHONY: awxkit
awxkit: venv ## the awx CLI (awxkit, pinned in requirements-dev.txt) in .venv

TEST_DEPS += awxkit

.PHONY: ee-collection
ee-collection: venv ## build the pgshift.ops tarball for the execution environment from the files git knows
	rm -rf $(EE_DIR)/src $(dir $(EE_TARBALL))
	mkdir -p $(EE_SRC) $(dir $(EE_TARBALL))
	cd $(ROOT) && git ls-files -co --exclude-standard -z \
	  | tr '\0' '\n' | grep -Ev '$(EE_EXCLUDE)' | while IFS= read -r f; do [ -e "$$f" ] && printf '%s\0' "$$f"; done \
	  | tar --null --no-recursion -T - -cf - | tar -xf - -C $(EE_SRC)
	$(BIN)/ansible-galaxy collection build --force --output-path $(EE_DIR)/src $(EE_SRC) >/dev/null
	mv $(EE_DIR)/src/pgshift-ops-*.tar.gz $(EE_TARBALL)

.PHONY: ee-context
ee-context: ee-collection ## ansible-builder create: the image's build context in .build/ee/context (no container engine)
	rm -rf $(EE_CONTEXT)
	$(BIN)/ansible-builder create -f execution-environment.yml -c $(EE_CONTEXT) --output-filename Containerfile

TEST_DEPS += ee-context

.PHONY: ee-build
ee-build: ee-context ## build the execution environment image (EE_TAG, EE_RUNTIME=podman|docker)
	$(BIN)/ansible-builder build -f execution-environment.yml -c $(EE_CONTEXT) --container-runtime $(EE_RUNTIME) \
	  -t $(EE_TAG)

.PHONY: awx-import
awx-import: awxkit ## load the job templates and the release workflow into AWX/AAP (awx import -f yaml < awx/pgshift.yml)
	@test -n "$$CONTROLLER_HOST" || { echo "set CONTROLLER_HOST (and CONTROLLER_USERNAME/CONTROLLER_PASSWORD or CONTROLLER_OAUTH_TOKEN)"; exit 1; }
	$(BIN)/awx import -f yaml < awx/pgshift.yml

# ---- GitHub deploy workflow (.github/workflows/deploy.yml): every command it runs is one of these or a Makefile
# target. Inputs arrive as environment variables (DEPLOY_INVENTORY, DEPLOY_CONFIRMATION, DEPLOY_MIGRATIONS) and are
# checked before any of them is used on a command line; secrets (PGSHIFT_SECRET_*) go only into the 0600 vars file.
PGSHIFT_VARS_FILE ?= $(ROOT)/.cache/deploy/vars.json

.PHONY: deploy-check-inputs
deploy-check-inputs: venv ## validate the deploy inputs given in DEPLOY_INVENTORY / DEPLOY_CONFIRMATION / DEPLOY_MIGRATIONS
	$(PY) tools/deploy_ci.py check-inputs

.PHONY: deploy-vars-file
deploy-vars-file: venv ## secrets (PGSHIFT_SECRET_*) and the confirmation into the 0600 vars file PGSHIFT_VARS_FILE
	$(PY) tools/deploy_ci.py vars-file "$(PGSHIFT_VARS_FILE)"

.PHONY: deploy-forget-vars
deploy-forget-vars: ## remove the vars file PGSHIFT_VARS_FILE
	rm -f "$(PGSHIFT_VARS_FILE)"

# the progress callback's report folder (PGSHIFT_REPORT_DIR when the environment sets it) and where manifests go
DEPLOY_RUNS ?= $(or $(PGSHIFT_REPORT_DIR),$(ROOT)/artifacts/runs)
DEPLOY_MANIFESTS ?= $(ROOT)/artifacts/backup-manifests

.PHONY: deploy-manifests
deploy-manifests: venv ## copy the backup manifests named in the run reports (DEPLOY_RUNS) into DEPLOY_MANIFESTS
	$(PY) tools/deploy_ci.py manifests --runs "$(DEPLOY_RUNS)" --dest "$(DEPLOY_MANIFESTS)"

CI_SUMMARY_TITLE ?= Report
CI_SUMMARY_FILE ?=
.PHONY: ci-summary
ci-summary: venv ## append CI_SUMMARY_FILE under CI_SUMMARY_TITLE to the GitHub job summary (stdout outside GitHub)
	$(PY) tools/deploy_ci.py summary --title "$(CI_SUMMARY_TITLE)" "$(CI_SUMMARY_FILE)"
