"""A hostile production, released by one full prod_restore.yml run on a throwaway local world (issue 13, nothing lost).

Production holds, at once: a table ``a.b`` beside ``public."a.b"``; large objects referenced from an ``oid`` column;
a column whose type dev narrows (``numeric(10,4)`` -> ``numeric(10,2)``, values rounded: accepted in the mapping); a
column dev makes GENERATED (stored values that differ from the expression: accepted); a database ACL (CONNECT revoked
from PUBLIC, granted to the application and a reader role), ``ALTER DATABASE .. SET`` and ``ALTER ROLE .. IN
DATABASE .. SET``; a row level security policy (in both schemas); a table without columns (in both); table and column
grants only production has; rows a user added to an extension's configuration table (the tests' own extension).

The release must succeed. Then every item is fingerprinted with this file's own SQL, on the released production and
on the previous copy (``shop__prev_*``): never with pgshift's checksums. The run's output and summary must list the
accepted changes. The refused variant (the same production, the mapping without the accept entries) must stop in
the Preflight play, naming schema, table, column and row count, with production unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import typing as t

import ext_support
import pgworld
import pytest
from psycopg2 import sql

pytestmark = pytest.mark.slow

READER = "hostile_reader"
ROUNDED_ROWS = 10  # a.b.amount values with a third or fourth decimal
GENERATED_ROWS = 5  # lines.total_cents values that differ from qty * unit_cents

# the same DDL on both sides, with the two differences dev makes
DDL = """
CREATE EXTENSION {ext};
CREATE SCHEMA a;
CREATE TABLE a.b (id int PRIMARY KEY, amount numeric(10,{scale}), label text);
CREATE TABLE "a.b" (id int PRIMARY KEY, note text);
CREATE TABLE documents (id int PRIMARY KEY, title text NOT NULL, body oid);
CREATE TABLE lines (id int PRIMARY KEY, qty int NOT NULL, unit_cents int NOT NULL, total_cents int {generated});
CREATE TABLE notes (id int PRIMARY KEY, owner text NOT NULL, body text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_own ON notes USING (owner = current_user);
CREATE TABLE no_columns ();
"""
PRODUCTION_ROWS = """
INSERT INTO a.b SELECT g, g + CASE WHEN g % 4 = 0 THEN 0.0050 ELSE 0.2500 END, 'schema a, table b ' || g
  FROM generate_series(1, 40) g;
INSERT INTO "a.b" SELECT g, 'public, table a.b ' || g FROM generate_series(1, 7) g;
INSERT INTO documents VALUES (1, 'small', lo_from_bytea(0, 'hello, hostile world'::bytea)),
  (2, 'pages', lo_from_bytea(0, convert_to(repeat('0123456789abcdef', 40000), 'UTF8'))), (3, 'no object', NULL);
DO $$ BEGIN EXECUTE format('COMMENT ON LARGE OBJECT %s IS %L', (SELECT body FROM documents WHERE id = 1),
  'the small one'); END $$;
INSERT INTO lines SELECT g, g, 100, g * 100 + CASE WHEN g % 5 = 0 THEN 1 ELSE 0 END
  FROM generate_series(1, 25) g;
INSERT INTO notes VALUES (1, 'shop_app', 'the application''s'), (2, 'someone else', 'hidden from the app');
INSERT INTO cfg_entries (id, name, settings, weight) VALUES (10, 'production rule', '{"level": 3}', 2.5),
  (11, 'another ''quoted'' rule', NULL, NULL);
GRANT SELECT ON a.b, "a.b", documents TO hostile_reader;
GRANT UPDATE (note) ON "a.b" TO hostile_reader;
"""
CLUSTER_STATE = [
    f"CREATE ROLE {READER}",
    "REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC",
    f"GRANT CONNECT ON DATABASE shop TO shop_app, {READER}",
    "ALTER DATABASE shop SET work_mem = '7MB'",
    "ALTER ROLE shop_app IN DATABASE shop SET statement_timeout = '7s'",
]
ACCEPT = """
accept_change:
  - a.b.amount        # numeric(10,4) -> numeric(10,2): rounding accepted
  - lines.total_cents # dev makes it GENERATED: production's stored values replaced
"""


def execute(cluster: pgworld.Cluster, database: str, text: str) -> None:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(text)


def query(
    cluster: pgworld.Cluster, database: str, text: t.Union[str, sql.Composable], params: t.Sequence[t.Any] = ()
) -> t.List[t.Tuple[t.Any, ...]]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(text, params or None)
        return [tuple(r) for r in cur.fetchall()]


def one(cluster: pgworld.Cluster, database: str, text: str) -> t.Any:
    return query(cluster, database, text)[0][0]


def fingerprints(cluster: pgworld.Cluster, database: str, released: bool) -> t.Dict[str, t.Any]:
    """Each item as this test reads it. ``released``: the database has dev's schema (values read as the accepted
    conversion made them); otherwise production's original values are converted here, by the test's own SQL."""
    amount = sql.SQL("amount::text" if released else "amount::numeric(10,2)::text")
    total = sql.SQL("total_cents" if released else "qty * unit_cents")
    fp: t.Dict[str, t.Any] = {
        "a.b": query(cluster, database, sql.SQL("SELECT id, {}, label FROM a.b ORDER BY id").format(amount)),
        '"a.b"': query(cluster, database, 'SELECT id, note FROM public."a.b" ORDER BY id'),
        "documents": query(
            cluster,
            database,
            "SELECT d.id, d.title, d.body::bigint, md5(lo_get(d.body)), length(lo_get(d.body)), "
            "m.lomowner::regrole::text, m.lomacl::text, obj_description(m.oid, 'pg_largeobject') "
            "FROM documents d LEFT JOIN pg_largeobject_metadata m ON m.oid = d.body ORDER BY d.id",
        ),
        "large objects": query(
            cluster, database, "SELECT oid::bigint, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1"
        ),
        "lines": query(
            cluster, database, sql.SQL("SELECT id, qty, unit_cents, {} FROM lines ORDER BY id").format(total)
        ),
        "notes": query(cluster, database, "SELECT id, owner, body FROM notes ORDER BY id"),
        "policies": query(
            cluster,
            database,
            "SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, qual FROM pg_policies",
        ),
        "row security": query(
            cluster, database, "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'notes'::regclass"
        ),
        "no_columns": query(
            cluster,
            database,
            "SELECT c.relnatts, (SELECT count(*) FROM no_columns) FROM pg_class c WHERE c.oid = 'no_columns'::regclass",
        ),
        "table grants": sorted(
            query(
                cluster,
                database,
                "SELECT c.oid::regclass::text, x.privilege_type, x.is_grantable FROM pg_class c, "
                "aclexplode(c.relacl) x WHERE x.grantee = %s::regrole",
                (READER,),
            )
        ),
        "column grants": sorted(
            query(
                cluster,
                database,
                "SELECT a.attrelid::regclass::text, a.attname, x.privilege_type FROM pg_attribute a, "
                "aclexplode(a.attacl) x WHERE x.grantee = %s::regrole",
                (READER,),
            )
        ),
        "extension rows": query(
            cluster,
            database,
            "SELECT id, name, settings::text, weight::text FROM cfg_entries WHERE NOT standard ORDER BY id",
        ),
    }
    for table, columns in SHOP_COLUMNS.items():
        names = [("display_name" if released and c == "full_name" else c) for c in columns]
        fp["shop " + table] = query(
            cluster,
            database,
            sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(ROW({})::text, 0)), 0) FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in names), sql.Identifier(table)
            ),
        )
    return fp


SHOP_COLUMNS = {
    "customers": ["id", "email", "full_name", "created_at", "updated_at", "profile"],
    "products": ["id", "sku", "name", "price_cents", "tags"],
    "orders": ["id", "customer_id", "status", "placed_at", "note"],
    "order_lines": ["order_id", "line_no", "product_id", "quantity", "unit_price_cents"],
    "order_events": ["id", "order_id", "kind", "created_at", "payload"],
}


def database_state(cluster: pgworld.Cluster, database: str) -> t.Dict[str, t.Any]:
    return {
        "acl": sorted(
            query(
                cluster,
                "postgres",
                "SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END, x.privilege_type, "
                "x.is_grantable FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) x "
                "WHERE d.datname = %s",
                (database,),
            )
        ),
        "settings": sorted(
            query(
                cluster,
                "postgres",
                "SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), ''), s.setconfig::text "
                "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s",
                (database,),
            )
        ),
    }


def shop_databases(cluster: pgworld.Cluster) -> t.List[str]:
    return sorted(
        r[0] for r in query(cluster, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", ("shop%",))
    )


@pytest.fixture(scope="module")
def hostile(world: pgworld.World) -> t.Iterator[t.Dict[str, t.Any]]:
    """The world's production and dev, made hostile (the world is this module's own: destroyed after it)."""
    prod, dev = world.clusters["prod"], world.clusters["dev"]
    with ext_support.config_extension(prod) as ext:
        for statement in CLUSTER_STATE:
            execute(prod, "postgres", statement)
        execute(prod, "shop", DDL.format(ext=ext, scale=4, generated=""))
        execute(prod, "shop", PRODUCTION_ROWS)
        execute(dev, "shop", DDL.format(ext=ext, scale=2, generated="GENERATED ALWAYS AS (qty * unit_cents) STORED"))
        # a row dev added under the configuration condition: production's rows replace it
        execute(dev, "shop", "INSERT INTO cfg_entries (id, name) VALUES (99, 'dev only')")
        with open(os.path.join(pgworld.ROOT, "sample_app", "mapping.yml"), encoding="utf-8") as handle:
            mapping = handle.read()
        folder = tempfile.mkdtemp(prefix="pgshift-hostile-")
        accepting = os.path.join(folder, "mapping-accepting.yml")
        with open(accepting, "w", encoding="utf-8") as handle:
            handle.write(mapping + ACCEPT)
        yield {
            "extension": ext,
            "accepting_mapping": accepting,
            "artifacts": os.path.join(os.path.dirname(world.state), "artifacts"),
        }


def test_refused_without_the_accept_entries(
    world: pgworld.World, hostile: t.Dict[str, t.Any], run_playbook: t.Callable[..., t.Any]
) -> None:
    prod = world.clusters["prod"]
    before = fingerprints(prod, "shop", released=False)
    state_before = database_state(prod, "shop")
    databases_before = shop_databases(prod)
    assert not [d for d in databases_before if "__prev_" in d], "this variant runs before the release"

    run = run_playbook("playbooks/prod_restore.yml", env={"PGSHIFT_WORLD": world.state})
    assert run.rc != 0, run.output[-3000:]
    out = run.output
    failed_task = out[: out.index("fatal:")].rsplit("TASK [", 1)[1].split("]", 1)[0].split(" : ", 1)[-1]
    assert failed_task.startswith("Preflight | plan the data carry-over"), failed_task
    assert "PLAY [Backup]" not in out and "PLAY [Maintenance on]" not in out
    # schema, table, column and row count, for each refused change
    assert (
        "%d source rows of a.b.amount change when converted from numeric(10,4) to numeric(10,2)" % ROUNDED_ROWS in out
    )
    assert (
        "%d source rows of public.lines.total_cents store a value that differs from what the target's GENERATED "
        "column total_cents computes" % GENERATED_ROWS
    ) in out
    assert "accept_change: [a.b.amount]" in out and "accept_change: [lines.total_cents]" in out

    # production unchanged, item by item, and nothing derived left behind
    assert fingerprints(prod, "shop", released=False) == before
    assert database_state(prod, "shop") == state_before
    assert shop_databases(prod) == databases_before


def test_release_carries_everything(
    world: pgworld.World, hostile: t.Dict[str, t.Any], run_playbook: t.Callable[..., t.Any]
) -> None:
    prod = world.clusters["prod"]
    production = fingerprints(prod, "shop", released=False)
    state = database_state(prod, "shop")
    # the production this test releases is the hostile one: every item is there
    assert len(production["a.b"]) == 4 * ROUNDED_ROWS and len(production['"a.b"']) == 7
    assert production["a.b"] != production['"a.b"']
    assert len(production["large objects"]) == 2 and len(production["table grants"]) == 3
    assert [r[0] for r in production["extension rows"]] == [10, 11]
    assert ("PUBLIC", "CONNECT", False) not in state["acl"] and ("shop_app", "CONNECT", False) in state["acl"]
    assert one(prod, "shop", "SELECT count(*) FROM a.b WHERE amount <> amount::numeric(10,2)") == ROUNDED_ROWS
    assert one(prod, "shop", "SELECT count(*) FROM lines WHERE total_cents <> qty * unit_cents") == GENERATED_ROWS

    run = run_playbook(
        "playbooks/prod_restore.yml",
        extra_vars={"pgshift_mapping_file": hostile["accepting_mapping"]},
        env={"PGSHIFT_WORLD": world.state},
    )
    assert run.rc == 0, run.output[-5000:]
    (previous,) = [d for d in shop_databases(prod) if d.startswith("shop__prev_")]
    assert (
        one(
            prod,
            "shop",
            "SELECT attgenerated FROM pg_attribute WHERE attrelid = 'lines'::regclass AND attname = 'total_cents'",
        )
        == "s"
    ), "the release happened"
    assert (
        one(
            prod,
            "shop",
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'a.b'::regclass AND attname = 'amount'",
        )
        == "numeric(10,2)"
    )

    # every item, the released production against the previous copy, each read by this test's SQL
    released = fingerprints(prod, "shop", released=True)
    kept = fingerprints(prod, previous, released=False)
    assert kept == production, "the previous copy is production as it was"
    for item in production:
        assert released[item] == kept[item], item
    assert database_state(prod, "shop") == database_state(prod, previous) == state
    assert 99 not in [r[0] for r in released["extension rows"]], "dev's configuration row is not production's"
    assert released["no_columns"] == [(0, 0)]
    assert released["row security"] == [(True, False)] and len(released["policies"]) == 1

    # the output and the summary list what was accepted (the callback wraps long lines)
    out = " ".join(run.output.split())
    assert "a.b.amount (value_change: %d rows altered, accepted by accept_change)" % ROUNDED_ROWS in out, out[-3000:]
    assert "lines.total_cents (generated: %d rows altered, accepted by accept_change)" % GENERATED_ROWS in out
    assert "extension configuration rows carried: cfg_entries (%s): 2" % hostile["extension"] in out
    with open(os.path.join(hostile["artifacts"], "last-summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    accepted = {(c["table"], c["column"], c["kind"], c["count"], c["accepted_by"]) for c in summary["accepted_changes"]}
    assert accepted == {
        ("a.b", "amount", "value_change", ROUNDED_ROWS, "accept_change"),
        ("lines", "total_cents", "generated", GENERATED_ROWS, "accept_change"),
    }
    assert summary["extension_config_tables"]["cfg_entries"]["target_rows"] == 2
