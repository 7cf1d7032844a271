"""What the api_checks role did (testinfra): passing checks pass, a wrong answer and a wrong status fail the role,
and every check reached the service (its access log)."""

# ruff: noqa: S101  (testinfra checks are asserts)

import json
import os

STATE = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "service")


def _results(host):
    return json.loads(host.file(os.path.join(STATE, "results.json")).content_string)


def test_checks_that_hold_pass(host):
    assert _results(host)["passing"] == "passed"


def test_a_wrong_answer_fails_and_names_the_check(host):
    result = _results(host)["wrong_answer"]
    assert result.startswith("failed: ")
    assert "schema: expected release.schema = no-such-migration" in result


def test_a_wrong_status_fails(host):
    result = _results(host)["wrong_status"]
    assert result.startswith("failed: ") and "404" in result


def test_the_service_was_called(host):
    log = host.file(os.path.join(STATE, "access.log")).content_string
    assert log.count("GET /health.json") >= 3
    assert "GET /missing.json" in log
