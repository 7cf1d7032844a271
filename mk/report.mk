# Progress notifications, run reports and the multi-host test harness (area: progress). See docs/progress.md.

# The multi-host tests (tests/integration/test_progress_multihost.py and the ones built on tests/multihost/) need a
# real sshd and a real nginx from the distribution. Installed only when missing; `apt-get update` runs once, first.
# nginx-light is Debian 12's small nginx build; where it is gone (Debian 13), the plain nginx package.
MULTIHOST_PACKAGES := openssh-server nginx-light
MULTIHOST_FALLBACK := openssh-server nginx

.PHONY: multihost-deps
multihost-deps: ## openssh-server and nginx for the multi-host tests (apt-get, only when missing)
	@if [ -x /usr/sbin/sshd ] && [ -x /usr/sbin/nginx ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "multihost-deps: /usr/sbin/sshd or /usr/sbin/nginx is missing and this is not root:"; \
	  echo "  run as root: apt-get update && apt-get install $(MULTIHOST_PACKAGES) (the multi-host tests skip until then)"; \
	  exit 0; fi; \
	command -v apt-get >/dev/null || { echo "multihost-deps: no apt-get here: install an OpenSSH server and nginx yourself"; exit 1; }; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && { apt-get install -y -qq --no-install-recommends $(MULTIHOST_PACKAGES) \
	  || apt-get install -y -qq --no-install-recommends $(MULTIHOST_FALLBACK); }

TEST_DEPS += multihost-deps

.PHONY: report
report: ## path of the last run report (opened in a browser when there is a graphical session)
	@$(PY) tools/report.py
