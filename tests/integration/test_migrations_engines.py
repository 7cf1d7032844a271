"""The two engines of pgshift.ops.migrate against real PostgreSQL and the real node-pg-migrate 9 CLI."""

from __future__ import annotations

import os
import threading
import time

import pytest
from migrations_helpers import (
    LOCK_ID,
    catalogs,
    copy_sample,
    ledger,
    params,
    query,
    require_node,
    snapshot,
    table_exists,
    write_folder,
)

from ansible_collections.pgshift.ops.plugins.module_utils._errors import PgShiftError
from ansible_collections.pgshift.ops.plugins.module_utils._migrations import migrate, migrations_info


def test_both_engines_give_the_same_schema_and_ledger(pg, new_db, run_module, tmp_path):
    node = require_node()
    folder = copy_sample(str(tmp_path / "migrations"))
    a, b = new_db(), new_db()
    # the sql engine through the real module, node-pg-migrate through the same module
    run_a = run_module("migrate", dict(pg.conn(a), migrations_dir=folder, engine="sql"))
    run_b = run_module(
        "migrate", dict(pg.conn(b), migrations_dir=folder, engine="node-pg-migrate", node_pg_migrate=node)
    )
    assert not run_a.failed, run_a.output
    assert not run_b.failed, run_b.output
    assert run_a.result["changed"] and run_b.result["changed"]
    assert [m["name"] for m in run_a.result["applied"]] == [m["name"] for m in run_b.result["applied"]]
    assert "--no-lock" in run_b.result["command"]["argv"]

    assert snapshot(pg, a) == snapshot(pg, b)
    assert catalogs(pg, a) == catalogs(pg, b)  # the fallback catalog comparison agrees
    assert catalogs(pg, a)["relations"]  # and it sees the tables
    assert ledger(pg, a) == ledger(pg, b)
    names = sorted(os.path.splitext(f)[0] for f in os.listdir(folder))
    assert [row[1] for row in ledger(pg, a)] == names
    # single transaction (node-pg-migrate's default): one run_on for the whole run, on both sides
    for db in (a, b):
        assert query(pg, db, "SELECT count(DISTINCT run_on) FROM pgmigrations")[0][0] == 1
        # node-pg-migrate's own table shape, untouched
        cols = query(
            pg,
            db,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'pgmigrations' ORDER "
            "BY ordinal_position",
        )
        assert cols == [("id", "integer"), ("name", "character varying"), ("run_on", "timestamp without time zone")]
    meta_a = dict(query(pg, a, "SELECT name, engine FROM pgshift_migration_meta"))
    meta_b = dict(query(pg, b, "SELECT name, engine FROM pgshift_migration_meta"))
    assert set(meta_a.values()) == {"sql"} and set(meta_b.values()) == {"node-pg-migrate"}
    assert set(meta_a) == set(meta_b) == set(names)

    # idempotent: a second run has nothing to do, with either engine
    again = run_module("migrate", dict(pg.conn(b), migrations_dir=folder, engine="sql"))
    assert not again.failed and again.result["changed"] is False and again.result["plan"] == []


def test_engines_switch_in_the_middle_of_a_history(pg, new_db, tmp_path):
    node = require_node()
    folder = copy_sample(str(tmp_path / "migrations"))
    ref, mixed = new_db(), new_db()
    migrate(params(pg, ref), folder, engine="sql")

    p = params(pg, mixed)
    first = migrate(p, folder, engine="node-pg-migrate", node_pg_migrate=node, target="1700000002000_customer-loyalty")
    assert [m["name"] for m in first["applied"]][-1] == "1700000002000_customer-loyalty"
    second = migrate(p, folder, engine="sql", count=2)
    assert [m["name"] for m in second["applied"]] == [
        "1700000003000_product-reviews",
        "1700000004000_orders-customer-index",
    ]
    down = migrate(p, folder, engine="node-pg-migrate", node_pg_migrate=node, direction="down", count=2)
    assert [m["name"] for m in down["reverted"]] == [
        "1700000004000_orders-customer-index",
        "1700000003000_product-reviews",
    ]
    assert not table_exists(pg, mixed, "public.product_reviews")
    last = migrate(p, folder, engine="node-pg-migrate", node_pg_migrate=node)
    assert last["after"]["pending"] == []
    assert snapshot(pg, mixed) == snapshot(pg, ref)
    assert [row[1] for row in ledger(pg, mixed)] == [row[1] for row in ledger(pg, ref)]
    # the CLI itself agrees that nothing is left: it runs, finds nothing, and changes nothing
    status = migrations_info(p, folder)
    assert status["up_to_date"] and status["unrecorded"] == [] and status["modified"] == []


BROKEN = {
    "1000_one.sql": "-- Up Migration\nCREATE TABLE one (id int);\n-- Down Migration\nDROP TABLE one;\n",
    "2000_two.sql": "-- Up Migration\nCREATE TABLE two (id int);\n-- Down Migration\nDROP TABLE two;\n",
    "3000_three.sql": "-- Up Migration\nCREATE TABLE three (id int);\n\nCREATE TABEL oops (id int);\n",
}


@pytest.mark.parametrize("engine", ["sql", "node-pg-migrate"])
def test_syntax_error_in_migration_n_applies_nothing_of_it(pg, new_db, tmp_path, engine):
    node = require_node() if engine == "node-pg-migrate" else None
    folder = write_folder(str(tmp_path / "m"), BROKEN)
    db = new_db()
    p = params(pg, db)
    migrate(p, folder, engine=engine, node_pg_migrate=node, count=1)

    # default (single transaction, like node-pg-migrate): migration 2 of the same run is rolled back with 3
    with pytest.raises(PgShiftError) as err:
        migrate(p, folder, engine=engine, node_pg_migrate=node)
    assert "TABEL" in err.value.msg or "syntax error" in err.value.msg
    if engine == "sql":
        assert "3000_three" in err.value.msg and "line 4" in err.value.msg
    assert [row[1] for row in ledger(pg, db)] == ["1000_one"]
    assert table_exists(pg, db, "public.one")
    assert not table_exists(pg, db, "public.two") and not table_exists(pg, db, "public.three")

    # one transaction per migration: 2 stays, nothing of 3
    with pytest.raises(PgShiftError):
        migrate(p, folder, engine=engine, node_pg_migrate=node, single_transaction=False)
    assert [row[1] for row in ledger(pg, db)] == ["1000_one", "2000_two"]
    assert table_exists(pg, db, "public.two") and not table_exists(pg, db, "public.three")
    assert sorted(r[0] for r in query(pg, db, "SELECT name FROM pgshift_migration_meta")) == ["1000_one", "2000_two"]


def test_edited_applied_file_is_refused_until_accepted(pg, new_db, tmp_path):
    folder = copy_sample(str(tmp_path / "migrations"))
    db = new_db()
    p = params(pg, db)
    migrate(p, folder, target="1700000002000_customer-loyalty")
    path = os.path.join(folder, "1700000001000_order-events.sql")
    with open(path, "a") as handle:
        handle.write("\n-- edited after it was applied\n")
    status = migrations_info(p, folder)
    assert status["modified"] == ["1700000001000_order-events"]
    entry = next(m for m in status["migrations"] if m["name"] == "1700000001000_order-events")
    assert entry["state"] == "modified" and entry["sha256"] != entry["applied_sha256"]

    with pytest.raises(PgShiftError) as err:
        migrate(p, folder)
    assert "1700000001000_order-events" in err.value.msg and "sha256" in err.value.msg
    assert len(ledger(pg, db)) == 3  # nothing applied

    done = migrate(p, folder, accept_changed=True)
    assert done["accepted_problems"] and "1700000001000_order-events" in done["accepted_problems"][0]
    assert len(ledger(pg, db)) == 6


def test_deleted_applied_file_is_refused(pg, new_db, tmp_path, run_module):
    folder = copy_sample(str(tmp_path / "migrations"))
    db = new_db()
    migrate(params(pg, db), folder, count=2)
    os.remove(os.path.join(folder, "1700000001000_order-events.sql"))
    info = run_module("migrations_info", dict(pg.conn(db), migrations_dir=folder))
    assert not info.failed and info.result["missing"] == ["1700000001000_order-events"]
    assert info.result["order_error"].startswith("Not run migration 1700000002000_customer-loyalty")
    run = run_module("migrate", dict(pg.conn(db), migrations_dir=folder))
    assert run.failed
    assert "whose file is gone: 1700000001000_order-events" in run.result["msg"]
    assert len(ledger(pg, db)) == 2


def test_new_file_sorted_before_an_applied_one(pg, new_db, tmp_path):
    node = require_node()
    folder = copy_sample(str(tmp_path / "migrations"))
    db = new_db()
    p = params(pg, db)
    migrate(p, folder)
    write_folder(folder, {"1700000000500_late-branch.sql": "-- Up Migration\nCREATE TABLE late (id int);\n"})
    status = migrations_info(p, folder)
    assert status["out_of_order"] == ["1700000000500_late-branch"]
    for engine in ("sql", "node-pg-migrate"):
        with pytest.raises(PgShiftError) as err:
            migrate(p, folder, engine=engine, node_pg_migrate=node)
        assert (
            "Not run migration 1700000000500_late-branch is preceding already run migration 1700000001000_order-events"
            in err.value.msg
        )
    assert not table_exists(pg, db, "public.late")
    # node-pg-migrate's --no-check-order equivalent
    done = migrate(p, folder, engine="node-pg-migrate", node_pg_migrate=node, check_order=False)
    assert [m["name"] for m in done["applied"]] == ["1700000000500_late-branch"]
    assert "--no-check-order" in done["command"]["argv"]


def test_two_runs_at_once_the_second_names_the_holder(pg, new_db, tmp_path):
    node = require_node()
    folder = write_folder(
        str(tmp_path / "m"),
        {"1000_slow.sql": "-- Up Migration\nCREATE TABLE slow (id int);\nSELECT pg_sleep(4);\n"},
    )
    db = new_db()
    p = params(pg, db)
    outcome = {}

    def first() -> None:
        outcome["first"] = migrate(p, folder)

    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 10
    holder = None
    while time.monotonic() < deadline and holder is None:
        rows = query(
            pg,
            db,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = %s AND "
            "objid::bigint = %s",
            (LOCK_ID >> 32, LOCK_ID & 0xFFFFFFFF),
        )
        holder = rows[0][0] if rows else None
        time.sleep(0.05)
    assert holder is not None
    started = time.monotonic()
    with pytest.raises(PgShiftError) as err:
        migrate(p, folder, lock_timeout=1)
    assert time.monotonic() - started < 3.5
    assert "pid %d" % holder in err.value.msg
    assert err.value.details["lock_holders"][0]["application_name"] == "pgshift"
    # node-pg-migrate's own CLI also sees pgshift's lock (same id): it fails fast instead of interleaving
    from ansible_collections.pgshift.ops.plugins.module_utils._clients import run_client

    cli = run_client([node, "up", "--migrations-dir", folder], p, timeout=60)
    assert cli.rc == 1 and "Another migration is already running" in cli.stderr + cli.stdout
    thread.join(30)
    assert [m["name"] for m in outcome["first"]["applied"]] == ["1000_slow"]
    # released afterwards: the next run takes the lock at once
    assert migrate(p, folder, lock_timeout=1)["lock_waited_s"] < 1


def test_node_engine_never_sees_the_password_in_argv_or_environment(pg, new_db, tmp_path, run_module):
    """A stand-in CLI records what node-pg-migrate would receive; the real one is exercised by the other tests."""
    spy_out = tmp_path / "spy.txt"
    spy = tmp_path / "node-pg-migrate"
    spy.write_text(
        "#!/bin/sh\n"
        '{ echo "ARGV: $*"; env; echo "PASSFILE_MODE: $(stat -c %%a "$PGPASSFILE")"; '
        'cat "$PGPASSFILE" >/dev/null && echo PASSFILE_READABLE; } > %s\n'
        "exit 3\n" % spy_out
    )
    spy.chmod(0o700)
    folder = copy_sample(str(tmp_path / "migrations"))
    db = new_db()
    run = run_module(
        "migrate",
        dict(pg.conn(db), migrations_dir=folder, engine="node-pg-migrate", node_pg_migrate=str(spy)),
        verbosity=3,
    )
    assert run.failed and "exit 3" in run.result["msg"]
    seen = spy_out.read_text()
    assert pg.password not in seen
    assert pg.password not in run.output
    assert "PASSFILE_MODE: 600" in seen and "PASSFILE_READABLE" in seen
    assert "PGPASSWORD" not in seen and "DATABASE_URL" not in seen
    assert "PGHOST=127.0.0.1" in seen and "PGDATABASE=%s" % db in seen
    assert not table_exists(pg, db, "public.customers")


def test_js_migrations_run_with_the_node_engine_and_are_refused_by_the_sql_engine(pg, new_db, tmp_path):
    node = require_node()
    folder = write_folder(
        str(tmp_path / "m"),
        {
            "1000_base.sql": "-- Up Migration\nCREATE TABLE base (id int);\n-- Down Migration\nDROP TABLE base;\n",
            "2000_js-table.js": (
                "exports.up = (pgm) => { pgm.createTable('js_table', { id: 'id', note: { type: 'text' } }); };\n"
                "exports.down = (pgm) => { pgm.dropTable('js_table'); };\n"
            ),
        },
    )
    db = new_db()
    p = params(pg, db)
    with pytest.raises(PgShiftError, match="2000_js-table is a .js file: the sql engine runs .sql migrations only"):
        migrate(p, folder, engine="sql")
    assert ledger(pg, db) == []  # refused before anything was applied
    done = migrate(p, folder, engine="node-pg-migrate", node_pg_migrate=node)
    assert [m["name"] for m in done["applied"]] == ["1000_base", "2000_js-table"]
    assert table_exists(pg, db, "public.js_table")
    status = migrations_info(p, folder)
    js = next(m for m in status["migrations"] if m["name"] == "2000_js-table")
    assert js["kind"] == "js" and js["has_down"] is None and js["applied_sha256"] == js["sha256"]
    back = migrate(p, folder, engine="node-pg-migrate", node_pg_migrate=node, direction="down")
    assert [m["name"] for m in back["reverted"]] == ["2000_js-table"]
    assert not table_exists(pg, db, "public.js_table")
    assert [r[0] for r in query(pg, db, "SELECT name FROM pgshift_migration_meta")] == ["1000_base"]


def test_hostile_ledger_schema_name(pg, new_db, tmp_path):
    """The ledger schema goes through sql.Identifier everywhere (quotes, spaces, non-ASCII)."""
    db = new_db()
    hostile = 'Ünïcode "we""ird" schema'
    query(pg, db, 'CREATE SCHEMA "Ünïcode ""we""""ird"" schema"')
    folder = write_folder(str(tmp_path / "m"), BROKEN)
    p = params(pg, db)
    done = migrate(p, folder, schema=hostile, count=2)
    assert [m["name"] for m in done["applied"]] == ["1000_one", "2000_two"]
    status = migrations_info(p, folder, schema=hostile)
    assert status["applied"] == ["1000_one", "2000_two"] and status["ledger"] == hostile + ".pgmigrations"
    assert not table_exists(pg, db, "public.pgmigrations")
    back = migrate(p, folder, schema=hostile, direction="down", count=2)
    assert [m["name"] for m in back["reverted"]] == ["2000_two", "1000_one"]
