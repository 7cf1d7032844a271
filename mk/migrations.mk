# Migrations (area: migrations). See docs/migrations.md.
#   make node-deps              node-pg-migrate + pg for the tests and the node-pg-migrate engine (npm ci, pinned)
#   make validate-migrations    validate MIGRATIONS (default sample_app/migrations) on the dev cluster of INVENTORY;
#                               SCHEMA_SNAPSHOT=file: the migrations must build exactly that committed snapshot
#   make migrate ENV=dev|staging|prod ENGINE=sql|node-pg-migrate
#   make lint-workflows         zizmor (offline) on .github/workflows
# On the local inventory the world is started first (local-up); with VALIDATE_FROM_ENV=1 (CI) the connection comes
# from the PG* variables and nothing local is started.
NODE_DIR := $(ROOT)/tools/node
NODE_STAMP := $(NODE_DIR)/node_modules/.package-lock.json
ENGINE ?= sql
MIGRATIONS ?= sample_app/migrations
VALIDATE_FROM_ENV ?=
VALIDATE_REPORT ?=
SCHEMA_SNAPSHOT ?=
MIGRATIONS_LOCAL_UP := $(if $(VALIDATE_FROM_ENV),,$(if $(filter inventories/local inventories/local/,$(INVENTORY)),local-up))

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 20.19+ or 22.12+, README.md) is required for node-pg-migrate: install nodejs and npm"; exit 1; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: node-deps
node-deps: $(NODE_STAMP) ## node-pg-migrate 9.0.0 and pg, pinned by tools/node/package-lock.json (npm ci)

TEST_DEPS += node-deps

.PHONY: validate-migrations
validate-migrations: venv node-deps $(MIGRATIONS_LOCAL_UP) ## validate MIGRATIONS (default sample_app/migrations) on a throwaway database
	$(BIN)/ansible-playbook playbooks/validate_migrations.yml -i $(INVENTORY) \
	  $(if $(MIGRATIONS),-e pgshift_validate_migrations_dir=$(abspath $(MIGRATIONS))) \
	  $(if $(VALIDATE_FROM_ENV),-e pgshift_validate_from_env=true) \
	  $(if $(VALIDATE_REPORT),-e pgshift_validate_report_file=$(abspath $(VALIDATE_REPORT))) \
	  $(if $(SCHEMA_SNAPSHOT),-e pgshift_validate_schema_snapshot=$(abspath $(SCHEMA_SNAPSHOT))) $(ANSIBLE_ARGS)

.PHONY: migrate
migrate: venv node-deps $(MIGRATIONS_LOCAL_UP) ## apply pending migrations to ENV (dev|staging|prod) with ENGINE (sql|node-pg-migrate)
	$(BIN)/ansible-playbook playbooks/migrate.yml -i $(INVENTORY) -e pgshift_migrate_env=$(ENV) \
	  -e pgshift_migrate_engine=$(ENGINE) $(ANSIBLE_ARGS)

.PHONY: lint-workflows
lint-workflows: venv ## zizmor (offline audits) on the GitHub Actions workflows
	$(BIN)/zizmor --offline --no-progress .github/workflows

LINT_TARGETS += lint-workflows

.PHONY: bench-migrations
bench-migrations: venv node-deps ## pgshift's migrate engines side by side with the node-pg-migrate CLI (Pagila + 40 migrations)
	$(PY) bench/bench_migrations.py
