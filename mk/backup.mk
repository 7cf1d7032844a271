# Verified backups (area: backup). See docs/backup.md.
# On the local inventory the world is started first (local-up); against a real inventory nothing local is started.
BACKUP_LOCAL_UP := $(if $(filter inventories/local inventories/local/,$(INVENTORY)),local-up)
LEVEL ?=
MANIFEST ?=
TARGET ?=
BENCH_SCALE ?= 50

.PHONY: backup
backup: venv $(BACKUP_LOCAL_UP) ## verified backup of ENV (ENV=prod|staging|dev, LEVEL=checksum|read|restore)
	$(BIN)/ansible-playbook playbooks/backup.yml -i $(INVENTORY) -e pgshift_backup_env=$(ENV) \
	  $(if $(LEVEL),-e pgshift_backup_verify_level=$(LEVEL)) $(ANSIBLE_ARGS)

.PHONY: restore-backup
restore-backup: venv $(BACKUP_LOCAL_UP) ## restore MANIFEST=path into ENV's cluster (TARGET=db; ANSIBLE_ARGS for replace)
	@test -n "$(MANIFEST)" || { echo "give MANIFEST=/path/to/manifest.json"; exit 2; }
	$(BIN)/ansible-playbook playbooks/restore_backup.yml -i $(INVENTORY) -e pgshift_restore_env=$(ENV) \
	  -e pgshift_restore_manifest=$(abspath $(MANIFEST)) $(if $(TARGET),-e pgshift_restore_target=$(TARGET)) $(ANSIBLE_ARGS)

.PHONY: bench-backup
bench-backup: venv ## verified backup vs bare pg_dump -Fd -j2 + pg_restore -j2 (BENCH_SCALE=50; pgbench and Pagila)
	$(PY) bench/bench_backup.py --scale $(BENCH_SCALE)
