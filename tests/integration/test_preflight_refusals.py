"""Refusals that belong in Preflight (issue 14, parts 5 and 6), against real PostgreSQL.

Each of these was once accepted by Preflight and failed only in the window. Every test drives the real modules
(``run_module``) or a real run of prod_restore.yml that stops in its Preflight play, asserts that the message names the
object and the count, and that nothing changed: no ``<prod>__next``, the connection limit as it was, no backup.
"""

from __future__ import annotations

import contextlib
import json
import os
import typing as t
import uuid

import data_support as ds
import pgworld
import psycopg2
import pytest
from fault_support import fault_log, record

PLAYBOOK = "playbooks/prod_restore.yml"
__all__ = ["fault_log"]


# ------------------------------------------------------------------------------------------------ helpers
def _connect(pg: pgworld.Cluster, database: str, **extra: t.Any) -> t.Any:
    """A connection by keywords (the harness's dsn string cannot name a database holding ``=`` or a quote)."""
    conn = psycopg2.connect(
        host="127.0.0.1", port=pg.port, user="postgres", password=pg.password, dbname=database, **extra
    )
    conn.autocommit = True
    return conn


def _sql(pg: pgworld.Cluster, database: str, text: str) -> None:
    with contextlib.closing(_connect(pg, database)) as conn, conn.cursor() as cur:
        cur.execute(text)


def _state(pg: pgworld.Cluster, prod: str) -> t.Dict[str, t.Any]:
    """What a refused run must leave as it was: the connection limit, no __next, no journal run for prod."""
    with contextlib.closing(_connect(pg, "postgres")) as conn, conn.cursor() as cur:
        cur.execute("SELECT datconnlimit FROM pg_database WHERE datname = %s", (prod,))
        limit = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (prod + "__next",))
        nexts = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_database WHERE datname = 'pgshift'")
        journal = cur.fetchone()[0]
    runs = 0
    if journal:
        with contextlib.closing(_connect(pg, "pgshift")) as conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('pgshift.runs') IS NOT NULL")
            if cur.fetchone()[0]:
                cur.execute("SELECT count(*) FROM pgshift.runs WHERE production_database = %s", (prod,))
                runs = cur.fetchone()[0]
    return {"connlimit": limit, "next_databases": nexts, "journal_runs": runs}


def _pair(new_db: t.Callable[..., str], pg: pgworld.Cluster, prod_sql: str, dev_sql: str) -> t.Tuple[str, str]:
    prod, dev = new_db("prod_" + uuid.uuid4().hex[:8]), new_db("dev_" + uuid.uuid4().hex[:8])
    _sql(pg, prod, prod_sql)
    _sql(pg, dev, dev_sql)
    return prod, dev


def _plan(run_module: t.Callable[..., t.Any], pg: pgworld.Cluster, prod: str, dev: str, **extra: t.Any) -> t.Any:
    """The data plan as the Preflight play runs it: production against the dev database."""
    args = {"source": pg.conn(prod), "target": pg.conn(dev), "schema_source": pg.conn(dev)}
    args.update(extra)
    return run_module("data_plan", args)


def _refused(run: t.Any, kind: str) -> t.Dict[str, t.Any]:
    assert run.failed, run.output[-3000:]
    found = [p for p in run.result.get("problems", []) if p["kind"] == kind]
    assert found, run.result.get("msg", run.output[-3000:])
    return found[0]


# ------------------------------------------------------------------------------------------------ part 5: data plan
def test_a_domain_whose_check_dev_tightened_is_refused_with_the_count(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any]
) -> None:
    prod, dev = _pair(
        new_db,
        pg,
        "CREATE DOMAIN qty AS integer CHECK (VALUE > 0);"
        "CREATE DOMAIN code AS varchar(10);"
        "CREATE TABLE lines (id int PRIMARY KEY, q qty, c code);"
        "INSERT INTO lines SELECT g, g * 10, 'c' || g FROM generate_series(1, 30) g;",
        # dev: qty tightened (at most 100), code is now a domain over a domain with its own CHECK and NOT NULL
        "CREATE DOMAIN qty AS integer CHECK (VALUE > 0) CHECK (VALUE <= 100);"
        "CREATE DOMAIN short_text AS varchar(10) CHECK (length(VALUE) <= 10);"
        "CREATE DOMAIN code AS short_text NOT NULL CHECK (VALUE NOT IN ('c7', 'c8'));"
        "CREATE TABLE lines (id int PRIMARY KEY, q qty, c code);",
    )
    before = _state(pg, prod)
    run = _plan(run_module, pg, prod, dev)
    problems = [p for p in run.result["problems"] if p["kind"] == "domain"]
    assert run.failed and len(problems) == 2, run.result.get("msg")
    by_column = {p["column"]: p for p in problems}
    assert by_column["q"]["count"] == 20 and by_column["q"]["table"] == "lines"  # 110 .. 300
    assert "20 source values of lines.q fail CHECK" in by_column["q"]["message"]
    assert "domain qty" in by_column["q"]["message"] and "VALUE <= 100" in by_column["q"]["message"]
    assert by_column["c"]["count"] == 2 and "domain code" in by_column["c"]["message"]
    assert sorted(by_column["c"]["sample"]) == ["c7", "c8"]
    assert "lines.q" in run.result["msg"]
    assert _state(pg, prod) == before

    # production's rows fixed: nothing left to refuse
    _sql(pg, prod, "DELETE FROM lines WHERE q > 100 OR c IN ('c7', 'c8')")
    clean = _plan(run_module, pg, prod, dev)
    assert not clean.failed, clean.result.get("msg", clean.output[-2000:])
    record("a domain CHECK dev tightened", "preflight", "intact", "refused in Preflight")


def test_rows_with_no_partition_in_dev_are_refused_with_the_count(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any]
) -> None:
    prod, dev = _pair(
        new_db,
        pg,
        "CREATE TABLE events (id int, year int NOT NULL, kind text) PARTITION BY RANGE (year);"
        "CREATE TABLE events_2020 PARTITION OF events FOR VALUES FROM (2020) TO (2021);"
        "CREATE TABLE events_2021 PARTITION OF events FOR VALUES FROM (2021) TO (2022);"
        "INSERT INTO events SELECT g, 2020 + g % 2, 'k' FROM generate_series(1, 9) g;",  # 4 in 2020, 5 in 2021
        # dev dropped 2020 and sub-partitions 2021 by kind, with a gap ('x' only)
        "CREATE TABLE events (id int, year int NOT NULL, kind text) PARTITION BY RANGE (year);"
        "CREATE TABLE events_2021 PARTITION OF events FOR VALUES FROM (2021) TO (2022) PARTITION BY LIST (kind);"
        "CREATE TABLE events_2021_x PARTITION OF events_2021 FOR VALUES IN ('x');"
        "CREATE TABLE events_2022 PARTITION OF events FOR VALUES FROM (2022) TO (2023);",
    )
    before = _state(pg, prod)
    problem = _refused(_plan(run_module, pg, prod, dev), "no_partition")
    assert problem["table"] == "events" and problem["count"] == 9
    assert problem["message"].startswith("9 source rows of events have no partition")
    assert "events_2022 FOR VALUES FROM (2022) TO (2023)" in problem["message"]
    assert _state(pg, prod) == before

    # a DEFAULT partition in dev takes the 2020 rows; the 2021 rows of kind 'k' still have none
    _sql(pg, dev, "CREATE TABLE events_other PARTITION OF events DEFAULT")
    problem = _refused(_plan(run_module, pg, prod, dev), "no_partition")
    assert problem["count"] == 5, problem
    _sql(pg, dev, "CREATE TABLE events_2021_rest PARTITION OF events_2021 DEFAULT")
    clean = _plan(run_module, pg, prod, dev)
    assert not clean.failed, clean.result.get("msg", clean.output[-2000:])

    # hash partitions: their constraint names the dev table's oid, so they are left to the load, and said so
    _sql(
        pg,
        prod,
        "CREATE TABLE hashed (id int) PARTITION BY HASH (id);"
        "CREATE TABLE hashed_0 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 0);"
        "CREATE TABLE hashed_1 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 1);"
        "INSERT INTO hashed SELECT generate_series(1, 10)",
    )
    _sql(
        pg,
        dev,
        "CREATE TABLE hashed (id int) PARTITION BY HASH (id);"
        "CREATE TABLE hashed_0 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 0);"
        "CREATE TABLE hashed_1 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
    )
    hashed = _plan(run_module, pg, prod, dev)
    assert not hashed.failed, hashed.result.get("msg", hashed.output[-2000:])
    assert "the hash partitions of hashed were not checked on the source" in " ".join(hashed.result["notes"])
    record("partition bounds leave rows without a partition", "preflight", "intact", "refused in Preflight")


def test_a_table_with_no_columns_is_refused_with_its_rows(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any]
) -> None:
    prod, dev = _pair(
        new_db,
        pg,
        "CREATE TABLE marks (); INSERT INTO marks SELECT FROM generate_series(1, 4);"
        "CREATE TABLE empty_marks ();"
        "CREATE TABLE items (id int PRIMARY KEY);",
        "CREATE TABLE marks (); CREATE TABLE empty_marks (); CREATE TABLE items (id int PRIMARY KEY);",
    )
    before = _state(pg, prod)
    run = _plan(run_module, pg, prod, dev)
    problem = _refused(run, "no_columns")
    assert problem["table"] == "marks" and problem["count"] == 4
    assert (
        "the dev schema's table marks has no columns: production's 4 rows of marks cannot be carried"
        in (problem["message"])
    )
    assert not [p for p in run.result["problems"] if p["table"] == "empty_marks"], "no rows, nothing to lose"
    assert _state(pg, prod) == before
    record("a table left with no columns", "preflight", "intact", "refused in Preflight")


def test_not_valid_constraints_are_checked_in_the_plan_and_validated_after_the_load(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any]
) -> None:
    prod, dev = _pair(
        new_db,
        pg,
        "CREATE DOMAIN pct AS integer;"
        "CREATE TABLE parents (id int PRIMARY KEY);"
        "CREATE TABLE kids (id int PRIMARY KEY, parent int, score int, p pct);"
        "INSERT INTO parents SELECT generate_series(1, 5);"
        "INSERT INTO kids SELECT g, g, g - 3, g FROM generate_series(1, 8) g;",  # parents 6..8 missing, 2 scores < 0
        "CREATE DOMAIN pct AS integer;"
        "CREATE TABLE parents (id int PRIMARY KEY);"
        "CREATE TABLE kids (id int PRIMARY KEY, parent int, score int, p pct);"
        "INSERT INTO kids VALUES (1, 99, -1, 500);"  # dev's own rows break them: that is why they are NOT VALID
        "ALTER TABLE kids ADD CONSTRAINT kids_score CHECK (score >= 0) NOT VALID;"
        "ALTER TABLE kids ADD CONSTRAINT kids_parent FOREIGN KEY (parent) REFERENCES parents NOT VALID;"
        "ALTER DOMAIN pct ADD CONSTRAINT pct_range CHECK (VALUE <= 100) NOT VALID;",
    )
    before = _state(pg, prod)
    run = _plan(run_module, pg, prod, dev)
    kinds = {p["kind"]: p for p in run.result.get("problems", [])}
    assert run.failed and set(kinds) == {"check", "orphan"}, run.result.get("msg")
    assert kinds["check"]["count"] == 2 and "kids_score" in kinds["check"]["message"]
    assert kinds["orphan"]["count"] == 3 and kinds["orphan"]["table"] == "kids"
    assert _state(pg, prod) == before

    # production fixed: the plan passes, and the rebuilt database ends with every constraint validated
    _sql(pg, prod, "UPDATE kids SET score = 0 WHERE score < 0; UPDATE kids SET parent = NULL WHERE parent > 5")
    assert not _plan(run_module, pg, prod, dev).failed
    cluster = pg.conn("postgres")
    created = run_module(
        "database_build", dict(cluster, production_database=prod, step="create", schema_source=pg.conn(dev))
    )
    assert not created.failed, created.result.get("msg", created.output[-2000:])
    try:
        copied = run_module(
            "data_copy", {"source": pg.conn(prod), "target": pg.conn(prod + "__next"), "ledger_from": pg.conn(dev)}
        )
        assert not copied.failed, copied.result.get("msg", copied.output[-2000:])
        post = run_module(
            "database_build",
            dict(cluster, production_database=prod, step="post-data", archive=created.result["archive"]),
        )
        assert not post.failed, post.result.get("msg", post.output[-2000:])
        assert sorted(s.split()[-1].strip('"') for s in post.result["validated_constraints"]) == [
            "kids_parent",
            "kids_score",
            "pct_range",
        ]
        with contextlib.closing(_connect(pg, prod + "__next")) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
                "WHERE NOT convalidated AND n.nspname = 'public'"
            )
            assert cur.fetchall() == []
        checked = run_module(
            "integrity_check",
            {"source": pg.conn(prod), "target": pg.conn(prod + "__next"), "ledger_from": pg.conn(dev)},
        )
        assert not checked.failed, checked.result.get("msg", checked.output[-2000:])
        assert checked.result["unvalidated_constraints"] == []
    finally:
        run_module("database_build", dict(cluster, production_database=prod, step="drop"))
    record(
        "NOT VALID constraints in dev",
        "preflight",
        "intact",
        "bad rows refused in the plan; clean ones validated after the load",
    )


def test_database_names_holding_equals_signs_and_quotes_stay_names(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any]
) -> None:
    prod = new_db("shop=%s a'b\\c" % uuid.uuid4().hex[:6])
    dev = new_db("dev=%s x" % uuid.uuid4().hex[:6])
    _sql(
        pg,
        prod,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 7) g",
    )
    _sql(pg, dev, "CREATE TABLE t (id int PRIMARY KEY, v text, w int DEFAULT 1)")
    cluster = pg.conn("postgres")
    created = run_module(
        "database_build", dict(cluster, production_database=prod, step="create", schema_source=pg.conn(dev))
    )
    assert not created.failed, created.result.get("msg", created.output[-2000:])
    try:
        nxt = prod + "__next"
        copied = run_module("data_copy", {"source": pg.conn(prod), "target": pg.conn(nxt)})
        assert not copied.failed, copied.result.get("msg", copied.output[-2000:])
        post = run_module(
            "database_build",
            dict(cluster, production_database=prod, step="post-data", archive=created.result["archive"]),
        )
        assert not post.failed, post.result.get("msg", post.output[-2000:])
        with contextlib.closing(_connect(pg, nxt)) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), sum(w) FROM t")
            assert cur.fetchone() == (7, 7)
            cur.execute("SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass AND indisprimary")
            assert cur.fetchone()[0] == 1
    finally:
        run_module("database_build", dict(cluster, production_database=prod, step="drop"))

    # ------------------------------------------------------------------------------------------------ part 5: preflight
    record("'=' and quotes in the database name", "build", "released", "every client binary got it as a name")


def _preflight(
    run_module: t.Callable[..., t.Any], pg: pgworld.Cluster, prod: str, dev: t.Dict[str, t.Any], **kw: t.Any
) -> t.Any:
    args = dict(pg.conn("postgres"), production_database=prod, schema_source=dev, journal_database="pgshift_refusals")
    args.update(kw)
    return run_module("preflight", args)


def test_dev_and_production_being_one_database_is_refused_whatever_the_host_string(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any]
) -> None:
    prod = new_db()
    other = new_db()
    before = _state(pg, prod)
    same = dict(pg.conn(prod), host="localhost")  # another spelling of the same server
    run = _preflight(run_module, pg, prod, same)
    assert run.failed
    found = [p for p in run.result["problems"] if p.startswith("dev and production are the same database")]
    assert found, run.result["problems"]
    assert repr(prod) in found[0] and "system identifier" in found[0]
    ident = run.result["facts"]["identity"]
    assert ident["dev"] == ident["production"]
    assert _state(pg, prod) == before

    apart = _preflight(run_module, pg, prod, pg.conn(other))
    assert not [p for p in apart.result["problems"] if "same database" in p], apart.result["problems"]
    assert apart.result["facts"]["identity"]["dev"]["oid"] != apart.result["facts"]["identity"]["production"]["oid"]
    record("dev and production one database", "preflight", "intact", "refused in Preflight")


def test_superuser_sessions_on_production_are_named_and_refused_unless_allowed(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any]
) -> None:
    prod, dev = new_db(), new_db()
    before = _state(pg, prod)
    with contextlib.closing(_connect(pg, prod, application_name="rogue-batch")) as rogue:
        with rogue.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        run = _preflight(run_module, pg, prod, pg.conn(dev))
        assert run.failed
        found = [p for p in run.result["problems"] if "session(s) of superusers" in p]
        assert found, run.result["problems"]
        assert found[0].startswith("1 session(s) of superusers are connected to production %r" % prod)
        assert "pid %d user postgres application 'rogue-batch'" % pid in found[0]
        assert "NOSUPERUSER" in found[0] and "pgshift_allow_superuser_sessions=true" in found[0]
        assert _state(pg, prod) == before

        allowed = _preflight(run_module, pg, prod, pg.conn(dev), allow_superuser_sessions=True)
        assert not [p for p in allowed.result["problems"] if "superusers" in p], allowed.result["problems"]
        assert [c for c in allowed.result["cautions"] if "pid %d" % pid in c]
    gone = _preflight(run_module, pg, prod, pg.conn(dev))
    assert not [p for p in gone.result["problems"] if "superusers" in p]

    # ------------------------------------------------------------------------------------------------ part 5: the play
    record("application sessions of a superuser", "preflight", "intact", "refused in Preflight")


@pytest.fixture
def db_only_inventory(tmp_path: t.Any) -> str:
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n"
        "  vars:\n"
        "    ansible_connection: local\n"
        '    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        "    pgshift_environment: local\n"
        "    pgshift_app_tier: false\n"
        "  children:\n"
        "    pgshift_db:\n"
        "      hosts:\n"
        "        refusals-db:\n"
    )
    return str(path)


def _play_vars(pg: pgworld.Cluster, prod: str, dev: str, tmp_path: t.Any, **extra: t.Any) -> t.Dict[str, t.Any]:
    out = {
        "pgshift_prod_connection": pg.conn(prod),
        "pgshift_dev_connection": pg.conn(dev),
        "pgshift_backup_dir": str(tmp_path / "backups"),
        "pgshift_artifacts_dir": str(tmp_path / "artifacts"),
        "pgshift_journal_database": "pgshift_refusals",
    }
    out.update(extra)
    return out


@pytest.mark.parametrize(
    ("variable", "value"),
    [("pgshift_jobs", "two"), ("pgshift_swap_timeout", "30s"), ("pgshift_jobs", 0), ("pgshift_swap_timeout", True)],
)
def test_numeric_settings_given_as_text_are_refused_by_the_preflight_play(
    pg: pgworld.Cluster,
    new_db: t.Callable[..., str],
    run_playbook: t.Callable[..., t.Any],
    db_only_inventory: str,
    tmp_path: t.Any,
    variable: str,
    value: t.Any,
) -> None:
    prod, dev = _pair(new_db, pg, "CREATE TABLE t (id int)", "CREATE TABLE t (id int)")
    before = _state(pg, prod)
    run = run_playbook(PLAYBOOK, db_only_inventory, _play_vars(pg, prod, dev, tmp_path, **{variable: value}))
    assert run.rc != 0
    assert "%s must be a whole number of at least 1" % variable in run.output
    assert "not %s" % json.dumps(value) in run.output or "not %s" % json.dumps(str(value)) in run.output
    assert "PLAY [Backup]" not in run.output
    assert not (tmp_path / "backups").exists()
    assert _state(pg, prod) == before
    record("%s: %s" % (variable, json.dumps(value)), "preflight", "intact", "not a whole number, refused in Preflight")


def test_a_refusal_of_the_data_plan_stops_the_play_before_the_backup(
    pg: pgworld.Cluster,
    new_db: t.Callable[..., str],
    run_playbook: t.Callable[..., t.Any],
    db_only_inventory: str,
    tmp_path: t.Any,
) -> None:
    prod, dev = _pair(
        new_db,
        pg,
        "CREATE DOMAIN qty AS integer; CREATE TABLE lines (id int PRIMARY KEY, q qty);"
        "INSERT INTO lines SELECT g, g FROM generate_series(1, 12) g;",
        "CREATE DOMAIN qty AS integer CHECK (VALUE < 10); CREATE TABLE lines (id int PRIMARY KEY, q qty);",
    )
    _sql(pg, "postgres", 'ALTER DATABASE "%s" CONNECTION LIMIT 40' % prod)
    before = _state(pg, prod)
    assert before["connlimit"] == 40
    run = run_playbook(PLAYBOOK, db_only_inventory, _play_vars(pg, prod, dev, tmp_path, pgshift_jobs="3"))
    assert run.rc != 0
    assert "3 source values of lines.q fail CHECK" in run.output and "domain qty" in run.output
    assert "PLAY [Backup]" not in run.output
    assert not (tmp_path / "backups").exists() or not os.listdir(tmp_path / "backups")
    assert _state(pg, prod) == before


# ------------------------------------------------------------------------------------------------ part 6: messages
def test_an_empty_dev_schema_is_reported_as_such(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any]
) -> None:
    prod, dev = _pair(new_db, pg, "CREATE TABLE customers (id int); CREATE TABLE orders (id int)", "SELECT 1")
    run = _plan(run_module, pg, prod, dev, mapping_file=ds.MAPPING)
    assert run.failed
    msg = run.result["msg"]
    assert msg.startswith("the dev schema is empty: the target database has no tables, while production has 2"), msg
    assert "customers, orders" in msg and "does not have" not in msg


def test_a_typo_in_a_mapping_column_is_an_unknown_column_with_a_suggestion(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    prod, dev = _pair(
        new_db,
        pg,
        "CREATE TABLE customers (id int PRIMARY KEY, full_name text)",
        "CREATE TABLE customers (id int PRIMARY KEY, display_name text)",
    )
    mapping = tmp_path / "mapping.yml"
    mapping.write_text("tables:\n  customers:\n    columns:\n      dispaly_name: {from: full_name}\n")
    run = _plan(run_module, pg, prod, dev, mapping_file=str(mapping))
    assert run.failed
    msg = run.result["msg"]
    assert (
        "mapping_file names column customers.dispaly_name, which the dev schema's table customers does not have" in msg
    )
    assert "did you mean 'display_name'?" in msg and "would be lost" not in msg and "lost" not in msg

    mapping.write_text("tables:\n  customer:\n    columns:\n      display_name: {from: full_name}\n")
    run = _plan(run_module, pg, prod, dev, mapping_file=str(mapping))
    assert (
        "mapping_file names table 'customer', which the dev schema does not have; did you mean 'customers'?"
        in (run.result["msg"])
    )


def test_a_correct_backup_of_xml_with_a_declaration_is_verified_not_accused(
    pg: pgworld.Cluster, new_db: t.Callable[..., str], run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    database = new_db()
    _sql(
        pg,
        database,
        "CREATE TABLE docs (id int PRIMARY KEY, body xml, bodies xml[]);"
        "INSERT INTO docs VALUES"
        ' (1, \'<?xml version="1.0" encoding="UTF-8"?>\n<order id="1"/>\', ARRAY[\'<a/>\'::xml]),'
        ' (2, \'<?xml version="1.0"?><order id="2"/>\', NULL),'
        " (3, '<order id=\"3\">plain</order>', ARRAY['<?xml version=\"1.0\"?><b/>'::xml]),"
        " (4, NULL, NULL), (5, '', NULL);",
    )
    backup = run_module("backup", dict(pg.conn(database), dest_dir=str(tmp_path / "backups"), format="directory"))
    assert not backup.failed, backup.result.get("msg", backup.output[-2000:])
    verify = run_module("backup_verify", dict(pg.conn(), manifest_path=backup.result["manifest_path"], level="restore"))
    assert not verify.failed, verify.result.get("msg", verify.output[-2000:])
    assert verify.result["verified"] is True and verify.result["mismatches"] == []
    assert verify.result["tables"]["public.docs"]["ok"] is True

    # the comparison is still a real one: a changed xml value is caught (same declaration-free form, other content)
    with contextlib.closing(_connect(pg, database)) as conn, conn.cursor() as cur:
        cur.execute("UPDATE docs SET body = '<order id=\"9\"/>' WHERE id = 1")
    from ansible_collections.pgshift.ops.plugins.module_utils import _checksums
    from ansible_collections.pgshift.ops.plugins.module_utils._connection import ConnParams, connect

    conn = connect(ConnParams.from_params(pg.conn(database)), autocommit=True)
    try:
        now = _checksums.checksum_one(conn, ("public", "docs"), algorithm=_checksums.ALGORITHM_VALUES)
    finally:
        conn.close()
    recorded = backup.result["manifest"]["tables"]["public.docs"]
    assert now["rows"] == recorded["rows"] == 5 and now["checksum"] != recorded["checksum"]
