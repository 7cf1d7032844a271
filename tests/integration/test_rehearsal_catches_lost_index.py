"""A dev schema that loses an index the query set needs: the rehearsal catches it (perf_check against the baseline
taken on staging before the release), fails, records why, and the gate does not accept it."""

from __future__ import annotations

import contextlib
import typing as t

import pgworld
import pytest
from rehearsal_support import gate_args, make_rehearsal

pytestmark = pytest.mark.slow


def test_dev_schema_dropping_a_needed_index_fails_the_rehearsal(
    world: pgworld.World, run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    # a plausible mistake in dev: the key of order_lines turned around, so nothing serves "lines of an order" any more
    with contextlib.closing(world.clusters["dev"].connect("shop")) as conn, conn.cursor() as cur:
        cur.execute(
            "ALTER TABLE order_lines DROP CONSTRAINT order_lines_pkey;"
            " ALTER TABLE order_lines ADD CONSTRAINT order_lines_line_first_key PRIMARY KEY (line_no, order_id)"
        )
    done = make_rehearsal(world, str(tmp_path))
    assert done.rc != 0, done.output[-4000:]
    assert done.record is not None and done.record["passed"] is False
    lost = [p for p in done.record["problems"] if "no longer uses order_lines_pkey" in p]
    assert lost, done.record["problems"]
    assert "The rehearsal did not pass" in done.output
    assert done.record["forecast"] is not None, "the release itself ran: the window was measured all the same"

    gate = run_module("rehearsal", gate_args(world, done.rehearsals_dir))
    assert gate.failed and "did not pass" in gate.result["msg"]
