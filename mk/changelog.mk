# Changelog (area: packaging). Fragments in changelogs/fragments/ (docs/quality.md); antsibull-changelog, pinned in
# requirements-dev.txt, lints them and renders the next release's notes (in a copy: the fragments stay) into
# .build/changelog/CHANGELOG.md, which must have a release summary and no entry twice (tools/changelog_check.py).
.PHONY: changelog-lint
changelog-lint: venv ## antsibull-changelog lint, and the next release's notes rendered without duplicates
	mkdir -p $(ROOT)/.build/changelog
	$(PY) tools/changelog_check.py --out $(ROOT)/.build/changelog/CHANGELOG.md

LINT_TARGETS += changelog-lint
