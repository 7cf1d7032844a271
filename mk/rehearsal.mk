# Staging rehearsal and performance checks (area: rehearsal). See docs/rehearsal.md.
#   make rehearsal                  production's latest verified backup into staging, the release rehearsed there
#                                   (database steps), perf_check before/after, the record in artifacts/rehearsals/<id>/
#                                   and the forecast of production's maintenance window (REHEARSAL_ARGS for extra -e)
#   make perf-check ENV=prod|staging|dev [PERF_BASELINE=file] [PERF_BASELINE_OUT=file] [PERF_QUERIES=file]
# On the local inventory the world is started first (local-up); against a real inventory nothing local is started.
REHEARSAL_LOCAL_UP := $(if $(filter inventories/local inventories/local/,$(INVENTORY)),local-up)
REHEARSAL_REPORTS ?= $(ROOT)/artifacts/rehearsal-runs
REHEARSAL_ARGS ?=
PERF_QUERIES ?= $(ROOT)/sample_app/queries.yml
PERF_BASELINE ?=
PERF_BASELINE_OUT ?=

.PHONY: rehearsal
rehearsal: venv $(REHEARSAL_LOCAL_UP) ## rehearse the release on staging: record + forecast in artifacts/rehearsals
	@id="$$(date -u +%Y%m%dT%H%M%SZ)-$$($(PY) -c 'import secrets; print(secrets.token_hex(3))')"; \
	reports="$(REHEARSAL_REPORTS)/$$id"; \
	echo "rehearsal $$id"; \
	ANSIBLE_CALLBACKS_ENABLED=pgshift.ops.progress PGSHIFT_REPORT_DIR="$$reports" \
	  $(BIN)/ansible-playbook playbooks/staging_rehearsal.yml -i $(INVENTORY) --limit pgshift_db \
	  -e pgshift_rehearsal_id=$$id $(REHEARSAL_ARGS) $(ANSIBLE_ARGS); rc=$$?; \
	$(BIN)/ansible-playbook playbooks/rehearsal_record.yml -i $(INVENTORY) --limit pgshift_db \
	  -e pgshift_rehearsal_id=$$id -e pgshift_rehearsal_release_rc=$$rc -e pgshift_rehearsal_report="$$reports/last-run.json" \
	  $(REHEARSAL_ARGS) $(ANSIBLE_ARGS) && exit $$rc

.PHONY: perf-check
perf-check: venv $(REHEARSAL_LOCAL_UP) ## time the query set (PERF_QUERIES) on ENV; PERF_BASELINE to compare, PERF_BASELINE_OUT to save
	$(BIN)/ansible-playbook playbooks/perf_check.yml -i $(INVENTORY) --limit pgshift_db -e pgshift_perf_env=$(ENV) \
	  -e pgshift_perf_queries_file=$(abspath $(PERF_QUERIES)) \
	  $(if $(PERF_BASELINE),-e pgshift_perf_baseline=$(abspath $(PERF_BASELINE))) \
	  $(if $(PERF_BASELINE_OUT),-e pgshift_perf_baseline_out=$(abspath $(PERF_BASELINE_OUT))) $(ANSIBLE_ARGS)
