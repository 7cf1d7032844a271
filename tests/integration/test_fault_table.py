"""The fault table cannot count a fault that was not tried (tests/integration/fault_support.py record())."""

from __future__ import annotations

import typing as t

import pytest
from conftest import FAULT_RESULTS
from fault_support import NOT_INJECTED, fault_log, record

__all__ = ["fault_log"]


def test_a_fault_not_injected_fails_its_test_and_is_marked(request: t.Any) -> None:
    try:
        with pytest.raises(pytest.fail.Exception, match="was not injected"):
            record("backends terminated (0)", "backup", "intact", "the point was never reached", injected=False)
        assert FAULT_RESULTS[-1]["outcome"] == NOT_INJECTED
        assert ("fault", FAULT_RESULTS[-1]) in request.node.user_properties
    finally:
        # this row is the test's own: it must not reach the printed table
        if FAULT_RESULTS and FAULT_RESULTS[-1]["fault"] == "backends terminated (0)":
            FAULT_RESULTS.pop()
        request.node.user_properties[:] = [p for p in request.node.user_properties if p[0] != "fault"]
