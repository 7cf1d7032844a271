# Schema snapshots and drift (area: schema). See docs/schema.md.
# On the local inventory the world is started first (local-up); against a real inventory nothing local is started.
SCHEMA_LOCAL_UP := $(if $(filter inventories/local inventories/local/,$(INVENTORY)),local-up)
SNAPSHOT_FILE ?=

.PHONY: drift-check
drift-check: venv $(SCHEMA_LOCAL_UP) ## prod vs its migrations, staging vs prod (fail on drift), dev vs prod (report); artifacts/drift
	$(BIN)/ansible-playbook playbooks/drift_check.yml -i $(INVENTORY) $(ANSIBLE_ARGS)

.PHONY: snapshot
snapshot: venv $(SCHEMA_LOCAL_UP) ## write ENV's schema snapshot (ENV=prod|staging|dev, SNAPSHOT_FILE=path; default artifacts/snapshots)
	$(BIN)/ansible-playbook playbooks/snapshot.yml -i $(INVENTORY) -e pgshift_snapshot_env=$(ENV) \
	  $(if $(SNAPSHOT_FILE),-e pgshift_snapshot_path=$(abspath $(SNAPSHOT_FILE))) $(ANSIBLE_ARGS)

.PHONY: bench-schema
bench-schema: venv ## schema snapshot of 1,000 tables / 10,000 columns / 3,000 indexes, side by side with pg_dump --schema-only
	$(PY) bench/bench_schema_snapshot.py
