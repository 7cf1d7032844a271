"""Production's database-level state and production-only object privileges survive a release (prod_restore.yml on a
throwaway local world), and integrity_check fails, naming it, when one of them is missing from the new database.

Production gets: REVOKE CONNECT/TEMP FROM PUBLIC with CONNECT granted to the application and a reporting role, TEMP
to the application, CREATE WITH GRANT OPTION to the reporting role, ALTER DATABASE SET work_mem and search_path (with
a schema name that needs quoting), ALTER ROLE .. IN DATABASE .. SET statement_timeout, a comment with quotes, and a
table, a sequence, a column grant and a default privilege that dev's schema does not have (the role does not even
exist on dev). Every assertion reads the catalogs (or connects as the roles) itself.
"""

from __future__ import annotations

import contextlib
import typing as t
import uuid

import pgworld
import psycopg2
import pytest

pytestmark = pytest.mark.slow

MAPPING = "sample_app/mapping.yml"
REPORTING = "dbstate_reporting"
OUTSIDER = "dbstate_outsider"
ODD_SCHEMA = "odd \"sch'ema"
COMMENT = 'the shop\'s "production" database'
PASSWORD = "pw-" + uuid.uuid4().hex

PRODUCTION_STATE = [
    f"CREATE ROLE {REPORTING} LOGIN PASSWORD '{PASSWORD}'",
    f"CREATE ROLE {OUTSIDER} LOGIN PASSWORD '{PASSWORD}'",
    "REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC",
    "GRANT CONNECT, TEMPORARY ON DATABASE shop TO shop_app",
    "GRANT CONNECT ON DATABASE shop TO " + REPORTING,
    "GRANT CREATE ON DATABASE shop TO %s WITH GRANT OPTION" % REPORTING,
    "ALTER DATABASE shop SET work_mem = '8MB'",
    "ALTER DATABASE shop SET search_path = \"$user\", public, '%s'" % ODD_SCHEMA.replace("'", "''"),
    "ALTER ROLE shop_app IN DATABASE shop SET statement_timeout = '5s'",
    "COMMENT ON DATABASE shop IS '%s'" % COMMENT.replace("'", "''"),
]
PRODUCTION_GRANTS = [
    "GRANT SELECT ON orders TO " + REPORTING,
    "GRANT USAGE ON SEQUENCE orders_id_seq TO %s WITH GRANT OPTION" % REPORTING,
    "GRANT SELECT (id, email) ON customers TO " + REPORTING,
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO " + REPORTING,
]


def execute(cluster: pgworld.Cluster, database: str, *statements: str) -> None:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def query(cluster: pgworld.Cluster, database: str, text: str, params: t.Sequence[t.Any] = ()) -> t.List[t.Any]:
    with contextlib.closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(text, params)
        return list(cur.fetchall())


def connect_as(cluster: pgworld.Cluster, database: str, user: str, password: str) -> t.Any:
    return psycopg2.connect(
        host="127.0.0.1", port=cluster.port, user=user, password=password, dbname=database, sslmode="disable"
    )


def db_settings(cluster: pgworld.Cluster, database: str) -> t.Dict[str, t.List[str]]:
    rows = query(
        cluster,
        "postgres",
        "SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), ''), s.setconfig FROM pg_db_role_setting s "
        "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s",
        (database,),
    )
    return {role: sorted(config) for role, config in rows}


def db_acl(cluster: pgworld.Cluster, database: str) -> t.Set[t.Tuple[str, str, bool]]:
    rows = query(
        cluster,
        "postgres",
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type, "
        "a.is_grantable FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a "
        "WHERE d.datname = %s",
        (database,),
    )
    return {(r[0], r[1], r[2]) for r in rows}


@pytest.fixture(scope="module")
def released(world: pgworld.World, tmp_path_factory: t.Any) -> t.Iterator[t.Dict[str, t.Any]]:
    """Production with its database-level state and grants, before any release (the tests below release it)."""
    prod = world.clusters["prod"]
    execute(prod, "postgres", "DROP ROLE IF EXISTS " + REPORTING, "DROP ROLE IF EXISTS " + OUTSIDER)
    execute(prod, "postgres", *PRODUCTION_STATE)
    execute(prod, "shop", *PRODUCTION_GRANTS)
    state: t.Dict[str, t.Any] = {
        "settings": db_settings(prod, "shop"),
        "acl": db_acl(prod, "shop"),
    }
    yield state
    # the world is reset by the next module that uses it; the roles own nothing and hold only grants
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'shop%%'")
        for (name,) in cur.fetchall():
            with contextlib.closing(prod.connect(name)) as dconn, dconn.cursor() as dcur:
                dcur.execute("DROP OWNED BY %s, %s" % (REPORTING, OUTSIDER))
        cur.execute("DROP ROLE IF EXISTS " + REPORTING)
        cur.execute("DROP ROLE IF EXISTS " + OUTSIDER)


def _world_args(world: pgworld.World) -> t.Dict[str, t.Any]:
    return {
        "source": world.clusters["prod"].conn("shop"),
        "target": world.clusters["dev"].conn("shop"),
        "schema_source": world.clusters["dev"].conn("shop"),
        "mapping_file": MAPPING,
    }


def test_plan_reports_the_state_and_preflight_refusals(
    world: pgworld.World, released: t.Dict[str, t.Any], run_module: t.Callable[..., t.Any]
) -> None:
    prod = world.clusters["prod"]
    plan = run_module("data_plan", _world_args(world), check=True)
    assert not plan.failed, plan.output
    state = plan.result["database_state"]
    acl = {(a["grantee"], a["privilege"], a["grantable"]) for a in state["acl"]}
    assert acl == released["acl"]
    assert ("PUBLIC", "CONNECT", False) not in acl and (REPORTING, "CREATE", True) in acl
    assert "work_mem=8MB" in state["settings"] and state["role_settings"] == {"shop_app": ["statement_timeout=5s"]}
    assert state["comment"] == COMMENT
    grants = plan.result["privileges"]["grants"]
    assert "table public.orders: SELECT to %s" % REPORTING in grants
    assert "column email of table public.customers: SELECT to %s" % REPORTING in grants
    assert "sequence public.orders_id_seq: USAGE to %s WITH GRANT OPTION" % REPORTING in grants
    assert plan.result["privileges"]["default_grants"] == [
        "default privileges of postgres in schema public on TABLES: SELECT to %s" % REPORTING
    ]

    # row level security enabled in production but not in dev would open the rows: refused, and the policy reported
    execute(
        prod, "shop", "ALTER TABLE orders ENABLE ROW LEVEL SECURITY", "CREATE POLICY own_orders ON orders USING (true)"
    )
    try:
        refused = run_module("data_plan", _world_args(world), check=True)
    finally:
        execute(prod, "shop", "DROP POLICY own_orders ON orders", "ALTER TABLE orders DISABLE ROW LEVEL SECURITY")
    assert refused.failed
    assert [p["table"] for p in refused.result["problems"] if p["kind"] == "row_security"] == ["orders"]
    assert "row level security is enabled on public.orders" in refused.result["msg"]
    assert refused.result["only_in_production"]["policy"] == ["own_orders on public.orders"]

    # a subscription in production is refused in the preflight
    execute(
        prod,
        "shop",
        "CREATE SUBSCRIPTION dbstate_sub CONNECTION 'host=127.0.0.1 dbname=nowhere' PUBLICATION p "
        "WITH (connect = false)",
    )
    try:
        pre = run_module(
            "preflight",
            dict(prod.conn("postgres"), production_database="shop", schema_source=world.clusters["dev"].conn("shop")),
            check=True,
        )
    finally:
        execute(prod, "shop", "ALTER SUBSCRIPTION dbstate_sub SET (slot_name = NONE)", "DROP SUBSCRIPTION dbstate_sub")
    assert pre.failed
    assert [p for p in pre.result["problems"] if "subscription(s) dbstate_sub" in p], pre.result["problems"]


def test_release_keeps_the_database_state(
    world: pgworld.World, released: t.Dict[str, t.Any], run_playbook: t.Callable[..., t.Any]
) -> None:
    prod = world.clusters["prod"]
    run = run_playbook("playbooks/prod_restore.yml", env={"PGSHIFT_WORLD": world.state})
    assert run.rc == 0, run.output[-4000:]
    previous = [
        r[0] for r in query(prod, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'shop__prev%%'")
    ]
    assert len(previous) == 1
    assert "display_name" in [
        r[0] for r in query(prod, "shop", "SELECT attname FROM pg_attribute WHERE attrelid = 'customers'::regclass")
    ], "the release happened"

    # database-level: ACL, settings, role settings, comment, as production had them
    assert db_acl(prod, "shop") == released["acl"]
    assert db_settings(prod, "shop") == released["settings"]
    assert db_settings(prod, "shop")["shop_app"] == ["statement_timeout=5s"]
    (row,) = query(
        prod,
        "postgres",
        "SELECT shobj_description(oid, 'pg_database'), has_database_privilege(%s, oid, 'CONNECT'), "
        "has_database_privilege(%s, oid, 'CONNECT'), has_database_privilege('shop_app', oid, 'TEMPORARY'), "
        "has_database_privilege(%s, oid, 'TEMPORARY'), has_database_privilege(%s, oid, 'CREATE WITH GRANT OPTION'), "
        "datconnlimit FROM pg_database WHERE datname = 'shop'",
        (REPORTING, OUTSIDER, REPORTING, REPORTING),
    )
    assert row == (COMMENT, True, False, True, False, True, -1)

    # PUBLIC's CONNECT is still revoked: a role without the grant cannot connect; the reporting role can
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect_as(prod, "shop", OUTSIDER, PASSWORD).close()
    with contextlib.closing(connect_as(prod, "shop", REPORTING, PASSWORD)) as conn, conn.cursor() as cur:
        cur.execute("SHOW work_mem")
        assert cur.fetchone()[0] == "8MB"
        cur.execute("SHOW search_path")
        assert cur.fetchone()[0] == '"$user", public, "odd ""sch\'ema"'
        # production's object grants, which dev's schema lacks
        cur.execute("SELECT count(*) FROM orders")
        assert cur.fetchone()[0] > 0
        cur.execute("SELECT count(email) FROM customers")
        assert cur.fetchone()[0] > 0
        cur.execute("SELECT nextval('orders_id_seq') > 0")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SELECT display_name FROM customers")  # only the columns production granted
    with contextlib.closing(connect_as(prod, "shop", "shop_app", world.meta["app_password"])) as conn:
        with conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone()[0] == "5s"
    rows = query(
        prod,
        "shop",
        "SELECT has_table_privilege(%s, 'orders', 'SELECT'), "
        "has_sequence_privilege(%s, 'orders_id_seq', 'USAGE WITH GRANT OPTION'), "
        "has_column_privilege(%s, 'customers', 'email', 'SELECT')",
        (REPORTING, REPORTING, REPORTING),
    )
    assert rows == [(True, True, True)]
    # production's default privileges: a table created in the new production is readable by the reporting role
    with contextlib.closing(prod.connect("shop", autocommit=False)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE dbstate_probe (id int)")
        cur.execute("SELECT has_table_privilege(%s, 'dbstate_probe', 'SELECT')", (REPORTING,))
        assert cur.fetchone()[0] is True
        conn.rollback()


REMOVALS = [
    (
        "GRANT CONNECT ON DATABASE shop TO PUBLIC",
        "REVOKE CONNECT ON DATABASE shop FROM PUBLIC",
        "database privilege CONNECT to PUBLIC: only in the new database",
    ),
    (
        "REVOKE TEMPORARY ON DATABASE shop FROM shop_app",
        "GRANT TEMPORARY ON DATABASE shop TO shop_app",
        "database privilege TEMPORARY to shop_app: missing in the new database",
    ),
    (
        "REVOKE GRANT OPTION FOR CREATE ON DATABASE shop FROM " + REPORTING,
        "GRANT CREATE ON DATABASE shop TO %s WITH GRANT OPTION" % REPORTING,
        "database privilege CREATE to %s WITH GRANT OPTION: missing in the new database" % REPORTING,
    ),
    (
        "ALTER DATABASE shop RESET work_mem",
        "ALTER DATABASE shop SET work_mem = '8MB'",
        "database setting work_mem: '8MB' in production, absent in the new database",
    ),
    (
        "ALTER DATABASE shop SET search_path = public",
        "ALTER DATABASE shop SET search_path = \"$user\", public, '%s'" % ODD_SCHEMA.replace("'", "''"),
        "database setting search_path:",
    ),
    (
        "ALTER ROLE shop_app IN DATABASE shop RESET statement_timeout",
        "ALTER ROLE shop_app IN DATABASE shop SET statement_timeout = '5s'",
        "setting of role shop_app in the database statement_timeout: '5s' in production, absent",
    ),
    (
        "COMMENT ON DATABASE shop IS NULL",
        "COMMENT ON DATABASE shop IS '%s'" % COMMENT.replace("'", "''"),
        "database comment:",
    ),
    (
        "shop: REVOKE SELECT ON orders FROM dbstate_reporting",
        "shop: GRANT SELECT ON orders TO " + REPORTING,
        "privilege missing in the new database: table public.orders: SELECT to " + REPORTING,
    ),
    (
        "shop: REVOKE SELECT (email) ON customers FROM dbstate_reporting",
        "shop: GRANT SELECT (email) ON customers TO " + REPORTING,
        "privilege missing in the new database: column email of table public.customers: SELECT to " + REPORTING,
    ),
    (
        "shop: REVOKE USAGE ON SEQUENCE orders_id_seq FROM " + REPORTING,
        "shop: GRANT USAGE ON SEQUENCE orders_id_seq TO %s WITH GRANT OPTION" % REPORTING,
        "sequence public.orders_id_seq: USAGE to %s WITH GRANT OPTION" % REPORTING,
    ),
    (
        "shop: ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM dbstate_reporting",
        "shop: ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO dbstate_reporting",
        "default privileges of postgres in schema public on TABLES: SELECT to " + REPORTING,
    ),
]


def _run_statement(cluster: pgworld.Cluster, statement: str) -> None:
    database, _sep, text = statement.partition(": ") if statement.startswith("shop: ") else ("postgres", "", statement)
    execute(cluster, database, text)


def test_integrity_check_names_what_is_missing(
    world: pgworld.World, released: t.Dict[str, t.Any], run_module: t.Callable[..., t.Any]
) -> None:
    """The released production against the previous one (production as it was): equal, then each removal fails."""
    prod = world.clusters["prod"]
    previous = [
        r[0] for r in query(prod, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'shop__prev%%'")
    ]
    assert len(previous) == 1, "test_release_keeps_the_database_state runs first"
    args = {
        "source": prod.conn(previous[0]),
        "target": prod.conn("shop"),
        "ledger_from": world.clusters["dev"].conn("shop"),
        "mapping_file": MAPPING,
    }
    proof = run_module("integrity_check", args)
    assert not proof.failed, proof.output
    assert proof.result["database_state_differences"] == []
    for remove, restore, named in REMOVALS:
        _run_statement(prod, remove)
        try:
            failed = run_module("integrity_check", args)
        finally:
            _run_statement(prod, restore)
        assert failed.failed, "integrity_check passed although %r was done" % remove
        assert [d for d in failed.result["database_state_differences"] if named in d], (
            remove,
            failed.result.get("database_state_differences"),
        )
        assert named in failed.result["msg"]
    again = run_module("integrity_check", args)
    assert not again.failed, again.output


def test_modules_carry_icu_locale_and_hostile_names(
    pg: pgworld.Cluster, run_module: t.Callable[..., t.Any], tmp_path: t.Any
) -> None:
    """database_build create/post-data, data_copy and integrity_check driven one by one on one cluster: an ICU
    production keeps its locale provider, and a role, a setting and a comment with quotes in their names and values
    come through unchanged."""
    suffix = uuid.uuid4().hex[:8]
    prod_db, dev_db, role = "dbst_prod_" + suffix, "dbst_dev_" + suffix, "dbst odd \"role'" + suffix
    quoted = '"' + role.replace('"', '""') + '"'
    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
        if conn.server_version < 150000:
            pytest.skip("locale providers exist from PostgreSQL 15 on")
        try:
            cur.execute(
                "CREATE DATABASE \"%s\" TEMPLATE template0 ENCODING UTF8 LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'"
                % prod_db
            )
        except psycopg2.errors.FeatureNotSupported:
            pytest.skip("this server was built without ICU")
        cur.execute('CREATE DATABASE "%s" TEMPLATE template0 ENCODING UTF8' % dev_db)
        cur.execute("CREATE ROLE %s LOGIN" % quoted)
    try:
        table = "CREATE TABLE t (id int PRIMARY KEY, v text)"
        execute(pg, dev_db, table)
        execute(
            pg,
            prod_db,
            table,
            "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g",
            "GRANT SELECT ON t TO " + quoted,
            'REVOKE CONNECT ON DATABASE "%s" FROM PUBLIC' % prod_db,
            'GRANT CONNECT ON DATABASE "%s" TO %s' % (prod_db, quoted),
            "ALTER DATABASE \"%s\" SET myapp.note = 'it''s \"quoted\"'" % prod_db,
            'ALTER ROLE %s IN DATABASE "%s" SET search_path = \'a b\', public, "X"' % (quoted, prod_db),
            "COMMENT ON DATABASE \"%s\" IS '%s'" % (prod_db, COMMENT.replace("'", "''")),
        )
        cluster = pg.conn("postgres")
        build = run_module(
            "database_build",
            dict(
                cluster,
                production_database=prod_db,
                step="create",
                schema_source=pg.conn(dev_db),
                workdir=str(tmp_path),
            ),
        )
        assert not build.failed, build.output
        next_db = prod_db + "__next"
        copy = run_module("data_copy", {"source": pg.conn(prod_db), "target": pg.conn(next_db)})
        assert not copy.failed, copy.output
        planned = run_module(
            "database_build",
            dict(cluster, production_database=prod_db, step="post-data", archive=build.result["archive"]),
            check=True,
        )
        assert not planned.failed and db_settings(pg, next_db) == {}, "check mode changes nothing"
        post = run_module(
            "database_build",
            dict(
                cluster,
                production_database=prod_db,
                step="post-data",
                archive=build.result["archive"],
                min_client_major=build.result["client_major"],
            ),
        )
        assert not post.failed, post.output
        proof = run_module("integrity_check", {"source": pg.conn(prod_db), "target": pg.conn(next_db)})
        assert not proof.failed, proof.output
        assert proof.result["database_state_differences"] == []

        rows = query(
            pg,
            "postgres",
            "SELECT datname, datlocprovider::text, daticulocale, shobj_description(oid, 'pg_database'), datconnlimit "
            "FROM pg_database WHERE datname IN (%s, %s) ORDER BY datname",
            (prod_db, next_db),
        )
        assert [r[1:4] for r in rows] == [("i", "de-DE", COMMENT)] * 2
        assert rows[1][4] == 0, "the new database stays closed until the swap"
        assert db_settings(pg, next_db) == db_settings(pg, prod_db)
        assert db_settings(pg, next_db)[role] == ['search_path="a b", public, "X"']
        assert db_acl(pg, next_db) == db_acl(pg, prod_db)
        assert ("PUBLIC", "CONNECT", False) not in db_acl(pg, next_db)
        assert query(pg, next_db, "SELECT has_table_privilege(%s, 't', 'SELECT')", (role,)) == [(True,)]
    finally:
        with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
            for name in (prod_db + "__next", prod_db, dev_db):
                cur.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
            cur.execute("DROP ROLE IF EXISTS " + quoted)


def test_plan_lists_what_only_production_has(pg: pgworld.Cluster, run_module: t.Callable[..., t.Any]) -> None:
    """dev's schema is the source of truth for these classes; what production has beyond it is shown to the approver."""
    suffix = uuid.uuid4().hex[:8]
    prod_db, dev_db = "dbst_only_p_" + suffix, "dbst_only_d_" + suffix
    for name in (prod_db, dev_db):
        execute(pg, "postgres", 'CREATE DATABASE "%s" TEMPLATE template0 ENCODING UTF8' % name)
    try:
        table = "CREATE TABLE t (id int PRIMARY KEY, a int, b int)"
        execute(pg, dev_db, table)
        execute(
            pg,
            prod_db,
            table,
            "ALTER TABLE t FORCE ROW LEVEL SECURITY",
            "ALTER TABLE t SET (fillfactor = 70)",
            "ALTER TABLE t REPLICA IDENTITY FULL",
            "COMMENT ON COLUMN t.a IS 'only here'",
            "CREATE STATISTICS t_ab ON a, b FROM t",
            "CREATE PUBLICATION dbst_pub FOR TABLE t",
            "CREATE FUNCTION et_f() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$",
            "CREATE EVENT TRIGGER dbst_et ON ddl_command_start EXECUTE FUNCTION et_f()",
        )
        plan = run_module("data_plan", {"source": pg.conn(prod_db), "target": pg.conn(dev_db)}, check=True)
        assert not plan.failed, plan.output
        assert plan.result["only_in_production"] == {
            "comment": ["column a of table t: only here"],
            "event trigger": ["dbst_et"],
            "publication": ["dbst_pub"],
            "replica identity": ["public.t f"],
            "row level security forced": ["public.t"],
            "statistics object": ["public.t_ab"],
            "storage parameters": ["public.t fillfactor=70"],
        }
    finally:
        for name in (prod_db, dev_db):
            execute(pg, "postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
