# Data carry-over and integrity proof (area: data). See docs/data.md.
#   make bench-deps            install the peers the benchmark compares against (pgcopydb)
#   make bench-data            bench/bench_data_copy.py at BENCH_SCALE (default 50, pgbench -i -s 50, about 750 MB)
#   make bench-data-quick      the same at scale 5
BENCH_SCALE ?= 50
BENCH_JOBS ?= 2

.PHONY: bench-deps
bench-deps: ## install pgcopydb (Debian package) for bench/bench_data_copy.py
	@if command -v pgcopydb >/dev/null; then echo "pgcopydb: $$(command -v pgcopydb)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q pgcopydb >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q pgcopydb >/dev/null; }; \
	  command -v pgcopydb; \
	else echo "pgcopydb is not installed: run 'sudo apt-get install pgcopydb' (Debian/Ubuntu), or the benchmark skips it"; fi

.PHONY: bench-data
bench-data: venv bench-deps ## data_copy + integrity_check vs pgcopydb and pg_dump/pg_restore (BENCH_SCALE=50)
	$(PY) bench/bench_data_copy.py --scale $(BENCH_SCALE) --jobs $(BENCH_JOBS)

.PHONY: bench-data-quick
bench-data-quick: venv bench-deps ## the data benchmark at pgbench scale 5
	$(PY) bench/bench_data_copy.py --scale 5 --jobs $(BENCH_JOBS)
