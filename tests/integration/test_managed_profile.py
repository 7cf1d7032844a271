"""The release without superuser, as on managed services (RDS, Cloud SQL, Azure): the local world's managed profile.

pgshift connects as ``shop_admin``: no superuser; CREATEDB, CREATEROLE, REPLICATION; member of pg_signal_backend,
pg_read_all_data, pg_write_all_data and pg_monitor; owner of the shop databases (tools/pgworld.py). Applications
(``shop_app``) are kept out of production during the window by its CONNECT privilege, not by a connection limit
(which would keep the pipeline out too), and get back exactly the privilege they had. Every assertion about access
is the test's own catalog query or a real connection attempt as the application role.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import typing as t

import pgworld
import psycopg2
import pytest
from conftest import _tmp_base
from fault_support import kill_then_roll_back, outcome
from test_prod_restore import api, checksums, closed_to_applications, columns, databases, journal_runs

pytestmark = pytest.mark.slow

ADMIN = pgworld.ADMIN_ROLE
RENAMED = {"customers": {"full_name": "display_name"}}


@pytest.fixture(scope="module")
def managed() -> t.Iterator[pgworld.World]:
    base = _tmp_base("pgshift-managed-")
    w = pgworld.World(os.path.join(base, "world"), profile="managed")
    w.reset(scale=0.3)
    yield w
    w.destroy()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_managed(managed: pgworld.World) -> pgworld.World:
    managed.reset(scale=0.3)
    return managed


def effective_acl(cluster: pgworld.Cluster, database: str) -> t.List[t.Tuple[str, str, str, bool]]:
    """(grantee, privilege, grantor, grantable) of the database, the default ACL spelled out when there is none."""
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
            "pg_get_userbyid(a.grantor), a.is_grantable "
            "FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE d.datname = %s "
            "ORDER BY 1, 2",
            (database,),
        )
        return [tuple(r) for r in cur.fetchall()]


def role_settings(cluster: pgworld.Cluster, database: str) -> t.List[t.Tuple[t.Any, ...]]:
    with contextlib.closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(pg_get_userbyid(s.setrole), '-'), s.setconfig FROM pg_db_role_setting s "
            "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s ORDER BY 1",
            (database,),
        )
        return [tuple(r) for r in cur.fetchall()]


def app_connects(world: pgworld.World, database: str = "shop") -> t.Optional[str]:
    """None when the application role connects, else the server's refusal."""
    try:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=world.meta["ports"]["prod"],
            user=pgworld.APP_ROLE,
            password=world.meta["app_password"],
            dbname=database,
            sslmode="disable",
        )
    except psycopg2.OperationalError as exc:
        return str(exc)
    conn.close()
    return None


def prepare_production(world: pgworld.World) -> None:
    """Production as a careful team has it: CONNECT only for the application (with grant option) and the admin, and a
    setting for the application role in the database; the release must give back exactly that."""
    with contextlib.closing(world.clusters["prod"].connect("shop", user=ADMIN)) as conn, conn.cursor() as cur:
        cur.execute("REVOKE CONNECT ON DATABASE shop FROM PUBLIC")
        cur.execute("GRANT CONNECT ON DATABASE shop TO shop_app WITH GRANT OPTION")
        cur.execute("ALTER ROLE shop_app IN DATABASE shop SET statement_timeout = '42s'")


def test_the_pipeline_role_is_not_a_superuser(managed: pgworld.World) -> None:
    with contextlib.closing(managed.clusters["prod"].connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreatedb, rolreplication FROM pg_roles WHERE rolname = %s", (ADMIN,))
        assert cur.fetchone() == (False, True, True)
        cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'")
        assert cur.fetchone()[0] == ADMIN
    assert managed.admin_user == ADMIN


def test_release_without_superuser_gives_applications_back_exactly_their_access(
    fresh_managed: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    world = fresh_managed
    prod, dev = world.clusters["prod"], world.clusters["dev"]
    prepare_production(world)
    before = checksums(prod, "shop")
    acl_before, settings_before = effective_acl(prod, "shop"), role_settings(prod, "shop")
    assert app_connects(world) is None

    run = run_playbook("playbooks/prod_restore.yml", env={"PGSHIFT_WORLD": world.state})
    assert run.rc == 0, run.output[-4000:]
    said = " ".join(run.output.split())
    assert "profile managed" in said, "Preflight says which profile it runs with"

    # the release happened, data proven by the test's own checksums
    assert columns(prod, "shop", "customers") == columns(dev, "shop", "customers")
    assert "display_name" in columns(prod, "shop", "customers")
    assert checksums(prod, "shop", renames=RENAMED) == before
    assert journal_runs(prod)[-1][1] == "succeeded"
    # applications have exactly the database privileges and settings they had, and connect again
    assert effective_acl(prod, "shop") == acl_before
    assert role_settings(prod, "shop") == settings_before
    assert app_connects(world) is None
    status, body = api(world, "/customers/7")
    assert status == 200 and body["display_name"].startswith("Customer 7")
    # the previous production is kept, closed to applications by its CONNECT privilege (no connection limit)
    (previous,) = [d for d in databases(prod) if d.startswith("shop__prev_")]
    assert databases(prod)[previous] == (-1, True)
    assert closed_to_applications(prod, previous)
    assert "permission denied for database" in (app_connects(world, previous) or "")
    assert checksums(prod, previous) == before


def test_access_is_blocked_for_applications_but_not_for_the_pipeline(
    fresh_managed: pgworld.World, run_module: t.Callable[..., t.Any]
) -> None:
    world = fresh_managed
    prod = world.clusters["prod"]
    prepare_production(world)
    acl_before = effective_acl(prod, "shop")
    with contextlib.closing(prod.connect("shop", user=ADMIN)) as conn, conn.cursor() as cur:
        cur.execute("SELECT datacl::text FROM pg_database WHERE datname = 'shop'")
        raw_before = cur.fetchone()[0]
    # an application session is open: the block ends it (pg_signal_backend, no superuser)
    app = psycopg2.connect(
        host="127.0.0.1",
        port=world.meta["ports"]["prod"],
        user=pgworld.APP_ROLE,
        password=world.meta["app_password"],
        dbname="shop",
        sslmode="disable",
    )
    conn_args = dict(prod.conn("postgres", user=ADMIN))
    try:
        blocked = run_module("db_access", dict(conn_args, target_database="shop", state="blocked"))
        assert not blocked.failed, blocked.result
        assert blocked.result["method"] == "acl"
        assert [s["user"] for s in blocked.result["terminated"]] == [pgworld.APP_ROLE]
        with pytest.raises(psycopg2.Error):  # the server ended it; psycopg2 notices on next use
            app.cursor().execute("SELECT 1")
    finally:
        app.close()
    refusal = app_connects(world)
    assert refusal is not None and "permission denied for database" in refusal
    with contextlib.closing(prod.connect("shop", user=ADMIN)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")  # the pipeline's role still gets in
    restored = run_module(
        "db_access", dict(conn_args, target_database="shop", state="restored", previous=blocked.result["previous"])
    )
    assert not restored.failed and restored.result["changed"], restored.result
    assert app_connects(world) is None
    assert effective_acl(prod, "shop") == acl_before
    with contextlib.closing(prod.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datacl::text FROM pg_database WHERE datname = 'shop'")
        assert cur.fetchone()[0] == raw_before, "the very ACL, grant option included"
    again = run_module(
        "db_access", dict(conn_args, target_database="shop", state="restored", previous=blocked.result["previous"])
    )
    assert not again.failed and not again.result["changed"], "restoring is idempotent"


def test_failed_api_check_swaps_back_without_superuser(
    fresh_managed: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    world = fresh_managed
    prod = world.clusters["prod"]
    prepare_production(world)
    before = checksums(prod, "shop")
    acl_before, settings_before = effective_acl(prod, "shop"), role_settings(prod, "shop")
    bad_checks = [
        {
            "name": "an answer the new release does not give",
            "url": "http://127.0.0.1:%d/health" % world.meta["ports"]["api"],
            "json_path": "schema_version",
            "expect": "no-such-migration",
        }
    ]
    run = run_playbook(
        "playbooks/prod_restore.yml", extra_vars={"pgshift_api_checks": bad_checks}, env={"PGSHIFT_WORLD": world.state}
    )
    assert run.rc != 0
    assert "production was swapped back" in run.output
    assert outcome(world, before) == "intact"
    assert effective_acl(prod, "shop") == acl_before and role_settings(prod, "shop") == settings_before
    (failed,) = [d for d in databases(prod) if d.startswith("shop__failed_")]
    assert "permission denied for database" in (app_connects(world, failed) or "")
    assert journal_runs(prod)[-1][1] == "rolled_back"


def test_a_refusal_of_the_data_plan_stops_before_the_backup_without_superuser(
    fresh_managed: pgworld.World, run_playbook: t.Callable[..., t.Any]
) -> None:
    """The data plan runs as the managed admin too (reading production through pg_read_all_data): dev narrows a column
    production's values do not fit, and the run stops in Preflight naming the column and the rows, before any backup,
    with production's data and the applications' access as they were."""
    world = fresh_managed
    prod, dev = world.clusters["prod"], world.clusters["dev"]
    prepare_production(world)
    before = checksums(prod, "shop")
    acl_before = effective_acl(prod, "shop")
    with contextlib.closing(prod.connect("shop", user=ADMIN)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM products WHERE length(sku) > 3")
        too_long = cur.fetchone()[0]
    assert too_long > 0
    backups = os.path.join(world.state, "backups")
    kept = sorted(os.listdir(backups))  # earlier releases of this module's world
    with contextlib.closing(dev.connect("shop", user=ADMIN)) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE products ALTER COLUMN sku TYPE varchar(3)")
    run = run_playbook("playbooks/prod_restore.yml", env={"PGSHIFT_WORLD": world.state})
    assert run.rc != 0
    said = " ".join(run.output.split())
    assert "products.sku" in said and str(too_long) in said, said[-3000:]
    assert "PLAY [Backup]" not in run.output
    assert sorted(os.listdir(backups)) == kept, "no backup was taken"
    assert checksums(prod, "shop") == before and effective_acl(prod, "shop") == acl_before
    assert app_connects(world) is None
    with contextlib.closing(dev.connect("shop", user=ADMIN)) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE products ALTER COLUMN sku TYPE text")


@pytest.mark.parametrize("step", ["block access", "copy", "after swap"])
def test_sigkill_then_rollback_without_superuser(fresh_managed: pgworld.World, tmp_path: t.Any, step: str) -> None:
    world = fresh_managed
    prod = world.clusters["prod"]
    prepare_production(world)
    before = checksums(prod, "shop")
    acl_before, settings_before = effective_acl(prod, "shop"), role_settings(prod, "shop")
    kill_then_roll_back(world, step, tmp_path)
    assert outcome(world, before) == "intact"
    assert effective_acl(prod, "shop") == acl_before, "the applications' CONNECT privilege is exactly back"
    assert role_settings(prod, "shop") == settings_before
    assert app_connects(world) is None


@pytest.mark.parametrize(
    ("take_away", "give_back", "expected"),
    [
        ("ALTER ROLE shop_admin NOCREATEDB", "ALTER ROLE shop_admin CREATEDB", "ALTER ROLE shop_admin CREATEDB"),
        (
            "REVOKE pg_signal_backend FROM shop_admin",
            "GRANT pg_signal_backend TO shop_admin",
            "GRANT pg_signal_backend TO shop_admin",
        ),
        (
            "REVOKE pg_read_all_data FROM shop_admin; ALTER TABLE public.orders OWNER TO postgres",
            "GRANT pg_read_all_data TO shop_admin; ALTER TABLE public.orders OWNER TO shop_admin",
            "GRANT pg_read_all_data TO shop_admin",
        ),
    ],
)
def test_a_missing_capability_is_named_in_preflight_with_its_grant(
    managed: pgworld.World, run_module: t.Callable[..., t.Any], take_away: str, give_back: str, expected: str
) -> None:
    prod = managed.clusters["prod"]
    args = dict(
        prod.conn("postgres", user=ADMIN),
        production_database="shop",
        schema_source=managed.clusters["dev"].conn("shop", user=ADMIN),
        backup_dir=os.path.join(managed.state, "backups"),
    )
    ok = run_module("preflight", args)
    assert not ok.failed, ok.result
    assert ok.result["facts"]["profile"] == "managed" and ok.result["facts"]["access"]["method"] == "acl"
    with contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute(take_away)
    try:
        refused = run_module("preflight", args)
    finally:
        with contextlib.closing(prod.connect("shop")) as conn, conn.cursor() as cur:
            cur.execute(give_back)
    assert refused.failed
    assert expected in refused.result["msg"], refused.result["msg"]
