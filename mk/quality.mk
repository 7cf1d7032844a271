# Quality gate (area: quality): `make sanity` runs ansible-test sanity offline on a clean copy of the collection.
# See docs/quality.md.

SANITY_ROOT := $(ROOT)/.build/sanity
SANITY_COPY := $(SANITY_ROOT)/ansible_collections/pgshift/ops
# ansible-test keeps its per-test virtualenvs under $HOME/.ansible/test: a HOME of our own keeps them in the repo.
SANITY_HOME := $(ROOT)/.cache/sanity-home
# ansible-test 2.19 bootstraps pip 24.2 in each virtualenv (ansible_test/_internal/python_requirements.py)
SANITY_GET_PIP := $(SANITY_HOME)/.ansible/test/cache/get_pip_24_2.py
SANITY_PYTHON ?= 3.11
SANITY_ARGS ?=
# Files the copy leaves out (same spirit as build_ignore in galaxy.yml): dependencies that other tools install.
SANITY_EXCLUDE := (^|/)node_modules/

$(SANITY_GET_PIP): tools/ansible_test_get_pip.py
	mkdir -p $(dir $@)
	cp $< $@

.PHONY: sanity-copy
sanity-copy:
	rm -rf $(SANITY_ROOT)
	mkdir -p $(SANITY_COPY)
	@# tracked + untracked-but-not-ignored files that exist; ansible-test refuses symlinked collection paths
	cd $(ROOT) && git ls-files -co --exclude-standard -z \
	  | tr '\0' '\n' | grep -Ev '$(SANITY_EXCLUDE)' | while IFS= read -r f; do [ -e "$$f" ] && printf '%s\0' "$$f"; done \
	  | tar --null --no-recursion -T - -cf - | tar -xf - -C $(SANITY_COPY)
	@# ansible-test lists content with git when it finds a .git folder, walking up: without a repository of its own
	@# the copy would be seen through this repository's .git, where .build/ is ignored (every target skipped).
	cd $(SANITY_COPY) && git init -q

.PHONY: sanity
sanity: venv $(SANITY_GET_PIP) sanity-copy ## ansible-test sanity (offline, no ignore file) on a copy in .build/sanity
	cd $(SANITY_COPY) && HOME=$(SANITY_HOME) $(BIN)/ansible-test sanity --python $(SANITY_PYTHON) --local \
	  --color no $(SANITY_ARGS)
