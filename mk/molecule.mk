# Molecule scenarios of the roles (area: multihost). One `default` scenario per role in roles/<role>/molecule/default:
# the built-in `default` driver with an unmanaged instance and a local connection (no Docker), testinfra verifiers.
# tests/integration/test_molecule.py runs the same scenarios inside the test suite. See docs/multihost.md.

MOLECULE_ROLES := maintenance_mode services api_checks recover

.PHONY: molecule
molecule: venv ## molecule test -s default for every role (local connection, no Docker)
	@set -e; for role in $(MOLECULE_ROLES); do \
	  echo "== molecule: $$role"; \
	  ( cd $(ROOT)/roles/$$role && \
	    ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PGSHIFT_MOLECULE_PYTHON=$(PY) \
	    $(BIN)/molecule test -s default ); \
	done
